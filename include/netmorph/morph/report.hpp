#ifndef NETMORPH_MORPH_REPORT_HPP
#define NETMORPH_MORPH_REPORT_HPP

/// \file report.hpp
/// `morph_report`: the one outcome type of every morph (weight level and model level). What was
/// done, how exact it is, the new tensors, and notes for the user, printable as lines
/// (`summary()`) or as a flat key/value list with stable keys (`fields()`). "Not measured" is
/// `std::nullopt` / `std::monostate`, never NaN or infinity.

#include <netmorph/detail/message.hpp>
#include <netmorph/ops/conv2d.hpp>
#include <netmorph/ops/dense.hpp>
#include <netmorph/tensor.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace netmorph {

/// Statistics of one tensor a morph created or changed.
struct tensor_summary {
  std::string name;  ///< "F1", "F2", "layer", "next", "layer 3", "path 1 layer 0", ...
  shape_type shape;
  double nonzero_fraction = 0;  ///< fraction of exactly non-zero values
  double std = 0;               ///< population standard deviation of the values
};

/// A report value; `std::monostate` is "not measured" (the only convention for it).
using field_value = std::variant<std::monostate, bool, std::int64_t, double, std::string>;

/// One key/value pair of `morph_report::fields()`.
struct report_field {
  std::string key;
  field_value value;
};

/// "-" for monostate, "true"/"false", the integer, `%.3g` for a double, the string itself.
inline std::string to_string(const field_value& v) {
  struct visitor {
    std::string operator()(std::monostate) const { return "-"; }
    std::string operator()(bool b) const { return b ? "true" : "false"; }
    std::string operator()(std::int64_t i) const { return std::to_string(i); }
    std::string operator()(double d) const {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.3g", d);
      return buf;
    }
    std::string operator()(const std::string& s) const { return s; }
  };
  return std::visit(visitor{}, v);
}

/// Sizes and solver facts of a depth morph (`deepen`, and every depth step of a subnet).
struct depth_details {
  index_type c0 = 0, c1 = 0, c2 = 0, k = 0, k1 = 0, k2 = 0;
  index_type solved_k1 = 0, solved_k2 = 0;    ///< equal to k1/k2 unless Algorithm 2 shrank one
  bool condition7 = false, one_step = false;  ///< meaningless for idmorph: summary() omits them
  int iterations = 0, half_steps = 0;
  bool fallback = false, kronecker = false;
};

/// Channel counts of a width morph.
struct width_details {
  index_type old_channels = 0, new_channels = 0;
};

/// Kernel sizes of a kernel-size morph.
struct kernel_details {
  index_type old_kernel = 0, new_kernel = 0;
};

/// The reach of a subnet and, for a stacked one, the split of G over its paths.
struct subnet_details {
  index_type k_tilde = 0;
  std::vector<double> split;  ///< stacked only
};

/// What a morph did and how exact it is.
struct morph_report {
  std::string operation;  ///< "deepen", "widen", "grow_kernel", "to_subnet", "to_stacked_subnet"
  std::string layer;      ///< model morphs: name of the parent layer; "" at weight level
  std::vector<std::string> new_layers;  ///< model morphs: names of the child layers
  /// deepen: "practical" | "general" | "idmorph"; widen: "netmorph" | "net2net"; grow_kernel:
  /// "zero_pad"; to_subnet: "repeated_depth"; to_stacked_subnet: "split_" + the split kind.
  std::string algorithm;
  bool exact = false;  ///< exact by construction: residual at tolerance, exact borders
  std::optional<double> relative_residual;      ///< where a morphism equation is solved
  std::optional<double> max_output_error;       ///< on the probes; nullopt: not measured
  std::optional<double> relative_output_error;  ///< ||child - parent|| / ||parent|| on the probes
  index_type probes = 0;                        ///< probe inputs used (0: not measured)
  std::vector<tensor_summary> new_tensors;
  std::vector<std::string> notes;  ///< sentences for the user, printed by summary()
  double seconds = 0;
  std::optional<depth_details> depth;
  std::optional<width_details> width;
  std::optional<kernel_details> kernel;
  std::optional<subnet_details> subnet;
  std::vector<morph_report> steps;  ///< to_subnet: its depth steps; to_stacked_subnet: its paths

