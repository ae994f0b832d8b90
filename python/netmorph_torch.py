"""PyTorch models through netmorph: save, load and morph in one call.

    import netmorph_torch as nmt
    child, reports = nmt.morph(model, ["deepen:features.0", "widen:features.3:to=96"],
                               input_shape=(3, 32, 32))

``save(module, path, input_shape)`` writes a module as a netmorph model file (``.safetensors``
with netmorph's architecture description; tensors keep their ``state_dict`` names),
``load(path)`` gives back an ``nn.Module`` computing the file's network, and ``morph`` saves,
runs the ``netmorph-morph`` command on the file, loads the child, and checks in torch that it
computes the parent's function before returning it.

Supported modules: ``nn.Sequential`` (nested), ``Linear``, ``Conv2d``, ``ReLU``, ``LeakyReLU``,
``Tanh``, ``Sigmoid``, ``ELU``, ``GELU``, ``Softplus`` (beta 1), ``ReLU6``, ``Hardswish``,
``Hardsigmoid``, ``SiLU``, ``Identity``, ``PReLU`` (one slope in [0, 1]), ``PActivation``
(below), ``MaxPool2d``, ``AvgPool2d``, ``AdaptiveAvgPool2d``, ``Flatten``,
``BatchNorm1d``/``BatchNorm2d``, ``Dropout``, residual additions (``Parallel`` below),
grouped and depthwise ``Conv2d``, torchvision's ``VGG``, ``ResNet`` with ``BasicBlock`` /
``Bottleneck``, ``MobileNetV2`` with ``InvertedResidual``, and the ``Network`` that
``load`` returns. Anything else raises ``UnsupportedModule`` naming the module and its path:
nothing is dropped silently.

Pure Python over torch and numpy. The command is found as ``command=``, else ``$NETMORPH_MORPH``,
else ``netmorph-morph`` on the ``PATH``.
"""

import copy
import json
import math
import os
import shutil
import struct
import subprocess
import tempfile

import numpy as np
import torch
from torch import nn

__all__ = [
    "PActivation", "Parallel", "Network", "save", "load", "morph", "architecture",
    "NetmorphError", "UnsupportedModule", "MorphFailed", "NotExact",
]

FORMAT = "1"
_ARCH_KEY = "netmorph.architecture"
_FORMAT_KEY = "netmorph.format"


class NetmorphError(Exception):
    """Base class of the bridge's errors."""


class UnsupportedModule(NetmorphError):
    """A module (or a setting of one) netmorph's architecture cannot describe."""


class MorphFailed(NetmorphError):
    """netmorph-morph refused the ops or the file (its exit code and message are attached)."""

    def __init__(self, message, returncode=None):
        super().__init__(message)
        self.returncode = returncode


class NotExact(NetmorphError):
    """The child does not compute the parent's function within tolerance (checked in torch)."""


# --------------------------------------------------------------------------------------------
# Modules the bridge exports


# netmorph's activations without a parameter: the name in files (netmorph::to_string) -> the torch
# module and function. leaky_relu (negative slope) and elu (alpha) take one and are written out
# where they are used; GELU (exact form) and Softplus (beta 1) are checked before the module
# is mapped.
_ACTIVATIONS = {
    "identity": (nn.Identity, lambda x: x),
    "relu": (nn.ReLU, torch.relu),
    "tanh": (nn.Tanh, torch.tanh),
    "sigmoid": (nn.Sigmoid, torch.sigmoid),
    "softplus": (nn.Softplus, nn.functional.softplus),
    "gelu": (nn.GELU, nn.functional.gelu),
    "relu6": (nn.ReLU6, nn.functional.relu6),
    "hardswish": (nn.Hardswish, nn.functional.hardswish),
    "hardsigmoid": (nn.Hardsigmoid, nn.functional.hardsigmoid),
    "silu": (nn.SiLU, nn.functional.silu),
}


