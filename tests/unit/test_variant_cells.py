"""Open build variants become cells; each pixi manifest form the reader must keep, on a small
manifest of its own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.cell import check_id
from harness.compile import compile_cells, compile_manifest
from harness.errors import CellError, HarnessError, ManifestError
from harness.launch import test_argv
from harness.loader import compile_sources
from harness.manifest.read import load_manifest
from harness.manifest.variants import compatible, variant_label
from harness.specs import variant_spec

HEAD = """
[workspace]
name = "pkg"
channels = ["conda-forge"]
platforms = ["linux-64"]
preview = ["pixi-build"]
"""
PACKAGE = """
[package]
name = "pkg"
version = "0.1.0"
[package.build]
backend = { name = "pixi-build-python", version = "*" }
[package.host-dependencies]
python = "*"
cuda-version = "*"
"""


def cells(write, text: str, name: str = "pixi.toml") -> list:
    return list(compile_manifest(load_manifest(write(name, text))).cells)


# -- variants -> cells -------------------------------------------------------------------------


def test_cu13_with_python_open_gives_one_cell_per_python(write) -> None:
    text = HEAD + """
    [workspace.build-variants]
    python = ["3.10.*", "3.11.*", "3.12.*"]
    cuda-version = ["12.8.*", "13.*"]
    [dependencies]
    pkg = { path = "." }
    [feature.cu13.dependencies]
    cuda-version = "13.*"
    [environments]
    cu13 = ["cu13"]
    """ + PACKAGE
    got = cells(write, text)
    assert [c.id for c in got] == ["cu13-py310", "cu13-py311", "cu13-py312"]
    assert {c.variant["cuda-version"] for c in got} == {"13.*"}
    assert len({c.pure_key for c in got}) == 3
    # the assignment reaches the solve as pins
    assert "python 3.11.*" in got[1].variant_pins() and "cuda-version 13.*" in got[1].variant_pins()


def test_values_the_environment_excludes_are_left_out(write) -> None:
    text = HEAD + """
    [workspace.build-variants]
    python = ["3.10.*", "3.11.*", "3.12.*", "3.13.*"]
    cuda-version = ["12.8.*", "12.9.*", "13.*"]
    [dependencies]
    pkg = { path = "." }
    python = ">=3.12"
    cuda-version = "12.*"
    """ + PACKAGE
    assert [c.id for c in cells(write, text)] == ["py312-cu128", "py312-cu129", "py313-cu128", "py313-cu129"]


@pytest.mark.parametrize(
    ("key", "value", "label"),
    [("python", "3.12.*", "py312"), ("python", "3.10", "py310"), ("cuda-version", "12.8.*", "cu128"),
     ("cuda-version", "12.*", "cu12"), ("c_compiler", "gcc", "c_compiler-gcc"),
     ("numpy", ">=2,<3", "numpy-2-3"), ("mpi", "open mpi", "mpi-open-mpi")],
)
def test_labels_follow_what_users_write_by_hand(key: str, value: str, label: str) -> None:
    assert variant_label(key, value) == label
    assert check_id(label) is None


def test_a_matrix_expands_the_keys_its_axes_leave_open(write) -> None:
    write("pixi.toml", HEAD + """
    [workspace.build-variants]
    python = ["3.12.*", "3.13.*"]
    cuda-version = ["12.*", "13.*"]
    [dependencies]
    pkg = { path = "." }
    """ + PACKAGE)
    matrix = write("m.toml", """
    manifest = "pixi.toml"
    name = "cu{cuda}"
    [axes.cuda]
    values = ["12", "13"]
    dependencies = { cuda-version = "{value}.*" }
    """)
    got = compile_sources([matrix]).cells
    assert [c.id for c in got] == ["cu12-py312", "cu12-py313", "cu13-py312", "cu13-py313"]
    assert all(c.axes["cuda"] in c.variant["cuda-version"] for c in got)


WITH_LINT = HEAD + """
[workspace.build-variants]
python = ["3.12.*", "3.13.*"]
[dependencies]
pkg = { path = "." }
[feature.lint.dependencies]
ruff = "*"
[environments]
default = []
lint = { features = ["lint"], no-default-feature = true }
""" + PACKAGE.replace('cuda-version = "*"\n', "")


def test_an_environment_without_the_package_has_no_build_stage(write) -> None:
    text = WITH_LINT
    got = {c.id: c for c in cells(write, text)}
    assert set(got) == {"py312", "py313", "lint"}
    assert got["lint"].package is None and not got["lint"].variant
    assert got["py312"].package is not None


def test_harness_list_says_which_cells_build_and_ends_its_last_line(write) -> None:
    path = write("pixi.toml", WITH_LINT)
    done = subprocess.run([sys.executable, "-m", "harness", "list", str(path)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.endswith("\n")
    rows = {line.split()[0]: line.split()[-1] for line in out.splitlines()[1:]}
    assert rows == {"py312": "pkg", "py313": "pkg", "lint": "-"}


# Random variant spaces and environment pins: the cells are exactly the allowed combinations.
VALUES = st.lists(st.sampled_from(["3.10", "3.11", "3.12", "3.13", "3.14"]), min_size=1, max_size=4, unique=True)
CUDAS = st.lists(st.sampled_from(["12.8", "12.9", "13.0", "13.1"]), min_size=1, max_size=3, unique=True)
PINS = st.sampled_from([None, "3.12.*", ">=3.12", "<3.12", "3.11.*|3.13.*"])
CUDA_PINS = st.sampled_from([None, "12.*", "13.*", ">=12.9"])


@settings(max_examples=40, deadline=None)
@given(pythons=VALUES, cudas=CUDAS, pin=PINS, cuda_pin=CUDA_PINS)
def test_cells_are_exactly_the_allowed_combinations(tmp_path_factory, pythons, cudas, pin, cuda_pin) -> None:
    root = tmp_path_factory.mktemp("space")
    deps = "".join(f'{k} = "{v}"\n' for k, v in (("python", pin), ("cuda-version", cuda_pin)) if v)
    text = (HEAD + f"""