  /// One line per fact, then the notes, in words.
  std::string summary() const {
    std::ostringstream os;
    netmorph::detail::throwing(os);
    os.precision(3);
    os << operation << (layer.empty() ? "" : " of " + layer) << ": " << algorithm_words() << ", "
       << (exact ? "exact" : "not exact by construction") << "\n";
    if (!new_layers.empty()) os << "  new layers       " << join(new_layers, ", ") << "\n";
    if (depth) depth_lines(os);
    if (width)
      os << "  channels         " << width->old_channels << " -> " << width->new_channels
         << (algorithm == "netmorph" ? ", new outgoing side zero" : "") << "\n";
    if (kernel)
      os << "  kernel           " << kernel->old_kernel << " -> " << kernel->new_kernel << "\n";
    if (subnet) {
      os << "  K~               " << subnet->k_tilde << "\n";
      if (!subnet->split.empty())
        os << "  split            " << join_numbers(subnet->split) << "\n";
    }
    if (relative_residual) os << "  residual         " << *relative_residual << "\n";
    if (max_output_error && relative_output_error)
      os << "  output error     max " << *max_output_error << ", relative "
         << *relative_output_error << " on " << probes << " probe inputs\n";
    else
      os << "  output error     not measured\n";
    for (const tensor_summary& t : new_tensors)
      os << "  " << t.name << std::string(t.name.size() < 17 ? 17 - t.name.size() : 1, ' ')
         << detail::shape_string(t.shape) << ", " << 100.0 * t.nonzero_fraction
         << "% non-zero, std " << t.std << "\n";
    os << "  time             " << seconds << " s\n";
    for (std::size_t i = 0; i < steps.size(); ++i)
      os << "  step " << i << ": " << indent(steps[i].summary());
    for (const std::string& n : notes)
      os << "  note: " << n << "\n";
    return os.str();
  }

  /// Flat, stable keys: the common facts, the details present, the tensors, the
  /// notes, then `steps.<i>.<key>` for every field of every step, recursively.
  std::vector<report_field> fields() const {
    std::vector<report_field> f;
    auto add = [&f](std::string key, field_value v) {
      f.push_back({std::move(key), std::move(v)});
    };
    auto opt = [](const std::optional<double>& v) {
      return v ? field_value(*v) : field_value(std::monostate{});
    };
    auto i64 = [](index_type v) { return field_value(static_cast<std::int64_t>(v)); };
    add("operation", operation);
    add("layer", layer);
    add("new_layers", join(new_layers, ","));
    add("algorithm", algorithm);
    add("exact", exact);
    add("relative_residual", opt(relative_residual));
    add("max_output_error", opt(max_output_error));
    add("relative_output_error", opt(relative_output_error));
    add("probes", i64(probes));
    add("seconds", seconds);
    if (depth) {
      const depth_details& d = *depth;
      const bool idmorph = algorithm == "idmorph";
      add("depth.c0", i64(d.c0));
      add("depth.c1", i64(d.c1));
      add("depth.c2", i64(d.c2));
      add("depth.k", i64(d.k));
      add("depth.k1", i64(d.k1));
      add("depth.k2", i64(d.k2));
      add("depth.solved_k1", i64(d.solved_k1));
      add("depth.solved_k2", i64(d.solved_k2));
      add("depth.condition7", idmorph ? field_value() : field_value(d.condition7));
      add("depth.one_step", idmorph ? field_value() : field_value(d.one_step));
      add("depth.iterations", i64(d.iterations));
      add("depth.half_steps", i64(d.half_steps));
      add("depth.fallback", d.fallback);
      add("depth.kronecker", d.kronecker);
    }
    if (width) {
      add("width.old_channels", i64(width->old_channels));
      add("width.new_channels", i64(width->new_channels));
    }
    if (kernel) {
      add("kernel.old_kernel", i64(kernel->old_kernel));
      add("kernel.new_kernel", i64(kernel->new_kernel));
    }
    if (subnet) {
      add("subnet.k_tilde", i64(subnet->k_tilde));
      for (std::size_t i = 0; i < subnet->split.size(); ++i)
        add("subnet.split." + std::to_string(i), subnet->split[i]);
    }
    for (const tensor_summary& t : new_tensors) {
      add("tensor." + t.name + ".shape", detail::shape_string(t.shape));
      add("tensor." + t.name + ".nonzero_fraction", t.nonzero_fraction);
      add("tensor." + t.name + ".std", t.std);
    }
    add("notes", join(notes, " "));
    for (std::size_t i = 0; i < steps.size(); ++i)
      for (report_field& s : steps[i].fields())
        add("steps." + std::to_string(i) + "." + s.key, std::move(s.value));
    return f;
  }

