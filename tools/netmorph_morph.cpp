// netmorph-morph: morph a model file from the command line.
//
//   netmorph-morph [options] IN.safetensors OUT.safetensors OP [OP ...]
//   netmorph-morph --list IN.safetensors
//
// Ops run in order on the model read from IN, each addressing its layer by its name at that point
// (a morphed layer's children are named by the model's rule: `N` becomes `N.0`, `N.1`, ...; a
// stacked subnet makes `N` a parallel block `N.path<i>.<j>`; widen and kernel keep names). OUT is
// written only when every op succeeded, by netmorph::io::save (its rules: a regular file or a new
// path, a link's target, mode and owner kept, renamed over OUT at the end). Exit codes: 0 ok, 1 bad
// usage, 2 a file that cannot be read or written or a layer name not in the model, 3 a morph that
// is not exact within tolerance.

#include <netmorph/io.hpp>
#include <netmorph/nn.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <map>
#include <new>
#include <optional>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace {

namespace nn = netmorph::nn;
using netmorph::index_type;

constexpr const char* program = "netmorph-morph";

enum exit_code { ok = 0, bad_usage = 1, bad_file = 2, not_exact = 3 };

/// An error that ends the program with `code` and `message` (printed after "netmorph-morph: ").
struct failure {
  exit_code code;
  std::string message;
};

[[noreturn]] void fail(exit_code code, std::string message) {
  throw failure{code, std::move(message)};
}

// The help text; @ACT@ stands for the paragraph of activation names (`activation_help`).
const char* const help_template =
    R"(usage: netmorph-morph [options] IN.safetensors OUT.safetensors OP [OP ...]
       netmorph-morph --list IN.safetensors
       netmorph-morph --group NAME IN.safetensors

Reads the model in IN, applies the ops in order, checks that the child computes the parent's
function, and writes it to OUT (only when every op succeeded; an existing OUT is otherwise left
as it was). Each op names its layer by its name at that point: see --list. When IN holds
optimizer state (SGD velocities, Adam moments and steps: netmorph::io::save_options::
optimizer_state) and settings, OUT holds them too, the state carried through every op as the
library's morphs carry it (new parameters start at zero), so training resumes where it stopped.

Ops:
  deepen:NAME[:k1=K1,k2=K2,width=C1,act=ACT]
      NAME (conv2d or dense) becomes NAME.0 (K1 x K1, C1 outputs), NAME.1 (a P-activation at
      a = 1, where it is the identity) and NAME.2 (K2 x K2). Defaults: K1 = NAME's kernel,
      K2 = 1, C1 = NAME's outputs.
@ACT@
      When an activation follows NAME (before the next conv2d/dense layer), NAME.1 is a
      P-activation of it, and ACT, if given, must be that same activation (else exit 1).
      When no activation follows NAME (the last layer, say), ACT chooses NAME.1's activation
      (default relu).
  widen:NAME:to=C[,rule=netmorph|net2net]
      NAME (conv2d or dense) gets C >= its output channels, and with it the whole channel
      group: the layers summed with NAME in residual blocks, the batch norms and depthwise
      convolutions the channels flow through, and the inputs of every conv2d/dense layer
      that reads them. Names are kept.
  kernel:NAME:to=K
      conv2d NAME's kernel grows to K (K - old kernel even). Names are kept.
  subnet:NAME:widths=C1/.../CP,kernels=K1/.../K(P+1)
      conv2d NAME becomes the chain NAME.0, NAME.1 (P-activation), NAME.2, ...
  stacked:NAME:paths=N
      conv2d NAME (C_out outputs, K x K) becomes a parallel block NAME of N summed paths, each
      the two-layer subnet kernels K/1, widths C_out: NAME.path<i>.0, .1 (P-activation), .2.

