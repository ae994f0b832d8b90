#ifndef NETMORPH_IO_MODEL_FILE_HPP
#define NETMORPH_IO_MODEL_FILE_HPP

/// \file model_file.hpp
/// `save`, `load` and `load_optimizer`: a model as one `.safetensors` file. `__metadata__` holds
/// `netmorph.format` = "1" and `netmorph.architecture` (see architecture.hpp); the tensors carry
/// PyTorch state_dict names and, when asked, the optimizer state under `velocity_prefix`,
/// `exp_avg_prefix` and `exp_avg_sq_prefix` (Adam's step counts under `steps_key`), and the
/// optimizer's settings under `optimizer_key` (docs/DESIGN.md §9.3).

#include <netmorph/detail/message.hpp>
#include <netmorph/error.hpp>
#include <netmorph/io/architecture.hpp>
#include <netmorph/io/safetensors.hpp>
#include <netmorph/nn/model.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

namespace netmorph {
namespace io {

/// How `save` writes a model.
struct save_options {
  /// float32 or float64; unset: the model's scalar (bit-exact).
  std::optional<io::dtype> dtype;
  /// Also store every parameter's optimizer state, so training resumes where it stopped: the
  /// SGD velocities (unless all are zero while the parameters hold Adam state), and Adam's moments
  /// and step counts when any parameter has taken an Adam step (a parameter without them, made
  /// by a morph since, is stored with zero moments at step 0).
  bool optimizer_state = false;
  /// Also store the optimizer's kind and settings (`load_optimizer` reads them back).
  std::optional<nn::optimizer> optimizer;
};

/// How `load` reads a model.
struct load_options {
  /// Restore the optimizer state the file has (each kind for all parameters or none); false
  /// leaves it zero.
  bool optimizer_state = true;
};

namespace detail {

/// The optimizer's kind and settings as the `optimizer_key` metadata JSON.
inline nlohmann::ordered_json optimizer_json(const nn::optimizer& o) {
  nlohmann::ordered_json j;
  j["kind"] = o.kind();
  if (const nn::sgd* s = o.as_sgd()) {
    j["lr"] = s->lr;
    j["momentum"] = s->momentum;
    j["weight_decay"] = s->weight_decay;
  } else {
    const nn::adam& a = *o.as_adam();
    j["lr"] = a.lr;
    j["beta1"] = a.beta1;
    j["beta2"] = a.beta2;
    j["eps"] = a.eps;
    j["weight_decay"] = a.weight_decay;
  }
  return j;
}

/// The optimizer the `optimizer_key` JSON `text` describes.
/// \throws io_error naming `prefix`: not JSON, an unknown kind, a missing, extra or non-numeric
///         field, a setting `nn::optimizer` refuses.
inline nn::optimizer optimizer_from_json(const std::string& text, const std::string& prefix) {
  const std::string where = cat(prefix, "__metadata__ '", optimizer_key, "': ");
  const auto j = parse_json<nlohmann::json>(text, 2, prefix, "the optimizer JSON");
  if (!j.is_object() || !j.contains("kind") || !j["kind"].is_string())
    throw io_error(cat(where, "must be an object with a string 'kind'"));
  const std::string kind = j["kind"];
  const bool is_sgd = kind == "sgd";
  if (!is_sgd && kind != "adam" && kind != "adamw")
    throw io_error(cat(where, "unknown kind '", kind, "' (sgd, adam or adamw)"));
  const std::vector<std::string> fields =
      is_sgd ? std::vector<std::string>{"lr", "momentum", "weight_decay"}
             : std::vector<std::string>{"lr", "beta1", "beta2", "eps", "weight_decay"};
  for (const auto& item : j.items())
    if (item.key() != "kind" && std::find(fields.begin(), fields.end(), item.key()) == fields.end())
      throw io_error(cat(where, "unknown field '", item.key(), "' for kind '", kind, "'"));
  const auto number = [&](const std::string& key) {
    if (!j.contains(key) || !j[key].is_number())
      throw io_error(cat(where, "kind '", kind, "' needs the number '", key, "'"));
    return j[key].get<double>();
  };
  try {
    if (is_sgd) return nn::sgd{number("lr"), number("momentum"), number("weight_decay")};
    nn::adam a{number("lr"), number("beta1"), number("beta2"), number("eps"),
               number("weight_decay")};
    a.decoupled_weight_decay = kind == "adamw";
    return a;
  } catch (const value_error& e) {
    throw io_error(cat(where, e.what()));
  }
}

/// Adam's step count of every parameter (in the order of `params`) from the `steps_key` JSON.
/// \throws io_error naming `prefix` when it is missing, not an object of non-negative integers,
///         or lacks a parameter or names one the model does not have.
template <typename Params>
std::vector<std::int64_t> read_steps(const metadata_map& meta, const Params& params,
                                     const std::string& prefix) {
  const std::string where = cat(prefix, "__metadata__ '", steps_key, "': ");
  const auto it = meta.find(steps_key);
  if (it == meta.end())
    throw io_error(cat(prefix, "the file has Adam moments but no '", steps_key, "'"));
  const auto j = parse_json<nlohmann::json>(it->second, 2, prefix, "the step counts JSON");
  if (!j.is_object()) throw io_error(cat(where, "must be an object of step counts"));
  std::vector<std::int64_t> out;
  for (const auto& np : params) {
    const auto s = j.find(np.first);
    if (s == j.end() || !s->is_number_integer() || s->template get<std::int64_t>() < 0)
      throw io_error(cat(where, "needs a step count >= 0 for '", np.first, "'"));
    out.push_back(s->template get<std::int64_t>());
  }
  if (j.size() != params.size())
    throw io_error(cat(where, "has ", j.size(), " step counts for ", params.size(), " parameters"));
  return out;
}

}  // namespace detail

/// Writes `m` to `path` (see the file comment), streaming from the model's tensors. `path` is
/// replaced as `write_safetensors` documents: only a regular file (or a new path) is written; a
/// directory, FIFO, device or socket is refused by name, and so is a read-only file; a symbolic
/// link's existing target is replaced and the link stays (a dangling link is refused); the
/// replaced file's mode and owner are kept; the data is written to an unnamed file (Linux
/// O_TMPFILE, elsewhere `.netmorph-XXXXXX`) in the same directory, synced, and renamed over `path`
/// at the end, so a failed or killed save leaves an existing file untouched.
/// \throws io_error naming `netmorph::io::save` and the file: a non-finite weight (named), an F16
///         or BF16 dtype, a layer name that cannot be stored, a `path` those rules refuse, a failed
///         write.
template <typename Scalar>
void save(const nn::model<Scalar>& m, const std::string& path, const save_options& opt = {}) {
  const std::string who = "netmorph::io::save", prefix = detail::where(who, path);
  metadata_map meta;
  meta[format_key] = format_version;
  try {
    meta[architecture_key] = architecture_json(m);
  } catch (const io_error& e) {
    throw io_error(prefix + e.what());
  }
  if (opt.optimizer) meta[optimizer_key] = detail::optimizer_json(*opt.optimizer).dump();
  std::vector<tensor_ref<Scalar>> refs, velocities, moments;
  std::vector<std::pair<std::string, const nn::parameter<Scalar>*>> params;
  detail::for_each_tensor(
      m, [&](const std::string& name, const tensor<Scalar>& value, const nn::parameter<Scalar>* p) {
        const index_type i = detail::first_non_finite(value.data(), value.size());
        if (i >= 0)
          throw io_error(netmorph::detail::cat(prefix, "tensor '", name, "' holds ",
                                               double(value.data()[i]), " at flat index ", i,
                                               " (weights must be finite)"));
        refs.push_back({name, &value});
        if (p) params.emplace_back(name, p);
      });
  bool adam = false, moving = false;
  for (const auto& np : params) {
    adam = adam || np.second->has_adam_state();
    for (Scalar v : np.second->velocity)
      moving = moving || v != Scalar(0);
  }
  std::deque<tensor<Scalar>> zeros;  // the moments of parameters that have none yet
  nlohmann::ordered_json steps = nlohmann::ordered_json::object();
  if (opt.optimizer_state)
    for (const auto& [name, p] : params) {
      if (moving || !adam) velocities.push_back({velocity_prefix + name, &p->velocity});
      if (!adam) continue;
      if (p->exp_avg.empty()) zeros.emplace_back(p->value.shape());
      const tensor<Scalar>* m1 = p->exp_avg.empty() ? &zeros.back() : &p->exp_avg;
      const tensor<Scalar>* m2 = p->exp_avg.empty() ? &zeros.back() : &p->exp_avg_sq;
      moments.push_back({exp_avg_prefix + name, m1});
      moments.push_back({exp_avg_sq_prefix + name, m2});
      steps[name] = p->step;
    }
  if (opt.optimizer_state && adam) meta[steps_key] = steps.dump();
  refs.insert(refs.end(), velocities.begin(), velocities.end());
  refs.insert(refs.end(), moments.begin(), moments.end());
  write_safetensors(path, refs, meta, opt.dtype.value_or(native_dtype<Scalar>()), who);
}

/// Reads a model written by `save` (or by the PyTorch bridge): the architecture from the metadata,
/// each tensor straight into the model's storage (F16/BF16/F32 widen exactly; F64 rounds to nearest
/// for a float model), the optimizer state when present and asked for.
/// \throws io_error "netmorph::io::load: 'path': ..." for every fault of the file (see
///         `safetensors_reader` and `model_from_architecture`), a path that is not a regular file
///         (a directory, FIFO, device or socket, refused before reading), a missing or unsupported
///         format key, a tensor missing from or extra to the architecture, a non-finite weight or
///         state, a negative second moment, a kind of state present for only some parameters,
///         Adam moments without their step counts.
template <typename Scalar>
nn::model<Scalar> load(const std::string& path, const load_options& opt = {}) {
  safetensors_reader r(path, "netmorph::io::load");
  const std::string prefix = r.prefix();
  const auto meta_at = [&](const char* key) -> const std::string& {
    const auto it = r.metadata().find(key);
    if (it == r.metadata().end())
      throw io_error(netmorph::detail::cat(prefix, "__metadata__ has no '", key,
                                           "' (not a netmorph model file)"));
    return it->second;
  };
  if (meta_at(format_key) != format_version)
    throw io_error(netmorph::detail::cat(prefix, "unsupported ", format_key, " '",
                                         meta_at(format_key), "' (this netmorph reads '",
                                         format_version, "')"));
  std::unordered_set<std::string> used;
  const detail::tensor_provider<Scalar> provide = [&](const std::string& name,
                                                      const shape_type& expected) {
    const tensor_info* t = r.find(name);
    if (!t)
      throw io_error(netmorph::detail::cat(prefix, "the architecture needs the tensor '", name,
                                           "', which the file does not have"));
    if (t->shape != expected)
      throw io_error(netmorph::detail::cat(
          prefix, "tensor '", name, "' has shape ", netmorph::detail::shape_string(t->shape),
          ", the architecture needs ", netmorph::detail::shape_string(expected)));
    used.insert(name);
    return r.read<Scalar>(*t);
  };
  nn::model<Scalar> m = detail::build_model<Scalar>(meta_at(architecture_key), provide, prefix);

  // Optimizer state: each kind (velocities, Adam's moments) for all parameters or none.
  std::vector<std::pair<std::string, nn::parameter<Scalar>*>> params;
  detail::for_each_tensor(
      m, [&](const std::string& name, const tensor<Scalar>&, const nn::parameter<Scalar>* p) {
        if (p) params.emplace_back(name, const_cast<nn::parameter<Scalar>*>(p));
      });
  // The file's tensor `prefix + name` of each parameter, checked against it; empty when the file
  // has none of that kind.
  const auto state_tensors = [&](const char* kind_prefix, const char* what) {
    std::vector<const tensor_info*> found;
    std::vector<std::string> missing;
    for (const auto& [name, p] : params) {
      const std::string sname = kind_prefix + name;
      const tensor_info* t = r.find(sname);
      if (!t) {
        missing.push_back(sname);
        continue;
      }
      used.insert(sname);
      if (t->shape != p->value.shape())
        throw io_error(netmorph::detail::cat(
            prefix, "tensor '", sname, "' has shape ", netmorph::detail::shape_string(t->shape),
            ", its parameter has ", netmorph::detail::shape_string(p->value.shape())));
      found.push_back(t);
    }
    if (!found.empty() && !missing.empty())
      throw io_error(netmorph::detail::cat(prefix, "the file has ", what,
                                           " for some parameters but not '", missing.front(), "' (",
                                           missing.size(), " missing)"));
    return found;
  };
  const auto velocities = state_tensors(velocity_prefix, "velocities");
  const auto first = state_tensors(exp_avg_prefix, "Adam first moments");
  const auto second = state_tensors(exp_avg_sq_prefix, "Adam second moments");
  for (const tensor_info& t : r.tensors())
    if (!used.count(t.name))
      throw io_error(netmorph::detail::cat(prefix, "the tensor '", t.name,
                                           "' is not part of the architecture"));
  if (first.empty() != second.empty())
    throw io_error(netmorph::detail::cat(prefix, "the file has Adam ",
                                         first.empty() ? "second" : "first",
                                         " moments without the other"));
  const std::vector<std::int64_t> steps = first.empty()
                                              ? std::vector<std::int64_t>()
                                              : detail::read_steps(r.metadata(), params, prefix);
  if (!opt.optimizer_state) return m;
  const auto read_state = [&](const tensor_info& t, tensor<Scalar>& into, const char* what,
                              bool non_negative) {
    into = tensor<Scalar>(t.shape);
    r.read_into(t, into.data());
    const index_type i = detail::first_non_finite(into.data(), into.size());
    if (i >= 0)
      throw io_error(netmorph::detail::cat(prefix, "tensor '", t.name, "' holds ",
                                           double(into.data()[i]), " at flat index ", i, " (", what,
                                           " must be finite)"));
    if (non_negative)
      for (index_type k = 0; k < into.size(); ++k)
        if (into.data()[k] < Scalar(0))
          throw io_error(netmorph::detail::cat(prefix, "tensor '", t.name, "' holds ",
                                               double(into.data()[k]), " at flat index ", k,
                                               " (a second moment is never negative)"));
  };
  for (std::size_t k = 0; k < velocities.size(); ++k)
    read_state(*velocities[k], params[k].second->velocity, "velocities", false);
  for (std::size_t k = 0; k < first.size(); ++k) {
    read_state(*first[k], params[k].second->exp_avg, "moments", false);
    read_state(*second[k], params[k].second->exp_avg_sq, "moments", true);
    params[k].second->step = steps[k];
  }
  return m;
}

/// The optimizer a file written by `save` with `save_options::optimizer` holds, or none.
/// \throws io_error "netmorph::io::load_optimizer: 'path': ..." for a file that cannot be read
///         and for settings that are not an optimizer's (see `detail::optimizer_from_json`).
inline std::optional<nn::optimizer> load_optimizer(const std::string& path) {
  safetensors_reader r(path, "netmorph::io::load_optimizer");
  const auto it = r.metadata().find(optimizer_key);
  if (it == r.metadata().end()) return std::nullopt;
  return detail::optimizer_from_json(it->second, r.prefix());
}

}  // namespace io
}  // namespace netmorph

#endif  // NETMORPH_IO_MODEL_FILE_HPP
