"""Fuzzed manifests and matrix files: bad input ends in a HarnessError, never in a traceback.

hypothesis writes pixi manifests (``pixi.toml`` and ``[tool.pixi]`` in
``pyproject.toml``) and matrix files from a grammar that is mostly valid, then
breaks them: wrong types at any level, unknown keys, cycles, hostile names
(``../x``, NUL, whitespace, unicode, very long, ids that collide once
templated), hostile paths (``/etc/passwd``, ``../../x``, symlink loops, a
matrix naming itself) and broken TOML text.  Each example drives the real
entry points (``compile_sources``, ``find_cells`` and the CLI's ``list``,
``show`` and ``plan``) and checks that:

* only a :class:`HarnessError` escapes, with a message that names the file
  (and the key, when it has one);
* the CLI exits 0 or 2 and prints no traceback, and ``list --json`` is JSON;
* nothing changes outside the cache root, and no configured command runs.

The budget is small for CI; ``HARNESS_FUZZ_EXAMPLES=2000`` raises it (and
switches from the fixed example sequence to random exploration).
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import hashlib
import io
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from harness.cli import run
from harness.errors import HarnessError
from harness.loader import compile_sources, find_cells

_RAISED = int(os.environ.get("HARNESS_FUZZ_EXAMPLES", "0") or 0)


def budget(examples: int) -> settings:
    """``examples`` per test (or ``$HARNESS_FUZZ_EXAMPLES``), no deadline, no database in the repo."""
    return settings(
        max_examples=_RAISED or examples,
        deadline=None,
        database=None,
        derandomize=not _RAISED,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
            HealthCheck.function_scoped_fixture,
        ],
    )


# -- TOML text ----------------------------------------------------------------------------


def toml_string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    out = ['"']
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{toml_string(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(type(value))


def dump_toml(doc: dict[str, Any], *, headers: bool) -> str:
    """A document; with ``headers`` its top-level tables become ``[name]`` sections."""
    plain = [f"{toml_string(k)} = {toml_value(v)}" for k, v in doc.items() if not (headers and isinstance(v, dict))]
    sections = []
    if headers:
        for k, v in doc.items():
            if isinstance(v, dict):
                body = "".join(f"{toml_string(sk)} = {toml_value(sv)}\n" for sk, sv in v.items())
                sections.append(f"[{toml_string(k)}]\n{body}")
    return "\n".join(plain) + "\n" + "\n".join(sections)


# -- the grammar --------------------------------------------------------------------------

MARKER = "MARKER"
SHELL_TRICKS = (
    f"$(touch {MARKER})",
    f"`touch {MARKER}`",
    f"${{X:-$(touch {MARKER})}}",
    "$((1+1))",
    "$( $(nproc) )",
)
HOSTILE_NAMES = (
    "../x", "x/y", "..", ".", "", " ", " x", "a\0b", "\t", "\n", "é", "名前", "x" * 300, "x\\y",
    "-x", "CON", "Py312", "py312", "PY312", "default", "dev", "release", "${HOME}", *SHELL_TRICKS,
)


plain_names = st.from_regex(r"[a-z][a-z0-9\-]{0,6}", fullmatch=True)
DEEP = 450  # past tomli's nesting limit (400), within Python's recursion limit for the writer
scalars = st.one_of(
    st.just(functools.reduce(lambda inner, _: [inner], range(DEEP), [])),
    st.text(max_size=6),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(),
    st.booleans(),
    st.dates(),
    st.datetimes(),
    st.times(),
)


class Grammar:
    """Strategies for every part of a manifest or a matrix file.

    A friendly grammar writes only what a user could mean (so examples get
    deep into the compiler and through to ``plan``); a hostile one mixes in,
    at every choice, wrong types, hostile names and broken values.
    """

    def __init__(self, hostile: bool) -> None:
        self.hostile = hostile
        pick = self.pick
        self.names = pick(plain_names, st.sampled_from(HOSTILE_NAMES) | st.text(max_size=6))
        self.anything = st.recursive(
            scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(self.names, inner, max_size=3),
            max_leaves=6,
        )
        self.channels = pick(
            st.sampled_from(["conda-forge", "https://example.invalid/channel", "nvidia/label/cuda-12.4.0"]),
            st.sampled_from(["./chan", "../../x", "file:///nonexistent", "", " ", "a\0b", "~nouser/x", "/etc/passwd",
                             "file://", *SHELL_TRICKS]),
        )
        self.subdirs = pick(st.sampled_from(["linux-64", "osx-arm64", "win-64"]),
                            st.sampled_from(["noarch", "linux-65", "", "../x", "LINUX-64"]))
        self.rich_platforms = pick(
            st.fixed_dictionaries({"name": st.just("linux-64-cuda"), "platform": st.just("linux-64"),
                                   "cuda": st.sampled_from(["12", "13"])}),
            st.fixed_dictionaries(
                {"name": st.sampled_from(["linux-64-cuda", "cuda", "linux", "x/y", ""]), "platform": self.subdirs},
                optional={"cuda": st.sampled_from(["12", "13", "x y", ""]), "bogus": st.just(1)},
            ),
        )
        self.package_names = pick(st.sampled_from(["python", "numpy", "cuda-version", "pytest"]),
                                  st.sampled_from(["../x", "x/y", "", "A", "é", "if(linux)", "pkg"]))
        self.versions = pick(st.sampled_from(["*", "3.12.*", ">=1,<2", "==1.0", "1.2"]),
                             st.sampled_from([">=<1", "", "1 2 3", "\0", *SHELL_TRICKS]) | st.text(max_size=5))
        self.dep_values = pick(self.versions, st.fixed_dictionaries({}, optional={
            "version": self.versions, "build": st.sampled_from(["py*", "[[[", "a b"]),
            "path": st.sampled_from([".", "../x"]), "channel": self.channels, "git": st.just(1)}))
        self.dependencies = st.dictionaries(self.package_names, self.dep_values, max_size=3)
        self.sysreq = st.dictionaries(
            pick(st.sampled_from(["cuda", "libc", "linux"]),
                 st.sampled_from(["macos", "archspec", "glibc", "osx", "bogus"])),
            pick(st.sampled_from(["12", "13", "2.28"]),
                 st.sampled_from(["x y", "", "\0", "12..", f"$(touch {MARKER})"]) | st.integers(0, 20)
                 | st.fixed_dictionaries({"family": st.sampled_from(["glibc", "musl", 1]), "version": st.just("2.17")})),
            max_size=2,
        )
        env_names = pick(st.sampled_from(["X", "CFLAGS", "MY_VAR"]),
                         st.sampled_from(["PATH", "BASH_ENV", "A=B", "", "BASH_FUNC_f%%", "PS4", "SHELLOPTS", "a\0b"]))
        # Command substitutions are valid *text* in an activation or matrix environment:
        # they must reach the cell as written, in friendly examples too.
        self.env_tables = st.dictionaries(
            env_names, st.sampled_from(["plain", "$HOME/x", "%PREFIX%", *SHELL_TRICKS])
            | (st.sampled_from(["a\0b", 1, True]) | st.dates() | st.times() if hostile else st.nothing()),
            max_size=3)
        self.selectors = pick(
            st.sampled_from(["linux-64", "linux", "unix", "win", "osx", "if(linux)", "if(not (osx or win))",
                             "if(host_platform == 'linux-64')"]),
            st.sampled_from(["cuda-*", "[!", "if(linux", "bogus", "if(" + "(" * 600 + "linux" + ")" * 600 + ")",
                             "if(" + "not " * 1200 + "linux)"]))
        self.tasks = st.fixed_dictionaries({}, optional={"test": pick(
            st.sampled_from(["python -m pytest -q", "pytest", f"echo $(touch {MARKER})"])
            | st.fixed_dictionaries({"cmd": st.sampled_from(["pytest", ["python", "-m", "pytest"]])}),
            st.fixed_dictionaries({}, optional={
                "cmd": st.one_of(st.text(max_size=5), st.lists(st.text(max_size=3) | st.integers(), max_size=2),
                             st.integers(), st.dates()),
                "depends-on": st.lists(self.names, max_size=1)}) | self.anything,
        )})
        self.axis_values = pick(
            st.sampled_from(["3.12", "3.13", "12", "13", "1.2"]),
            st.sampled_from(["A", "a", "12.", "../x", "", "x/y", "é", " ", "\0", *SHELL_TRICKS]) | st.integers()
            | st.floats() | st.booleans(),
        )

    def pick(self, good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any], ratio: int = 3) -> st.SearchStrategy[Any]:
        """``good``; when hostile, ``bad`` one time in ``ratio + 1``."""
        return st.one_of(*([good] * ratio), bad) if self.hostile else good

    def feature(self, *, root: bool) -> st.SearchStrategy[dict[str, Any]]:
        optional: dict[str, st.SearchStrategy[Any]] = {
            "dependencies": self.dependencies,
            "system-requirements": self.sysreq,
            "activation": st.fixed_dictionaries({}, optional={"env": self.env_tables,
                                                              "scripts": st.lists(self.names, max_size=1)}),
            "target": st.dictionaries(self.selectors, st.fixed_dictionaries({}, optional={
                "dependencies": self.dependencies,
                "activation": st.fixed_dictionaries({"env": self.env_tables})}), max_size=2),
            "tasks": self.tasks,
            "pypi-dependencies": st.dictionaries(self.package_names,
                                                 self.pick(st.sampled_from(["*", ">=1"]), self.anything), max_size=1),
        }
        if self.hostile and not root:
            optional["platforms"] = st.lists(self.subdirs, max_size=2)
            optional["channels"] = st.lists(self.channels, max_size=2)
        return st.fixed_dictionaries({}, optional=optional)


GRAMMARS = {False: Grammar(hostile=False), True: Grammar(hostile=True)}
anything = GRAMMARS[True].anything
names = GRAMMARS[True].names


@st.composite
def manifests(draw: st.DrawFn, hostile: bool | None = None) -> dict[str, Any]:
    """A pixi manifest as a dict: friendly, or with hostile values at any choice."""
    if hostile is None:
        hostile = draw(st.booleans(), label="hostile")
    g = GRAMMARS[hostile]
    feature_names = draw(st.lists(g.names, max_size=3, unique=True))
    profile_names = draw(st.lists(g.names.filter(lambda n: n not in ("dev", "release")) if not hostile else g.names,
                                  max_size=3, unique=True))
    workspace: dict[str, Any] = {
        "channels": draw(st.lists(g.channels, min_size=1, max_size=2)),
        "platforms": draw(st.lists(g.pick(g.subdirs, g.rich_platforms, ratio=2), max_size=2,
                                   unique_by=lambda p: str(p.get("name") if isinstance(p, dict) else p))),
    }
    workspace.update(draw(st.fixed_dictionaries({}, optional={
        "name": g.pick(plain_names, st.sampled_from(HOSTILE_NAMES) | st.integers()),
        "version": g.pick(st.just("1.0"), st.sampled_from(["", "\0", "x"]) | st.integers()),
        "solve-strategy": g.pick(st.sampled_from(["highest", "lowest"]), st.just("bogus") | st.integers()),
        "build-variants": st.dictionaries(
            st.sampled_from(["python", "cuda-version", "numpy"]),
            g.pick(st.lists(st.sampled_from(["3.12", "3.13", "12.*", "13.*", "1.26"]), min_size=1, max_size=2,
                            unique=True), st.sampled_from([[], "3.12", [True], ["><1"], ["", "1 2 3"]])),
            max_size=2),
        "build-variants-files": st.lists(g.pick(st.just("variants.yaml"), st.sampled_from(
            ["/etc/passwd", "/etc", "missing.yaml", "../../x.yaml", "loop"])), max_size=1),
    })))
    doc: dict[str, Any] = {"workspace": workspace}
    doc.update(draw(g.feature(root=True)))
    if feature_names:
        doc["feature"] = {name: draw(g.feature(root=False)) for name in feature_names}
    environments = {}
    known_profiles = [*profile_names, "dev", "release"]
    for env in draw(st.lists(g.names, max_size=3, unique=True)):
        choices = st.sampled_from(feature_names) if feature_names else st.nothing()
        feats = st.lists(g.pick(choices, g.names), max_size=2 if feature_names or hostile else 0, unique=True)
        environments[env] = draw(st.one_of(feats, st.fixed_dictionaries({"features": feats}, optional={
            "no-default-feature": g.pick(st.booleans(), st.integers()),
            "solve-group": g.names,
            "profile": g.pick(st.sampled_from(known_profiles), st.just("missing")),
            "dependencies": g.dependencies,
        })))
    if environments:
        doc["environments"] = environments
    if profile_names:
        profiles = {}
        for i, name in enumerate(profile_names):
            # friendly: parents come first (no cycles); hostile: any name, cycles included
            parents = st.sampled_from(["dev", "release", *profile_names[:i]])
            profiles[name] = draw(st.fixed_dictionaries({"inherits": g.pick(parents, st.sampled_from(
                [*profile_names, "missing"]) | st.integers())}, optional={
                "backends": st.dictionaries(st.sampled_from(["harness-build-script", "pixi-build-python"]),
                                            st.fixed_dictionaries({}, optional={"env": g.env_tables}), max_size=1),
                "packages": st.dictionaries(st.sampled_from(["pkg", "../x"]),
                                            st.fixed_dictionaries({}, optional={"env": g.env_tables}), max_size=1),
            }))
        doc["profiles"] = profiles
    if draw(st.booleans(), label="package"):
        backend = draw(g.pick(st.sampled_from(["harness-build-script", "pixi-build-python", "pixi-build-cmake"]),
                              st.sampled_from(["bogus", ""])))
        config: dict[str, st.SearchStrategy[Any]] = {"env": g.env_tables}
        if backend == "harness-build-script" or hostile:
            config["script"] = st.sampled_from([f"touch {MARKER}", "echo $PREFIX"])
        if backend != "harness-build-script" or hostile:
            config["extra-args"] = st.lists(st.sampled_from(["-DX=1", *SHELL_TRICKS]), max_size=2)
        if hostile:
            config["bogus"] = anything
        workspace["preview"] = draw(g.pick(st.just(["pixi-build"]), st.booleans() | st.integers()))
        doc.setdefault("dependencies", {})["pkg"] = {"path": "."}
        doc["package"] = {
            "name": draw(g.pick(st.just("pkg"), st.sampled_from(HOSTILE_NAMES) | st.integers())),
            "version": "1.0",
            "build": {"backend": {"name": backend, "version": "*"},
                      "config": draw(st.fixed_dictionaries({}, optional=config))},
            "host-dependencies": draw(g.dependencies),
        }
        if draw(st.booleans(), label="target config"):
            doc["package"]["build"]["target"] = {draw(g.selectors): {"config": draw(st.fixed_dictionaries(
                {}, optional={"env": g.env_tables}))}}
    return doc


@st.composite
def matrices(draw: st.DrawFn, hostile: bool | None = None) -> dict[str, Any]:
    """A matrix file as a dict; a hostile one's ``manifest`` may point anywhere, itself included."""
    if hostile is None:
        hostile = draw(st.booleans(), label="hostile")
    g = GRAMMARS[hostile]
    axis_names = draw(st.lists(g.pick(st.sampled_from(["python", "cuda", "numpy"]), g.names),
                               max_size=3, unique=True))
    axes: dict[str, Any] = {}
    for axis in axis_names:
        values = draw(st.lists(st.one_of(g.axis_values, st.fixed_dictionaries(
            {"value": g.axis_values}, optional={"label": g.names, "gpu": g.pick(st.just("optional"), st.just("bogus")),
                                                "env": g.env_tables})), min_size=1, max_size=3,
            unique_by=lambda v: str(v.get("value") if isinstance(v, dict) else v)))
        mapping: dict[str, st.SearchStrategy[Any]] = {
            "dependencies": st.dictionaries(g.package_names, g.pick(st.sampled_from(["{value}.*", "=={value}"]),
                                                                    st.just(">=<{value}")), max_size=2),
            "env": g.env_tables,
            "variant": st.dictionaries(st.sampled_from(["python", "cuda-version"]), st.just("{value}"), max_size=1),
            "label": g.pick(st.sampled_from(["{label}", "{value}"]), st.sampled_from(["x", "", "../"])),
            "tags": st.lists(g.names, max_size=1),
        }
        if axis == "cuda" or hostile:
            mapping["system-requirements"] = st.fixed_dictionaries(
                {"cuda": g.pick(st.just("{value}"), st.just("x{value}"))})
        if hostile:
            mapping["features"] = st.lists(g.names, max_size=1)
            mapping["bogus"] = anything
        axes[axis] = draw(st.one_of(st.just(values),
                                    st.fixed_dictionaries({"values": st.just(values)}, optional=mapping)))
    known = [*axis_names, "profile", "environment"]
    template = draw(g.pick(
        st.lists(st.sampled_from(known), min_size=1, max_size=3).map(lambda fs: "-".join("{" + f + "}" for f in fs)),
        st.sampled_from(["x", "../{profile}", "{nope}", "", "{", "A{python}"]) | g.names, ratio=2))
    doc: dict[str, Any] = {
        "manifest": draw(g.pick(st.sampled_from(["../ws/pixi.toml", "../ws"]), st.sampled_from([
            "..", "../pixi.toml", "m.toml", ".", "/etc/passwd", "/dev/zero", "loop", "missing.toml",
            "../../../../x", "up/up/pixi.toml", "passwd-link", "", "a\0b"]) | st.integers())),
    }
    if axes:
        doc["axes"] = axes
    combos = (st.dictionaries(st.sampled_from(axis_names), g.axis_values, min_size=1, max_size=len(axis_names))
              if axis_names else st.nothing())
    optional: dict[str, st.SearchStrategy[Any]] = {
        "name": st.just(template),
        "profiles": st.lists(g.pick(st.sampled_from(["dev", "release"]), g.names), min_size=1, max_size=2,
                             unique=True),
        "exclude": st.lists(combos, max_size=2 if axis_names else 0),
        "include": st.lists(st.fixed_dictionaries({a: g.axis_values for a in axis_names}), max_size=2),
        "gpu": g.pick(st.sampled_from(["required", "optional", "none"]), st.just("sometimes")),
        "test": g.pick(st.sampled_from(["python -m pytest", f"echo $(touch {MARKER})"]), anything),
        "platform": g.pick(st.just("linux-64"), st.sampled_from(["osx-arm64", "bogus", ""])),
        "runners": st.dictionaries(st.sampled_from(["default", "gpu"]), st.lists(g.names, max_size=1), max_size=1),
    }
    if hostile:
        optional.update({
            "environment": g.names,
            "exclude": st.lists(st.dictionaries(st.sampled_from([*known, "bogus"]), g.axis_values, max_size=2),
                                max_size=2),
            "include": st.lists(st.dictionaries(st.sampled_from([*known, "bogus"]), g.axis_values, max_size=3),
                                max_size=2),
            "zip": st.lists(st.lists(st.sampled_from([*axis_names, "bogus"]), max_size=2), max_size=1),
            "bogus": anything,
        })
    doc.update(draw(st.fixed_dictionaries({}, optional=optional)))
    return doc