Options:
  --seed N          base seed (default 0); op i (0-based) uses splitmix64(N + (i+1) * 2^64/phi)
  --algorithm A     practical (default), general or idmorph: the depth algorithm of deepen,
                    subnet and stacked
  --dtype T         float32 or float64: the dtype of OUT, and the precision of the computation
                    (double for float64, float for float32). Default: float64 if IN holds F64
                    weights, else float32.
  --json            print the reports as a JSON array (one object of report fields per op)
  --allow-approx    keep a morph that is not exact within tolerance (exit 0, report says so)
  --list            print IN's layers (name, description, output shape) and exit
  --group NAME      print the channel group of layer NAME (what widen:NAME grows: each layer
                    with its role, producer, through or consumer, and its values per channel)
                    and exit
  --help            this text

Files: IN must be a regular file (or a link to one); a directory, FIFO or device is refused.
OUT must be a regular file or a new path: a directory, FIFO, device (/dev/null) or socket is
refused, and so is a read-only OUT (no write permission, even for root). A symbolic link is
followed: its target is replaced and the link stays; a dangling link is refused. A replaced OUT
keeps its mode and owner. OUT is written unnamed (Linux O_TMPFILE; elsewhere as
.netmorph-XXXXXX) in the directory of the file it replaces, synced, and renamed over it at the
end, so a failed or killed run leaves an existing OUT as it was.

Exactness: a morph is exact when its solver reaches its tolerance and the child's output on random
probe inputs differs from the parent's by at most 1e-4 (float32) or 1e-9 (float64) relative. An
error that cannot be measured (outputs with an infinity or NaN) is never exact; --json says
"exact": false and why under "not_exact_because".

Exit codes: 0 ok; 1 bad usage (unknown option, malformed op, an op the layer does not allow);
2 a file that cannot be read or written, or a layer name not in the model; 3 a morph that is not
exact within tolerance (unless --allow-approx).

Examples:
  netmorph-morph --list parent.safetensors
  netmorph-morph parent.safetensors child.safetensors deepen:3 widen:3.0:to=16
  netmorph-morph --seed 7 --json in.safetensors out.safetensors kernel:features.0:to=5 \
      subnet:features.3:widths=64/64,kernels=3/1/1 stacked:features.6:paths=2
  netmorph-morph --algorithm general --allow-approx in.safetensors out.safetensors \
      deepen:3:k1=3,k2=3,width=1
)";

/// The kinds with a parameter, from netmorph::activation_kinds: "leaky_relu and elu".
std::string param_kinds() {
  std::vector<std::string> names;
  for (netmorph::activation_kind k : netmorph::activation_kinds)
    if (netmorph::has_param(k)) names.push_back(netmorph::to_string(k));
  std::string s;
  for (std::size_t i = 0; i < names.size(); ++i)
    s += (i == 0 ? "" : i + 1 == names.size() ? " and " : ", ") + names[i];
  return s;
}

/// An ACT with a parameter ("elu(0.5)"): the last kind that has one.
std::string param_example() {
  std::string s;
  for (netmorph::activation_kind k : netmorph::activation_kinds)
    if (netmorph::has_param(k)) s = std::string(netmorph::to_string(k)) + "(0.5)";
  return s;
}

/// The help's paragraph on ACT, generated from netmorph::activation_kinds and wrapped at 96
/// columns, 6 spaces in: every name, the kinds with a parameter and their defaults (PyTorch's).
std::string activation_help() {
  std::string text = "ACT is ";
  std::ostringstream defaults;  // "leaky_relu 0.01, elu 1"
  const auto& kinds = netmorph::activation_kinds;
  for (std::size_t i = 0; i < kinds.size(); ++i) {
    text += (i == 0 ? "" : i + 1 == kinds.size() ? " or " : ", ");
    text += netmorph::to_string(kinds[i]);
    if (netmorph::has_param(kinds[i]))
      defaults << (defaults.tellp() > 0 ? ", " : "") << netmorph::to_string(kinds[i]) << " "
               << netmorph::default_param(kinds[i]);
  }
  text += "; " + param_kinds() + " take a parameter, as in " + param_example() +
          " (PyTorch's defaults: " + defaults.str() + ").";
  std::string out, line;
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t end = text.find(' ', start);
    if (end == std::string::npos) end = text.size();
    const std::string word = text.substr(start, end - start);
    if (!line.empty() && 6 + line.size() + 1 + word.size() > 96) {
      out += "      " + line + "\n";
      line.clear();
    }
    line += (line.empty() ? "" : " ") + word;
    start = end + 1;
  }
  return out + "      " + line + "\n";
}

