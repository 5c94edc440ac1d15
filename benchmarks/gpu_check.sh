#!/usr/bin/env bash
# The GPU numbers of docs/benchmarks.md and docs/distillation.md in one go, on one CUDA GPU (H100 / H200): about 7 minutes,
# and 1-3 more for compiling the conv encoder layouts (step 4).
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]     # OUT_DIR default: benchmarks/results/gpu
#   SMOKE=1 bash benchmarks/gpu_check.sh /tmp/smoke   # the same steps, tiny, on the CPU: checks the script
#   STEPS="distill e2e" bash benchmarks/gpu_check.sh  # only some of: tests distill speed front e2e step
#
# Steps, each bounded by a timeout and writing into OUT_DIR as it goes (a run cut short keeps what
# it measured; everything is also in OUT_DIR/gpu_check.log):
#   1. the machine and versions, then the CUDA tests (pytest -m cuda);
#   2. run_distill.py through `accelerate launch` in bf16: a HuBERT Base-sized random teacher ->
#      armhubert on a synthetic LibriSpeech-layout corpus (tools/make_synthetic_librispeech.py,
#      LibriSpeech's lengths), at the paper's 18 whole utterances per GPU (32 of up to 35 s
#      need more than 80 GB), 16 steps with a checkpoint every 8, then resumed from the last
#      checkpoint to 32 steps; the student is then loaded in a fresh process with
#      AutoModel.from_pretrained(..., trust_remote_code=True);
#   3. inference speed, bf16, batch 1 and 32 x 10 s: each distinct preset vs HuBERT Base;
#   4. the conv encoders of HuBERT Base (the teacher's) and armhubert in each layout, eager and compiled,
#      with and without cuDNN's autotuning, at 32 x 10 s in bf16 (benchmarks/front_end_layouts.py);
#   5. end-to-end distillation throughput (benchmarks/distill_end_to_end.py), the main variants, with the
#      teacher's positional conv from spectra (the default) and direct;
#   6. step-level distillation throughput (benchmarks/distill_throughput.py) with a profile.
# Nothing is downloaded: every model has random weights.
set -uo pipefail
# OUT_DIR relative to where the script is called from; the default inside the repository.
OUT_DIR="$(mkdir -p "${1:-$(dirname "$0")/results/gpu}" && cd "${1:-$(dirname "$0")/results/gpu}" && pwd)"
cd "$(dirname "$0")/.."
REPO="$PWD"
WORK="$(mktemp -d)"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY="${PYTHON:-python3}"
exec > >(tee -a "$OUT_DIR/gpu_check.log") 2>&1

if [[ "${SMOKE:-0}" == 1 ]]; then
    DEVICE=cpu PRECISION=no TEACHER_SIZE=tiny UTTERANCES=24 SCALE=0.15 BATCH=4
    STUDENT=(--config_overrides '{"num_hidden_layers": 2, "reuse_pattern": [true, false], "hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 96, "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4, "conv_dim": [16, 32, 32, 32, 32, 32, 64, 64, 64]}')
    E2E=(--tiny --warmup 1 --steps 2 --variants default no-workers)
    STEP=(--tiny --seconds 1 --warmup 1 --steps 1 --variants default direct-positional-conv)
    SPEED=(--tiny --seconds 1 --warmup 1 --repeats 1 --no-quiet-gate)
    FRONT=(--tiny --batch-size 2 --seconds 1 --warmup 1 --repeats 1)
else
    DEVICE=cuda PRECISION=bf16 TEACHER_SIZE=base UTTERANCES=480 SCALE=1 BATCH=18
    STUDENT=()
    E2E=(--warmup 3 --steps 10 --variants default no-workers no-shared-features direct-positional-conv no-length-grouping)
    STEP=(--batch-size 32 --warmup 2 --steps 5 --variants default direct-positional-conv no-shared-features compile-student star)
    SPEED=()
    FRONT=(--batch-size 32 --compile --cudnn-autotune)
fi
STEPS=" ${STEPS:-tests distill speed front e2e step} "
status=0
wanted() { [[ "$STEPS" == *" $1 "* ]]; }
step() {  # step SECONDS NAME COMMAND...: run with a time limit, note a failure, go on
    local limit=$1 name=$2
    shift 2
    echo "=== $name ($(date +%T))"
    timeout "$limit" "$@" || { echo "=== $name FAILED (exit $?)"; status=1; }
}

