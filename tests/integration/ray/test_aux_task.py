"""`solrl aux run` without --in-process: the experiment as a Ray task on the cluster, same outputs."""

from __future__ import annotations

import json

from orchestration.aux_runner import build_config, run_aux_on_ray


def test_aux_method_runs_as_a_ray_task(ray_cluster, tmp_path):
    cfg = build_config("vadd", {"preset": "smoke"})
    record = run_aux_on_ray("vadd", cfg, tmp_path, show_progress=False)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert record["method"] == saved["method"] == "aux.vadd" and saved["preset"] == "smoke"
    assert saved["provenance"]["hardware"] and saved["wall_seconds"] > 0
    assert (tmp_path / "report.md").read_text().startswith("# aux.vadd")
    assert json.loads((tmp_path / "config.json").read_text())["preset"] == "smoke"