/// The help text with the paragraph on ACT in place.
std::string help_text() {
  std::string s = help_template;
  const std::string mark = "@ACT@\n";
  s.replace(s.find(mark), mark.size(), activation_help());
  return s;
}

// ---------------------------------------------------------------------------------------------
// Command line

enum class op_kind { deepen, widen, kernel, subnet, stacked };

/// One parsed op: its text (for messages), kind, layer name and key=value parameters.
struct op_spec {
  std::string text;
  op_kind kind = op_kind::deepen;
  std::string layer;
  std::optional<index_type> k1, k2, width, to, paths;
  std::optional<netmorph::activation_fn> act;
  netmorph::width_rule rule = netmorph::width_rule::netmorph;
  std::vector<index_type> widths, kernels;
};

struct config {
  std::string in, out;
  std::vector<op_spec> ops;
  std::uint64_t seed = 0;
  netmorph::depth_algorithm algorithm = netmorph::depth_algorithm::practical;
  std::optional<netmorph::io::dtype> dtype;
  bool json = false, allow_approx = false, list = false, help = false;
  std::string group;  // --group NAME: print NAME's channel group and exit
};

std::string op_message(const std::string& op, const std::string& what) {
  return "op '" + op + "' " + what;
}

/// A positive integer, or nullopt.
std::optional<index_type> parse_positive(const std::string& s) {
  if (s.empty() || s.size() > 9 || s.find_first_not_of("0123456789") != std::string::npos)
    return std::nullopt;
  const long v = std::strtol(s.c_str(), nullptr, 10);
  if (v < 1) return std::nullopt;
  return static_cast<index_type>(v);
}

std::optional<std::uint64_t> parse_u64(const std::string& s) {
  if (s.empty() || s.size() > 20 || s.find_first_not_of("0123456789") != std::string::npos)
    return std::nullopt;
  errno = 0;
  const unsigned long long v = std::strtoull(s.c_str(), nullptr, 10);
  if (errno == ERANGE) return std::nullopt;
  return static_cast<std::uint64_t>(v);
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> parts;
  std::string::size_type begin = 0;
  for (;;) {
    const auto end = s.find(sep, begin);
    parts.push_back(s.substr(begin, end == std::string::npos ? std::string::npos : end - begin));
    if (end == std::string::npos) return parts;
    begin = end + 1;
  }
}

/// "relu", "tanh", ..., "elu(0.5)", "leaky_relu(0.2)"; nullopt when not one.
std::optional<netmorph::activation_fn> parse_activation(const std::string& s) {
  std::string name = s;
  std::optional<double> param;
  const auto open = s.find('(');
  if (open != std::string::npos) {
    if (s.back() != ')') return std::nullopt;
    name = s.substr(0, open);
    const std::string p = s.substr(open + 1, s.size() - open - 2);
    char* end = nullptr;
    const double v = std::strtod(p.c_str(), &end);
    if (p.empty() || *end != '\0') return std::nullopt;
    param = v;
  }
  const std::optional<netmorph::activation_kind> k = netmorph::activation_kind_from_string(name);
  if (!k || (param && !netmorph::has_param(*k))) return std::nullopt;
  return param ? netmorph::activation_fn{*k, *param} : netmorph::activation_fn{*k};
}

