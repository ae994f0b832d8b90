#!/bin/sh
# Plots the experiments' seed means with Debian's gnuplot (gnuplot-nox): for every
# DIR/<name>_mean.csv (written by examples/deepen_mnist and grow_fashion) it writes
#   DIR/<name>_accuracy.png   test accuracy against epochs, one line per method, bars min..max
#   DIR/<name>_cost.png       test accuracy against cumulative training cost (GFLOPs)
# and for every DIR/<name>_loss.csv (examples/adam_fashion: method,step,mean,min,max)
#   DIR/<name>_loss.png       training loss against steps after the morph, bars min..max
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
for csv in "$dir"/*_loss.csv; do
  [ -e "$csv" ] || continue
  name=$(basename "$csv" _loss.csv)
  tmp=$(mktemp -d)
  awk -F, -v out="$tmp" 'NR > 1 { f = out "/" $1 ".dat"; print $2, $3, $4, $5 > f }' "$csv"
  plot_l=""
  for m in $(ls "$tmp" | sed 's/\.dat$//'); do
    plot_l="$plot_l${plot_l:+, }'$tmp/$m.dat' using 1:2:3:4 with yerrorlines title '$m'"
  done
  gnuplot <<GP
set terminal pngcairo size 900,560 noenhanced
set datafile separator " "
set key top right
set grid
set xlabel "training steps after the morph"
set ylabel "training loss (window mean, mean over seeds; bars: min..max)"
set title "$name: training loss right after the morph"
set output "$dir/${name}_loss.png"
plot $plot_l
GP
  rm -rf "$tmp"
  echo "plot_results.sh: $dir/${name}_loss.png"
done
[ "$found" = 1 ] || { echo "plot_results.sh: no *_mean.csv in $dir" >&2; exit 1; }