def _phi(fn, param):
    if fn == "leaky_relu":
        return lambda x: torch.nn.functional.leaky_relu(x, param)
    if fn == "elu":
        return lambda x: torch.nn.functional.elu(x, param)
    if fn in _ACTIVATIONS:
        return _ACTIVATIONS[fn][1]
    raise UnsupportedModule(f"netmorph_torch: unknown activation '{fn}'")


class PActivation(nn.Module):
    """netmorph's P-activation: (1 - a) * phi(x) + a * x with a learnable scalar ``a``
    (a = 1 is the identity, a = 0 is phi; PReLU is fn='relu')."""

    def __init__(self, fn="relu", param=0.0, a=1.0):
        super().__init__()
        self.fn, self.param = fn, float(param)
        self._f = _phi(fn, self.param)
        self.a = nn.Parameter(torch.tensor([float(a)]))

    def forward(self, x):
        return (1 - self.a) * self._f(x) + self.a * x

    def extra_repr(self):
        return f"fn={self.fn}, param={self.param}"


class Parallel(nn.Module):
    """The sum of paths from one input: a residual addition is
    ``Parallel(nn.Sequential(conv, bn, relu, conv, bn), nn.Identity())``. Path ``i`` is child
    ``i`` (an empty ``nn.Sequential`` or ``nn.Identity`` is the shortcut)."""

    def __init__(self, *paths):
        super().__init__()
        if not paths:
            raise ValueError("netmorph_torch.Parallel: no paths")
        for i, p in enumerate(paths):
            self.add_module(str(i), p)

    def forward(self, x):
        out = None
        for p in self.children():
            y = p(x)
            out = y if out is None else out + y
        return out


class _Node(nn.Module):
    """A container in ``Network``'s module tree (one dotted-name segment)."""

    def forward(self, x):  # pragma: no cover - containers are not called
        raise RuntimeError("netmorph_torch: a container node is not callable")


class Network(nn.Module):
    """The network of a netmorph model file: its layers sit in a module tree at their dotted
    names (so ``state_dict`` keys are the file's tensor names) and run in the file's order;
    parallel blocks sum, concatenate (along the channels) or multiply their paths."""

    def __init__(self, arch, modules):
        super().__init__()
        self.input_shape = tuple(arch["input_shape"])
        self.architecture = arch
        self._program = self._plan(arch["layers"], modules)

    def _place(self, name, module):
        parts = name.split(".")
        node = self
        for i, p in enumerate(parts[:-1]):
            child = node._modules.get(p)
            if child is None and node is not self and hasattr(node, p):
                raise NetmorphError(f"netmorph_torch.load: layer name '{name}' is not usable "
                                    f"as a module path")
            if child is None:
                child = _Node()
                node.add_module(p, child)
            elif not isinstance(child, _Node):
                raise NetmorphError(
                    f"netmorph_torch.load: layer '{'.'.join(parts[:i + 1])}' is also the prefix "
                    f"of layer '{name}'; a torch module tree cannot hold both")
            node = child
        if parts[-1] in node._modules:
            raise NetmorphError(f"netmorph_torch.load: layer name '{name}' is used twice, or is "
                                f"also the prefix of another layer's name")
        node.add_module(parts[-1], module)

    def _plan(self, entries, modules):
        program = []
        for e in entries:
            if e["kind"] == "parallel":
                self._place(e["name"], _Node())
                merge = e.get("merge", "add")
                if merge not in ("add", "concat", "mul"):
                    raise NetmorphError(f"netmorph_torch.load: block '{e['name']}' has an "
                                        f"unknown merge '{merge}' (add, concat, mul)")
                program.append((merge, [self._plan(p, modules) for p in e["paths"]]))
            else:
                m = modules[e["name"]]
                self._place(e["name"], m)
                program.append(("layer", m))
        return program

    @staticmethod
    def _run(program, x):
        for kind, what in program:
            if kind == "layer":
                x = what(x)
            else:
                outs = [Network._run(path, x) for path in what]
                if kind == "concat":
                    x = torch.cat(outs, 1)
                else:
                    x = outs[0]
                    for y in outs[1:]:
                        x = x + y if kind == "add" else x * y
        return x

    def forward(self, x):
        return self._run(self._program, x)


