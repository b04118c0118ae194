"""aux.adversarial_train smoke preset end to end through the aux runner (CPU, seconds)."""

from __future__ import annotations

import json
import math

from orchestration.aux_runner import build_config, run_aux


def test_smoke_preset_writes_finite_results_report_and_plots(tmp_path):
    cfg = build_config("adversarial_train", {"preset": "smoke"})
    run_aux("adversarial_train", cfg, tmp_path, show_progress=False)
    res = json.loads((tmp_path / "results.json").read_text())
    models = {r["model"] for r in res["fd"]}
    assert models == {"base", *cfg.arms}
    cells = {(r["sampler"], r["nfe"]) for r in res["fd"]}
    assert cells == {(s, n) for s in cfg.eval.samplers for n in cfg.eval.nfe}
    assert all(math.isfinite(r["fd"]) and r["fd"] > 0 for r in res["fd"] + res["cm_fd"])
    assert {r["model"] for r in res["cm_fd"]} == {"cd", "cd_at"}
    assert all(math.isfinite(r["mean_w1_norm"]) for r in res["mismatch"])
    assert all(math.isfinite(r["abs_diff"]) for r in res["fd_seed_spread"])
    assert math.isfinite(res["fd_data_floor"]) and res["fd_data_floor"] > 0  # train vs held-out test differ
    train = {r["arm"]: r for r in res["train"]}
    assert {r["updates"] for r in train.values() if r["arm"] in cfg.arms} == {cfg.train.updates}  # matched
    assert train["at"]["mean_delta_norm"] > 0 and train["standard"]["mean_delta_norm"] == 0
    assert train["at"]["batches"] * cfg.adv.steps == train["standard"]["batches"]
    report = (tmp_path / "report.md").read_text()
    for name in res["plots"]:
        assert (tmp_path / name).stat().st_size > 0 and f"]({name})" in report
