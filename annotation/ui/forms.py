"""Forms generated from config dataclasses: one component per field, labelled with its help text.

The same dataclass feeds the CLI, the UI form and the stored config, and its own validation runs
before anything is saved or launched, so the form cannot drift from what the code accepts.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any

import gradio as gr


def _label(name: str) -> str:
    return name.replace("_", " ").capitalize()


def _base_type(hint):
    """`int | None` -> (int, True); `int` -> (int, False); anything else -> (hint, False)."""
    args = typing.get_args(hint)
    if args and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return rest[0], True
    return hint, False


def build_form(cls: type, choices: dict[str, list] | None = None, multiline: tuple[str, ...] = (),
               prefix: str = "", defaults: dict[str, Any] | None = None,
               exclude: tuple[str, ...] = (),
               custom_values: tuple[str, ...] = ()) -> dict[str, gr.components.Component]:
    """A component per dataclass field (in field order, minus `exclude`), keyed by field name;
    `defaults` overrides the dataclass defaults shown in the form. Fields in `choices` are dropdowns
    (choices may be (label, value) pairs); those also in `custom_values` take a typed value too."""
    choices = choices or {}
    defaults = defaults or {}
    hints = typing.get_type_hints(cls)
    components: dict[str, gr.components.Component] = {}
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        default = defaults.get(f.name, None if f.default is dataclasses.MISSING else f.default)
        common = {"label": _label(f.name), "info": f.metadata.get("help"), "elem_id": f"{prefix}{f.name}"}
        kind, optional = _base_type(hints[f.name])
        if optional and kind in (int, float):
            # A Number cannot be left empty (it hands back 0): an optional number is a textbox where
            # empty means None.
            common["info"] = f"{common['info'] or ''} (leave empty for none)".strip()
            components[f.name] = gr.Textbox(value="" if default is None else str(default), **common)
        elif f.name in choices:
            components[f.name] = gr.Dropdown(choices=choices[f.name], value=default,
                                             allow_custom_value=f.name in custom_values, **common)
        elif kind is int:
            # No precision: Gradio would round 1.5 to 2 on the server; form_values refuses it instead.
            components[f.name] = gr.Number(value=default, step=1, **common)
        elif kind is float:
            components[f.name] = gr.Number(value=default, **common)
        elif kind is bool:
            components[f.name] = gr.Checkbox(value=bool(default), **common)
        else:
            components[f.name] = gr.Textbox(value=default or "", lines=4 if f.name in multiline else 1, **common)
    return components


def form_values(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """Form values coerced to the fields' types (Gradio hands numbers back as floats, and an empty
    optional number as None); fields not in the form are left out."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        value = values[f.name]
        kind, optional = _base_type(hints[f.name])
        if value in ("", None) and optional:
            value = None
        elif kind is int and value is not None:
            try:
                number = float(value)
            except ValueError:
                raise ValueError(f"{_label(f.name)} must be a whole number, not {value!r}") from None
            if not (math.isfinite(number) and number.is_integer()):
                raise ValueError(f"{_label(f.name)} must be a whole number, not {number:g}")
            value = int(number)
        elif kind is float and value is not None:
            try:
                value = float(value)
            except ValueError:
                raise ValueError(f"{_label(f.name)} must be a number, not {value!r}") from None
            if not math.isfinite(value):
                raise ValueError(f"{_label(f.name)} must be a finite number, not {value:g}")
        out[f.name] = value
    return out


def read_form(cls: type, values: dict[str, Any]):
    """Instantiate the dataclass from form values (see `form_values`)."""
    return cls(**form_values(cls, values))


def fill_form(instance) -> list[Any]:
    """Field values in field order, to set a form's components from an existing config."""
    return [getattr(instance, f.name) for f in dataclasses.fields(instance)]