class _AnyBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm over (N, C) or (N, C, H, W), as netmorph's (BatchNorm1d and 2d in one)."""

    def _check_input_dim(self, x):
        if x.dim() not in (2, 4):
            raise ValueError(f"expected a 2D or 4D input (got {x.dim()}D input)")


# --------------------------------------------------------------------------------------------
# torch -> architecture


def _pair(v, what, path):
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise UnsupportedModule(f"netmorph_torch: {path}: {what} {v} is not a pair")
        return int(v[0]), int(v[1])
    return int(v), int(v)


def _square(v, what, path, module):
    a, b = _pair(v, what, path)
    if a != b:
        raise UnsupportedModule(
            f"netmorph_torch: {path} ({type(module).__name__}): {what} {v} differs between "
            f"height and width; netmorph needs one value")
    return a


class _Writer:
    """Collects the architecture entries and the tensors of a module tree."""

    def __init__(self):
        self.tensors = []  # (name, torch tensor)
        self.names = set()

    def tensor(self, name, t):
        self.tensors.append((name, t.detach()))

    def entry(self, name, kind, **fields):
        if name in self.names:
            raise UnsupportedModule(f"netmorph_torch: the layer name '{name}' is used twice")
        self.names.add(name)
        e = {"name": name, "kind": kind}
        e.update(fields)
        return e

    def act(self, name, fn, param=0.0):
        return [self.entry(name, "activation", fn=fn, param=float(param))]

    def leaf(self, m, name):
        """Entries for a leaf module (or None when it is not one)."""
        path = name
        if isinstance(m, nn.Conv2d):
            if _pair(m.dilation, "dilation", path) != (1, 1):
                raise UnsupportedModule(
                    f"netmorph_torch: {path} (Conv2d): dilation {m.dilation} is not supported "
                    f"(1 only)")
            if m.padding_mode != "zeros" or isinstance(m.padding, str):
                raise UnsupportedModule(
                    f"netmorph_torch: {path} (Conv2d): padding {m.padding!r} with mode "
                    f"'{m.padding_mode}' is not supported (integer zero padding only)")
            kh, kw = m.kernel_size
            e = self.entry(name, "conv2d", in_channels=m.in_channels,
                           out_channels=m.out_channels, kernel=kh if kh == kw else [kh, kw],
                           stride=_square(m.stride, "stride", path, m),
                           padding=_square(m.padding, "padding", path, m),
                           bias=m.bias is not None)
            if m.groups != 1:  # written only when grouped, as the C++ writer does
                e["groups"] = m.groups
            self.tensor(name + ".weight", m.weight)
            if m.bias is not None:
                self.tensor(name + ".bias", m.bias)
            return [e]
        if isinstance(m, nn.Linear):
            e = self.entry(name, "dense", in_features=m.in_features, out_features=m.out_features,
                           bias=m.bias is not None)
            self.tensor(name + ".weight", m.weight)
            if m.bias is not None:
                self.tensor(name + ".bias", m.bias)
            return [e]
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, _AnyBatchNorm)):
            if not m.affine or not m.track_running_stats or m.momentum is None:
                raise UnsupportedModule(
                    f"netmorph_torch: {path} ({type(m).__name__}): affine=False, "
                    f"track_running_stats=False or momentum=None is not supported")
            e = self.entry(name, "batch_norm", channels=m.num_features, eps=float(m.eps),
                           momentum=float(m.momentum))
            for t in ("weight", "bias", "running_mean", "running_var"):
                self.tensor(f"{name}.{t}", getattr(m, t))
            return [e]
        if isinstance(m, nn.LeakyReLU):
            return self.act(name, "leaky_relu", m.negative_slope)
        if isinstance(m, nn.ELU):
            return self.act(name, "elu", m.alpha)
        if isinstance(m, nn.GELU) and getattr(m, "approximate", "none") != "none":
            raise UnsupportedModule(f"netmorph_torch: {path} (GELU): approximate="
                                    f"'{m.approximate}' is not supported (the exact GELU only)")
        if isinstance(m, nn.Softplus) and m.beta != 1:
            raise UnsupportedModule(f"netmorph_torch: {path} (Softplus): beta {m.beta} is "
                                    f"not supported (1 only)")
        for fn, (cls, _) in _ACTIVATIONS.items():
            if isinstance(m, cls):
                return self.act(name, fn)
        if isinstance(m, nn.PReLU):
            a = m.weight.detach()
            if a.numel() != 1 or not (0.0 <= float(a.reshape(-1)[0]) <= 1.0):
                raise UnsupportedModule(
                    f"netmorph_torch: {path} (PReLU): netmorph's P-activation has one slope in "
                    f"[0, 1]; this one has {a.numel()} value(s) {a.reshape(-1)[:4].tolist()}")
            e = self.entry(name, "p_activation", fn="relu", param=0.0)
            self.tensor(name + ".a", m.weight.reshape(1))
            return [e]
        if isinstance(m, PActivation):
            e = self.entry(name, "p_activation", fn=m.fn, param=float(m.param))
            self.tensor(name + ".a", m.a)
            return [e]
        if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
            k = _square(m.kernel_size, "kernel_size", path, m)
            s = _square(m.stride if m.stride is not None else k, "stride", path, m)
            p = _square(m.padding, "padding", path, m)
            bad = m.ceil_mode
            if isinstance(m, nn.MaxPool2d):
                bad = bad or _pair(m.dilation, "dilation", path) != (1, 1) or m.return_indices
            else:
                bad = bad or not m.count_include_pad or m.divisor_override is not None
            if bad:
                raise UnsupportedModule(
                    f"netmorph_torch: {path} ({type(m).__name__}): only ceil_mode=False, "
                    f"dilation 1, count_include_pad=True and no divisor_override are supported")
            mode = "max" if isinstance(m, nn.MaxPool2d) else "average"
            return [self.entry(name, "pool2d", mode=mode, window=k, stride=s, padding=p)]
        if isinstance(m, nn.AdaptiveAvgPool2d):
            size = m.output_size
            if size is None or (isinstance(size, (tuple, list)) and None in size):
                raise UnsupportedModule(f"netmorph_torch: {path} (AdaptiveAvgPool2d): an output "
                                        f"size of None is not supported")
            oh, ow = _pair(size, "output_size", path)
            return [self.entry(name, "adaptive_pool2d", output_size=[oh, ow])]
        if isinstance(m, nn.Flatten):
            if m.start_dim != 1 or m.end_dim != -1:
                raise UnsupportedModule(f"netmorph_torch: {path} (Flatten): only start_dim=1, "
                                        f"end_dim=-1 is supported")
            return [self.entry(name, "flatten")]
        if isinstance(m, nn.Dropout):
            return [self.entry(name, "dropout", p=float(m.p))]
        return None

    def module(self, m, name):
        """Entries for any supported module at ``name`` ('' for the root)."""
        def sub(child):
            return f"{name}.{child}" if name else child

        cls = type(m).__name__
        entries = self.leaf(m, name or "<root>")
        if entries is not None:
            if not name:
                raise UnsupportedModule(f"netmorph_torch: the root module is a single {cls}; "
                                        f"wrap it in nn.Sequential")
            return entries
        if isinstance(m, nn.Sequential):
            out = []
            for k, c in m.named_children():
                out += self.module(c, sub(k))
            return out
        if isinstance(m, Parallel):
            paths = []
            for k, c in m.named_children():
                if isinstance(c, nn.Identity) or (isinstance(c, nn.Sequential) and len(c) == 0):
                    paths.append([])
                else:
                    paths.append(self.module(c, sub(k)))
            return [self._block(name, paths)]
        if isinstance(m, Network):
            return self._network(m, name)
        if cls == "VGG" and hasattr(m, "features") and hasattr(m, "classifier"):
            return (self.module(m.features, sub("features")) + self.module(m.avgpool, sub("avgpool"))
                    + [self.entry(sub("flatten"), "flatten")]
                    + self.module(m.classifier, sub("classifier")))
        if cls == "ResNet" and hasattr(m, "layer1") and hasattr(m, "fc"):
            out = []
            for k in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4",
                      "avgpool"):
                out += self.module(getattr(m, k), sub(k))
            return out + [self.entry(sub("flatten"), "flatten")] + self.module(m.fc, sub("fc"))
        if cls == "MobileNetV2" and hasattr(m, "features") and hasattr(m, "classifier"):
            # forward: features, adaptive average pooling to 1x1, flatten, classifier.
            return (self.module(m.features, sub("features"))
                    + [self.entry(sub("avgpool"), "adaptive_pool2d", output_size=[1, 1]),
                       self.entry(sub("flatten"), "flatten")]
                    + self.module(m.classifier, sub("classifier")))
        if cls == "InvertedResidual" and hasattr(m, "conv") and hasattr(m, "use_res_connect"):
            body = self.module(m.conv, sub("conv"))
            if not m.use_res_connect:
                return body
            return [self._block(name, [body, []])]
        if cls in ("BasicBlock", "Bottleneck") and hasattr(m, "conv2") and hasattr(m, "bn2"):
            if not name:
                raise UnsupportedModule("netmorph_torch: a residual block cannot be the root")
            main = []
            convs = ["conv1", "bn1", "relu", "conv2", "bn2"]
            if cls == "Bottleneck":
                convs += ["relu_1", "conv3", "bn3"]
            for k in convs:
                if k == "relu_1":  # the block's one ReLU module, used again
                    main += self.act(sub(k), "relu")
                else:
                    main += self.module(getattr(m, k), sub(k))
            shortcut = [] if m.downsample is None else self.module(m.downsample, sub("downsample"))
            return [self._block(name, [main, shortcut])] + self.act(sub("relu_out"), "relu")
        where = name or "<root>"
        acts = ", ".join(c.__name__ for c, _ in _ACTIVATIONS.values())
        raise UnsupportedModule(
            f"netmorph_torch: {where} ({cls}) is not supported; supported are nn.Sequential, "
            f"Linear, Conv2d, BatchNorm1d/2d, LeakyReLU, ELU, {acts}, PReLU, PActivation, "
            f"MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, Flatten, Dropout, Parallel, torchvision "
            f"VGG, ResNet and MobileNetV2, and Network")

    def _block(self, name, paths, merge="add"):
        if not name:
            raise UnsupportedModule("netmorph_torch: a Parallel block cannot be the root")
        if merge != "add":
            return self.entry(name, "parallel", paths=paths, merge=merge)
        return self.entry(name, "parallel", paths=paths)

    def _network(self, net, prefix):
        def walk(entries):
            out = []
            for e in entries:
                full = f"{prefix}.{e['name']}" if prefix else e["name"]
                if e["kind"] == "parallel":
                    out.append(self._block(full, [walk(p) for p in e["paths"]],
                                           e.get("merge", "add")))
                else:
                    out += self.leaf(net.get_submodule(e["name"]), full)
            return out
        return walk(net.architecture["layers"])


