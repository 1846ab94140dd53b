"""DESIGN invariant 4 under ``kill -9``: a killed run leaves nothing the next run trusts.

A real cell (a package built by the script backend against its own build and
host environments, installed into a test environment and tested) is run with
the CLI, exactly as a user runs it, and killed:

* at every named point of :mod:`harness.faults`, the first, second and third
  time a clean run passes it (``HARNESS_FAULT_KILL=<point>@<n>``), for the
  ``dev`` and the ``release`` profile;
* at moments drawn uniformly (seeded) over a run, with a warm or a cold
  package cache, to land inside rattler's own install and extraction
  (``HARNESS_FAULT_POINTS=N`` raises their number).

After each kill a fresh process runs the cell again and must end with exactly
what a clean run gives: the same lock (parsed, matching its sidecar), the
same complete prefixes (``verify_prefix``, the same records hash), the same
artifact (its archive matching its channel's repodata), a passing test, no
``incomplete`` marker, and nothing new left behind: temporary files of the
killed process may stay, but are never read.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from rattler.index import index_fs
from rattler_build import assemble_package

from harness import faults
from harness.build.driver import ARTIFACT_META, INCOMPLETE, artifact_records, read_artifact
from harness.cache import CACHE_ENV, PKGS_ENV, Cache
from harness.cell import Cell
from harness.gc import TEMPORARY_AGE, gc_root
from harness.loader import find_cells
from harness.lock import lock_path, read_lock, records_digest, sidecar_path
from harness.prefix import INCOMPLETE_MARKER, installed_hash, meta_dir, verify_prefix
from harness.pypi import MARKER as PYPI_MARKER
from harness.solve import TEST_ROLE
from harness.stages import plan

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "faultpkg"
PROFILES = {"dev": "cell", "release": "cell-release"}
#: Kill at the 1st, 2nd and 3rd passage of a point (the lock is written three times, three
#: prefixes are installed); a point passed once is killed once.
MAX_HITS = 3
POINTS_ENV = "HARNESS_FAULT_POINTS"
DEFAULT_RANDOM_POINTS = 6
RUN_TIMEOUT = 180.0

MANIFEST = """\
[workspace]
channels = ["{channel}"]
platforms = ["linux-64"]
preview = ["pixi-build"]

[package]
name = "faultpkg"
version = "1.0"

[package.build]
backend = {{ name = "harness-build-script", version = "*" }}

[package.build-dependencies]
maketool = "*"

[package.host-dependencies]
libhost = "*"

[package.run-dependencies]
librun = "*"

[dependencies]
faultpkg = {{ path = "." }}

