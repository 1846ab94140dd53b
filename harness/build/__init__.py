"""Per-variant builds: variant keys, source fingerprints, backends and conda packaging."""
