"""variant-harness: test one source tree across Python x CUDA x build profile.

A pixi manifest (and optional matrix files) compile into *cells*; each cell gets
its own solved environment, its own variant-keyed build and its own test run.
"""

from __future__ import annotations

__version__ = "0.1.0"