[tasks]
test = "faultpkg-check"
"""

MATRIX = """\
manifest = "../pixi.toml"
environment = "default"
name = "cell"
profiles = ["dev", "release"]
"""

# Built in the variant's build directory (the source tree stays clean); uses the build tool
# from the build prefix and the header from the host prefix, so both must be complete.
BUILD_SH = """\
mkdir -p "$PREFIX/bin" "$PREFIX/share/faultpkg"
install -m 755 "$SRC_DIR/check.sh" "$PREFIX/bin/faultpkg-check"
maketool > made.txt
cp "$HOST_PREFIX/include/libhost/h99.h" "$PREFIX/share/faultpkg/"
for i in $(seq 1 60); do echo "$i" > "$PREFIX/share/faultpkg/part-$i.txt"; done
"""

# The cell's test: every file of the package and of its run-dependency is in the prefix.
CHECK_SH = """\
#!/bin/sh
set -e
for i in $(seq 0 299); do test -f "$CONDA_PREFIX/share/librun/f$i.txt"; done
for i in $(seq 1 60); do test "$(cat "$CONDA_PREFIX/share/faultpkg/part-$i.txt")" = "$i"; done
test -f "$CONDA_PREFIX/share/faultpkg/h99.h"
echo faultpkg ok
"""


# -- the channel and the project -----------------------------------------------------------


def _assemble(
    chan: Path,
    name: str,
    files: Mapping[str, str],
    subdir: str = "noarch",
    *,
    version: str = "1.0",
    symlinks: Mapping[str, str] | None = None,
) -> None:
    stage = chan.parent / f".stage-{name}"
    for rel, text in files.items():
        target = stage / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        if rel.startswith("bin/"):
            target.chmod(0o755)
    for rel, dest in (symlinks or {}).items():
        (stage / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(dest, stage / rel)
    assemble_package(
        name=name,
        version=version,
        target_platform=subdir,
        build_string="0",
        output_dir=chan / subdir,
        files_dir=stage,
        noarch="generic" if subdir == "noarch" else None,
    )


def make_fault_channel(chan: Path) -> Path:
    """A local channel with a build tool, a host library and a run-dependency of 300 files.

    The files make rattler's install long enough that a random kill can land in it.
    """
    for sub in ("noarch", "linux-64"):
        (chan / sub).mkdir(parents=True, exist_ok=True)
    _assemble(chan, "maketool", {"bin/maketool": "#!/bin/sh\necho made\n"}, "linux-64")
    _assemble(chan, "libhost", {f"include/libhost/h{i}.h": f"#define H{i} {i}\n" for i in range(100)})
    _assemble(chan, "librun", {f"share/librun/f{i}.txt": f"run {i}\n" for i in range(300)})
    asyncio.run(index_fs(chan))
    return chan


@dataclass(frozen=True)
class Run:
    """One finished (or killed) ``harness test`` process."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def report(self) -> dict[str, Any]:
        """The JSON run report the CLI names on stderr."""
        found = re.findall(r"^report: (.+)$", self.stderr, flags=re.M)
        assert found, f"no report named (rc {self.returncode}):\n{self.stderr[-3000:]}"
        return json.loads(Path(found[-1]).read_text())

    def describe(self) -> str:
        return f"rc {self.returncode}\n--- stdout\n{self.stdout[-2000:]}\n--- stderr\n{self.stderr[-3000:]}"


