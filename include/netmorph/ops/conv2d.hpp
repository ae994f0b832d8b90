#ifndef NETMORPH_OPS_CONV2D_HPP
#define NETMORPH_OPS_CONV2D_HPP

/// \file conv2d.hpp
/// 2-d convolution (cross-correlation, as in every deep-learning framework) on NCHW activations
/// with OIHW weights, implemented as im2col followed by one Eigen GEMM per sample.

#include <netmorph/detail/message.hpp>
#include <netmorph/error.hpp>
#include <netmorph/tensor.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <vector>

namespace netmorph {

/// Stride and symmetric zero padding of a convolution (the same in both spatial directions).
struct conv2d_params {
  index stride = 1;
  index padding = 0;
};

/// A convolution layer's parameters: weight `(C_out, C_in, K_h, K_w)`, bias `(C_out)` or empty
/// for "no bias", stride and padding.
template <typename Scalar>
struct conv2d_layer {
  tensor<Scalar> weight;
  tensor<Scalar> bias;
  conv2d_params params;
};

/// Output extent of a convolution along one axis: \f$ \lfloor (n + 2P - K)/s \rfloor + 1 \f$.
/// Throws `shape_error` when the kernel does not fit and `value_error` on a stride < 1 or a
/// negative padding.
inline index conv2d_output_size(index n, index k, conv2d_params p, const char* who = "conv2d") {
  detail::require<value_error>(p.stride >= 1, who, ": stride must be >= 1, got ", p.stride);
  detail::require<value_error>(p.padding >= 0, who, ": padding must be >= 0, got ", p.padding);
  detail::require<shape_error>(n + 2 * p.padding >= k, who, ": kernel extent ", k,
                               " does not fit input extent ", n, " with padding ", p.padding);
  return (n + 2 * p.padding - k) / p.stride + 1;
}

namespace detail {

/// Checks the shapes of a convolution's operands; throws `shape_error` naming `who`.
template <typename Scalar>
void check_conv2d_operands(const tensor<Scalar>& x, const tensor<Scalar>& w,
                           const tensor<Scalar>& b, const char* who) {
  require<shape_error>(x.rank() == 4, who, ": input must be NCHW (rank 4), got shape ",
                       shape_string(x.shape()));
  require<shape_error>(w.rank() == 4, who, ": weight must be OIHW (rank 4), got shape ",
                       shape_string(w.shape()));
  require<shape_error>(x.dim(1) == w.dim(1), who, ": input has ", x.dim(1),
                       " channels, weight expects ", w.dim(1));
  require<shape_error>(w.dim(2) >= 1 && w.dim(3) >= 1, who, ": empty kernel ",
                       shape_string(w.shape()));
  require<shape_error>(b.empty() || (b.rank() == 1 && b.dim(0) == w.dim(0)), who,
                       ": bias must have shape (", w.dim(0), "), got ", shape_string(b.shape()));
}

/// The output positions `[lo, hi)` whose input index `o*stride + k - pad` lies in `[0, n)`.
inline void valid_span(index k, index pad, index stride, index n, index out, index& lo, index& hi) {
  const index a = pad - k, b = n - 1 + pad - k;
  lo = a <= 0 ? 0 : (a + stride - 1) / stride;
  hi = b < 0 ? 0 : b / stride + 1;
  lo = std::min(lo, out);
  hi = std::max(lo, std::min(hi, out));
}

/// im2col for one sample: `col` gets rows (c, ky, kx) and columns (oy, ox) of the zero-padded
/// input window. The valid span of each row is computed once, so the inner loops are plain
/// copies (contiguous for stride 1).
template <typename Scalar>
void im2col(const Scalar* x, index c_in, index h, index w, index kh, index kw, conv2d_params p,
            index ho, index wo, Scalar* col) {
  for (index c = 0; c < c_in; ++c) {
    const Scalar* xc = x + c * h * w;
    for (index ky = 0; ky < kh; ++ky) {
      index ylo, yhi;
      valid_span(ky, p.padding, p.stride, h, ho, ylo, yhi);
      for (index kx = 0; kx < kw; ++kx) {
        index xlo, xhi;
        valid_span(kx, p.padding, p.stride, w, wo, xlo, xhi);
        Scalar* row = col + ((c * kh + ky) * kw + kx) * ho * wo;
        std::fill(row, row + ylo * wo, Scalar(0));
        for (index oy = ylo; oy < yhi; ++oy) {
          const Scalar* xr = xc + (oy * p.stride + ky - p.padding) * w + kx - p.padding;
          Scalar* out = row + oy * wo;
          std::fill(out, out + xlo, Scalar(0));
          if (p.stride == 1) {
            std::copy(xr + xlo, xr + xhi, out + xlo);
          } else {
            for (index ox = xlo; ox < xhi; ++ox)
              out[ox] = xr[ox * p.stride];
          }
          std::fill(out + xhi, out + wo, Scalar(0));
        }
        std::fill(row + yhi * wo, row + ho * wo, Scalar(0));
      }
    }
  }
}

}  // namespace detail

/// Convolution forward pass (cross-correlation with zero padding, DESIGN §2):
/// \f$ y[n,o](p) = b[o] + \sum_i \sum_u W[o,i](u)\, x[n,i](s p + u - P) \f$.
///
/// \param x      input `(N, C_in, H, W)`
/// \param weight `(C_out, C_in, K_h, K_w)`
/// \param bias   `(C_out)`, or an empty tensor for no bias
/// \returns      `(N, C_out, H_out, W_out)`
/// \throws shape_error on mismatched ranks, channels, bias length or a kernel that does not fit;
///         value_error on a stride < 1 or negative padding.
template <typename Scalar>
tensor<Scalar> conv2d(const tensor<Scalar>& x, const tensor<Scalar>& weight,
                      const tensor<Scalar>& bias, conv2d_params p = {}) {
  detail::check_conv2d_operands(x, weight, bias, "conv2d");
  const index n = x.dim(0), c_in = x.dim(1), h = x.dim(2), w = x.dim(3);
  const index c_out = weight.dim(0), kh = weight.dim(2), kw = weight.dim(3);
  const index ho = conv2d_output_size(h, kh, p), wo = conv2d_output_size(w, kw, p);
  tensor<Scalar> y({n, c_out, ho, wo});
  if (y.size() == 0) return y;
  using mat = typename tensor<Scalar>::matrix_type;
  const index patch = c_in * kh * kw, pix = ho * wo;
  const auto wmat = weight.matrix(c_out, patch);
  // Samples are independent: with OpenMP enabled by the consumer they run on all cores, each
  // thread with one im2col buffer (no allocation per sample). Without OpenMP the pragmas are
  // ignored and Eigen's GEMM runs as configured.
#if defined(_OPENMP)
#pragma omp parallel if (n > 1)
#endif
  {
    mat col(patch, pix);
#if defined(_OPENMP)
#pragma omp for schedule(static)
#endif
    for (index s = 0; s < n; ++s) {
      detail::im2col(x.data() + s * c_in * h * w, c_in, h, w, kh, kw, p, ho, wo, col.data());
      Eigen::Map<mat> ys(y.data() + s * c_out * pix, c_out, pix);
      ys.noalias() = wmat * col;
      if (!bias.empty()) ys.colwise() += bias.vector();
    }
  }
  return y;
}

/// Convolution without bias; see the overload with bias.
template <typename Scalar>
tensor<Scalar> conv2d(const tensor<Scalar>& x, const tensor<Scalar>& weight, conv2d_params p = {}) {
  return conv2d(x, weight, tensor<Scalar>(), p);
}

/// Convolution with a layer's weight, bias, stride and padding.
template <typename Scalar>
tensor<Scalar> conv2d(const tensor<Scalar>& x, const conv2d_layer<Scalar>& layer) {
  return conv2d(x, layer.weight, layer.bias, layer.params);
}

}  // namespace netmorph

#endif  // NETMORPH_OPS_CONV2D_HPP
