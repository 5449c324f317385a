"""The Train form's description, read from the schema: one `FieldSpec` per setting (no field list here).

Every setting in `studio/config/sections/*.py` becomes a spec with its dotted path, the kind of
widget that fits its type, its help text, bounds and UI hints. `to_ui` / `from_ui` convert between a
config value and the value a Gradio component holds, so that
`config_from_values(values_from_config(cfg))` gives back `cfg` (tested for every preset).
This module does not import gradio: the conversions are plain Python and pandas.
"""
from __future__ import annotations

import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from studio.config.errors import ConfigError
from studio.registry.families import family_defaults
from studio.config.schema import SECTIONS, JobConfig

# Kinds of widgets: choice (dropdown), multichoice, bool (checkbox), tristate (auto/on/off for
# `bool | None`), int / float (number or slider), text, tags (free list of words), numlist (list of
# numbers as text), table (list of sub-settings, e.g. sample prompts), json (anything else).
TRISTATE = {None: "auto", True: "on", False: "off"}
TRISTATE_BACK = {v: k for k, v in TRISTATE.items()}
# `Literal["auto"] | bool` (e.g. memory.gradient_checkpointing): a dropdown auto / on / off.
AUTOBOOL = {"auto": "auto", True: "on", False: "off"}
AUTOBOOL_BACK = {v: k for k, v in AUTOBOOL.items()}
# A slider only for short ranges one drags across (dropouts, ratios, a resolution in steps of 64): a
# slider clamps a typed value to its range without a word, so a number that is typed (rank, batch
# size, step counts) gets a number box whose out-of-range value reaches the schema and its message.
_SLIDER_MAX_POSITIONS = {"int": 100, "float": 300}


@dataclass(frozen=True)
class FieldSpec:
    path: str  # "training.batch_size"
    kind: str
    default: Any
    help: str
    label: str
    group: str = "essentials"
    choices: tuple = ()
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    optional: bool = False  # None is a valid value ("automatic")
    families: tuple[str, ...] | None = None
    adapters: tuple[str, ...] | None = None
    variants: tuple[str, ...] | None = None
    widget: str | None = None
    item_type: type | None = None  # element type of numlist
    columns: tuple["FieldSpec", ...] = field(default=())  # sub-fields of a table
    when: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (other setting, its values that show this one)

    @property
    def section(self) -> str:
        return self.path.split(".", 1)[0]

    @property
    def slider(self) -> bool:
        """A slider when both bounds are known and the range has a sensible number of positions."""
        if self.widget == "slider":
            return True
        if self.widget is not None or self.optional or self.kind not in ("int", "float"):
            return False
        if self.minimum is None or self.maximum is None:
            return False
        step = self.step or (1 if self.kind == "int" else None)
        if step is None:
            return False  # floats without a UI step (learning rates...) read better as numbers
        return (self.maximum - self.minimum) / step <= _SLIDER_MAX_POSITIONS[self.kind]

    def applies(self, family: str, adapter_type: str, variant: str, others: dict[str, str] | None = None) -> bool:
        """False when the setting does nothing for this family / adapter / variant, or while a setting it
        depends on (`when`; its value in `others`, when known) has another value: hidden in the form."""
        others = others or {}
        return ((self.families is None or family in self.families)
                and (self.adapters is None or adapter_type in self.adapters)
                and (self.variants is None or variant in self.variants)
                and all(path not in others or others[path] in values for path, values in self.when))

    def range_hint(self) -> str:
        if self.minimum is None and self.maximum is None:
            return ""
        return f"range {_number(self.minimum)} … {_number(self.maximum)}"


def _number(value: float | None) -> str:
    if value is None:
        return ""
    if float(value).is_integer() and abs(value) >= 10_000:
        return f"{int(value):,}"
    return f"{value:g}"


# -- reading the schema ----------------------------------------------------------------------
def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(args) < len(typing.get_args(annotation)):
            return args[0], True
    return annotation, False


def _bounds(info) -> tuple[float | None, float | None]:
    lo = hi = None
    for meta in info.metadata:
        if getattr(meta, "ge", None) is not None:
            lo = meta.ge
        if getattr(meta, "gt", None) is not None:
            lo = meta.gt  # strict bound: the schema rejects the edge value with a clear message
        if getattr(meta, "le", None) is not None:
            hi = meta.le
        if getattr(meta, "lt", None) is not None:
            hi = meta.lt
    return lo, hi