@dataclass(frozen=True)
class FaultProject:
    """The source tree (shared by every run) and how to run the CLI on it."""

    root: Path
    matrix: Path
    pkgs_dir: Path

    def env(self, cache_root: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HARNESS_FAULT_")}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
        env[CACHE_ENV] = str(cache_root)
        env[PKGS_ENV] = str(self.pkgs_dir)
        env.update(extra or {})
        return env

    def argv(self, cell_id: str) -> list[str]:
        return ["test", "--from", str(self.matrix), cell_id, "-q"]

    def run(self, cache_root: Path, cell_id: str, extra: Mapping[str, str] | None = None) -> Run:
        proc = subprocess.run(
            [sys.executable, "-m", "harness", *self.argv(cell_id)],
            cwd=self.root,
            env=self.env(cache_root, extra),
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
        )
        return Run(proc.returncode, proc.stdout, proc.stderr)

    def launch(
        self, cache_root: Path, cell_id: str, ready: Path, go: Path | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> subprocess.Popen[str]:
        """The CLI in a process that imports it, touches ``ready``, waits for ``go``, then runs.

        Start-up (imports) is kept out of the run, so that several processes start their
        runs together and a timed kill lands in the run itself.
        """
        code = (
            "import os, sys, time\n"
            "from pathlib import Path\n"
            "import harness.cli, harness.commands, harness.pipeline\n"
            "Path(sys.argv[1]).touch()\n"
            "go = sys.argv[2]\n"
            "while go and not os.path.exists(go):\n"
            "    time.sleep(0.005)\n"
            "harness.cli.main(sys.argv[3:])\n"
        )
        return subprocess.Popen(
            [sys.executable, "-c", code, str(ready), str(go or ""), *self.argv(cell_id)],
            cwd=self.root,
            env=self.env(cache_root, extra),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def cell(self, cell_id: str) -> Cell:
        return find_cells([cell_id], [self.matrix])[0]

    def cache(self, cache_root: Path) -> Cache:
        return Cache(root=cache_root, pkgs_dir=self.pkgs_dir)


def make_fault_project(base: Path) -> FaultProject:
    """The channel, the source tree with its manifest and matrix, and a package cache of its own.

    The package cache is not rattler's shared one: random kills interrupt its extraction.
    """
    channel = make_fault_channel(base / "channel")
    root = base / "faultpkg"
    (root / "matrices").mkdir(parents=True)
    (root / "pixi.toml").write_text(MANIFEST.format(channel=channel.as_uri()))
    (root / "matrices" / "faults.toml").write_text(MATRIX)
    (root / "build.sh").write_text(BUILD_SH)
    (root / "check.sh").write_text(CHECK_SH)
    pkgs = base / "pkgs"
    pkgs.mkdir()
    return FaultProject(root=root, matrix=root / "matrices" / "faults.toml", pkgs_dir=pkgs)


# -- what a finished run leaves --------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """A cache root after a successful run, reduced to what must not depend on its history."""

    lock_records: dict[str, str]  # role -> records hash of the locked packages
    installed: dict[str, str]  # role -> records hash the prefix's marker says it holds
    meta_files: dict[str, tuple[str, ...]]  # role -> conda-meta/*.json
    artifact: str  # the artifact directory's name (variant key and source fingerprint)
    archive_sha256: str


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def verify_complete(project: FaultProject, cache_root: Path, cell_id: str) -> Snapshot:
    """Assert that ``cache_root`` holds a complete, trusted state of the cell; describe it."""
    cell = project.cell(cell_id)
    cache = project.cache(cache_root)

    lock = lock_path(cache, cell_id)
    sidecar = json.loads(sidecar_path(cache, cell_id).read_text())
    assert sidecar["lock_sha256"] == _sha256(lock), "the lock does not match its sidecar"
    state = read_lock(cache, cell)  # parses the lock and checks it against the sidecar
    assert state.exists and state.problem is None, state.problem

    not_cached = [str(s) for s in plan(cell, cache) if s.status != "cached"]
    assert not not_cached, f"a further run would redo: {not_cached}"

    published = [d for d in (cache.artifacts_dir / PACKAGE).iterdir() if not d.name.startswith(".")]
    assert len(published) == 1, published
    artifact = read_artifact(published[0])
    assert artifact is not None, f"{published[0]} is not a complete artifact"
    meta = json.loads((artifact.directory / ARTIFACT_META).read_text())
    assert (meta["archive"], meta["subdir"], meta["build"]) == (
        artifact.archive.name, artifact.subdir, artifact.build
    )
    repodata = json.loads((artifact.directory / artifact.subdir / "repodata.json").read_text())
    entry = repodata["packages.conda"][artifact.archive.name]
    archive_sha = _sha256(artifact.archive)
    assert entry["sha256"] == archive_sha, "the archive does not match its channel's repodata"
    assert len([d for d in (cache.build_dir / PACKAGE).iterdir()]) == 1

    installed: dict[str, str] = {}
    meta_files: dict[str, tuple[str, ...]] = {}
    for role, locked in state.roles.items():
        records = list(locked.records)
        if role == TEST_ROLE and cell.profile_base == "dev":
            records += artifact_records(artifact)  # dev: the build is installed beside the env
        prefix = cache.prefix(cell_id, role)
        problems = verify_prefix(prefix, records)
        assert not problems, f"prefix {role}: {problems}"
        assert installed_hash(prefix) == records_digest(records), f"prefix {role}: wrong records"
        installed[role] = installed_hash(prefix) or ""
        meta_files[role] = tuple(sorted(p.name for p in meta_dir(prefix).glob("*.json")))
        if role == TEST_ROLE:
            [record] = [r for r in records if r.name.normalized == PACKAGE]
            assert record.sha256 is not None and record.sha256.hex() == archive_sha
    return Snapshot(
        lock_records={role: locked.records_hash for role, locked in state.roles.items()},
        installed=installed,
        meta_files=meta_files,
        artifact=artifact.directory.name,
        archive_sha256=archive_sha,
    )


#: The harness's temporary names: ``.x.tmp-<pid>`` (lock, artifact), ``.x.<random>.tmp`` (JSON).
TMP_NAME = re.compile(r"\..+\.tmp(-\d+)?")


@dataclass(frozen=True)
class Leftovers:
    """Temporary files and ``incomplete`` markers under a cache root."""

    tmp: frozenset[str]
    prefix_markers: frozenset[str]
    build_markers: frozenset[str]
    artifact_published: bool

    @classmethod
    def of(cls, root: Path) -> Leftovers:
        tmp: set[str] = set()
        prefix_markers: set[str] = set()
        build_markers: set[str] = set()
        for path in root.rglob("*"):
            rel = str(path.relative_to(root))
            if TMP_NAME.fullmatch(path.name):
                tmp.add(rel)
            elif path.name == INCOMPLETE_MARKER:
                prefix_markers.add(rel)
            elif path.name == INCOMPLETE:
                build_markers.add(rel)
        artifacts = root / "artifacts" / PACKAGE
        published = artifacts.is_dir() and any(
            read_artifact(d) is not None for d in artifacts.iterdir() if not d.name.startswith(".")
        )
        return cls(frozenset(tmp), frozenset(prefix_markers), frozenset(build_markers), published)


def check_recovered_run(run: Run, cell_id: str) -> None:
    assert run.returncode == 0, run.describe()
    outcome = run.report["tests"][cell_id]
    assert outcome["ok"] and outcome["passed"] == 1, outcome


def check_after_kill(
    project: FaultProject, reference: Reference, killed: Leftovers, label: str
) -> None:
    """Run the cell again in a fresh process and compare what it leaves with a clean run."""
    root = reference.cache_root
    recovered = project.run(root, reference.cell_id)
    try:
        check_recovered_run(recovered, reference.cell_id)
        assert verify_complete(project, root, reference.cell_id) == reference.snapshot
        after = Leftovers.of(root)
        assert not after.prefix_markers, after.prefix_markers
        # The killed process's own temporary files may stay (nobody reads them); the
        # run after it leaves none of its own.
        assert after.tmp <= killed.tmp, after.tmp - killed.tmp
        # A build directory stays marked only while its backend runs: once the run
        # after a kill has its artifact, no build directory is left marked.
        assert not after.build_markers, after.build_markers
        # gc, once no write can own them, removes those temporary files and nothing the cell uses.
        cells = find_cells([reference.cell_id], [project.matrix])
        report = gc_root(Cache(root), cells, now=time.time() + TEMPORARY_AGE + 1)
        assert {r.kind for r in report.removed} <= {"temporary", "leftover"}, report.removed
        assert not Leftovers.of(root).tmp, Leftovers.of(root).tmp
        assert verify_complete(project, root, reference.cell_id) == reference.snapshot
    except AssertionError as exc:
        raise AssertionError(f"after a kill at {label}: {exc}") from None


# -- fixtures ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """A clean run of one cell: the points it passed and the state it left."""

    cell_id: str
    cache_root: Path  # every run of this cell uses this root (records hold absolute URLs)
    trace: tuple[str, ...]
    snapshot: Snapshot
    run_seconds: float = field(default=0.0, compare=False)


@pytest.fixture(scope="module")
def fault_project(tmp_path_factory: pytest.TempPathFactory) -> FaultProject:
    return make_fault_project(tmp_path_factory.mktemp("faults"))


@pytest.fixture(scope="module")
def reference(
    fault_project: FaultProject, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], Reference]:
    """A clean run per profile (made on first use), in the cache root its fault runs reuse."""
    made: dict[str, Reference] = {}
    base = tmp_path_factory.mktemp("fault-caches")

    def get(profile: str) -> Reference:
        if profile not in made:
            cell_id = PROFILES[profile]
            root = base / profile
            trace = base / f"{profile}.trace"
            ready = base / f"{profile}.ready"
            proc = fault_project.launch(root, cell_id, ready, extra={faults.TRACE_ENV: str(trace)})
            wait_ready(proc, ready)
            started = time.monotonic()
            out, err = proc.communicate(timeout=RUN_TIMEOUT)
            run = Run(proc.returncode, out, err)
            check_recovered_run(run, cell_id)
            made[profile] = Reference(
                cell_id=cell_id,
                cache_root=root,
                trace=tuple(trace.read_text().split()),
                snapshot=verify_complete(fault_project, root, cell_id),
                run_seconds=time.monotonic() - started,
            )
            assert not Leftovers.of(root).tmp
        return made[profile]

    return get


def wait_ready(proc: subprocess.Popen[str], ready: Path) -> None:
    """Wait until a launched process has imported the harness (or has died trying)."""
    while not ready.exists():
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.002)


def reset(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)


# -- the points themselves -----------------------------------------------------------------------


def _point_calls() -> Iterator[tuple[Path, str]]:
    for path in sorted((REPO / "harness").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        calls = re.findall(r"faults\.point\(([^)]*)\)", text)
        for arg in calls:
            literal = re.fullmatch(r'"([^"]+)"', arg.strip())
            assert literal, f"{path}: faults.point({arg}) must name its point literally"
            yield path, literal.group(1)


def test_every_point_in_the_sources_is_listed_once() -> None:
    used = [name for _, name in _point_calls()]
    assert sorted(used) == sorted(faults.NAMES), (
        f"not listed in faults.POINTS: {sorted(set(used) - faults.NAMES)}; "
        f"listed but never called: {sorted(faults.NAMES - set(used))}; "
        f"called twice: {sorted(n for n in set(used) if used.count(n) > 1)}"
    )
    assert all(meaning.strip() for _, meaning in faults.POINTS)


def _probe(env: Mapping[str, str], calls: list[str]) -> subprocess.CompletedProcess[str]:
    code = "import sys\nfrom harness import faults\nfor name in sys.argv[1:]:\n    faults.point(name)\nprint('survived')\n"
    full = {k: v for k, v in os.environ.items() if not k.startswith("HARNESS_FAULT_")}
    full["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), full.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-c", code, *calls], env={**full, **env}, capture_output=True, text=True,
        timeout=60,
    )


def test_kill_spec_counts_hits_of_the_named_point_only(tmp_path: Path) -> None:
    calls = ["lock.writing", "prefix.linked", "lock.writing"]
    cases = {
        "lock.writing": -signal.SIGKILL,
        "lock.writing@2": -signal.SIGKILL,
        "lock.writing@3": 0,
        "prefix.linked@1": -signal.SIGKILL,
        "prefix.linked@2": 0,
    }
    for spec, expected in cases.items():
        proc = _probe({faults.KILL_ENV: spec}, calls)
        assert proc.returncode == expected, (spec, proc.returncode, proc.stderr)
    trace = tmp_path / "trace"
    proc = _probe({faults.KILL_ENV: "lock.writing@2", faults.TRACE_ENV: str(trace)}, calls)
    assert proc.returncode == -signal.SIGKILL
    assert trace.read_text().split() == calls  # the point is traced before the kill


def test_a_wrong_kill_spec_is_reported_and_kills_nothing() -> None:
    for spec in ("lock.writng", "lock.writing@0", "lock.writing@x"):
        proc = _probe({faults.KILL_ENV: spec}, ["lock.writing", "lock.writing"])
        assert proc.returncode == 0 and proc.stdout.strip() == "survived", spec
        assert faults.KILL_ENV in proc.stderr, spec


# -- kills at named points -----------------------------------------------------------------------

BUILD_POINTS = [name for name, _ in faults.POINTS if not name.startswith("pypi.")]


def test_clean_runs_pass_every_point(reference: Callable[[str], Reference]) -> None:
    """The named-point kills below cover every point but the PyPI one (tested on its own)."""
    for profile in PROFILES:
        passed = set(reference(profile).trace)
        assert passed == set(BUILD_POINTS), (profile, sorted(set(BUILD_POINTS) ^ passed))


@pytest.mark.parametrize("profile", list(PROFILES))
@pytest.mark.parametrize("name", BUILD_POINTS)
def test_kill_at_named_point(
    name: str, profile: str, fault_project: FaultProject, reference: Callable[[str], Reference]
) -> None:
    ref = reference(profile)
    hits = ref.trace.count(name)
    assert hits, f"a clean {profile} run never passes {name}"
    for nth in range(1, min(hits, MAX_HITS) + 1):
        label = f"{name}@{nth} ({profile})"
        reset(ref.cache_root)
        killed = fault_project.run(ref.cache_root, ref.cell_id, {faults.KILL_ENV: f"{name}@{nth}"})
        assert killed.returncode == -signal.SIGKILL, f"{label} was not reached: {killed.describe()}"
        check_after_kill(fault_project, ref, Leftovers.of(ref.cache_root), label)


# -- kills at random moments ------------------------------------------------------------------


def landing(ref: Reference, killed: Leftovers) -> str:
    """Where a timed kill landed, read from what it left (for the test's output, not asserted)."""
    if killed.prefix_markers:
        roles = sorted(Path(p).parts[-3] for p in killed.prefix_markers)
        return f"inside the install of {'+'.join(roles)}"
    if killed.build_markers and not killed.artifact_published:
        return "inside the build"
    envs = ref.cache_root / "envs" / ref.cell_id
    if not envs.exists():
        return "before the first install"
    if killed.artifact_published and installed_hash(envs / TEST_ROLE):
        return "after the last install"
    return "between stages"



def test_kill_at_random_moments(
    fault_project: FaultProject, reference: Callable[[str], Reference], tmp_path: Path
) -> None:
    """SIGKILL at moments drawn uniformly over a run (the draw decides where it lands).

    Every other attempt starts with an empty package cache, so kills also land
    while rattler extracts archives; every third one is killed a second time
    while it recovers, before the run that must succeed.
    """
    count = int(os.environ.get(POINTS_ENV) or DEFAULT_RANDOM_POINTS)
    rng = random.Random(4_2024)
    landed: list[str] = []
    for attempt in range(count):
        profile = list(PROFILES)[attempt % len(PROFILES)]
        ref = reference(profile)
        project = fault_project
        if attempt % 2:
            pkgs = tmp_path / f"pkgs-{attempt}"
            pkgs.mkdir()
            project = FaultProject(root=fault_project.root, matrix=fault_project.matrix, pkgs_dir=pkgs)
        reset(ref.cache_root)
        kills = 2 if attempt % 3 == 2 else 1
        union = Leftovers(frozenset(), frozenset(), frozenset(), False)
        for k in range(kills):
            ready = tmp_path / f"ready-{attempt}-{k}"
            proc = project.launch(ref.cache_root, ref.cell_id, ready)
            wait_ready(proc, ready)
            time.sleep(rng.uniform(0.0, ref.run_seconds))  # the moment of the kill
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=RUN_TIMEOUT)
            now = Leftovers.of(ref.cache_root)
            landed.append("finished first" if proc.returncode == 0 else landing(ref, now))
            union = Leftovers(
                union.tmp | now.tmp,
                now.prefix_markers,
                union.build_markers | now.build_markers,
                now.artifact_published,
            )
        check_after_kill(project, ref, union, f"random attempt {attempt}")
    print(f"random kills landed: {dict(Counter(landed))}")


