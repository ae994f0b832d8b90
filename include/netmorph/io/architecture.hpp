#ifndef NETMORPH_IO_ARCHITECTURE_HPP
#define NETMORPH_IO_ARCHITECTURE_HPP

/// \file architecture.hpp
/// netmorph's architecture description (format "1"): a JSON object
///
///     {"input_shape": [1, 28, 28],
///      "layers": [{"name": "0", "kind": "conv2d", "in_channels": 1, "out_channels": 8,
///                  "kernel": 3, "stride": 1, "padding": 1, "bias": true}, ...]}
///
/// with one entry per top-level layer, in order. Every entry has `name` and `kind`
/// (`nn::to_string(layer_kind)`) and the kind's hyper-parameters, and nothing else; the tensors
/// each kind stores follow the arrow:
///
/// - conv2d: in_channels, out_channels, kernel (K or [Kh, Kw]), stride, padding, bias, groups
///   (optional, default 1; written only when it is not 1, so a reader without groups refuses a
///   grouped layer by its unknown field) -> weight (out, in / groups, Kh, Kw), bias (out)
/// - dense: in_features, out_features, bias -> weight (out, in), bias (out)
/// - pool2d: mode ("max" or "average"), window, stride, padding (optional, default 0)
/// - adaptive_pool2d: output_size ([height, width]; average pooling)
/// - flatten: nothing
/// - batch_norm: channels, eps, momentum -> weight (gamma), bias (beta), running_mean,
///   running_var, all (C)
/// - dropout: p
/// - activation: fn (`to_string(activation_kind)`), param
/// - p_activation: fn, param (of phi) -> a (1)
/// - parallel: paths, an array of arrays of entries (an empty path is the identity, a residual
///   shortcut), merge (optional: "add", the default, sums the paths' outputs; "concat"
///   concatenates them along the channels; "mul" multiplies them with broadcasting; written only
///   when it is not "add", so a reader without merges refuses one by its unknown field)
///
/// Tensors carry PyTorch state_dict names `<layer name>.<tensor>`; a layer inside a parallel block
/// `N` has a name starting with `N.` (the model names them `N.path<i>.<j>` unless told otherwise:
/// a ResNet block `layer1.0` holds `layer1.0.conv1`). SGD velocities, when
/// stored, are the tensors `__netmorph_velocity__.<parameter tensor name>` (`velocity_prefix`);
/// layer names starting with `__` are reserved.

#include <netmorph/activations.hpp>
#include <netmorph/detail/message.hpp>
#include <netmorph/error.hpp>
#include <netmorph/io/safetensors.hpp>
#include <netmorph/nn/layers.hpp>
#include <netmorph/nn/model.hpp>
#include <netmorph/tensor.hpp>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

