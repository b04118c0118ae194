"""The compositional benchmark end to end at toy size: pretrain, load, sample, score, RL on the result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from orchestration.cli import app
from orchestration.config import load_config
from orchestration.entrypoint import main as entrypoint_main
from orchestration.jobs import JobSpecError, PretrainConfig, validate_job
from orchestration.pretrain import load_pretrain_config
from orchestration.runner import run_training
from workers.models.loading import load_model

ROOT = Path(__file__).parents[2]
CONFIGS = ROOT / "configs" / "compositional"
# The quick preset, shrunk to seconds: every key below also exists in the preset file.
TOY = ["device=cpu", "model.num_layers=2", "model.head_dim=16", "model.text_hidden=32", "model.text_layers=1",
       "model.text_hidden_2=16", "train.steps=40", "train.batch_size=16", "train.warmup_steps=5",
       "train.log_every=5", "train.ema_decay=0.9", "eval.every=20", "eval.num_prompts=6", "eval.train_prompts=6",
       "eval.seeds_per_prompt=1", "eval.num_steps=3"]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> tuple[Path, dict]:
    """``solrl pretrain`` as a user runs it (a real process), on the quick preset shrunk by --set."""
    out = tmp_path_factory.mktemp("pretrain") / "run"
    args = [arg for item in TOY for arg in ("--set", item)]
    proc = subprocess.run([sys.executable, "-m", "orchestration.cli", "pretrain", "--config",
                           str(CONFIGS / "pretrain_quick.yaml"), "--out", str(out), *args],
                          cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads(proc.stdout)


def test_pretrain_presets_validate():
    for name in ("pretrain.yaml", "pretrain_quick.yaml"):
        cfg = load_pretrain_config(CONFIGS / name)
        assert isinstance(cfg, PretrainConfig)
    assert load_pretrain_config(CONFIGS / "pretrain.yaml").model.image_size == 64


def test_rl_presets_validate_on_a_pretrained_model(pretrained):
    out, _ = pretrained
    for path in sorted(CONFIGS.glob("*.yaml")):
        if not path.name.startswith("pretrain"):
            cfg = load_config(path, [f"model.path={out / 'model'}"])
            assert cfg.prompts.source == "builtin:compositional" and cfg.rollout.min_dim == 0
            assert cfg.reward.weights["geneval_rules"] == 1.0


def test_pretrain_learns_and_writes_its_files(pretrained):
    out, summary = pretrained
    print(f"toy pretraining: loss {summary['loss_first']:.3f} -> {summary['loss_last']:.3f}, "
          f"held-out {summary['heldout_overall']:.3f}, {summary['seconds']:.1f} s")
    assert summary["steps"] == 40
    assert summary["loss_last"] < 0.95 * summary["loss_first"]
    assert summary["vae_max_error"] < 1e-4 and summary["vae_recon_accuracy"] == 1.0
    assert 0.0 <= summary["heldout_overall"] <= 1.0
    assert set(summary["heldout_accuracy_by_category"]) == {"single_object", "two_object", "counting", "colors",
                                                            "position", "color_attr"}
    for name in ("summary.json", "metrics.jsonl", "samples.png", "samples.txt", "dataset_samples.png", "config.yaml"):
        assert (out / name).is_file(), name
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records if "eval_overall" in r] == [20, 40]
    info = json.loads((out / "model" / "solrl_model.json").read_text())
    assert info["image_size"] == 32 and info["steps"] == 40


def test_checkpoint_loads_through_load_model(pretrained):
    out, _ = pretrained
    adapter = load_model(out / "model", height=32, width=32, max_sequence_length=8)
    assert adapter.family == "sd3" and adapter.latent_shape() == (3, 32, 32)
    assert adapter.vae_scale_factor == 1


def test_sample_and_eval_commands(pretrained, tmp_path):
    out, _ = pretrained
    runner = CliRunner()
    grid = tmp_path / "grid.png"
    result = runner.invoke(app, ["sample", "--model", str(out / "model"), "--prompts", "a red circle",
                                 "--prompts", "a cat", "--out", str(grid), "--seeds", "2", "--num-steps", "3",
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert grid.is_file() and payload["not_scored"] == ["a cat"]
    assert payload["scores"]["a red circle"]["category"] == "colors"
    result = runner.invoke(app, ["eval", "--model", str(out / "model"), "--split", "heldout", "--num-prompts", "6",
                                 "--seeds", "1", "--num-steps", "3", "--out", str(tmp_path / "eval"),
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["num_images"] == 6 and len(payload["accuracy_by_category"]) == 6
    assert (tmp_path / "eval" / "eval_samples.png").is_file()
    bad = runner.invoke(app, ["eval", "--model", str(tmp_path), "--device", "cpu"])
    assert bad.exit_code == 2


def test_rl_iterations_on_the_pretrained_model(pretrained, tmp_path):
    """Sol-RL (the compositional preset, shrunk) trains the pretrained model with the evaluator's reward."""
    out, _ = pretrained
    overrides = [f"model.path={out / 'model'}", "model.height=32", "model.width=32", "model.device=cpu",
                 "iterations=2", "prompts.per_iteration=2", "prompts.heldout_count=6", "rollout.num_candidates=8",
                 "rollout.num_steps=2", "rollout.batch_size=16", "regen.num_selected=4", "regen.num_steps=3",
                 "regen.batch_size=8", "train.micro_batch_size=8", "eval.every=0", "eval.num_steps=3",
                 "eval.seeds_per_prompt=1", "lora.rank=4", "lora.alpha=8", "checkpoint.every=0"]
    cfg = load_config(CONFIGS / "solrl_nvfp4.yaml", overrides)
    run_dir = tmp_path / "rl"
    summary = run_training(cfg, run_dir, show_progress=False, mode="in-process")
    assert summary["iterations"] == 2 and 0.0 <= summary["eval_last"] <= 1.0
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in lines if "reward_mean" in r]
    assert len(train) == 2 and all(0.0 <= r["reward_geneval_rules"] <= 1.0 for r in train)
    assert "eval_reward_geneval_rules_strict" in lines[-1]
    # Held-out scores per GenEval category: 6 prompts round-robin over the 6 categories, one each.
    per_category = {k: v for k, v in lines[-1].items() if k.startswith("eval_geneval_rules_strict_")}
    assert len(per_category) == 6 and all(v in (0.0, 1.0) for v in per_category.values())
    partial = [v for k, v in lines[-1].items() if k.startswith("eval_geneval_rules_") and "strict" not in k]
    assert sum(partial) / 6 == pytest.approx(lines[-1]["eval_reward_geneval_rules"], abs=1e-6)
    # The eval command reads an RL run too: its latest checkpoint's EMA weights.
    result = CliRunner().invoke(app, ["eval", "--model", str(run_dir), "--num-prompts", "6", "--seeds", "1",
                                      "--num-steps", "3", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "RL run" in json.loads(result.stdout)["model"]


def test_pretrain_job_kind(tmp_path):
    with pytest.raises(JobSpecError, match="config.train.stepz"):
        validate_job("pretrain", {"train": {"stepz": 1}})
    kind, cfg = validate_job("pretrain", {"device": "cpu"})
    assert isinstance(cfg, PretrainConfig) and kind.resources(cfg).num_gpus == 0
    assert validate_job("pretrain", {})[0].resources(validate_job("pretrain", {})[1]).num_gpus == 1
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    config = load_pretrain_config(CONFIGS / "pretrain_quick.yaml",
                                  [*TOY, "train.steps=2", "eval.every=0", "eval.num_prompts=2",
                                   "eval.train_prompts=0"]).model_dump(mode="json")
    (job_dir / "spec.json").write_text(json.dumps({"id": "j1", "kind": "pretrain", "config": config}))
    assert entrypoint_main([str(job_dir)]) == 0
    assert (job_dir / "model" / "model_index.json").is_file() and (job_dir / "summary.json").is_file()


def test_pretraining_resumes_after_a_crash_to_the_same_weights(tmp_path, monkeypatch):
    """A run that dies mid-way and is resumed with --resume ends with the weights of an uninterrupted run
    (CPU, deterministic): the state file carries weights, EMA, optimizer, noise generator and the step."""
    from orchestration import pretrain as pretrain_module
    from orchestration.pretrain import PretrainError, load_pretrain_config, run_pretrain

    toy = [*TOY, "train.steps=12", "train.checkpoint_every=5", "eval.every=0", "eval.train_prompts=0"]
    cfg = load_pretrain_config(CONFIGS / "pretrain_quick.yaml", toy)
    straight = run_pretrain(cfg, tmp_path / "straight", show_progress=False)

    real_step, calls = pretrain_module.train_step, {"n": 0}

    def dies_at_step_8(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt("simulated crash")
        return real_step(*args, **kwargs)

    monkeypatch.setattr(pretrain_module, "train_step", dies_at_step_8)
    with pytest.raises(KeyboardInterrupt):
        run_pretrain(cfg, tmp_path / "crashed", show_progress=False)
    monkeypatch.setattr(pretrain_module, "train_step", real_step)
    with pytest.raises(PretrainError, match="--resume"):
        run_pretrain(cfg, tmp_path / "crashed", show_progress=False)  # never overwrites a run silently
    resumed = run_pretrain(cfg, tmp_path / "crashed", show_progress=False, resume=True)

    assert resumed["resumed_from_step"] == 5 and resumed["steps"] == straight["steps"] == 12
    a = load_file(tmp_path / "straight" / "model" / "transformer" / "diffusion_pytorch_model.safetensors")
    b = load_file(tmp_path / "crashed" / "model" / "transformer" / "diffusion_pytorch_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["heldout_score_mean"] == straight["heldout_score_mean"]
    # Resuming may lengthen training, not change the model or the data.
    with pytest.raises(PretrainError, match="model"):
        run_pretrain(load_pretrain_config(CONFIGS / "pretrain_quick.yaml", [*toy, "model.num_layers=3"]),
                     tmp_path / "crashed", show_progress=False, resume=True)


def test_base_archive_round_trip(pretrained, tmp_path):
    """solrl base pack / unpack: large matrices come back within half an int8 step of their row's scale, the rest
    (the identity VAE included) exactly; the unpacked model loads and samples like the original."""
    from orchestration.base_archive import MANIFEST
    from orchestration.pretrain import load_for_sampling
    from workers.compositional.model import generate_images

    out, _ = pretrained
    runner = CliRunner()
    archive, unpacked = tmp_path / "archive", tmp_path / "base"
    result = runner.invoke(app, ["base", "pack", "--model", str(out / "model"), "--out", str(archive)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((archive / MANIFEST).read_text())
    assert manifest["quantized_elements"] > 0 and manifest["float32_elements"] > 0
    result = runner.invoke(app, ["base", "unpack", "--archive", str(archive), "--out", str(unpacked)])
    assert result.exit_code == 0, result.output
    for original in (out / "model").rglob("*.safetensors"):
        before, after = load_file(original), load_file(unpacked / original.relative_to(out / "model"))
        assert before.keys() == after.keys()
        for name, tensor in before.items():
            restored = after[name]
            if original.parent.name == "vae" or tensor.numel() < 4096 or tensor.ndim < 2:
                assert torch.equal(restored, tensor.float()), name
            else:
                row_max = tensor.float().reshape(tensor.shape[0], -1).abs().amax(1)
                error = (restored - tensor.float()).reshape(tensor.shape[0], -1).abs().amax(1)
                assert bool((error <= row_max / 254 + 1e-7).all()), name
    images = []
    for model in (out / "model", unpacked):
        adapter, _, _ = load_for_sampling(model, device="cpu")
        images.append(generate_images(adapter, ["a red circle", "two squares"], [1, 2], num_steps=3))
    assert float((images[0] - images[1]).abs().mean()) < 0.05
    # A damaged archive is refused, and nothing is written over an existing folder.
    damaged = next(archive.rglob("*.safetensors"))
    damaged.write_bytes(damaged.read_bytes()[:-8] + b"\0" * 8)
    result = runner.invoke(app, ["base", "unpack", "--archive", str(archive), "--out", str(tmp_path / "again")])
    assert result.exit_code == 2 and "checksum" in result.output
    result = runner.invoke(app, ["base", "pack", "--model", str(out / "model"), "--out", str(archive)])
    assert result.exit_code == 2 and "exists" in result.output


def test_profile_pretrain_script_tables_each_variant(tmp_path):
    """scripts/profile_pretrain.py (the GPU session's step profile) on the CPU: one row per variant, a failing
    variant reported in its row instead of ending the run, the operator table of the first."""
    out = tmp_path / "profile"
    tiny = "model.num_layers=1 model.head_dim=16 model.text_hidden=32 model.text_layers=1 train.batch_size=4"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "profile_pretrain.py"), "--out", str(out),
                           "--device", "cpu", "--warmup", "1", "--steps", "2",
                           "--variants", f"{tiny}|{tiny} train.batch_size=8|train.compile_mode=bogus"],
                          cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = (out / "profile_pretrain.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| model.") or line.startswith("| train.")]
    assert len(rows) == 3 and "| 4 |" in rows[0] and "| 8 |" in rows[1]
    assert "failed: ConfigError" in rows[2] and "train.compile_mode" in rows[2]
    assert "## Top operators" in text and "aten::" in text


def test_committed_base_matches_the_preset_and_samples(tmp_path):
    """assets/compositional_base (the GPU-trained base every comparison run starts from) unpacks with its checksums,
    has the full preset's architecture, and samples finite images on the CPU."""
    from orchestration.pretrain import load_for_sampling
    from workers.compositional.model import generate_images

    archive = ROOT / "assets" / "compositional_base"
    if not archive.is_dir():
        pytest.skip("assets/compositional_base is absent (a checkout without the committed base)")
    result = CliRunner().invoke(app, ["base", "unpack", "--archive", str(archive), "--out", str(tmp_path / "base")])
    assert result.exit_code == 0, result.output
    spec = json.loads((tmp_path / "base" / "solrl_model.json").read_text())["spec"]
    preset = load_pretrain_config(CONFIGS / "pretrain.yaml").model.model_dump()
    assert {k: preset[k] for k in spec} == spec
    adapter, _, _ = load_for_sampling(tmp_path / "base", device="cpu")
    images = generate_images(adapter, ["a red circle", "two blue squares"], [1, 2], num_steps=3)
    assert images.shape[-2:] == (64, 64) and bool(torch.isfinite(images).all())
