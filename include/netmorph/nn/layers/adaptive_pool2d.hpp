#ifndef NETMORPH_NN_LAYERS_ADAPTIVE_POOL2D_HPP
#define NETMORPH_NN_LAYERS_ADAPTIVE_POOL2D_HPP

/// \file adaptive_pool2d.hpp
/// `nn::adaptive_pool2d`: average pooling to a fixed output size, as PyTorch's
/// `AdaptiveAvgPool2d` (the pooling in front of VGG's and ResNet's classifiers).

#include <netmorph/detail/message.hpp>
#include <netmorph/detail/parallel.hpp>
#include <netmorph/error.hpp>
#include <netmorph/nn/layers/layer.hpp>
#include <netmorph/tensor.hpp>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

namespace netmorph {
namespace nn {

/// Average pooling of each `H x W` plane to `out_h x out_w`: output cell `(i, j)` averages rows
/// `floor(i H / out_h)` to `ceil((i + 1) H / out_h)` (exclusive) and likewise columns, PyTorch's
/// bins. An output larger than the input repeats input cells; an output equal to it is the
/// identity.
template <typename Scalar>
class adaptive_pool2d : public layer<Scalar> {
 public:
  adaptive_pool2d(index_type out_h, index_type out_w) : out_h_(out_h), out_w_(out_w) {
    netmorph::detail::require<value_error>(out_h >= 1 && out_w >= 1,
                                           "nn::adaptive_pool2d: output size must be >= 1, got ",
                                           out_h, " x ", out_w);
  }
  static constexpr layer_kind static_kind = layer_kind::adaptive_pool2d;
  layer_kind kind() const override { return static_kind; }
  std::string describe() const override {
    return netmorph::detail::cat("adaptive_pool2d average to ", out_h_, "x", out_w_);
  }
  index_type output_height() const { return out_h_; }
  index_type output_width() const { return out_w_; }
  shape_type output_shape(const shape_type& in) const override {
    detail::require_rank(in, 3, "nn::adaptive_pool2d");
    return {in[0], out_h_, out_w_};
  }
  void forward_into(const tensor<Scalar>& x, tensor<Scalar>& y, bool training) override {
    detail::require_rank(x.shape(), 4, "nn::adaptive_pool2d");
    const index_type n = x.dim(0), c = x.dim(1), h = x.dim(2), w = x.dim(3);
    netmorph::detail::ensure_shape(y, {n, c, out_h_, out_w_});
    if (training) in_shape_ = x.shape();
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) \
    num_threads(int(netmorph::detail::max_threads())) if (n * c > 1)
#endif
    for (index_type p = 0; p < n * c; ++p) {
      const Scalar* xp = x.data() + p * h * w;
      Scalar* yp = y.data() + p * out_h_ * out_w_;
      for (index_type i = 0; i < out_h_; ++i) {
        const index_type y0 = begin(i, h, out_h_), y1 = end(i, h, out_h_);
        for (index_type j = 0; j < out_w_; ++j) {
          const index_type x0 = begin(j, w, out_w_), x1 = end(j, w, out_w_);
          double sum = 0;
          for (index_type r = y0; r < y1; ++r)
            for (index_type s = x0; s < x1; ++s)
              sum += xp[r * w + s];
          yp[i * out_w_ + j] = static_cast<Scalar>(sum / double((y1 - y0) * (x1 - x0)));
        }
      }
    }
  }
  void backward_into(const tensor<Scalar>& dy, tensor<Scalar>& dx) override {
    netmorph::detail::require<error>(
        in_shape_.size() == 4,
        "nn::adaptive_pool2d::backward: no cached input (call forward with training = true)");
    const shape_type want{in_shape_[0], in_shape_[1], out_h_, out_w_};
    netmorph::detail::require<shape_error>(
        dy.shape() == want, "nn::adaptive_pool2d::backward: gradient has shape ",
        netmorph::detail::shape_string(dy.shape()), ", the output has ",
        netmorph::detail::shape_string(want));
    netmorph::detail::ensure_shape(dx, in_shape_);
    const index_type h = in_shape_[2], w = in_shape_[3];
    // Bins of one plane may overlap each other, never another plane: planes are independent.
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) \
    num_threads(int(netmorph::detail::max_threads())) if (in_shape_[0] * in_shape_[1] > 1)
#endif
    for (index_type p = 0; p < in_shape_[0] * in_shape_[1]; ++p) {
      Scalar* dxp = dx.data() + p * h * w;
      const Scalar* dyp = dy.data() + p * out_h_ * out_w_;
      std::fill(dxp, dxp + h * w, Scalar(0));
      for (index_type i = 0; i < out_h_; ++i) {
        const index_type y0 = begin(i, h, out_h_), y1 = end(i, h, out_h_);
        for (index_type j = 0; j < out_w_; ++j) {
          const index_type x0 = begin(j, w, out_w_), x1 = end(j, w, out_w_);
          const Scalar g = dyp[i * out_w_ + j] / Scalar((y1 - y0) * (x1 - x0));
          for (index_type r = y0; r < y1; ++r)
            for (index_type s = x0; s < x1; ++s)
              dxp[r * w + s] += g;
        }
      }
    }
  }
  std::unique_ptr<layer<Scalar>> clone() const override {
    return std::make_unique<adaptive_pool2d>(*this);
  }

 private:
  static index_type begin(index_type i, index_type in, index_type out) {
    return i * in / out;
  }
  static index_type end(index_type i, index_type in, index_type out) {
    return ((i + 1) * in + out - 1) / out;
  }

  index_type out_h_, out_w_;
  shape_type in_shape_;
};

}  // namespace nn
}  // namespace netmorph

#endif  // NETMORPH_NN_LAYERS_ADAPTIVE_POOL2D_HPP
