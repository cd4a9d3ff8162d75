#!/usr/bin/env bash
# A Fashion-MNIST quality run sized for about 9 minutes of one GPU: a gated
# model (MODEL, below) on dynamically binarized Fashion-MNIST, trained on the ELBO for ELBO_S seconds, then
# fine-tuned on the IWAE bound (k=50) from its weights for IWAE_S seconds at lr 3e-4, then LOWLR_S seconds
# at LOWLR (3e-5), each stopped by SIGTERM (the epoch ends and is checkpointed). The ELBO model and the
# final one are evaluated at K=5000. On the CPU lowering the lr gained 0.42 nats after an IWAE stage
# that gained 0.97 (docs/benchmarks/likelihood.md); LOWLR_S=0 skips it.
#
#   bash benchmarks/gpu_quality.sh FASHION_MNIST_DIR OUT_DIR
#
# MODEL picks the model, or several separated by spaces (MODEL="hvae convhvae"), which then train side by
# side on the one device, each with its own ELBO and IWAE phases (small models leave most of an H100 idle):
#   hvae (default): the two-level hierarchical VAE with a VampPrior over z2 (z1 = z2 = 40 dims, K=500
#                   pseudo-inputs), the configuration of the VampPrior paper's best non-autoregressive
#                   MLP (on the digits: docs/benchmarks/model_family.md);
#   vamp:           the one-level VampPrior MLP (z = 40). Its ELBO phase runs at 0.45 s/epoch alone on
#                   an H100 (323 epochs in 147 s: 227.51 nats, docs/benchmarks/likelihood.md);
#   convhvae:       the same hierarchy with gated conv encoders and decoder (channels 32,64, then one
#                   hidden layer of 300), the VampPrior over z2.
# The whole script takes about 580 s (timeout_s 600); EVAL_TIMEOUT (150 s) bounds each K=5000 evaluation.
# OUT_DIR gets results/ (logs, metrics, configs, evaluate JSON, samples) and each run's
# config.json + model.safetensors, so the trained models come back too.
# HOLDOUT=F (default off) trains every stage with --holdout F --lr-drop LR_DROP (default 5): each stage
# keeps its best epoch on F of the training images, never on the test split, and lowers its lr on a plateau.
# A stopped run finishes its epoch first, and on the CPU an IWAE k=50 epoch of these models takes many
# minutes, so a CPU dry run uses a small IWAE_K (a few minutes in all):
#   DEVICE=cpu ELBO_S=30 IWAE_S=20 LOWLR_S=20 IWAE_K=2 K=10 PSEUDO=20 bash benchmarks/gpu_quality.sh DATA OUT
# (PYTHON=.venv/bin/python where python3 has no torch; with HOLDOUT=0.1 such a dry run takes about 3 minutes)
set -u -o pipefail
data=${1:?FASHION_MNIST_DIR}
out=${2:?OUT_DIR}
device=${DEVICE:-cuda}
elbo_s=${ELBO_S:-280}
iwae_s=${IWAE_S:-100}
lowlr_s=${LOWLR_S:-40}
lowlr=${LOWLR:-3e-5}
k=${K:-5000}
pseudo=${PSEUDO:-500}
iwae_k=${IWAE_K:-50}
read -ra models <<<"${MODEL:-hvae}"  # one or more, trained side by side on the one device
eval_timeout=${EVAL_TIMEOUT:-150}
holdout=()
[ -n "${HOLDOUT:-}" ] && holdout=(--holdout "$HOLDOUT" --lr-drop "${LR_DROP:-5}")
shape_of() {  # MODEL -> its network flags
    case $1 in
        hvae) echo "--hidden 300,300 --latent-dim 80 --top-latent-dim 40" ;;
        vamp) echo "--hidden 300,300 --latent-dim 40" ;;
        convhvae) echo "--arch conv --channels 32,64 --hidden 300 --latent-dim 80 --top-latent-dim 40" ;;
        *) return 1 ;;
    esac
}
for m in "${models[@]}"; do
    shape_of "$m" >/dev/null || { echo "MODEL must list hvae, vamp or convhvae; got '$m'" >&2; exit 2; }
