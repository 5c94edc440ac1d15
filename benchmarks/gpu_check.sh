#!/usr/bin/env bash
# The GPU rows of the README's "Numbers" section, in one go on one CUDA GPU (H100 / H200).
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]     # OUT_DIR: default $OUT if set, else benchmarks/results/gpu
#
# Runs, in this order (each step's JSON and log land in OUT_DIR, at most 7 files):
#   1. inference speed, bf16, batch 1 and 32 x 10 s: every distinct preset vs HuBERT Base (~1 min);
#   2. distillation throughput, bf16: HuBERT Base-sized random teacher -> armhubert, 32 x 10 s, one
#      bf16 training step per variant (default, no-shared-features, no-fused-attention,
#      compile-student, compile-all), with a profile of the default variant (~5-8 min, mostly compiling).
# The distillation JSON is rewritten after every variant, so a run cut short keeps what it measured.
# Nothing is downloaded: all models have random weights from Transformers' default configs.
#
# With the device tool (about 10 minutes of a 15-minute budget):
#   run(command="bash benchmarks/gpu_check.sh", timeout_s=600)
# If the machine's transformers is older than this repo needs, carry wheels in .whl/ (see
# /work/.library/device/README.md) and name ".whl" in carry: they are installed first.
# SMOKE=1 runs the same steps with tiny models on the CPU in about a minute, to check the script.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-benchmarks/results/gpu}}"
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY="${PYTHON:-python3}"
DEVICE=(--device cuda)
SMOKE_ARGS=()
if [[ "${SMOKE:-0}" == 1 ]]; then
    DEVICE=(--device cpu)
    SMOKE_ARGS=(--tiny --seconds 1 --warmup 1)
fi

if compgen -G ".whl/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi

{
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv || true
    "$PY" -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'transformers', transformers.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
} 2>&1 | tee "$OUT_DIR/gpu_env.txt"

status=0
"$PY" benchmarks/inference_speed.py "${DEVICE[@]}" --dtype bf16 --batch-sizes 1 32 "${SMOKE_ARGS[@]}" \
    ${SMOKE_ARGS:+--repeats 1 --no-quiet-gate} --output "$OUT_DIR/inference_speed_cuda.json" 2>&1 \
    | tee "$OUT_DIR/inference_speed_cuda.log" || status=1
"$PY" benchmarks/distill_throughput.py "${DEVICE[@]}" --dtype bf16 --batch-size 32 --profile "${SMOKE_ARGS[@]}" \
    ${SMOKE_ARGS:+--steps 1 --variants default no-shared-features} --output "$OUT_DIR/distill_throughput_cuda.json" 2>&1 \
    | tee "$OUT_DIR/distill_throughput_cuda.log" || status=1
ls -l "$OUT_DIR"
exit $status
