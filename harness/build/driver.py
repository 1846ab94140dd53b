"""The build stage: from a cell with installed build/host prefixes to a published artifact.

Layout under the cache root (DESIGN invariant 1)::

    build/<package>/<variant-key>/                   persistent, incremental; one per key
    artifacts/<package>/<variant-key>-<source-fp>/   immutable; a local conda channel
    logs/<cell>/build.log                            the cell's latest build log

An artifact whose ``artifact.json`` exists is complete (it is written into a
temporary sibling and renamed into place last: invariant 4), so a second run
finds it and builds nothing (invariant 2).  The build directory carries an
``incomplete`` marker while a backend runs; a build that was killed leaves it
behind and the next build starts from an empty directory instead of trusting
half-written object files.  Builds of one key serialise on a file lock
(invariant 5).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import faults
from harness.activation import clean_base_env
from harness.build.backends import get_backend
from harness.build.base import BuildContext, BuildOutput
from harness.build.expand import cpu_count, expand_config, expand_env_table
from harness.build.key import VariantKey, referenced_variables, variant_key
from harness.build.package import assemble, build_string
from harness.build.source import source_fingerprint
from harness.cache import Cache, atomic_write_json, file_sha256, fsync_dir, read_json
from harness.cell import Cell
from harness.errors import BuildError
from harness.frozen import FrozenDict, thaw

ARTIFACT_META = "artifact.json"
INCOMPLETE = ".harness-incomplete"
#: Variables the harness sets for every build; references to them are not outside inputs.
HARNESS_VARS = frozenset(
    {
        "PREFIX",
        "BUILD_PREFIX",
        "HOST_PREFIX",
        "INSTALL_PREFIX",
        "SRC_DIR",
        "BUILD_DIR",
        "PYTHON",
        "CPU_COUNT",
        "PKG_NAME",
        "PKG_VERSION",
        "target_platform",
        "CONDA_PREFIX",
        "PATH",
    }
)


@dataclass(frozen=True)
class Artifact:
    """A published build of one package for one variant key and source fingerprint."""

    package: str
    version: str
    build: str
    key: str
    fingerprint: str
    directory: Path  # a local conda channel holding exactly this package
    archive: Path
    subdir: str
    imports: tuple[str, ...] = ()
    build_dir: Path | None = None

    @property
    def channel_url(self) -> str:
        return self.directory.as_uri()

    @property
    def spec(self) -> str:
        """The exact MatchSpec of this artifact."""
        return f"{self.package} =={self.version} {self.build}"

    def to_json(self) -> dict[str, Any]:
        return {
            "package": self.package,
            "version": self.version,
            "build": self.build,
            "key": self.key,
            "fingerprint": self.fingerprint,
            "directory": str(self.directory),
            "archive": str(self.archive),
            "subdir": self.subdir,
            "imports": list(self.imports),
        }


@dataclass(frozen=True)
class BuildInputs:
    """What the build of a cell depends on besides the cell: its prepared build and host prefixes."""

    build_prefix: Path | None
    host_prefix: Path | None
    build_packages: tuple[Mapping[str, Any], ...]
    host_packages: tuple[Mapping[str, Any], ...]
    channels: tuple[str, ...] = ()  # resolved channel URLs


@dataclass(frozen=True)
class BuildPlan:
    """Where a cell's build goes: its key, the source fingerprint and the artifact directory."""

    key: VariantKey
    fingerprint: str
    build_dir: Path
    artifact_dir: Path
    backend_name: str

    @property
    def exists(self) -> bool:
        return read_artifact(self.artifact_dir) is not None


def _package(cell: Cell) -> Any:
    if cell.package is None:
        raise ValueError(f"cell {cell.id!r} builds no package")
    return cell.package


def outside_env(cell: Cell, base: Mapping[str, str]) -> dict[str, str]:
    """Values of the variables the configuration refers to that the harness does not set."""
    names = referenced_variables(thaw(_package(cell).config)) - HARNESS_VARS
    return {name: base.get(name, "") for name in sorted(names)}


