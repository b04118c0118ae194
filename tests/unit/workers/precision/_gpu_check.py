"""Temporary device check (not collected by pytest): native vs emulated numerics on a CUDA GPU."""

import time

import torch
from torch import nn

from workers.precision import Fp8Linear, Nvfp4Linear, apply_precision, fp8, load_weights, nvfp4

dev = torch.device("cuda")
print("device", torch.cuda.get_device_name(), torch.cuda.get_device_capability(), "torch", torch.__version__)


def sqnr(ref, x):
    ref, x = ref.double(), x.double()
    return (10 * torch.log10(ref.pow(2).mean() / (ref - x).pow(2).mean())).item()


g = torch.Generator().manual_seed(0)
a = torch.rand(1 << 20, generator=g) * 1000
print("CUDA a / 6.0 == a * fp32(1/6):", torch.equal((a.to(dev) / 6.0).cpu(), a * nvfp4.INV_E2M1_MAX),
      "; CPU a / 6.0 == a * fp32(1/6):", torch.equal(a / 6.0, a * nvfp4.INV_E2M1_MAX))
x = (torch.randn(64, 4096, generator=g) ** 3).bfloat16()
print(
    "nvfp4 quantize CUDA == CPU:", torch.equal(nvfp4.fake_quantize(x), nvfp4.fake_quantize(x.to(dev)).cpu())
)
q1, s1 = fp8.quantize_rows(x)
q2, s2 = fp8.quantize_rows(x.to(dev))
print("fp8 quantize CUDA == CPU:", torch.equal(q1.float(), q2.float().cpu()), torch.equal(s1, s2.cpu()))

for M, K, N in [(256, 512, 384), (4096, 2240, 6720)]:
    torch.manual_seed(1)
    lin = nn.Linear(K, N).bfloat16()
    xx = torch.randn(M, K, generator=g).bfloat16()
    for cls in (Fp8Linear, Nvfp4Linear):
        cpu = cls.from_linear(lin, use_native=False)(xx)
        emu = cls.from_linear(lin, use_native=False).to(dev)
        y_emu = emu(xx.to(dev)).cpu()
        line = f"{cls.__name__} {M}x{K}->{N}: emulated CUDA vs CPU SQNR {sqnr(cpu.float(), y_emu.float()):.1f} dB"
        line += f" (max abs diff {(cpu.float() - y_emu.float()).abs().max().item():.3g})"
        if cls is Fp8Linear:
            nat = cls.from_linear(lin, use_native=True).to(dev)
            y_nat = nat(xx.to(dev)).cpu()
            line += f"; native vs emulated SQNR {sqnr(y_emu.float(), y_nat.float()):.1f} dB"
        ref = lin.to(dev)(xx.to(dev)).float().cpu()
        lin.cpu()
        line += f"; vs bf16 linear SQNR {sqnr(ref, y_emu.float()):.1f} dB"
        print(line)

try:
    Nvfp4Linear.from_linear(nn.Linear(32, 16), use_native=True).to(dev)(torch.randn(2, 32, device=dev))
except RuntimeError as err:
    print("nvfp4 native on this GPU raises:", str(err)[:120])

# Timing: per-linear forward (bf16 vs fp8 native vs nvfp4 emulated) and weight refresh, SANA qkv-like.
M, K, N = 16384, 2240, 6720
lin = nn.Linear(K, N, device=dev, dtype=torch.bfloat16)
xx = torch.randn(M, K, device=dev, dtype=torch.bfloat16)


def bench(fn, n=20):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / n * 1e3


with torch.no_grad():
    f8 = Fp8Linear.from_linear(lin)
    n4 = Nvfp4Linear.from_linear(lin)
    print(
        f"eager ms {M}x{K}->{N}: bf16 {bench(lambda: lin(xx)):.3f}, fp8 native {bench(lambda: f8(xx)):.3f}, "
        f"nvfp4 emulated {bench(lambda: n4(xx)):.3f}"
    )
    print(
        f"set_weight ms: fp8 {bench(lambda: f8.set_weight(lin.weight), 5):.3f}, "
        f"nvfp4 {bench(lambda: n4.set_weight(lin.weight), 5):.3f}"
    )
    seq = nn.Sequential(*[nn.Linear(3072, 3072) for _ in range(8)]).to(dev, torch.bfloat16)
    apply_precision(seq, "nvfp4", "flux", min_dim=0)
    print(f"load_weights 8x3072^2 nvfp4: {load_weights(seq, seq.state_dict()) * 1e3:.1f} ms")
    f8c, n4c = torch.compile(f8), torch.compile(n4)
    print(
        f"compiled ms: fp8 native {bench(lambda: f8c(xx)):.3f}, nvfp4 emulated {bench(lambda: n4c(xx)):.3f}"
    )
    print("compiled == eager:", torch.equal(f8c(xx), f8(xx)), torch.equal(n4c(xx), n4(xx)))
    for cls, name in ((Fp8Linear, "fp8"), (Nvfp4Linear, "nvfp4")):
        small = cls.from_linear(nn.Linear(256, 128, device=dev))
        xs = torch.randn(64, 256, device=dev)
        print(name, "compiled vs eager max diff (small):", (torch.compile(small)(xs) - small(xs)).abs().max().item())
for shape in [(4096, 2240), (64, 256)]:
    x = (torch.randn(shape, generator=g) ** 3).bfloat16().cuda()
    qs, gg = nvfp4.quantize_blocks(x)
    qc, gc = torch.compile(nvfp4.quantize_blocks)(x)
    q8, s8 = fp8.quantize_rows(x)
    q8c, s8c = torch.compile(fp8.quantize_rows)(x)
    print(
        shape, "quantizers compiled == eager: nvfp4", torch.equal(qs, qc), torch.equal(gg, gc),
        "fp8", torch.equal(q8.float(), q8c.float()), torch.equal(s8, s8c),
        "| CUDA == CPU:", torch.equal(qs.cpu(), nvfp4.quantize_blocks(x.cpu())[0]),
        torch.equal(q8.float().cpu(), fp8.quantize_rows(x.cpu())[0].float()),
    )
