"""Running a cell's test command and reading what it did.

The test command is whatever the project declares (``pytest``, ``python -m
pytest tests``, ``nox -s tests``, ``ctest && pytest``...).  The harness does
not need to know which tool it is: it extends ``PYTEST_ADDOPTS`` so that any
pytest the command ends up running writes JUnit XML where the harness asks and
writes no cache into the source tree, and sends bytecode to the cell's own
``PYTHONPYCACHEPREFIX`` (or sets ``PYTHONDONTWRITEBYTECODE``) so that no
``__pycache__`` lands there either (DESIGN invariant 3).  A command
that runs no pytest at all still gets a one-case JUnit file, so every cell of
a CI run has JUnit XML to upload.

A failing test run is a result, not an error: :func:`run_tests` returns a
:class:`TestOutcome` for it.  Only a command that cannot be started at all is
a :class:`~harness.errors.RunError`.
"""

from __future__ import annotations

import codecs
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from harness.launch import Launched, launch, needs_shell, test_argv, test_env

__all__ = ["needs_shell", "test_argv", "test_env"]  # re-exported: they were defined here

PASSED = "passed"
FAILED = "failed"
ERROR = "error"
SKIPPED = "skipped"
OUTCOMES = (PASSED, FAILED, ERROR, SKIPPED)

NO_TESTS_COLLECTED = "no tests were collected"

# pytest's exit codes other than 0 (all passed) and 1 (some failed), for the outcome's reason.
_PYTEST_EXIT = {
    2: "the test run was interrupted",
    3: "pytest hit an internal error",
    4: "pytest was called with a wrong option",
    5: NO_TESTS_COLLECTED,
}
_TAIL_BYTES = 64 * 1024
_REASON_TAIL_LINES = 8
_TERMINATE_GRACE = 10.0


@dataclass(frozen=True)
class TestCase:
    """One test as JUnit recorded it; ``name`` is a pytest node id when it can be rebuilt."""

    __test__ = False  # a value, not something for pytest to collect

    name: str
    outcome: str  # passed | failed | error | skipped
    message: str = ""


@dataclass(frozen=True)
class JUnitReport:
    """The cases of a JUnit file, or why it could not be read (``reason``)."""

    cases: tuple[TestCase, ...]
    reason: str = ""


@dataclass(frozen=True)
class TestOutcome:
    """What one cell's test command did: counts, failing tests, and where the evidence is."""

    __test__ = False

    cell: str
    command: tuple[str, ...]
    returncode: int
    passed: int
    failed: int
    errors: int
    skipped: int
    failures: tuple[str, ...]
    junit: Path | None
    log: Path | None
    duration: float
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.failures and not self.failed and not self.errors

    def to_json(self) -> dict[str, Any]:
        return {
            "cell": self.cell,
            "command": list(self.command),
            "returncode": self.returncode,
            "ok": self.ok,
            "passed": self.passed,
            "failed": self.failed,
            "errors": self.errors,
            "skipped": self.skipped,
            "failures": list(self.failures),
            "junit": str(self.junit) if self.junit is not None else None,
            "log": str(self.log) if self.log is not None else None,
            "duration": round(self.duration, 3),
            "reason": self.reason,
        }


# --- the command line ---------------------------------------------------------------------



# --- JUnit ---------------------------------------------------------------------------------


def read_junit(path: Path, *, root: Path | None = None) -> JUnitReport:
    """Every test case of a pytest JUnit file (xunit1 or xunit2, all suites summed).

    ``root`` is the directory pytest ran in; with it, dotted class names are
    turned back into node ids by finding the module file, otherwise class
    names are recognised by their capital letter.  A missing or corrupt file
    gives no cases and a reason instead of an exception: a crashed run must
    still produce an outcome.
    """
    try:
        tree = ET.parse(path)
    except FileNotFoundError:
        return JUnitReport((), f"no JUnit XML at {path}")
    except (ET.ParseError, OSError) as exc:
        return JUnitReport((), f"unreadable JUnit XML {path}: {exc}")
    top = tree.getroot()
    if top.tag not in ("testsuites", "testsuite"):
        return JUnitReport((), f"unreadable JUnit XML {path}: root element is <{top.tag}>")
    cases = tuple(_case(element, root) for element in top.iter("testcase"))
    return JUnitReport(cases)


