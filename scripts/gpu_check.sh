#!/usr/bin/env bash
# The GPU check: one command, about 6-8 minutes on one GPU. Every part is time-boxed; the summary
# (OUT/summary.md) is written as the parts finish, each row PASS, FAIL or NOT RUN with its numbers.
#
#   bash scripts/gpu_check.sh [OUT]                       # OUT defaults to runs/gpu_check
#   GPU_CHECK_DATA=.gpu/data bash scripts/gpu_check.sh    # data made by scripts/gpu_check_data.py elsewhere
#
# Parts: the gpu-marked tests (algo and loss functions on CUDA, CUDA against CPU, NCCL collectives);
# `deepspeed` runs of the tiny models with NCCL and bf16 (Qwen2-VL ZeRO-3 HF generate; text ZeRO-2 with
# the static decoder and the KL reference model; the cross-modal mixture under ZeRO-3), on 1 GPU and on
# 2 where present; the vLLM GPU tests where vllm is installed; scripts/bench_gpu.py at real size
# (Qwen2.5-VL 3B student, 7B teacher, random weights, bf16, ZeRO-3), and its student's rollout of 64 x 4,096 tokens alone
# with its peak memory (the [N, T, V] logits are never held).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/gpu_check}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export FORCE_QWENVL_VIDEO_READER=${FORCE_QWENVL_VIDEO_READER:-decord} TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
SUMMARY="$OUT/summary.md"
FAILED=0

row() { echo "| $1 | $2 | $3 | $4 |" | tee -a "$SUMMARY"; }
# part NAME SECONDS CMD...: runs CMD with a time limit, its output in OUT/NAME.log; sets RC and DT
part() {
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  echo "== $name (limit ${limit}s)"
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  RC=$?; DT=$((SECONDS - t0))
  if [ $RC -ne 0 ]; then FAILED=$((FAILED + 1)); tail -20 "$OUT/$name.log"; fi
}
verdict() { if [ "$RC" -eq 0 ]; then echo PASS; elif [ "$RC" -eq 124 ]; then echo "FAIL (time limit)"; else echo "FAIL (rc $RC)"; fi; }

NGPU=$($PY -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)
{
  echo "# GPU check, $(date -u +%Y-%m-%d)"
  $PY - <<'PY'
import importlib, platform, torch
v = {m: getattr(importlib.import_module(m), "__version__", "?") for m in ("torch", "transformers", "deepspeed")}
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
print(f"{torch.cuda.device_count()} x {gpu}; Python {platform.python_version()}; "
      + ", ".join(f"{k} {x}" for k, x in v.items()) + f"; CUDA {torch.version.cuda}")
PY
  echo
  echo "| part | verdict | seconds | numbers |"
  echo "|---|---|---|---|"
} | tee "$SUMMARY"
if [ "$NGPU" -lt 1 ]; then row "all" "NOT RUN" 0 "no CUDA device"; exit 1; fi

# data and tiny models (the tiny configs read artifacts/tiny and artifacts/synthetic)
DATA=${GPU_CHECK_DATA:-$OUT/data}
[ -f "$DATA/tests/train.jsonl" ] || $PY scripts/gpu_check_data.py --out "$DATA" > "$OUT/data.log" 2>&1
[ -f artifacts/synthetic/train.jsonl ] || { mkdir -p artifacts && cp -r "$DATA/synthetic" artifacts/synthetic; }
part models 180 $PY scripts/make_tiny_models.py --out artifacts/tiny --preset qwen2_vl-student qwen2_vl-teacher \
  qwen3-student qwen3-teacher
row "tiny models" "$(verdict)" $DT ""

part tests_gpu 240 env UNIOPD_TEST_DATA="$DATA/tests" $PY -m pytest -q -p no:cacheprovider -m gpu -rs \
  tests/algo tests/test_gpu.py
row "gpu-marked tests (algo on CUDA, CUDA = CPU, NCCL collectives)" "$(verdict)" $DT \
  "$(grep -E '[0-9]+ (passed|failed)' "$OUT/tests_gpu.log" | tail -1)"

