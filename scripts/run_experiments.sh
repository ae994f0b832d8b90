#!/bin/sh
# The full runs recorded in docs/RESULTS.md, with each one's wall time, in two lanes (one per
# core): the Fashion-MNIST depth chain, the longest run, beside all the others in turn.
#   scripts/run_experiments.sh [OUT]      (default docs/results; build/ must hold the examples)
# Needs scripts/setup_data.sh to have run (data/) and dataset-fashion-mnist.
set -eu
# One thread per run: the small models gain nothing from a second, and runs stay comparable.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/docs/results}
bin=$root/build/examples
mkdir -p "$out"
run() {
  name=$1; shift
  start=$(date +%s)
  echo "== $name: $*"
  "$@" > "$out/$name.log" 2>&1
  echo "== $name: $(( $(date +%s) - start )) s" | tee -a "$out/times.txt"
}
: > "$out/times.txt"
# Experiments 2 and 3 (4.2-4.3 adapted to Fashion-MNIST), on subsets that fit the time.
fm="--seeds 3 --train=2000 --validation=500 --test=2000 --epochs=2"
run grow_fashion_depth "$bin/grow_fashion" --out "$out" --chain=depth $fm &
depth=$!
# Experiment 1 (paper 4.1) as the paper ran it, and 5: one setting a user controls changed at a
# time (compared on validation). deepen_mnist's defaults are the best of these (best_highlr).
mn="$bin/deepen_mnist --data $root/data --out $out"
paper="--parent_stop=converged --child_lr=1"
run deepen_mnist $mn $paper
run deepen_mnist_best $mn $paper --parent_stop=best --tag=deepen_mnist_best
run deepen_mnist_lowlr $mn $paper --child_lr=0.2 --tag=deepen_mnist_lowlr
run deepen_mnist_warmup $mn $paper --warmup=5 --tag=deepen_mnist_warmup
run deepen_mnist_highlr $mn $paper --child_lr=3 --tag=deepen_mnist_highlr
run deepen_mnist_lr6 $mn $paper --child_lr=6 --tag=deepen_mnist_lr6
run deepen_mnist_wd $mn $paper --weight_decay=5e-4 --tag=deepen_mnist_wd
run deepen_mnist_sp $mn $paper --shrink=0.5 --perturb=0.01 --tag=deepen_mnist_sp
run deepen_mnist_best_highlr $mn --tag=deepen_mnist_best_highlr  # the defaults
# Experiment 4 (Table 2 at full size, random weights).
run morph_vgg16 "$bin/morph_vgg16"
run grow_fashion_kernel-width "$bin/grow_fashion" --out "$out" --chain=kernel-width $fm
# Experiment 5 on Fashion-MNIST: the child's learning rate (3x, as deepen_mnist's default; 0.3x).
run grow_fashion_lr3_kernel-width "$bin/grow_fashion" --out "$out" --chain=kernel-width $fm \
  --child_lr=3 --tag=grow_fashion_lr3
run grow_fashion_lr03_kernel-width "$bin/grow_fashion" --out "$out" --chain=kernel-width $fm \
  --child_lr=0.3 --tag=grow_fashion_lr03
# Keep training where you stopped (RESULTS.md §5): Adam's state carried through a morph, reset,
# or reset with a warm-up.
run adam_fashion "$bin/adam_fashion" --out "$out" --seeds 3
wait $depth
/usr/bin/python3 "$root/scripts/summarize_results.py" "$out" > "$out/summary.md"
sh "$root/scripts/plot_results.sh" "$out"