/// Parses one op; fails with bad_usage naming the op and what was expected.
op_spec parse_op(const std::string& text) {
  static const std::map<std::string, std::pair<op_kind, const char*>> kinds = {
      {"deepen", {op_kind::deepen, "deepen:NAME[:k1=K1,k2=K2,width=C1,act=ACT]"}},
      {"widen", {op_kind::widen, "widen:NAME:to=C[,rule=netmorph|net2net]"}},
      {"kernel", {op_kind::kernel, "kernel:NAME:to=K"}},
      {"subnet", {op_kind::subnet, "subnet:NAME:widths=C1/.../CP,kernels=K1/.../K(P+1)"}},
      {"stacked", {op_kind::stacked, "stacked:NAME:paths=N"}}};
  op_spec op;
  op.text = text;
  const std::vector<std::string> parts = split(text, ':');
  const auto kind = kinds.find(parts[0]);
  if (kind == kinds.end())
    fail(bad_usage, op_message(text,
                               "is not an op: expected deepen:, widen:, kernel:, subnet: or "
                               "stacked: followed by a layer name (see --help)"));
  op.kind = kind->second.first;
  const std::string form = kind->second.second;
  if (parts.size() < 2 || parts[1].empty())
    fail(bad_usage, op_message(text, "needs a layer name: expected " + form));
  if (parts.size() > 3)
    fail(bad_usage, op_message(text, "has too many ':' fields: expected " + form));
  op.layer = parts[1];

  std::map<std::string, std::string> params;
  if (parts.size() == 3) {
    for (const std::string& kv : split(parts[2], ',')) {
      const auto eq = kv.find('=');
      if (eq == std::string::npos || eq == 0 || eq + 1 == kv.size())
        fail(bad_usage, op_message(text, "has '" + kv + "' where key=value was expected: " + form));
      const std::string key = kv.substr(0, eq);
      if (!params.emplace(key, kv.substr(eq + 1)).second)
        fail(bad_usage, op_message(text, "gives " + key + " twice"));
    }
  }
  auto known = [&](std::initializer_list<const char*> keys) {
    for (const auto& p : params) {
      if (std::none_of(keys.begin(), keys.end(), [&](const char* k) { return p.first == k; }))
        fail(bad_usage, op_message(text, "has an unknown key '" + p.first + "': expected " + form));
    }
  };
  auto positive = [&](const char* key, const char* what) -> std::optional<index_type> {
    const auto it = params.find(key);
    if (it == params.end()) return std::nullopt;
    const auto v = parse_positive(it->second);
    if (!v)
      fail(bad_usage, op_message(text, std::string("needs ") + key + "=" + what +
                                           " a positive integer, got '" + it->second + "'"));
    return v;
  };
  auto required = [&](const char* key, const char* what) {
    if (!params.count(key))
      fail(bad_usage, op_message(text, std::string("needs ") + key + "=" + what));
    return *positive(key, what);
  };
  auto list = [&](const char* key, const char* what) {
    const auto it = params.find(key);
    if (it == params.end())
      fail(bad_usage, op_message(text, std::string("needs ") + key + "=" + what));
    std::vector<index_type> out;
    for (const std::string& s : split(it->second, '/')) {
      const auto v = parse_positive(s);
      if (!v)
        fail(bad_usage, op_message(text, std::string("needs ") + key + "=" + what +
                                             " (positive integers separated by '/'), got '" +
                                             it->second + "'"));
      out.push_back(*v);
    }
    return out;
  };

  switch (op.kind) {
    case op_kind::deepen:
      known({"k1", "k2", "width", "act"});
      op.k1 = positive("k1", "K1");
      op.k2 = positive("k2", "K2");
      op.width = positive("width", "C1");
      if (params.count("act")) {
        op.act = parse_activation(params["act"]);
        if (!op.act)
          fail(bad_usage,
               op_message(text, "needs act=ACT one of " + netmorph::activation_kind_names() + " (" +
                                    param_kinds() + " may take a parameter: " + param_example() +
                                    "), got '" + params["act"] + "'"));
      }
      break;
    case op_kind::widen:
      known({"to", "rule"});
      op.to = required("to", "C");
      if (params.count("rule")) {
        const std::string& r = params["rule"];
        if (r == "netmorph")
          op.rule = netmorph::width_rule::netmorph;
        else if (r == "net2net")
          op.rule = netmorph::width_rule::net2net;
        else
          fail(bad_usage, op_message(text, "needs rule=netmorph or rule=net2net, got '" + r + "'"));
      }
      break;
    case op_kind::kernel:
      known({"to"});
      op.to = required("to", "K");
      break;
    case op_kind::subnet:
      known({"widths", "kernels"});
      op.widths = list("widths", "C1/.../CP");
      op.kernels = list("kernels", "K1/.../K(P+1)");
      if (op.kernels.size() != op.widths.size() + 1)
        fail(bad_usage, op_message(text,
                                   "needs one more kernel than widths (kernels=K1/.../K(P+1) "
                                   "for widths=C1/.../CP), got " +
                                       std::to_string(op.kernels.size()) + " kernels and " +
                                       std::to_string(op.widths.size()) + " widths"));
      break;
    case op_kind::stacked:
      known({"paths"});
      op.paths = required("paths", "N");
      break;
  }
  return op;
}