# metrics NAME: steps, median step time, peak GPU memory, reverse KL, skipped steps of a run
metrics() {
  $PY - "$OUT/$1/metrics.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
rows = [r for r in rows if r.get("time/step") is not None]
peak = max((r.get("memory/peak_gib") or 0) for r in rows)
print(f"{len(rows)} steps; step {statistics.median(r['time/step'] for r in rows):.2f} s; "
      f"memory/peak_gib {peak:.2f}; reverse KL {rows[-1]['opd/reverse_kl']:.3f}; "
      f"skipped {sum(r.get('train/skipped', 0) for r in rows):.0f}; grad_norm {rows[-1]['train/grad_norm']:.3g}")
PY
}
COMMON="train.engine=deepspeed train.precision=bf16 train.steps=3 train.save_every=0 train.eval_every=0 \
  train.prompts_per_step=8 train.micro_batch_size=8 rollout.n=4 rollout.max_new_tokens=32 logging.progress=false"
for n in 1 2; do
  [ "$NGPU" -ge $n ] || { row "deepspeed x$n GPUs" "NOT RUN" 0 "$NGPU GPU(s) here"; continue; }
  DS="$PY -m deepspeed.launcher.runner --num_gpus $n --master_port $((29500 + n))"
  part ds_vl_z3_g$n 180 $DS scripts/train_mm.py --config scripts/configs/tiny_qwen2_vl.yaml $COMMON \
    output_dir="$OUT/ds_vl_z3_g$n" train.zero_stage=3
  row "Qwen2-VL ZeRO-3 bf16 NCCL, HF generate, $n GPU" "$(verdict)" $DT "$(metrics ds_vl_z3_g$n 2>&1 | tail -1)"
  part ds_text_z2_g$n 180 $DS scripts/train_mm.py --config scripts/configs/tiny_text.yaml $COMMON \
    output_dir="$OUT/ds_text_z2_g$n" train.zero_stage=2 rollout.decoder=static algo.kl_coef=0.01
  row "text ZeRO-2 bf16 NCCL, static decoder, KL reference, $n GPU" "$(verdict)" $DT \
    "$(metrics ds_text_z2_g$n 2>&1 | tail -1)"
  part ds_xmodal_z3_g$n 180 $DS scripts/train_mm.py --config scripts/configs/tiny_cross_modal.yaml $COMMON \
    output_dir="$OUT/ds_xmodal_z3_g$n" train.zero_stage=3
  row "cross-modal mixture ZeRO-3 bf16 NCCL, $n GPU" "$(verdict)" $DT "$(metrics ds_xmodal_z3_g$n 2>&1 | tail -1)"
done

if $PY -c "import vllm" > /dev/null 2>&1; then
  part vllm_gpu 240 env UNIOPD_TEST_DATA="$DATA/tests" $PY -m pytest -q -p no:cacheprovider -m gpu tests/vllm_engines
  row "vLLM GPU tests" "$(verdict)" $DT "$(grep -E '[0-9]+ (passed|failed)' "$OUT/vllm_gpu.log" | tail -1)"
else
  row "vLLM rollouts and teacher" "NOT RUN" 0 "vllm is not installed here"
fi

part rollout_memory ${ROLLOUT_LIMIT:-300} $PY scripts/bench_gpu.py --rollout-memory --out "$OUT/rollout_memory" \
  --n 64 --max-new-tokens ${ROLLOUT_TOKENS:-4096}
row "rollout 64 x ${ROLLOUT_TOKENS:-4096} tokens, 3B-shaped student, V = 151936" "$(verdict)" $DT \
  "$(head -1 "$OUT/rollout_memory/report.md" 2>/dev/null)"

for z in 2 3; do
  part floor_z$z ${FLOOR_LIMIT:-240} $PY scripts/bench_floor.py --shape 3b-7b --engine deepspeed --zero-stage $z \
    --out "$OUT/floor_z$z" --prompts 8 --n 4 --max-new-tokens 128 --steps 3 --warmup 1
  row "every stage against its floor, 3B / 7B, ZeRO-$z bf16" "$(verdict)" $DT \
    "$(grep 'whole step' "$OUT/floor_z$z/report.md" 2>/dev/null)"
done

part bench_gpu ${BENCH_LIMIT:-330} $PY scripts/bench_gpu.py --out "$OUT/bench" --data "$DATA/bench" \
  --steps ${BENCH_STEPS:-3} --prompts 8 --n 4 --max-new-tokens ${BENCH_TOKENS:-128}
row "bench_gpu 3B student / 7B teacher, bf16 ZeRO-3" "$(verdict)" $DT \
  "$(tail -3 "$OUT/bench/report.md" 2>/dev/null | tr '\n' ' ')"
cat "$OUT/bench/report.md" 2>/dev/null
echo
echo "summary: $OUT/summary.md ($FAILED part(s) failed)"
exit $((FAILED > 0))
