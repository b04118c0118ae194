"""aux.fast_dllm smoke preset end to end through orchestration.aux_runner.run_aux."""

from __future__ import annotations

import json
import math
from pathlib import Path

from orchestration.aux_runner import build_config, run_aux
from workers.aux.fast_dllm.serve import DllmGenerator, GenerateOptions


def test_fast_dllm_smoke_end_to_end(tmp_path: Path) -> None:
    record = run_aux("fast_dllm", build_config("fast_dllm", {"preset": "smoke"}), tmp_path, show_progress=False)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["method"] == "aux.fast_dllm" and record["preset"] == "smoke"
    names = [row["variant"] for row in saved["variants"]]
    assert names[0].startswith("baseline") and names[-1].startswith("dual + parallel")
    for row in saved["variants"]:
        for key in ("accuracy", "NFE", "tokens/step", "tok/s (all)", "query tokens", "QK pairs (M)"):
            assert math.isfinite(row[key]), (row["variant"], key)
    assert saved["tau1_reproduces_baseline"] is True
    assert saved["theorem1"]["premise_held_mismatch"] == 0
    report = (tmp_path / "report.md").read_text()
    for png in ("threshold_vs_fixed.png", "kv_drift.png", "cost.png"):
        assert (tmp_path / png).stat().st_size > 0 and f"({png})" in report
    # The saved model serves text (the core of the Serve endpoint).
    gen = DllmGenerator(tmp_path / "model")
    out = gen.generate(["12+34="], GenerateOptions(gen_length=16, block_length=8))
    assert len(out["completions"]) == 1 and out["nfe"] >= 2