config parse_args(int argc, char** argv) {
  config c;
  std::vector<std::string> positional;
  bool options_done = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (options_done || a.size() < 2 || a[0] != '-') {
      positional.push_back(a);
      continue;
    }
    if (a == "--") {
      options_done = true;
      continue;
    }
    std::string value;
    bool has_value = false;
    const auto eq = a.find('=');
    if (a.compare(0, 2, "--") == 0 && eq != std::string::npos) {
      value = a.substr(eq + 1);
      a = a.substr(0, eq);
      has_value = true;
    }
    auto take = [&](const char* what) {
      if (has_value) return value;
      if (i + 1 >= argc) fail(bad_usage, a + " needs " + what);
      return std::string(argv[++i]);
    };
    auto flag = [&] {
      if (has_value) fail(bad_usage, a + " takes no value");
    };
    if (a == "--help" || a == "-h") {
      flag();
      c.help = true;
    } else if (a == "--json") {
      flag();
      c.json = true;
    } else if (a == "--allow-approx") {
      flag();
      c.allow_approx = true;
    } else if (a == "--list") {
      flag();
      c.list = true;
    } else if (a == "--group") {
      c.group = take("a layer NAME");
    } else if (a == "--seed") {
      const std::string v = take("a seed N");
      const auto s = parse_u64(v);
      if (!s) fail(bad_usage, "--seed needs a non-negative integer below 2^64, got '" + v + "'");
      c.seed = *s;
    } else if (a == "--algorithm") {
      const std::string v = take("practical, general or idmorph");
      if (v == "practical")
        c.algorithm = netmorph::depth_algorithm::practical;
      else if (v == "general")
        c.algorithm = netmorph::depth_algorithm::general;
      else if (v == "idmorph")
        c.algorithm = netmorph::depth_algorithm::idmorph;
      else
        fail(bad_usage, "--algorithm needs practical, general or idmorph, got '" + v + "'");
    } else if (a == "--dtype") {
      const std::string v = take("float32 or float64");
      if (v == "float32")
        c.dtype = netmorph::io::dtype::float32;
      else if (v == "float64")
        c.dtype = netmorph::io::dtype::float64;
      else
        fail(bad_usage, "--dtype needs float32 or float64, got '" + v + "'");
    } else {
      fail(bad_usage, "unknown option '" + a + "' (see --help)");
    }
  }
  if (c.help) return c;
  if (c.list || !c.group.empty()) {
    if (c.list && !c.group.empty()) fail(bad_usage, "--list and --group cannot be combined");
    if (positional.size() != 1)
      fail(bad_usage, std::string(c.list ? "--list" : "--group") +
                          " needs exactly one file, IN.safetensors (got " +
                          std::to_string(positional.size()) + " arguments)");
    c.in = positional[0];
    return c;
  }
  if (positional.size() < 3)
    fail(bad_usage, "needs IN.safetensors OUT.safetensors and at least one OP (see --help)");
  c.in = positional[0];
  c.out = positional[1];
  for (std::size_t i = 2; i < positional.size(); ++i)
    c.ops.push_back(parse_op(positional[i]));
  return c;
}

// ---------------------------------------------------------------------------------------------
// Morphing