namespace netmorph {
namespace io {

/// The `__metadata__` key holding the architecture JSON.
inline constexpr const char* architecture_key = "netmorph.architecture";
/// The `__metadata__` key holding the format version, `format_version`.
inline constexpr const char* format_key = "netmorph.format";
inline constexpr const char* format_version = "1";
/// Prefix of the tensors holding SGD velocities: `__netmorph_velocity__.0.weight`.
inline constexpr const char* velocity_prefix = "__netmorph_velocity__.";
/// Prefixes of the tensors holding Adam's first and second moments (PyTorch's `exp_avg` and
/// `exp_avg_sq`): `__netmorph_exp_avg__.0.weight`.
inline constexpr const char* exp_avg_prefix = "__netmorph_exp_avg__.";
inline constexpr const char* exp_avg_sq_prefix = "__netmorph_exp_avg_sq__.";
/// The `__metadata__` key holding Adam's step count of every parameter, a JSON object
/// `{"0.weight": 120, ...}`, written with the moments.
inline constexpr const char* steps_key = "netmorph.steps";
/// The `__metadata__` key holding the optimizer's kind and settings, a JSON object:
/// `{"kind": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 0}` or
/// `{"kind": "adam" | "adamw", "lr": ..., "beta1": ..., "beta2": ..., "eps": ..., "weight_decay":
/// ...}`.
inline constexpr const char* optimizer_key = "netmorph.optimizer";

namespace detail {

using netmorph::detail::cat;
using netmorph::detail::first_non_finite;

/// Calls `f(tensor_name, value, parameter_or_null)` for every tensor a layer stores, in file
/// order (running statistics have no parameter, hence no velocity).
template <typename Scalar, typename F>
void for_each_tensor(const nn::layer<Scalar>& l, F& f) {
  nn::visit(l, [&](const auto& c) {
    using L = std::decay_t<decltype(c)>;
    const std::string& n = l.name();
    if constexpr (std::is_same<L, nn::conv2d<Scalar>>::value ||
                  std::is_same<L, nn::dense<Scalar>>::value) {
      f(n + ".weight", c.weight().value, &c.weight());
      if (c.has_bias()) f(n + ".bias", c.bias().value, &c.bias());
    } else if constexpr (std::is_same<L, nn::batch_norm<Scalar>>::value) {
      f(n + ".weight", c.gamma().value, &c.gamma());
      f(n + ".bias", c.beta().value, &c.beta());
      f(n + ".running_mean", c.running_mean(), static_cast<const nn::parameter<Scalar>*>(nullptr));
      f(n + ".running_var", c.running_var(), static_cast<const nn::parameter<Scalar>*>(nullptr));
    } else if constexpr (std::is_same<L, nn::p_activation<Scalar>>::value) {
      f(n + ".a", c.a().value, &c.a());
    } else if constexpr (std::is_same<L, nn::parallel<Scalar>>::value) {
      for (const auto& path : c.paths())
        for (const auto& q : path)
          for_each_tensor(*q, f);
    }
  });
}

template <typename Scalar, typename F>
void for_each_tensor(const nn::model<Scalar>& m, F&& f) {
  for (const auto& l : m.layers())
    for_each_tensor(*l, f);
}

inline bool reserved_name(const std::string& n) {
  return n.size() >= 2 && n[0] == '_' && n[1] == '_';
}

template <typename Scalar>
nlohmann::ordered_json layer_json(const nn::layer<Scalar>& l, const std::string& prefix) {
  if (l.name().empty() || reserved_name(l.name()))
    throw io_error(cat(prefix, "the layer name '", l.name(),
                       "' cannot be stored (empty, or starting with the reserved '__')"));
  nlohmann::ordered_json j;
  j["name"] = l.name();
  j["kind"] = nn::to_string(l.kind());
  nn::visit(l, [&](const auto& c) {
    using L = std::decay_t<decltype(c)>;
    if constexpr (std::is_same<L, nn::conv2d<Scalar>>::value) {
      const shape_type& s = c.weight().value.shape();
      j["in_channels"] = c.in_channels();
      j["out_channels"] = s[0];
      if (s[2] == s[3])
        j["kernel"] = s[2];
      else
        j["kernel"] = {s[2], s[3]};
      j["stride"] = c.options().stride;
      j["padding"] = c.options().padding;
      if (c.groups() != 1) j["groups"] = c.groups();
      j["bias"] = c.has_bias();
    } else if constexpr (std::is_same<L, nn::dense<Scalar>>::value) {
      j["in_features"] = c.weight().value.dim(1);
      j["out_features"] = c.weight().value.dim(0);
      j["bias"] = c.has_bias();
    } else if constexpr (std::is_same<L, nn::pool2d<Scalar>>::value) {
      j["mode"] = nn::to_string(c.mode());
      j["window"] = c.window();
      j["stride"] = c.stride();
      j["padding"] = c.padding();
    } else if constexpr (std::is_same<L, nn::adaptive_pool2d<Scalar>>::value) {
      j["output_size"] = {c.output_height(), c.output_width()};
    } else if constexpr (std::is_same<L, nn::batch_norm<Scalar>>::value) {
      j["channels"] = c.gamma().value.size();
      j["eps"] = c.eps();
      j["momentum"] = c.momentum();
    } else if constexpr (std::is_same<L, nn::dropout<Scalar>>::value) {
      j["p"] = c.rate();
    } else if constexpr (std::is_same<L, nn::activation<Scalar>>::value ||
                         std::is_same<L, nn::p_activation<Scalar>>::value) {
      const activation_fn phi = [&] {
        if constexpr (std::is_same<L, nn::activation<Scalar>>::value)
          return c.fn();
        else
          return c.fn().phi;
      }();
      j["fn"] = to_string(phi.kind);
      j["param"] = phi.param;
    } else if constexpr (std::is_same<L, nn::parallel<Scalar>>::value) {
      nlohmann::ordered_json paths = nlohmann::ordered_json::array();
      for (const auto& path : c.paths()) {
        nlohmann::ordered_json p = nlohmann::ordered_json::array();
        for (const auto& q : path)
          p.push_back(layer_json(*q, prefix));
        paths.push_back(std::move(p));
      }
      j["paths"] = std::move(paths);
      if (c.merge() != nn::merge_kind::add) j["merge"] = nn::to_string(c.merge());
    }
  });
  return j;
}

/// Supplies the tensor `name`, which must have shape `expected`, or throws io_error.
template <typename Scalar>
using tensor_provider =
    std::function<tensor<Scalar>(const std::string& name, const shape_type& expected)>;

/// Largest integer hyper-parameter accepted (channels, kernels, strides, paddings, windows).
inline constexpr std::int64_t max_hyper_parameter = std::numeric_limits<std::int32_t>::max();

/// Reads the architecture JSON into a model, layer by layer, checking every field's type and
/// range, every intermediate shape, and every tensor's shape before it is requested.
template <typename Scalar>
class architecture_builder {
 public:
  architecture_builder(std::string prefix, const tensor_provider<Scalar>& provide)
      : prefix_(std::move(prefix)), provide_(provide) {}

