"""`solrl report convergence`: time-to-reach, speedup, gap, fidelity means and the kept analysis, on
synthetic run folders with hand-computed answers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from orchestration.bench import convergence as cv
from orchestration.cli import app

CATS = cv.CATEGORIES


def write_run(folder: Path, config: dict, records: list[dict]) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    (folder / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    (folder / "summary.json").write_text(json.dumps({"method": config.get("method")}))
    return folder


def eval_rec(iteration: int, seconds: float, score: float, strict: float | None = None) -> dict:
    rec = {"iteration": iteration, "train_seconds": seconds, "eval_reward_mean": score,
           "eval_reward_geneval_rules": score}
    if strict is not None:
        rec["eval_reward_geneval_rules_strict"] = strict
    for i, cat in enumerate(CATS):
        rec[f"eval_geneval_rules_{cat}"] = score + i / 100
        rec[f"eval_geneval_rules_strict_{cat}"] = 0.0
    return rec


def train_recs(iterations: int, seconds: float, extra: dict | None = None) -> list[dict]:
    return [{"iteration": i, "reward_mean": 0.1, "iteration_seconds": seconds, "train_seconds": seconds * (i + 1),
             **(extra or {})} for i in range(iterations)]


def timed(points: list[tuple[float, float]], per_it: float, strict: float = 0.0) -> list[dict]:
    """Train records of ``per_it`` seconds and an eval at each (seconds, score) point."""
    its = round(points[-1][0] / per_it)
    evals = [eval_rec(round(s / per_it), s, y, strict) for s, y in points]
    return sorted(train_recs(its, per_it) + evals, key=lambda r: (r["iteration"], "eval_reward_mean" not in r))


NFT = {"method": "diffusionnft", "rollout": {"num_candidates": 24, "precision": "bf16"},
       "regen": {"num_selected": 24}, "budget_seconds": 100.0}
SOL = {"method": "solrl", "rollout": {"num_candidates": 96, "precision": "fp8"}, "regen": {"num_selected": 24},
       "budget_seconds": 100.0}

# Baseline diffusionnft: finals 0.4 and 0.6 at 100 s -> target 0.5, its time 100 s.
NFT_CURVES = {0: [(0, 0.1), (50, 0.2), (100, 0.4)], 1: [(0, 0.1), (50, 0.3), (100, 0.6)]}
# Sol-RL: seed 1 is evaluated at other times; the seed mean on the grid {0, 20, 30, 40, 60} is
# 0.1, (0.3 + 0.4333)/2, (0.5 + 0.6)/2, (0.7 + 0.6667)/2, 0.8 -> crosses 0.5 between 20 and 30 s.
SOL_CURVES = {0: [(0, 0.1), (20, 0.3), (40, 0.7), (60, 0.8)], 1: [(0, 0.1), (30, 0.6), (60, 0.8)]}


@pytest.fixture()
def session(tmp_path: Path) -> Path:
    root = tmp_path / "h200_2026-01-02"
    for seed, pts in NFT_CURVES.items():
        write_run(root / "compare" / f"diffusionnft_s{seed}", {**NFT, "seed": seed}, timed(pts, 10.0))
    for seed, pts in SOL_CURVES.items():
        fid = [{"fidelity_spearman": v, "fidelity_kendall": v, "fidelity_half_overlap": 0.5,
                "fidelity_best_half_bf16_rank": 8.0, "fidelity_worst_half_bf16_rank": 17.0}
               for v in (0.4, math.nan, None)]
        records = timed(pts, 10.0, strict=0.25 * (seed + 1))
        train = [r for r in records if "iteration_seconds" in r]
        for rec, extra in zip(train, fid * 3, strict=False):
            rec.update(extra)
        write_run(root / "compare" / f"solrl_fp8_s{seed}", {**SOL, "seed": seed}, records)
    audit = train_recs(4, 10.0, {"audit_spearman": 0.2, "audit_kendall": 0.1, "audit_topk_overlap": 0.25,
                                 "audit_bottomk_overlap": 0.75, "audit_best_half_bf16_rank": 20.0,
                                 "audit_worst_half_bf16_rank": 70.0})
    audit[0]["audit_spearman"] = math.nan
    write_run(root / "audit" / "solrl_fp8", {**SOL, "seed": 0}, audit)
    (root / "gpus.txt").write_text("GPU 0: NVIDIA H200 (UUID: GPU-a)\nGPU 1: NVIDIA H200 (UUID: GPU-b)\n")
    (root / "pretrain").mkdir()
    (root / "pretrain" / "summary.json").write_text(json.dumps({
        "steps": 1000, "train_seconds": 60.0, "heldout_overall": 0.125, "heldout_score_mean": 0.25,
        "heldout_accuracy_by_category": dict.fromkeys(CATS, 0.5), "parameters": {"transformer": 10, "vae": 5},
        "checkpoint_bytes": 2_000_000}))
    return root


def stats_of(root: Path) -> dict[str, cv.MethodStats]:
    groups = cv.group(cv.load_session(root).runs)
    return {label: cv.method_stats(label, runs) for label, runs in groups.items()}


def test_labels_seeds_and_order(session: Path):
    stats = stats_of(session)
    assert list(stats) == ["solrl_fp8", "diffusionnft"]
    assert [r.seed for r in stats["solrl_fp8"].runs] == [0, 1]
    assert cv.run_label({"method": "solrl", "rollout": {"precision": "nvfp4"}}) == "solrl_nvfp4"
    assert cv.run_label({"method": "naive_quant", "rollout": {"precision": "fp8"}}) == "naive_quant"
    assert cv.run_label({"method": "solrl", "name": "identity_bf16", "rollout": {"precision": "fp8"}}) == "identity_bf16"
    assert cv.load_session(session).gpu == "2× NVIDIA H200"


def test_time_to_reach_speedup_and_gap(session: Path):
    stats = stats_of(session)
    cmp = cv.compare(stats, "diffusionnft", "diffusionnft")
    assert cmp.target == pytest.approx(0.5)
    assert cmp.baseline_seconds == pytest.approx(100.0)
    mean_20, mean_30 = (0.3 + 0.1 + 0.5 * 20 / 30) / 2, (0.5 + 0.6) / 2  # the seed mean either side of 0.5
    assert cmp.reach["solrl_fp8"] == pytest.approx(20 + (0.5 - mean_20) / (mean_30 - mean_20) * 10)
    assert cmp.reach["solrl_fp8"] == pytest.approx(27.2727, abs=1e-4)
    assert cmp.speedup("solrl_fp8") == pytest.approx(100 / 27.2727, abs=1e-4)
    assert cmp.reach["diffusionnft"] == pytest.approx(100.0)  # its mean curve ends exactly at its final mean
    assert cmp.speedup("diffusionnft") == pytest.approx(1.0)
    assert cmp.gap(stats["solrl_fp8"]) == pytest.approx(60.0)  # (0.8 - 0.5) / 0.5
    rev = cv.compare(stats, "solrl_fp8", "solrl_fp8")
    assert rev.reach["diffusionnft"] is None  # never reaches 0.8
    assert rev.gap(stats["diffusionnft"]) == pytest.approx(-37.5)


def test_first_reach_edges():
    x, y = np.array([0.0, 10.0, 20.0]), np.array([0.2, 0.1, 0.5])
    assert cv.first_reach(x, y, 0.15) == 0.0  # already there at the start
    assert cv.first_reach(x, y, 0.3) == pytest.approx(15.0)  # 10 + (0.3-0.1)/(0.5-0.1) * 10
    assert cv.first_reach(x, y, 0.6) is None


def test_comparison_table_rows(session: Path):
    stats = stats_of(session)
    cmps = {clock: cv.compare(stats, "diffusionnft", "diffusionnft", clock) for clock in cv.CLOCKS}
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ")
            for line in cv.comparison_table(stats, cmps, "diffusionnft", "diffusionnft").splitlines()[2:]}
    sol, nft = rows["solrl_fp8"], rows["diffusionnft"]
    assert sol[1] == "2 (0, 1)" and sol[2] == "6.0" and sol[3] == "60.0" and sol[4] == "0.0" and sol[5] == "10.00"
    assert sol[6] == "0.1000 ± 0.0000 → 0.8000 ± 0.0000"
    assert sol[7] == f"0.3750 ± {np.std([0.25, 0.5], ddof=1):.4f}"
    assert sol[8:] == ["27.3", "3.67×", "27.3", "3.67×", "+60.0 % |"]  # no warm-up: both clocks agree
    assert nft[6].endswith(f"→ 0.5000 ± {np.std([0.4, 0.6], ddof=1):.4f}")
    assert nft[8:] == ["100.0", "1.00×", "100.0", "1.00×", "+0.0 % |"]


def test_warmup_excluded_clock_and_plateaued_baseline(tmp_path: Path):
    """A first iteration that compiles for 40 s moves a run's evaluations 40 s later on the plain clock only; a
    baseline that reaches its final score early and stays flat keeps its own (early) time and speedup 1."""
    root = tmp_path / "s"
    nft = timed([(0, 0.1), (20, 0.5), (100, 0.5)], 10.0)
    write_run(root / "compare" / "diffusionnft_s0", {**NFT, "seed": 0}, nft)
    sol = timed([(0, 0.1), (50, 0.3), (90, 0.5)], 10.0)
    train = [r for r in sol if "iteration_seconds" in r]
    train[0]["iteration_seconds"] = 50.0  # 40 s of warm-up over the 10 s median
    for rec in sol:  # every clock reading after the first iteration is 40 s later; the iteration-0 eval precedes it
        if rec["iteration"] > 0 or "iteration_seconds" in rec:
            rec["train_seconds"] += 40.0
    write_run(root / "compare" / "solrl_fp8_s0", {**SOL, "seed": 0}, sol)
    stats = stats_of(root)
    run = stats["solrl_fp8"].runs[0]
    assert run.warmup_seconds() == pytest.approx(40.0) and run.seconds_per_iteration() == pytest.approx(10.0)
    assert run.series(cv.partial_score, "seconds")[0].tolist() == [0.0, 90.0, 130.0]
    assert run.series(cv.partial_score, "steady")[0].tolist() == [0.0, 50.0, 90.0]
    plain, steady, by_iteration = (cv.compare(stats, "diffusionnft", "diffusionnft", clock) for clock in cv.CLOCKS)
    assert plain.baseline_seconds == pytest.approx(20.0) and plain.speedup("diffusionnft") == pytest.approx(1.0)
    assert plain.reach["solrl_fp8"] == pytest.approx(130.0) and steady.reach["solrl_fp8"] == pytest.approx(90.0)
    assert steady.speedup("solrl_fp8") == pytest.approx(20.0 / 90.0)
    # The iteration clock ignores the warm-up: diffusionnft reaches 0.5 at its iteration 2, Sol-RL at 9; both are
    # evaluated up to iteration 9 (Sol-RL's last), where both score 0.5.
    assert by_iteration.baseline_seconds == pytest.approx(2.0) and by_iteration.reach["solrl_fp8"] == pytest.approx(9.0)
    assert cv.common_iteration(stats) == 9.0
    table = cv.iteration_table(stats, by_iteration, "diffusionnft", "diffusionnft", 9.0)
    assert "| solrl_fp8 | 1 (0) | 9.0 | 0.22× | 0.5000 | +0.0 % |" in table
    assert "| diffusionnft | 1 (0) | 2.0 | 1.00× | 0.5000 | +0.0 % |" in table


def test_fidelity_ignores_nan_and_null(session: Path):
    groups = cv.group(cv.load_session(session).runs)
    row = cv.fidelity_row("solrl_fp8", groups["solrl_fp8"], cv.TIMED)
    # 12 iterations over both seeds, spearman cycles 0.4, NaN, null -> 4 valid, mean 0.4.
    assert row[:7] == ["solrl_fp8", "2", "96", "24", "12", "0.400 (n=4)", "0.400 (n=4)"]
    assert row[7:] == ["0.500", "8.00", "17.00", "6.5 / 18.5", "12.5"]
    audit = cv.fidelity_row("solrl_fp8", cv.group(cv.load_session(session).audits)["solrl_fp8"], cv.AUDIT)
    assert audit[4:] == ["4", "0.200 (n=3)", "0.100", "0.250", "0.750", "20.00", "70.00", "6.5 / 90.5", "48.5"]
    assert cv.fidelity_row("diffusionnft", groups["diffusionnft"], cv.TIMED) is None


def test_missing_keys(tmp_path: Path):
    """Old files: no train_seconds anywhere, only eval_reward_mean, no strict or per-category scores."""
    root = tmp_path / "old"
    records = [{"iteration": 0, "eval_reward_mean": 0.1}]
    records += [{"iteration": i, "reward_mean": 0.2, "iteration_seconds": 5.0} for i in range(4)]
    records += [{"iteration": 2, "eval_reward_mean": 0.3}, {"iteration": 4, "eval_reward_mean": 0.5}]
    write_run(root / "compare" / "naive_scaling_s3", {"method": "naive_scaling"}, records)
    (root / "compare" / "broken").mkdir()  # no metrics: skipped
    run = cv.load_session(root).runs[0]
    assert run.seed == 3 and run.label == "naive_scaling"  # seed from the folder name without config seed
    x, y = run.series(cv.partial_score)
    assert x.tolist() == [0.0, 10.0, 20.0] and y.tolist() == [0.1, 0.3, 0.5]
    assert run.series(cv.strict_score)[0].size == 0
    out = tmp_path / "report.md"
    table = cv.write_convergence_report([root], out, baseline="diffusionnft", reference="naive_scaling")
    row = table.splitlines()[2].split(" | ")
    assert row[2:6] == ["4.0", "20.0", "0.0", "5.00"] and row[7] == "—" and row[8] == "—"
    text = out.read_text()
    assert "unknown GPU" in text and "## Base model" not in text and "Selection fidelity" not in text
    assert all((tmp_path / "report" / name).exists() for name in cv.PLOTS)  # default plots folder


def test_analysis_is_kept_and_pngs_written(session: Path, tmp_path: Path):
    out, plots = tmp_path / "docs" / "convergence.md", tmp_path / "docs" / "convergence"
    cv.write_convergence_report([session], out, plots)
    first = out.read_text()
    assert first.rstrip().endswith(cv.MARKER) and first.count(cv.MARKER) == 1
    assert "![per_category](convergence/per_category.png)" in first
    assert "- command: `solrl report convergence --runs" in first and "2× NVIDIA H200, 2026-01-02" in first
    assert "| `h200_2026-01-02` | 1000 | 60.0 | 10 | 15 | 2.0 | 0.2500 | 0.1250 |" in first
    analysis = "\n\n## Analysis\n\nHand-written text | with a pipe.\n"
    out.write_text(first + analysis)
    (session / "compare" / "solrl_fp8_s1" / "config.yaml").write_text(yaml.safe_dump({**SOL, "seed": 7}))
    cv.write_convergence_report([session], out, plots)
    second = out.read_text()
    assert second.split(cv.MARKER)[1] == "\n" + analysis and second.count(cv.MARKER) == 1
    assert "| solrl_fp8 | 2 (0, 7) |" in second and "| solrl_fp8 | 2 (0, 1) |" not in second  # regenerated
    for name in cv.PLOTS:
        data = (plots / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_no_marker_keeps_old_text():
    merged = cv.merge_analysis("# gen\n", "old notes\n")
    assert merged == "# gen\n\n" + cv.MARKER + "\n\nold notes\n"
    assert cv.merge_analysis("# gen2\n", merged) == "# gen2\n\n" + cv.MARKER + "\n\nold notes\n"
    assert cv.merge_analysis("# gen\n", None) == "# gen\n\n" + cv.MARKER + "\n"


def test_cli_pools_sessions(session: Path, tmp_path: Path):
    other = tmp_path / "second"
    write_run(other / "compare" / "diffusionnft_s2", {**NFT, "seed": 2}, timed([(0, 0.1), (100, 0.5)], 10.0))
    out = tmp_path / "r.md"
    result = CliRunner().invoke(app, ["report", "convergence", "--runs", str(session), "--runs", str(other),
                                      "--out", str(out), "--plots", str(tmp_path / "p"), "--reference", "solrl_fp8"])
    assert result.exit_code == 0, result.output
    assert "| diffusionnft | 3 (0, 1, 2) |" in result.output
    assert f"--runs {session} --runs {other}" in out.read_text()
    empty = CliRunner().invoke(app, ["report", "convergence", "--runs", str(tmp_path / "none"), "--out", str(out)])
    assert empty.exit_code == 2


def test_peak_table_shows_a_run_that_degrades(tmp_path: Path):
    root = tmp_path / "h200_2026-01-03"
    # Seed means: 0.1, 0.3 at 20 s, 0.5 at 40 s (the peak), 0.2 at 60 s (the final).
    for seed, pts in {0: [(0, 0.1), (20, 0.2), (40, 0.6), (60, 0.3)], 1: [(0, 0.1), (20, 0.4), (40, 0.4), (60, 0.1)]}.items():
        write_run(root / "compare" / f"naive_scaling_s{seed}", {**NFT, "method": "naive_scaling", "seed": seed},
                  timed(pts, 10.0))
    stats = stats_of(root)
    assert cv.peak_of(stats["naive_scaling"].curves["steady"]) == (pytest.approx(0.5), pytest.approx(40.0))
    row = cv.peak_table(stats).splitlines()[2].split(" | ")
    assert row[2:6] == ["0.5000", "40.0", "4", "0.2000"]
    assert row[6].startswith("-0.3000")
    assert cv.peak_of(None) is None


def test_threshold_table_and_its_command(session: Path, tmp_path: Path):
    stats = stats_of(session)
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ")
            for line in cv.threshold_table(stats, "diffusionnft", [0.5, 0.7]).splitlines()[2:]}
    # Sol-RL crosses 0.5 at 27.27 s (see test_time_to_reach_speedup_and_gap), diffusionnft at 100 s; the seed
    # mean of Sol-RL reaches 0.7 between 40 s (0.6833) and 60 s (0.8); diffusionnft never does.
    assert rows["solrl_fp8"][2] == "27.3 (3.67×)"
    assert rows["solrl_fp8"][3] == f"{40 + (0.7 - 0.68333333) / (0.8 - 0.68333333) * 20:.1f}"
    assert rows["solrl_fp8"][4] == "2.7"  # 10 s an iteration, so the iteration clock is the seconds / 10
    assert rows["diffusionnft"][2] == "100.0 (1.00×)" and rows["diffusionnft"][3] == "not reached"
    assert cv.threshold_table(stats, "diffusionnft", []) is None
    out = tmp_path / "report.md"
    cv.write_convergence_report([session], out, tmp_path / "plots", thresholds=[0.5])
    text = out.read_text()
    assert "## Time to fixed scores" in text and "--threshold 0.5" in text
    with pytest.raises(ValueError, match="--threshold 1.5"):
        cv.write_convergence_report([session], out, tmp_path / "plots", thresholds=[1.5])
