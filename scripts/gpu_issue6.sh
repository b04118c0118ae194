#!/usr/bin/env bash
# The issue-6 GPU batch, as run through the `device` tool (one H100/H200). Each step writes to $OUT and
# is time-boxed so a slow step cannot eat the others. Usage on the GPU machine, from the repo root:
#   bash .whl/install-on-gpu.sh && export PYTHONPATH=/tmp/site:$PWD && bash scripts/gpu_issue6.sh STEP...
# STEP: tests | layer | rollout-{sd35m,sd35l,flux,sana} | iteration-{sd35m,flux}
# iteration-* reads: SCHEMES (comma list), PRECISION (stage 1: fp8 or nvfp4), MICRO_BATCH, ITER_REPEATS,
#   ITER_TIMEOUT, COMPILE_LEARNER=1, GRAD_CKPT=1 (learner gradient checkpointing), EAGER_COPIES=1 (no compiled sampling copies) or COMPILE_SCOPE=blocks
#   (regional compilation of the copies), TAG_SUFFIX (added to the output names, to tell variants apart)
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
SOLRL="python3 -m orchestration.cli"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/gpu_env.txt" 2>&1
python3 -c "import torch, diffusers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'diffusers', diffusers.__version__)" >> "$OUT/gpu_env.txt" 2>&1
for step in "$@"; do
  start=$(date +%s)
  case "$step" in
    tests) SOLRL_GPU_RESULTS="$OUT" timeout 240 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_precision_gpu.py \
             tests/gpu/test_engine_gpu.py > "$OUT/gpu_tests.log" 2>&1 ;;
    tests-precision) SOLRL_GPU_RESULTS="$OUT" timeout 120 python3 -m pytest -q -p no:cacheprovider \
             tests/gpu/test_precision_gpu.py > "$OUT/gpu_tests_precision.log" 2>&1 ;;
    layer) timeout 200 $SOLRL bench layer --out "$OUT/layer" > "$OUT/layer.log" 2>&1 ;;
    rollout-*)
      case "$step" in rollout-sd35l) arch=sd35_large ;; rollout-flux) arch=flux1_dev ;;
        rollout-sana) arch=sana_1600m ;; *) arch=sd35_medium ;; esac
      for mode in ${MODES:-diffusers-eager-bf16 engine-bf16 engine-fp8 engine-nvfp4 engine-fp8-torchao}; do
        timeout ${MODE_TIMEOUT:-200} $SOLRL bench rollout --arch $arch --resolution 512 --steps 6 --batch 16 --repeats ${REPEATS:-3} \
          --modes "$mode" ${MIN_DIM:+--min-dim $MIN_DIM} --compile-scope ${COMPILE_SCOPE:-full} --out "$OUT/${step}_$mode${MIN_DIM:+_min$MIN_DIM}" \
          > "$OUT/${step}_$mode${MIN_DIM:+_min$MIN_DIM}.log" 2>&1
        echo "  $step $mode rc=$?" | tee -a "$OUT/steps.txt"
      done ;;
    iteration-sd35m|iteration-flux)
      arch=sd35_medium; [ "$step" = iteration-flux ] && arch=flux1_dev
      timeout ${ITER_TIMEOUT:-300} $SOLRL bench iteration --arch $arch --resolution 512 --candidates 96 \
             --selected 24 --explore-steps 6 --train-steps 10 --precision ${PRECISION:-fp8} --sample-batch ${SAMPLE_BATCH:-48} --micro-batch ${MICRO_BATCH:-8} --repeats ${ITER_REPEATS:-2} ${COMPILE_LEARNER:+--compile-learner} ${GRAD_CKPT:+--gradient-checkpointing} ${LEARNER_ATTN:+--learner-attention $LEARNER_ATTN} ${EAGER_COPIES:+--no-compile} ${COMPILE_SCOPE:+--compile-scope $COMPILE_SCOPE} \
             ${SCHEMES:+--schemes $SCHEMES} \
             --out "$OUT/${step/-/_}${SCHEMES:+_${SCHEMES//,/_}}${TAG_SUFFIX:-}" \
             > "$OUT/${step/-/_}${SCHEMES:+_${SCHEMES//,/_}}${TAG_SUFFIX:-}.log" 2>&1 ;;
    *) echo "unknown step $step" >&2 ;;
  esac
  echo "step $step: rc=$? in $(( $(date +%s) - start )) s" | tee -a "$OUT/steps.txt"
done
