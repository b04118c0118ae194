"""Temporary: compiled vs eager quantizers and linears, small and large shapes."""

import torch

from workers.precision import Fp8Linear, Nvfp4Linear, fp8, nvfp4

g = torch.Generator().manual_seed(0)
for shape in [(64, 256), (4096, 2240), (3, 48)]:
    x = (torch.randn(shape, generator=g) ** 3).bfloat16().cuda()
    qs, gg = nvfp4.quantize_blocks(x)
    qc, gc = torch.compile(nvfp4.quantize_blocks)(x)
    q8, s8 = fp8.quantize_rows(x)
    q8c, s8c = torch.compile(fp8.quantize_rows)(x)
    print(shape, "compiled == eager: nvfp4", torch.equal(qs, qc), torch.equal(gg, gc),
          "fp8", torch.equal(q8.float(), q8c.float()), torch.equal(s8, s8c))
    for cls in (Fp8Linear, Nvfp4Linear):
        lin = cls.from_linear(torch.nn.Linear(shape[1], 128, device="cuda"))
        d = (torch.compile(lin)(x.float()) - lin(x.float())).abs().max().item()
        print("   ", cls.__name__, "compiled - eager max abs:", d)
        torch._dynamo.reset()