# -- breaking things --------------------------------------------------------------------------


def mutate(data: st.DataObject, value: Any) -> Any:
    """``value`` with, now and then, a node replaced by any TOML value or an unknown key added."""
    roll = data.draw(st.integers(0, 39), label="mutate")
    if roll == 0:
        return data.draw(anything, label="replacement")
    if isinstance(value, dict):
        out = {k: mutate(data, v) for k, v in value.items()}
        if roll == 1:
            out[data.draw(names, label="unknown key")] = data.draw(anything, label="its value")
        return out
    if isinstance(value, list):
        return [mutate(data, v) for v in value]
    return value


def mutate_doc(data: st.DataObject, doc: dict[str, Any]) -> dict[str, Any]:
    """:func:`mutate` below the top level: a TOML document is always a table."""
    out = {k: mutate(data, v) for k, v in doc.items()}
    if data.draw(st.integers(0, 9), label="unknown top-level key") == 0:
        out[data.draw(names, label="key")] = data.draw(anything, label="value")
    return out


def break_text(data: st.DataObject, text: str) -> str:
    """``text`` with a few characters deleted, inserted or the end cut off (often no longer TOML)."""
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        if not text:
            break
        at = data.draw(st.integers(0, len(text) - 1), label="position")
        how = data.draw(st.sampled_from(["delete", "insert", "cut"]), label="edit")
        if how == "delete":
            text = text[:at] + text[at + 1:]
        elif how == "insert":
            text = text[:at] + data.draw(st.sampled_from(list("[]{}=\"'\\\n#.,")), label="char") + text[at:]
        else:
            text = text[:at]
    return text


