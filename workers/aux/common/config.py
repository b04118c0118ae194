"""The base of every auxiliary method's config: strict pydantic with size presets.

A method's config class sets ``PRESETS`` (``smoke`` for CI in seconds, ``quick`` for a 2-core CPU in
under five minutes, ``full`` for the results table). A submitted config names a preset and may
override any field; the preset's values fill only what the user left out (nested sections merge
key by key), so ``{"preset": "full", "train": {"steps": 10}}`` is "full, but 10 steps".
Pydantic only: the job registry imports these classes on machines without torch.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Preset = Literal["smoke", "quick", "full"]


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``override``; dicts present in both merge recursively."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class StrictModel(BaseModel):
    """A config section: unknown keys fail with the field's name, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class AuxConfig(StrictModel):
    """Base of an ``aux.<method>`` job config. Subclasses set ``PRESETS`` (values per preset name)."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}

    preset: Preset = Field("quick", description="Size preset: smoke (CI, seconds), quick (2-core CPU, "
                           "< 5 min), full (the results table). Fields given explicitly override it.")
    seed: int = Field(0, ge=0, description="Seed of data, weights and sampling noise.")
    device: str = Field("auto", description="auto (cuda if available, else cpu), cpu, cuda, cuda:N.")

    @model_validator(mode="before")
    @classmethod
    def _fill_from_preset(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        preset = data.get("preset", "quick")
        if preset not in cls.PRESETS:
            return data  # the Literal check on `preset` reports it, naming the valid choices
        return deep_merge(cls.PRESETS[preset], data)
