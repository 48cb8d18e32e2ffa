#!/usr/bin/env bash
# One GPU session's checks, in one go (a lent GPU is held by the minute, so nothing here waits on anything):
#   1. the CUDA tests (tests/training/test_cuda.py: bf16 training, CPU/GPU agreement, resume, export parity);
#   2. benchmarks/bench_train.py --device cuda: chars/s of the README's training table on the GPU;
#   3. two larger speaker-conditioned GRUs trained side by side on a chat store for the evaluation table.
#
#   benchmarks/gpu_session.sh DATA OUT      DATA holds mimic.db (a store) and plays.txt; results go to OUT
#
# Budgets come from the environment: BENCH_BUDGET (s per bench row, default 20), TRAIN_BUDGET (s, default 250).
# DEVICE=cpu dry-runs the whole thing on a machine without a GPU. Checkpoints come back without their optimiser
# state and in 14 MB parts (the device tool returns files of at most 16 MiB): `cat a.pt.part-* > a.pt`.
set -u
data=$1 out=$2
device=${DEVICE:-cuda}
bench_budget=${BENCH_BUDGET:-20}
train_budget=${TRAIN_BUDGET:-250}
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$out" /tmp/gpu_runs
log=$out/log.txt
exec > >(tee -a "$log") 2>&1

echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
$py -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"

echo "== CUDA tests"
$py -m pytest -q -p no:cacheprovider tests/training/test_cuda.py 2>&1 | tail -15

echo "== bench_train --device $device"
$py benchmarks/bench_train.py --text "$data/plays.txt" --device "$device" --budget "$bench_budget" \
    --archs gru,lstm,darknet-rnn,gru --layers 1,1,3,1 --hidden 256,224,224,512
$py benchmarks/bench_train.py --text "$data/plays.txt" --device "$device" --budget "$bench_budget" \
    --archs gru,gru --layers 2,2 --hidden 512,768 --batch-size 128 --seq-len 256 --lr 2e-3

echo "== training on the store, two models side by side"
train() {  # name hidden dropout
    rm -rf "/tmp/gpu_runs/$1"  # a new run: mimic train will not write over an older one
    $py -m bot.cli train --db "$data/mimic.db" --hidden "$2" --layers 2 --dropout "$3" --batch-size 128 \
        --seq-len 256 --lr 2e-3 --time-budget "$train_budget" --eval-every 250 --checkpoint-every 100000 \
        --device "$device" --no-export --out "/tmp/gpu_runs/$1" > "/tmp/gpu_runs/$1.log" 2>&1
    echo "$1 exit $?"
}
train a 512 0.25 & first=$!
train b 768 0.35 & second=$!
wait "$first" "$second"  # a bare `wait` would also wait for the tee above, forever
for name in a b; do
    tail -c 2000 "/tmp/gpu_runs/$name.log" | tr '\r' '\n' | tail -8
    $py - "$name" "$out" <<'EOF'
import sys, torch
name, out = sys.argv[1], sys.argv[2]
ckpt = torch.load(f"/tmp/gpu_runs/{name}/last.pt", map_location="cpu", weights_only=True)
print(name, "step", ckpt["step"], "val_bpc", ckpt["val_bpc"], "params", ckpt["parameters"])
for key in ("optimizer", "hidden"):  # what a resume needs and serving does not: too big to bring back
    ckpt[key] = {} if key == "optimizer" else None
torch.save(ckpt, f"/tmp/gpu_runs/{name}.pt")
EOF
    split -b 14M -d "/tmp/gpu_runs/$name.pt" "$out/$name.pt.part-"
    cp "/tmp/gpu_runs/$name/history.json" "$out/$name.history.json"
done
ls -la "$out"
