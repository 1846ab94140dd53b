"""Matrix files: syntax, expansion counts, ids and pure keys (with hypothesis)."""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.cell import canonical_json
from harness.compile import Overrides, compile_cell
from harness.errors import HarnessError, MatrixError
from harness.loader import compile_path
from harness.manifest.profiles import merged_config
from harness.manifest.read import load_manifest
from harness.matrix.expand import combinations, compile_matrix
from harness.matrix.read import load_matrix

REPO = Path(__file__).resolve().parents[2]

MANIFEST = """
[workspace]
channels = ["conda-forge"]
platforms = ["linux-64"]
preview = ["pixi-build"]
[workspace.build-variants]
python = ["3.10.*", "3.11.*", "3.12.*", "3.13.*", "3.14.*"]
cuda-version = ["12.*", "13.*"]
[dependencies]
pkg = { path = "." }
[package]
name = "pkg"
version = "1.0"
[package.build]
backend = { name = "pixi-build-python", version = "*" }
[package.host-dependencies]
python = "*"
cuda-version = "*"
"""


def test_cupy_matrix_has_ten_cells_with_their_variants_and_cuda() -> None:
    compiled = compile_path(REPO / "matrices" / "cupy.toml")
    cells = {c.id: c for c in compiled.cells}
    expected = {f"cupy-py3{m}-cu{c}" for m, c in itertools.product(range(10, 15), (12, 13))}
    assert set(cells) == expected
    for cid, cell in cells.items():
        minor, cuda = cid[8:10], cid.split("-cu")[-1]
        assert dict(cell.variant) == {"python": f"3.{minor}.*", "cuda-version": f"{cuda}.*"}
        assert [v for v in cell.virtual_packages if v.startswith("__cuda")] == [f"__cuda={cuda}"]
        assert cell.gpu == "required" and "gpu" in cell.tags and f"py3{minor}" in cell.tags
    assert len({c.pure_key for c in cells.values()}) == 10


def test_cupy_matrix_fits_in_fifteen_lines() -> None:
    lines = [ln for ln in (REPO / "matrices" / "cupy.toml").read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert len(lines) <= 15


def _matrix(write, body: str, manifest: str = MANIFEST) -> Path:
    write("pixi.toml", manifest)
    return write("m.toml", 'manifest = "pixi.toml"\n' + body)


def test_zip_exclude_include_and_profiles(write) -> None:
    path = _matrix(write, """
    name = "py{python}-cu{cuda}"
    profiles = ["dev", "release"]
    zip = [["python", "numpy"]]
    exclude = [{ python = "3.10", cuda = "13" }, { profile = "release", cuda = "12" }]
    include = [{ python = "3.14", numpy = "2.3", cuda = "13" }]
    [axes.python]
    values = ["3.10", "3.12"]
    dependencies = { python = "{value}.*" }
    [axes.numpy]
    values = ["1.26", "2.2"]
    label = ""
    dependencies = { numpy = "{value}.*" }
    [axes.cuda]
    values = ["12", "13"]
    dependencies = { cuda-version = "{value}.*" }
    system-requirements = { cuda = "{value}" }
    """)
    ids = [c.id for c in compile_matrix(load_matrix(path)).cells]
    assert ids == ["py310-cu12", "py312-cu12", "py312-cu13", "py312-cu13-release", "py314-cu13", "py314-cu13-release"]
    cells = {c.id: c for c in compile_matrix(load_matrix(path)).cells}
    assert [d.matchspec() for d in cells["py312-cu13"].dependencies if d.name == "numpy"] == ["numpy 2.2.*"]
    assert cells["py312-cu13-release"].profile_base == "release"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('name = "x"\n[axes.a]\nvalues = ["1", "2"]\n', "two cells get the id 'x'"),
        ('name = "{nope}"\n[axes.a]\nvalues = ["1"]\n', "'{nope}', which is not an axis"),
        ('zip = [["a", "b"]]\n[axes.a]\nvalues = ["1"]\n[axes.b]\nvalues = ["1", "2"]\n', "same number of values"),
        ('[axes.a]\nvalues = []\n', "non-empty list"),
        ('gpu = "sometimes"\n', "unknown GPU policy"),
        ('axis = 1\n', "unknown key 'axis'"),
        ('name = "../{a}"\n[axes.a]\nvalues = ["1"]\n', "could escape"),
        ('exclude = [{ b = "1" }]\n[axes.a]\nvalues = ["1"]\n', "unknown axis 'b'"),
    ],
)
def test_bad_matrix_files_name_the_key(write, body: str, message: str) -> None:
    path = _matrix(write, body, MANIFEST.split("[workspace.build-variants]")[0])
    with pytest.raises(HarnessError) as info:
        compile_matrix(load_matrix(path))
    assert message in str(info.value)
    assert info.value.file is not None


def test_matrix_without_manifest_is_an_error(write) -> None:
    path = write("m.toml", 'manifest = "missing/pixi.toml"\n')
    with pytest.raises(MatrixError, match="does not exist"):
        load_matrix(path)