[workspace.build-variants]
python = {[f"{p}.*" for p in pythons]}
cuda-version = {[f"{c}.*" for c in cudas]}
[dependencies]
pkg = {{ path = "." }}
{deps}""" + PACKAGE).replace("'", '"')
    (root / "pixi.toml").write_text(text)
    allowed = [
        (p, c) for p in pythons for c in cudas
        if (pin is None or compatible(f"{p}.*", pin)) and (cuda_pin is None or compatible(f"{c}.*", cuda_pin))
    ]
    m = load_manifest(root / "pixi.toml")
    if not allowed:
        with pytest.raises(CellError, match="allows no value"):
            compile_manifest(m)
        return
    got = compile_manifest(m).cells
    assert sorted((c.variant["python"], c.variant["cuda-version"]) for c in got) == sorted(
        (f"{p}.*", f"{c}.*") for p, c in allowed)
    ids = [c.id for c in got]
    assert len(set(ids)) == len(ids) and all(check_id(i) is None for i in ids)
    for c in got:  # every cell's assignment satisfies its environment's pins
        assert pin is None or compatible(c.variant["python"], pin)
        assert cuda_pin is None or compatible(c.variant["cuda-version"], cuda_pin)
        assert variant_spec(c.variant["python"]) in c.variant_pins()[1]


# -- tasks the pixi way -------------------------------------------------------------------------


def task_cell(write, tasks: str, env_line: str = ""):
    text = HEAD.replace('preview = ["pixi-build"]\n', "") + tasks + env_line
    (cell,) = compile_sources([write("pixi.toml", text)]).cells
    return cell


def run_test_command(cell, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", **{k: v for k, v in cell.activation_env.items()}}
    return subprocess.run(test_argv(cell.test_command, list(extra)), env=env, cwd=tmp_path,
                          capture_output=True, text=True)


def test_an_alias_runs_its_task(write, tmp_path: Path) -> None:
    cell = task_cell(write, '[tasks]\nstart = "echo started"\ntest = [{ task = "start" }]\n')
    assert cell.test_command == "echo started"
    assert run_test_command(cell, tmp_path, "-k", "x").stdout == "started -k x\n"


def test_depends_on_runs_first_once_each_in_order(write, tmp_path: Path) -> None:
    cell = task_cell(write, """
    [tasks]
    a = "echo a >> log"
    b = { cmd = "echo b >> log", depends-on = ["a"] }
    c = { cmd = "echo c >> log", depends-on = ["a", "b"] }
    test = { cmd = "echo test >> log", depends-on = ["b", "c"] }
    """)
    result = run_test_command(cell, tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "log").read_text().split() == ["a", "b", "c", "test"]
    assert "runs a -> b -> c -> test" in cell.provenance["test_command"]


def test_a_failing_dependency_stops_the_chain_and_is_named(write, tmp_path: Path) -> None:
    cell = task_cell(write, """
    [tasks]
    build = "echo building >> log; exit 3"
    test = { cmd = "echo test >> log", depends-on = ["build"] }
    """)
    result = run_test_command(cell, tmp_path)
    assert result.returncode == 3
    assert "task 'build' failed with exit code 3" in result.stderr
    assert (tmp_path / "log").read_text().split() == ["building"]


def test_a_target_task_replaces_the_default_one_whole(write) -> None:
    cell = task_cell(write, """
    [tasks]
    prepare = "echo prepare"
    [tasks.test]
    depends-on = [{ task = "prepare" }]
    [target.linux.tasks.test]
    cmd = ["pytest", "$PIXI_PROJECT_ROOT"]
    [target.win-64.tasks.test]
    cmd = ["pytest", "%PIXI_PROJECT_ROOT%"]
    """)
    assert cell.test_command == "pytest $PIXI_PROJECT_ROOT"


def test_feature_tasks_cwd_env_args_and_project_variables(write, tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    cell = task_cell(write, """
    [feature.t.tasks]
    where = { cmd = "pwd > $PIXI_PROJECT_ROOT/where.txt", cwd = "sub" }
    test = { cmd = "echo {{ greeting }} $WHO $PIXI_ENVIRONMENT_NAME {{ pixi.platform }}", depends-on = ["where"], env = { WHO = "world" }, args = [{ arg = "greeting", default = "hello" }] }
    """, '[environments]\nt = ["t"]\n')
    assert cell.activation_env["PIXI_PROJECT_ROOT"] == str(tmp_path)
    result = run_test_command(cell, tmp_path)
    assert result.stdout == "hello world t linux-64\n", result.stderr
    assert (tmp_path / "where.txt").read_text().strip() == str(tmp_path / "sub")


def test_a_task_only_another_environment_defines_fails_the_cells_tests_saying_so(write, tmp_path: Path) -> None:
    text = HEAD.replace('preview = ["pixi-build"]\n', "") + """
    [feature.rust.tasks]
    test-fast = "cargo test"
    [environments]
    rust = ["rust"]
    test = { tasks = { test = { depends-on = ["test-fast"] } } }
    """
    got = {c.id: c for c in compile_sources([write("pixi.toml", text)]).cells}
    assert got["rust"].test_command == "python -m pytest"
    result = run_test_command(got["test"], tmp_path, "-k", "x")
    assert result.returncode == 2
    assert "test-fast" in result.stderr and "rust" in result.stderr and "another environment" in result.stderr


@pytest.mark.parametrize(
    ("tasks", "message"),
    [
        ('[tasks]\na = { cmd = "x", depends-on = ["b"] }\nb = { cmd = "y", depends-on = ["a"] }\ntest = { depends-on = ["a"] }\n',
         "cycle: a -> b -> a"),
        ('[tasks]\ntest = { cmd = "x", depends-on = ["nope"] }\n', "task 'nope'"),
        ('[tasks]\ntest = { cmd = "echo {{ who }}", args = ["who"] }\n', "needs its argument 'who'"),
    ],
)
def test_task_errors_name_the_tasks(write, tasks: str, message: str) -> None:
    with pytest.raises(ManifestError, match=message.replace("(", r"\(")) as info:
        task_cell(write, tasks)
    assert info.value.file is not None and info.value.line is not None


# -- pixi forms ---------------------------------------------------------------------------------


def test_a_nameless_rich_platform_gets_pixis_derived_name(write) -> None:
    text = """
    [workspace]
    channels = ["conda-forge"]
    platforms = [{ platform = "linux-64", cuda = "12.9" }, "osx-arm64"]
    [feature.gpu]
    platforms = ["linux-64-cuda-12-9"]
    [environments]
    gpu = ["gpu"]
    """
    (cell,) = cells(write, text)
    assert cell.platform_name == "linux-64-cuda-12-9" and "__cuda=12.9" in cell.virtual_packages


def test_a_feature_may_add_a_plain_platform_the_workspace_does_not_list(write) -> None:
    text = """
    [workspace]
    channels = ["conda-forge"]
    platforms = ["linux-64"]
    [feature.mac]
    platforms = ["osx-arm64"]
    [environments]
    mac = ["mac"]
    """
    (cell,) = cells(write, text)
    assert cell.platform == "osx-arm64"


def test_an_environment_whose_platforms_do_not_intersect_is_no_cell_and_says_so(write) -> None:
    text = """
    [workspace]
    channels = ["conda-forge"]
    platforms = ["linux-64", "osx-64", "win-64"]
    [feature.a]
    platforms = ["osx-64"]
    [feature.b]
    platforms = ["win-64"]
    [environments]
    ok = ["a"]
    none = ["a", "b"]
    """
    compiled = compile_manifest(load_manifest(write("pixi.toml", text)))
    assert [c.id for c in compiled.cells] == ["ok"]
    assert any("'none' is not a cell" in w for w in compiled.warnings)


def test_pyproject_extras_groups_dependencies_and_requires_python(write) -> None:
    path = write("pyproject.toml", """
    [project]
    name = "demo"
    version = "1.0"
    requires-python = ">= 3.11"
    dependencies = ["rich>=13", "tomli; python_version < '3.11'"]
    [project.optional-dependencies]
    plot = ["matplotlib"]
    [dependency-groups]
    test = ["pytest>=8", { include-group = "plot" }]
    [tool.pixi.workspace]
    channels = ["conda-forge"]
    platforms = ["linux-64"]
    [tool.pixi.environments]
    default = []
    test = ["test", "plot"]
    """)
    got = {c.id: c for c in compile_manifest(load_manifest(path)).cells}
    default, test = got["default"], got["test"]
    assert [d.matchspec() for d in default.dependencies] == ["python >=3.11"]
    assert dict(default.pypi_dependencies) == {
        "rich": {"requirement": "rich>=13"}, "tomli": {"requirement": "tomli; python_version < '3.11'"}}
    assert set(test.pypi_dependencies) == {"rich", "tomli", "pytest", "matplotlib"}


def test_channel_pinned_specs_priority_and_exclude_newer_reach_the_solve(write) -> None:
    from harness.channels import ResolvedChannel
    from harness.lock import role_material
    from harness.solve import RoleRequest, channel_specs
    from harness.specs import parse_cutoff

    text = """
    [workspace]
    channels = ["conda-forge"]
    platforms = ["linux-64"]
    channel-priority = "disabled"
    exclude-newer = "2025-01-01"
    [dependencies]
    pytorch = { version = ">=2", channel = "pytorch" }
    """
    (cell,) = cells(write, text)
    assert cell.channels == ("conda-forge", "pytorch")
    assert cell.specs("run") == ["pytorch::pytorch >=2"]
    channels = [ResolvedChannel("conda-forge", "https://x/conda-forge"), ResolvedChannel("pytorch", "https://x/pytorch")]
    assert channel_specs(cell.specs("run"), channels) == ["https://x/pytorch::pytorch >=2"]
    material = role_material(cell, RoleRequest("test", tuple(cell.specs("run"))), [])
    assert (material["channel_priority"], material["exclude_newer"]) == ("disabled", "2025-01-01")
    assert str(parse_cutoff("2025-01-01")) == "2025-01-02 00:00:00+00:00"
    assert parse_cutoff("1h30m").total_seconds() == 5400


def test_what_the_solve_cannot_honour_is_an_error(write) -> None:
    from harness.errors import SolveError
    from harness.solve import RoleRequest, solve_role

    with pytest.raises(ManifestError, match="not a time, a date or a duration"):
        cells(write, '[workspace]\nchannels = ["c"]\nplatforms = ["linux-64"]\nexclude-newer = "soon"\n')
    with pytest.raises(ManifestError, match="unknown channel priority"):
        cells(write, '[workspace]\nchannels = ["c"]\nplatforms = ["linux-64"]\nchannel-priority = "loose"\n')
    (cell,) = cells(write, '[workspace]\nchannels = ["c"]\nplatforms = ["linux-64"]\n[exclude-newer]\ntombi = "0d"\n')
    with pytest.raises(SolveError, match="per-package cutoffs"):
        solve_role(cell, RoleRequest("test", ("tombi",)), [])


def test_compiler_variants_enter_the_cell_its_key_and_its_build_dependencies(write) -> None:
    text = HEAD + """
    [workspace.build-variants]
    python = ["3.12.*"]
    c_compiler_version = ["13", "14"]
    unused = ["1"]
    [dependencies]
    pkg = { path = "." }
    """ + PACKAGE.replace('cuda-version = "*"\n', "") + '[package.build.config]\ncompilers = ["c"]\n'
    compiled = compile_manifest(load_manifest(write("pixi.toml", text)))
    got = compiled.cells
    assert [c.id for c in got] == ["c_compiler_version-13", "c_compiler_version-14"]
    assert got[0].pure_key != got[1].pure_key
    assert [d.matchspec() for d in got[1].package.build_deps] == ["gcc_linux-64 14.*"]
    assert all(not p.startswith("c_compiler") for p in got[1].variant_pins())
    assert any("'unused' is not used by package 'pkg'" in w for w in compiled.warnings)
    nameless = HEAD.replace('name = "pkg"\n', "") + PACKAGE.replace('name = "pkg"\n', "")
    warned = compile_manifest(load_manifest(write("b/pixi.toml", nameless.replace(
        "[package]", '[workspace.build-variants]\nother = ["1"]\n[package]')))).warnings
    assert warned and not any("'None'" in w for w in warned)


@pytest.mark.parametrize(("backend", "key"), [
    ("pixi-build-python", "abi3"), ("pixi-build-python", "pypi-conda-map"),
    ("pixi-build-python", "skip-pyc-compilation"), ("pixi-build-python", "installer"),
    ("pixi-build-rattler-build", "recipe"), ("pixi-build-rust", "system-env"), ("pixi-build-rust", "binaries"),
])
def test_current_backend_configuration_keys_are_accepted(write, backend: str, key: str) -> None:
    text = HEAD + '[dependencies]\npkg = { path = "." }\n' + PACKAGE.replace(
        "pixi-build-python", backend) + f'[package.build.config]\n{key} = "x"\n'
    assert cells(write, text)
    with pytest.raises(HarnessError, match="unknown field `nonsense`"):
        cells(write, text.replace(f'{key} = "x"', 'nonsense = "x"'), "b/pixi.toml")


def test_dev_tables_workspace_inheritance_and_package_only_members(write) -> None:
    write("pixi.toml", HEAD + """
    [workspace.dependencies]
    numpy = ">=2"
    shared = { path = "libs/shared" }
    [dependencies]
    numpy = { workspace = true }
    [dev]
    member = { path = "member" }
    """)
    member = write("member/pixi.toml", """
    [package]
    name = "member"
    version = "0.2"
    [package.build]
    backend = { name = "pixi-build-python", version = "*" }
    [package.host-dependencies]
    python = "*"
    numpy = { workspace = true }
    shared = { workspace = true }
    """)
    (workspace,) = cells(write, (Path(member).parent.parent / "pixi.toml").read_text())
    assert [d.matchspec() for d in workspace.dependencies] == ["numpy >=2"]
    m = load_manifest(member)
    assert m.channels[0].channel == "conda-forge"
    host = {d.name: d for d in m.package.host_deps.common}
    assert host["numpy"].version == ">=2" and host["shared"].source == "path:../libs/shared"
    with pytest.raises(ManifestError, match="does not define a dependency 'scipy'"):
        load_manifest(write("x/pixi.toml", HEAD + '[dependencies]\nscipy = { workspace = true }\n'))


def test_dev_gives_the_environment_the_packages_dependencies_not_the_package(write) -> None:
    text = HEAD + '[dev]\npkg = { path = "." }\n' + PACKAGE.replace('cuda-version = "*"\n', 'numpy = "*"\n')
    (cell,) = cells(write, text)
    assert cell.package is None
    assert {d.name for d in cell.dependencies} == {"python", "numpy"}


def test_no_allowed_value_names_environment_key_and_values(write) -> None:
    text = HEAD + """
    [workspace.build-variants]
    python = ["3.12.*", "3.13.*"]
    [dependencies]
    pkg = { path = "." }
    python = "3.10.*"
    """ + PACKAGE.replace('cuda-version = "*"\n', "")
    m = load_manifest(write("pixi.toml", text))
    with pytest.raises(CellError) as info:
        compile_cells(m, m.environments["default"])
    assert "environment 'default' allows no value of build variant python" in str(info.value)
    assert "3.12.*; 3.13.*" in str(info.value)
