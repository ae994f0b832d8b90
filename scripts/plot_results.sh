#!/bin/sh
# Plots the experiments' seed means with Debian's gnuplot (gnuplot-nox): for every
# DIR/<name>_mean.csv (written by examples/deepen_mnist and grow_fashion) it writes
#   DIR/<name>_accuracy.png   test accuracy against epochs, one line per method, bars min..max
#   DIR/<name>_cost.png       test accuracy against cumulative training cost (GFLOPs)
# Usage: scripts/plot_results.sh [DIR]   (default: results)
set -eu
dir=${1:-results}
command -v gnuplot >/dev/null 2>&1 || { echo "plot_results.sh: gnuplot not found (apt-get install gnuplot-nox)" >&2; exit 2; }
found=0
for csv in "$dir"/*_mean.csv; do
  [ -e "$csv" ] || continue
  found=1
  name=$(basename "$csv" _mean.csv)
  tmp=$(mktemp -d)
  # One data file per method: epoch, cost in GFLOPs, mean, min, max of the test accuracy.
  awk -F, -v out="$tmp" 'NR > 1 && $4 == "test" {
      f = out "/" $1 ".dat"; print $2, $3 / 1e9, $5, $7, $8 > f }' "$csv"
  methods=$(ls "$tmp" | sed 's/\.dat$//')
  plot_a="" plot_c=""
  for m in $methods; do
    plot_a="$plot_a${plot_a:+, }'$tmp/$m.dat' using 1:3:4:5 with yerrorlines title '$m'"
    plot_c="$plot_c${plot_c:+, }'$tmp/$m.dat' using 2:3 with linespoints title '$m'"
  done
  gnuplot <<GP
set terminal pngcairo size 900,560 noenhanced
set datafile separator " "
set key bottom right
set grid
set ylabel "test accuracy (mean over seeds; bars: min..max)"
set xlabel "epoch (a morphed path counts its parents' epochs)"
set title "$name: test accuracy against epochs"
set output "$dir/${name}_accuracy.png"
plot $plot_a
set xlabel "cumulative training cost, GFLOPs (parents' training included)"
set ylabel "test accuracy (mean over seeds)"
set title "$name: test accuracy against training cost"
set output "$dir/${name}_cost.png"
plot $plot_c
GP
  rm -rf "$tmp"
  echo "plot_results.sh: $dir/${name}_accuracy.png, $dir/${name}_cost.png"
done
[ "$found" = 1 ] || { echo "plot_results.sh: no *_mean.csv in $dir" >&2; exit 1; }
