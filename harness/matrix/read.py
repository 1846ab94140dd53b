"""Matrix file text -> :class:`~harness.matrix.model.Matrix`, validated.

Syntax (documented in the README)::

    manifest = "../pixi.toml"          # relative to this file
    name = "py{python}-cu{cuda}"       # {axis} = the value's label (dots dropped)
    profiles = ["dev", "release"]      # optional; crossed with the axes
    test = "python -m pytest -q"       # optional
    gpu = "required"                   # required | optional | none
    [axes.python]
    values = ["3.10", "3.11", "3.12", "3.13", "3.14"]
    dependencies = { python = "{value}.*" }
    [axes.cuda]
    values = ["12", "13"]
    dependencies = { cuda-version = "{value}.*" }
    system-requirements = { cuda = "{value}" }
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from harness import inputs
from harness.build.expand import ENV_HINT, env_name_problem
from harness.errors import MatrixError
from harness.frozen import FrozenDict, freeze
from harness.matrix.model import GPU_POLICIES, MAPPING_KEYS, Axis, AxisValue, Matrix
from harness.tomlfile import TomlDocument, read_toml, resolve_path

TOP_KEYS = (
    "manifest", "environment", "name", "axes", "zip", "exclude", "include", "profiles",
    "test", "gpu", "platform", "runners", "description",
)
_AXIS_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
MAX_CELLS = 100_000


def load_matrix(path: str | Path) -> Matrix:
    doc = read_toml(resolve_path(Path(path)), cls=MatrixError)
    return MatrixReader(doc).read()


def default_label(value: str) -> str:
    """``3.12`` -> ``312``: what a value looks like inside a cell id."""
    return re.sub(r"[^A-Za-z0-9_+\-]", "", value.replace(".", ""))


class MatrixReader:
    def __init__(self, doc: TomlDocument) -> None:
        self.doc = doc
        self.axis_templates: dict[str, FrozenDict[str, Any]] = {}

    def err(self, message: str, *key: str | int, hint: str | None = None) -> MatrixError:
        return self.doc.error(message, key, hint=hint, cls=MatrixError)  # type: ignore[return-value]

    def string(self, data: dict[str, Any], key: str, *where: str | int, default: Any = None) -> Any:
        value = data.get(key, default)
        if value is not None and not isinstance(value, str):
            raise self.err(f"expected a string, found {type(value).__name__}", *where, key)
        return value

    def string_list(self, value: Any, *key: str | int) -> tuple[str, ...]:
        if isinstance(value, str):
            return (value,)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.err("expected a list of strings", *key)
        return tuple(value)

    def read(self) -> Matrix:
        data = self.doc.data
        for key in data:
            if key not in TOP_KEYS:
                from harness.manifest.read import did_you_mean

                raise self.err(f"unknown key '{key}'", key,
                               hint=did_you_mean(key, TOP_KEYS) or "a matrix file takes " + ", ".join(TOP_KEYS))
        manifest_rel = self.string(data, "manifest")
        if manifest_rel is None:
            raise self.err("missing `manifest`", hint='add manifest = "../pixi.toml" (relative to this file)')
        manifest = resolve_path(self.doc.path.parent / manifest_rel)
        inputs.note(manifest)
        if manifest.is_dir():
            for name in ("pixi.toml", "pyproject.toml"):
                inputs.note(manifest / name)
                if (manifest / name).is_file():
                    manifest = manifest / name
                    break
        if not manifest.is_file():
            raise self.err(f"manifest '{manifest_rel}' does not exist", "manifest",
                           hint=f"looked for {manifest}")
        axes = self.read_axes(data.get("axes", {}))
        names = [a.name for a in axes]
        zipped = self.read_zip(data.get("zip", []), axes)
        exclude = self.read_combos(data.get("exclude", []), "exclude", names, allow_new=False)
        include = self.read_combos(data.get("include", []), "include", names, allow_new=True)
        profiles = self.string_list(data.get("profiles", ["dev"]), "profiles")
        if not profiles:
            raise self.err("`profiles` cannot be empty", "profiles", hint='use ["dev"]')
        if len(set(profiles)) != len(profiles):
            raise self.err("a profile is listed twice", "profiles")
        gpu = self.string(data, "gpu")
        if gpu is not None and gpu not in GPU_POLICIES:
            raise self.err(f"unknown GPU policy '{gpu}'", "gpu", hint="use " + ", ".join(GPU_POLICIES))
        default_name = "-".join(f"{a}{{{a}}}" for a in names) or "{environment}"
        name = self.string(data, "name", default=default_name)
        self.check_template(name, names)
        runners = data.get("runners", {})
        if not isinstance(runners, dict):
            raise self.err("expected a table such as { default = [...], gpu = [...] }", "runners")
        runner_map = {k: self.string_list(v, "runners", k) for k, v in runners.items()}
        return Matrix(
            path=self.doc.path,
            text=self.doc.text,
            manifest=manifest,
            environment=self.string(data, "environment", default="default"),
            name=name,
            axes=axes,
            zip=zipped,
            exclude=exclude,
            include=include,
            profiles=profiles,
            test=self.string(data, "test"),
            gpu=gpu,
            platform=self.string(data, "platform"),
            runners=FrozenDict(runner_map),
            description=self.string(data, "description"),
            axis_templates=FrozenDict(self.axis_templates),
        )

    def check_template(self, name: str, axes: list[str]) -> None:
        for field in re.findall(r"\{([^{}]*)\}", name):
            if field not in axes and field not in ("profile", "environment"):
                raise self.err(f"the name template uses '{{{field}}}', which is not an axis", "name",
                               hint="known fields: " + ", ".join([*axes, "profile", "environment"]))

    def read_axes(self, value: Any) -> tuple[Axis, ...]:
        if not isinstance(value, dict):
            raise self.err("expected a table of axes", "axes")
        axes = []
        for name, spec in value.items():
            if not _AXIS_NAME.match(name) or name in ("profile", "environment"):
                raise self.err(f"'{name}' is not a valid axis name", "axes", name,
                               hint="use letters, digits, '_' and '-' (not 'profile' or 'environment')")
            if isinstance(spec, list):
                spec = {"values": spec}
            if not isinstance(spec, dict):
                raise self.err("an axis is a list of values or a table with `values`", "axes", name)
            unknown = [k for k in spec if k not in ("values", "label", *MAPPING_KEYS)]
            if unknown:
                raise self.err(f"unknown key '{unknown[0]}'", "axes", name, unknown[0],
                               hint="an axis takes values, label and " + ", ".join(MAPPING_KEYS))
            raw_values = spec.get("values")
            if not isinstance(raw_values, list) or not raw_values:
                raise self.err("an axis needs a non-empty list of `values`", "axes", name)
            template = {k: v for k, v in spec.items() if k in MAPPING_KEYS}
            self.check_mapping(template, ("axes", name))
            label_tpl = self.string(spec, "label", "axes", name, default="{label}")
            values: list[AxisValue] = []
            seen: set[str] = set()
            for i, raw in enumerate(raw_values):
                values.append(self.axis_value(name, raw, template, label_tpl, i))
                if values[-1].value in seen:
                    raise self.err(f"value '{values[-1].value}' appears twice", "axes", name, "values")
                seen.add(values[-1].value)
            axes.append(Axis(name, tuple(values)))
            # An ``include`` may bring a value the axis does not list: it is mapped
            # like the first value, from the mapping as written (``{value}`` unfilled).
            first = raw_values[0]
            first_own = {k: v for k, v in first.items() if k in MAPPING_KEYS} if isinstance(first, dict) else {}
            self.axis_templates[name] = freeze({**template, **first_own})
        return tuple(axes)

    def axis_value(self, axis: str, raw: Any, template: dict[str, Any], label_tpl: str, i: int) -> AxisValue:
        own: dict[str, Any] = {}
        if isinstance(raw, dict):
            unknown = [k for k in raw if k not in ("value", "label", *MAPPING_KEYS)]
            if unknown:
                raise self.err(f"unknown key '{unknown[0]}' in value {i}", "axes", axis, "values")
            if "value" not in raw:
                raise self.err(f"value {i} needs `value`", "axes", axis, "values")
            own = {k: v for k, v in raw.items() if k in MAPPING_KEYS}
            self.check_mapping(own, ("axes", axis, "values"))
            label = raw.get("label")
            raw = raw["value"]
        else:
            label = None
        if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
            raise self.err(f"value {i} must be a string or a number", "axes", axis, "values")
        value = str(raw)
        if label is None:
            label = label_tpl.replace("{label}", default_label(value)).replace("{value}", value)
        if not isinstance(label, str):
            raise self.err(f"the label of value {i} must be a string", "axes", axis, "values")
        mapping = substitute({**template, **own}, value)
        return AxisValue(value, label, freeze(mapping))

    def check_mapping(self, mapping: dict[str, Any], key: tuple[str | int, ...]) -> None:
        for k, v in mapping.items():
            if k in ("dependencies", "host-dependencies", "build-dependencies", "system-requirements", "variant", "env"):
                if not isinstance(v, dict) or not all(isinstance(x, (str, int, float)) for x in v.values()):
                    raise self.err("expected a table of strings", *key, k)
                if k == "env":
                    for name in v:
                        if problem := env_name_problem(name):
                            raise self.err(problem, *key, k, name, hint=ENV_HINT)
            elif k in ("features", "tags"):
                self.string_list(v, *key, k)
            elif k == "gpu":
                if v not in GPU_POLICIES:
                    raise self.err(f"unknown GPU policy '{v}'", *key, k, hint="use " + ", ".join(GPU_POLICIES))
            elif k == "platform" and not isinstance(v, str):
                raise self.err("expected a string", *key, k)

    def read_zip(self, value: Any, axes: tuple[Axis, ...]) -> tuple[tuple[str, ...], ...]:
        if not isinstance(value, list):
            raise self.err("expected a list of axis lists", "zip")
        names = {a.name: a for a in axes}
        out = []
        used: set[str] = set()
        for i, group in enumerate(value):
            group = self.string_list(group, "zip", i)
            for g in group:
                if g not in names:
                    raise self.err(f"zip names unknown axis '{g}'", "zip", hint="axes: " + ", ".join(names))
                if g in used:
                    raise self.err(f"axis '{g}' is zipped twice", "zip")
                used.add(g)
            lengths = {len(names[g].values) for g in group}
            if len(lengths) > 1:
                raise self.err(f"zipped axes {', '.join(group)} need the same number of values", "zip",
                               hint=", ".join(f"{g}: {len(names[g].values)}" for g in group))
            out.append(group)
        return tuple(out)

    def read_combos(self, value: Any, key: str, axes: list[str], *, allow_new: bool) -> tuple[FrozenDict[str, str], ...]:
        if not isinstance(value, list):
            raise self.err("expected a list of tables such as { python = \"3.10\", cuda = \"13\" }", key)
        out = []
        for i, combo in enumerate(value):
            if not isinstance(combo, dict) or not combo:
                raise self.err(f"entry {i} must be a non-empty table of axis = value", key)
            clean: dict[str, str] = {}
            for k, v in combo.items():
                if k not in axes and k != "profile":
                    raise self.err(f"entry {i} names unknown axis '{k}'", key, hint="axes: " + ", ".join(axes))
                if isinstance(v, bool) or not isinstance(v, (str, int, float)):
                    raise self.err(f"entry {i}: the value of '{k}' must be a string", key)
                clean[k] = str(v)
            if allow_new:
                missing = [a for a in axes if a not in clean]
                if missing:
                    raise self.err(f"entry {i} must give every axis; missing {', '.join(missing)}", key)
            out.append(FrozenDict(clean))
        return tuple(out)


def substitute(value: Any, text: str) -> Any:
    """Replace ``{value}`` in every string of a mapping template."""
    if isinstance(value, str):
        return value.replace("{value}", text)
    if isinstance(value, dict):
        return {k: substitute(v, text) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, text) for v in value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value