 private:
  static std::string join(const std::vector<std::string>& v, const char* sep) {
    std::string s;
    for (std::size_t i = 0; i < v.size(); ++i)
      s += (i ? sep : "") + v[i];
    return s;
  }
  static std::string join_numbers(const std::vector<double>& v) {
    std::string s;
    for (std::size_t i = 0; i < v.size(); ++i)
      s += (i ? ", " : "") + to_string(field_value(v[i]));
    return s;
  }
  static std::string indent(const std::string& s) {
    std::string out;
    for (std::size_t i = 0; i < s.size(); ++i) {
      out += s[i];
      if (s[i] == '\n' && i + 1 < s.size()) out += "    ";
    }
    return out;
  }

  std::string algorithm_words() const {
    if (algorithm == "practical") return "practical (Algorithm 2)";
    if (algorithm == "general") return "general (Algorithm 1)";
    if (algorithm == "idmorph") return "IdMorph (Net2Net's deeper op)";
    if (algorithm == "netmorph") return "NetMorph width rule";
    if (algorithm == "net2net") return "Net2Net replicate-and-divide";
    if (algorithm == "zero_pad") return "centred zero-padding";
    if (algorithm == "repeated_depth") return "repeated depth morphing";
    return algorithm;
  }

  void depth_lines(std::ostringstream& os) const {
    const depth_details& d = *depth;
    os << "  parent           (" << d.c2 << ", " << d.c0 << ", " << d.k << ", " << d.k << ")\n"
       << "  child            F1 (" << d.c1 << ", " << d.c0 << ", " << d.k1 << ", " << d.k1
       << ") -> F2 (" << d.c2 << ", " << d.c1 << ", " << d.k2 << ", " << d.k2 << ")\n";
    if (algorithm == "idmorph") {
      os << "  construction     F1 = G, F2 = identity filter (" << d.c2 << ", " << d.c2 << ", "
         << d.k2 << ", " << d.k2
         << "); exact for any activation with the P-activation at a = 1 between them (Net2Net "
            "inserts the identity behind the activation instead, exact for ReLU only)\n";
      return;
    }
    os << "  solved at        K1 = " << d.solved_k1 << ", K2 = " << d.solved_k2 << "\n"
       << "  condition (7)    " << (d.condition7 ? "holds" : "fails")
       << (d.one_step ? ", one half-step can be exact" : ", no half-step can be exact") << "\n"
       << "  iterations       " << d.iterations << " (" << d.half_steps << " half-steps"
       << (d.kronecker ? ", Kronecker-reduced" : "") << (d.fallback ? ", COD fallback" : "")
       << ")\n";
  }
};

