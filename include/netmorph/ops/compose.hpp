#ifndef NETMORPH_OPS_COMPOSE_HPP
#define NETMORPH_OPS_COMPOSE_HPP

/// \file compose.hpp
/// Filter algebra of stacked convolutions: composition (paper eq. 6), the bias rule, centred
/// zero-padding and cropping of kernels, channel transposition and the identity filter.

#include <netmorph/detail/message.hpp>
#include <netmorph/error.hpp>
#include <netmorph/tensor.hpp>

#include <Eigen/Core>

namespace netmorph {

namespace detail {

inline void check_filter(const shape_type& s, const char* who, const char* name) {
  require<shape_error>(s.size() == 4, who, ": ", name, " must be OIHW (rank 4), got shape ",
                       shape_string(s));
  require<shape_error>(s[2] >= 1 && s[3] >= 1, who, ": ", name, " has an empty kernel, shape ",
                       shape_string(s));
}

}  // namespace detail

/// Effective filter of two stacked convolutions (paper eq. 6):
/// \f$ G[o,i](w) = \sum_c \sum_{u+v=w} F_2[o,c](v)\, F_1[c,i](u) \f$.
///
/// `conv2d(conv2d(x, F1, pad P), F2, pad 0)` equals `conv2d(x, compose(F2, F1), pad P)`, both at
/// stride 1 or with the stride on the second layer (docs/DESIGN.md §3.6).
/// \param f2 `(C2, C1, K2h, K2w)`
/// \param f1 `(C1, C0, K1h, K1w)`
/// \returns  `(C2, C0, K1h + K2h - 1, K1w + K2w - 1)`
/// \throws shape_error when ranks or the shared channel count `C1` disagree.
template <typename Scalar>
tensor<Scalar> compose(const tensor<Scalar>& f2, const tensor<Scalar>& f1) {
  detail::check_filter(f2.shape(), "compose", "F2");
  detail::check_filter(f1.shape(), "compose", "F1");
  detail::require<shape_error>(f2.dim(1) == f1.dim(0), "compose: F2 expects ", f2.dim(1),
                               " input channels, F1 has ", f1.dim(0), " output channels");
  const index_type c2 = f2.dim(0), c1 = f2.dim(1), k2h = f2.dim(2), k2w = f2.dim(3);
  const index_type c0 = f1.dim(1), k1h = f1.dim(2), k1w = f1.dim(3);
  const index_type kh = k1h + k2h - 1, kw = k1w + k2w - 1;
  tensor<Scalar> g({c2, c0, kh, kw});
  if (g.size() == 0) return g;
  using mat = typename tensor<Scalar>::matrix_type;
  const auto f1m = f1.matrix(c1, c0 * k1h * k1w);
  if (k2h == 1 && k2w == 1) {  // G has F1's kernel: one GEMM straight into it
    g.matrix(c2, c0 * k1h * k1w).noalias() = f2.matrix(c2, c1) * f1m;
    return g;
  }
  // One GEMM per offset v of F2: M = F2[:, :, v] (C2 x C1) * F1 (C1 x C0*K1h*K1w), then M is
  // accumulated into G at spatial offset v.
  mat f2v(c2, c1), m(c2, c0 * k1h * k1w);
  for (index_type vy = 0; vy < k2h; ++vy) {
    for (index_type vx = 0; vx < k2w; ++vx) {
      for (index_type o = 0; o < c2; ++o)
        for (index_type c = 0; c < c1; ++c)
          f2v(o, c) = f2(o, c, vy, vx);
      m.noalias() = f2v * f1m;
      for (index_type o = 0; o < c2; ++o)
        for (index_type i = 0; i < c0; ++i)
          for (index_type uy = 0; uy < k1h; ++uy)
            for (index_type ux = 0; ux < k1w; ++ux)
              g(o, i, uy + vy, ux + vx) += m(o, (i * k1h + uy) * k1w + ux);
    }
  }
  return g;
}

/// Bias of two stacked layers seen as one: \f$ b[o] = b_2[o] + \sum_{c,v} F_2[o,c](v)\, b_1[c] \f$.
/// Empty biases count as zero; the result is empty only when both are.
/// \throws shape_error on lengths that do not match `F2`.
template <typename Scalar>
tensor<Scalar> compose_bias(const tensor<Scalar>& f2, const tensor<Scalar>& b1,
                            const tensor<Scalar>& b2) {
  detail::check_filter(f2.shape(), "compose_bias", "F2");
  const index_type c2 = f2.dim(0), c1 = f2.dim(1);
  detail::require<shape_error>(b1.empty() || (b1.rank() == 1 && b1.dim(0) == c1),
                               "compose_bias: b1 must have shape (", c1, "), got ",
                               detail::shape_string(b1.shape()));
  detail::require<shape_error>(b2.empty() || (b2.rank() == 1 && b2.dim(0) == c2),
                               "compose_bias: b2 must have shape (", c2, "), got ",
                               detail::shape_string(b2.shape()));
  if (b1.empty() && b2.empty()) return tensor<Scalar>();
  tensor<Scalar> b = b2.empty() ? tensor<Scalar>({c2}) : b2;
  if (!b1.empty()) {
    const index_type kk = f2.dim(2) * f2.dim(3);
    for (index_type o = 0; o < c2; ++o) {
      double acc = 0;
      for (index_type c = 0; c < c1; ++c) {
        double s = 0;
        for (index_type v = 0; v < kk; ++v)
          s += f2.data()[(o * c1 + c) * kk + v];
        acc += s * double(b1(c));
      }
      b(o) = static_cast<Scalar>(double(b(o)) + acc);
    }
  }
  return b;
}

/// Centred zero-padding of a kernel from `(K_h, K_w)` to `(kh, kw)`.
/// \throws value_error when the new size is smaller or the growth is odd (not centrable).
template <typename Scalar>
tensor<Scalar> pad_kernel(const tensor<Scalar>& f, index_type kh, index_type kw) {
  detail::check_filter(f.shape(), "pad_kernel", "kernel");
  const index_type h = f.dim(2), w = f.dim(3);
  detail::require<value_error>(kh >= h && kw >= w, "pad_kernel: cannot pad a ", h, "x", w,
                               " kernel to the smaller ", kh, "x", kw);
  detail::require<value_error>((kh - h) % 2 == 0 && (kw - w) % 2 == 0, "pad_kernel: growth from ",
                               h, "x", w, " to ", kh, "x", kw,
                               " is odd; a centred padding needs an even growth");
  if (kh == h && kw == w) return f;
  const index_type oy = (kh - h) / 2, ox = (kw - w) / 2;
  tensor<Scalar> g({f.dim(0), f.dim(1), kh, kw});
  for (index_type o = 0; o < f.dim(0); ++o)
    for (index_type i = 0; i < f.dim(1); ++i)
      for (index_type y = 0; y < h; ++y)
        for (index_type x = 0; x < w; ++x)
          g(o, i, y + oy, x + ox) = f(o, i, y, x);
  return g;
}

/// Centred cropping of a kernel from `(K_h, K_w)` to `(kh, kw)`; the dropped border is lost.
/// \throws value_error when the new size is larger, smaller than 1, or the shrink is odd.
template <typename Scalar>
tensor<Scalar> crop_kernel(const tensor<Scalar>& f, index_type kh, index_type kw) {
  detail::check_filter(f.shape(), "crop_kernel", "kernel");
  const index_type h = f.dim(2), w = f.dim(3);
  detail::require<value_error>(kh >= 1 && kw >= 1 && kh <= h && kw <= w,
                               "crop_kernel: cannot crop a ", h, "x", w, " kernel to ", kh, "x",
                               kw);
  detail::require<value_error>((h - kh) % 2 == 0 && (w - kw) % 2 == 0, "crop_kernel: shrink from ",
                               h, "x", w, " to ", kh, "x", kw,
                               " is odd; a centred crop needs an even shrink");
  const index_type oy = (h - kh) / 2, ox = (w - kw) / 2;
  tensor<Scalar> g({f.dim(0), f.dim(1), kh, kw});
  for (index_type o = 0; o < f.dim(0); ++o)
    for (index_type i = 0; i < f.dim(1); ++i)
      for (index_type y = 0; y < kh; ++y)
        for (index_type x = 0; x < kw; ++x)
          g(o, i, y, x) = f(o, i, y + oy, x + ox);
  return g;
}

/// Swaps the two channel axes of a filter: `(A, B, K_h, K_w) -> (B, A, K_h, K_w)`.
/// `compose(F2, F1)` transposed this way equals `compose(transpose_channels(F1),
/// transpose_channels(F2))`.
template <typename Scalar>
tensor<Scalar> transpose_channels(const tensor<Scalar>& f) {
  detail::check_filter(f.shape(), "transpose_channels", "filter");
  const index_type a = f.dim(0), b = f.dim(1), kk = f.dim(2) * f.dim(3);
  tensor<Scalar> t({b, a, f.dim(2), f.dim(3)});
  for (index_type i = 0; i < a; ++i)
    for (index_type j = 0; j < b; ++j)
      for (index_type k = 0; k < kk; ++k)
        t.data()[(j * a + i) * kk + k] = f.data()[(i * b + j) * kk + k];
  return t;
}

/// The identity filter `(C, C, K, K)`: a centred delta on the diagonal channel pairs, so that a
/// convolution with padding `(K-1)/2` returns its input.
/// \throws value_error unless `C >= 1` and `K` is odd and positive.
template <typename Scalar>
tensor<Scalar> identity_filter(index_type channels, index_type k) {
  detail::require<value_error>(channels >= 1, "identity_filter: channels must be >= 1, got ",
                               channels);
  detail::require<value_error>(k >= 1 && k % 2 == 1,
                               "identity_filter: kernel size must be odd and positive, got ", k);
  tensor<Scalar> f({channels, channels, k, k});
  for (index_type c = 0; c < channels; ++c)
    f(c, c, k / 2, k / 2) = Scalar(1);
  return f;
}

}  // namespace netmorph

#endif  // NETMORPH_OPS_COMPOSE_HPP
