#ifndef NETMORPH_MORPH_KERNEL_SIZE_HPP
#define NETMORPH_MORPH_KERNEL_SIZE_HPP

/// \file kernel_size.hpp
/// Kernel-size morphing (paper §3.4.2, DESIGN §4): zero-pad a filter centred from `K` to `K'`
/// and grow the padding by `(K' - K)/2`; the output is unchanged at every pixel.

#include <netmorph/detail/message.hpp>
#include <netmorph/error.hpp>
#include <netmorph/ops/compose.hpp>
#include <netmorph/ops/conv2d.hpp>
#include <netmorph/tensor.hpp>

#include <chrono>
#include <cstdint>
#include <random>

namespace netmorph {

/// What a kernel-size morph did, measured on random probe inputs.
struct grow_kernel_report {
  index_type old_kernel = 0, new_kernel = 0;
  double max_output_error = 0, relative_output_error = 0;
  double nonzero = 0, std = 0;  ///< of the grown weight
  double seconds = 0;
};

/// A layer with a grown kernel and the report.
template <typename Scalar>
struct grow_kernel_result {
  conv2d_weights<Scalar> layer;
  grow_kernel_report report;
};

/// Grows a square kernel from `K` to `new_kernel` (zero-padded, centred; padding + (K'-K)/2).
/// \throws shape_error on a non-square or non-OIHW weight; value_error on a shrinking kernel,
///         an odd growth, or NaN/Inf weights.
template <typename Scalar>
grow_kernel_result<Scalar> grow_kernel(const conv2d_weights<Scalar>& layer, index_type new_kernel,
                                       std::uint64_t seed = 0, index_type probe_count = 2) {
  detail::require<shape_error>(layer.weight.rank() == 4,
                               "grow_kernel: weight must be OIHW (rank 4), got shape ",
                               detail::shape_string(layer.weight.shape()));
  const index_type k = layer.weight.dim(2);
  detail::require<shape_error>(layer.weight.dim(3) == k, "grow_kernel: kernel must be square, got ",
                               k, "x", layer.weight.dim(3));
  detail::require<value_error>(new_kernel >= k, "grow_kernel: cannot shrink the kernel from ", k,
                               " to ", new_kernel);
  detail::require<value_error>((new_kernel - k) % 2 == 0, "grow_kernel: growth from ", k, " to ",
                               new_kernel, " is odd; a centred zero-padding needs an even growth");
  require_finite(layer.weight, "grow_kernel", "weight");
  require_finite(layer.bias, "grow_kernel", "bias");
  const auto t0 = std::chrono::steady_clock::now();
  grow_kernel_result<Scalar> r;
  r.layer = conv2d_weights<Scalar>{
      pad_kernel(layer.weight, new_kernel, new_kernel), layer.bias,
      conv2d_options{layer.options.stride, layer.options.padding + (new_kernel - k) / 2}};
  r.report.old_kernel = k;
  r.report.new_kernel = new_kernel;
  if (probe_count > 0) {
    std::mt19937_64 rng(seed);
    const index_type hw =
        std::max<index_type>(1, k - 2 * layer.options.padding) + 2 * layer.options.stride + 3;
    auto x = tensor<Scalar>::random_normal({probe_count, layer.weight.dim(1), hw, hw}, rng);
    auto y = conv2d(x, layer), z = conv2d(x, r.layer);
    r.report.max_output_error = max_abs_error(z, y);
    r.report.relative_output_error = relative_error(z, y);
  }
  r.report.nonzero = nonzero_fraction(r.layer.weight);
  r.report.std = stddev(r.layer.weight);
  r.report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace netmorph

#endif  // NETMORPH_MORPH_KERNEL_SIZE_HPP
