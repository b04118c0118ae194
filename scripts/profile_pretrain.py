"""Where a pretraining step of the compositional base model spends its time, and which settings make it faster.

On a GPU (the `profile-pretrain` step of scripts/gpu_issue7.sh), from the repo root:
    python3 scripts/profile_pretrain.py --out DIR [--variants "base|train.compile=false|train.batch_size=256"]
Each variant is a "|"-separated list of space-separated ``key=value`` overrides of
configs/compositional/pretrain.yaml. For each, the script times steps on pre-rendered batches (data excluded)
and the data pipeline alone, counts torch.compile graph breaks, and for the first variant writes a
torch.profiler table of the top operators. It writes ``profile_pretrain.md`` and prints it.
It runs on a CPU too (slowly; compilation is GPU-only there), which is how it is tested.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from orchestration.pretrain import load_pretrain_config, start_training, train_step
from workers.compositional.captions import split_captions
from workers.compositional.dataset import SceneStream
from workers.compositional.model import build_pipeline, set_latent_scaling

CONFIG = Path(__file__).parents[1] / "configs" / "compositional" / "pretrain.yaml"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def profile_variant(overrides: list[str], *, warmup: int, steps: int, device: str, trace: bool) -> dict:
    cfg = load_pretrain_config(CONFIG, [f"device={device}", *overrides])
    dev = torch.device(device)
    pipeline = build_pipeline(cfg.spec(), cfg.seed).to(dev)
    stream = SceneStream(split_captions(cfg.split_seed).train, image_size=cfg.model.image_size, seed=cfg.seed,
                         supersample=cfg.supersample, device=dev)
    set_latent_scaling(pipeline.vae, stream.images(0, 256))
    state = start_training(cfg, pipeline)
    batch = cfg.train.batch_size
    sync(dev)
    start = time.perf_counter()
    batches = [stream.batch(i, batch) for i in range(warmup + steps)]
    sync(dev)
    data_seconds = (time.perf_counter() - start) / len(batches)
    import torch._dynamo.utils as dynamo_utils

    dynamo_utils.counters.clear()
    start = time.perf_counter()
    for i in range(warmup):
        train_step(cfg, state, *batches[i], i, 0.0)
    sync(dev)
    warmup_seconds = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(warmup, warmup + steps):
        loss, _ = train_step(cfg, state, *batches[i], i, 0.0)
    sync(dev)
    step_seconds = (time.perf_counter() - start) / steps
    breaks = sum(dynamo_utils.counters["graph_break"].values())
    table = None
    if trace:
        activities = [torch.profiler.ProfilerActivity.CPU]
        if dev.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        with torch.profiler.profile(activities=activities) as prof:
            for i in range(warmup, min(warmup + 5, warmup + steps)):
                train_step(cfg, state, *batches[i], i, 0.0)
            sync(dev)
        sort = "self_cuda_time_total" if dev.type == "cuda" else "self_cpu_time_total"
        table = prof.key_averages().table(sort_by=sort, row_limit=25, max_name_column_width=60)
    return {"variant": " ".join(overrides) or "base", "batch": batch, "step_ms": 1e3 * step_seconds,
            "steps_per_second": 1 / step_seconds, "images_per_second": batch / step_seconds,
            "data_ms": 1e3 * data_seconds, "warmup_s": warmup_seconds, "graph_breaks": breaks,
            "loss": float(loss), "table": table}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--variants", default="base|train.compile=false|train.compile_mode=reduce-overhead|"
                        "train.batch_size=256")
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for index, variant in enumerate(args.variants.split("|")):
        overrides = [] if variant.strip() == "base" else variant.split()
        try:
            rows.append(profile_variant(overrides, warmup=args.warmup, steps=args.steps, device=args.device,
                                        trace=index == 0))
        except Exception as err:  # one failing variant (e.g. out of memory) must not lose the others
            rows.append({"variant": variant, "error": f"{type(err).__name__}: {err}"[:300]})
        shown = {k: v for k, v in rows[-1].items() if k != "table"}
        sys.stdout.write(f"{shown}\n")
        sys.stdout.flush()
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    lines = [f"# Pretraining step profile ({name}, torch {torch.__version__})", "",
             f"`python3 scripts/profile_pretrain.py --variants \"{args.variants}\" --warmup {args.warmup} "
             f"--steps {args.steps}`; steps on pre-rendered batches; data = rendering one batch", "",
             "| variant | batch | ms / step | steps/s | images/s | data ms / batch | warm-up s | graph breaks |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['variant']} | failed: {r['error']} | | | | | | |")
        else:
            lines.append(f"| {r['variant']} | {r['batch']} | {r['step_ms']:.1f} | {r['steps_per_second']:.2f} | "
                         f"{r['images_per_second']:.0f} | {r['data_ms']:.1f} | {r['warmup_s']:.1f} | "
                         f"{r['graph_breaks']} |")
    tables = [r["table"] for r in rows if r.get("table")]
    if tables:
        lines += ["", f"## Top operators, first variant ({min(5, args.steps)} steps)", "", "```", tables[0], "```"]
    text = "\n".join(lines) + "\n"
    (args.out / "profile_pretrain.md").write_text(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