# -- the PyPI stage --------------------------------------------------------------------------

PYENV = Path("~/.pyenv/versions/3.12.1").expanduser()
INTERPRETER = PYENV / "bin" / "python3.12"

PYPI_MANIFEST = """\
[workspace]
channels = ["{channel}"]
platforms = ["linux-64"]

[dependencies]
python = "3.12.*"

[pypi-dependencies]
tinypkg = {{ path = "./{wheel}" }}

[tasks]
test = "python -c 'import tinypkg; assert tinypkg.VALUE == 42'"
"""


def write_wheel(directory: Path, name: str = "tinypkg", version: str = "0.1") -> Path:
    """A pure wheel written by hand: uv installs it with no build backend and no index."""
    files = {
        f"{name}/__init__.py": "VALUE = 42\n",
        f"{name}-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{name}-{version}.dist-info/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = f"{name}-{version}.dist-info/RECORD"
    lines = []
    for path, text in files.items():
        sha = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        lines.append(f"{path},sha256={sha},{len(text.encode())}")
    files[record] = "\n".join([*lines, f"{record},,"]) + "\n"
    wheel = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


def test_kill_between_uv_and_the_pypi_marker(tmp_path: Path) -> None:
    """uv has installed the PyPI packages, the marker is not written: the next run installs again."""
    if not INTERPRETER.exists():
        pytest.skip(f"needs the pyenv interpreter {INTERPRETER} to bridge a real python")
    chan = tmp_path / "pychan"
    for sub in ("noarch", "linux-64"):
        (chan / sub).mkdir(parents=True)
    _assemble(
        chan,
        "python",
        {
            "pyvenv.cfg": f"home = {PYENV}/bin\ninclude-system-site-packages = false\n"
            f"version = 3.12.1\nexecutable = {INTERPRETER}\n",
            "lib/python3.12/site-packages/_conda_shim_marker.txt": "keep dir\n",
        },
        "linux-64",
        version="3.12.1",
        symlinks={f"bin/{n}": str(INTERPRETER) for n in ("python", "python3", "python3.12")},
    )
    asyncio.run(index_fs(chan))
    root = tmp_path / "pypiproj"
    root.mkdir()
    wheel = write_wheel(root)
    (root / "pixi.toml").write_text(PYPI_MANIFEST.format(channel=chan.as_uri(), wheel=wheel.name))
    (tmp_path / "pkgs").mkdir()
    project = FaultProject(root=root, matrix=root / "pixi.toml", pkgs_dir=tmp_path / "pkgs")
    uv = {"UV_CACHE_DIR": str(tmp_path / "uv-cache"), "UV_OFFLINE": "1"}
    cache_root = tmp_path / "cache"

    killed = project.run(cache_root, "default", {**uv, faults.KILL_ENV: "pypi.installed"})
    assert killed.returncode == -signal.SIGKILL, killed.describe()
    prefix = project.cache(cache_root).prefix("default", TEST_ROLE)
    assert not (meta_dir(prefix) / PYPI_MARKER).exists()
    left = Leftovers.of(cache_root)

    recovered = project.run(cache_root, "default", uv)
    check_recovered_run(recovered, "default")
    assert recovered.report["summary"]["pypi"] == {"done": 1}
    assert recovered.report["summary"]["install"] == {"cached": 1}  # the conda prefix is kept
    cell = project.cell("default")
    cache = project.cache(cache_root)
    assert [s.stage for s in plan(cell, cache) if s.status != "cached"] == []
    [locked] = read_lock(cache, cell).roles.values()
    assert verify_prefix(prefix, locked.records) == []
    after = Leftovers.of(cache_root)
    assert not after.prefix_markers and after.tmp <= left.tmp
