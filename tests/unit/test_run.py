"""Running a cell's test command: counts, failing names, JUnit, pass-through args, errors."""

from __future__ import annotations

import io
import os
import shlex
import sys
import textwrap
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from harness.errors import RunError
from harness.run import (
    TestCase,
    TestOutcome,
    needs_shell,
    parse_junit,
    read_junit,
    run_tests,
    test_argv,
)

PYTEST = f"{shlex.quote(sys.executable)} -m pytest -q"

SUITE = """
import pytest

def test_one():
    assert True

def test_two():
    assert 1 + 1 == 2

def test_broken():
    assert 2 + 2 == 5, "arithmetic"

@pytest.mark.skip(reason="not on this runner")
def test_later():
    pass

class TestGroup:
    @pytest.mark.parametrize("x", [1, 2])
    def test_param(self, x):
        assert x == 1
"""


def clean_env() -> dict[str, str]:
    """This process's environment without the outer pytest's variables and bytecode setting.

    ``PYTHONDONTWRITEBYTECODE`` is dropped so that only ``run_tests`` can keep
    ``__pycache__`` out of the source tree.
    """
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PYTEST") and k != "PYTHONDONTWRITEBYTECODE"
    }


@pytest.fixture
def project(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "tests").mkdir(parents=True)
    (src / "tests" / "test_suite.py").write_text(textwrap.dedent(SUITE))
    return src


def run(
    project: Path,
    command: str,
    *,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    echo: bool = False,
) -> TestOutcome:
    out = project.parent / "out"
    return run_tests(
        "py312-cu13",
        command,
        env=clean_env() if env is None else env,
        cwd=project,
        extra_args=extra_args,
        junit_path=out / "junit.xml",
        log_path=out / "test.log",
        echo=echo,
    )


def test_counts_and_failing_names(project: Path) -> None:
    outcome = run(project, PYTEST)
    assert outcome.returncode == 1
    assert not outcome.ok
    assert (outcome.passed, outcome.failed, outcome.errors, outcome.skipped) == (3, 2, 0, 1)
    assert outcome.failures == (
        "tests/test_suite.py::test_broken",
        "tests/test_suite.py::TestGroup::test_param[2]",
    )
    assert outcome.junit is not None and outcome.junit.is_file()
    assert outcome.log is not None and "test_broken" in outcome.log.read_text()
    assert outcome.to_json()["failures"] == list(outcome.failures)
    assert outcome.to_json()["ok"] is False


def test_extra_args_reach_pytest(project: Path) -> None:
    outcome = run(project, PYTEST, extra_args=["-k", "test_one or test_two"])
    assert outcome.ok, outcome.reason
    assert (outcome.passed, outcome.failed, outcome.skipped) == (2, 0, 0)
    assert outcome.command[-2:] == ("-k", "test_one or test_two")


def test_existing_pytest_addopts_are_kept(project: Path) -> None:
    env = {**clean_env(), "PYTEST_ADDOPTS": "-k test_one"}
    outcome = run(project, PYTEST, env=env)
    assert outcome.ok
    assert outcome.passed == 1


def test_source_tree_stays_clean(project: Path) -> None:
    before = sorted(p.relative_to(project) for p in project.rglob("*"))
    run(project, PYTEST)
    after = sorted(p.relative_to(project) for p in project.rglob("*"))
    assert after == before
    assert not list(project.rglob("__pycache__"))
    assert not (project / ".pytest_cache").exists()


