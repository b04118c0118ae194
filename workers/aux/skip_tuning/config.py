"""Config of aux.skip_tuning (placeholder until the method lands)."""

from __future__ import annotations

from typing import Any, ClassVar

from workers.aux.common.config import AuxConfig


class SkipTuningConfig(AuxConfig):
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"smoke": {}, "quick": {}, "full": {}}
