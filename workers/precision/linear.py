"""Quantized drop-in replacements for nn.Linear and 1x1 nn.Conv2d: W8A8 FP8 and W4A4 NVFP4.

Every module keeps
- ``weight`` / ``bias``: the high-precision master copy, as given (bf16 in production), as frozen
  Parameters with the names and shapes of the module it replaces, so the model's state_dict keys and
  shapes do not change and a policy state dict loads straight in;
- a cache of the quantized weight, re-derived from the master by ``refresh()``. ``set_weight`` copies
  new weights in and refreshes: the refresh after every policy update.

The cache lives in non-persistent buffers holding integer *bit patterns* of the quantized values and
scales, so ``model.to(device)`` moves it while ``model.to(dtype)`` (which casts every floating-point
buffer, float8 included) cannot re-round codes or FP32 scales.

Each module has an emulated path (any device, CPU included; the numerics reference) and a native one:
- FP8: ``torch._scaled_mm`` with rowwise scales on CUDA compute capability >= 8.9 (Ada, Hopper,
  Blackwell);
- NVFP4: torchao's NVFP4 W4A4 on compute capability >= 10.0 (Blackwell). Hopper has no FP4 tensor
  cores, so there NVFP4 is emulated only (fidelity, not speed; use FP8 for fast rollouts).
``use_native``: None = native where it can run, True = native or raise, False = always emulated.

These modules are for inference (rollouts): the master weight is frozen and no gradient flows through
the rounding.

Shape legend: M rows (tokens), K in_features (reduction dim), N out_features; B, C, H, W for convs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, Self

import torch
from torch import nn

from workers.precision import fp8, nvfp4

FP8_MIN_CAPABILITY = (8, 9)
NVFP4_MIN_CAPABILITY = (10, 0)
# torch._scaled_mm and the FP4 GEMMs need K and N to be multiples of 16.
GEMM_ALIGNMENT = 16


_CAPABILITY: dict[int, tuple[int, int]] = {}


def cuda_capability(device: torch.device) -> tuple[int, int]:
    """Compute capability of a CUDA device, (0, 0) for any other device.

    Cached per device index, and warmed when a quantized module moves to a device (``_apply``), so the
    lookup inside a compiled forward is a dict read, not a driver query that could break the graph.
    """
    if device.type != "cuda":
        return (0, 0)
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _CAPABILITY:
        _CAPABILITY[index] = torch.cuda.get_device_capability(index)
    return _CAPABILITY[index]


def mm_fp32_accumulate(a_MK: torch.Tensor, b_NK: torch.Tensor) -> torch.Tensor:
    """a @ b.T for bf16 operands whose products are exact in fp32, accumulated and returned in fp32.

    On CUDA this is a bf16 tensor-core GEMM with an fp32 output (no rounding of the result to bf16);
    elsewhere the exact bf16 values are matmul'd in fp32.
    """
    if a_MK.is_cuda:
        return torch.mm(a_MK, b_NK.t(), out_dtype=torch.float32)
    return a_MK.float() @ b_NK.float().t()


class QuantizedLinearBase(nn.Module):
    """Master weight, refresh and the [..., K] -> [..., N] reshaping shared by the backends."""

    precision: ClassVar[str]
    # 2 for linear weights [N, K], 4 for 1x1 conv weights [N, K, 1, 1].
    weight_ndim: ClassVar[int] = 2

    def __init__(
        self, weight: torch.Tensor, bias: torch.Tensor | None = None, use_native: bool | None = None
    ):
        super().__init__()
        if weight.ndim != self.weight_ndim or (self.weight_ndim == 4 and tuple(weight.shape[2:]) != (1, 1)):
            expected = "[out, in]" if self.weight_ndim == 2 else "[out, in, 1, 1]"
            raise ValueError(
                f"{type(self).__name__} needs a weight of shape {expected}, got {tuple(weight.shape)}"
            )
        if not weight.is_floating_point():
            raise TypeError(f"{type(self).__name__} needs a floating-point weight, got {weight.dtype}")
        self.out_features, self.in_features = int(weight.shape[0]), int(weight.shape[1])
        if bias is not None and tuple(bias.shape) != (self.out_features,):
            raise ValueError(f"bias must have shape ({self.out_features},), got {tuple(bias.shape)}")
        # Cloned: the swapped-out module (or a policy sharing its storage) must not see set_weight's copies.
        self.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)
        self.use_native = use_native
        self.refresh()
        cuda_capability(self.weight.device)  # warm the cache outside any compiled region

    @classmethod
    def from_linear(cls, linear: nn.Linear, use_native: bool | None = None) -> Self:
        """Quantized copy of an nn.Linear (weights copied, not shared)."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"{cls.__name__}.from_linear needs an nn.Linear, got {type(linear).__name__}")
        return cls(linear.weight, linear.bias, use_native=use_native)

    def weight_2d(self) -> torch.Tensor:
        """Master weight viewed as [N, K]."""
        return self.weight.reshape(self.out_features, self.in_features)

    @torch.no_grad()
    def set_weight(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        """Copy new master weights in (same shape; cast to the master dtype) and re-derive the cache."""
        if tuple(weight.shape) != tuple(self.weight.shape):
            raise ValueError(
                f"set_weight got a weight of shape {tuple(weight.shape)}, "
                f"this layer's is {tuple(self.weight.shape)}"
            )
        self.weight.copy_(weight)
        if bias is not None:
            if self.bias is None:
                raise ValueError("set_weight got a bias, but this layer was built without one")
            self.bias.copy_(bias)
        self.refresh()

    def refresh(self) -> None:
        """Re-derive the quantized cache from the master weight."""
        raise NotImplementedError

    def _apply(self, fn, recurse: bool = True):  # noqa: ANN001 - nn.Module's signature
        out = super()._apply(fn, recurse)
        cuda_capability(self.weight.device)  # warm the cache outside any compiled region
        return out

    def _store(self, name: str, bits: torch.Tensor) -> None:
        self.register_buffer(name, bits, persistent=False)

    def forward_2d(self, x_MK: torch.Tensor) -> torch.Tensor:
        """[M, K] -> [M, N] in x's dtype."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., K] -> [..., N], in x's dtype."""
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"{type(self).__name__} expects inputs [..., {self.in_features}], got {tuple(x.shape)}"
            )
        y_MN = self.forward_2d(x.reshape(-1, self.in_features))
        return y_MN.reshape(*x.shape[:-1], self.out_features)

    def _add_bias(self, y_MN: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if self.bias is not None:
            y_MN = y_MN + self.bias.float()
        return y_MN.to(dtype)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, use_native={self.use_native}"
        )