# -- the world each example runs in ------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    """A scratch directory: the project, hostile links beside it, and the only cache root."""

    root: Path
    project: Path
    cache: Path

    @property
    def allowed_error_files(self) -> tuple[Path, ...]:
        """Files an error may name besides the scratch tree: targets of hostile paths."""
        return (Path("/etc/passwd"), Path("/etc"), Path("/dev/zero"))


def make_world(base: Path) -> World:
    root = Path(tempfile.mkdtemp(dir=base))
    project = root / "proj"
    (project / "matrices").mkdir(parents=True)
    (project / "chan").mkdir()
    (project / "variants.yaml").write_text("python:\n  - '3.12'\n")
    (project / "loop").symlink_to("loop")
    (project / "matrices" / "loop").symlink_to("loop")
    (project / "matrices" / "up").symlink_to("..")  # a directory loop: up/up/up/...
    (project / "matrices" / "passwd-link").symlink_to("/etc/passwd")
    return World(root, project, root / "cache")


def snapshot(root: Path, skip: Path) -> dict[str, tuple[Any, ...]]:
    """Every path under ``root`` but ``skip``: kind, size, mtime and a content hash (links not followed)."""
    out: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        if here == skip or skip in here.parents:
            dirnames[:] = []
            continue
        for name in dirnames + filenames:
            path = here / name
            st_ = path.lstat()
            if path.is_symlink():
                out[str(path)] = ("link", os.readlink(path))
            elif path.is_file():
                out[str(path)] = ("file", st_.st_size, st_.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
            else:
                out[str(path)] = ("dir", st_.st_mtime_ns)
    return out


@contextlib.contextmanager
def isolated(world: World) -> Iterator[None]:
    """Run with ``world.project`` as the working directory and ``world.cache`` as the cache root."""
    old_cwd = os.getcwd()
    old_env = {k: os.environ.get(k) for k in ("HARNESS_CACHE_DIR",)}
    os.environ["HARNESS_CACHE_DIR"] = str(world.cache)
    os.chdir(world.project)
    try:
        yield
    finally:
        os.chdir(old_cwd)
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def check_error(exc: HarnessError, world: World, sources: list[Path]) -> None:
    """A user error names a file (in the scratch tree, or the hostile target it was pointed at).

    A cell asked for by id in several sources is in none of them: that error names them all.
    """
    text = str(exc)
    assert exc.message.strip(), repr(exc)
    if exc.file is None and len(sources) > 1:
        assert all(str(s) in text for s in sources), text
        return
    assert exc.file is not None, f"the error names no file: {text}"
    assert str(exc.file) in text
    inside = exc.file == world.root or world.root in exc.file.parents or world.root.resolve() in exc.file.parents
    assert inside or exc.file in world.allowed_error_files, f"the error names {exc.file}: {text}"
    if exc.key:
        assert exc.key in text


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run(list(argv))
    return code, out.getvalue(), err.getvalue()


def check_cli(world: World, *argv: str) -> tuple[int, str]:
    code, out, err = cli(*argv)
    assert code in (0, 2), (argv, code, err)
    assert "Traceback" not in err, err
    if code == 2:
        assert err.startswith("error: ") and len(err.strip()) > len("error:"), err
    return code, out


def exercise(world: World, sources: list[Path]) -> None:
    """Every entry point over ``sources``; the properties hold whatever they contain."""
    before = snapshot(world.root, world.cache)
    listing_before = sorted(os.listdir(world.root.parent))
    with isolated(world):
        try:
            compiled = compile_sources(sources)
            event("compiled to " + ("no cell" if not compiled.cells else "cells"))
        except HarnessError as exc:
            check_error(exc, world, sources)
            event(f"{type(exc).__name__} at {exc.key or '(no key)'}")
            compiled = None
        src = [str(p) for p in sources]
        code, out = check_cli(world, "list", *src, "--json")
        if code == 0:
            listed = json.loads(out)
            assert compiled is not None and [c["id"] for c in listed] == [c.id for c in compiled.cells]
        check_cli(world, "list", *src)
        check_cli(world, "list")  # what the working directory holds
        ids = [c.id for c in compiled.cells] if compiled else []
        for wanted in [*ids[:1], "*", "../x", ""]:
            try:
                found = find_cells([wanted], sources)
                assert all(c.id in ids for c in found)
            except HarnessError as exc:
                check_error(exc, world, sources)
            check_cli(world, "show", wanted, *src)
            check_cli(world, "show", wanted, *src, "--json")
        if ids and len(sources) == 1:
            check_cli(world, "plan", ids[0], "--from", src[0])
    after = snapshot(world.root, world.cache)
    assert after == before, {k: (before.get(k), after.get(k)) for k in set(before) ^ set(after) or before}
    assert sorted(os.listdir(world.root.parent)) == listing_before
    assert not list(world.root.rglob(MARKER)), "a configured command ran"


# -- the properties ---------------------------------------------------------------------------


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)