def architecture(module, input_shape):
    """netmorph's architecture description of ``module`` (a dict) and its tensors, a list of
    (state_dict name, tensor). \\raises UnsupportedModule naming the module and its path."""
    w = _Writer()
    layers = w.module(module, "")
    return {"input_shape": [int(d) for d in input_shape], "layers": layers}, w.tensors


# --------------------------------------------------------------------------------------------
# Files

_DTYPES = {"F32": np.float32, "F64": np.float64, "F16": np.float16}


def _write_safetensors(path, tensors, metadata, dtype):
    header = {"__metadata__": metadata}
    offset, blobs = 0, []
    np_dtype = np.float32 if dtype == torch.float32 else np.float64
    code = "F32" if dtype == torch.float32 else "F64"
    for name, t in tensors:
        a = np.ascontiguousarray(t.detach().cpu().to(dtype).numpy(), dtype=np_dtype)
        b = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": code, "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)  # the format's 8-byte alignment of the data
    tmp = path + ".tmp"  # written beside the target and renamed over it: a failure leaves it
    try:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(h)))
            f.write(h)
            for b in blobs:
                f.write(b)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


_SIZES = {"F32": 4, "F64": 8, "F16": 2, "BF16": 2}
_MAX_HEADER = 100_000_000  # the format's limit, as netmorph::io's


