"""The PyTorch bridge, checked in torch: every morph type in float32 and float64, torchvision's
vgg11 and resnet18, file round trips, and the errors. Run by CTest with NETMORPH_MORPH set to the
built netmorph-morph and python/ on PYTHONPATH:  python3 -m unittest tests/python/test_torch_bridge.py
"""

import os
import sys
import tempfile
import unittest

import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "python"))
import netmorph_torch as nmt  # noqa: E402

TOL = {torch.float32: 1e-5, torch.float64: 1e-10}


def rel(a, b):
    return float(torch.linalg.vector_norm((a - b).double()) / torch.linalg.vector_norm(b.double()))


def randomise(module, seed):
    """Random weights everywhere, batch-norm statistics included (so they matter)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(module.named_parameters()) + list(module.named_buffers()):
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=g, dtype=t.dtype))
            elif name.endswith(".a"):
                t.copy_(0.2 + 0.6 * torch.rand(t.shape, generator=g, dtype=t.dtype))
            else:
                fan = t[0].numel() if t.dim() > 1 else 1
                t.copy_(torch.randn(t.shape, generator=g, dtype=t.dtype) / fan ** 0.5)
        for m in module.modules():  # slopes netmorph's P-activation can hold: [0, 1]
            if isinstance(m, nn.PReLU):
                m.weight.copy_(0.2 + 0.6 * torch.rand(m.weight.shape, generator=g,
                                                      dtype=m.weight.dtype))
    return module


def cnn(dtype):
    """Input (3, 8, 8): conv-bn-relu, conv-relu, max pool, conv-tanh, avg pool, MLP."""
    m = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1), nn.Tanh(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(32, 16), nn.ELU(0.5), nn.Dropout(0.2), nn.Linear(16, 5))
    return randomise(m.to(dtype), 1)


def cnn_adaptive(dtype):
    """Input (3, 7, 7): torchvision's heads, uneven adaptive bins before a dense layer and a conv."""
    m = nn.Sequential(
        nn.Conv2d(3, 5, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d((3, 2)),
        nn.Conv2d(5, 6, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, 4))
    return randomise(m.to(dtype), 3)


def mlp(dtype):
    """Input (12,): every activation, PReLU, a P-activation, batch norm 1d, a residual add."""
    m = nn.Sequential(
        nn.Linear(12, 10), nn.BatchNorm1d(10), nn.GELU(),
        nn.Sequential(nn.Linear(10, 10), nn.Sigmoid()),
        nmt.Parallel(nn.Sequential(nn.Linear(10, 10), nn.LeakyReLU(0.1), nn.Linear(10, 10)),
                     nn.Identity()),
        nn.PReLU(init=0.3), nn.Linear(10, 8), nmt.PActivation("tanh", a=0.4), nn.Softplus(),
        nn.Linear(8, 8), nn.Identity(), nn.Linear(8, 3))
    return randomise(m.to(dtype), 2)


def mlp_mobile(dtype):
    """Input (12,): the activations of mobile networks (ReLU6, Hardswish, Hardsigmoid, SiLU), each
    after a dense layer, and a P-activation of each."""
    m = nn.Sequential(
        nn.Linear(12, 10), nn.ReLU6(), nn.Linear(10, 10), nn.Hardswish(),
        nn.Linear(10, 10), nn.Hardsigmoid(), nn.Linear(10, 10), nn.SiLU(),
        nmt.PActivation("relu6", a=0.3), nmt.PActivation("hardswish", a=0.5),
        nmt.PActivation("hardsigmoid", a=0.6), nmt.PActivation("silu", a=0.4), nn.Linear(10, 3))
    m = randomise(m.to(dtype), 4)
    with torch.no_grad():  # pre-activations of a few units: the kinks at -3, 0, 3 and 6 matter
        for i in (0, 2, 4, 6):
            m[i].weight.mul_(4.0)
    return m


class Bridge(unittest.TestCase):
    def check_child(self, parent, child, shape, dtype, reports, n_ops):
        """Independent check: same function on fresh inputs, and a few SGD steps reach every
        new or reshaped parameter."""
        self.assertEqual(len(reports), n_ops)
        parent.eval()
        child.eval()
        x = torch.randn((6,) + tuple(shape), dtype=dtype, generator=torch.Generator().manual_seed(9))
        with torch.no_grad():
            err = rel(child(x), parent(x))
        self.assertLessEqual(err, TOL[dtype])
        for p in child.parameters():
            self.assertEqual(p.dtype, dtype)
        old = {k: v.shape for k, v in parent.state_dict().items()}
        new = [(k, p) for k, p in child.named_parameters() if old.get(k) != p.shape]
        self.assertTrue(new, "a morph gives new or grown parameters")
        child.train()
        opt = torch.optim.SGD(child.parameters(), lr=0.05)
        reached = {k: False for k, _ in new}
        for step in range(4):
            opt.zero_grad()
            out = child(x)
            loss = nn.functional.cross_entropy(out, torch.arange(6) % out.shape[1])
            loss.backward()
            for k, p in new:
                reached[k] = reached[k] or bool(p.grad is not None and p.grad.abs().sum() > 0)
            opt.step()
        self.assertTrue(torch.isfinite(loss))
        self.assertEqual([k for k, r in reached.items() if not r], [])
        return child

    def test_every_morph_type_float32_and_float64(self):
        cases = [
            ["deepen:3"],                           # conv followed by ReLU
            ["deepen:0"],                           # conv followed by batch norm, ReLU
            ["deepen:10"],                          # dense
            ["widen:3:to=10"],
            ["widen:0:to=9,rule=net2net"],          # through the batch norm
            ["widen:6:to=11"],                      # conv -> tanh -> pool -> flatten -> dense
            ["kernel:3:to=5"],
            ["subnet:3:widths=6/6,kernels=3/1/1"],
            ["stacked:6:paths=2"],
            ["deepen:3", "widen:3.0:to=8", "stacked:6:paths=2", "widen:6.path1.0:to=10"],
        ]
        adaptive = [["widen:0:to=8"],                 # conv -> relu -> adaptive pool -> conv
                    ["widen:3:to=9,rule=net2net"],    # conv -> relu -> adaptive -> flatten -> dense
                    ["deepen:3", "widen:0:to=7"]]
        runs = [(cnn, (3, 8, 8), ops) for ops in cases] + \
            [(cnn_adaptive, (3, 7, 7), ops) for ops in adaptive]
        for dtype in (torch.float32, torch.float64):
            for build, shape, ops in runs:
                with self.subTest(dtype=dtype, ops=ops, model=build.__name__):
                    parent = build(dtype)
                    before = {k: v.clone() for k, v in parent.state_dict().items()}
                    child, reports = nmt.morph(parent, ops, shape, seed=3)
                    self.check_child(parent, child, shape, dtype, reports, len(ops))
                    for k, v in parent.state_dict().items():  # the parent is untouched
                        self.assertTrue(torch.equal(v, before[k]), k)
                    for r in reports:
                        self.assertTrue(r["exact"])

    def test_mlp_with_every_activation_and_a_residual_add(self):
        runs = [(mlp, ["widen:0:to=14", "deepen:3.0", "deepen:4.0.0", "widen:6:to=12"]),
                # deepen before ReLU6 and Hardswish (a P-activation of each at a = 1), widen
                # through Hardsigmoid (phi(0) != 0) and through SiLU and the P-activations.
                (mlp_mobile, ["deepen:0", "deepen:2", "widen:4:to=14",
                              "widen:6:to=13,rule=net2net", "deepen:12"])]
        for build, ops in runs:
            for dtype in (torch.float32, torch.float64):
                with self.subTest(dtype=dtype, model=build.__name__):
                    parent = build(dtype)
                    child, reports = nmt.morph(parent, ops, (12,), seed=5)
                    self.check_child(parent, child, (12,), dtype, reports, len(ops))
                    fns = [m.fn for m in child.modules() if isinstance(m, nmt.PActivation)]
                    if build is mlp_mobile:  # the inserted P-activations are of the phi after
                        self.assertEqual(fns[:2], ["relu6", "hardswish"])

    def test_save_load_round_trip_keeps_names_and_function(self):
        for make, shape in ((cnn, (3, 8, 8)), (mlp, (12,)), (mlp_mobile, (12,))):
            for dtype in (torch.float32, torch.float64):
                m = make(dtype).eval()
                with tempfile.TemporaryDirectory() as d:
                    f = os.path.join(d, "m.safetensors")
                    nmt.save(m, f, shape)
                    back = nmt.load(f).eval()
                    # Saving what load gave writes the same architecture again.
                    nmt.save(back, os.path.join(d, "again.safetensors"), shape)
                    again = nmt.load(os.path.join(d, "again.safetensors"))
                self.assertEqual(again.architecture, back.architecture)
                # The tensors come back bit for bit under their state_dict names (PReLU's slope
                # is stored as a P-activation's 'a').
                sd = {k.replace("5.weight", "5.a"): v for k, v in m.state_dict().items()
                      if not k.endswith("num_batches_tracked")}
                sd_back = {k: v for k, v in back.state_dict().items()
                           if not k.endswith("num_batches_tracked")}
                self.assertEqual(set(sd), set(sd_back))
                for k, v in sd.items():
                    self.assertTrue(torch.equal(v.reshape(sd_back[k].shape), sd_back[k]), k)
                # The function is the same up to rounding: PReLU's max(0, x) + a min(0, x) and the
                # P-activation's (1 - a) relu(x) + a x round differently.
                x = torch.randn((3,) + shape, dtype=dtype, generator=torch.Generator().manual_seed(4))
                with torch.no_grad():
                    self.assertLessEqual(rel(back(x), m(x)), TOL[dtype])

    def test_load_models_written_by_the_library(self):
        """Every layer kind, a concatenation and a gate (mul) included: the files written by the
        C++ library's test fixture compute in torch what they computed there."""
        d = os.environ.get("NETMORPH_IO_FIXTURE_DIR")
        if not d:
            self.skipTest("NETMORPH_IO_FIXTURE_DIR is not set (CTest sets it)")
        import json
        expected = json.load(open(os.path.join(d, "expected.json")))
        for name, dtype in (("float32.safetensors", torch.float32),
                            ("float64.safetensors", torch.float64)):
            net = nmt.load(os.path.join(d, name)).eval()
            self.assertIn('"merge": "concat"', json.dumps(net.architecture))
            self.assertIn('"merge": "mul"', json.dumps(net.architecture))
            x, y = (torch.tensor(expected[name][k]["values"], dtype=dtype).reshape(
                expected[name][k]["shape"]) for k in ("__input__", "__output__"))
            with torch.no_grad():
                self.assertLessEqual(rel(net(x), y), TOL[dtype], name)

    def test_torchvision_vgg11_and_resnet18(self):
        import torchvision
        vgg = randomise(torchvision.models.vgg11(), 11)
        child, reports = nmt.morph(vgg, ["deepen:features.3", "widen:features.0:to=80",
                                         "widen:classifier.0:to=4100"], (3, 32, 32), seed=1)
        self.check_child(vgg, child, (3, 32, 32), torch.float32, reports, 3)
        net = randomise(torchvision.models.resnet18(), 18).double()
        ops = ["deepen:layer1.0.conv1", "widen:layer2.0.conv1:to=160",
               "kernel:layer3.1.conv1:to=5", "deepen:fc"]
        child, reports = nmt.morph(net, ops, (3, 64, 64), seed=2)
        self.check_child(net, child, (3, 64, 64), torch.float64, reports, len(ops))
        # A residual block is a parallel block with the torch names inside, the shortcut path
        # holding the downsample when there is one.
        arch, _ = nmt.architecture(torchvision.models.resnet18(), (3, 64, 64))
        blocks = {e["name"]: e for e in arch["layers"] if e["kind"] == "parallel"}
        self.assertEqual([e["name"] for e in blocks["layer2.0"]["paths"][1]],
                         ["layer2.0.downsample.0", "layer2.0.downsample.1"])
        self.assertEqual(blocks["layer1.0"]["paths"][1], [])
        self.assertEqual(blocks["layer1.0"]["paths"][0][0]["name"], "layer1.0.conv1")

    def test_torchvision_mobilenet_v2(self):
        # Depthwise convolutions, ReLU6 and inverted residuals. The widened stream of blocks 2-3
        # (a residual sum) grows block 2's and block 3's project convolutions, their batch norms,
        # and the expand convolutions of blocks 3 and 4; the widened expansion of block 4 grows
        # its depthwise filters.
        import torchvision
        net = randomise(torchvision.models.mobilenet_v2(width_mult=0.5), 7).double()
        ops = ["widen:features.2.conv.2:to=20", "widen:features.4.conv.0.0:to=100",
               "deepen:features.2.conv.1.0", "kernel:features.5.conv.1.0:to=5"]
        child, reports = nmt.morph(net, ops, (3, 32, 32), seed=3)
        self.check_child(net, child, (3, 32, 32), torch.float64, reports, len(ops))
        self.assertEqual(reports[0]["new_layers"].split(","),
                         ["features.2.conv.2", "features.2.conv.3", "features.3.conv.0.0",
                          "features.3.conv.2", "features.3.conv.3", "features.4.conv.0.0"])
        arch, _ = nmt.architecture(net, (3, 32, 32))
        blocks = {e["name"]: e for e in arch["layers"] if e["kind"] == "parallel"}
        self.assertIn("features.3", blocks)  # residual: 24 -> 24 channels (x 0.5)
        self.assertNotIn("features.2", blocks)

    def test_errors_name_the_module_and_the_op(self):
        bad = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.LSTM(4, 4)))
        with self.assertRaisesRegex(nmt.UnsupportedModule, r"1\.0 \(LSTM\) is not supported"):
            nmt.save(bad, "/nonexistent/x.safetensors", (4,))
        with self.assertRaisesRegex(nmt.UnsupportedModule,  # the list names every activation
                                    r"0 \(Hardtanh\) is not supported; .*GELU, ReLU6, Hardswish, "
                                    r"Hardsigmoid, SiLU, PReLU"):
            nmt.architecture(nn.Sequential(nn.Hardtanh()), (4,))
        with self.assertRaisesRegex(nmt.UnsupportedModule, r"0 \(Conv2d\): dilation \(2, 2\)"):
            nmt.architecture(nn.Sequential(nn.Conv2d(4, 4, 3, dilation=2)), (4, 5, 5))
        with self.assertRaisesRegex(nmt.UnsupportedModule, r"PReLU.*3 value"):
            nmt.architecture(nn.Sequential(nn.Conv2d(3, 3, 1), nn.PReLU(3)), (3, 2, 2))
        m = cnn(torch.float32)
        with self.assertRaises(nmt.MorphFailed) as e:
            nmt.morph(m, ["widen:3:to=2"], (3, 8, 8))
        self.assertEqual(e.exception.returncode, 1)
        self.assertIn("widen:3:to=2", str(e.exception))
        with self.assertRaises(nmt.MorphFailed) as e:
            nmt.morph(m, ["deepen:nope"], (3, 8, 8))
        self.assertEqual(e.exception.returncode, 2)
        self.assertIn("'nope'", str(e.exception))
        # A one-channel bottleneck cannot hold the layer's function: netmorph-morph says so
        # (exit 3); allow_approx keeps the child and the reports carry the error torch measured.
        approx = ["deepen:3:k1=3,k2=3,width=1"]
        with self.assertRaises(nmt.MorphFailed) as e:
            nmt.morph(m, approx, (3, 8, 8), algorithm="general")
        self.assertEqual(e.exception.returncode, 3)
        _, reports = nmt.morph(m, approx, (3, 8, 8), algorithm="general", allow_approx=True)
        self.assertFalse(reports[0]["exact"])
        self.assertGreater(reports[0]["torch_relative_output_error"], 1e-3)
        # A child that does not compute the parent's function is refused by the torch check
        # (here one whose first weight was nudged after loading).
        real_load = nmt.load

        def nudged_load(path):
            child = real_load(path)
            with torch.no_grad():
                next(child.parameters()).add_(1e-3)
            return child

        nmt.load = nudged_load
        try:
            with self.assertRaisesRegex(nmt.NotExact, r"differ from the parent's by .* relative"):
                nmt.morph(m, ["deepen:3"], (3, 8, 8))
        finally:
            nmt.load = real_load
        # The parent module must be left as it was: dtype and mode.
        m.train()
        nmt.morph(m, ["deepen:3"], (3, 8, 8), dtype=torch.float64)
        self.assertTrue(m.training)
        self.assertEqual(next(m.parameters()).dtype, torch.float32)

    def test_load_refuses_malformed_files_by_name(self):
        import json
        import struct
        with tempfile.TemporaryDirectory() as d:
            good = os.path.join(d, "m.safetensors")
            nmt.save(cnn(torch.float32), good, (3, 8, 8))
            with open(good, "rb") as f:
                blob = f.read()
            (n,) = struct.unpack("<Q", blob[:8])
            header = json.loads(blob[8:8 + n])

            def with_header(h, tail=None):
                text = json.dumps(h).encode()
                return struct.pack("<Q", len(text)) + text + (blob[8 + n:] if tail is None
                                                              else tail)

            first = next(k for k in header if k != "__metadata__")
            lo, hi = header[first]["data_offsets"]

            def edit(**kw):
                h = json.loads(json.dumps(header))
                h[first].update(kw)
                return with_header(h)

            # The first tensor's entry written twice (a JSON object with a repeated key).
            text = json.dumps(header)
            entry = f'"{first}": ' + json.dumps(header[first])
            text = text.replace(entry, entry + ", " + entry, 1)
            dup = struct.pack("<Q", len(text)) + text.encode() + blob[8 + n:]
            nan = bytearray(blob)
            nan[8 + n + lo:8 + n + lo + 4] = struct.pack("<f", float("nan"))
            arch_meta = dict(header["__metadata__"])
            arch_meta["netmorph.architecture"] = '{"layers": [{"kind": "dense"}]}'
            cases = [
                (blob[:5], r"truncated: 5 bytes"),
                (struct.pack("<Q", 10 ** 9) + blob[8:], r"header length 1000000000 runs past"),
                (struct.pack("<Q", 3) + b"{[}" + blob[11:], r"header is not JSON"),
                (blob[:-4], r"data_offsets \[\d+, \d+\] outside the \d+ data bytes"),
                (edit(dtype="I8"), r"dtype 'I8'"),
                (edit(dtype=[]), r"dtype \[\]"),
                (edit(shape=[-1]), r"shape \[-1\]"),
                (edit(data_offsets=[lo, hi + 4]), r"needs \d+ bytes, its offsets span"),
                (edit(data_offsets=[lo + 4, hi + 4]), r"starts at byte 4, not at 0"),
                (edit(shape=[1]), r"needs 4 bytes, its offsets span"),
                (with_header(dict(header, __metadata__={"k": 1})), r"strings to strings"),
                (with_header(dict(header, __metadata__=[])), r"strings to strings"),
                (dup, r"the key '0\.weight' appears twice"),
                (with_header(dict(header, __metadata__=arch_meta)), r"malformed architecture"),
                (bytes(nan), r"holds nan at flat index 0 \(weights must be finite\)"),
            ]
            for i, (data, pattern) in enumerate(cases):
                with self.subTest(case=i, pattern=pattern):
                    f = os.path.join(d, f"bad{i}.safetensors")
                    with open(f, "wb") as out:
                        out.write(data)
                    with self.assertRaisesRegex(nmt.NetmorphError, pattern) as e:
                        nmt.load(f)
                    self.assertIn("netmorph_torch.load", str(e.exception))


if __name__ == "__main__":
    unittest.main()