def plan_build(cell: Cell, cache: Cache, inputs: BuildInputs) -> BuildPlan:
    """The key, fingerprint and directories of ``cell``'s build (reads only)."""
    pkg = _package(cell)
    backend = get_backend(pkg.backend, manifest=cell.manifest)
    key = variant_key(
        cell,
        backend_version=f"{backend.name}/{backend.version}",
        build_packages=inputs.build_packages,
        host_packages=inputs.host_packages,
        outside_env=outside_env(cell, clean_base_env()),
    )
    # A pixi.toml is read by the harness, not by the build: what the build gets from it
    # (dependencies, configuration, variant) is in the key already, so editing it must
    # not rebuild every cell.  A pyproject.toml manifest is also build input: kept.
    exclude = (cache.root, cell.manifest) if cell.manifest.name == "pixi.toml" else (cache.root,)
    fp = source_fingerprint(pkg.source_dir, exclude=exclude)
    return BuildPlan(
        key=key,
        fingerprint=fp.digest,
        build_dir=cache.build_dir / pkg.name / key.key,
        artifact_dir=cache.artifacts_dir / pkg.name / f"{key.key}-{fp.digest}",
        backend_name=backend.name,
    )


class DamagedArtifactWarning(UserWarning):
    """A published artifact whose archive no longer matches ``artifact.json``: it is built again."""


def _archive_problem(archive: Path, meta: dict[str, Any]) -> str | None:
    """Why ``archive`` is not the one published with ``meta`` (``None``: it is)."""
    if not archive.is_file():
        return f"its archive {archive.name} is missing"
    sha256, size = meta.get("archive_sha256"), meta.get("archive_size")
    if not isinstance(sha256, str) or not isinstance(size, int):
        return f"{ARTIFACT_META} records no sha256 for {archive.name} (published by an older harness)"
    actual = archive.stat().st_size
    if actual != size:
        return (
            f"{archive.name} has {actual} bytes, {size} when published "
            f"({'truncated' if actual < size else 'altered'} since)"
        )
    if file_sha256(archive) != sha256:
        return f"the sha256 of {archive.name} differs from the one recorded when it was published"
    return None


def read_artifact(directory: Path) -> Artifact | None:
    """The artifact published in ``directory``, or ``None`` when it is absent, incomplete or damaged.

    A build is skipped whenever this finds an artifact, so the archive is
    checked against the size and sha256 recorded at publication: an archive
    truncated or edited since (a full disk, a stray copy) would otherwise be
    installed and tested as if it were the build.  A damaged artifact gives a
    :class:`DamagedArtifactWarning` saying why, and the next build replaces it.
    """
    meta = read_json(Path(directory) / ARTIFACT_META)
    if not isinstance(meta, dict):
        return None
    try:
        archive = Path(directory) / meta["subdir"] / meta["archive"]
        problem = _archive_problem(archive, meta)
        if problem is not None:
            warnings.warn(
                f"artifact {directory}: {problem}; it is not trusted and will be built again",
                DamagedArtifactWarning,
                stacklevel=1,  # one place: a run that reads the artifact twice warns once
            )
            return None
        return Artifact(
            package=meta["package"],
            version=meta["version"],
            build=meta["build"],
            key=meta["key"],
            fingerprint=meta["fingerprint"],
            directory=Path(directory),
            archive=archive,
            subdir=meta["subdir"],
            imports=tuple(meta.get("imports", ())),
            build_dir=Path(meta["build_dir"]) if meta.get("build_dir") else None,
        )
    except (KeyError, TypeError):
        return None


def log_path(cache: Cache, cell: Cell) -> Path:
    return cache.root / "logs" / cell.id / "build.log"


def build_environment(
    cell: Cell,
    inputs: BuildInputs,
    *,
    build_dir: Path,
    install_dir: Path,
    installs_into_prefix: bool,
    base: Mapping[str, str],
    nproc: int,
) -> tuple[dict[str, str], Path | None]:
    """The environment a backend runs with, and the host prefix's python (if any)."""
    pkg = _package(cell)
    env = dict(base)
    bins = [p / "bin" for p in (inputs.build_prefix, inputs.host_prefix) if p is not None]
    env["PATH"] = os.pathsep.join([*(str(b) for b in bins), base.get("PATH", os.defpath)])
    host = inputs.host_prefix
    python = host / "bin" / "python" if host is not None else None
    if python is not None and not (python.exists() or python.is_symlink()):
        python = None
    env.update(
        {
            "PREFIX": str(install_dir if installs_into_prefix else (host or install_dir)),
            "HOST_PREFIX": str(host or ""),
            "BUILD_PREFIX": str(inputs.build_prefix or ""),
            "INSTALL_PREFIX": str(install_dir),
            "SRC_DIR": str(pkg.source_dir),
            "BUILD_DIR": str(build_dir),
            "CPU_COUNT": str(nproc),
            "PKG_NAME": pkg.name,
            "PKG_VERSION": pkg.version,
            "target_platform": cell.platform,
        }
    )
    if host is not None:
        env["CONDA_PREFIX"] = str(host)
    if python is not None:
        env["PYTHON"] = str(python)
    return env, python