def _unique_keys(pairs):
    """json object hook: a key twice is an error (the C++ reader refuses it too)."""
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"the key '{k}' appears twice")
        out[k] = v
    return out


def _read_safetensors(path):
    """The metadata and the tensors of a safetensors file, every field checked against the
    format's rules before it is used (as netmorph::io's reader does)."""
    def bad(what):
        return NetmorphError(f"netmorph_torch.load: '{path}': {what}")

    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise bad(f"truncated: {len(data)} bytes, shorter than the 8-byte header length")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise bad(f"the header length {n} runs past the end of the file ({len(data)} bytes)")
    if n > _MAX_HEADER:
        raise bad(f"the header length {n} exceeds the limit of {_MAX_HEADER} bytes")
    try:
        header = json.loads(data[8:8 + n], object_pairs_hook=_unique_keys)
    except ValueError as e:
        raise bad(f"the header is not JSON ({e})") from None
    if not isinstance(header, dict):
        raise bad("the header is not a JSON object")
    meta = header.pop("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise bad("__metadata__ must map strings to strings")
    base, size = 8 + n, len(data) - 8 - n
    tensors, spans = {}, []
    for name, info in header.items():
        try:
            code, shape, (lo, hi) = info["dtype"], info["shape"], info["data_offsets"]
        except (TypeError, KeyError, ValueError):
            raise bad(f"tensor '{name}' needs dtype, shape and two data_offsets") from None
        if not isinstance(code, str) or code not in _SIZES:
            raise bad(f"tensor '{name}' has dtype {code!r} (F16, BF16, F32, F64)")
        if not (isinstance(shape, list)
                and all(isinstance(e, int) and not isinstance(e, bool) and e >= 0
                        for e in shape)):
            raise bad(f"tensor '{name}' has shape {shape!r} (a list of non-negative integers)")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (lo, hi)) or \
                not 0 <= lo <= hi <= size:
            raise bad(f"tensor '{name}' has data_offsets [{lo}, {hi}] outside the {size} "
                      "data bytes")
        want = int(np.prod(shape, dtype=object)) * _SIZES[code]
        if hi - lo != want:
            raise bad(f"tensor '{name}' of shape {shape} and dtype {code} needs {want} bytes, "
                      f"its offsets span {hi - lo}")
        spans.append((lo, hi, name))
        raw = data[base + lo:base + hi]
        if code == "BF16":
            u = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            a = u.view(np.float32)
        else:
            a = np.frombuffer(raw, dtype=np.dtype(_DTYPES[code]).newbyteorder("<"))
        tensors[name] = (code, a.reshape(shape))
    end = 0
    for lo, hi, name in sorted(spans):
        if lo != end:
            raise bad(f"tensor '{name}' starts at byte {lo}, not at {end} where the previous "
                      "one ends (offsets must be contiguous from 0)")
        end = hi
    if end != size:
        raise bad(f"the tensors end at byte {end} of {size} data bytes")
    return meta, tensors