# -- properties -------------------------------------------------------------------

axis_values = st.lists(st.sampled_from(["1", "2", "3", "4", "5"]), min_size=1, max_size=4, unique=True)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sizes=st.lists(axis_values, min_size=1, max_size=3),
    data=st.data(),
)
def test_cell_count_is_product_minus_excluded_plus_included(tmp_path_factory, sizes, data) -> None:
    root = tmp_path_factory.mktemp("m")
    (root / "pixi.toml").write_text(MANIFEST.split("[workspace.build-variants]")[0])
    names = [f"a{i}" for i in range(len(sizes))]
    product = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*sizes)]
    excluded = data.draw(st.lists(st.sampled_from(product), unique_by=lambda d: tuple(d.values()), max_size=3))
    new = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*[["9", "8"]] * len(names))]
    included = data.draw(st.lists(st.sampled_from(new), unique_by=lambda d: tuple(d.values()), max_size=2))
    profiles = data.draw(st.sampled_from([["dev"], ["dev", "release"]]))
    lines = ['manifest = "pixi.toml"', f"profiles = {json.dumps(profiles)}"]
    lines.append("exclude = [" + ", ".join("{" + ", ".join(f'{k} = "{v}"' for k, v in e.items()) + "}" for e in excluded) + "]")
    lines.append("include = [" + ", ".join("{" + ", ".join(f'{k} = "{v}"' for k, v in e.items()) + "}" for e in included) + "]")
    for n, vals in zip(names, sizes, strict=True):
        lines.append(f"[axes.{n}]\nvalues = {json.dumps(vals)}")
    (root / "m.toml").write_text("\n".join(lines) + "\n")
    matrix = load_matrix(root / "m.toml")
    assert len(combinations(matrix)) == len(product) - len(excluded) + len(included)
    cells = compile_matrix(matrix).cells
    assert len(cells) == (len(product) - len(excluded) + len(included)) * len(profiles)
    assert len({c.id for c in cells}) == len(cells)


key_inputs = st.fixed_dictionaries({
    "python": st.sampled_from(["3.10", "3.12", "3.13"]),
    "cuda": st.sampled_from(["12", "13"]),
    "profile": st.sampled_from(["dev", "release"]),
    "flag": st.sampled_from(["a", "b"]),
})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(a=key_inputs, b=key_inputs)
def test_pure_keys_are_equal_iff_their_inputs_are(tmp_path_factory, a, b) -> None:
    root = tmp_path_factory.mktemp("k")
    (root / "pixi.toml").write_text(MANIFEST.replace('python = ["3.10.*"', 'python = ["3.10.*"') + "\n[package.build.config]\nenv = { FLAG = \"x\" }\n")
    m = load_manifest(root / "pixi.toml")
    env = m.environments["default"]

    def cell(inp):
        made = compile_cell(m, env, Overrides(
            id="c",
            variant={"python": f"{inp['python']}.*", "cuda-version": f"{inp['cuda']}.*"},
            system_requirements={"cuda": inp["cuda"]},
            profile=inp["profile"],
            build_package=True,
        ))
        if inp["flag"] == "b":  # a different merged backend configuration
            package = dataclasses.replace(made.package, config={"env": {"FLAG": "y"}})
            made = dataclasses.replace(made, package=package)
        return made

    ca, cb = cell(a), cell(b)
    same_material = canonical_json(ca.pure_key_material()) == canonical_json(cb.pure_key_material())
    assert (ca.pure_key == cb.pure_key) == same_material
    assert (ca.pure_key == cb.pure_key) == (a == b)


layer = st.dictionaries(st.sampled_from(["build-type", "x", "env"]), st.sampled_from(["1", "2", "3"]), max_size=3)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(base=layer, target=layer, backend=layer, package=layer)
def test_profile_precedence_holds_for_random_override_stacks(tmp_path_factory, base, target, backend, package) -> None:
    def table(d):
        return "{" + ", ".join(f'"{k}" = "{v}"' for k, v in d.items()) + "}"

    text = MANIFEST.replace('backend = { name = "pixi-build-python", version = "*" }',
                            'backend = { name = "custom", version = "*" }')
    text += "\n[package.build.config]\nbase = 1\n" + "".join(f'"{k}" = "{v}"\n' for k, v in base.items())
    text += "[package.build.target.linux-64.config]\n" + "".join(f'"{k}" = "{v}"\n' for k, v in target.items())
    text += f"[profiles.p]\ninherits = \"dev\"\nbackends = {{ custom = {table(backend)} }}\npackages = {{ pkg = {table(package)} }}\n"
    root = tmp_path_factory.mktemp("p")
    (root / "pixi.toml").write_text(text)
    m = load_manifest(root / "pixi.toml")
    config, _ = merged_config(m.package, m.platforms[0], m.profiles, "p")
    for key in {*base, *target, *backend, *package}:
        expected = next(d[key] for d in (package, backend, target, base) if key in d)
        assert config[key] == expected
    assert config["base"] == 1
