#ifndef NETMORPH_OPS_CONV2D_HPP
#define NETMORPH_OPS_CONV2D_HPP

/// \file conv2d.hpp
/// 2-d convolution (cross-correlation, as in every deep-learning framework) on NCHW activations
/// with OIHW weights, and the two gradients the training code needs. Stride-1 convolutions run as
/// `K_h` Eigen GEMMs per sample on strided views of `K_w` shifted copies of the input (no full
/// im2col matrix); the rest as im2col of a block of samples and one GEMM per block.

#include <netmorph/detail/message.hpp>
#include <netmorph/detail/parallel.hpp>
#include <netmorph/error.hpp>
#include <netmorph/tensor.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <vector>

namespace netmorph {

/// Stride and symmetric zero padding of a convolution (the same in both spatial directions), and
/// its channel groups (docs/DESIGN.md §2): with `groups = G` the input and output channels split
/// into `G` equal consecutive blocks and output block `g` sees only input block `g`; `G = C_in`
/// with `C_out = m C_in` is a depthwise convolution (channel multiplier `m`).
struct conv2d_options {
  index_type stride = 1;
  index_type padding = 0;
  index_type groups = 1;
};

/// A convolution layer's parameters: weight `(C_out, C_in / groups, K_h, K_w)` (PyTorch's
/// layout), bias `(C_out)` or empty for "no bias", stride, padding and groups.
template <typename Scalar>
struct conv2d_weights {
  using scalar_type = Scalar;
  tensor<Scalar> weight;
  tensor<Scalar> bias;
  conv2d_options options;
};

/// Output extent of a convolution along one axis: \f$ \lfloor (n + 2P - K)/s \rfloor + 1 \f$.
/// Throws `shape_error` when the kernel does not fit and `value_error` on a stride < 1 or a
/// negative padding.
inline index_type conv2d_output_size(index_type n, index_type k, conv2d_options p,
                                     const char* who = "conv2d") {
  detail::require<value_error>(p.stride >= 1, who, ": stride must be >= 1, got ", p.stride);
  detail::require<value_error>(p.padding >= 0, who, ": padding must be >= 0, got ", p.padding);
  detail::require<shape_error>(n + 2 * p.padding >= k, who, ": kernel extent ", k,
                               " does not fit input extent ", n, " with padding ", p.padding);
  return (n + 2 * p.padding - k) / p.stride + 1;
}

namespace detail {

/// Checks a convolution's groups against its weight: `groups >= 1` divides `C_out`; throws
/// `value_error`/`shape_error` naming `who`.
template <typename Scalar>
void check_conv2d_groups(const tensor<Scalar>& w, index_type groups, const char* who) {
  require<value_error>(groups >= 1, who, ": groups must be >= 1, got ", groups);
  require<shape_error>(w.rank() != 4 || w.dim(0) % groups == 0, who, ": ", w.dim(0),
                       " output channels do not split into ", groups, " groups");
}

/// Checks the shapes of a convolution's operands (`groups` channel groups: the input has
/// `groups * w.dim(1)` channels); throws `shape_error` naming `who`.
template <typename Scalar>
void check_conv2d_operands(const tensor<Scalar>& x, const tensor<Scalar>& w,
                           const tensor<Scalar>& b, const char* who, index_type groups = 1) {
  require<shape_error>(x.rank() == 4, who, ": input must be NCHW (rank 4), got shape ",
                       shape_string(x.shape()));
  require<shape_error>(w.rank() == 4, who, ": weight must be OIHW (rank 4), got shape ",
                       shape_string(w.shape()));
  check_conv2d_groups(w, groups, who);
  if (groups == 1)
    require<shape_error>(x.dim(1) == w.dim(1), who, ": input has ", x.dim(1),
                         " channels, weight expects ", w.dim(1));
  else
    require<shape_error>(x.dim(1) == w.dim(1) * groups, who, ": input has ", x.dim(1),
                         " channels, weight expects ", w.dim(1), " per group x ", groups,
                         " groups = ", w.dim(1) * groups);
  require<shape_error>(w.dim(2) >= 1 && w.dim(3) >= 1, who, ": empty kernel ",
                       shape_string(w.shape()));
  require<shape_error>(b.empty() || (b.rank() == 1 && b.dim(0) == w.dim(0)), who,
                       ": bias must have shape (", w.dim(0), "), got ", shape_string(b.shape()));
}

/// Refuses a grouped convolution where `who` (a morph) is defined for ordinary ones only; `role`
/// names the layer ("layer", "next layer", "parent").
template <typename Scalar>
void require_ungrouped(const conv2d_weights<Scalar>& l, const char* who, const char* role) {
  require<value_error>(l.options.groups == 1, who, ": the ", role,
                       " is a grouped convolution (groups = ", l.options.groups, "); ", who,
                       " is defined for ungrouped convolutions only");
}

/// The output positions `[lo, hi)` whose input index `o*stride + k - pad` lies in `[0, n)`.
inline void valid_span(index_type k, index_type pad, index_type stride, index_type n,
                       index_type out, index_type& lo, index_type& hi) {
  const index_type a = pad - k, b = n - 1 + pad - k;
  lo = a <= 0 ? 0 : (a + stride - 1) / stride;
  hi = b < 0 ? 0 : b / stride + 1;
  lo = std::min(lo, out);
  hi = std::max(lo, std::min(hi, out));
}

/// im2col for one sample: `col` gets rows (c, ky, kx) and columns (oy, ox) of the zero-padded
/// input window, with a row stride of `ld >= ho*wo` so that the columns of several samples can sit
/// side by side in one matrix. The valid span of each row is computed once, so the inner loops
/// are plain copies (contiguous for stride 1).
template <typename Scalar>
void im2col(const Scalar* x, index_type c_in, index_type h, index_type w, index_type kh,
            index_type kw, conv2d_options p, index_type ho, index_type wo, Scalar* col,
            index_type ld) {
  for (index_type c = 0; c < c_in; ++c) {
    const Scalar* xc = x + c * h * w;
    for (index_type ky = 0; ky < kh; ++ky) {
      index_type ylo, yhi;
      valid_span(ky, p.padding, p.stride, h, ho, ylo, yhi);
      for (index_type kx = 0; kx < kw; ++kx) {
        index_type xlo, xhi;
        valid_span(kx, p.padding, p.stride, w, wo, xlo, xhi);
        Scalar* row = col + ((c * kh + ky) * kw + kx) * ld;
        std::fill(row, row + ylo * wo, Scalar(0));
        for (index_type oy = ylo; oy < yhi; ++oy) {
          const Scalar* xr = xc + (oy * p.stride + ky - p.padding) * w + kx - p.padding;
          Scalar* out = row + oy * wo;
          std::fill(out, out + xlo, Scalar(0));
          if (p.stride == 1) {
            std::copy(xr + xlo, xr + xhi, out + xlo);
          } else {
            for (index_type ox = xlo; ox < xhi; ++ox)
              out[ox] = xr[ox * p.stride];
          }
          std::fill(out + xhi, out + wo, Scalar(0));
        }
        std::fill(row + yhi * wo, row + ho * wo, Scalar(0));
      }
    }
  }
}

/// Adds the im2col patch gradients back onto the input gradient of one sample (the adjoint of
/// `im2col`, over the same valid spans; `col` has row stride `ld`).
template <typename Scalar>
void col2im(const Scalar* col, index_type c_in, index_type h, index_type w, index_type kh,
            index_type kw, conv2d_options p, index_type ho, index_type wo, Scalar* dx,
            index_type ld) {
  for (index_type c = 0; c < c_in; ++c) {
    Scalar* dxc = dx + c * h * w;
    for (index_type ky = 0; ky < kh; ++ky) {
      index_type ylo, yhi;
      valid_span(ky, p.padding, p.stride, h, ho, ylo, yhi);
      for (index_type kx = 0; kx < kw; ++kx) {
        index_type xlo, xhi;
        valid_span(kx, p.padding, p.stride, w, wo, xlo, xhi);
        const Scalar* row = col + ((c * kh + ky) * kw + kx) * ld;
        for (index_type oy = ylo; oy < yhi; ++oy) {
          Scalar* d = dxc + (oy * p.stride + ky - p.padding) * w + kx - p.padding;
          const Scalar* r = row + oy * wo;
          if (p.stride == 1) {
            for (index_type ox = xlo; ox < xhi; ++ox)
              d[ox] += r[ox];
          } else {
            for (index_type ox = xlo; ox < xhi; ++ox)
              d[ox * p.stride] += r[ox];
          }
        }
      }
    }
  }
}

/// The horizontally shifted copies of one zero-padded sample for a stride-1 convolution: row
/// `(c, kx)` holds rows `-P .. h+P-1` of channel `c`, each shifted by `kx - P` and cut to `wo`
/// columns, i.e. `(h + 2P) * wo` values. Row `(c, kx)` read from offset `ky * wo` with `ho * wo`
/// values is row `(c, ky, kx)` of the im2col matrix, so the im2col matrix of a `kh x kw` kernel
/// is `kh` strided views of this `kh` times smaller one (the "memory-efficient convolution" of
/// Cho and Brand, ICML 2017) and is never written out.
template <typename Scalar>
void shifted_rows(const Scalar* x, index_type c_in, index_type h, index_type w, index_type kw,
                  index_type pad, index_type wo, Scalar* rows) {
  const index_type hp = h + 2 * pad;
  for (index_type c = 0; c < c_in; ++c) {
    const Scalar* xc = x + c * h * w;
    for (index_type kx = 0; kx < kw; ++kx) {
      index_type xlo, xhi;
      valid_span(kx, pad, 1, w, wo, xlo, xhi);
      Scalar* row = rows + (c * kw + kx) * hp * wo;
      std::fill(row, row + pad * wo, Scalar(0));
      for (index_type y = 0; y < h; ++y) {
        const Scalar* xr = xc + y * w + kx - pad;
        Scalar* out = row + (y + pad) * wo;
        std::fill(out, out + xlo, Scalar(0));
        std::copy(xr + xlo, xr + xhi, out + xlo);
        std::fill(out + xhi, out + wo, Scalar(0));
      }
      std::fill(row + (h + pad) * wo, row + hp * wo, Scalar(0));
    }
  }
}

/// Whether a convolution runs on `shifted_rows` (stride 1, and `C_in * K_w` rows long enough for
/// an efficient GEMM) rather than on a full im2col matrix.
inline bool use_shifted_rows(index_type c_in, index_type kw, conv2d_options p) {
  return p.stride == 1 && c_in * kw >= 16;
}

/// Scratch buffers of the convolution kernels, one set per thread, kept between calls so a
/// training loop with stable shapes allocates nothing. Scratch is not state: copies start empty.
template <typename Scalar>
struct conv2d_workspace {
  using matrix_type = typename tensor<Scalar>::matrix_type;
  using vector_type = typename tensor<Scalar>::vector_type;
  struct slot {
    matrix_type col, out, grad;
    vector_type bias_grad;
  };
  std::vector<slot> slots;
  tensor<Scalar> flipped;  ///< the transposed, flipped weight of the input-gradient convolution
  /// One group's input, weight and output (or their gradients) of a grouped convolution.
  tensor<Scalar> group_in, group_weight, group_out;
  matrix_type by_row;  ///< the weight as `kh` blocks `(C_out, C_in * K_w)`, one per kernel row