def save(module, path, input_shape, dtype=None):
    """Writes ``module`` as a netmorph model file at ``path`` for per-sample inputs of
    ``input_shape`` (e.g. (3, 224, 224)); ``dtype`` torch.float32 or torch.float64 (default: the
    module's). \\raises UnsupportedModule naming a module netmorph cannot describe."""
    arch, tensors = architecture(module, input_shape)
    if dtype is None:
        ps = [t for _, t in tensors]
        dtype = ps[0].dtype if ps else torch.float32
        dtype = torch.float64 if dtype == torch.float64 else torch.float32
    if dtype not in (torch.float32, torch.float64):
        raise NetmorphError(f"netmorph_torch.save: dtype {dtype} (float32 or float64)")
    meta = {_FORMAT_KEY: FORMAT, _ARCH_KEY: json.dumps(arch, separators=(",", ":"))}
    _write_safetensors(str(path), tensors, meta, dtype)


def _build(e, tensors, dtype, path):
    kind = e["kind"]
    name = e["name"]

    def t(suffix):
        a = np.array(tensors[name + "." + suffix][1])
        if not np.isfinite(a).all():
            i = int(np.flatnonzero(~np.isfinite(a.reshape(-1)))[0])
            raise NetmorphError(f"netmorph_torch.load: '{path}': tensor '{name}.{suffix}' holds "
                                f"{a.reshape(-1)[i]} at flat index {i} (weights must be finite)")
        return torch.from_numpy(a).to(dtype)

    if kind == "conv2d":
        k = e["kernel"] if isinstance(e["kernel"], list) else [e["kernel"]] * 2
        m = nn.Conv2d(e["in_channels"], e["out_channels"], tuple(k), stride=e["stride"],
                      padding=e["padding"], bias=e["bias"], groups=e.get("groups", 1))
    elif kind == "dense":
        m = nn.Linear(e["in_features"], e["out_features"], bias=e["bias"])
    elif kind == "batch_norm":
        # netmorph's batch norm takes (N, C) and (N, C, H, W), like BatchNorm1d and 2d in one.
        m = _AnyBatchNorm(e["channels"], eps=e["eps"], momentum=e["momentum"])
    elif kind == "activation":
        if e["fn"] == "leaky_relu":
            m = nn.LeakyReLU(e["param"])
        elif e["fn"] == "elu":
            m = nn.ELU(e["param"])
        else:
            m = _ACTIVATIONS[e["fn"]][0]()
    elif kind == "p_activation":
        m = PActivation(e["fn"], e["param"])
    elif kind == "pool2d":
        cls = nn.MaxPool2d if e["mode"] == "max" else nn.AvgPool2d
        m = cls(e["window"], e["stride"], e.get("padding", 0))
    elif kind == "adaptive_pool2d":
        m = nn.AdaptiveAvgPool2d(tuple(e["output_size"]))
    elif kind == "flatten":
        m = nn.Flatten()
    elif kind == "dropout":
        m = nn.Dropout(e["p"])
    else:
        raise NetmorphError(f"netmorph_torch.load: '{path}': layer '{name}' has unknown kind "
                            f"'{kind}'")
    m = m.to(dtype)
    with torch.no_grad():
        for pname, p in list(m.named_parameters()) + list(m.named_buffers()):
            key = f"{name}.{pname}"
            if pname == "num_batches_tracked":
                continue
            if key not in tensors:
                raise NetmorphError(f"netmorph_torch.load: '{path}': tensor '{key}' is missing")
            src = t(pname)
            if tuple(src.shape) != tuple(p.shape):
                raise NetmorphError(f"netmorph_torch.load: '{path}': tensor '{key}' has shape "
                                    f"{tuple(src.shape)}, the layer needs {tuple(p.shape)}")
            p.copy_(src)
    return m