  nn::model<Scalar> build(const std::string& text) {
    const nlohmann::json root =
        parse_json<nlohmann::json>(text, 64, prefix_, "the architecture JSON");
    const std::string top = "architecture";
    require_object(root, top);
    only(root, {"input_shape", "layers"}, top);
    const nlohmann::json& in = field(root, "input_shape", top);
    if (!in.is_array() || in.empty() || in.size() > 8)
      fail(top, "input_shape must be an array of 1 to 8 positive integers, got ", in.dump());
    shape_type shape;
    for (std::size_t d = 0; d < in.size(); ++d)
      shape.push_back(integer_value(in[d], cat(top, ".input_shape[", d, "]"), 1));
    check_size(shape, top + ".input_shape");
    const nlohmann::json& layers = field(root, "layers", top);
    if (!layers.is_array()) fail(top, "layers must be an array, got ", layers.type_name());
    nn::model<Scalar> m(shape);
    for (std::size_t i = 0; i < layers.size(); ++i) {
      const std::string ctx = cat("layers[", i, "]");
      std::unique_ptr<nn::layer<Scalar>> l = build_layer(layers[i], "", ctx, shape);
      const std::string name = l->name();
      guarded(ctx, [&] { nn::visit(*l, [&](auto& c) { m.add(std::move(c), name); }); });
    }
    return m;
  }

 private:
  template <typename... Args>
  [[noreturn]] void fail(const std::string& ctx, const Args&... args) const {
    throw io_error(cat(prefix_, ctx, ": ", args...));
  }
  template <typename F>
  void guarded(const std::string& ctx, F&& f) const {
    try {
      f();
    } catch (const io_error&) {
      throw;
    } catch (const netmorph::error& e) {
      fail(ctx, e.what());
    }
  }
  void require_object(const nlohmann::json& j, const std::string& ctx) const {
    if (!j.is_object()) fail(ctx, "must be a JSON object, got ", j.type_name());
  }
  void only(const nlohmann::json& j, std::initializer_list<const char*> keys,
            const std::string& ctx) const {
    for (auto it = j.begin(); it != j.end(); ++it) {
      bool known = false;
      for (const char* k : keys)
        known = known || it.key() == k;
      if (!known) fail(ctx, "unknown field '", it.key(), "'");
    }
  }
  const nlohmann::json& field(const nlohmann::json& j, const char* key,
                              const std::string& ctx) const {
    const auto it = j.find(key);
    if (it == j.end()) fail(ctx, "missing field '", key, "'");
    return *it;
  }
  index_type integer_value(const nlohmann::json& v, const std::string& what,
                           std::int64_t lo) const {
    if (!v.is_number_integer() ||
        (v.is_number_unsigned() && v.get<std::uint64_t>() > std::uint64_t(max_hyper_parameter)))
      fail(what, "must be an integer in [", lo, ", ", max_hyper_parameter, "], got ", v.dump());
    const std::int64_t x = v.get<std::int64_t>();
    if (x < lo || x > max_hyper_parameter)
      fail(what, "must be an integer in [", lo, ", ", max_hyper_parameter, "], got ", v.dump());
    return static_cast<index_type>(x);
  }
  index_type integer(const nlohmann::json& j, const char* key, const std::string& ctx,
                     std::int64_t lo) const {
    return integer_value(field(j, key, ctx), cat(ctx, ".", key), lo);
  }
  double number(const nlohmann::json& j, const char* key, const std::string& ctx) const {
    const nlohmann::json& v = field(j, key, ctx);
    if (!v.is_number() || !std::isfinite(v.get<double>()))
      fail(cat(ctx, ".", key), "must be a finite number, got ", v.dump());
    return v.get<double>();
  }
  bool boolean(const nlohmann::json& j, const char* key, const std::string& ctx) const {
    const nlohmann::json& v = field(j, key, ctx);
    if (!v.is_boolean()) fail(cat(ctx, ".", key), "must be true or false, got ", v.dump());
    return v.get<bool>();
  }
  std::string string(const nlohmann::json& j, const char* key, const std::string& ctx) const {
    const nlohmann::json& v = field(j, key, ctx);
    if (!v.is_string()) fail(cat(ctx, ".", key), "must be a string, got ", v.dump());
    return v.get<std::string>();
  }
  void check_size(const shape_type& s, const std::string& ctx) const {
    if (netmorph::detail::element_count(s) > double(max_tensor_elements))
      fail(ctx, "the shape ", netmorph::detail::shape_string(s),
           " has more than max_tensor_elements = ", max_tensor_elements, " elements");
  }
  activation_kind activation(const nlohmann::json& j, const std::string& ctx) const {
    const std::string s = string(j, "fn", ctx);
    if (const std::optional<activation_kind> k = activation_kind_from_string(s)) return *k;
    fail(cat(ctx, ".fn"), "unknown activation '", s, "' (", activation_kind_names(), ")");
  }
  /// The tensor `name` of shape `expected`, checked finite.
  tensor<Scalar> get(const std::string& name, const shape_type& expected,
                     const std::string& ctx) const {
    tensor<Scalar> t = provide_(name, expected);
    if (t.shape() != expected)
      fail(ctx, "tensor '", name, "' has shape ", netmorph::detail::shape_string(t.shape()),
           ", the architecture needs ", netmorph::detail::shape_string(expected));
    const index_type i = detail::first_non_finite(t.data(), t.size());
    if (i >= 0)
      fail(ctx, "tensor '", name, "' holds ", double(t.data()[i]), " at flat index ", i,
           " (weights must be finite)");
    return t;
  }