echo "=== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true
"$PY" -c "import torch, transformers, accelerate, datasets; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'transformers', transformers.__version__, 'accelerate', accelerate.__version__, 'datasets', datasets.__version__, \
torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"

[[ $DEVICE == cuda ]] && wanted tests && step 90 "CUDA tests" "$PY" -m pytest tests/test_cuda.py -q -p no:cacheprovider

step 60 "corpus and teacher" bash -c "
    '$PY' tools/make_synthetic_librispeech.py '$WORK/corpus' --utterances $UTTERANCES --scale $SCALE &&
    '$PY' tools/make_synthetic_librispeech.py '$WORK/corpus' --split dev-clean --utterances 64 --scale $SCALE --seed 1 &&
    '$PY' tools/make_random_teacher.py '$WORK/teacher' --size $TEACHER_SIZE"

DISTILL=(-m accelerate.commands.launch --num_processes 1 --num_machines 1 --mixed_precision "$PRECISION"
         --dynamo_backend no run_distill.py configs/distill/armhubert-960h.yaml --teacher "$WORK/teacher"
         --librispeech_root "$WORK/corpus" --train_splits train-clean-100 --eval_splits dev-clean
         --output_dir "$WORK/student" --precision "$PRECISION" --per_device_train_batch_size "$BATCH"
         --per_device_eval_batch_size "$BATCH" --gradient_accumulation_steps 1 --learning_rate 5e-4
         --save_strategy steps --save_steps 8 --eval_strategy no --logging_steps 4 --report_to none --disable_tqdm true
         --dataloader_num_workers 8 "${STUDENT[@]}")
[[ $DEVICE == cpu ]] && DISTILL+=(--use_cpu true --dataloader_num_workers 1)
if wanted distill; then
step 100 "distillation, 16 steps" "$PY" "${DISTILL[@]}" --max_steps 16
step 100 "distillation resumed to 32 steps" "$PY" "${DISTILL[@]}" --max_steps 32 --resume_from_checkpoint last
cp "$WORK/student/trainer_state.json" "$OUT_DIR/distill_trainer_state.json" 2>/dev/null
cp "$WORK/student/README.md" "$OUT_DIR/distill_model_card.md" 2>/dev/null
# A fresh process outside the repo: the student's own code must be enough.
step 45 "load the student with trust_remote_code" bash -c "cd '$WORK' && '$PY' -c \"
import sys, torch
from transformers import AutoModel
model = AutoModel.from_pretrained('$WORK/student', trust_remote_code=True).eval()
assert 'modeling_armhubert' not in sys.modules and type(model).__module__.startswith('transformers_modules')
with torch.no_grad():
    out = model(torch.randn(1, 32000)).last_hidden_state
print('loaded', type(model).__name__, f'{model.num_parameters() / 1e6:.2f} M parameters, output', tuple(out.shape),
      'finite', bool(torch.isfinite(out).all()))
\""
fi

wanted speed && step 100 "inference speed" "$PY" -m benchmarks.inference_speed --device "$DEVICE" --dtype "${PRECISION/no/fp32}" \
    --batch-sizes 1 32 "${SPEED[@]}" --output "$OUT_DIR/inference_speed_$DEVICE.json"
wanted front && step 180 "conv encoder layouts" "$PY" -m benchmarks.front_end_layouts --device "$DEVICE" \
    "${FRONT[@]}" --output "$OUT_DIR/front_end_layouts_$DEVICE.json"
wanted e2e && step 200 "end-to-end distillation throughput" "$PY" -m benchmarks.distill_end_to_end --device "$DEVICE" \
    --corpus "$WORK/corpus" --teacher-dir "$WORK/teacher" --batch-size "$BATCH" "${E2E[@]}" \
    --output "$OUT_DIR/distill_end_to_end_$DEVICE.json"
wanted step && step 200 "step-level distillation throughput" "$PY" -m benchmarks.distill_throughput --device "$DEVICE" \
    --dtype "${PRECISION/no/fp32}" --profile "${STEP[@]}" --output "$OUT_DIR/distill_throughput_$DEVICE.json"
rm -rf "$WORK"
ls -l "$OUT_DIR"
exit $status
