"""Conda platforms, target selectors and the virtual packages a platform declares.

pixi's selectors: an exact subdir (``linux-64``), a family (``linux``, ``osx``,
``win``, ``unix``), a rich platform's own name, a glob (``cuda-*``), and for
package tables ``"if(...)"`` expressions over ``unix``/``linux``/... and
``host_platform == '...'``.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

from harness.frozen import FrozenDict

KNOWN_SUBDIRS = (
    "noarch",
    "linux-32",
    "linux-64",
    "linux-aarch64",
    "linux-armv6l",
    "linux-armv7l",
    "linux-ppc64le",
    "linux-ppc64",
    "linux-s390x",
    "linux-riscv32",
    "linux-riscv64",
    "osx-64",
    "osx-arm64",
    "win-32",
    "win-64",
    "win-arm64",
    "emscripten-wasm32",
    "wasi-wasm32",
    "zos-z",
)
FAMILIES = ("unix", "linux", "osx", "win", "emscripten", "wasi")

# pixi's defaults when a manifest says nothing (pixi_manifest::SystemRequirements)
DEFAULT_GLIBC = "2.28"
DEFAULT_LINUX = "4.18"
DEFAULT_OSX = {"osx-64": "13.0", "osx-arm64": "13.0"}
ARCHSPEC = {
    "linux-64": "x86_64",
    "linux-aarch64": "aarch64",
    "linux-ppc64le": "ppc64le",
    "osx-64": "x86_64",
    "osx-arm64": "arm64",
    "win-64": "x86_64",
}


def family_of(subdir: str) -> set[str]:
    """The selectors a subdir answers to besides its own name."""
    os_name = subdir.split("-", 1)[0]
    out = {os_name}
    if os_name in ("linux", "osx"):
        out.add("unix")
    return out


@dataclass(frozen=True)
class PlatformDecl:
    """A workspace platform: a plain subdir or a rich, named entry with virtual packages."""

    name: str
    subdir: str
    virtual: FrozenDict[str, str] = FrozenDict()  # cuda, glibc, linux, osx, archspec

    @property
    def is_rich(self) -> bool:
        return self.name != self.subdir or bool(self.virtual)


def selector_matches(selector: str, platform: PlatformDecl) -> bool:
    """Does a ``[target.<selector>]`` table apply to ``platform``?"""
    if selector.startswith("if(") and selector.endswith(")"):
        return evaluate_condition(selector[3:-1], platform.subdir)
    if selector in (platform.name, platform.subdir):
        return True
    if selector in family_of(platform.subdir):
        return True
    if any(c in selector for c in "*?["):
        return fnmatch.fnmatchcase(platform.name, selector) or fnmatch.fnmatchcase(
            platform.subdir, selector
        )
    return False


def selector_specificity(selector: str, platform: PlatformDecl) -> int:
    """Order of application: later (higher) wins.  unix < family < glob < subdir < rich name."""
    if selector.startswith("if("):
        return 2
    if selector == "unix":
        return 1
    if selector in FAMILIES:
        return 2
    if any(c in selector for c in "*?["):
        return 3
    if selector == platform.subdir:
        return 4
    return 5


def selector_error(selector: str, known_names: set[str]) -> str | None:
    """``None`` when the selector is well formed, else why not."""
    if selector.startswith("if("):
        if not selector.endswith(")"):
            return f"'{selector}' is not a valid condition"
        try:
            evaluate_condition(selector[3:-1], "linux-64")
        except ValueError as exc:
            return str(exc)
        return None
    if selector in KNOWN_SUBDIRS or selector in FAMILIES or selector in known_names:
        return None
    if any(c in selector for c in "*?["):
        return None
    return f"'{selector}' is not a known platform"


#: Deeper conditions are refused (a recursive parser would otherwise overflow the stack).
MAX_CONDITION_DEPTH = 64
_TOKEN = re.compile(r"\s*(\(|\)|==|!=|and\b|or\b|not\b|'[^']*'|\"[^\"]*\"|[A-Za-z_][A-Za-z0-9_\-]*)")


def evaluate_condition(text: str, subdir: str) -> bool:
    """Evaluate a pixi ``if(...)`` condition for ``subdir``; ValueError when malformed."""
    tokens: list[str] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise ValueError(f"cannot read the condition '{text}' at '{text[pos:]}'")
        tokens.append(m.group(1))
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    names = family_of(subdir) | {subdir}

    def atom(i: int, depth: int) -> tuple[bool, int]:
        if i >= len(tokens):
            raise ValueError(f"the condition '{text}' ends too early")
        if depth > MAX_CONDITION_DEPTH:
            raise ValueError(f"the condition nests `not` and parentheses more than {MAX_CONDITION_DEPTH} deep")
        tok = tokens[i]
        if tok == "not":
            value, j = atom(i + 1, depth + 1)
            return (not value), j
        if tok == "(":
            value, j = expr(i + 1, depth + 1)
            if j >= len(tokens) or tokens[j] != ")":
                raise ValueError(f"unbalanced parentheses in '{text}'")
            return value, j + 1
        if tok in ("host_platform", "target_platform", "build_platform"):
            if i + 2 >= len(tokens) or tokens[i + 1] not in ("==", "!="):
                raise ValueError(f"expected `{tok} == '<platform>'` in '{text}'")
            literal = tokens[i + 2].strip("'\"")
            equal = literal == subdir
            return (equal if tokens[i + 1] == "==" else not equal), i + 3
        if tok in FAMILIES or tok in KNOWN_SUBDIRS:
            return tok in names, i + 1
        raise ValueError(f"'{tok}' is not a known platform or variable in '{text}'")

    def expr(i: int, depth: int) -> tuple[bool, int]:
        value, i = atom(i, depth)
        while i < len(tokens) and tokens[i] in ("and", "or"):
            op = tokens[i]
            rhs, i = atom(i + 1, depth)
            value = (value and rhs) if op == "and" else (value or rhs)
        return value, i

    value, end = expr(0, 0)
    if end != len(tokens):
        raise ValueError(f"unexpected '{tokens[end]}' in '{text}'")
    return value


def default_virtual_packages(platform: PlatformDecl, requirements: dict[str, str]) -> tuple[str, ...]:
    """The virtual packages a cell *declares* for ``platform``: platform defaults,
    then the rich platform's and the environment's system requirements on top."""
    subdir = platform.subdir
    os_name = subdir.split("-", 1)[0]
    merged = {**dict(platform.virtual), **{k: v for k, v in requirements.items() if v}}
    out: list[str] = []
    if os_name in ("linux", "osx"):
        out.append("__unix=0")
    if os_name == "linux":
        out.append(f"__linux={merged.get('linux', DEFAULT_LINUX)}")
        libc = merged.get("libc") or merged.get("glibc") or DEFAULT_GLIBC
        out.append(f"__glibc={libc}")
    if os_name == "osx":
        out.append(f"__osx={merged.get('macos') or merged.get('osx') or DEFAULT_OSX.get(subdir, '13.0')}")
    if os_name == "win":
        out.append(f"__win={merged.get('windows') or '0'}")
    if merged.get("cuda"):
        out.append(f"__cuda={merged['cuda']}")
    arch = merged.get("archspec") or ARCHSPEC.get(subdir)
    if arch:
        out.append(f"__archspec=1={arch}")
    return tuple(out)