@budget(120)
@given(hostile=st.booleans(), data=st.data(), as_pyproject=st.booleans(), headers=st.booleans())
def test_fuzzed_manifests_give_a_harness_error_or_cells(scratch: Path, hostile: bool, data: st.DataObject,
                                                        as_pyproject: bool, headers: bool) -> None:
    world = make_world(scratch)
    doc = data.draw(manifests(hostile), label="manifest")
    if as_pyproject:
        name = "pyproject.toml"
        doc = {"project": {"name": "pkg", "version": "1.0"}, "tool": {"pixi": doc}}
    else:
        name = "pixi.toml"
    if hostile:
        doc = mutate_doc(data, doc)
    path = world.project / name
    path.write_text(dump_toml(doc, headers=headers and not as_pyproject), encoding="utf-8")
    exercise(world, [data.draw(st.sampled_from([path, world.project]), label="source")])


FRIENDLY_MANIFEST = {
    "workspace": {"channels": ["conda-forge"], "platforms": ["linux-64", "osx-arm64"]},
    "feature": {"gpu": {"system-requirements": {"cuda": "12"}}, "extra": {"dependencies": {"numpy": "*"}}},
    "dependencies": {"python": "*"},
}


@budget(120)
@given(hostile=st.booleans(), data=st.data(), fixed_manifest=st.booleans())
def test_fuzzed_matrix_files_give_a_harness_error_or_cells(scratch: Path, hostile: bool, data: st.DataObject,
                                                           fixed_manifest: bool) -> None:
    world = make_world(scratch)
    manifest = FRIENDLY_MANIFEST if fixed_manifest else data.draw(manifests(hostile), label="manifest")
    (world.project / "ws").mkdir()
    shutil.copy(world.project / "variants.yaml", world.project / "ws")
    (world.project / "ws" / "pixi.toml").write_text(dump_toml(manifest, headers=True), encoding="utf-8")
    doc = data.draw(matrices(hostile), label="matrix")
    if hostile:
        doc = mutate_doc(data, doc)
    matrix = world.project / "matrices" / "m.toml"
    matrix.write_text(dump_toml(doc, headers=data.draw(st.booleans(), label="headers")), encoding="utf-8")
    # the project directory holds no manifest of its own: as a source, it means its matrices;
    # with the manifest as a second source, an environment and a cell may share an id
    sources = data.draw(st.sampled_from([[matrix], [world.project], [matrix, world.project / "ws" / "pixi.toml"]]),
                        label="sources")
    exercise(world, sources)


