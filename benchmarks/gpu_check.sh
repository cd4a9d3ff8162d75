#!/usr/bin/env bash
# Every GPU check of the speed and likelihood issues in one command, for a session lent an H100/H200
# for a few minutes (about 9 minutes of GPU time in all; nothing is downloaded there).
#
#   bash benchmarks/gpu_check.sh FASHION_MNIST_DIR OUT_DIR [EPOCHS]
#
# FASHION_MNIST_DIR holds the four IDX files (train-images-idx3-ubyte.gz, ...): copy
# /usr/share/datasets/fashion-mnist into a folder that travels with the working tree. EPOCHS (default
# 635, the calibration run of issue 4) is the likelihood run's length; `EPOCHS=2 DEVICE=cpu` is a dry run
# of the whole script on a CPU. Everything lands in OUT_DIR: logs, speed.json, the run's metrics and
# evaluate.json.
set -u -o pipefail
data=${1:?FASHION_MNIST_DIR}
out=${2:?OUT_DIR}
epochs=${3:-635}
device=${DEVICE:-cuda}
k=${K:-5000}
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
run=$(mktemp -d)/fmnist

step() { echo "== $* ($(date +%T))"; }

step "environment"
"$py" -c 'import torch; print(torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name())' |
    tee "$out/env.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null | tee -a "$out/env.txt"

if [ "$device" = cuda ]; then
    step "CUDA tests (graph capture, fused Adam, warm-up undo)"
    "$py" -m pytest -q -p no:cacheprovider tests/test_engine.py -k cuda 2>&1 | tail -5 | tee "$out/cuda_tests.log"
    step "speed: naive loop against vaelab, batch 128 and 1024"
    timeout 150 "$py" benchmarks/speed.py --devices cuda --data-dir "$data" --epochs 5 --learn-epochs 0 \
        --json "$out/speed.json" 2>&1 | tee "$out/speed.log"
fi

step "likelihood: gated 784-300-300, z=40, batch 100, Adam 5e-4, warm-up 50, $epochs epochs"
start=$SECONDS
timeout 360 "$py" -m vaelab train --data fashion-mnist \
    --data-dir "$data" --binarize dynamic --hidden 300,300 --gated --latent-dim 40 --batch-size 100 \
    --lr 5e-4 --kl-warmup 50 --epochs "$epochs" --checkpoint-every 50 --seed 0 --device "$device" \
    --out "$run" --no-progress > "$out/train.log" 2>&1
echo "train exit $?, $((SECONDS - start)) s wall (start-up and per-epoch test evaluation included)"
tail -3 "$out/train.log"
cp "$run/metrics.jsonl" "$run/config.json" "$out/" 2>/dev/null

step "K=$k importance-sampled NLL on the 10,000 test images"
timeout 150 "$py" -m vaelab evaluate "$run" --data-dir "$data" --importance-samples "$k" --device "$device" \
    --json "$out/evaluate.json" --no-progress 2>&1 | tee "$out/evaluate.log"
step "done"
