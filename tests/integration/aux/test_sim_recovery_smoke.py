"""aux.sim_recovery's smoke preset end to end through orchestration.aux_runner."""

from __future__ import annotations

import json
import math

from orchestration.aux_runner import build_config, run_aux

ARMS = {"linear", "sim_dms", "sim_dmfis", "sim_dmis"}


def test_sim_recovery_smoke_end_to_end(tmp_path):
    out = tmp_path / "sim_recovery"
    run_aux("sim_recovery", build_config("sim_recovery", {"preset": "smoke"}), out, show_progress=False)
    results = json.loads((out / "results.json").read_text())
    assert results["method"] == "aux.sim_recovery" and results["preset"] == "smoke"
    assert {(r["link"], r["arm"]) for r in results["rows"]} == {(link, a) for link in ("sign", "cubic") for a in ARMS}
    for r in results["rows"]:
        assert math.isfinite(r["psnr"]) and -1.0 <= r["cosine"] <= 1.0
    nfe = {r["arm"]: r["nfe"] for r in results["rows"]}
    assert nfe == {"linear": 0, "sim_dms": 2, "sim_dmfis": 4, "sim_dmis": 4}  # smoke: 2 inversion + 2 sampling steps
    assert all(math.isfinite(v) for v in results["checks"].values() if not isinstance(v, str))
    for plot in ("psnr_vs_m.png", "cosine_vs_m.png", "examples.png"):
        assert (out / plot).stat().st_size > 0
    report = (out / "report.md").read_text()
    assert "SIM-DMIS" in report and "![PSNR vs m](psnr_vs_m.png)" in report