def _start_build_dir(build_dir: Path, log: Path) -> None:
    """Prepare the persistent build directory; wipe it if a previous build never finished."""
    if (build_dir / INCOMPLETE).exists():
        shutil.rmtree(build_dir, ignore_errors=True)
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a", encoding="utf-8") as handle:
            handle.write("[harness] a previous build here did not finish; starting clean\n")
    build_dir.mkdir(parents=True, exist_ok=True)
    (build_dir / INCOMPLETE).write_text(f"{os.getpid()}\n", encoding="utf-8")


def build_package(cell: Cell, cache: Cache, inputs: BuildInputs) -> tuple[Artifact, bool]:
    """Build ``cell``'s package unless its artifact exists; returns ``(artifact, built)``.

    The caller holds the cell's lock; this takes the key's lock, so two cells
    with one key (or two processes on one cell) build once.
    """
    pkg = _package(cell)
    plan = plan_build(cell, cache, inputs)
    found = read_artifact(plan.artifact_dir)
    if found is not None:
        return found, False
    backend = get_backend(pkg.backend, manifest=cell.manifest)
    backend.check_config(thaw(pkg.config), cell.manifest)
    with cache.key_lock(f"build:{pkg.name}:{plan.key.key}"):
        found = read_artifact(plan.artifact_dir)
        if found is not None:
            return found, False
        return _build_locked(cell, cache, inputs, plan, backend), True


def _build_locked(cell: Cell, cache: Cache, inputs: BuildInputs, plan: BuildPlan, backend: Any) -> Artifact:
    pkg = _package(cell)
    log = log_path(cache, cell)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(
        f"[harness] cell {cell.id}: building {pkg.name} {pkg.version} with {backend.name}\n"
        f"[harness] variant key {plan.key.key}, source {plan.fingerprint}\n"
        f"[harness] build directory {plan.build_dir}\n",
        encoding="utf-8",
    )
    _start_build_dir(plan.build_dir, log)
    faults.point("build.dir-marked")
    install_dir = plan.build_dir / "_install"
    shutil.rmtree(install_dir, ignore_errors=True)
    install_dir.mkdir(parents=True)
    nproc = cpu_count()
    base = clean_base_env()
    env, python = build_environment(
        cell,
        inputs,
        build_dir=plan.build_dir,
        install_dir=install_dir,
        installs_into_prefix=bool(getattr(backend, "installs_into_prefix", False)),
        base=base,
        nproc=nproc,
    )
    raw = thaw(pkg.config)
    env.update(
        expand_env_table(raw.get("env") or {}, env, manifest=cell.manifest, nproc=nproc)
        if isinstance(raw.get("env"), Mapping)
        else {}
    )
    config = {
        k: (v if k == "env" else expand_config(v, env, key=("package", "build", "config", k),
                                               manifest=cell.manifest, nproc=nproc))
        for k, v in raw.items()
    }
    ctx = BuildContext(
        cell_id=cell.id,
        package=pkg.name,
        version=pkg.version,
        source_dir=pkg.source_dir,
        build_dir=plan.build_dir,
        install_dir=install_dir,
        host_prefix=inputs.host_prefix,
        build_prefix=inputs.build_prefix,
        platform=cell.platform,
        profile=cell.profile,
        profile_base=cell.profile_base,
        variant=cell.variant,
        config=FrozenDict(config),
        env=FrozenDict(env),
        python=python,
        cpu_count=nproc,
        log_path=log,
        channels=inputs.channels,
        manifest=cell.manifest,
        virtual_packages=cell.virtual_packages,
    )
    started = time.monotonic()
    try:
        output: BuildOutput = backend.build(ctx)
    except BuildError:
        (plan.build_dir / INCOMPLETE).unlink(missing_ok=True)  # a clean failure: state is consistent
        raise
    except Exception as exc:
        raise ctx.failure(f"the {backend.name} backend failed: {type(exc).__name__}: {exc}") from None
    ctx.log(f"build finished in {time.monotonic() - started:.1f}s")
    # The build directory is consistent from here on: a run killed while
    # publishing re-publishes from it incrementally instead of wiping it.
    (plan.build_dir / INCOMPLETE).unlink(missing_ok=True)
    faults.point("build.backend-done")
    artifact = _publish(cell, plan, ctx, output, install_dir)
    # The staging tree now lives in the artifact (and, unpacked, in the package
    # cache that prefixes link from): kept, it would be one more copy of every
    # file the package ships, per variant.  The next build stages afresh anyway.
    shutil.rmtree(install_dir, ignore_errors=True)
    return artifact