done
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
work=$(mktemp -d)
res=$out/results  # written as it goes: whatever finished is kept even if the machine is taken away
mkdir -p "$out" "$res"
step() { echo "== $* ($(date +%T), ${SECONDS}s)"; }
common=(--device "$device" --data-dir "$data" --checkpoint-every 100 --no-progress)
fixed=("${holdout[@]}")  # flags a new run takes and its --resume may not repeat

evaluate() {  # RUN NAME: keep the run's files, then its K=$k test NLL
    mkdir -p "$out/$2" && cp "$1/config.json" "$1/model.safetensors" "$out/$2/"
    cp "$1/metrics.jsonl" "$res/metrics_$2.jsonl"
    cp "$1/config.json" "$res/config_$2.json"
    cp "$1/samples.png" "$res/samples_$2.png" 2>/dev/null
    timeout "$eval_timeout" "$py" -m vaelab evaluate "$1" --data-dir "$data" --importance-samples "$k" \
        --device "$device" --json "$res/eval_$2.json" --no-progress 2>&1 | tee "$res/eval_$2.log"
}

finish() {  # RUN: write model.safetensors and the pictures at the last checkpointed epoch
    local last
    last=$("$py" -c 'import json,sys; print(json.loads(open(sys.argv[1]).read().splitlines()[-1])["epoch"])' \
        "$1/metrics.jsonl")
    "$py" -m vaelab train --resume "$1" --epochs "$last" "${common[@]}" >>"$res/finish_$(basename "$1").log" 2>&1
}

pipeline() {  # MODEL: the ELBO phase, then the IWAE phase from its weights, each evaluated
    local model=$1 shape
    read -ra shape <<<"$(shape_of "$model")"
    step "$model on the ELBO for ${elbo_s}s"
    timeout -s TERM "$elbo_s" "$py" -m vaelab train --data fashion-mnist --binarize dynamic --gated \
        "${shape[@]}" --prior vamp --pseudo-inputs "$pseudo" --batch-size 100 --lr 5e-4 \
        --kl-warmup 50 --epochs 5000 --seed 0 --out "$work/$model" "${common[@]}" "${fixed[@]}" \
        >"$res/train_$model.log" 2>&1
    tail -2 "$res/train_$model.log"
    finish "$work/$model"
    evaluate "$work/$model" "$model"

    step "$model: IWAE k=$iwae_k from its weights for ${iwae_s}s"
    timeout -s TERM "$iwae_s" "$py" -m vaelab train --init-from "$work/$model" --out "$work/${model}_iwae50" \
        --objective iwae --k "$iwae_k" --lr 3e-4 --batch-size 100 --epochs 5000 --seed 1 "${common[@]}" \
        "${fixed[@]}" >"$res/train_${model}_iwae50.log" 2>&1
    tail -2 "$res/train_${model}_iwae50.log"
    local last=${model}_iwae50
    if [ "$lowlr_s" -gt 0 ]; then
        step "$model: the same at lr $lowlr from its weights for ${lowlr_s}s"
        last=${model}_iwae50_lowlr
        timeout -s TERM "$lowlr_s" "$py" -m vaelab train --init-from "$work/${model}_iwae50" --out "$work/$last" \
            --objective iwae --k "$iwae_k" --lr "$lowlr" --batch-size 100 --epochs 5000 --seed 2 "${common[@]}" \
            "${fixed[@]}" >"$res/train_$last.log" 2>&1
        tail -2 "$res/train_$last.log"
    fi
    finish "$work/$last"
    evaluate "$work/$last" "$last"
    step "$model done"
}

for m in "${models[@]}"; do
    pipeline "$m" >"$res/pipeline_$m.log" 2>&1 &
done
wait
cat "$res"/pipeline_*.log