def load(path):
    """The network in the netmorph model file ``path`` as a ``Network`` module (float32 or
    float64 as the file holds; F16/BF16 tensors become float32)."""
    meta, tensors = _read_safetensors(str(path))
    if _ARCH_KEY not in meta:
        raise NetmorphError(f"netmorph_torch.load: '{path}' has no '{_ARCH_KEY}' metadata")
    codes = {c for c, _ in tensors.values()}
    dtype = torch.float64 if "F64" in codes else torch.float32
    modules = {}

    where = []  # the layer being built, for messages

    def collect(entries):
        for e in entries:
            where[:] = [e.get("name", "?") if isinstance(e, dict) else "?"]
            if e["kind"] == "parallel":
                for p in e["paths"]:
                    collect(p)
            else:
                modules[e["name"]] = _build(e, tensors, dtype, path)

    try:
        arch = json.loads(meta[_ARCH_KEY], object_pairs_hook=_unique_keys)
        collect(arch["layers"])
        where.clear()
        return Network(arch, modules)
    except (ValueError, KeyError, TypeError, IndexError, RuntimeError) as e:
        at = f" at layer '{where[0]}'" if where else ""
        raise NetmorphError(f"netmorph_torch.load: '{path}': malformed architecture{at} "
                            f"({type(e).__name__}: {e})") from None


