"""aux.skip_tuning's smoke preset end to end through orchestration.aux_runner."""

from __future__ import annotations

import json
import math

from orchestration.aux_runner import build_config, run_aux


def test_skip_tuning_smoke_end_to_end(tmp_path):
    out = tmp_path / "skip_tuning"
    run_aux("skip_tuning", build_config("skip_tuning", {"preset": "smoke"}), out, show_progress=False)
    results = json.loads((out / "results.json").read_text())
    assert results["method"] == "aux.skip_tuning" and results["preset"] == "smoke"
    assert results["rho_1_bit_exact"] is True and math.isfinite(results["fd_train_vs_test"])
    for arm in results["arms"]:
        assert arm["nfe_measured"] == arm["nfe"] == 3
        for key in ("fd_a_baseline", "fd_a_tuned", "fd_b_baseline", "fd_b_tuned", "mmd_b_baseline", "mmd_b_tuned"):
            assert math.isfinite(arm[key]), key
        assert arm["fd_a_tuned"] <= arm["fd_a_baseline"]  # the search can always keep rho = (1, 1)
        assert len(arm["grid_fd"]) == 4 and all(math.isfinite(v) for v in arm["grid_fd"].values())
        assert arm["fd_delta_ci"][0] <= arm["fd_delta_ci"][1]
    assert {(r["rho_top"], r["t"]) for r in results["loss_vs_rho"]} >= {(0.8, 300), (1.0, 300)}
    assert all(math.isfinite(r["pixel_mse"]) and math.isfinite(r["feature_mse"]) for r in results["loss_vs_rho"])
    assert len(results["skip_norms"]) == 6
    for plot in ("rho_grid_fd.png", "loss_vs_rho.png", "samples.png", "skip_norms.png"):
        assert (out / plot).stat().st_size > 0
    report = (out / "report.md").read_text()
    assert "## Sample quality" in report and "![loss vs rho](loss_vs_rho.png)" in report