def test_output_is_echoed_and_logged(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outcome = run(project, PYTEST, echo=True)
    echoed = capsys.readouterr().out
    assert "test_broken" in echoed
    assert outcome.log is not None
    assert outcome.log.read_text() == echoed


def test_shell_command_gets_extra_args_at_the_end(project: Path) -> None:
    command = f"echo preparing > prep.txt && {PYTEST}"
    outcome = run(project, command, extra_args=["-k", "test_one"])
    assert outcome.command[:2] == ("bash", "-c")
    assert outcome.ok, outcome.reason
    assert outcome.passed == 1
    assert (project / "prep.txt").read_text() == "preparing\n"


def test_command_without_pytest_gets_synthetic_junit(project: Path) -> None:
    ok = run(project, f"{shlex.quote(sys.executable)} -c 'print(42)'")
    assert ok.ok
    assert (ok.passed, ok.failed) == (1, 0)
    assert ok.junit is not None
    assert [c.outcome for c in parse_junit(ok.junit)] == ["passed"]

    bad = run(
        project, f"{shlex.quote(sys.executable)} -c 'import sys; print(\"boom\"); sys.exit(3)'"
    )
    assert not bad.ok
    assert bad.returncode == 3
    assert (bad.passed, bad.failed) == (0, 1)
    assert len(bad.failures) == 1
    assert "exited with code 3" in bad.reason and "boom" in bad.reason
    assert bad.junit is not None
    assert [c.outcome for c in parse_junit(bad.junit)] == ["failed"]
    failure = ET.parse(bad.junit).getroot().find(".//failure")
    assert failure is not None and "boom" in (failure.text or "")


def test_stale_junit_is_not_read_as_this_runs(project: Path) -> None:
    first = run(project, PYTEST)
    assert first.failed == 2
    second = run(project, f"{shlex.quote(sys.executable)} -c pass")
    assert second.ok
    assert second.failures == ()


def test_no_tests_collected_is_a_failure(project: Path) -> None:
    outcome = run(project, PYTEST, extra_args=["-k", "no_such_test"])
    assert outcome.returncode == 5
    assert not outcome.ok
    assert outcome.reason == "no tests were collected"


def test_collection_error_is_an_error_with_the_module_name(project: Path) -> None:
    (project / "tests" / "test_bad_import.py").write_text("import no_such_module_here\n")
    outcome = run(project, PYTEST)
    assert not outcome.ok
    assert outcome.errors == 1
    assert "tests/test_bad_import.py" in outcome.failures


def test_missing_executable_is_a_run_error(project: Path) -> None:
    with pytest.raises(RunError) as info:
        run(project, "no-such-test-tool --flag")
    text = str(info.value)
    assert "py312-cu13" in text
    assert "no-such-test-tool" in text
    assert "hint:" in text


def test_empty_command_is_a_run_error(project: Path) -> None:
    with pytest.raises(RunError, match="empty test command"):
        run(project, "  ")


def test_ctrl_c_terminates_the_child(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pid_file = project.parent / "child.pid"
    script = (
        "import os, threading; "
        f"open({str(pid_file)!r}, 'w').write(str(os.getpid())); "
        "print('started', flush=True); threading.Event().wait()"
    )

    class Interrupting(io.StringIO):
        def write(self, text: str) -> int:
            if "started" in text:
                raise KeyboardInterrupt
            return super().write(text)

    monkeypatch.setattr(sys, "stdout", Interrupting())
    with pytest.raises(KeyboardInterrupt):
        run(project, f"{shlex.quote(sys.executable)} -c {shlex.quote(script)}", echo=True)
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # terminated and reaped


@pytest.mark.parametrize(
    ("command", "shell"),
    [
        ("pytest -x tests", False),
        ("python -m pytest -k 'a or b'", False),
        ('python -c "print(1); print(2)"', False),
        ("make && pytest", True),
        ("pytest | tee out.txt", True),
        ("pytest > out.txt", True),
        ("cd tests; pytest", True),
        ("pytest $EXTRA", True),
        ('pytest "$EXTRA"', True),
        ("pytest tests/test_*.py", True),
        ("FOO=1 pytest", True),
    ],
)
def test_needs_shell(command: str, shell: bool) -> None:
    assert needs_shell(command) is shell


def test_argv_plain_and_shell() -> None:
    assert test_argv("python -m pytest -k 'a or b'", ["-x"]) == [
        "python",
        "-m",
        "pytest",
        "-k",
        "a or b",
        "-x",
    ]
    assert test_argv("make && pytest", ["-k", "x y"]) == [
        "bash",
        "-c",
        'make && pytest "$@"',
        "bash",
        "-k",
        "x y",
    ]


def test_parse_junit_xunit1_and_nested_classes(tmp_path: Path) -> None:
    path = tmp_path / "j.xml"
    path.write_text(
        """<?xml version="1.0"?>
<testsuites>
 <testsuite name="a" tests="2">
  <testcase classname="pkg.tests.test_m.TestA.TestInner" name="test_x" file="pkg/tests/test_m.py"/>
  <testcase classname="pkg.tests.test_m" name="test_y"><error message="fixture boom"/></testcase>
 </testsuite>
 <testsuite name="b" tests="1">
  <testcase classname="tests.test_n" name="test_z"><skipped type="pytest.skip" message="later"/></testcase>
  <testcase classname="tests.test_n" name="test_w"><failure>E assert 0
last line</failure></testcase>
 </testsuite>
</testsuites>
"""
    )
    assert parse_junit(path) == (
        TestCase("pkg/tests/test_m.py::TestA::TestInner::test_x", "passed"),
        TestCase("pkg/tests/test_m.py::test_y", "error", "fixture boom"),
        TestCase("tests/test_n.py::test_z", "skipped", "later"),
        TestCase("tests/test_n.py::test_w", "failed", "last line"),
    )


def test_parse_junit_finds_modules_under_root(tmp_path: Path) -> None:
    (tmp_path / "Tests").mkdir()
    (tmp_path / "Tests" / "Test_Caps.py").write_text("")
    path = tmp_path / "j.xml"
    path.write_text('<testsuite><testcase classname="Tests.Test_Caps.TestK" name="t"/></testsuite>')
    assert parse_junit(path, root=tmp_path) == (TestCase("Tests/Test_Caps.py::TestK::t", "passed"),)


def test_corrupt_junit_gives_a_reason_not_an_exception(tmp_path: Path) -> None:
    path = tmp_path / "j.xml"
    path.write_text("<testsuites><testsuite><testcase name=")
    assert parse_junit(path) == ()
    report = read_junit(path)
    assert report.cases == ()
    assert "unreadable JUnit XML" in report.reason
    assert "no JUnit XML" in read_junit(tmp_path / "missing.xml").reason
