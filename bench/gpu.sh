#!/usr/bin/env bash
# The GPU benchmarks in one prepared run, for a lent GPU machine (bare image with CUDA torch,
# transformers and accelerate, no ROS, no MuJoCo, no network). Nothing is installed there:
# clap_train is pure Python and is imported from the source tree.
#
# Here, once (the Act-VAE data comes from clap_sim, which needs MuJoCo):
#     source scripts/env.sh && python bench/act_vae_sim_psnr.py --train-seeds 300 --write-episodes bench/out/sim_episodes.npz
# There (device tool, carry bench/out/sim_episodes.npz, timeout_s 600):
#     OUT=$OUT bash bench/gpu.sh
# Figures land in $OUT (latency_4b.json, act_vae_sim.json, gpu.log) for bench/RESULTS.md.
# Each part has its own time limit, so the whole run ends inside one 10-minute call.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-bench/out/gpu}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src/clap_train${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
PY="${PYTHON:-python3}"
exec > >(tee "$OUT/gpu.log") 2>&1

"$PY" - <<'EOF'
import torch, transformers
print("torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__)
print("device:", torch.cuda.get_device_name() if torch.cuda.is_available() else "NO CUDA DEVICE")
EOF

echo "== CLAP-NTP vs CLAP-RF latency, Qwen3-VL-4B shape, random bf16 weights (issue 5)"
timeout 240 "$PY" bench/latency.py --config config/model/qwen3vl-4b-instruct.config.json --device cuda \
  --repeats 30 --out "$OUT/latency_4b.json" || echo "latency: exit $?"

echo "== Act-VAE (16, 256) on the scripted sim demonstrations, GPU budget (issue 4)"
if [ -f bench/out/sim_episodes.npz ]; then
  rm -f /tmp/act_vae_sim_gpu/result.json  # a rerun resumes the checkpoints, never reports an old result
  timeout 270 "$PY" bench/act_vae_sim_psnr.py --episodes bench/out/sim_episodes.npz --device cuda \
    --steps "${ACT_VAE_STEPS:-10000}" --batch-size 1024 --d-model 256 --layers 4 \
    --out /tmp/act_vae_sim_gpu || echo "act-vae: exit $?"
  cp /tmp/act_vae_sim_gpu/result.json "$OUT/act_vae_sim.json" 2>/dev/null || true
else
  echo "bench/out/sim_episodes.npz missing: write it here first (see the top of bench/gpu.sh) and carry it"
fi
