"""End-to-end time of morphing torchvision's vgg11 (random weights, float32, 3 x 224 x 224 inputs)
through the PyTorch bridge, and where it goes: the bridge's save, netmorph-morph (load, morph with
its probes, save; the reports' seconds are the morphs themselves), the bridge's load, and the
torch check; then the one-call nmt.morph() on the same ops.

    NETMORPH_MORPH=build-bench/netmorph-morph /usr/bin/python3 bench/bench_torch_morph.py
"""

import json
import os
import subprocess
import sys
import tempfile
import time

import torch
import torchvision

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))
import netmorph_torch as nmt  # noqa: E402

OPS = ["deepen:features.3", "widen:features.0:to=80", "kernel:features.6:to=5"]
SHAPE = (3, 224, 224)


def main():
    torch.manual_seed(0)
    model = torchvision.models.vgg11().eval()
    cmd = nmt._command(None)
    with tempfile.TemporaryDirectory() as d:
        parent, child = os.path.join(d, "parent.safetensors"), os.path.join(d, "child.safetensors")
        t = time.perf_counter()
        nmt.save(model, parent, SHAPE)
        t_save = time.perf_counter() - t
        size = os.path.getsize(parent)
        t = time.perf_counter()
        r = subprocess.run([cmd, "--json", parent, child] + OPS, capture_output=True, text=True,
                           check=True)
        t_cli = time.perf_counter() - t
        reports = json.loads(r.stdout)
        t_morphs = sum(rep["seconds"] for rep in reports)
        t = time.perf_counter()
        net = nmt.load(child).eval()
        t_load = time.perf_counter() - t
        x = torch.randn((4,) + SHAPE)
        t = time.perf_counter()
        with torch.no_grad():
            err = nmt._relative_error(net(x), model(x))
        t_check = time.perf_counter() - t
    t = time.perf_counter()
    _, reps = nmt.morph(model, OPS, SHAPE)
    t_call = time.perf_counter() - t
    print(f"vgg11 float32, file {size / 1e6:.1f} MB, ops {' '.join(OPS)}")
    print(f"  bridge save                     {t_save:7.2f} s")
    print(f"  netmorph-morph (whole command)  {t_cli:7.2f} s")
    print(f"    of which the morphs (reports) {t_morphs:7.2f} s: "
          + ", ".join(f"{rep['operation']} {rep['seconds']:.2f}" for rep in reports))
    print(f"    load + save + rest            {t_cli - t_morphs:7.2f} s")
    print(f"  bridge load                     {t_load:7.2f} s")
    print(f"  torch check (4 inputs, 2 nets)  {t_check:7.2f} s  relative error {err:.2e}")
    print(f"  nmt.morph() in one call         {t_call:7.2f} s  "
          f"(torch-measured error {reps[0]['torch_relative_output_error']:.2e})")


if __name__ == "__main__":
    main()