/// The largest relative output error on the probes at which a morph is still called exact:
/// 1e-4 in float and 1e-9 in double (docs/DESIGN.md §7). The library, `netmorph-morph` and the
/// tests use this one definition.
template <typename Scalar>
constexpr double exact_tolerance() {
  static_assert(std::is_floating_point<Scalar>::value, "exact_tolerance: a floating-point type");
  return std::is_same<Scalar, float>::value ? 1e-4 : 1e-9;
}

/// Whether a morph is exact, and if not, why in words.
struct exactness {
  bool exact = false;
  std::string why;  ///< empty when exact
};

/// The one rule that decides whether the morph `r` (on weights stored as `Scalar`) is exact: it
/// is exact by construction (`r.exact`: its solver met its tolerance, its borders are exact,
/// its output error could be measured) and, where it was measured, its relative output error
/// is at most `exact_tolerance<Scalar>()`.
template <typename Scalar>
exactness judge_exactness(const morph_report& r) {
  exactness e;
  if (r.probes > 0 && !r.relative_output_error) {  // see detail::record_output_error
    e.why = detail::cat("the output error on the ", r.probes,
                        " probe inputs cannot be measured: an output holds an infinity or a NaN, "
                        "or is too large to compare (values beyond the range of the scalar type)");
    return e;
  }
  if (!r.exact) {
    e.why = "not exact by construction";
    for (std::size_t i = 0; i < r.notes.size(); ++i)
      e.why += (i ? " " : " (") + r.notes[i] + (i + 1 == r.notes.size() ? ")" : "");
    return e;
  }
  if (r.relative_output_error && !(*r.relative_output_error <= exact_tolerance<Scalar>())) {
    std::ostringstream os;
    netmorph::detail::throwing(os);
    os.precision(3);
    os << "relative output error " << *r.relative_output_error << " on " << r.probes
       << " probe inputs is above the tolerance " << exact_tolerance<Scalar>();
    e.why = os.str();
    return e;
  }
  e.exact = true;
  return e;
}

/// Random inputs on which a morph's child is compared with its parent.
struct probe_options {
  index_type count = 4;  ///< random inputs on which the child is compared with the parent; 0: none
  index_type size = 0;   ///< spatial size of conv probes; 0 chooses one that exercises every border
};