def parse_junit(path: Path, *, root: Path | None = None) -> tuple[TestCase, ...]:
    """The test cases of a JUnit file; an empty tuple when it is missing or corrupt."""
    return read_junit(path, root=root).cases


def _case(element: ET.Element, root: Path | None) -> TestCase:
    name = _node_id(
        element.get("classname", ""), element.get("name", ""), element.get("file"), root
    )
    for tag, outcome in (("error", ERROR), ("failure", FAILED), ("skipped", SKIPPED)):
        child = element.find(tag)
        if child is not None:
            return TestCase(name, outcome, _message(child))
    return TestCase(name, PASSED)


def _message(child: ET.Element) -> str:
    message = (child.get("message") or "").strip()
    if message:
        return message
    text = (child.text or "").strip()
    return text.splitlines()[-1] if text else ""


def _node_id(classname: str, name: str, file: str | None, root: Path | None) -> str:
    """Undo pytest's ``mangle_test_address``: ``tests.test_x.TestA`` + ``t`` -> ``tests/test_x.py::TestA::t``."""
    if not classname:
        # A collection error: pytest names the module (dotted) and gives no class.
        parts = name.split(".")
        if len(parts) > 1 and all(p.isidentifier() for p in parts):
            module = _module_split(parts, root, file)
            if module == len(parts):
                return "/".join(parts) + ".py"
        return name
    parts = classname.split(".")
    split = _module_split(parts, root, file)
    if split == 0:
        return f"{classname}::{name}"
    module = "/".join(parts[:split]) + ".py"
    return "::".join([module, *parts[split:], name])


def _module_split(parts: list[str], root: Path | None, file: str | None) -> int:
    """How many leading dotted parts name the module file (0: not recognisable)."""
    if file and file.endswith(".py"):
        dotted = file[: -len(".py")].replace("\\", "/").split("/")
        if parts[: len(dotted)] == dotted:
            return len(dotted)
    if root is not None:
        for split in range(len(parts), 0, -1):
            if (root.joinpath(*parts[: split - 1]) / f"{parts[split - 1]}.py").is_file():
                return split
    for split, part in enumerate(parts):
        if part[:1].isupper():
            return split
    return len(parts)


_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _xml_text(text: str) -> str:
    """Drop what XML 1.0 cannot hold (terminal escape codes, NUL...), which would corrupt the file."""
    return _XML_ILLEGAL.sub("", text)


def write_synthetic_junit(
    path: Path, cell_id: str, command: str, returncode: int, duration: float, output: str
) -> TestCase:
    """Record a command that ran no pytest as one JUnit case, passed iff it exited 0."""
    output = _xml_text(output)
    passed = returncode == 0
    case = TestCase(
        command, PASSED if passed else FAILED, "" if passed else f"exit code {returncode}"
    )
    suites = ET.Element("testsuites")
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=cell_id,
        tests="1",
        failures="0" if passed else "1",
        errors="0",
        skipped="0",
        time=f"{duration:.3f}",
    )
    testcase = ET.SubElement(
        suite, "testcase", classname=cell_id, name=_xml_text(command), time=f"{duration:.3f}"
    )
    if not passed:
        failure = ET.SubElement(testcase, "failure", message=case.message)
        failure.text = output
    elif output:
        ET.SubElement(testcase, "system-out").text = output
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    ET.ElementTree(suites).write(partial, encoding="utf-8", xml_declaration=True)
    os.replace(partial, path)
    return case


# --- running -------------------------------------------------------------------------------




