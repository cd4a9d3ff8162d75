#!/usr/bin/env bash
# Every GPU measurement of docs/benchmarks/speed.md and likelihood.md in one command, sized for about
# 9 minutes on an H100/H200 (nothing is downloaded on the GPU machine).
#
#   bash benchmarks/gpu_check.sh FASHION_MNIST_DIR SOURCE_RUN OUT_DIR
#
# FASHION_MNIST_DIR holds the four IDX files (a copy of /usr/share/datasets/fashion-mnist that travels
# with the working tree). SOURCE_RUN is a Fashion-MNIST run of `vaelab train` with its last checkpoint
# (docs/benchmarks/likelihood.md: the gated 784-300-300 run at 635 epochs).
#
#  1. the CUDA tests (graph capture, IWAE and VampPrior under the graph);
#  2. benchmarks/speed.py on CUDA: the naive loop against vaelab at batch 128 and 1024, then the
#     same-learning check;
#  3. three Fashion-MNIST runs side by side on the one GPU until STOP_AT seconds into the script, each
#     stopped by SIGTERM (which ends the epoch and checkpoints): the ELBO run resumed, and two new runs
#     started from its weights (--init-from) and trained on the IWAE bound with k=10 and k=50;
#  4. each run finalised (--resume at its last epoch writes model.safetensors) and evaluated at K=5000.
#
# Everything lands in OUT_DIR/results.tgz, with the log beside it. Dry run on a CPU:
#   DEVICE=cpu STOP_AT=60 K=10 bash benchmarks/gpu_check.sh DATA SOURCE_RUN OUT
set -u -o pipefail
data=${1:?FASHION_MNIST_DIR}
src=${2:?SOURCE_RUN}
out=${3:?OUT_DIR}
device=${DEVICE:-cuda}
stop_at=${STOP_AT:-400}
k=${K:-5000}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
work=$(mktemp -d)
res=$work/results
mkdir -p "$out" "$res"
vaelab() { "$py" -m vaelab "$@"; }
step() { echo "== $* ($(date +%T), ${SECONDS}s)"; }

step "environment"
"$py" -c 'import torch; print(torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name())' |
    tee "$res/env.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 | tee -a "$res/env.txt"

if [ "$device" = cuda ]; then
    step "CUDA tests"
    timeout 120 "$py" -m pytest -q -p no:cacheprovider tests/test_engine.py -k cuda 2>&1 | tail -15 |
        tee "$res/cuda_tests.log"
    step "speed: naive loop against vaelab, batch 128 and 1024, then the same-learning check"
    speed=(benchmarks/speed.py --devices cuda --data-dir "$data" --epochs 3 --learn-epochs 5 --seeds 2)
    timeout 170 "$py" "${speed[@]}" --json "$res/speed.json" 2>"$res/speed.err" | tee "$res/speed.md" ||
        NAIVE_WORKERS=0 timeout 120 "$py" "${speed[@]}" --json "$res/speed.json" 2>>"$res/speed.err" |
        tee "$res/speed.md"
    tail -3 "$res/speed.err"
fi

step "Fashion-MNIST runs side by side until ${stop_at}s"
mkdir -p "$work/runs"
cp -r "$src" "$work/runs/elbo"
common=(--device "$device" --data-dir "$data" --checkpoint-every 100 --no-progress)
train_for=$((stop_at - SECONDS))
[ "$train_for" -lt 60 ] && train_for=60
echo "training for ${train_for}s"
timeout -s TERM "$train_for" "$py" -m vaelab train --resume "$work/runs/elbo" --epochs 5000 "${common[@]}" \
    >"$res/train_elbo.log" 2>&1 &
for kk in 10 50; do
    timeout -s TERM "$train_for" "$py" -m vaelab train --init-from "$src" --out "$work/runs/iwae$kk" \
        --objective iwae --k "$kk" --lr 3e-4 --batch-size 100 --epochs 5000 --seed 1 "${common[@]}" \
        >"$res/train_iwae$kk.log" 2>&1 &
done
wait
for r in elbo iwae10 iwae50; do tail -2 "$res/train_$r.log"; done

step "finalise (model.safetensors at the last checkpoint) and evaluate at K=$k"
for r in elbo iwae10 iwae50; do
    (
        run=$work/runs/$r
        last=$("$py" -c 'import json,sys; print(json.loads(open(sys.argv[1]).read().splitlines()[-1])["epoch"])' \
            "$run/metrics.jsonl")
        vaelab train --resume "$run" --epochs "$last" "${common[@]}" >"$res/final_$r.log" 2>&1
        timeout 150 "$py" -m vaelab evaluate "$run" --data-dir "$data" --importance-samples "$k" \
            --device "$device" --json "$res/eval_$r.json" --no-progress >"$res/eval_$r.log" 2>&1
        echo "$r: epoch $last, evaluate exit $?"
        cp "$run/metrics.jsonl" "$res/metrics_$r.jsonl"
        cp "$run/config.json" "$res/config_$r.json"
        cp "$run/samples.png" "$res/samples_$r.png" 2>/dev/null
    ) &
done
wait
for r in elbo iwae10 iwae50; do grep -h -E "nll|NLL|elbo" "$res/eval_$r.log" | head -4; done
step "done"
tar -C "$work" -czf "$out/results.tgz" results