namespace detail {

/// Throws `value_error` naming `who` on a negative probe count or size.
inline void check_probe_options(const probe_options& p, const char* who) {
  require<value_error>(p.count >= 0 && p.size >= 0, who,
                       ": probe.count and probe.size must be >= 0, got ", p.count, " and ", p.size);
}

/// The probes' own random stream: they do not shift the morph's draws.
inline std::mt19937_64 probe_rng(std::uint64_t seed) {
  return std::mt19937_64(seed ^ 0x2545F4914F6CDD1Dull);
}

/// Spatial side of conv probes for a layer of kernel `k`, padding `pad`, stride `stride` whose
/// child reaches `growth` pixels further on each side: every output pixel class (both borders,
/// every stride phase, the interior) appears. `probe.size` overrides it.
inline index_type probe_side(const probe_options& p, index_type k, index_type pad,
                             index_type stride, index_type growth) {
  if (p.size > 0) return p.size;
  return std::max<index_type>(0, k - 2 * pad) + k + 2 * growth + 2 * stride + 3;
}

/// `probe.count` random N(0, 1) inputs of shape `(count, rest...)`, or nullopt when the count is 0.
template <typename Scalar>
std::optional<tensor<Scalar>> probe_input(const probe_options& p, shape_type rest,
                                          std::uint64_t seed) {
  if (p.count == 0) return std::nullopt;
  rest.insert(rest.begin(), p.count);
  std::mt19937_64 rng = probe_rng(seed);
  return tensor<Scalar>::random_normal(std::move(rest), rng);
}

/// Fills the output errors of `rep` from the child's and the parent's outputs on the probes.
/// Where either holds an infinity or a NaN (weights whose products overflow `Scalar`, say) the
/// error cannot be measured: it stays unset, `rep.exact` becomes false (an unmeasurable error is
/// never exact), and a note says why.
template <typename Scalar>
void record_output_error(morph_report& rep, const tensor<Scalar>& child,
                         const tensor<Scalar>& parent) {
  rep.probes = child.rank() ? child.dim(0) : 0;
  rep.max_output_error.reset();
  rep.relative_output_error.reset();
  const bool parent_finite = first_non_finite(parent.data(), parent.size()) < 0;
  const bool child_finite = first_non_finite(child.data(), child.size()) < 0;
  if (!parent_finite || !child_finite) {
    rep.exact = false;
    rep.notes.push_back(cat(
        "The ",
        parent_finite  ? "child's"
        : child_finite ? "parent's"
                       : "parent's and the child's",
        " output on the ", rep.probes,
        " probe inputs holds an infinity or a NaN (values beyond the range of the scalar type), so "
        "the output error cannot be measured and the morph is not called exact."));
    return;
  }
  rep.max_output_error = max_abs_error(child, parent);
  rep.relative_output_error = relative_error(child, parent);
  if (!std::isfinite(*rep.relative_output_error)) {  // finite outputs whose squares overflow
    rep.exact = false;
    rep.max_output_error.reset();
    rep.relative_output_error.reset();
    rep.notes.push_back(cat("The outputs on the ", rep.probes,
                            " probe inputs are too large to compare (their squared norm "
                            "overflows a double), so the morph is not called exact."));
  }
}

/// Fills the output errors of `rep` from `parent(x)` and `child(x)`. No input: not measured.
/// Outputs of different shapes: not measured, not exact, and a note says why.
template <typename Scalar, typename Parent, typename Child>
void measure_probes(morph_report& rep, const std::optional<tensor<Scalar>>& x, Parent&& parent,
                    Child&& child) {
  if (!x) return;
  const tensor<Scalar> y = parent(*x);
  const tensor<Scalar> z = child(*x);
  if (y.shape() != z.shape()) {
    rep.exact = false;
    rep.notes.push_back(cat("On the probes the child's output has shape ", shape_string(z.shape()),
                            " and the parent's ", shape_string(y.shape()),
                            ": the output error is not measured."));
    return;
  }
  record_output_error(rep, z, y);
}

/// One layer's forward pass, conv2d or dense by the weight type.
template <typename Scalar>
tensor<Scalar> forward_layer(const tensor<Scalar>& x, const conv2d_weights<Scalar>& l) {
  return conv2d(x, l);
}
template <typename Scalar>
tensor<Scalar> forward_layer(const tensor<Scalar>& x, const dense_weights<Scalar>& l) {
  return dense(x, l);
}

/// Probes a morph of the convolution `parent` whose child reaches `growth` pixels further on
/// each side: the parent is `conv2d(x, parent)`, the child `child(x)`.
template <typename Scalar, typename Child>
void probe_conv_child(morph_report& rep, const conv2d_weights<Scalar>& parent,
                      const probe_options& p, index_type growth, std::uint64_t seed,
                      Child&& child) {
  const index_type side =
      probe_side(p, parent.weight.dim(2), parent.options.padding, parent.options.stride, growth);
  measure_probes(
      rep, probe_input<Scalar>(p, {parent.weight.dim(1) * parent.options.groups, side, side}, seed),
      [&](const tensor<Scalar>& x) { return conv2d(x, parent); }, std::forward<Child>(child));
}

/// A seed from two (splitmix64 finaliser): nearby inputs give unrelated outputs.
inline std::uint64_t mix_seed(std::uint64_t a, std::uint64_t b) {
  std::uint64_t z = a + 0x9E3779B97F4A7C15ull * (b + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/// The statistics of a tensor a morph made.
template <typename Scalar>
tensor_summary summarize(std::string name, const tensor<Scalar>& t) {
  return tensor_summary{std::move(name), t.shape(), nonzero_fraction(t), stddev(t)};
}

/// Seconds since `t0`.
inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace detail

}  // namespace netmorph

#endif  // NETMORPH_MORPH_REPORT_HPP
