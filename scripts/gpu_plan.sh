#!/usr/bin/env bash
# The next GPU session's calls for issues 6 and 7 on a two-GPU host (nvidia-h200-x2 / nvidia-h100-x2), one
# lane per GPU, written out so a call is one line. Each call must follow the previous one on the same warm
# machine (runs/ stays there between calls). On the GPU machine, from the repo root:
#   bash .whl/install-on-gpu.sh >/dev/null && export PYTHONPATH=/tmp/site:$PWD && bash scripts/gpu_plan.sh CALL
# CALL:
#   1  lane 0: compiled pretraining (480 s);  lane 1: GPU tests of the compiled paths, then issue 6's FLUX rows
#   1b lane 0: 480 s more pretraining (--resume) if call 1's samples.png still shows blobs;  lane 1: idle
#   2  both lanes: the comparison, seed 0 of all six presets
#   3  both lanes: seed 1 of the four key presets, then the fidelity audit of fp8 and nvfp4
# Whatever comes back lands in the device tool's $OUT: steps, logs and the packed run folders (15 MiB parts).
set -u
R=${OUT:?run through the device tool, which sets OUT}
W=/tmp/plan_work
mkdir -p "$W"
limit=${LIMIT:-560}  # seconds for the lanes; packing follows
lane() {  # lane GPU TAG STEP... (env for gpu_issue7.sh / gpu_issue6.sh set by the caller)
  local gpu=$1 tag=$2; shift 2
  (export CUDA_VISIBLE_DEVICES=$gpu OUT=$W/$tag TAG=$tag; mkdir -p "$W/$tag"; timeout $((limit - SECONDS)) "$@")
}
case "${1:?CALL: 1, 1b, 2 or 3}" in
  1)
    PRETRAIN_SECONDS=${PRETRAIN_SECONDS:-450} lane 0 pretrain bash scripts/gpu_issue7.sh pretrain &
    (lane 1 tests bash scripts/gpu_issue7.sh tests
     MODES=engine-nvfp4 COMPILE_SCOPE=blocks MODE_TIMEOUT=240 lane 1 flux bash scripts/gpu_issue6.sh rollout-flux
     ITER_TIMEOUT=400 MICRO_BATCH=2 ITER_REPEATS=1 COMPILE_LEARNER=1 lane 1 flux bash scripts/gpu_issue6.sh iteration-flux) &
    wait ;;
  1b)
    PRETRAIN_RESUME=1 PRETRAIN_SECONDS=${PRETRAIN_SECONDS:-960} lane 0 pretrain bash scripts/gpu_issue7.sh pretrain ;;
  2)
    JOBS="diffusionnft:0 solrl_fp8:0 flow_grpo:0" lane 0 lane0 bash scripts/gpu_issue7.sh compare &
    JOBS="naive_scaling:0 solrl_nvfp4:0 naive_quant:0" lane 1 lane1 bash scripts/gpu_issue7.sh compare &
    wait ;;
  3)
    (JOBS="diffusionnft:1 solrl_fp8:1" lane 0 lane0 bash scripts/gpu_issue7.sh compare
     AUDIT_METHODS=solrl_fp8 lane 0 lane0 bash scripts/gpu_issue7.sh audit) &
    (JOBS="naive_scaling:1 solrl_nvfp4:1" lane 1 lane1 bash scripts/gpu_issue7.sh compare
     AUDIT_METHODS=solrl_nvfp4 lane 1 lane1 bash scripts/gpu_issue7.sh audit) &
    wait ;;
  *) echo "unknown call $1" >&2; exit 2 ;;
esac
OUT=$R TAG="call$1" bash scripts/gpu_issue7.sh pack
tar czf "$R/logs_call$1.tgz" -C "$W" .
cat "$W"/*/steps*.txt 2>/dev/null
