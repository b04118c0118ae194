"""`solrl bench` end to end at toy size on CPU (the real numbers come from GPU runs in docs/results/)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from orchestration.cli import app

TOY = ["--arch", "sd35_medium", "--device", "cpu", "--repeats", "1", "--arch-set", "num_layers=1",
       "--arch-set", "dual_attention_layers=[0]"]


def test_bench_rollout_writes_json_and_markdown(tmp_path):
    out = tmp_path / "rollout"
    result = CliRunner().invoke(app, ["bench", "rollout", *TOY, "--resolution", "128", "--steps", "2", "--batch", "2",
                                      "--no-compile", "--modes", "diffusers-eager-bf16,engine-bf16,engine-fp8",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.with_suffix(".json").read_text())
    assert [r["mode"] for r in data["rows"]] == ["diffusers-eager-bf16", "engine-bf16", "engine-fp8"]
    assert all(r["images_per_second"] > 0 and r["tflops_achieved"] > 0 for r in data["rows"])
    for key in ("date", "command", "torch", "device"):
        assert data["environment"][key]
    assert "| engine-fp8 |" in out.with_suffix(".md").read_text()


def test_bench_sync(tmp_path):
    out = tmp_path / "sync"
    result = CliRunner().invoke(app, ["bench", "sync", *TOY, "--precisions", "fp8", "--lora-rank", "4",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert {r["update"] for r in rows} == {"lora_r4", "full"} and all(r["seconds"] > 0 for r in rows)


def test_bench_iteration_phases(tmp_path):
    out = tmp_path / "iteration"
    result = CliRunner().invoke(app, ["bench", "iteration", *TOY, "--resolution", "64", "--candidates", "8",
                                      "--selected", "4", "--explore-steps", "2", "--train-steps", "3",
                                      "--sample-batch", "4", "--lora-rank", "2", "--no-compile", "--small-reward",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = {r["scheme"]: r for r in json.loads(out.with_suffix(".json").read_text())["rows"]}
    assert set(rows) == {"solrl", "naive_scaling", "diffusionnft"}
    assert set(rows["solrl"]["phases"]) == {"stage1_lowp_sample", "reward_candidates", "stage2_bf16_regen",
                                            "reward_selected", "learner_step", "weight_refresh"}
    assert all(v > 0 for r in rows.values() for v in r["phases"].values())
    assert "Sol-RL vs naive_scaling" in out.with_suffix(".md").read_text()


def test_bench_iteration_schemes_option(tmp_path):
    out = tmp_path / "iteration2"
    args = ["bench", "iteration", *TOY, "--resolution", "64", "--candidates", "8", "--selected", "4",
            "--explore-steps", "2", "--train-steps", "2", "--sample-batch", "4", "--lora-rank", "2", "--no-compile",
            "--small-reward", "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--schemes", "solrl,naive_scaling"])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert [r["scheme"] for r in rows] == ["solrl", "naive_scaling"]
    bad = CliRunner().invoke(app, [*args, "--schemes", "solrl,grpo"])
    assert bad.exit_code != 0 and "unknown ['grpo']" in bad.output
    bad_scope = CliRunner().invoke(app, [*args, "--compile-scope", "layers"])
    assert bad_scope.exit_code != 0 and "--compile-scope must be full or blocks" in bad_scope.output
    bad_kernel = CliRunner().invoke(app, [*args, "--learner-attention", "xformers"])
    assert bad_kernel.exit_code != 0 and "Invalid value for '--learner-attention'" in bad_kernel.output
    assert "xformers" in bad_kernel.output


def test_bench_fidelity_decomposes_the_proxy(tmp_path, tiny_paths):
    """`solrl bench fidelity` on the quickstart config shrunk: a proxy identical to the reference ranks exactly like
    it (so seeds and prompts line up), a few-step NVFP4 proxy gets a row of its own, and a bad setting is refused
    with the option named."""
    out = tmp_path / "fidelity"
    shrink = ["--set", "rollout.num_candidates=8", "--set", "regen.num_selected=4", "--set", "rollout.batch_size=8",
              "--set", "model.device=cpu"]
    args = ["bench", "fidelity", "-c", "configs/quickstart.yaml", *shrink, "--prompts", "2", "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--proxies", "bf16:10,nvfp4:3"])
    assert result.exit_code == 0, result.output
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["reference"] == "bf16, 10 steps" and data["candidates"] == 8
    same, nvfp4 = data["rows"]
    assert same["spearman"] == 1.0 and same["topk_overlap"] == 1.0 and same["best_half_mean_true_rank"] == 1.5
    assert nvfp4["setting"] == "nvfp4, 3 steps" and -1.0 <= nvfp4["spearman"] <= 1.0
    assert nvfp4["reward_mean"] != same["reward_mean"]
    assert "| nvfp4, 3 steps |" in out.with_suffix(".md").read_text()
    bad = CliRunner().invoke(app, [*args, "--proxies", "fp16:8"])
    assert bad.exit_code != 0 and "--proxies" in bad.output and "fp8:8" in bad.output