  conv2d_workspace() = default;
  conv2d_workspace(const conv2d_workspace&) {}
  conv2d_workspace& operator=(const conv2d_workspace&) { return *this; }

  /// Makes room for `threads` slots; call outside the parallel region.
  void reserve(index_type threads) {
    if (static_cast<index_type>(slots.size()) < threads)
      slots.resize(static_cast<std::size_t>(threads));
  }
  slot& at(index_type t) { return slots[static_cast<std::size_t>(t)]; }
  /// Zeroes the weight and bias gradient partial sums of the first `threads` slots (those a
  /// team of `threads` may use; a smaller team leaves the others at zero).
  void zero_gradients(index_type threads, index_type rows, index_type cols, index_type bias) {
    reserve(threads);
    for (index_type t = 0; t < threads; ++t) {
      at(t).grad.setZero(rows, cols);
      at(t).bias_grad.setZero(bias);
    }
  }
};

template <typename Scalar>
void grouped_conv2d_forward(const tensor<Scalar>&, const tensor<Scalar>&, const Scalar*,
                            conv2d_options, tensor<Scalar>&, conv2d_workspace<Scalar>&, index_type);
template <typename Scalar>
void grouped_conv2d_backward_weight(const tensor<Scalar>&, const tensor<Scalar>&, index_type,
                                    index_type, conv2d_options, Scalar*, Scalar*,
                                    conv2d_workspace<Scalar>&, index_type);
template <typename Scalar>
void grouped_conv2d_backward_input(const tensor<Scalar>&, const tensor<Scalar>&, conv2d_options,
                                   index_type, index_type, tensor<Scalar>&,
                                   conv2d_workspace<Scalar>&, index_type);

/// Samples per GEMM block when `block <= 0` asks for a choice: enough columns (`pix` per sample)
/// for Eigen's kernels to run at full speed, an im2col block of at most 2^19 values so it stays
/// near the cache, and blocks of equal size spread evenly over the threads.
inline index_type conv2d_block_size(index_type n, index_type patch, index_type pix,
                                    index_type threads, index_type block = 0) {
  if (n <= 0) return 1;
  if (block <= 0) {
    block = std::max<index_type>(1, (512 + pix - 1) / std::max<index_type>(1, pix));
    block = std::min(block, std::max<index_type>(
                                1, (index_type(1) << 19) / std::max<index_type>(1, patch * pix)));
    block = std::min(block, (n + threads - 1) / threads);
    index_type blocks = (n + block - 1) / block;
    blocks = (blocks + threads - 1) / threads * threads;
    block = (n + blocks - 1) / blocks;
  }
  return std::max<index_type>(1, std::min(block, n));
}

/// The shifted-rows route's sample loop, shared by the forward pass and the weight gradient of a
/// stride-1 convolution: for every sample `s`, in parallel over samples on `threads` threads,
/// builds the sample's `shifted_rows` in the thread's slot and calls `fn(slot, s, row)`, where
/// `row(ky)` is row `ky` of the sample's im2col matrix as a strided `(C_in K_w) x (H_out W_out)`
/// view.
template <typename Scalar, typename Fn>
void for_each_shifted_sample(const tensor<Scalar>& x, index_type kh, index_type kw, index_type pad,
                             index_type threads, conv2d_workspace<Scalar>& ws, Fn&& fn) {
  using view = Eigen::Map<const typename tensor<Scalar>::matrix_type, 0, Eigen::OuterStride<>>;
  const index_type n = x.dim(0), c_in = x.dim(1), h = x.dim(2), w = x.dim(3);
  const index_type r = c_in * kw, hp = h + 2 * pad, ho = hp - kh + 1, wo = w + 2 * pad - kw + 1;
  static_cast<void>(threads);  // only the OpenMP build spreads samples over threads
  exception_trap trap;         // an allocation may fail inside the region
#if defined(_OPENMP)
#pragma omp parallel num_threads(int(threads)) if (n > 1)
#endif
  {
    auto& sl = ws.at(thread_num());
    trap.run([&] { sl.col.resize(r, hp * wo); });
    const auto row = [&](index_type ky) {
      return view(sl.col.data() + ky * wo, r, ho * wo, Eigen::OuterStride<>(hp * wo));
    };
#if defined(_OPENMP)
#pragma omp for schedule(static)
#endif
    for (index_type s = 0; s < n; ++s)
      trap.run([&] {
        shifted_rows(x.data() + s * c_in * h * w, c_in, h, w, kw, pad, wo, sl.col.data());
        fn(sl, s, row);
      });
  }
  trap.rethrow();
}

/// Forward convolution into `y` (reshaped to `(N, C_out, H_out, W_out)` when needed). With
/// `block <= 0` and `use_shifted_rows`, each sample takes `K_h` GEMMs
/// `[C_out x C_in K_w] * [C_in K_w x H_out W_out]` on `shifted_rows`; otherwise im2col of `block`
/// samples side by side (`block <= 0`: `conv2d_block_size` chooses) and one GEMM
/// `[C_out x C_in K_h K_w] * [C_in K_h K_w x block H_out W_out]` per block. Samples or blocks run
/// in parallel when the consumer enables OpenMP. Operands must have been checked; `bias` may be
/// null.
template <typename Scalar>
void conv2d_forward(const tensor<Scalar>& x, const tensor<Scalar>& weight, const Scalar* bias,
                    conv2d_options p, tensor<Scalar>& y, conv2d_workspace<Scalar>& ws,
                    index_type block = 0) {
  if (p.groups != 1) return grouped_conv2d_forward(x, weight, bias, p, y, ws, block);
  using mat = typename tensor<Scalar>::matrix_type;
  const index_type n = x.dim(0), c_in = x.dim(1), h = x.dim(2), w = x.dim(3);
  const index_type c_out = weight.dim(0), kh = weight.dim(2), kw = weight.dim(3);
  const index_type ho = conv2d_output_size(h, kh, p), wo = conv2d_output_size(w, kw, p);
  ensure_shape(y, {n, c_out, ho, wo});
  if (y.size() == 0) return;
  const index_type patch = c_in * kh * kw, pix = ho * wo, in_size = c_in * h * w,
                   out_size = c_out * pix;
  if (patch == 0) {
    for (index_type s = 0; s < n * c_out; ++s)
      std::fill(y.data() + s * pix, y.data() + (s + 1) * pix, bias ? bias[s % c_out] : Scalar(0));
    return;
  }
  const index_type threads = max_threads();
  ws.reserve(threads);
  if (block <= 0 && use_shifted_rows(c_in, kw, p)) {
    // y_s = sum_ky W[:, :, ky, :] * (row ky of the sample's im2col matrix); samples in parallel.
    const index_type r = c_in * kw;
    ws.by_row.resize(kh * c_out, r);
    for (index_type o = 0; o < c_out; ++o)
      for (index_type i = 0; i < c_in; ++i)
        for (index_type ky = 0; ky < kh; ++ky)
          for (index_type kx = 0; kx < kw; ++kx)
            ws.by_row(ky * c_out + o, i * kw + kx) =
                weight.data()[((o * c_in + i) * kh + ky) * kw + kx];
    for_each_shifted_sample(x, kh, kw, p.padding, threads, ws, [&](auto&, index_type s, auto row) {
      Eigen::Map<mat> ys(y.data() + s * out_size, c_out, pix);
      ys.noalias() = ws.by_row.topRows(c_out) * row(0);
      for (index_type ky = 1; ky < kh; ++ky)
        ys.noalias() += ws.by_row.middleRows(ky * c_out, c_out) * row(ky);
      if (bias)
        for (index_type o = 0; o < c_out; ++o)
          ys.row(o).array() += bias[o];
    });
    return;
  }
  block = conv2d_block_size(n, patch, pix, threads, block);
  const index_type blocks = (n + block - 1) / block;
  const auto wmat = weight.matrix(c_out, patch);
  // Blocks are independent: with OpenMP enabled by the consumer they run on all cores, each
  // thread with its own buffers. Without OpenMP the pragmas are ignored and Eigen's GEMM runs as
  // configured.
  exception_trap trap;  // an allocation may fail inside the region
#if defined(_OPENMP)
#pragma omp parallel num_threads(int(threads)) if (blocks > 1)
#endif
  {
    auto& sl = ws.at(thread_num());
    trap.run([&] {
      sl.col.resize(patch, block * pix);
      if (block > 1) sl.out.resize(c_out, block * pix);
    });
#if defined(_OPENMP)
#pragma omp for schedule(static)
#endif
    for (index_type b = 0; b < blocks; ++b)
      trap.run([&] {
        const index_type s0 = b * block, nb = std::min(block, n - s0), cols = nb * pix;
        for (index_type j = 0; j < nb; ++j)
          im2col(x.data() + (s0 + j) * in_size, c_in, h, w, kh, kw, p, ho, wo,
                 sl.col.data() + j * pix, cols);
        const Eigen::Map<const mat> col(sl.col.data(), patch, cols);
        if (nb == 1) {
          Eigen::Map<mat> ys(y.data() + s0 * out_size, c_out, pix);
          ys.noalias() = wmat * col;
          if (bias)
            for (index_type o = 0; o < c_out; ++o)
              ys.row(o).array() += bias[o];
          return;
        }
        // The GEMM's columns are (sample, pixel); NCHW wants each sample's channels together.
        Eigen::Map<mat> out(sl.out.data(), c_out, cols);
        out.noalias() = wmat * col;
        for (index_type j = 0; j < nb; ++j)
          for (index_type o = 0; o < c_out; ++o) {
            Scalar* dst = y.data() + (s0 + j) * out_size + o * pix;
            const Scalar* src = out.data() + o * cols + j * pix;
            const Scalar bo = bias ? bias[o] : Scalar(0);
            for (index_type q = 0; q < pix; ++q)
              dst[q] = src[q] + bo;
          }
      });
  }
  trap.rethrow();
}

/// Weight (and bias) gradient of a convolution, accumulated:
/// \f$ dW[o,i](u) \mathrel{+}= \sum_{n,p} dy[n,o](p)\, x[n,i](s p + u - P) \f$ and
/// \f$ db[o] \mathrel{+}= \sum_{n,p} dy[n,o](p) \f$. The routes are those of `conv2d_forward`:
/// `K_h` GEMMs `[C_out x H_out W_out] * [H_out W_out x C_in K_w]` per sample on `shifted_rows`,
/// or one GEMM `[C_out x block H_out W_out] * [block H_out W_out x C_in K_h K_w]` per block of
/// samples; `dw` is `(C_out, C_in K_h K_w)` row-major, `db` may be null.
template <typename Scalar>
void conv2d_backward_weight(const tensor<Scalar>& x, const tensor<Scalar>& dy, index_type kh,
                            index_type kw, conv2d_options p, Scalar* dw, Scalar* db,
                            conv2d_workspace<Scalar>& ws, index_type block = 0) {
  if (p.groups != 1) return grouped_conv2d_backward_weight(x, dy, kh, kw, p, dw, db, ws, block);
  using mat = typename tensor<Scalar>::matrix_type;
  using vec = typename tensor<Scalar>::vector_type;
  const index_type n = x.dim(0), c_in = x.dim(1), h = x.dim(2), w = x.dim(3);
  const index_type c_out = dy.dim(1), ho = dy.dim(2), wo = dy.dim(3);
  const index_type patch = c_in * kh * kw, pix = ho * wo, in_size = c_in * h * w,
                   out_size = c_out * pix;
  if (n == 0 || c_out == 0 || pix == 0) return;
  const index_type threads = max_threads();
  ws.reserve(threads);
  if (block <= 0 && use_shifted_rows(c_in, kw, p)) {
    // dW[:, :, ky, :] += dy_s * (row ky of the sample's im2col matrix)^T; each thread accumulates
    // kh blocks (C_out, C_in * K_w).
    const index_type r = c_in * kw;
    ws.zero_gradients(threads, kh * c_out, r, c_out);
    for_each_shifted_sample(
        x, kh, kw, p.padding, threads, ws, [&](auto& sl, index_type s, auto row) {
          const Eigen::Map<const mat> dys(dy.data() + s * out_size, c_out, pix);
          for (index_type ky = 0; ky < kh; ++ky)
            sl.grad.middleRows(ky * c_out, c_out).noalias() += dys * row(ky).transpose();
          if (db) sl.bias_grad += dys.rowwise().sum();
        });
    // The threads' partial sums are added in thread order, so the result does not depend on
    // which thread finishes first.
    for (index_type t = 0; t < threads; ++t) {
      const auto& sl = ws.at(t);
      for (index_type o = 0; o < c_out; ++o)
        for (index_type i = 0; i < c_in; ++i)
          for (index_type ky = 0; ky < kh; ++ky)
            for (index_type kx = 0; kx < kw; ++kx)
              dw[((o * c_in + i) * kh + ky) * kw + kx] += sl.grad(ky * c_out + o, i * kw + kx);
      if (db) Eigen::Map<vec>(db, c_out) += sl.bias_grad;
    }
    return;
  }
  block = conv2d_block_size(n, patch, pix, threads, block);
  const index_type blocks = (n + block - 1) / block;
  ws.zero_gradients(threads, c_out, patch, c_out);
  exception_trap trap;  // an allocation may fail inside the region
#if defined(_OPENMP)
#pragma omp parallel num_threads(int(threads)) if (blocks > 1)
#endif
  {
    auto& sl = ws.at(thread_num());
    trap.run([&] {
      sl.col.resize(patch, block * pix);
      if (block > 1) sl.out.resize(c_out, block * pix);
    });
#if defined(_OPENMP)
#pragma omp for schedule(static)
#endif
    for (index_type b = 0; b < blocks; ++b)
      trap.run([&] {
        const index_type s0 = b * block, nb = std::min(block, n - s0), cols = nb * pix;
        for (index_type j = 0; j < nb; ++j)
          im2col(x.data() + (s0 + j) * in_size, c_in, h, w, kh, kw, p, ho, wo,
                 sl.col.data() + j * pix, cols);
        const Scalar* g = dy.data() + s0 * out_size;
        if (nb > 1) {  // gather the block's dy as (channel, (sample, pixel))
          for (index_type j = 0; j < nb; ++j)
            for (index_type o = 0; o < c_out; ++o)
              std::copy(g + j * out_size + o * pix, g + j * out_size + (o + 1) * pix,
                        sl.out.data() + o * cols + j * pix);
          g = sl.out.data();
        }
        const Eigen::Map<const mat> dys(g, c_out, cols), col(sl.col.data(), patch, cols);
        sl.grad.noalias() += dys * col.transpose();
        if (db) sl.bias_grad += dys.rowwise().sum();
      });
  }
  trap.rethrow();
  for (index_type t = 0; t < threads; ++t) {  // in thread order, as above
    Eigen::Map<mat>(dw, c_out, patch) += ws.at(t).grad;
    if (db) Eigen::Map<vec>(db, c_out) += ws.at(t).bias_grad;
  }
}

/// Input gradient of a convolution into `dx` (reshaped to `(N, C_in, h, w)` when needed):
/// \f$ dx[n,i](q) = \sum_{o} \sum_{p,u:\, s p + u - P = q} W[o,i](u)\, dy[n,o](p) \f$.
/// With stride 1, a square kernel and `P <= K - 1` this is itself a convolution of `dy` with the
/// flipped kernel, channels swapped, and padding `K - 1 - P`, so it runs through
/// `conv2d_forward`'s blocked GEMMs; otherwise each sample takes a GEMM into patch gradients
/// followed by `col2im`.
template <typename Scalar>
void conv2d_backward_input(const tensor<Scalar>& dy, const tensor<Scalar>& weight, conv2d_options p,
                           index_type h, index_type w, tensor<Scalar>& dx,
                           conv2d_workspace<Scalar>& ws, index_type block = 0) {
  if (p.groups != 1) return grouped_conv2d_backward_input(dy, weight, p, h, w, dx, ws, block);
  using mat = typename tensor<Scalar>::matrix_type;
  const index_type n = dy.dim(0), c_out = weight.dim(0), c_in = weight.dim(1), kh = weight.dim(2),
                   kw = weight.dim(3), ho = dy.dim(2), wo = dy.dim(3);
  if (p.stride == 1 && kh == kw && p.padding <= kh - 1) {
    ensure_shape(ws.flipped, {c_in, c_out, kh, kw});
    for (index_type o = 0; o < c_out; ++o)
      for (index_type i = 0; i < c_in; ++i)
        for (index_type u = 0; u < kh * kw; ++u)
          ws.flipped.data()[(i * c_out + o) * kh * kw + (kh * kw - 1 - u)] =
              weight.data()[(o * c_in + i) * kh * kw + u];
    conv2d_forward(dy, ws.flipped, static_cast<const Scalar*>(nullptr),
                   conv2d_options{1, kh - 1 - p.padding}, dx, ws, block);
    NETMORPH_ASSERT(dx.shape() == (shape_type{n, c_in, h, w}));
    return;
  }
  ensure_shape(dx, {n, c_in, h, w});
  const index_type patch = c_in * kh * kw, pix = ho * wo, in_size = c_in * h * w;
  std::fill(dx.begin(), dx.end(), Scalar(0));
  if (dx.size() == 0 || c_out == 0 || pix == 0) return;
  const index_type threads = max_threads();
  const auto wm = weight.matrix(c_out, patch);
  ws.reserve(threads);
  exception_trap trap;  // an allocation may fail inside the region
#if defined(_OPENMP)
#pragma omp parallel num_threads(int(threads)) if (n > 1)
#endif
  {
    auto& sl = ws.at(thread_num());
    trap.run([&] { sl.col.resize(patch, pix); });
#if defined(_OPENMP)
#pragma omp for schedule(static)
#endif
    for (index_type s = 0; s < n; ++s)
      trap.run([&] {
        const Eigen::Map<const mat> dys(dy.data() + s * c_out * pix, c_out, pix);
        sl.col.noalias() = wm.transpose() * dys;
        col2im(sl.col.data(), c_in, h, w, kh, kw, p, ho, wo, dx.data() + s * in_size, pix);
      });
  }
  trap.rethrow();
}

/// Copies channels `[c0, c0 + cg)` of every sample of `src` (`n` samples of `c` channels of `pix`
/// values) into `dst` (`n` samples of `cg` channels).
template <typename Scalar>
void gather_channels(const Scalar* src, index_type n, index_type c, index_type c0, index_type cg,
                     index_type pix, Scalar* dst) {
  for (index_type s = 0; s < n; ++s)
    std::copy(src + (s * c + c0) * pix, src + (s * c + c0 + cg) * pix, dst + s * cg * pix);
}

/// The adjoint of `gather_channels`: writes `src` (`n` samples of `cg` channels) into channels
/// `[c0, c0 + cg)` of `dst` (`n` samples of `c` channels).
template <typename Scalar>
void scatter_channels(const Scalar* src, index_type n, index_type c, index_type c0, index_type cg,
                      index_type pix, Scalar* dst) {
  for (index_type s = 0; s < n; ++s)
    std::copy(src + s * cg * pix, src + (s + 1) * cg * pix, dst + (s * c + c0) * pix);
}

/// The forward pass of a grouped convolution: each group's input channels, weight rows and output
/// channels are gathered and run through the ungrouped kernels (their GEMMs and threads).
template <typename Scalar>
void grouped_conv2d_forward(const tensor<Scalar>& x, const tensor<Scalar>& weight,
                            const Scalar* bias, conv2d_options p, tensor<Scalar>& y,
                            conv2d_workspace<Scalar>& ws, index_type block) {
  const index_type g = p.groups, n = x.dim(0), c_in = x.dim(1), h = x.dim(2), w = x.dim(3);
  const index_type c_out = weight.dim(0), cig = weight.dim(1), cog = c_out / g;
  const index_type ho = conv2d_output_size(h, weight.dim(2), p),
                   wo = conv2d_output_size(w, weight.dim(3), p);
  ensure_shape(y, {n, c_out, ho, wo});
  const conv2d_options one{p.stride, p.padding, 1};
  const index_type per_filter = cig * weight.dim(2) * weight.dim(3);
  ensure_shape(ws.group_in, {n, cig, h, w});
  ensure_shape(ws.group_weight, {cog, cig, weight.dim(2), weight.dim(3)});
  for (index_type k = 0; k < g; ++k) {
    gather_channels(x.data(), n, c_in, k * cig, cig, h * w, ws.group_in.data());
    std::copy(weight.data() + k * cog * per_filter, weight.data() + (k + 1) * cog * per_filter,
              ws.group_weight.data());
    conv2d_forward(ws.group_in, ws.group_weight, bias ? bias + k * cog : nullptr, one, ws.group_out,
                   ws, block);
    scatter_channels(ws.group_out.data(), n, c_out, k * cog, cog, ho * wo, y.data());
  }
}

/// The weight (and bias) gradient of a grouped convolution, accumulated group by group: group
/// `k`'s rows of `dw` (contiguous in the OIHW layout) from its input and output channels.
template <typename Scalar>
void grouped_conv2d_backward_weight(const tensor<Scalar>& x, const tensor<Scalar>& dy,
                                    index_type kh, index_type kw, conv2d_options p, Scalar* dw,
                                    Scalar* db, conv2d_workspace<Scalar>& ws, index_type block) {
  const index_type g = p.groups, n = x.dim(0), c_in = x.dim(1), h = x.dim(2), w = x.dim(3);
  const index_type c_out = dy.dim(1), cig = c_in / g, cog = c_out / g, pix = dy.dim(2) * dy.dim(3);
  const conv2d_options one{p.stride, p.padding, 1};
  ensure_shape(ws.group_in, {n, cig, h, w});
  ensure_shape(ws.group_out, {n, cog, dy.dim(2), dy.dim(3)});
  for (index_type k = 0; k < g; ++k) {
    gather_channels(x.data(), n, c_in, k * cig, cig, h * w, ws.group_in.data());
    gather_channels(dy.data(), n, c_out, k * cog, cog, pix, ws.group_out.data());
    conv2d_backward_weight(ws.group_in, ws.group_out, kh, kw, one, dw + k * cog * cig * kh * kw,
                           db ? db + k * cog : nullptr, ws, block);
  }
}

/// The input gradient of a grouped convolution, group by group.
template <typename Scalar>
void grouped_conv2d_backward_input(const tensor<Scalar>& dy, const tensor<Scalar>& weight,
                                   conv2d_options p, index_type h, index_type w, tensor<Scalar>& dx,
                                   conv2d_workspace<Scalar>& ws, index_type block) {
  const index_type g = p.groups, n = dy.dim(0), c_out = weight.dim(0), cig = weight.dim(1),
                   cog = c_out / g, c_in = cig * g, pix = dy.dim(2) * dy.dim(3);
  const index_type per_filter = cig * weight.dim(2) * weight.dim(3);
  const conv2d_options one{p.stride, p.padding, 1};
  ensure_shape(dx, {n, c_in, h, w});
  ensure_shape(ws.group_out, {n, cog, dy.dim(2), dy.dim(3)});
  ensure_shape(ws.group_weight, {cog, cig, weight.dim(2), weight.dim(3)});
  for (index_type k = 0; k < g; ++k) {
    gather_channels(dy.data(), n, c_out, k * cog, cog, pix, ws.group_out.data());
    std::copy(weight.data() + k * cog * per_filter, weight.data() + (k + 1) * cog * per_filter,
              ws.group_weight.data());
    conv2d_backward_input(ws.group_out, ws.group_weight, one, h, w, ws.group_in, ws, block);
    scatter_channels(ws.group_in.data(), n, c_in, k * cig, cig, h * w, dx.data());
  }
}

}  // namespace detail

/// Convolution forward pass (cross-correlation with zero padding, docs/DESIGN.md §2):
/// \f$ y[n,o](p) = b[o] + \sum_i \sum_u W[o,i](u)\, x[n,i](s p + u - P) \f$.
///
/// With `p.groups = G` the sum over `i` runs over the input channels of the output channel's group.
///
/// \param x      input `(N, C_in, H, W)`
/// \param weight `(C_out, C_in / G, K_h, K_w)`
/// \param bias   `(C_out)`, or an empty tensor for no bias
/// \returns      `(N, C_out, H_out, W_out)`
/// \throws shape_error on mismatched ranks, channels, groups, bias length or a kernel that does not
///         fit; value_error on a stride < 1, negative padding or groups < 1.
template <typename Scalar>
tensor<Scalar> conv2d(const tensor<Scalar>& x, const tensor<Scalar>& weight,
                      const tensor<Scalar>& bias, conv2d_options p = {}) {
  detail::check_conv2d_operands(x, weight, bias, "conv2d", p.groups);
  tensor<Scalar> y;
  detail::conv2d_workspace<Scalar> ws;
  detail::conv2d_forward(x, weight, bias.empty() ? nullptr : bias.data(), p, y, ws);
  return y;
}

/// Convolution without bias; see the overload with bias.
template <typename Scalar>
tensor<Scalar> conv2d(const tensor<Scalar>& x, const tensor<Scalar>& weight,
                      conv2d_options p = {}) {
  return conv2d(x, weight, tensor<Scalar>(), p);
}

/// Convolution with a layer's weight, bias, stride and padding.
template <typename Scalar>
tensor<Scalar> conv2d(const tensor<Scalar>& x, const conv2d_weights<Scalar>& layer) {
  return conv2d(x, layer.weight, layer.bias, layer.options);
}

}  // namespace netmorph

#endif  // NETMORPH_OPS_CONV2D_HPP
