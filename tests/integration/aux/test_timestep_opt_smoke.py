"""aux.timestep_opt's smoke preset end to end through orchestration.aux_runner."""

from __future__ import annotations

import json
import math

from orchestration.aux_runner import build_config, run_aux


def test_timestep_opt_smoke_end_to_end(tmp_path):
    out = tmp_path / "timestep_opt"
    run_aux("timestep_opt", build_config("timestep_opt", {"preset": "smoke"}), out, show_progress=False)
    results = json.loads((out / "results.json").read_text())
    assert results["method"] == "aux.timestep_opt" and results["preset"] == "smoke"
    runs = [r for r in results["rows"] if r["solver"] != "reference"]
    assert {r["problem"] for r in runs} == {"gmm_vp", "gmm_flow"}
    assert {r["grid"] for r in runs if r["problem"] == "gmm_vp"} >= {"unif_t", "unif", "edm", "opt"}
    for r in results["rows"]:
        assert math.isfinite(r["dist_to_ref"]) and math.isfinite(r["metric"])
    for r in results["optimizer"]:
        assert math.isfinite(r["opt seconds"]) and r["F(opt)"] < r["F(unif)"]  # the objective went down
    assert 0.0 < results["optimizer_max_seconds"] < 15.0
    for cell in results["wins"].values():
        assert math.isfinite(cell["opt"]) and math.isfinite(cell["best_baseline_value"])
    for plot in ("error_vs_nfe.png", "grids.png"):
        assert (out / plot).stat().st_size > 0
    report = (out / "report.md").read_text()
    assert "Distance to the reference solution" in report and "![error vs NFE](error_vs_nfe.png)" in report
