#!/usr/bin/env python3
"""Markdown tables of the experiments: for every DIR/<name>.csv written by examples/deepen_mnist
or grow_fashion, each method's last evaluation of every seed on validation and test (mean +- std
over seeds), its epochs and cumulative training cost (parents' training included). Standard
library only.

    scripts/summarize_results.py [DIR]      (default: docs/results)
"""
import csv
import glob
import os
import statistics
import sys


def main():
    d = sys.argv[1] if len(sys.argv) > 1 else "docs/results"
    for path in sorted(glob.glob(os.path.join(d, "*.csv"))):
        if path.endswith("_mean.csv") or path.endswith("_loss.csv"):
            continue
        last, order = {}, []
        with open(path) as f:
            for row in csv.DictReader(f):
                m = row["method"]
                if m not in order:
                    order.append(m)
                key = (m, row["seed"], row["split"])
                if key not in last or int(row["epoch"]) >= int(last[key]["epoch"]):
                    last[key] = row
        print(f"\n{os.path.basename(path)[:-4]}\n")
        print("| method | epochs | cost (GFLOPs) | validation | test | seeds |")
        print("|---|--:|--:|--:|--:|--:|")

        def stat(values):
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            return f"{statistics.mean(values):.4f} +- {sd:.4f}"

        for m in order:
            seeds = sorted({k[1] for k in last if k[0] == m})
            val = [float(last[(m, s, "validation")]["accuracy"]) for s in seeds]
            test = [float(last[(m, s, "test")]["accuracy"]) for s in seeds]
            epochs = sorted({last[(m, s, "test")]["epoch"] for s in seeds}, key=int)
            cost = statistics.mean(float(last[(m, s, "test")]["cost"]) for s in seeds) / 1e9
            print(f"| {m} | {'/'.join(epochs)} | {cost:.0f} | {stat(val)} | {stat(test)} | "
                  f"{len(seeds)} |")


if __name__ == "__main__":
    main()
