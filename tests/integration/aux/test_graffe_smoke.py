"""aux.graffe's smoke preset end to end through orchestration.aux_runner."""

from __future__ import annotations

import json
import math

from orchestration.aux_runner import build_config, run_aux


def test_graffe_smoke_end_to_end(tmp_path):
    out = tmp_path / "graffe"
    run_aux("graffe", build_config("graffe", {"preset": "smoke"}), out, show_progress=False)
    results = json.loads((out / "results.json").read_text())
    assert results["method"] == "aux.graffe" and results["preset"] == "smoke"
    for task in ("node", "graph"):
        summary = results["tasks"][task]
        for arm in ("raw features", "random-init encoder", "GraphMAE", "Graffe", "Graffe, z shuffled"):
            acc = summary["accuracy"][arm]["mean"]
            assert isinstance(acc, float) and 0.0 <= acc <= 1.0
        for row in summary["dsm"]:
            assert all(math.isfinite(row[k]) for k in ("Graffe", "unconditional", "MI gap per node (nats)"))
        for plot in (f"probe_{task}.png", f"dsm_{task}.png", f"curve_{task}.png"):
            assert (out / plot).stat().st_size > 0
        assert (out / f"encoder_{task}" / "encoder.pt").is_file()
    report = (out / "report.md").read_text()
    assert "Linear-probe test accuracy" in report and "![probe accuracy](probe_node.png)" in report