def release_depends(cell: Cell, output: BuildOutput) -> list[str]:
    """The package's ``depends``: its run-dependencies, the cell's variant pins, and the backend's."""
    pkg = _package(cell)
    run = [d.matchspec() for d in pkg.run_deps if not d.is_source and d.name != pkg.name]
    return list(dict.fromkeys([*run, *cell.variant_pins(), *output.depends]))


def _publish(cell: Cell, plan: BuildPlan, ctx: BuildContext, output: BuildOutput, install_dir: Path) -> Artifact:
    pkg = _package(cell)
    final = plan.artifact_dir
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        build = build_string(dict(cell.variant), plan.key.key, plan.fingerprint)
        try:
            archive, subdir = assemble(
                name=pkg.name,
                version=pkg.version,
                build=build,
                platform=cell.platform,
                output=output,
                install_dir=install_dir,
                depends=release_depends(cell, output),
                channel_dir=tmp,
            )
        except BuildError:
            raise
        except Exception as exc:  # rattler-build's own errors
            raise ctx.failure(f"packaging the build failed: {type(exc).__name__}: {exc}") from None
        if output.package is not None:
            build = _archive_build(archive, pkg.name, pkg.version) or build
        with contextlib.suppress(OSError):
            shutil.copy2(ctx.log_path, tmp / "build.log")
        faults.point("build.artifact-meta")
        atomic_write_json(
            tmp / ARTIFACT_META,
            {
                "package": pkg.name,
                "version": pkg.version,
                "build": build,
                "key": plan.key.key,
                "fingerprint": plan.fingerprint,
                "subdir": subdir,
                "archive": archive.name,
                "archive_sha256": file_sha256(archive),
                "archive_size": archive.stat().st_size,
                "imports": list(output.imports),
                "build_dir": str(plan.build_dir),
                "cell": cell.id,
                "profile": cell.profile,
                "key_material": thaw(plan.key.material),
                "created": time.time(),
            },
        )
        if final.exists():  # a leftover without readable metadata, or damaged: never trusted
            shutil.rmtree(final, ignore_errors=True)
        faults.point("build.renaming")
        os.replace(tmp, final)
        fsync_dir(final.parent)
        faults.point("build.renamed")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    artifact = read_artifact(final)
    if artifact is None:  # pragma: no cover - the metadata was just written
        raise BuildError(f"cell {cell.id!r}: artifact {final} could not be read back")
    return artifact


def _archive_build(archive: Path, name: str, version: str) -> str | None:
    stem = archive.name.removesuffix(".conda").removesuffix(".tar.bz2")
    prefix = f"{name}-{version}-"
    return stem[len(prefix):] if stem.startswith(prefix) else None


def artifact_records(artifact: Artifact, *, gateway: Any = None) -> list[Any]:
    """The artifact's ``RepoDataRecord`` (read from its channel's repodata)."""
    from rattler import Channel

    from harness.solve import run_sync, shared_gateway

    gw = gateway or shared_gateway()
    gw.clear_repodata_cache(Channel(artifact.channel_url))
    found = run_sync(
        gw.query([artifact.channel_url], [artifact.subdir, "noarch"], [artifact.package], recursive=False)
    )
    records = [r for group in found for r in group if str(r.build) == artifact.build]
    if not records:
        raise BuildError(
            f"artifact {artifact.archive} is not in its channel's repodata",
            hint=f"remove {artifact.directory} and build again",
        )
    return records[:1]