  /// Builds the layer of entry `j` on per-sample input `shape` (updated to its output). A layer
  /// inside the parallel block `block` must have a name starting with `block.`.
  std::unique_ptr<nn::layer<Scalar>> build_layer(const nlohmann::json& j, const std::string& block,
                                                 const std::string& where_, shape_type& shape) {
    require_object(j, where_);
    const std::string name = string(j, "name", where_);
    const std::string ctx = cat(where_, " ('", name, "')");
    if (name.empty() || reserved_name(name))
      fail(ctx, "the layer name must be non-empty and not start with the reserved '__'");
    if (!block.empty() &&
        (name.size() <= block.size() + 1 || name.compare(0, block.size() + 1, block + ".") != 0))
      fail(ctx, "a layer inside the parallel block '", block, "' must have a name starting with '",
           block, ".'");
    if (!names_.insert(name).second) fail(ctx, "the layer name '", name, "' is used twice");
    const std::string kind = string(j, "kind", ctx);
    std::unique_ptr<nn::layer<Scalar>> l;
    if (kind == "conv2d") {
      only(j,
           {"name", "kind", "in_channels", "out_channels", "kernel", "stride", "padding", "bias",
            "groups"},
           ctx);
      const index_type in = integer(j, "in_channels", ctx, 1),
                       out = integer(j, "out_channels", ctx, 1);
      const nlohmann::json& k = field(j, "kernel", ctx);
      index_type kh, kw;
      if (k.is_array() && k.size() == 2) {
        kh = integer_value(k[0], ctx + ".kernel[0]", 1);
        kw = integer_value(k[1], ctx + ".kernel[1]", 1);
      } else {
        kh = kw = integer_value(k, ctx + ".kernel", 1);
      }
      const index_type groups = j.contains("groups") ? integer(j, "groups", ctx, 1) : 1;
      if (in % groups != 0 || out % groups != 0)
        fail(ctx, "in_channels ", in, " and out_channels ", out,
             " must split into groups = ", groups);
      const conv2d_options opt{integer(j, "stride", ctx, 1), integer(j, "padding", ctx, 0), groups};
      const bool bias = boolean(j, "bias", ctx);
      tensor<Scalar> w = get(name + ".weight", {out, in / groups, kh, kw}, ctx);
      tensor<Scalar> b = bias ? get(name + ".bias", {out}, ctx) : tensor<Scalar>();
      guarded(ctx,
              [&] { l = std::make_unique<nn::conv2d<Scalar>>(std::move(w), std::move(b), opt); });
    } else if (kind == "dense") {
      only(j, {"name", "kind", "in_features", "out_features", "bias"}, ctx);
      const index_type in = integer(j, "in_features", ctx, 1),
                       out = integer(j, "out_features", ctx, 1);
      const bool bias = boolean(j, "bias", ctx);
      tensor<Scalar> w = get(name + ".weight", {out, in}, ctx);
      tensor<Scalar> b = bias ? get(name + ".bias", {out}, ctx) : tensor<Scalar>();
      guarded(ctx, [&] { l = std::make_unique<nn::dense<Scalar>>(std::move(w), std::move(b)); });
    } else if (kind == "pool2d") {
      only(j, {"name", "kind", "mode", "window", "stride", "padding"}, ctx);
      const std::string mode = string(j, "mode", ctx);
      if (mode != "max" && mode != "average")
        fail(ctx + ".mode", "must be \"max\" or \"average\", got \"", mode, "\"");
      const index_type k = integer(j, "window", ctx, 1), s = integer(j, "stride", ctx, 1);
      // padding may be left out (files written before it existed): no padding.
      const index_type pad = j.contains("padding") ? integer(j, "padding", ctx, 0) : 0;
      guarded(ctx, [&] {
        l = std::make_unique<nn::pool2d<Scalar>>(
            mode == "max" ? nn::pool_mode::max : nn::pool_mode::average, k, s, pad);
      });
    } else if (kind == "adaptive_pool2d") {
      only(j, {"name", "kind", "output_size"}, ctx);
      const nlohmann::json& o = field(j, "output_size", ctx);
      if (!o.is_array() || o.size() != 2)
        fail(ctx + ".output_size", "must be an array [height, width], got ", o.dump());
      const index_type oh = integer_value(o[0], ctx + ".output_size[0]", 1),
                       ow = integer_value(o[1], ctx + ".output_size[1]", 1);
      l = std::make_unique<nn::adaptive_pool2d<Scalar>>(oh, ow);
    } else if (kind == "flatten") {
      only(j, {"name", "kind"}, ctx);
      l = std::make_unique<nn::flatten<Scalar>>();
    } else if (kind == "batch_norm") {
      only(j, {"name", "kind", "channels", "eps", "momentum"}, ctx);
      const index_type c = integer(j, "channels", ctx, 1);
      const double eps = number(j, "eps", ctx), momentum = number(j, "momentum", ctx);
      if (!(momentum >= 0 && momentum <= 1))
        fail(ctx + ".momentum", "must be in [0, 1], got ", momentum);
      batch_norm_weights<Scalar> bn{get(name + ".weight", {c}, ctx), get(name + ".bias", {c}, ctx),
                                    get(name + ".running_mean", {c}, ctx),
                                    get(name + ".running_var", {c}, ctx), eps};
      guarded(ctx, [&] { l = std::make_unique<nn::batch_norm<Scalar>>(std::move(bn), momentum); });
    } else if (kind == "dropout") {
      only(j, {"name", "kind", "p"}, ctx);
      const double p = number(j, "p", ctx);
      guarded(ctx, [&] { l = std::make_unique<nn::dropout<Scalar>>(p); });
    } else if (kind == "activation") {
      only(j, {"name", "kind", "fn", "param"}, ctx);
      const activation_fn phi{activation(j, ctx), number(j, "param", ctx)};
      l = std::make_unique<nn::activation<Scalar>>(phi);
    } else if (kind == "p_activation") {
      only(j, {"name", "kind", "fn", "param"}, ctx);
      const activation_fn phi{activation(j, ctx), number(j, "param", ctx)};
      const tensor<Scalar> a = get(name + ".a", {1}, ctx);
      guarded(ctx, [&] {
        auto p = std::make_unique<nn::p_activation<Scalar>>(make_p_activation(phi, double(a(0))));
        p->a().value(0) = a(0);
        l = std::move(p);
      });
    } else if (kind == "parallel") {
      only(j, {"name", "kind", "paths", "merge"}, ctx);
      nn::merge_kind merge = nn::merge_kind::add;
      if (j.contains("merge"))
        guarded(ctx + ".merge",
                [&] { merge = nn::merge_kind_from_string(string(j, "merge", ctx), "parallel"); });
      const nlohmann::json& paths = field(j, "paths", ctx);
      if (!paths.is_array() || paths.empty())
        fail(ctx + ".paths", "must be a non-empty array of arrays of layers, got ", paths.dump());
      std::vector<nn::layer_list<Scalar>> lists;
      for (std::size_t i = 0; i < paths.size(); ++i) {
        const std::string pctx = cat(ctx, ".paths[", i, "]");
        if (!paths[i].is_array()) fail(pctx, "must be an array of layers, got ", paths[i].dump());
        nn::layer_list<Scalar> list;
        shape_type s = shape;
        for (std::size_t k = 0; k < paths[i].size(); ++k)
          list.push_back(build_layer(paths[i][k], name, cat(pctx, "[", k, "]"), s));
        lists.push_back(std::move(list));
      }
      l = std::make_unique<nn::parallel<Scalar>>(std::move(lists), merge);
    } else {
      fail(ctx + ".kind", "unknown layer kind '", kind,
           "' (conv2d, dense, pool2d, adaptive_pool2d, flatten, batch_norm, dropout, activation, "
           "p_activation, parallel)");
    }
    l->set_name(name);
    guarded(ctx, [&] { shape = l->output_shape(shape); });
    check_size(shape, ctx + " output");
    return l;
  }

