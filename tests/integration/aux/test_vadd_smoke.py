"""aux.vadd smoke preset end to end through orchestration.aux_runner.run_aux."""

from __future__ import annotations

import json
import math
from pathlib import Path

from orchestration.aux_runner import build_config, run_aux


def test_vadd_smoke_end_to_end(tmp_path: Path) -> None:
    record = run_aux("vadd", build_config("vadd", {"preset": "smoke"}), tmp_path, show_progress=False)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["method"] == "aux.vadd" and record["preset"] == "smoke"
    for row in saved["checkerboard"]["js"]:
        assert 0 <= row["JS MDLM"] <= math.log(2) + 1e-9 and 0 <= row["JS VADD"] <= math.log(2) + 1e-9
    for row in saved["digits"]["frechet"]:
        assert math.isfinite(row["FD MDLM"]) and math.isfinite(row["FD VADD"])
    assert all(math.isfinite(v) and v > 0 for v in saved["digits"]["test_bpd"].values())
    assert 0 <= saved["checkerboard"]["guards"]["active_units"] <= saved["checkerboard"]["guards"]["latent_dim"]
    report = (tmp_path / "report.md").read_text()
    assert "## (i) Tokenised checkerboard" in report and "## (ii) scikit-learn digits" in report
    for png in ("checkerboard_samples.png", "checkerboard_js.png", "digits_frechet.png", "digits_samples.png"):
        assert (tmp_path / png).stat().st_size > 0 and f"({png})" in report
