"""Count torch.compile graph breaks of the engine per precision (a few SD3.5-M blocks, 512 px)."""

import sys

import torch

from orchestration.bench.arch import build_adapter, random_conditioning
from orchestration.bench.rollout import engine_model


def graph_breaks(precision: str) -> str:
    model = engine_model("sd35_medium", precision, torch.device("cuda"), {"num_layers": 2, "dual_attention_layers": [0]})
    adapter = build_adapter("sd35_medium", model, 512)
    cond = random_conditioning("sd35_medium", 2, device="cuda", dtype=torch.bfloat16)
    x = torch.randn(2, *adapter.latent_shape(), device="cuda", dtype=torch.bfloat16)
    t = torch.full((2,), 0.5, device="cuda")
    with torch.no_grad():
        explanation = torch._dynamo.explain(lambda z: adapter.velocity(z, t, cond, transformer=model))(x)
    lines = [f"{precision}: graphs={explanation.graph_count} breaks={explanation.graph_break_count}"]
    lines += ["    " + str(reason.reason)[:300] for reason in explanation.break_reasons[:5]]
    torch._dynamo.reset()
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write("\n".join(graph_breaks(p) for p in sys.argv[1:] or ["bf16", "fp8", "nvfp4"]) + "\n")
