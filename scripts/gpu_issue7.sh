#!/usr/bin/env bash
# The issue-7 GPU batch (the compositional benchmark's pretraining and the method comparison), as run
# through the `device` tool. On the GPU machine, from the repo root:
#   bash .whl/install-on-gpu.sh && export PYTHONPATH=/tmp/site:$PWD && bash scripts/gpu_issue7.sh STEP...
# STEP:
#   tests     tests/gpu/test_rl_compile_gpu.py (sampler.compile vs eager)
#   pretrain  solrl pretrain with configs/compositional/pretrain.yaml into $PRETRAIN_DIR (default $RUNS/pretrain;
#             PRETRAIN_SECONDS overrides train.max_seconds, PRETRAIN_EXTRA adds --set overrides, PRETRAIN_RESUME=1
#             continues the run with --resume). The other steps train on $RUNS/pretrain/model.
#   profile-pretrain  scripts/profile_pretrain.py: ms per pretraining step for PROFILE_VARIANTS (compile modes,
#             batch sizes), graph breaks and the top operators, into $OUT/profile_pretrain.md
#   probe     3 iterations of every method on the pretrained model: seconds per iteration, to size budgets
#   compare   the timed runs: JOBS="method:seed ..." (method = a file of configs/compositional/), each with
#             the preset's budget_seconds (BUDGET overrides it) into $RUNS/compare/<method>_s<seed>
#   audit     fidelity-audit runs (every iteration samples all N in BF16 too): AUDIT_METHODS x AUDIT_ITERS
#   audit-identity  the audit with a proxy identical to BF16 except for its batch size (solrl_fp8 with no layer
#             quantized and stage 2's 16 steps; named identity_bf16): the fidelity ceiling of this model and
#             evaluator, i.e. how much of the proxies' low Spearman is kernel-level noise, not precision or steps
#   audit-bf16-proxy  the audit with a BF16 proxy at stage 1's own step count (solrl_fp8 with no layer quantized;
#             named bf16_proxy): with audit-identity it splits the proxies' low Spearman into what the 8-of-16 steps
#             cost and what the precision costs
#   fidelity-bench  solrl bench fidelity for the fp8 and nvfp4 presets on the base (eager sampling, FIDELITY_PROMPTS
#             prompts x 96 candidates): each proxy's ranking against BF16's split into precision and step count
#   archive-base  solrl base pack of the pretrained model (8-bit, ~20 MB: small enough to commit and carry), unpacked
#             into $RUNS/base, which every later step trains on; the archive comes back in $OUT in 15 MiB parts
#   use-archive   unpack a committed archive (ARCHIVE=assets/compositional_base) into $RUNS/base: no pretraining
#   pack      metrics, summaries, configs and sample grids of every run (no weights) into $OUT/issue7_<tag>.tgz
# EXTRA adds overrides to every train command (e.g. "--set model.device=cpu ..." for a CPU dry run).
# Set CUDA_VISIBLE_DEVICES to put a lane of jobs on one GPU; run two lanes side by side on a 2-GPU host.
# Keep OUT for the device tool's $OUT only where the files must come back (at most 8 files there):
#   R=$OUT; export OUT=/tmp/w
#   (CUDA_VISIBLE_DEVICES=0 TAG=lane0 JOBS="..." BUDGET=150 bash scripts/gpu_issue7.sh compare) &
#   (CUDA_VISIBLE_DEVICES=1 TAG=lane1 JOBS="..." BUDGET=150 bash scripts/gpu_issue7.sh compare) &
#   wait; OUT=$R TAG=call2 bash scripts/gpu_issue7.sh pack; tar czf $R/logs.tgz -C /tmp/w .
set -u
OUT=${OUT:-/tmp/out}
RUNS=${RUNS:-runs}
TAG=${TAG:-lane}
SOLRL="python3 -m orchestration.cli"
# The base every run trains on (chosen again before each step, as a step can create it): BASE if set, else the
# unpacked 8-bit archive where one exists (identical on every machine and session), else the pretraining's output.
BASE_SET=${BASE:-}
choose_base() { BASE=$BASE_SET; [ -n "$BASE" ] || { BASE="$RUNS/base"; [ -d "$BASE" ] || BASE="$RUNS/pretrain/model"; }; }
mkdir -p "$OUT" "$RUNS/compare" "$RUNS/audit" "$RUNS/probe"
log() { echo "[$TAG $(date +%H:%M:%S)] $*" | tee -a "$OUT/steps_$TAG.txt"; }
# audit_run NAME PRESET [--set ...]: a fidelity-audit run (every iteration also samples all N in BF16) into
# $RUNS/audit/NAME, logged to $OUT/audit_NAME.log
audit_run() {
  local name=$1 preset=$2; shift 2
  rm -rf "$RUNS/audit/$name"
  timeout ${RUN_TIMEOUT:-580} $SOLRL train -c "configs/compositional/$preset.yaml" -o "$RUNS/audit/$name" \
    --set model.path=$BASE --set iterations=${AUDIT_ITERS:-10} --set eval.every=0 --set eval.fidelity_audit_every=1 \
    --set checkpoint.every=0 "$@" ${EXTRA:-} > "$OUT/audit_$name.log" 2>&1
}

