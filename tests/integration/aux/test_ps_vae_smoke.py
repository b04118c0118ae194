"""aux.ps_vae end to end: the smoke preset through orchestration.aux_runner into tmp_path."""

from __future__ import annotations

import json
import math

from orchestration.aux_runner import build_config, run_aux


def test_ps_vae_smoke_end_to_end(tmp_path):
    cfg = build_config("ps_vae", {"preset": "smoke"})
    run_aux("ps_vae", cfg, tmp_path, show_progress=False)
    record = json.loads((tmp_path / "results.json").read_text())
    assert record["method"] == "aux.ps_vae" and record["preset"] == "smoke"
    assert set(record["ladder"]) == {"rae", "s_vae", "p_vae", "ps_vae"}
    for rung, metrics in record["ladder"].items():
        for key in ("psnr", "ssim", "linear_probe", "probe_10shot", "gen_accuracy", "gen_frechet", "edit_psnr", "shift"):
            assert math.isfinite(metrics[key]), (rung, key, metrics[key])
    assert record["ladder"]["ps_vae"]["encoder_changed"] == 1.0  # stage 2 moved the encoder
    assert record["ladder"]["s_vae"]["encoder_changed"] == 0.0  # stage 1 did not
    assert record["ladder"]["ps_vae"]["kl_per_element"] > 0
    for arm in record["toy"].values():
        assert math.isfinite(arm["top5_nn_distance"])
    report = (tmp_path / "report.md").read_text()
    assert "RAE -> S-VAE -> P-VAE -> PS-VAE" in report
    for png in ("toy_off_manifold.png", "ladder_metrics.png", "reconstructions.png", "samples.png"):
        assert (tmp_path / png).stat().st_size > 0 and f"]({png})" in report
