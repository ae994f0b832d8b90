"""Reads .safetensors files written by netmorph with nothing but struct, json and numpy.

Usage: read_safetensors.py DIR -- checks every file named in DIR/expected.json (written by the
test_io_python_write fixture) holds exactly the expected tensors and architecture."""
import json, struct, sys
import numpy as np


def read_safetensors(path):  # the ten-line reader
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", {})
    types = {"F16": "<f2", "BF16": None, "F32": "<f4", "F64": "<f8"}
    tensors = {k: np.frombuffer(data[v["data_offsets"][0]:v["data_offsets"][1]],
                                dtype=types[v["dtype"]]).reshape(v["shape"]) for k, v in header.items()}
    return tensors, meta


def main(directory):
    expected = json.load(open(directory + "/expected.json"))
    for name, want in expected.items():
        tensors, meta = read_safetensors(directory + "/" + name)
        assert meta["netmorph.format"] == "1", meta
        assert json.loads(meta["netmorph.architecture"]) == json.loads(want.pop("__architecture__"))
        want.pop("__input__", None)  # the model's function, for the PyTorch bridge's test
        want.pop("__output__", None)
        assert sorted(tensors) == sorted(want), (sorted(tensors), sorted(want))
        for k, w in want.items():
            t = tensors[k]
            assert list(t.shape) == w["shape"], (k, t.shape, w["shape"])
            assert np.array_equal(t.astype(np.float64).ravel(), np.array(w["values"])), k
        print(name, "ok:", len(tensors), "tensors")


if __name__ == "__main__":
    main(sys.argv[1])
