#ifndef NETMORPH_NN_LAYERS_POOL2D_HPP
#define NETMORPH_NN_LAYERS_POOL2D_HPP

/// \file pool2d.hpp
/// `nn::pool2d`: max or average pooling over square windows, with zero padding as in PyTorch's
/// `MaxPool2d` / `AvgPool2d` (`ceil_mode=False`, `count_include_pad=True`).

#include <netmorph/detail/message.hpp>
#include <netmorph/detail/parallel.hpp>
#include <netmorph/error.hpp>
#include <netmorph/nn/layers/layer.hpp>
#include <netmorph/ops/conv2d.hpp>
#include <netmorph/tensor.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

namespace netmorph {
namespace nn {

/// What a pooling window computes.
enum class pool_mode { max, average };

/// "max" or "average".
inline const char* to_string(pool_mode m) {
  return m == pool_mode::max ? "max" : "average";
}

/// Max or average pooling over `k x k` windows with stride `s`, the input padded by `padding`
/// on every side (at most `k / 2`, so that every window overlaps the input). Padding never wins a
/// max; an average divides by `k * k`, padding included (PyTorch's defaults).
template <typename Scalar>
class pool2d : public layer<Scalar> {
 public:
  pool2d(pool_mode m, index_type k, index_type stride, index_type padding = 0)
      : mode_(m), k_(k), stride_(stride), padding_(padding) {
    netmorph::detail::require<value_error>(k >= 1 && stride >= 1,
                                           "nn::pool2d: window and stride must be >= 1, got ", k,
                                           " and ", stride);
    netmorph::detail::require<value_error>(
        padding >= 0 && padding <= k / 2, "nn::pool2d: padding must be in [0, window / 2 = ", k / 2,
        "], got ", padding);
  }
  static constexpr layer_kind static_kind = layer_kind::pool2d;
  layer_kind kind() const override { return static_kind; }
  std::string describe() const override {
    return netmorph::detail::cat(
        "pool2d ", to_string(mode_), " ", k_, "x", k_, " stride ", stride_,
        padding_ ? netmorph::detail::cat(" padding ", padding_) : std::string());
  }
  index_type window() const { return k_; }
  index_type stride() const { return stride_; }
  index_type padding() const { return padding_; }
  pool_mode mode() const { return mode_; }
  shape_type output_shape(const shape_type& in) const override {
    detail::require_rank(in, 3, "nn::pool2d");
    const conv2d_options p{stride_, padding_};
    return {in[0], conv2d_output_size(in[1], k_, p, "nn::pool2d"),
            conv2d_output_size(in[2], k_, p, "nn::pool2d")};
  }
  void forward_into(const tensor<Scalar>& x, tensor<Scalar>& y, bool training) override {
    detail::require_rank(x.shape(), 4, "nn::pool2d");
    const shape_type os = output_shape({x.dim(1), x.dim(2), x.dim(3)});
    const index_type n = x.dim(0), c = x.dim(1), h = x.dim(2), w = x.dim(3), ho = os[1], wo = os[2];
    netmorph::detail::ensure_shape(y, {n, c, ho, wo});
    const bool keep_arg = training && mode_ == pool_mode::max;
    netmorph::detail::require<shape_error>(
        !keep_arg || h * w <= std::numeric_limits<std::int32_t>::max(), "nn::pool2d: plane of ", h,
        " x ", w, " values is too large to index with 32 bits");
    if (training) {
      in_shape_ = x.shape();
      if (keep_arg) arg_.resize(static_cast<std::size_t>(y.size()));
    }
    const index_type k = k_, st = stride_, pad = padding_;
    const bool max = mode_ == pool_mode::max;
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) \
    num_threads(int(netmorph::detail::max_threads())) if (n * c > 1)
#endif
    for (index_type p = 0; p < n * c; ++p) {
      const Scalar* xp = x.data() + p * h * w;
      Scalar* yp = y.data() + p * ho * wo;
      std::int32_t* ap = keep_arg ? arg_.data() + p * ho * wo : nullptr;
      for (index_type oy = 0; oy < ho; ++oy) {
        // The window's rows and columns inside the input (never empty: padding <= k / 2).
        const index_type y0 = std::max<index_type>(oy * st - pad, 0),
                         y1 = std::min<index_type>(oy * st - pad + k, h);
        for (index_type ox = 0; ox < wo; ++ox) {
          const index_type o = oy * wo + ox, x0 = std::max<index_type>(ox * st - pad, 0),
                           x1 = std::min<index_type>(ox * st - pad + k, w);
          if (max) {
            index_type best = y0 * w + x0;
            Scalar v = xp[best];
            for (index_type iy = y0; iy < y1; ++iy)
              for (index_type ix = x0; ix < x1; ++ix) {
                const index_type i = iy * w + ix;
                if (xp[i] > v) {
                  v = xp[i];
                  best = i;
                }
              }
            yp[o] = v;
            if (ap) ap[o] = static_cast<std::int32_t>(best);
          } else {
            double sum = 0;
            for (index_type iy = y0; iy < y1; ++iy)
              for (index_type ix = x0; ix < x1; ++ix)
                sum += xp[iy * w + ix];
            yp[o] = static_cast<Scalar>(sum / double(k * k));
          }
        }
      }
    }
  }
  void backward_into(const tensor<Scalar>& dy, tensor<Scalar>& dx) override {
    netmorph::detail::require<error>(
        in_shape_.size() == 4,
        "nn::pool2d::backward: no cached input (call forward with training = true)");
    const shape_type os = output_shape({in_shape_[1], in_shape_[2], in_shape_[3]});
    const shape_type want{in_shape_[0], os[0], os[1], os[2]};
    netmorph::detail::require<shape_error>(
        dy.shape() == want, "nn::pool2d::backward: gradient has shape ",
        netmorph::detail::shape_string(dy.shape()), ", the output has ",
        netmorph::detail::shape_string(want));
    netmorph::detail::require<error>(
        mode_ != pool_mode::max || arg_.size() == static_cast<std::size_t>(dy.size()),
        "nn::pool2d::backward: no cached input (call forward with training = true)");
    netmorph::detail::ensure_shape(dx, in_shape_);
    const index_type h = in_shape_[2], w = in_shape_[3], ho = os[1], wo = os[2], k = k_,
                     st = stride_, pad = padding_;
    const bool max = mode_ == pool_mode::max;
    const Scalar inv = Scalar(1) / Scalar(k * k);
    // Every window lies inside its own plane, so planes are independent.
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) \
    num_threads(int(netmorph::detail::max_threads())) if (in_shape_[0] * in_shape_[1] > 1)
#endif
    for (index_type p = 0; p < in_shape_[0] * in_shape_[1]; ++p) {
      Scalar* dxp = dx.data() + p * h * w;
      const Scalar* dyp = dy.data() + p * ho * wo;
      std::fill(dxp, dxp + h * w, Scalar(0));
      if (max) {
        const std::int32_t* ap = arg_.data() + p * ho * wo;
        for (index_type o = 0; o < ho * wo; ++o)
          dxp[ap[o]] += dyp[o];
        continue;
      }
      for (index_type oy = 0; oy < ho; ++oy) {
        const index_type y0 = std::max<index_type>(oy * st - pad, 0),
                         y1 = std::min<index_type>(oy * st - pad + k, h);
        for (index_type ox = 0; ox < wo; ++ox) {
          const index_type x0 = std::max<index_type>(ox * st - pad, 0),
                           x1 = std::min<index_type>(ox * st - pad + k, w);
          const Scalar g = dyp[oy * wo + ox] * inv;
          for (index_type iy = y0; iy < y1; ++iy)
            for (index_type ix = x0; ix < x1; ++ix)
              dxp[iy * w + ix] += g;
        }
      }
    }
  }
  std::unique_ptr<layer<Scalar>> clone() const override {
    return std::make_unique<pool2d>(*this);
  }

 private:
  pool_mode mode_;
  index_type k_, stride_, padding_;
  shape_type in_shape_;
  std::vector<std::int32_t> arg_;  ///< arg-max of each window, as an offset in its plane
};

}  // namespace nn
}  // namespace netmorph

#endif  // NETMORPH_NN_LAYERS_POOL2D_HPP