for step in "$@"; do
  start=$(date +%s)
  choose_base
  case "$step" in
    tests) SOLRL_GPU_RESULTS="$OUT" timeout 300 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_rl_compile_gpu.py \
             > "$OUT/gpu_tests_rl_compile.log" 2>&1; log "tests rc=$?" ;;
    pretrain)
      pdir=${PRETRAIN_DIR:-$RUNS/pretrain}
      timeout ${PRETRAIN_TIMEOUT:-1150} $SOLRL pretrain -c ${PRETRAIN_CONFIG:-configs/compositional/pretrain.yaml} -o "$pdir" \
        ${PRETRAIN_SECONDS:+--set train.max_seconds=$PRETRAIN_SECONDS} ${PRETRAIN_EXTRA:-} ${PRETRAIN_RESUME:+--resume} \
        > "$OUT/pretrain_$(basename "$pdir").log" 2>&1
      log "pretrain $pdir rc=$? $(python3 -c "import json; s=json.load(open('$pdir/summary.json')); print('steps', s['steps'], 'heldout', round(s['heldout_score_mean'], 4), round(s['heldout_overall'], 4))" 2>/dev/null)"
      du -sh "$pdir/model" >> "$OUT/steps_$TAG.txt" 2>&1 ;;
    profile-pretrain)
      timeout ${PROFILE_TIMEOUT:-420} python3 scripts/profile_pretrain.py --out "$OUT" \
        ${PROFILE_VARIANTS:+--variants "$PROFILE_VARIANTS"} > "$OUT/profile_pretrain.log" 2>&1
      log "profile-pretrain rc=$? $(grep -E '^\| (base|train|model)' "$OUT/profile_pretrain.md" 2>/dev/null | tr '\n' ' ')" ;;
    probe)
      for m in ${PROBE_METHODS:-diffusionnft naive_scaling naive_quant solrl_fp8 solrl_nvfp4 flow_grpo}; do
        rm -rf "$RUNS/probe/$m"
        timeout 240 $SOLRL train -c configs/compositional/$m.yaml -o "$RUNS/probe/$m" --set model.path=$BASE \
          --set iterations=${PROBE_ITERS:-3} --set eval.every=0 --set checkpoint.every=0 ${EXTRA:-} \
          > "$OUT/probe_$m.log" 2>&1
        rc=$?
        secs=$(python3 -c "import json,sys; r=[json.loads(l) for l in open('$RUNS/probe/$m/metrics.jsonl') if 'iteration_seconds' in l]; print(' '.join(f\"{x['iteration_seconds']:.2f}\" for x in r))" 2>/dev/null)
        log "probe $m rc=$rc iteration_seconds: $secs"
      done ;;
    compare)
      for job in ${JOBS:?set JOBS=\"method:seed ...\"}; do
        m=${job%%:*}; s=${job##*:}
        dir="$RUNS/compare/${m}_s$s"
        resume=""; [ -d "$dir/checkpoints" ] && resume="--resume"
        timeout ${RUN_TIMEOUT:-580} $SOLRL train -c configs/compositional/$m.yaml -o "$dir" $resume \
          --set model.path=$BASE --set seed=$s --set iterations=${MAX_ITERS:-1000} \
          ${BUDGET:+--set budget_seconds=$BUDGET} ${EXTRA:-} > "$OUT/compare_${m}_s$s.log" 2>&1
        log "compare $m seed $s rc=$? $(tail -c 400 "$dir/summary.json" 2>/dev/null | tr -d '\n ' | head -c 200)"
      done ;;
    audit)
      for m in ${AUDIT_METHODS:-solrl_fp8 solrl_nvfp4}; do
        audit_run "$m" "$m"
        log "audit $m rc=$?"
      done ;;
    audit-identity)
      audit_run identity_bf16 solrl_fp8 --set name=identity_bf16 --set rollout.min_dim=1000000000 \
        --set rollout.num_steps=16
      log "audit-identity rc=$?" ;;
    audit-bf16-proxy)
      audit_run bf16_proxy solrl_fp8 --set name=bf16_proxy --set rollout.min_dim=1000000000
      log "audit-bf16-proxy rc=$?" ;;
    fidelity-bench)
      for m in solrl_fp8 solrl_nvfp4; do
        timeout ${RUN_TIMEOUT:-580} $SOLRL bench fidelity -c configs/compositional/$m.yaml --set model.path=$BASE \
          --set sampler.compile=false --prompts ${FIDELITY_PROMPTS:-16} --out "$OUT/fidelity_$m" \
          > "$OUT/fidelity_$m.log" 2>&1
        log "fidelity-bench $m rc=$?"
      done ;;
    archive-base)  # pack the pretrained base (8-bit, ~20 MB), unpack it as THE base, and bring the archive back
      rm -rf "$RUNS/base_archive" "$RUNS/base"
      $SOLRL base pack --model "$RUNS/pretrain/model" --out "$RUNS/base_archive" > "$OUT/archive_base.log" 2>&1 &&
        $SOLRL base unpack --archive "$RUNS/base_archive" --out "$RUNS/base" >> "$OUT/archive_base.log" 2>&1
      rc=$?
      tar -C "$RUNS" -cf - base_archive | split -b 15M - "$OUT/base_archive.tar.part_"
      log "archive-base rc=$rc: $(du -sh "$RUNS/base_archive" | cut -f1), $(ls "$OUT"/base_archive.tar.part_* | wc -l) parts; runs now train on $RUNS/base" ;;
    use-archive)  # a committed archive (ARCHIVE, default assets/compositional_base) becomes the base: no pretraining
      rm -rf "$RUNS/base"
      $SOLRL base unpack --archive "${ARCHIVE:-assets/compositional_base}" --out "$RUNS/base" > "$OUT/use_archive.log" 2>&1
      log "use-archive rc=$?" ;;
    export-base)  # the base in bf16 (half the bytes), tar split into 15 MiB parts: brought back as a fallback
      python3 - "$BASE" "$RUNS/base_bf16" <<'PY'
