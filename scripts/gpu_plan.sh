#!/usr/bin/env bash
# The next GPU session's calls for issues 6 and 7 on a two-GPU host (nvidia-h200-x2 / nvidia-h100-x2), one
# lane per GPU, written out so a call is one line. Each call must follow the previous one on the same warm
# machine within its 30 s idle window (runs/ stays there between calls). On the GPU machine, from the repo root:
#   bash .whl/install-on-gpu.sh >/dev/null && export PYTHONPATH=/tmp/site:$PWD && bash scripts/gpu_plan.sh CALL
# CALL:
#   1  lane 0: pretraining A, the preset (450 s);  lane 1: pretraining B, the preset with PRETRAIN_B_EXTRA (450 s:
#      an A/B of step speed against learning per second, on the GPU that would otherwise idle)
#   1b PICK=a|b: lane 0 resumes the better base to 950 s of training (PICK=b moves runs/pretrain_b to
#      runs/pretrain first), then archives it (8-bit, ~20 MB: commit it as assets/compositional_base);
#      lane 1: issue 6's FLUX iteration (Sol-RL against naive BF16 24-of-96)
#   2  both lanes: the comparison, seed 0 of all six presets (BUDGET, default 60 s each: three runs fit a lane)
#   3  both lanes: seed 1 of the four key presets, then the fidelity audit of fp8, nvfp4 and of an identity proxy
#   x4a, x4b, x4c  session 5's calls on four GPUs (three pretraining configurations and FLUX; two seeds; a third)
#   s6a, s6b, s6c  session 6's calls on four GPUs with pinned lanes (see the case below)
#   s7a  the next session's issue-6 call: the rest of the FLUX iteration on four H200s (see the case below)
#   s7x2a, s7x2b, s7x2c, s7x2d  the same on two H200s (s7x2c after s7x2a's learner failures; s7x2d probes the
#      learner per attention kernel, then benches with one that passes: what docs/results/iteration.md reports)
# Whatever comes back lands in the device tool's $OUT: steps, logs and the packed run folders (15 MiB parts).
set -u
R=${OUT:?run through the device tool, which sets OUT}
W=/tmp/plan_work
mkdir -p "$W"
nvidia-smi -L > "$W/gpus.txt" 2>&1  # the report's gpus.txt (in logs_callN.tgz)
limit=${LIMIT:-560}  # seconds for the lanes; packing follows
# Pretraining B's overrides. A step is 1.36 TFLOP at batch 128 (~3 ms of H200 GEMM time) but took 87 ms: overhead-
# bound, so 4x the batch should cost little time per step (lr scaled by sqrt(4)).
B_EXTRA=${PRETRAIN_B_EXTRA:---set train.batch_size=512 --set train.lr=0.0006}
# Each lane gets its own slice of the host's cores. Session 5 ran four unpinned lanes on one host: a run's learner
# took 4-8 s an iteration while the others ran and 1.0 s once they had finished (CPU oversubscription: every
# process sized its thread pools for the whole host), so wall-clock comparisons need the lanes kept apart.
ngpu=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true); [ "${ngpu:-0}" -ge 1 ] || ngpu=1
per_lane=$(( $(nproc) / ngpu )); [ "$per_lane" -ge 1 ] || per_lane=1
lane() {  # lane GPU TAG STEP... (env for gpu_issue7.sh / gpu_issue6.sh set by the caller)
  local gpu=$1 tag=$2; shift 2
  local cores="$((gpu * per_lane))-$((gpu * per_lane + per_lane - 1))" pin=()
  if command -v taskset > /dev/null && [ $(( (gpu + 1) * per_lane )) -le "$(nproc)" ]; then pin=(taskset -c "$cores"); fi
  (export CUDA_VISIBLE_DEVICES=$gpu OUT=$W/$tag TAG=$tag OMP_NUM_THREADS=$per_lane MKL_NUM_THREADS=$per_lane \
     TORCHINDUCTOR_COMPILE_THREADS=$per_lane
   mkdir -p "$W/$tag"; echo "lane $tag: GPU $gpu, cores $cores (${pin[*]:-no taskset})" >> "$W/lanes.txt"
   timeout $((limit - SECONDS)) "${pin[@]}" "$@")
}
# A session after the base was archived and committed (assets/compositional_base) starts at call 2 or 3: the
# archive unpacks into the identical base in seconds (no pretraining).
if [ ! -d runs/base ] && [ -d assets/compositional_base ] && [ "${1:-}" != 1 ] && [ "${1:-}" != 1b ] && [ "${1:-}" != x4a ]; then
  OUT=$W/setup TAG=setup bash scripts/gpu_issue7.sh use-archive
