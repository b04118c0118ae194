"""Config of aux.fast_dllm (placeholder until the method lands)."""

from __future__ import annotations

from typing import Any, ClassVar

from workers.aux.common.config import AuxConfig


class FastDllmConfig(AuxConfig):
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"smoke": {}, "quick": {}, "full": {}}