def run_tests(
    cell_id: str,
    command: str,
    *,
    env: Mapping[str, str],
    cwd: Path,
    extra_args: Sequence[str] = (),
    junit_path: Path,
    log_path: Path | None = None,
    echo: bool = True,
    pycache: Path | None = None,
    launched: Launched | None = None,
) -> TestOutcome:
    """Run a cell's test command in ``cwd`` with ``env`` and report what happened.

    ``launched`` is the same command already started by :func:`harness.launch.launch`
    (the warm start starts it before importing this module).

    The child's combined stdout and stderr are streamed as they come to this
    process's stdout (when ``echo``) and to ``log_path``.  ``junit_path`` is
    removed first so that a JUnit file left by an earlier run is never read
    as this run's.  Ctrl-C terminates the child and propagates.
    """
    if launched is None:
        launched = launch(
            cell_id, command, env=env, cwd=cwd, extra_args=extra_args, junit_path=junit_path,
            log_path=log_path, pycache=pycache,
        )
    proc, argv, started = launched.proc, launched.argv, launched.started
    tail = _stream(proc, log_path, echo)
    duration = time.monotonic() - started
    returncode = proc.returncode
    return _outcome(cell_id, command, argv, returncode, junit_path, log_path, cwd, duration, tail)


def _stream(proc: subprocess.Popen[bytes], log_path: Path | None, echo: bool) -> bytes:
    """Copy the child's output as it arrives; return its last bytes (for reasons and JUnit)."""
    assert proc.stdout is not None
    tail = bytearray()
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    log: BinaryIO | None = None
    try:
        log = log_path.open("wb") if log_path is not None else None
        fd = proc.stdout.fileno()
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            if log is not None:
                log.write(chunk)
                log.flush()
            if echo:
                sys.stdout.write(decoder.decode(chunk))
                sys.stdout.flush()
            tail += chunk
            del tail[:-_TAIL_BYTES]
        if echo:
            sys.stdout.write(decoder.decode(b"", final=True))
            sys.stdout.flush()
        proc.wait()
    except BaseException:
        _terminate(proc)
        raise
    finally:
        proc.stdout.close()
        if log is not None:
            log.close()
    return bytes(tail)


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=_TERMINATE_GRACE)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _outcome(
    cell_id: str,
    command: str,
    argv: list[str],
    returncode: int,
    junit_path: Path,
    log_path: Path | None,
    cwd: Path,
    duration: float,
    tail: bytes,
) -> TestOutcome:
    output = tail.decode("utf-8", errors="replace")
    ran_pytest = junit_path.exists()
    if ran_pytest:
        report = read_junit(junit_path, root=Path(cwd))
        cases = report.cases
        reason = report.reason
    else:
        cases = (write_synthetic_junit(junit_path, cell_id, command, returncode, duration, output),)
        reason = ""
    counts = {outcome: sum(1 for c in cases if c.outcome == outcome) for outcome in OUTCOMES}
    failures = tuple(c.name for c in cases if c.outcome in (FAILED, ERROR))
    if returncode != 0 and not reason:
        reason = _failure_reason(returncode, ran_pytest, bool(failures), output)
    return TestOutcome(
        cell=cell_id,
        command=tuple(argv),
        returncode=returncode,
        passed=counts[PASSED],
        failed=counts[FAILED],
        errors=counts[ERROR],
        skipped=counts[SKIPPED],
        failures=failures,
        junit=junit_path,
        log=log_path,
        duration=duration,
        reason=reason,
    )


def _failure_reason(returncode: int, ran_pytest: bool, has_failures: bool, output: str) -> str:
    if ran_pytest and returncode == 5:
        return NO_TESTS_COLLECTED
    if ran_pytest and has_failures and returncode == 1:
        return ""  # the failing tests say it all
    if returncode < 0:
        head = f"the test command was killed by signal {-returncode}"
    elif ran_pytest and returncode in _PYTEST_EXIT:
        head = f"{_PYTEST_EXIT[returncode]} (exit code {returncode})"
    else:
        head = f"the test command exited with code {returncode}"
    lines = [
        line.rstrip()
        for line in output.splitlines()
        if line.strip() and "generated xml file:" not in line
    ]
    if not lines:
        return head
    return head + "\n" + "\n".join(lines[-_REASON_TAIL_LINES:])