fi
# flux7 GPU SCHEME SUFFIX [VAR=value...]: one FLUX iteration bench (scripts/gpu_issue6.sh iteration-flux) in a lane,
# timed out with the call's remaining time; the variables override the defaults. Session 7's calls use it.
flux7() {
  local gpu=$1 scheme=$2 suffix=$3; shift 3
  if [ $((limit - SECONDS)) -lt 90 ]; then echo "no time left for flux_$scheme$suffix" >> "$W/lanes.txt"; return; fi
  (export ITER_TIMEOUT=${FLUX_ITER_TIMEOUT:-$((limit - SECONDS - 5))} MICRO_BATCH=${MICRO_BATCH:-2} ITER_REPEATS=1 \
     SCHEMES=$scheme TAG_SUFFIX=$suffix "$@"
   lane "$gpu" "flux_$scheme$suffix" bash scripts/gpu_issue6.sh iteration-flux); }
case "${1:?CALL: 1, 1b, 2 or 3}" in
  1)
    PRETRAIN_SECONDS=${PRETRAIN_SECONDS:-450} lane 0 pretrain bash scripts/gpu_issue7.sh pretrain &
    PRETRAIN_SECONDS=${PRETRAIN_SECONDS:-450} PRETRAIN_DIR=runs/pretrain_b \
      PRETRAIN_EXTRA="$B_EXTRA" \
      lane 1 pretrain_b bash scripts/gpu_issue7.sh pretrain &
    wait ;;
  1b)
    extra=""
    if [ "${PICK:?PICK=a or PICK=b: the base to keep}" = b ]; then  # B goes on with its own settings
      rm -rf runs/pretrain && mv runs/pretrain_b runs/pretrain && extra=$B_EXTRA
    fi
    # then pack the base into its 8-bit archive (~20 MB, brought back to be committed) and make its unpacked form the
    # base of every later run, so a later session's seeds train on the identical model without pretraining again
    PRETRAIN_EXTRA="$extra" PRETRAIN_RESUME=1 PRETRAIN_SECONDS=${PRETRAIN_SECONDS:-950} \
      lane 0 pretrain bash scripts/gpu_issue7.sh pretrain archive-base &
    # FLUX's iteration: ~41 s of learner per scheme-iteration at 12B (estimated), so two schemes (the targets'
    # comparison) and the whole lane; scripts/gpu_issue7.sh profile-pretrain runs where a lane has time left.
    ITER_TIMEOUT=${FLUX_ITER_TIMEOUT:-540} MICRO_BATCH=2 ITER_REPEATS=1 COMPILE_LEARNER=1 SCHEMES=solrl,naive_scaling \
      lane 1 flux bash scripts/gpu_issue6.sh iteration-flux &
    wait ;;
  2)
    # Three runs a lane: compile warm-up (off the budget: ~100 s for NVFP4, ~45 s FP8, plus the learner's) + 60 s +
    # evaluations and start-up (~65 s) fit 560 s. naive_quant follows solrl_nvfp4 to reuse its compiled graphs.
    export BUDGET=${BUDGET:-60}
    JOBS="solrl_nvfp4:0 naive_quant:0 flow_grpo:0" lane 0 lane0 bash scripts/gpu_issue7.sh compare &
    JOBS="naive_scaling:0 solrl_fp8:0 diffusionnft:0" lane 1 lane1 bash scripts/gpu_issue7.sh compare &
    wait ;;
  3)
    export BUDGET=${BUDGET:-60}
    export AUDIT_ITERS=${AUDIT_ITERS:-6}
    (JOBS="diffusionnft:1 solrl_fp8:1" lane 0 lane0 bash scripts/gpu_issue7.sh compare
     AUDIT_METHODS=solrl_fp8 lane 0 lane0 bash scripts/gpu_issue7.sh audit audit-identity) &
    (JOBS="naive_scaling:1 solrl_nvfp4:1" lane 1 lane1 bash scripts/gpu_issue7.sh compare
     AUDIT_METHODS=solrl_nvfp4 lane 1 lane1 bash scripts/gpu_issue7.sh audit) &
    wait ;;
  x4a)
    # Four GPUs (nvidia-h200-x4): three pretraining configurations side by side for one call, the best held-out
    # score becomes THE base (archived in the same call), and issue 6's FLUX iteration on the fourth GPU.
    P=${PRETRAIN_SECONDS:-470}
    PRETRAIN_SECONDS=$P lane 0 pretrain bash scripts/gpu_issue7.sh pretrain &
    PRETRAIN_SECONDS=$P PRETRAIN_DIR=runs/pretrain_b PRETRAIN_EXTRA="$B_EXTRA" \
      lane 1 pretrain_b bash scripts/gpu_issue7.sh pretrain &
    PRETRAIN_SECONDS=$P PRETRAIN_DIR=runs/pretrain_c PRETRAIN_EXTRA="${PRETRAIN_C_EXTRA:---set train.batch_size=1024 --set train.lr=0.00085}" \
      lane 3 pretrain_c bash scripts/gpu_issue7.sh pretrain &
    if [ "$(nvidia-smi -i 2 --query-gpu=memory.total --format=csv,noheader,nounits)" -gt 120000 ]; then
      ITER_TIMEOUT=${FLUX_ITER_TIMEOUT:-540} MICRO_BATCH=2 ITER_REPEATS=1 COMPILE_LEARNER=1 SCHEMES=solrl,naive_scaling \
        lane 2 flux bash scripts/gpu_issue6.sh iteration-flux &
    else  # FLUX's ~107 GB of weights need an H200
      echo "GPU 2 has under 120 GB: no FLUX iteration" > "$W/flux_skipped.txt"
      lane 2 profile bash scripts/gpu_issue7.sh profile-pretrain &
    fi
    wait
    pick=$(python3 - <<'PY'
import json, os
def score(d):
    f = d + "/summary.json"
    return json.load(open(f))["heldout_score_mean"] if os.path.exists(f) else -1.0
print(max(("runs/pretrain", "runs/pretrain_b", "runs/pretrain_c"), key=score))
PY
)
    echo "picked base: $pick" | tee "$W/pick.txt"
    if [ "$pick" != runs/pretrain ]; then mv runs/pretrain runs/pretrain_a && mv "$pick" runs/pretrain; fi
    OUT=$W/pretrain TAG=pretrain bash scripts/gpu_issue7.sh archive-base ;;
  x4b|x4c)
    # The comparison on four GPUs, two runs a lane at BUDGET (default 110 s after the first iteration's compile).
    export BUDGET=${BUDGET:-110} AUDIT_ITERS=${AUDIT_ITERS:-6}
    s=0; [ "$1" = x4c ] && s=1
    JOBS="solrl_nvfp4:$s naive_quant:$s" lane 0 lane0 bash scripts/gpu_issue7.sh compare &
    JOBS="naive_scaling:$s solrl_fp8:$s" lane 1 lane1 bash scripts/gpu_issue7.sh compare &
    JOBS="diffusionnft:$s flow_grpo:$s" lane 2 lane2 bash scripts/gpu_issue7.sh compare &
    if [ "$1" = x4b ]; then
      AUDIT_METHODS="solrl_fp8 solrl_nvfp4" lane 3 lane3 bash scripts/gpu_issue7.sh audit audit-identity &
    else
      JOBS="diffusionnft:2 solrl_fp8:2" lane 3 lane3 bash scripts/gpu_issue7.sh compare &
    fi
    wait ;;
  s6a|s6b|s6c)
    # Session 6 on four GPUs, lanes pinned to their own cores (see lane()), from the committed base archive:
    #   s6a: issue 6's FLUX iteration, one scheme a GPU (eager: session 5's compiled run spent its 540 s before
    #        finishing an iteration), and seed 0 of the four key methods;
    #   s6b: the rest of seed 0 and seed 1 of all six;  s6c: seed 2 of the four key methods, the audits, the
    #        fidelity bench, and the 16-step-proxy ablation.
    export BUDGET=${BUDGET:-110} AUDIT_ITERS=${AUDIT_ITERS:-6}
    flux() { ITER_TIMEOUT=${FLUX_ITER_TIMEOUT:-540} MICRO_BATCH=2 ITER_REPEATS=1 EAGER_COPIES=1 SCHEMES=$2 \
               lane "$1" "flux_$2" bash scripts/gpu_issue6.sh iteration-flux; }
    compare_on() { JOBS="$2" lane "$1" "lane$1" bash scripts/gpu_issue7.sh compare; }
    case "$1" in
      s6a) flux 0 solrl & flux 1 naive_scaling &
           compare_on 2 "solrl_fp8:0 naive_scaling:0" & compare_on 3 "diffusionnft:0 solrl_nvfp4:0" & ;;
      s6b) compare_on 0 "naive_quant:0 flow_grpo:0" & compare_on 1 "solrl_fp8:1 naive_scaling:1" &
           compare_on 2 "diffusionnft:1 solrl_nvfp4:1" & compare_on 3 "naive_quant:1 flow_grpo:1" & ;;
      s6c) compare_on 0 "solrl_fp8:2 naive_scaling:2" & compare_on 1 "diffusionnft:2 solrl_nvfp4:2" &
           # then the 16-step-proxy ablation (configs/compositional/solrl_fp8_16steps.yaml) where a lane has time left
           (AUDIT_METHODS="solrl_fp8 solrl_nvfp4" lane 2 lane2 bash scripts/gpu_issue7.sh audit
            compare_on 2 "solrl_fp8_16steps:0") &
           (lane 3 lane3 bash scripts/gpu_issue7.sh fidelity-bench audit-identity audit-bf16-proxy
            compare_on 3 "solrl_fp8_16steps:1") & ;;
    esac
    wait ;;
  s7a)
    # Issue 6's FLUX iteration, the rest of it: four H200s, one FLUX bench per GPU (each needs ~107 GB of weights).
    #   GPU 0: naive_scaling, eager (session 6's failed in its learner step: the bench now empties the allocator
    #          cache before it and logs memory per phase);
    #   GPU 1 and 2: solrl and naive_scaling with regionally compiled copies (COMPILE_SCOPE=blocks): the engine's
    #          real speed, where session 6's eager FP8 was slower per step than BF16;
    #   GPU 3: diffusionnft (24 of 24), eager, then solrl with an NVFP4-emulated stage 1, compiled by blocks.
    flux7 0 naive_scaling _eager EAGER_COPIES=1 &
    flux7 1 solrl _blocks COMPILE_SCOPE=blocks &
    flux7 2 naive_scaling _blocks COMPILE_SCOPE=blocks &
    (flux7 3 diffusionnft _eager EAGER_COPIES=1 ITER_TIMEOUT=240
     flux7 3 solrl _nvfp4_blocks COMPILE_SCOPE=blocks PRECISION=nvfp4) &
    wait ;;
  s7x2a|s7x2b|s7x2c|s7x2d)
    # The same on a two-H200 host (what session 7 was lent), two benches a GPU, one after the other:
    #   s7x2a: GPU 0 solrl compiled by blocks, then diffusionnft eager; GPU 1 naive_scaling compiled by blocks, then
    #          naive_scaling eager (the pair session 6 could not finish);
    #   s7x2b: GPU 0 solrl with an NVFP4-emulated stage 1, compiled by blocks; GPU 1 solrl compiled by blocks with a
    #          compiled learner (the iteration's largest phase).
    # s7x2a's four benches all failed in their first learner step (CUBLAS_STATUS_EXECUTION_FAILED in backward, with
    # 101.5 GiB in use and 113 reserved before it; taken then for the learner's activations, later traced to cuDNN
    # attention's backward: docs/results/iteration.md).
    # s7x2c: micro-batch 1, and where a bench still fails, gradient checkpointing (GRAD_CKPT=1) at micro-batch 2;
    #        then GPU 0 the NVFP4-emulated stage 1, GPU 1 diffusionnft (24 of 24), in what time is left.
    done_or_ckpt() {  # done_or_ckpt GPU SCHEME SUFFIX VAR=value...: micro-batch 1, else checkpointing at 2
      local gpu=$1 scheme=$2 suffix=$3; shift 3
      flux7 "$gpu" "$scheme" "${suffix}_mb1" MICRO_BATCH=1 "$@"
      [ -f "$W/flux_$scheme${suffix}_mb1/iteration_flux_$scheme${suffix}_mb1.json" ] || \
        flux7 "$gpu" "$scheme" "${suffix}_ckpt" MICRO_BATCH=2 GRAD_CKPT=1 "$@"; }
    # s7x2d: s7x2c failed the same way with micro-batch 1 and with checkpointing (an illegal memory access in the
    #        learner's backward, not memory). Probes first (scripts/gpu_learner_probe.py: attention alone, then the
    #        learner alone, per attention kernel), then the two schemes with the first kernel whose learner passed.
    probe() {  # probe GPU KIND BACKEND [ENV=value...]
      local gpu=$1 kind=$2 backend=$3; shift 3
      mkdir -p "$W/probe"
      env CUDA_VISIBLE_DEVICES=$gpu "$@" timeout 150 python3 scripts/gpu_learner_probe.py "$kind" "$backend" \
        > "$W/probe/${kind}_$backend.log" 2>&1
      grep -h "^probe " "$W/probe/${kind}_$backend.log" | tee -a "$W/probe/summary.txt"; }
    if [ "$1" = s7x2d ]; then
      (for b in auto flash efficient cudnn; do probe 0 sdpa $b; done
       probe 0 learner auto CUDA_LAUNCH_BLOCKING=1; probe 0 learner flash) &
      (probe 1 learner cudnn; probe 1 learner efficient) &
      wait
      pick=$(for b in flash cudnn efficient auto; do grep -q "^probe learner $b ok" "$W/probe/summary.txt" && echo $b && break; done)
      echo "learner attention picked: ${pick:-none}" | tee -a "$W/probe/summary.txt"
      if [ -n "$pick" ]; then
        (flux7 0 solrl "_blocks_mb1_$pick" COMPILE_SCOPE=blocks MICRO_BATCH=1 LEARNER_ATTN=$pick
         flux7 0 diffusionnft "_eager_mb1_$pick" EAGER_COPIES=1 MICRO_BATCH=1 LEARNER_ATTN=$pick) &
        (flux7 1 naive_scaling "_blocks_mb1_$pick" COMPILE_SCOPE=blocks MICRO_BATCH=1 LEARNER_ATTN=$pick
         flux7 1 solrl "_nvfp4_blocks_mb1_$pick" COMPILE_SCOPE=blocks PRECISION=nvfp4 MICRO_BATCH=1 LEARNER_ATTN=$pick) &
      fi
    elif [ "$1" = s7x2c ]; then
      (done_or_ckpt 0 solrl _blocks COMPILE_SCOPE=blocks
       done_or_ckpt 0 solrl _nvfp4_blocks COMPILE_SCOPE=blocks PRECISION=nvfp4) &
      (done_or_ckpt 1 naive_scaling _blocks COMPILE_SCOPE=blocks
       done_or_ckpt 1 diffusionnft _eager EAGER_COPIES=1) &
    elif [ "$1" = s7x2a ]; then
      (flux7 0 solrl _blocks COMPILE_SCOPE=blocks; flux7 0 diffusionnft _eager EAGER_COPIES=1) &
      (flux7 1 naive_scaling _blocks COMPILE_SCOPE=blocks; flux7 1 naive_scaling _eager EAGER_COPIES=1) &
    else
      flux7 0 solrl _nvfp4_blocks COMPILE_SCOPE=blocks PRECISION=nvfp4 &
      flux7 1 solrl _blocks_learner COMPILE_SCOPE=blocks COMPILE_LEARNER=1 &
    fi
    wait ;;
  *) echo "unknown call $1" >&2; exit 2 ;;
esac
OUT=$R TAG="call$1" bash scripts/gpu_issue7.sh pack
mv "$W"/*/base_archive.tar.part_* "$R"/ 2>/dev/null  # the archive comes back as its own files, not in the logs
tar czf "$R/logs_call$1.tgz" -C "$W" .
cat "$W"/*/steps*.txt 2>/dev/null
