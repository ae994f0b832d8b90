#ifndef NETMORPH_IO_MODEL_FILE_HPP
#define NETMORPH_IO_MODEL_FILE_HPP

/// \file model_file.hpp
/// `save` and `load`: a model as one `.safetensors` file. `__metadata__` holds
/// `netmorph.format` = "1" and `netmorph.architecture` (see architecture.hpp); the tensors carry
/// PyTorch state_dict names and, when asked, the SGD velocities under `velocity_prefix`.

#include <netmorph/detail/message.hpp>
#include <netmorph/error.hpp>
#include <netmorph/io/architecture.hpp>
#include <netmorph/io/safetensors.hpp>
#include <netmorph/nn/model.hpp>

#include <cmath>
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
  /// Also store every parameter's SGD velocity, so training resumes where it stopped.
  bool velocities = false;
};

/// How `load` reads a model.
struct load_options {
  /// Restore the velocities when the file has them (all or none); false leaves them zero.
  bool velocities = true;
};

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
  std::vector<tensor_ref<Scalar>> refs, velocities;
  detail::for_each_tensor(
      m, [&](const std::string& name, const tensor<Scalar>& value, const nn::parameter<Scalar>* p) {
        const index_type i = detail::first_non_finite(value.data(), value.size());
        if (i >= 0)
          throw io_error(netmorph::detail::cat(prefix, "tensor '", name, "' holds ",
                                               double(value.data()[i]), " at flat index ", i,
                                               " (weights must be finite)"));
        refs.push_back({name, &value});
        if (opt.velocities && p) velocities.push_back({velocity_prefix + name, &p->velocity});
      });
  refs.insert(refs.end(), velocities.begin(), velocities.end());
  write_safetensors(path, refs, meta, opt.dtype.value_or(native_dtype<Scalar>()), who);
}

/// Reads a model written by `save` (or by the PyTorch bridge): the architecture from the metadata,
/// each tensor straight into the model's storage (F16/BF16/F32 widen exactly; F64 rounds to nearest
/// for a float model), the velocities when present and asked for.
/// \throws io_error "netmorph::io::load: 'path': ..." for every fault of the file (see
///         `safetensors_reader` and `model_from_architecture`), a path that is not a regular file
///         (a directory, FIFO, device or socket, refused before reading), a missing or unsupported
///         format key, a tensor missing from or extra to the architecture, a non-finite weight,
///         velocities present for only some parameters.
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

  // Velocities: all parameters or none.
  std::vector<std::pair<const tensor_info*, nn::parameter<Scalar>*>> found;
  std::vector<std::string> missing;
  detail::for_each_tensor(
      m, [&](const std::string& name, const tensor<Scalar>&, const nn::parameter<Scalar>* p) {
        if (!p) return;
        const std::string vname = velocity_prefix + name;
        const tensor_info* t = r.find(vname);
        if (!t) {
          missing.push_back(vname);
          return;
        }
        used.insert(vname);
        if (t->shape != p->value.shape())
          throw io_error(netmorph::detail::cat(
              prefix, "tensor '", vname, "' has shape ", netmorph::detail::shape_string(t->shape),
              ", its parameter has ", netmorph::detail::shape_string(p->value.shape())));
        found.emplace_back(t, const_cast<nn::parameter<Scalar>*>(p));
      });
  for (const tensor_info& t : r.tensors())
    if (!used.count(t.name))
      throw io_error(netmorph::detail::cat(prefix, "the tensor '", t.name,
                                           "' is not part of the architecture"));
  if (!found.empty() && !missing.empty())
    throw io_error(netmorph::detail::cat(prefix, "the file has velocities for some parameters but ",
                                         "not '", missing.front(), "' (", missing.size(),
                                         " missing)"));
  if (opt.velocities)
    for (auto& f : found) {
      r.read_into(*f.first, f.second->velocity.data());
      const tensor<Scalar>& v = f.second->velocity;
      const index_type i = detail::first_non_finite(v.data(), v.size());
      if (i >= 0)
        throw io_error(netmorph::detail::cat(prefix, "tensor '", f.first->name, "' holds ",
                                             double(v.data()[i]), " at flat index ", i,
                                             " (velocities must be finite)"));
    }
  return m;
}

}  // namespace io
}  // namespace netmorph

#endif  // NETMORPH_IO_MODEL_FILE_HPP
