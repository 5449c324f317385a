"""`setting(...)`: a pydantic Field that also carries the UI hints, so a setting is declared once.

The UI builds its form from these hints, the docs list them and the CLI validates with them.
Hints (all optional):
  group     "essentials" (open by default) or "advanced" (folded)
  families  model families the field applies to (hidden otherwise)
  adapters  adapter types the field applies to
  variants  model variants the field applies to
  when      {other setting's path: values}: shown only while that setting has one of these values
  widget    force a widget: "slider", "textbox", "code", "path", "variant" (the family's variants)
  step      UI step for numbers
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from studio.registry.families import ALL_FAMILIES, family_ids

# Groups of family ids for the `families=` hints, read from the family registry (studio/registry/families.py).
IMAGE_FAMILIES = family_ids(data="images")
TRAINABLE_FAMILIES = family_ids(trainable=True)


def setting(
    default: Any = ...,
    help: str = "",
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    group: str = "essentials",
    families: tuple[str, ...] | None = None,
    adapters: tuple[str, ...] | None = None,
    variants: tuple[str, ...] | None = None,
    widget: str | None = None,
    step: float | None = None,
    label: str | None = None,
    when: dict[str, tuple[str, ...]] | None = None,
    default_factory: Any = None,
) -> Any:
    if not help:
        raise ValueError("every setting needs a help text")
    ui: dict[str, Any] = {"group": group}
    if when:
        ui["when"] = {path: list(values) for path, values in when.items()}
    for key, value in (("families", families), ("adapters", adapters), ("variants", variants),
                       ("widget", widget), ("step", step), ("label", label)):
        if value is not None:
            ui[key] = list(value) if isinstance(value, tuple) else value
    kwargs: dict[str, Any] = dict(description=help, ge=ge, gt=gt, le=le, lt=lt, json_schema_extra={"ui": ui})
    if default_factory is not None:
        return Field(default_factory=default_factory, **kwargs)
    return Field(default, **kwargs)


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=False, populate_by_name=True)

    def problems(self, cfg: Any) -> list[tuple[str, str]]:
        """Cross-field problems of this section as (field path, message); the JobConfig collects them."""
        return []