  std::string prefix_;
  const tensor_provider<Scalar>& provide_;
  std::set<std::string> names_;
};

/// Builds a model from an architecture JSON and a provider of its tensors; messages start with
/// `prefix`.
template <typename Scalar>
nn::model<Scalar> build_model(const std::string& text, const tensor_provider<Scalar>& provide,
                              const std::string& prefix) {
  return architecture_builder<Scalar>(prefix, provide).build(text);
}

}  // namespace detail

/// netmorph's architecture description of `m` (see the file comment for the format): the input
/// shape and every layer in order with its name, kind and hyper-parameters.
/// \throws io_error when a layer name cannot be stored (empty or starting with "__").
template <typename Scalar>
std::string architecture_json(const nn::model<Scalar>& m) {
  const std::string prefix = "netmorph::io::architecture_json: ";
  nlohmann::ordered_json j;
  j["input_shape"] = m.input_shape();
  nlohmann::ordered_json layers = nlohmann::ordered_json::array();
  for (const auto& l : m.layers())
    layers.push_back(detail::layer_json(*l, prefix));
  j["layers"] = std::move(layers);
  try {
    return j.dump();
  } catch (const nlohmann::json::exception& e) {
    throw io_error(netmorph::detail::cat(prefix, "cannot encode the architecture: ", e.what()));
  }
}

/// The model described by `json` (see `architecture_json`) with its tensors taken (moved) from
/// `tensors`, which must hold exactly the tensors the architecture names, with the shapes its
/// hyper-parameters imply, all finite. Velocity tensors (`velocity_prefix`) are ignored here.
/// `source` names where the data came from in messages.
/// \throws io_error "netmorph::io::model_from_architecture: 'source': <where>: <what>" on JSON of
///         the wrong types, unknown kinds or fields, hyper-parameters out of range, shapes that do
///         not fit, a missing, misshapen, extra or non-finite tensor.
template <typename Scalar>
nn::model<Scalar> model_from_architecture(const std::string& json,
                                          std::vector<named_tensor<Scalar>> tensors,
                                          const std::string& source = "<memory>") {
  const std::string prefix = detail::where("netmorph::io::model_from_architecture", source);
  std::unordered_map<std::string, std::size_t> index;
  for (std::size_t i = 0; i < tensors.size(); ++i)
    if (!index.emplace(tensors[i].name, i).second)
      throw io_error(
          netmorph::detail::cat(prefix, "the tensor '", tensors[i].name, "' is given twice"));
  std::vector<bool> used(tensors.size(), false);
  const detail::tensor_provider<Scalar> provide = [&](const std::string& name, const shape_type&) {
    const auto it = index.find(name);
    if (it == index.end() || used[it->second])
      throw io_error(netmorph::detail::cat(prefix, "the architecture needs the tensor '", name,
                                           "', which is missing"));
    used[it->second] = true;
    return std::move(tensors[it->second].value);
  };
  nn::model<Scalar> m = detail::build_model<Scalar>(json, provide, prefix);
  for (std::size_t i = 0; i < tensors.size(); ++i)
    if (!used[i] && tensors[i].name.rfind(velocity_prefix, 0) != 0)
      throw io_error(netmorph::detail::cat(prefix, "the tensor '", tensors[i].name,
                                           "' is not part of the architecture"));
  return m;
}

}  // namespace io
}  // namespace netmorph

#endif  // NETMORPH_IO_ARCHITECTURE_HPP
