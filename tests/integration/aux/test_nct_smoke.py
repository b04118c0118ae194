"""aux.nct's smoke preset end to end through orchestration.aux_runner."""

from __future__ import annotations

import json
import math

from orchestration.aux_runner import build_config, run_aux


def test_nct_smoke_end_to_end(tmp_path):
    out = tmp_path / "nct"
    run_aux("nct", build_config("nct", {"preset": "smoke"}), out, show_progress=False)
    results = json.loads((out / "results.json").read_text())
    assert results["method"] == "aux.nct" and results["preset"] == "smoke"
    assert results["generator_unchanged"] is True
    metrics = results["metrics"]
    assert set(metrics) == {"base (no adapter, chance)", "nct", "no_consistency", "naive_denoising"}
    for row in metrics.values():
        for key in ("consistency_error", "fd_vs_base", "fd_vs_test", "coupled_boundary_mse"):
            assert math.isfinite(row[key]), key
    assert math.isfinite(results["lambda_final"]) and len(results["lambda_trace"]) == 3
    for plot in ("samples.png", "dual.png", "tradeoff.png"):
        assert (out / plot).stat().st_size > 0
    report = (out / "report.md").read_text()
    assert "![samples](samples.png)" in report and "| nct |" in report