/// Seed of op `i`: the splitmix64 finaliser of `base + (i + 1) * golden`, so ops differ and
/// nearby bases give unrelated seeds.
std::uint64_t op_seed(std::uint64_t base, std::size_t i) {
  std::uint64_t z = base + 0x9E3779B97F4A7C15ull * (static_cast<std::uint64_t>(i) + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

std::string shape_text(const netmorph::shape_type& s) {
  std::string out = "(";
  for (std::size_t i = 0; i < s.size(); ++i)
    out += (i ? ", " : "") + std::to_string(s[i]);
  return out + ")";
}

std::string join(const std::vector<std::string>& v, const char* sep) {
  std::string s;
  for (std::size_t i = 0; i < v.size(); ++i)
    s += (i ? sep : "") + v[i];
  return s;
}

netmorph::deepen_options depth_step(const config& c) {
  netmorph::deepen_options d;
  d.algorithm = c.algorithm;
  d.require_exact = !c.allow_approx;
  return d;
}

/// Runs one op on `m`. Library exceptions propagate; main maps them to exit codes.
template <typename Scalar>
netmorph::morph_report apply_op(nn::model<Scalar>& m, const op_spec& op, const config& c,
                                std::uint64_t seed) {
  switch (op.kind) {
    case op_kind::deepen: {
      netmorph::deepen_options d = depth_step(c);
      d.seed = seed;
      d.mid_channels = op.width.value_or(0);
      d.k1 = op.k1.value_or(0);
      d.k2 = op.k2.value_or(0);
      d.phi = op.act;
      return nn::deepen(m, op.layer, d);
    }
    case op_kind::widen: {
      netmorph::widen_options w;
      w.new_channels = *op.to;
      w.rule = op.rule;
      w.seed = seed;
      return nn::widen(m, op.layer, w);
    }
    case op_kind::kernel: {
      netmorph::grow_kernel_options g;
      g.new_kernel = *op.to;
      g.seed = seed;
      return nn::grow_kernel(m, op.layer, g);
    }
    case op_kind::subnet: {
      netmorph::subnet_options s;
      s.widths = op.widths;
      s.kernels = op.kernels;
      s.step = depth_step(c);
      s.step.seed = seed;
      return nn::to_subnet(m, op.layer, s);
    }
    case op_kind::stacked: {
      // The default path: the two-layer subnet kernels {K, 1}, widths {C_out}. A layer that is
      // not conv2d gets placeholder sizes; nn::to_stacked_subnet then names its kind.
      index_type k = 1, c_out = 1;
      if (const auto* conv = nn::layer_cast<nn::conv2d>(&m.find(op.layer))) {
        k = conv->weight().value.dim(2);
        c_out = conv->weight().value.dim(0);
      }
      netmorph::subnet_options path;
      path.kernels = {k, 1};
      path.widths = {c_out};
      path.step = depth_step(c);
      netmorph::stacked_subnet_options st;
      st.paths.assign(static_cast<std::size_t>(*op.paths), path);
      st.seed = seed;
      return nn::to_stacked_subnet(m, op.layer, st);
    }
  }
  fail(bad_usage, op_message(op.text, "has an unknown kind"));
}

/// The smallest non-zero fraction of the report's new tensors, its steps' included.
std::optional<double> min_nonzero(const netmorph::morph_report& r) {
  std::optional<double> best;
  for (const auto& t : r.new_tensors)
    best = best ? std::min(*best, t.nonzero_fraction) : t.nonzero_fraction;
  for (const auto& s : r.steps) {
    const auto b = min_nonzero(s);
    if (b) best = best ? std::min(*best, *b) : *b;
  }
  return best;
}

std::string number(const std::optional<double>& v) {
  return v ? netmorph::to_string(netmorph::field_value(*v)) : std::string("-");
}

void print_table(const std::vector<netmorph::morph_report>& reports, std::ostream& os) {
  const std::vector<std::string> head = {"operation", "layer",   "algorithm", "residual",
                                         "out_error", "nonzero", "seconds",   "new layers"};
  std::vector<std::vector<std::string>> rows{head};
  for (const auto& r : reports)
    rows.push_back({r.operation, r.layer, r.algorithm, number(r.relative_residual),
                    number(r.relative_output_error), number(min_nonzero(r)), number(r.seconds),
                    join(r.new_layers, ",")});
  std::vector<std::size_t> width(head.size(), 0);
  for (const auto& row : rows)
    for (std::size_t j = 0; j < row.size(); ++j)
      width[j] = std::max(width[j], row[j].size());
  for (const auto& row : rows) {
    std::string line;
    for (std::size_t j = 0; j < row.size(); ++j)
      line += row[j] + (j + 1 < row.size() ? std::string(width[j] - row[j].size() + 2, ' ') : "");
    os << line << "\n";
  }
  for (std::size_t i = 0; i < reports.size(); ++i)
    for (const std::string& n : reports[i].notes)
      os << "note (op " << i + 1 << ", " << reports[i].operation << " of " << reports[i].layer
         << "): " << n << "\n";
}

/// The report's fields as JSON, with "exact" the verdict of `netmorph::judge_exactness` and,
/// when it is false, "not_exact_because" saying why in words.
nlohmann::ordered_json to_json(const netmorph::morph_report& r, const netmorph::exactness& v) {
  nlohmann::ordered_json o = nlohmann::ordered_json::object();
  for (const netmorph::report_field& f : r.fields()) {
    struct visitor {
      nlohmann::ordered_json operator()(std::monostate) const { return nullptr; }
      nlohmann::ordered_json operator()(bool b) const { return b; }
      nlohmann::ordered_json operator()(std::int64_t i) const { return i; }
      nlohmann::ordered_json operator()(double d) const { return d; }
      nlohmann::ordered_json operator()(const std::string& s) const { return s; }
    };
    o[f.key] = std::visit(visitor{}, f.value);
  }
  o["exact"] = v.exact;
  if (!v.exact) o["not_exact_because"] = v.why;
  return o;
}

/// Prints `layers` one per line: name, description, what it reads (`from` for the first layer;
/// a parallel block lists the outputs it merges) and its output shape. Returns the name of the
/// last layer's output (`from` for no layers).
template <typename Scalar>
std::string list_layers(const nn::layer_list<Scalar>& layers, netmorph::shape_type shape,
                        std::string from, std::ostream& os) {
  for (const auto& l : layers) {
    const netmorph::shape_type out = l->output_shape(shape);
    if (const auto* p = nn::layer_cast<nn::parallel>(l.get())) {
      std::ostringstream inner;
      std::string merged;
      for (const auto& path : p->paths())
        merged += (merged.empty() ? "" : ", ") + list_layers(path, shape, from, inner);
      os << l->name() << "  " << l->describe() << "  <- " << merged << "  -> " << shape_text(out)
         << "\n"
         << inner.str();
    } else {
      os << l->name() << "  " << l->describe() << "  <- " << from << "  -> " << shape_text(out)
         << "\n";
    }
    from = l->name();
    shape = out;
  }
  return from;
}

/// What `main` needs to know of IN before loading it: the dtype OUT gets without --dtype
/// (float64 when IN holds an F64 weight, else float32), whether IN holds optimizer state
/// (velocities or Adam moments), and the optimizer settings it holds.
struct input_facts {
  netmorph::io::dtype type = netmorph::io::dtype::float32;
  bool optimizer_state = false;
  std::optional<nn::optimizer> optimizer;
};

input_facts inspect(const std::string& in) {
  netmorph::io::safetensors_reader r(in, "netmorph::io::load");
  input_facts f;
  for (const auto& t : r.tensors()) {
    bool state = false;
    for (const std::string prefix : {netmorph::io::velocity_prefix, netmorph::io::exp_avg_prefix,
                                     netmorph::io::exp_avg_sq_prefix})
      state = state || t.name.compare(0, prefix.size(), prefix) == 0;
    f.optimizer_state = f.optimizer_state || state;
    if (!state && t.type == netmorph::io::dtype::float64) f.type = netmorph::io::dtype::float64;
  }
  f.optimizer = netmorph::io::load_optimizer(in);
  return f;
}

template <typename Scalar>
int run(const config& c, const input_facts& in) {
  nn::model<Scalar> m = netmorph::io::load<Scalar>(c.in);
  if (c.list) {
    std::cout << "input  " << shape_text(m.input_shape()) << "\n";
    list_layers(m.layers(), m.input_shape(), "input", std::cout);
    return ok;
  }
  if (!c.group.empty()) {
    const nn::channel_group g = nn::channel_group_of(m, c.group, "netmorph-morph --group");
    std::cout << "channels  " << g.channels << "\n";
    for (const auto& mb : g.members)
      std::cout << mb.layer << "  " << nn::to_string(mb.role) << "  span " << mb.span
                << (mb.offset ? netmorph::detail::cat("  offset ", mb.offset) : std::string())
                << (mb.entries != 1 ? netmorph::detail::cat("  entries ", mb.entries)
                                    : std::string())
                << "\n";
    return ok;
  }
  std::vector<netmorph::morph_report> reports;
  std::vector<netmorph::exactness> verdicts;
  for (std::size_t i = 0; i < c.ops.size(); ++i) {
    const op_spec& op = c.ops[i];
    const std::vector<std::string> names = m.names();
    if (std::find(names.begin(), names.end(), op.layer) == names.end())
      fail(bad_file, op_message(op.text, "names layer '" + op.layer + "', which is not in " +
                                             (i == 0 ? "'" + c.in + "'"
                                                     : "the model after op " + std::to_string(i)) +
                                             "; its layers are " + join(names, ", ")));
    netmorph::morph_report r;
    try {
      r = apply_op(m, op, c, op_seed(c.seed, i));
    } catch (const netmorph::numerical_error& e) {
      fail(not_exact, op_message(op.text, std::string("could not be made exact: ") + e.what() +
                                              " (--allow-approx keeps the approximate child)"));
    } catch (const netmorph::io_error&) {
      throw;
    } catch (const netmorph::error& e) {
      fail(bad_usage, op_message(op.text, std::string("cannot be applied: ") + e.what()));
    }
    // The library's one rule decides (netmorph::judge_exactness, docs/DESIGN.md §7).
    const netmorph::exactness verdict = netmorph::judge_exactness<Scalar>(r);
    if (!verdict.exact && !c.allow_approx)
      fail(not_exact,
           op_message(op.text, "is not exact: " + verdict.why + "; --allow-approx keeps it"));
    if (!verdict.exact)
      std::cerr << program << ": warning: "
                << op_message(op.text,
                              "is not exact (" + verdict.why + "); kept because of --allow-approx")
                << "\n";
    reports.push_back(std::move(r));
    verdicts.push_back(verdict);
  }
  netmorph::io::save_options so;
  so.dtype = netmorph::io::native_dtype<Scalar>();
  so.optimizer_state = in.optimizer_state;
  so.optimizer = in.optimizer;
  netmorph::io::save(m, c.out, so);
  if (c.json) {
    nlohmann::ordered_json a = nlohmann::ordered_json::array();
    for (std::size_t i = 0; i < reports.size(); ++i)
      a.push_back(to_json(reports[i], verdicts[i]));
    std::cout << a.dump(2) << "\n";
  } else {
    print_table(reports, std::cout);
  }
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const config c = parse_args(argc, argv);
    if (c.help) {
      std::cout << help_text();
      return ok;
    }
    const input_facts in = inspect(c.in);
    const netmorph::io::dtype t = c.dtype ? *c.dtype : in.type;
    return t == netmorph::io::dtype::float64 ? run<double>(c, in) : run<float>(c, in);
  } catch (const failure& f) {
    std::cerr << program << ": " << f.message << "\n";
    if (f.code == bad_usage && f.message.find("--help") == std::string::npos)
      std::cerr << "(" << program << " --help shows the ops and options)\n";
    return f.code;
  } catch (const netmorph::io_error& e) {
    std::cerr << program << ": " << e.what() << "\n";
    return bad_file;
  } catch (const std::bad_alloc&) {
    std::cerr << program << ": out of memory: the model or an op's sizes are too large for this "
              << "machine\n";
    return bad_usage;
  } catch (const std::exception& e) {
    std::cerr << program << ": " << e.what() << "\n";
    return bad_usage;
  }
}