# --------------------------------------------------------------------------------------------
# Morph


def _command(command):
    c = command or os.environ.get("NETMORPH_MORPH") or shutil.which("netmorph-morph")
    if not c:
        raise NetmorphError("netmorph_torch.morph: netmorph-morph not found; pass command=, set "
                            "NETMORPH_MORPH, or put it on the PATH")
    return c


def _relative_error(a, b):
    d = torch.linalg.vector_norm((a - b).double())
    n = torch.linalg.vector_norm(b.double())
    return float(d / n) if n > 0 else float(d)


def morph(module, ops, input_shape, *, seed=None, algorithm=None, dtype=None,
          allow_approx=False, command=None, check_batch=4, tolerance=None, workdir=None):
    """Morphs ``module`` by netmorph-morph ``ops`` (e.g. ``["deepen:features.0",
    "widen:fc1:to=64"]``, see ``netmorph-morph --help``) for per-sample inputs of ``input_shape``.

    Returns ``(child, reports)``: the child ``Network`` (in eval mode if the parent was, same
    dtype) and netmorph's reports, one dict per op. Before returning, the child's outputs on
    ``check_batch`` random inputs are compared with the parent's in eval mode: a relative error
    above ``tolerance`` (default 1e-5 float32, 1e-10 float64) raises ``NotExact``. The parent is
    left as it was. \\raises MorphFailed when netmorph-morph refuses (exit code attached)."""
    if isinstance(ops, str):
        ops = [ops]
    cmd = _command(command)
    arch, tensors = architecture(module, input_shape)
    if dtype is None:
        dtype = tensors[0][1].dtype if tensors else torch.float32
    dtype = torch.float64 if dtype == torch.float64 else torch.float32
    tmp = tempfile.mkdtemp(prefix="netmorph-", dir=workdir)
    try:
        parent_file = os.path.join(tmp, "parent.safetensors")
        child_file = os.path.join(tmp, "child.safetensors")
        save(module, parent_file, input_shape, dtype=dtype)
        args = [cmd, "--json", "--dtype", "float64" if dtype == torch.float64 else "float32"]
        if seed is not None:
            args += ["--seed", str(int(seed))]
        if algorithm is not None:
            args += ["--algorithm", str(algorithm)]
        if allow_approx:
            args += ["--allow-approx"]
        args += [parent_file, child_file] + list(ops)
        r = subprocess.run(args, capture_output=True, text=True)
        if r.returncode != 0:
            raise MorphFailed(f"netmorph_torch.morph: netmorph-morph exited with {r.returncode}: "
                              f"{r.stderr.strip()}", r.returncode)
        reports = json.loads(r.stdout)
        child = load(child_file)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    was_training = module.training
    # The parent in the child's dtype: itself, or a copy (Module.to converts in place).
    same = all(t.dtype == dtype for _, t in tensors)
    reference = module if same else copy.deepcopy(module).to(dtype)
    try:
        reference.eval()
        child.eval()
        gen = torch.Generator().manual_seed(0 if seed is None else int(seed))
        x = torch.randn((check_batch,) + tuple(input_shape), generator=gen, dtype=dtype)
        with torch.no_grad():
            want = reference(x)
            got = child(x)
    finally:
        module.train(was_training)
    child.train(was_training)
    if tolerance is None:
        tolerance = 1e-10 if dtype == torch.float64 else 1e-5
    err = _relative_error(got, want)
    if not math.isfinite(err) or (err > tolerance and not allow_approx):
        raise NotExact(f"netmorph_torch.morph: the child's outputs differ from the parent's by "
                       f"{err:.3g} relative (tolerance {tolerance:.3g}) on {check_batch} random "
                       f"inputs in eval mode")
    for rep in reports:
        rep["torch_relative_output_error"] = err
    return child, reports
