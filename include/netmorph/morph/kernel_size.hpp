#ifndef NETMORPH_MORPH_KERNEL_SIZE_HPP
#define NETMORPH_MORPH_KERNEL_SIZE_HPP

/// \file kernel_size.hpp
/// Kernel-size morph (paper §3.4.2, docs/DESIGN.md §4.2): zero-pad filters centred from `K` to `K'`
/// and grow the padding by `(K' - K)/2`; the output is unchanged at every pixel.

#include <netmorph/detail/message.hpp>
#include <netmorph/error.hpp>
#include <netmorph/morph/report.hpp>
#include <netmorph/ops/compose.hpp>
#include <netmorph/ops/conv2d.hpp>
#include <netmorph/tensor.hpp>

#include <chrono>
#include <cstdint>

namespace netmorph {

/// Options of `grow_kernel`.
struct grow_kernel_options {
  index_type new_kernel = 0;  ///< K', at least K, with K' - K even
  std::uint64_t seed = 0;     ///< seeds the probes
  probe_options probe;
};

/// A layer with a grown kernel and the report.
template <typename Scalar>
struct grow_kernel_result {
  conv2d_weights<Scalar> layer;
  morph_report report;
};

namespace detail {

/// The checks of `grow_kernel`, every one before anything is allocated.
template <typename Scalar>
void check_grow_kernel(const conv2d_weights<Scalar>& layer, const grow_kernel_options& opt) {
  require<shape_error>(layer.weight.rank() == 4,
                       "grow_kernel: weight must be OIHW (rank 4), got shape ",
                       shape_string(layer.weight.shape()));
  const index_type k = layer.weight.dim(2), kn = opt.new_kernel;
  require<shape_error>(layer.weight.dim(3) == k, "grow_kernel: kernel must be square, got ", k, "x",
                       layer.weight.dim(3));
  require<value_error>(kn >= k, "grow_kernel: cannot shrink the kernel from ", k, " to ", kn);
  check_conv2d_groups(layer.weight, layer.options.groups, "grow_kernel");
  require<value_error>((kn - k) % 2 == 0, "grow_kernel: growth from ", k, " to ", kn,
                       " is odd; a centred zero-padding needs an even growth");
  require_finite(layer.weight, "grow_kernel", "weight");
  require_finite(layer.bias, "grow_kernel", "bias");
  check_probe_options(opt.probe, "grow_kernel");
  require_allocatable("grow_kernel", "the grown weight",
                      {layer.weight.dim(0), layer.weight.dim(1), kn, kn}, sizeof(Scalar));
}

}  // namespace detail

/// Grows a square kernel from `K` to `opt.new_kernel` (zero-padded, centred; padding +
/// (K'-K)/2), so that `conv2d(x, result.layer) == conv2d(x, layer)` at every pixel.
/// \throws shape_error on a non-square or non-OIHW weight; value_error on a shrinking kernel,
///         an odd growth, NaN/Inf weights, bad probe options, or a grown weight beyond
///         `max_tensor_elements`.
template <typename Scalar>
grow_kernel_result<Scalar> grow_kernel(const conv2d_weights<Scalar>& layer,
                                       const grow_kernel_options& opt) {
  const auto t0 = std::chrono::steady_clock::now();
  detail::check_grow_kernel(layer, opt);
  const index_type k = layer.weight.dim(2), kn = opt.new_kernel;
  grow_kernel_result<Scalar> r;
  const conv2d_options o = layer.options;
  r.layer = conv2d_weights<Scalar>{pad_kernel(layer.weight, kn, kn), layer.bias,
                                   conv2d_options{o.stride, o.padding + (kn - k) / 2, o.groups}};
  morph_report& rep = r.report;
  rep.operation = "grow_kernel";
  rep.algorithm = "zero_pad";
  rep.exact = true;
  rep.kernel = kernel_details{k, kn};
  rep.new_tensors.push_back(detail::summarize("layer", r.layer.weight));
  detail::probe_conv_child(rep, layer, opt.probe, 0, opt.seed,
                           [&](const tensor<Scalar>& x) { return conv2d(x, r.layer); });
  rep.seconds = detail::seconds_since(t0);
  return r;
}

}  // namespace netmorph

#endif  // NETMORPH_MORPH_KERNEL_SIZE_HPP
