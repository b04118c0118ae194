"""Precision backends for rollouts: bf16 (reference), fp8 (W8A8 E4M3) and nvfp4 (W4A4), by module swap.

``apply_precision(model, precision, family)`` swaps the eligible linear / 1x1-conv layers of a diffusers
transformer in place and returns a PrecisionReport; ``load_weights`` / ``refresh_quantized`` re-derive
the quantized weights after a policy update. ``fp8`` and ``nvfp4`` hold the numerics
(``fake_quantize`` and friends), ``linear`` the modules, ``selection`` the per-family layer choice.
"""

from workers.precision import fp8, nvfp4
from workers.precision.linear import (
    Fp8Conv1x1,
    Fp8Linear,
    Nvfp4Conv1x1,
    Nvfp4Linear,
    QuantizedLinearBase,
)
from workers.precision.selection import (
    BACKENDS,
    FAMILY_POLICIES,
    PRECISIONS,
    FamilyPolicy,
    PrecisionName,
    PrecisionReport,
    apply_precision,
    load_weights,
    quantized_modules,
    refresh_quantized,
)

__all__ = [
    "BACKENDS",
    "FAMILY_POLICIES",
    "PRECISIONS",
    "FamilyPolicy",
    "Fp8Conv1x1",
    "Fp8Linear",
    "Nvfp4Conv1x1",
    "Nvfp4Linear",
    "PrecisionName",
    "PrecisionReport",
    "QuantizedLinearBase",
    "apply_precision",
    "fp8",
    "load_weights",
    "nvfp4",
    "quantized_modules",
    "refresh_quantized",
]