@budget(80)
@given(doc=st.one_of(manifests(), matrices()), data=st.data())
def test_broken_toml_text_gives_a_harness_error(scratch: Path, doc: dict[str, Any], data: st.DataObject) -> None:
    world = make_world(scratch)
    is_matrix = "manifest" in doc
    if is_matrix:
        (world.project / "pixi.toml").write_text('[workspace]\nchannels = ["conda-forge"]\nplatforms = ["linux-64"]\n')
    target = world.project / ("matrices/m.toml" if is_matrix else "pixi.toml")
    target.write_text(break_text(data, dump_toml(doc, headers=True)), encoding="utf-8")
    exercise(world, [target])


@budget(30)
@given(
    sizes=st.lists(st.integers(2, 60), min_size=3, max_size=6),
    profiles=st.lists(st.sampled_from(["dev", "release"]), min_size=1, max_size=2, unique=True),
    includes=st.integers(0, 3),
)
def test_huge_products_are_refused_before_they_are_built(scratch: Path, sizes: list[int], profiles: list[str],
                                                        includes: int) -> None:
    """10^5 to 10^10 combinations: a limit error naming the matrix file, at once, not a hang."""
    from harness.matrix.read import MAX_CELLS

    world = make_world(scratch)
    (world.project / "pixi.toml").write_text('[workspace]\nchannels = ["conda-forge"]\nplatforms = ["linux-64"]\n')
    if math.prod(sizes) * len(profiles) <= MAX_CELLS:  # push it over the limit with one more axis
        sizes = [*sizes, MAX_CELLS // (math.prod(sizes) * len(profiles)) + 1]
    axes = {f"a{i}": [str(v) for v in range(n)] for i, n in enumerate(sizes)}
    doc = {"manifest": "../pixi.toml", "profiles": profiles, "axes": axes,
           "include": [{k: f"new{j}" for k in axes} for j in range(includes)]}
    matrix = world.project / "matrices" / "m.toml"
    matrix.write_text(dump_toml(doc, headers=True), encoding="utf-8")
    with isolated(world), pytest.raises(HarnessError) as info:
        compile_sources([matrix])
    assert info.value.file == matrix.resolve() and info.value.key == "axes"
    expected = (math.prod(sizes) + includes) * len(profiles)
    assert f"up to {expected} cells (limit {MAX_CELLS})" in info.value.message