import shutil, sys
from pathlib import Path
import torch
from safetensors.torch import load_file, save_file
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
shutil.rmtree(dst, ignore_errors=True)
shutil.copytree(src, dst)
for f in dst.rglob("*.safetensors"):
    tensors = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v) for k, v in load_file(f).items()}
    save_file(tensors, f)
PY
      tar -C "$RUNS" -cf - base_bf16 | split -b 15M - "$OUT/base_bf16.tar.part_"
      log "export-base $(ls "$OUT"/base_bf16.tar.part_* | wc -l) parts" ;;
    pack)  # parts below the device tool's 16 MiB per file; reassemble with: cat issue7_TAG.tgz.part_* | tar xz
      (cd "$RUNS" && find . \( -name metrics.jsonl -o -name summary.json -o -name config.yaml -o -name '*.png' \
         -o -name '*.txt' -o -name solrl_model.json \) -not -path '*/checkpoints/*' -not -path './base_bf16/*' -not -path './base/*' -not -path './base_archive/*' \
         -print0 | tar --null -czf - -T - | split -b 15M - "$OUT/issue7_$TAG.tgz.part_")
      log "packed $(cat "$OUT"/issue7_$TAG.tgz.part_* | wc -c) bytes in $(ls "$OUT"/issue7_$TAG.tgz.part_* | wc -l) parts" ;;
    *) echo "unknown step $step" >&2 ;;
  esac
  log "step $step done in $(( $(date +%s) - start )) s"
done