def _default(info) -> Any:
    if info.default_factory is not None:
        return info.default_factory()
    return None if info.default is PydanticUndefined else info.default


def _kind(annotation: Any, optional: bool) -> tuple[str, dict]:
    """The widget kind for a (non-optional part of a) type, plus extra spec fields."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType) and set(typing.get_args(annotation)) == {Literal["auto"], bool}:
        return "autobool", {"choices": tuple(AUTOBOOL.values())}
    if origin is Literal:
        return "choice", {"choices": typing.get_args(annotation)}
    if annotation is bool:
        return ("tristate", {"choices": tuple(TRISTATE.values())}) if optional else ("bool", {})
    if annotation in (int, float):
        return annotation.__name__, {}
    if annotation is str:
        return "text", {}
    if origin is list:
        (item,) = typing.get_args(annotation) or (Any,)
        if typing.get_origin(item) is Literal:
            return "multichoice", {"choices": typing.get_args(item)}
        if item is str:
            return "tags", {}
        if item in (int, float):
            return "numlist", {"item_type": item}
        if isinstance(item, type) and issubclass(item, BaseModel) and all(
                _kind(*_unwrap_optional(f.annotation))[0] in ("choice", "bool", "int", "float", "text")
                for f in item.model_fields.values()):
            return "table", {"columns": tuple(_model_specs(item, ""))}
    return "json", {}


def _field_spec(path: str, info) -> FieldSpec:
    annotation, optional = _unwrap_optional(info.annotation)
    kind, extra = _kind(annotation, optional)
    ui = (info.json_schema_extra or {}).get("ui", {}) if isinstance(info.json_schema_extra, dict) else {}
    lo, hi = _bounds(info)
    name = path.rsplit(".", 1)[-1]
    return FieldSpec(
        path=path, kind=kind, default=_default(info), help=info.description or "",
        label=ui.get("label") or name.replace("_", " ").capitalize(), group=ui.get("group", "essentials"),
        minimum=lo, maximum=hi, step=ui.get("step"), optional=optional,
        families=tuple(ui["families"]) if ui.get("families") else None,
        adapters=tuple(ui["adapters"]) if ui.get("adapters") else None,
        variants=tuple(ui["variants"]) if ui.get("variants") else None,
        widget=ui.get("widget"), when=tuple((p, tuple(v)) for p, v in (ui.get("when") or {}).items()), **extra)


def _model_specs(model: type[BaseModel], prefix: str) -> list[FieldSpec]:
    specs = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        annotation, _ = _unwrap_optional(info.annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            specs += _model_specs(annotation, path + ".")  # a nested group: its own dotted paths
        else:
            specs.append(_field_spec(path, info))
    return specs


@lru_cache(maxsize=1)
def field_specs() -> tuple[FieldSpec, ...]:
    """Every setting of `JobConfig`, in schema order (section by section)."""
    specs: list[FieldSpec] = []
    for section in SECTIONS:
        info = JobConfig.model_fields[section]
        annotation, _ = _unwrap_optional(info.annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            specs += _model_specs(annotation, section + ".")
        else:  # e.g. a discriminated union of models: edited as JSON
            specs.append(_field_spec(section, info))
    return tuple(specs)


def spec_by_path() -> dict[str, FieldSpec]:
    return {s.path: s for s in field_specs()}


# -- value conversions -------------------------------------------------------------------------
def _number_back(kind: str, value: Any) -> Any:
    if isinstance(value, str):  # optional numbers are typed in a textbox: empty = automatic
        text = value.strip()
        if not text:
            return None
        try:
            value = float(text)
        except ValueError:
            return text  # the schema names the field and says a number is expected
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if kind == "int" and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def to_ui(spec: FieldSpec, value: Any) -> Any:
    """Config value -> the value its component shows."""
    if spec.kind == "tristate":
        return TRISTATE.get(value, "auto")
    if spec.kind == "autobool":
        return AUTOBOOL.get(value, "auto")
    if spec.kind == "text":
        return "" if value is None else str(value)
    if spec.kind in ("int", "float") and spec.optional:
        return "" if value is None else f"{value:g}" if isinstance(value, float) else str(value)
    if spec.kind in ("tags", "multichoice"):
        return list(value or [])
    if spec.kind == "numlist":
        return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value or [])
    if spec.kind == "table":
        names = [c.path for c in spec.columns]
        rows = [[to_ui(c, (item or {}).get(c.path, c.default)) for c in spec.columns] for item in value or []]
        return pd.DataFrame(rows, columns=names)
    if spec.kind == "json":
        return json.dumps(value, indent=2)
    return value


def _table_back(spec: FieldSpec, frame: Any) -> list[dict]:
    if frame is None:
        return []
    if not isinstance(frame, pd.DataFrame):
        frame = pd.DataFrame(frame.get("data", []) if isinstance(frame, dict) else frame,
                             columns=[c.path for c in spec.columns])
    out = []
    for _, row in frame.iterrows():
        item = {}
        for col in spec.columns:
            cell = row.get(col.path)
            cell = None if cell is not None and not isinstance(cell, (list, dict)) and pd.isna(cell) else cell
            cell = cell.item() if hasattr(cell, "item") else cell  # numpy scalar -> Python
            item[col.path] = from_ui(col, col.default if cell in (None, "") and col.kind != "text" else cell)
        first = spec.columns[0]
        if first.kind == "text" and not str(item.get(first.path) or "").strip():
            continue  # a blank row (the table's "add row" leaves one) is not a setting
        out.append(item)
    return out


def from_ui(spec: FieldSpec, value: Any) -> Any:
    """Component value -> config value. Bad input is passed on so that validation names the field."""
    if spec.kind == "tristate":
        return TRISTATE_BACK.get(value, value)
    if spec.kind == "autobool":
        return AUTOBOOL_BACK.get(value, value)
    if spec.kind in ("int", "float"):
        return _number_back(spec.kind, value)
    if spec.kind == "text":
        return "" if value is None else str(value)
    if spec.kind in ("tags", "multichoice"):
        if isinstance(value, str):
            value = re.split(r"[\s,]+", value)
        return [str(v).strip() for v in value or [] if str(v).strip()]
    if spec.kind == "numlist":
        parts = [p for p in re.split(r"[\s,;]+", str(value or "")) if p]
        try:
            return [spec.item_type(float(p)) if spec.item_type is int and float(p).is_integer()
                    else spec.item_type(p) for p in parts]
        except ValueError:
            return str(value)  # validation reports "valid list" errors for this field
    if spec.kind == "table":
        return _table_back(spec, value)
    if spec.kind == "json":
        try:
            return json.loads(value) if isinstance(value, str) else value
        except json.JSONDecodeError as err:
            raise ConfigError([(spec.path, f"not valid JSON: {err}")]) from None
    return value


def get_path(data: dict, path: str, default: Any = None) -> Any:
    node: Any = data
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return default
        node = node[key]
    return node


def set_path(data: dict, path: str, value: Any) -> None:
    keys = path.split(".")
    node = data
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value


def values_from_config(config: dict) -> list[Any]:
    """A full config dict (`JobConfig.model_dump(mode="json")`) -> component values, in spec order."""
    return [to_ui(s, get_path(config, s.path, s.default)) for s in field_specs()]


def config_from_values(values: list[Any]) -> dict:
    """Component values in spec order -> a config dict (not validated yet). Collects every JSON
    problem before raising, so each bad field is named."""
    specs = field_specs()
    if len(values) != len(specs):
        raise ValueError(f"expected {len(specs)} form values, got {len(values)}")
    out: dict = {}
    problems: list[tuple[str, str]] = []
    for spec, value in zip(specs, values):
        try:
            set_path(out, spec.path, from_ui(spec, value))
        except ConfigError as err:
            problems += err.problems
    if problems:
        raise ConfigError(problems)
    return out


def default_values(family: str) -> dict[str, Any]:
    """path -> component value of the schema defaults with this family's defaults on top."""
    overrides = family_defaults(family)
    return {s.path: to_ui(s, get_path(overrides, s.path, s.default)) for s in field_specs()}


def same_ui_value(a: Any, b: Any) -> bool:
    if isinstance(a, pd.DataFrame) or isinstance(b, pd.DataFrame):
        return isinstance(a, pd.DataFrame) and isinstance(b, pd.DataFrame) and a.equals(b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return float(a) == float(b)
    return a == b