class Fp8Linear(QuantizedLinearBase):
    """W8A8 E4M3 linear: per-output-channel weight scales, per-row (per-token) activation scales.

    Emulated: y = (q_x @ q_w.T) * s_x * s_w.T + b with q_x, q_w E4M3 values; their products are exact
    in fp32, so this is F.linear(fp8.fake_quantize(x), fp8.fake_quantize(W)) up to fp32 rounding, with
    the scales applied after the GEMM as ``_scaled_mm`` does. Native (CUDA, cc >= 8.9, K and N % 16):
    ``fp8.quantize_rows_fast`` (fused by torch.compile), then ``torch._scaled_mm`` with rowwise scales and
    the bias in its epilogue, bf16 output.
    """

    precision = "fp8"

    def refresh(self) -> None:
        q_NK, scale_N1 = fp8.quantize_rows(self.weight_2d())
        self._store("w_codes", q_NK.view(torch.uint8))
        self._store("w_scale_bits", scale_N1.view(torch.int32))

    def quantized_weight(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Cached (q_w [N, K] float8_e4m3fn, s_w [N, 1] float32)."""
        return self.w_codes.view(torch.float8_e4m3fn), self.w_scale_bits.view(torch.float32)

    def uses_native(self, x: torch.Tensor) -> bool:
        """Whether a forward on x takes the native path (raises where use_native=True cannot run)."""
        if self.use_native is False:
            return False
        capable = cuda_capability(x.device) >= FP8_MIN_CAPABILITY
        aligned = self.in_features % GEMM_ALIGNMENT == 0 and self.out_features % GEMM_ALIGNMENT == 0
        if self.use_native is None:
            return capable and aligned
        if not capable:
            raise RuntimeError(
                f"Fp8Linear(use_native=True) needs a CUDA GPU of compute capability >= 8.9 (Ada, Hopper, "
                f"Blackwell); the input is on {x.device} (capability {cuda_capability(x.device)}). "
                "Use use_native=None or False for the emulated path."
            )
        if not aligned:
            raise ValueError(
                f"Fp8Linear(use_native=True): torch._scaled_mm needs in and out features divisible by "
                f"{GEMM_ALIGNMENT}, this layer is {self.in_features} -> {self.out_features}"
            )
        return True

    def forward_2d(self, x_MK: torch.Tensor) -> torch.Tensor:
        w_q, w_scale_N1 = self.quantized_weight()
        if self.uses_native(x_MK):
            return self._forward_native(x_MK, w_q, w_scale_N1)
        x_q, x_scale_M1 = fp8.quantize_rows(x_MK)
        # E4M3 values are exact in bf16 (4 significant bits), their products exact in fp32.
        y_MN = mm_fp32_accumulate(x_q.to(torch.bfloat16), w_q.to(torch.bfloat16))
        y_MN = y_MN * x_scale_M1 * w_scale_N1.reshape(1, -1)
        return self._add_bias(y_MN, x_MK.dtype)

    def _forward_native(self, x_MK: torch.Tensor, w_q: torch.Tensor, w_scale_N1: torch.Tensor) -> torch.Tensor:
        """The fast path: one fusible quantization pass, then the FP8 GEMM with scales and bias in its epilogue.

        Every extra elementwise pass over the [M, N] output costs a sizeable fraction of an FP8 GEMM at
        rollout shapes, so the output is written once, in the activation dtype (bf16), bias included.
        """
        x_q, x_scale_M1 = fp8.quantize_rows_fast(x_MK)
        out_dtype = x_MK.dtype if x_MK.dtype in (torch.bfloat16, torch.float16) else torch.bfloat16
        bias = None if self.bias is None else self.bias.to(out_dtype)
        # mat2 must be column-major: the transpose of the row-major [N, K] codes is.
        # use_fast_accum: Hopper's FP8 tensor cores accumulate without periodic promotion to FP32 (what
        # torchao's float8 inference path does); measured on an H200 within the 1e-2 bound of the
        # exact emulation at K = 2048-3072: rel. error 2e-3 (docs/results/gpu/precision_checks_fastaccum.json).
        y_MN = torch._scaled_mm(x_q, w_q.t(), scale_a=x_scale_M1, scale_b=w_scale_N1.reshape(1, -1), bias=bias,
                                out_dtype=out_dtype, use_fast_accum=True)
        return y_MN.to(x_MK.dtype)


class Nvfp4Linear(QuantizedLinearBase):
    """W4A4 NVFP4 linear: weight quantized once per refresh, activations per call (dynamic tensor scale,
    one per sample of the leading batch dim, so candidates never share a scale).

    Emulated: y = (qs_x @ qs_w.T) * (g_x * g_w) + b, where qs = q * s_b is exact in bf16 and the GEMM
    accumulates the exact products in fp32 (see ``nvfp4.quantize_blocks``). Blackwell's native GEMM
    accumulates in its own order and rounds to bf16 before the g_x * g_w multiply (torchao), so native
    and emulated agree to accumulation noise, not bitwise.

    Native (``use_native`` True, or None on cc >= 10.0): torchao's
    ``NVFP4DynamicActivationNVFP4WeightConfig(use_dynamic_per_tensor_scale=True, use_triton_kernel=True)``
    applied to a bf16 copy of the master weight, rebuilt on every refresh. NOT TESTED: written against
    torchao 0.18's documented API, but no Blackwell GPU was available; its acceptance test (codes, scales
    and outputs vs this emulation) is in shared/research/lowprec_anchors.md section 4(c).
    """

    precision = "nvfp4"

    def __init__(
        self, weight: torch.Tensor, bias: torch.Tensor | None = None, use_native: bool | None = None
    ):
        # torchao-quantized bf16 Linears for the native path, by device; a plain dict so that they stay
        # out of state_dict and out of .to().
        self._native_by_device: dict[str, nn.Module] = {}
        if weight.ndim >= 2 and weight.shape[1] % nvfp4.BLOCK_SIZE != 0:
            raise ValueError(
                f"{type(self).__name__} quantizes blocks of {nvfp4.BLOCK_SIZE} along in_features; "
                f"in_features={weight.shape[1]} is not a multiple of {nvfp4.BLOCK_SIZE}"
            )
        super().__init__(weight, bias, use_native)

    def refresh(self) -> None:
        qs_NK, g = nvfp4.quantize_blocks(self.weight_2d())
        self._store("w_qs_bits", qs_NK.view(torch.int16))
        self._store("w_scale_bits", g.reshape(1).view(torch.int32))
        for device in list(self._native_by_device):
            self._native_by_device[device] = self._build_native(torch.device(device))

    def quantized_weight(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Cached (qs_w [N, K] bfloat16 = q * s_b, g_w 0-d float32)."""
        return self.w_qs_bits.view(torch.bfloat16), self.w_scale_bits.view(torch.float32).reshape(())

    def uses_native(self, x: torch.Tensor) -> bool:
        """Whether a forward on x takes the native path (raises where use_native=True cannot run)."""
        if self.use_native is False:
            return False
        capable = cuda_capability(x.device) >= NVFP4_MIN_CAPABILITY
        if self.use_native is None:
            return capable
        if not capable:
            raise RuntimeError(
                f"Nvfp4Linear(use_native=True) needs a Blackwell GPU (compute capability >= 10.0); the input "
                f"is on {x.device} (capability {cuda_capability(x.device)}). Hopper (H100/H200) has no FP4 "
                "tensor cores: use use_native=False (emulated NVFP4 numerics) or the fp8 precision for speed."
            )
        if self.out_features % GEMM_ALIGNMENT != 0:
            raise ValueError(
                f"Nvfp4Linear(use_native=True) needs out_features divisible by {GEMM_ALIGNMENT}, "
                f"got {self.out_features}"
            )
        return True

    def _build_native(self, device: torch.device) -> nn.Module:
        try:
            from torchao.prototype.mx_formats.inference_workflow import (
                NVFP4DynamicActivationNVFP4WeightConfig,
            )
            from torchao.quantization import quantize_
        except ImportError as err:
            raise RuntimeError(
                "the native NVFP4 path needs torchao (written against 0.18): pip install 'torchao>=0.18', "
                "or use use_native=False for the emulated path"
            ) from err
        native = nn.Linear(
            self.in_features, self.out_features, bias=False, device=device, dtype=torch.bfloat16
        )
        with torch.no_grad():
            native.weight.copy_(self.weight_2d())
        quantize_(
            native,
            NVFP4DynamicActivationNVFP4WeightConfig(
                use_dynamic_per_tensor_scale=True, use_triton_kernel=True
            ),
        )
        return native

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, ..., K] -> [B, ..., N]; the activation tensor scale is per sample (leading index).

        A 2-D input [M, K] is one sample. See ``nvfp4.per_sample_tensor_scale`` for why.
        """
        if x.ndim <= 2 or x.shape[-1] != self.in_features:
            return super().forward(x)  # (the base class raises on a wrong last dim)
        x_BRK = x.reshape(x.shape[0], -1, self.in_features)
        if self.uses_native(x):
            # torchao computes one dynamic tensor scale per call: go sample by sample.
            y_BRN = torch.stack([self.forward_2d(sample_RK) for sample_RK in x_BRK])
            return y_BRN.reshape(*x.shape[:-1], self.out_features)
        qs_w, g_w = self.quantized_weight()
        qs_x, g_B11 = nvfp4.quantize_blocks(x_BRK, nvfp4.per_sample_tensor_scale(x_BRK))
        y_BRN = mm_fp32_accumulate(qs_x.reshape(-1, self.in_features), qs_w).reshape(*x_BRK.shape[:2], -1)
        y_BRN = y_BRN * (g_B11 * g_w)
        return self._add_bias(y_BRN, x.dtype).reshape(*x.shape[:-1], self.out_features)

    def forward_2d(self, x_MK: torch.Tensor) -> torch.Tensor:
        """[M, K] -> [M, N] with one activation tensor scale for the whole input."""
        if self.uses_native(x_MK):
            key = str(x_MK.device)
            if key not in self._native_by_device:
                self._native_by_device[key] = self._build_native(x_MK.device)
            # torchao adds no bias here (bias=False above); it is added in fp32 like the emulated path.
            y_MN = self._native_by_device[key](x_MK.to(torch.bfloat16)).float()
            return self._add_bias(y_MN, x_MK.dtype)
        qs_w, g_w = self.quantized_weight()
        qs_x, g_x = nvfp4.quantize_blocks(x_MK)
        y_MN = mm_fp32_accumulate(qs_x, qs_w) * (g_x * g_w)
        return self._add_bias(y_MN, x_MK.dtype)


def check_conv1x1(conv: nn.Conv2d) -> str | None:
    """None if conv is a plain 1x1 conv (a per-pixel matmul over channels), else why it is not."""
    if not isinstance(conv, nn.Conv2d):
        return f"{type(conv).__name__} is not an nn.Conv2d"
    if tuple(conv.kernel_size) != (1, 1):
        kind = "depthwise " if conv.groups == conv.in_channels and conv.groups > 1 else ""
        return f"{kind}{conv.kernel_size[0]}x{conv.kernel_size[1]} conv is not a channel matmul"
    if conv.groups != 1:
        return f"grouped 1x1 conv (groups={conv.groups}) is not one channel matmul"
    if tuple(conv.stride) != (1, 1) or tuple(conv.dilation) != (1, 1):
        return f"1x1 conv with stride {tuple(conv.stride)} / dilation {tuple(conv.dilation)}"
    if conv.padding not in ((0, 0), "valid"):
        return f"1x1 conv with padding {conv.padding}"
    return None


def _conv1x1_as_matmul(x_BCHW: torch.Tensor, linear: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    if x_BCHW.ndim != 4:
        raise ValueError(f"a 1x1 conv expects inputs [B, C, H, W], got {tuple(x_BCHW.shape)}")
    y_BHWN = linear(x_BCHW.permute(0, 2, 3, 1))  # channels last: one row per pixel
    return y_BHWN.permute(0, 3, 1, 2).contiguous()


class _Conv1x1Mixin:
    """from_conv constructor and channel attributes for the 1x1-conv variants."""

    weight_ndim: ClassVar[int] = 4

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, use_native: bool | None = None) -> Self:
        """Quantized copy of a plain 1x1 nn.Conv2d (weights copied, not shared)."""
        reason = check_conv1x1(conv)
        if reason is not None:
            raise ValueError(f"{cls.__name__}.from_conv needs a plain 1x1 Conv2d: {reason}")
        return cls(conv.weight, conv.bias, use_native=use_native)

    @property
    def in_channels(self) -> int:
        return self.in_features

    @property
    def out_channels(self) -> int:
        return self.out_features


class Fp8Conv1x1(_Conv1x1Mixin, Fp8Linear):
    """1x1 Conv2d as an Fp8Linear over channels: [B, C, H, W] -> [B, N, H, W]; each pixel is a row."""

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        return _conv1x1_as_matmul(x_BCHW, super().forward)


class Nvfp4Conv1x1(_Conv1x1Mixin, Nvfp4Linear):
    """1x1 Conv2d as an Nvfp4Linear over channels: [B, C, H, W] -> [B, N, H, W]; blocks run along C."""

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        return _conv1x1_as_matmul(x_BCHW, super().forward)
