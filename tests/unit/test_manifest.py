"""pixi's merge rules, profiles and variant assignment on small manifests."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.compile import Overrides, compile_cell, compile_cells, compile_manifest
from harness.errors import CellError, HarnessError, ManifestError
from harness.manifest.merge import resolve_environment
from harness.manifest.read import load_manifest

BASE = """
[workspace]
channels = ["conda-forge"]
platforms = ["linux-64", "osx-arm64", "win-64"]
"""


def resolved(path: Path, env: str, platform: str = "linux-64"):
    m = load_manifest(path)
    return resolve_environment(m, m.environments[env], m.platform(platform))


def test_channels_sort_by_priority_listed_features_before_default(write) -> None:
    path = write("pixi.toml", BASE + """
    [feature.a]
    channels = ["nvidia", { channel = "pytorch", priority = -1 }, { channel = "rapids", priority = 5 }]
    [feature.b]
    channels = ["bioconda"]
    [environments]
    e = ["b", "a"]
    """)
    assert resolved(path, "e").channels == ("rapids", "bioconda", "nvidia", "conda-forge", "pytorch")


def test_platforms_intersect_and_targets_apply_most_specific_last(write) -> None:
    path = write("pixi.toml", BASE + """
    [dependencies]
    numpy = "*"
    [target.unix.dependencies]
    numpy = ">=1"
    [target.linux.dependencies]
    numpy = ">=1.5"
    [target.linux-64.dependencies]
    numpy = ">=2"
    [target.win.dependencies]
    pywin = "*"
    [feature.gpu]
    platforms = ["linux-64", "win-64"]
    [feature.mac]
    platforms = ["osx-arm64", "linux-64"]
    [environments]
    both = ["gpu", "mac"]
    """)
    env = resolved(path, "both")
    assert [p.name for p in env.platforms] == ["linux-64"]
    assert [d.matchspec() for d in env.dependencies] == ["numpy >=2"]
    mac = resolved(path, "default", "osx-arm64")
    assert [d.matchspec() for d in mac.dependencies] == ["numpy >=1"]
    win = resolved(path, "default", "win-64")
    assert sorted(d.name for d in win.dependencies) == ["numpy", "pywin"]


def test_dependencies_of_all_features_combine_and_first_activation_env_wins(write) -> None:
    path = write("pixi.toml", BASE + """
    [dependencies]
    python = ">=3.9"
    [activation.env]
    MODE = "default"
    ONLY_DEFAULT = "1"
    [feature.py312.dependencies]
    python = "3.12.*"
    [feature.py312.activation.env]
    MODE = "py312"
    [feature.other.activation.env]
    MODE = "other"
    [environments]
    e = ["py312", "other"]
    """)
    env = resolved(path, "e")
    assert [d.matchspec() for d in env.dependencies] == ["python 3.12.*", "python >=3.9"]
    assert dict(env.activation_env) == {"MODE": "py312", "ONLY_DEFAULT": "1"}
    assert env.provenance["activation.env.MODE"] == "feature py312"


def test_system_requirements_take_the_highest_version_both_spellings(write) -> None:
    path = write("pixi.toml", """
    [workspace]
    channels = []
    platforms = ["linux-64", { name = "linux-64-cuda", platform = "linux-64", cuda = "12.4" }]
    [feature.a.system-requirements]
    cuda = "12"
    libc = { family = "glibc", version = "2.31" }
    [feature.b.system-requirements]
    cuda = "13"
    [environments]
    ab = ["a", "b"]
    rich = { features = [] }
    """)
    m = load_manifest(path)
    ab = compile_cell(m, m.environments["ab"])
    assert "__cuda=13" in ab.virtual_packages and "__glibc=2.31" in ab.virtual_packages
    rich = compile_cell(m, m.environments["rich"], Overrides(platform="linux-64-cuda"))
    assert "__cuda=12.4" in rich.virtual_packages
    assert rich.platform == "linux-64" and rich.platform_name == "linux-64-cuda"
    plain = compile_cell(m, m.environments["rich"], Overrides(platform="linux-64"))
    assert not any(v.startswith("__cuda") for v in plain.virtual_packages)
    assert "__glibc=2.28" in plain.virtual_packages  # pixi's default


def test_pyproject_reads_tool_pixi_and_project_name(write) -> None:
    path = write("pyproject.toml", """
    [project]
    name = "pkg"
    version = "1.2.3"
    [tool.pixi.workspace]
    channels = ["conda-forge"]
    platforms = ["linux-64"]
    [tool.pixi.environments]
    e = ["x"]
    """)
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert "tool.pixi.environments.e" in str(info.value)
    assert "The feature 'x' is not defined" in str(info.value)
    path.write_text(path.read_text().replace('e = ["x"]', 'e = []'))
    m = load_manifest(path)
    assert (m.name, m.version) == ("pkg", "1.2.3")


PACKAGE = """
[workspace]
channels = ["conda-forge"]
platforms = ["linux-64", "win-64"]
preview = ["pixi-build"]
[workspace.build-variants]
python = ["3.12.*", "3.13.*"]
[dependencies]
pkg = { path = "." }
[feature.py312.dependencies]
python = "3.12.*"
[feature.py313.dependencies]
python = "3.13.*"
[package]
name = "pkg"
version = "0.1.0"
[package.build]
backend = { name = "pixi-build-cmake", version = "*" }
[package.build.config]
extra-args = ["-DA=1"]
env = { BASE = "1", KEEP = "base" }
[package.build.target.linux-64.config]
env = { BASE = "linux" }
[package.host-dependencies]
python = "*"
[profiles.ci]
inherits = "dev"
[profiles.ci.backends.pixi-build-cmake]
build-type = "RelWithDebInfo"
env = { FROM = "ci-backend" }
[profiles.ci.packages.pkg]
env = { FROM = "ci-package" }
[profiles.fast]
inherits = "ci"
[profiles.fast.backends.pixi-build-cmake]
build-type = "Debug"
[environments]
py312 = ["py312"]
py313 = { features = ["py313"], profile = "fast" }
"""


def test_profiles_merge_in_precedence_order(write) -> None:
    m = load_manifest(write("pixi.toml", PACKAGE))
    cell = compile_cell(m, m.environments["py313"])
    assert cell.profile == "fast" and cell.profile_base == "dev"
    config = cell.package.config
    assert config["build-type"] == "Debug"  # fast's backend table over ci's
    assert dict(config["env"]) == {"BASE": "linux", "KEEP": "base", "FROM": "ci-package"}
    assert cell.provenance["config.build-type"] == "profiles.fast.backends.pixi-build-cmake"
    assert dict(cell.variant) == {"python": "3.13.*"}
    dev = compile_cell(m, m.environments["py312"])
    assert dev.profile == "dev" and "build-type" not in dev.package.config
    assert dev.pure_key != compile_cell(m, m.environments["py312"], Overrides(id="py312", profile="ci")).pure_key


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ('inherits = "ci"\n[profiles.fast.backends', "cycle"),
        ('inherits = "nope"\n[profiles.fast.backends', "unknown profile 'nope'"),
    ],
)
def test_profile_errors(write, change: str, message: str) -> None:
    text = PACKAGE.replace('[profiles.ci]\ninherits = "dev"', '[profiles.ci]\ninherits = "fast"') if "cycle" in message else PACKAGE
    text = text.replace('inherits = "ci"\n[profiles.fast.backends', change)
    with pytest.raises(ManifestError) as info:
        load_manifest(write("pixi.toml", text))
    assert message in str(info.value)
    assert info.value.line is not None


def test_custom_profile_must_inherit(write) -> None:
    with pytest.raises(ManifestError, match="must inherit"):
        load_manifest(write("pixi.toml", PACKAGE.replace('[profiles.fast]\ninherits = "ci"', "[profiles.fast]")))


def test_an_open_variant_expands_into_one_cell_per_value_and_no_value_is_an_error(write) -> None:
    text = PACKAGE + '\nopen = { features = [], no-default-feature = false }\nbad = ["py314"]\n[feature.py314.dependencies]\npython = "3.14.*"\n'
    m = load_manifest(write("pixi.toml", text))
    cells = compile_cells(m, m.environments["open"])
    assert [c.id for c in cells] == ["open-py312", "open-py313"]
    assert [dict(c.variant) for c in cells] == [{"python": "3.12.*"}, {"python": "3.13.*"}]
    assert cells[0].pure_key != cells[1].pure_key
    assert "one cell per allowed value" in cells[0].provenance["variant.python"]
    with pytest.raises(CellError, match="expands into 2 cells"):
        compile_cell(m, m.environments["open"])
    with pytest.raises(CellError) as info:
        compile_cells(m, m.environments["bad"])
    assert "environment 'bad'" in str(info.value) and "allows no value" in str(info.value)
    assert "3.14.*" in str(info.value) and "3.12.*, " not in str(info.value)
    with pytest.raises(CellError):
        compile_manifest(m)  # declared environments must compile


def test_the_implicit_default_is_a_cell_only_alone_and_a_declared_default_drops_its_prefix(write) -> None:
    head = PACKAGE.split("[feature.py312")[0] + PACKAGE[PACKAGE.index("[package]"):].split("[profiles")[0]
    lint = '[feature.lint.dependencies]\nruff = "*"\n'
    alone = compile_manifest(load_manifest(write("a/pixi.toml", head)))
    assert [c.id for c in alone.cells] == ["py312", "py313"]
    assert not [w for w in alone.warnings if "default" in w]
    beside = compile_manifest(load_manifest(write("b/pixi.toml", head + lint + '[environments]\nlint = { features = ["lint"], no-default-feature = true }\n')))
    assert [c.id for c in beside.cells] == ["lint"] and not [w for w in beside.warnings if "default" in w]
    assert beside.cells[0].package is None  # no path dependency on the package: no build stage
    declared = compile_manifest(load_manifest(write("c/pixi.toml", head + lint + '[environments]\ndefault = []\nlint = { features = ["lint"], no-default-feature = true }\n')))
    assert [c.id for c in declared.cells] == ["py312", "py313", "lint"]
    assert all(c.environment == "default" and c.package is not None for c in declared.cells[:2])


def test_an_expanded_id_that_clashes_with_an_environment_names_both(write) -> None:
    text = PACKAGE + "default = []\n"
    with pytest.raises(CellError) as info:
        compile_manifest(load_manifest(write("pixi.toml", text)))
    message = str(info.value)
    assert "'py312'" in message and "environment 'default'" in message and "environment 'py312'" in message


def test_unknown_backend_config_key_is_rejected_when_cells_compile(write) -> None:
    m = load_manifest(write("pixi.toml", PACKAGE.replace('extra-args = ["-DA=1"]', 'typo-key = 1')))
    with pytest.raises(ManifestError) as info:
        compile_cell(m, m.environments["py312"])
    assert "typo-key" in str(info.value) and "extra-args" in str(info.value)


def test_variant_key_no_package_uses_warns(write) -> None:
    text = PACKAGE.replace('python = ["3.12.*", "3.13.*"]', 'python = ["3.12.*", "3.13.*"]\ncuda-version = ["12.*"]')
    compiled = compile_manifest(load_manifest(write("pixi.toml", text)))
    assert any("'cuda-version' is not used by package 'pkg'" in w for w in compiled.warnings)


def test_yaml_variant_files_with_zip_keys(write) -> None:
    write("variants.yaml", """
    cuda_compiler_version: ["12.8", "13.0"]
    cudnn: ["9.1", "9.5"]
    zip_keys: [[cuda_compiler_version, cudnn]]
    """)
    text = PACKAGE.replace("[workspace.build-variants]", 'build-variants-files = ["variants.yaml"]\n[workspace.build-variants]')
    text = text.replace('[package.host-dependencies]\npython = "*"', '[package.host-dependencies]\npython = "*"\ncuda_compiler_version = "*"\ncudnn = "*"')
    text = text.replace('[feature.py313.dependencies]\npython = "3.13.*"', '[feature.py313.dependencies]\npython = "3.13.*"\ncudnn = "9.5.*"')
    m = load_manifest(write("pixi.toml", text))
    cell = compile_cell(m, m.environments["py313"])
    assert dict(cell.variant) == {"cuda_compiler_version": "13.0", "cudnn": "9.5", "python": "3.13.*"}
    # py312 leaves the zipped pair open: one cell per row, the two keys varying together
    cells = compile_cells(m, m.environments["py312"])
    assert [(c.variant["cuda_compiler_version"], c.variant["cudnn"]) for c in cells] == [("12.8", "9.1"), ("13.0", "9.5")]
    assert [c.id for c in cells] == ["py312-cuda_compiler_version-12.8-cudnn-9.1", "py312-cuda_compiler_version-13.0-cudnn-9.5"]


@pytest.mark.parametrize("name", ["../x", "x/y", "..", "", "a b", "ünï"])
def test_hostile_environment_names_never_become_directories(write, name: str) -> None:
    text = BASE + f'[environments]\n"{name}" = []\n'
    with pytest.raises(HarnessError) as info:
        compile_manifest(load_manifest(write("pixi.toml", text)))
    assert "id" in str(info.value)


def test_bad_toml_points_at_its_line(write) -> None:
    with pytest.raises(ManifestError) as info:
        load_manifest(write("pixi.toml", BASE + "[dependencies\nx = 1\n"))
    assert info.value.line == 4 and "invalid TOML" in str(info.value)
