#ifndef NETMORPH_NN_LAYERS_HPP
#define NETMORPH_NN_LAYERS_HPP

/// \file layers.hpp
/// Trainable layers of the network model (DESIGN §6 `nn`): forward, backward and parameters.
/// Activations are NCHW (or `(N, features)` for dense layers); every layer caches what its
/// backward pass needs during a forward pass.

#include <netmorph/activations.hpp>
#include <netmorph/detail/message.hpp>
#include <netmorph/error.hpp>
#include <netmorph/ops/batch_norm.hpp>
#include <netmorph/ops/conv2d.hpp>
#include <netmorph/ops/dense.hpp>
#include <netmorph/tensor.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace netmorph {
namespace nn {

/// A trainable tensor with its gradient and its SGD velocity (momentum buffer). The velocity
/// lives here so that morph operations can carry it over with the parameter.
template <typename Scalar>
struct parameter {
  std::string name;
  tensor<Scalar> value, grad, velocity;

  parameter() = default;
  parameter(std::string n, tensor<Scalar> v)
      : name(std::move(n)), value(std::move(v)), grad(value.shape()), velocity(value.shape()) {}
};

/// Base class of every layer. `forward` with `training = true` caches what `backward` needs;
/// `backward` takes dL/d(output), accumulates dL/d(parameters) into their `grad`, and returns
/// dL/d(input).
template <typename Scalar>
class layer {
 public:
  virtual ~layer() = default;
  /// Short type name ("conv2d", "relu", ...).
  virtual std::string kind() const = 0;
  /// Per-sample output shape for a per-sample input shape (no batch axis).
  virtual shape_type output_shape(const shape_type& in) const = 0;
  virtual tensor<Scalar> forward(const tensor<Scalar>& x, bool training) = 0;
  virtual tensor<Scalar> backward(const tensor<Scalar>& dy) = 0;
  /// `forward` into a caller-owned `y` whose storage is reused when its shape already matches
  /// (the model keeps one buffer per layer, so a training loop with stable shapes allocates
  /// nothing). In training mode the layer may keep a reference to `x` instead of a copy: the
  /// caller keeps `x` alive and unchanged until the matching `backward_into`, and `x` and `y` must
  /// be distinct objects.
  virtual void forward_into(const tensor<Scalar>& x, tensor<Scalar>& y, bool training) {
    y = forward(x, training);
  }
  /// `backward` into a caller-owned `dx` (storage reused as in `forward_into`; `dy` and `dx`
  /// distinct).
  virtual void backward_into(const tensor<Scalar>& dy, tensor<Scalar>& dx) { dx = backward(dy); }
  virtual std::vector<parameter<Scalar>*> parameters() { return {}; }
  virtual std::unique_ptr<layer> clone() const = 0;
  /// Called after every optimizer step (P-activations clamp `a` to [0, 1]).
  virtual void after_step() {}
  /// Layers that draw random numbers (dropout) use the model's generator.
  virtual void set_rng(std::mt19937_64*) {}
  /// Whether `backward` must return dL/d(input). A model clears it for its first layer, whose
  /// input is data: conv2d and dense then skip that product and return an empty tensor.
  void set_input_grad(bool needed) { input_grad_ = needed; }
  bool input_grad() const { return input_grad_; }

 private:
  bool input_grad_ = true;
};

namespace detail {

/// What a layer remembers of its input for the backward pass: either a reference to a tensor its
/// caller keeps alive (`refer`, the model's per-layer buffers) or its own copy (`keep`, the plain
/// `forward`). A copied layer always owns a copy, so it never points into another model.
template <typename Scalar>
class input_ref {
 public:
  input_ref() = default;
  input_ref(const input_ref& o) { *this = o; }
  input_ref& operator=(const input_ref& o) {
    if (this != &o) {
      own_ = o.ptr_ ? *o.ptr_ : tensor<Scalar>();
      ptr_ = o.ptr_ ? &own_ : nullptr;
    }
    return *this;
  }
  void refer(const tensor<Scalar>& x) { ptr_ = &x; }
  const tensor<Scalar>& keep(const tensor<Scalar>& x) {
    own_ = x;
    ptr_ = &own_;
    return own_;
  }
  /// The remembered input, or null before any training-mode forward pass.
  const tensor<Scalar>* get() const { return ptr_; }

 private:
  tensor<Scalar> own_;
  const tensor<Scalar>* ptr_ = nullptr;
};

inline void require_rank(const shape_type& s, std::size_t rank, const char* who) {
  netmorph::detail::require<shape_error>(s.size() == rank, who, ": expected a rank-", rank,
                                         " input, got shape ", netmorph::detail::shape_string(s));
}

}  // namespace detail

/// Convolution layer (stride, zero padding, optional bias); im2col + GEMM in both directions.
template <typename Scalar>
class conv2d : public layer<Scalar> {
 public:
  conv2d(tensor<Scalar> weight, tensor<Scalar> bias, conv2d_options p)
      : weight_("weight", std::move(weight)), options_(p), has_bias_(!bias.empty()) {
    netmorph::detail::check_conv2d_operands(
        tensor<Scalar>({0, weight_.value.rank() == 4 ? weight_.value.dim(1) : 0, 1, 1}),
        weight_.value, bias, "nn::conv2d");
    bias_ = parameter<Scalar>("bias",
                              has_bias_ ? std::move(bias) : tensor<Scalar>({weight_.value.dim(0)}));
  }

  /// He-initialised convolution `(out, in, k, k)` with zero bias and "same" padding for odd k.
  template <typename Rng>
  static conv2d he(index_type in, index_type out, index_type k, Rng& rng, index_type stride = 1) {
    return conv2d(
        tensor<Scalar>::random_normal({out, in, k, k}, rng, std::sqrt(2.0 / double(in * k * k))),
        tensor<Scalar>({out}), conv2d_options{stride, (k - 1) / 2});
  }

  std::string kind() const override { return "conv2d"; }
  shape_type output_shape(const shape_type& in) const override {
    detail::require_rank(in, 3, "nn::conv2d");
    netmorph::detail::require<shape_error>(in[0] == weight_.value.dim(1), "nn::conv2d: input has ",
                                           in[0], " channels, weight expects ",
                                           weight_.value.dim(1));
    return {weight_.value.dim(0),
            conv2d_output_size(in[1], weight_.value.dim(2), options_, "nn::conv2d"),
            conv2d_output_size(in[2], weight_.value.dim(3), options_, "nn::conv2d")};
  }

  tensor<Scalar> forward(const tensor<Scalar>& x, bool training) override {
    tensor<Scalar> y;
    forward_into(training ? x_.keep(x) : x, y, training);
    return y;
  }
  void forward_into(const tensor<Scalar>& x, tensor<Scalar>& y, bool training) override {
    netmorph::detail::check_conv2d_operands(x, weight_.value, bias_.value, "nn::conv2d");
    if (training) x_.refer(x);
    netmorph::detail::conv2d_forward(x, weight_.value, has_bias_ ? bias_.value.data() : nullptr,
                                     options_, y, ws_);
  }

  tensor<Scalar> backward(const tensor<Scalar>& dy) override {
    tensor<Scalar> dx;
    backward_into(dy, dx);
    return dx;
  }
  void backward_into(const tensor<Scalar>& dy, tensor<Scalar>& dx) override {
    const tensor<Scalar>* x = x_.get();
    netmorph::detail::require<error>(
        x != nullptr, "nn::conv2d::backward: no cached input (call forward with training = true)");
    const index_type c_out = weight_.value.dim(0), kh = weight_.value.dim(2),
                     kw = weight_.value.dim(3);
    const shape_type want{x->dim(0), c_out, conv2d_output_size(x->dim(2), kh, options_),
                          conv2d_output_size(x->dim(3), kw, options_)};
    netmorph::detail::require<shape_error>(
        dy.shape() == want, "nn::conv2d::backward: gradient has shape ",
        netmorph::detail::shape_string(dy.shape()), ", the output has ",
        netmorph::detail::shape_string(want));
    netmorph::detail::conv2d_backward_weight(*x, dy, kh, kw, options_, weight_.grad.data(),
                                             has_bias_ ? bias_.grad.data() : nullptr, ws_);
    if (!this->input_grad()) {
      dx = tensor<Scalar>();
      return;
    }
    netmorph::detail::conv2d_backward_input(dy, weight_.value, options_, x->dim(2), x->dim(3), dx,
                                            ws_);
  }

  std::vector<parameter<Scalar>*> parameters() override {
    if (has_bias_) return {&weight_, &bias_};
    return {&weight_};
  }
  std::unique_ptr<layer<Scalar>> clone() const override { return std::make_unique<conv2d>(*this); }

  /// The weights as a plain layer (for the morph functions).
  conv2d_weights<Scalar> weights() const {
    return conv2d_weights<Scalar>{weight_.value, has_bias_ ? bias_.value : tensor<Scalar>(),
                                  options_};
  }
  bool has_bias() const { return has_bias_; }
  parameter<Scalar>& weight() { return weight_; }
  parameter<Scalar>& bias() { return bias_; }
  const parameter<Scalar>& weight() const { return weight_; }
  const parameter<Scalar>& bias() const { return bias_; }
  const conv2d_options& options() const { return options_; }

 private:
  parameter<Scalar> weight_, bias_;
  conv2d_options options_;
  bool has_bias_;
  detail::input_ref<Scalar> x_;
  netmorph::detail::conv2d_workspace<Scalar> ws_;
};

/// Fully connected layer on `(N, in)`.
template <typename Scalar>
class dense : public layer<Scalar> {
 public:
  dense(tensor<Scalar> weight, tensor<Scalar> bias)
      : weight_("weight", std::move(weight)), has_bias_(!bias.empty()) {
    netmorph::detail::require<shape_error>(weight_.value.rank() == 2,
                                           "nn::dense: weight must be (out, in), got shape ",
                                           netmorph::detail::shape_string(weight_.value.shape()));
    netmorph::detail::require<shape_error>(
        bias.empty() || bias.shape() == shape_type{weight_.value.dim(0)},
        "nn::dense: bias must have shape (", weight_.value.dim(0), "), got ",
        netmorph::detail::shape_string(bias.shape()));
    bias_ = parameter<Scalar>("bias",
                              has_bias_ ? std::move(bias) : tensor<Scalar>({weight_.value.dim(0)}));
  }

  /// He-initialised `(out, in)` with zero bias.
  template <typename Rng>
  static dense he(index_type in, index_type out, Rng& rng) {
    return dense(tensor<Scalar>::random_normal({out, in}, rng, std::sqrt(2.0 / double(in))),
                 tensor<Scalar>({out}));
  }

  std::string kind() const override { return "dense"; }
  shape_type output_shape(const shape_type& in) const override {
    detail::require_rank(in, 1, "nn::dense");
    netmorph::detail::require<shape_error>(in[0] == weight_.value.dim(1), "nn::dense: input has ",
                                           in[0], " features, weight expects ",
                                           weight_.value.dim(1));
    return {weight_.value.dim(0)};
  }
  tensor<Scalar> forward(const tensor<Scalar>& x, bool training) override {
    tensor<Scalar> y;
    forward_into(training ? x_.keep(x) : x, y, training);
    return y;
  }
  void forward_into(const tensor<Scalar>& x, tensor<Scalar>& y, bool training) override {
    netmorph::detail::dense_into(x, weight_.value, has_bias_ ? bias_.value : tensor<Scalar>(), y,
                                 "nn::dense");
    if (training) x_.refer(x);
  }
  tensor<Scalar> backward(const tensor<Scalar>& dy) override {
    tensor<Scalar> dx;
    backward_into(dy, dx);
    return dx;
  }
  void backward_into(const tensor<Scalar>& dy, tensor<Scalar>& dx) override {
    const index_type out = weight_.value.dim(0), in = weight_.value.dim(1);
    const tensor<Scalar>* x = x_.get();
    netmorph::detail::require<error>(
        x != nullptr, "nn::dense::backward: no cached input (call forward with training = true)");
    const index_type n = x->dim(0);
    netmorph::detail::require<shape_error>(
        dy.shape() == shape_type{n, out}, "nn::dense::backward: gradient has shape ",
        netmorph::detail::shape_string(dy.shape()), ", the output has ",
        netmorph::detail::shape_string({n, out}));
    const auto dym = dy.matrix(n, out);
    weight_.grad.matrix(out, in).noalias() += dym.transpose() * x->matrix(n, in);
    if (has_bias_) bias_.grad.vector() += dym.colwise().sum().transpose();
    if (!this->input_grad()) {
      dx = tensor<Scalar>();
      return;
    }
    netmorph::detail::ensure_shape(dx, {n, in});
    dx.matrix(n, in).noalias() = dym * weight_.value.matrix(out, in);
  }
  std::vector<parameter<Scalar>*> parameters() override {
    if (has_bias_) return {&weight_, &bias_};
    return {&weight_};
  }
  std::unique_ptr<layer<Scalar>> clone() const override { return std::make_unique<dense>(*this); }

  dense_weights<Scalar> weights() const {
    return dense_weights<Scalar>{weight_.value, has_bias_ ? bias_.value : tensor<Scalar>()};
  }
  bool has_bias() const { return has_bias_; }
  parameter<Scalar>& weight() { return weight_; }
  parameter<Scalar>& bias() { return bias_; }

 private:
  parameter<Scalar> weight_, bias_;
  bool has_bias_;
  detail::input_ref<Scalar> x_;
};

/// Max or average pooling over `k x k` windows with stride `s` (no padding).
template <typename Scalar>
class pool2d : public layer<Scalar> {
 public:
  enum class mode { max, average };
  pool2d(mode m, index_type k, index_type stride) : mode_(m), k_(k), stride_(stride) {
    netmorph::detail::require<value_error>(k >= 1 && stride >= 1,
                                           "nn::pool2d: window and stride must be >= 1, got ", k,
                                           " and ", stride);
  }
  std::string kind() const override { return mode_ == mode::max ? "max_pool" : "avg_pool"; }
  index_type window() const { return k_; }
  index_type stride() const { return stride_; }
  mode pooling() const { return mode_; }
  shape_type output_shape(const shape_type& in) const override {
    detail::require_rank(in, 3, "nn::pool2d");
    const conv2d_options p{stride_, 0};
    return {in[0], conv2d_output_size(in[1], k_, p, "nn::pool2d"),
            conv2d_output_size(in[2], k_, p, "nn::pool2d")};
  }
  tensor<Scalar> forward(const tensor<Scalar>& x, bool training) override {
    tensor<Scalar> y;
    forward_into(x, y, training);
    return y;
  }
  void forward_into(const tensor<Scalar>& x, tensor<Scalar>& y, bool training) override {
    detail::require_rank(x.shape(), 4, "nn::pool2d");
    const shape_type os = output_shape({x.dim(1), x.dim(2), x.dim(3)});
    const index_type n = x.dim(0), c = x.dim(1), h = x.dim(2), w = x.dim(3), ho = os[1], wo = os[2];
    netmorph::detail::ensure_shape(y, {n, c, ho, wo});
    const bool keep_arg = training && mode_ == mode::max;
    netmorph::detail::require<shape_error>(
        !keep_arg || h * w <= std::numeric_limits<std::int32_t>::max(), "nn::pool2d: plane of ", h,
        " x ", w, " values is too large to index with 32 bits");
    if (training) {
      in_shape_ = x.shape();
      if (keep_arg) arg_.resize(static_cast<std::size_t>(y.size()));
    }
    const index_type k = k_, st = stride_;
    const bool max = mode_ == mode::max;
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (n * c > 1)
#endif
    for (index_type p = 0; p < n * c; ++p) {
      const Scalar* xp = x.data() + p * h * w;
      Scalar* yp = y.data() + p * ho * wo;
      std::int32_t* ap = keep_arg ? arg_.data() + p * ho * wo : nullptr;
      for (index_type oy = 0; oy < ho; ++oy)
        for (index_type ox = 0; ox < wo; ++ox) {
          const index_type o = oy * wo + ox, corner = oy * st * w + ox * st;
          if (max) {
            index_type best = corner;
            Scalar v = xp[best];
            for (index_type ky = 0; ky < k; ++ky)
              for (index_type kx = 0; kx < k; ++kx) {
                const index_type i = corner + ky * w + kx;
                if (xp[i] > v) {
                  v = xp[i];
                  best = i;
                }
              }
            yp[o] = v;
            if (ap) ap[o] = static_cast<std::int32_t>(best);
          } else {
            double sum = 0;
            for (index_type ky = 0; ky < k; ++ky)
              for (index_type kx = 0; kx < k; ++kx)
                sum += xp[corner + ky * w + kx];
            yp[o] = static_cast<Scalar>(sum / double(k * k));
          }
        }
    }
  }
  tensor<Scalar> backward(const tensor<Scalar>& dy) override {
    tensor<Scalar> dx;
    backward_into(dy, dx);
    return dx;
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
        mode_ != mode::max || arg_.size() == static_cast<std::size_t>(dy.size()),
        "nn::pool2d::backward: no cached input (call forward with training = true)");
    netmorph::detail::ensure_shape(dx, in_shape_);
    const index_type h = in_shape_[2], w = in_shape_[3], ho = os[1], wo = os[2], k = k_,
                     st = stride_;
    const bool max = mode_ == mode::max;
    const Scalar inv = Scalar(1) / Scalar(k * k);
    // Every window lies inside its own plane, so planes are independent.
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (in_shape_[0] * in_shape_[1] > 1)
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
      for (index_type oy = 0; oy < ho; ++oy)
        for (index_type ox = 0; ox < wo; ++ox) {
          const Scalar g = dyp[oy * wo + ox] * inv;
          for (index_type ky = 0; ky < k; ++ky)
            for (index_type kx = 0; kx < k; ++kx)
              dxp[(oy * st + ky) * w + ox * st + kx] += g;
        }
    }
  }
  std::unique_ptr<layer<Scalar>> clone() const override {
    return std::make_unique<pool2d>(*this);
  }

 private:
  mode mode_;
  index_type k_, stride_;
  shape_type in_shape_;
  std::vector<std::int32_t> arg_;  ///< arg-max of each window, as an offset in its plane
};

/// `(N, C, H, W) -> (N, C*H*W)` in NCHW order.
template <typename Scalar>
class flatten : public layer<Scalar> {
 public:
  std::string kind() const override { return "flatten"; }
  shape_type output_shape(const shape_type& in) const override {
    index_type n = 1;
    for (index_type e : in)
      n *= e;
    return {n};
  }
  tensor<Scalar> forward(const tensor<Scalar>& x, bool training) override {
    if (training) in_shape_ = x.shape();
    const index_type n = x.dim(0);
    return x.reshape({n, n ? x.size() / n : 0});
  }
  tensor<Scalar> backward(const tensor<Scalar>& dy) override {
    tensor<Scalar> dx;
    backward_into(dy, dx);
    return dx;
  }
  void forward_into(const tensor<Scalar>& x, tensor<Scalar>& y, bool training) override {
    if (training) in_shape_ = x.shape();
    const index_type n = x.dim(0);
    netmorph::detail::ensure_shape(y, {n, n ? x.size() / n : 0});
    std::copy(x.begin(), x.end(), y.begin());
  }
  void backward_into(const tensor<Scalar>& dy, tensor<Scalar>& dx) override {
    index_type size = in_shape_.empty() ? 0 : 1;
    for (index_type e : in_shape_)
      size *= e;
    netmorph::detail::require<shape_error>(
        !in_shape_.empty() && dy.size() == size, "nn::flatten::backward: gradient has shape ",
        netmorph::detail::shape_string(dy.shape()), ", the input has ",
        netmorph::detail::shape_string(in_shape_));
    netmorph::detail::ensure_shape(dx, in_shape_);
    std::copy(dy.begin(), dy.end(), dx.begin());
  }
  std::unique_ptr<layer<Scalar>> clone() const override { return std::make_unique<flatten>(*this); }

 private:
  shape_type in_shape_;
};

/// Batch normalisation over the channel axis of `(N, C, ...)`. Training mode normalises with
/// the batch statistics and updates the running ones (`momentum` 0.1, unbiased variance, as
/// PyTorch); inference mode uses the running statistics.
template <typename Scalar>
class batch_norm : public layer<Scalar> {
 public:
  explicit batch_norm(batch_norm_weights<Scalar> bn, double momentum = 0.1)
      : gamma_("gamma", bn.gamma),
        beta_("beta", bn.beta),
        mean_(bn.running_mean),
        var_(bn.running_var),
        eps_(bn.eps),
        momentum_(momentum) {
    netmorph::detail::check_batch_norm(bn, -1, "nn::batch_norm");
  }
  std::string kind() const override { return "batch_norm"; }
  shape_type output_shape(const shape_type& in) const override {
    netmorph::detail::require<shape_error>(!in.empty() && in[0] == gamma_.value.size(),
                                           "nn::batch_norm: input has ", in.empty() ? 0 : in[0],
                                           " channels, expected ", gamma_.value.size());
    return in;
  }
  tensor<Scalar> forward(const tensor<Scalar>& x, bool training) override {
    const index_type n = x.dim(0), c = x.dim(1), inner = x.size() / std::max<index_type>(1, n * c);
    netmorph::detail::require<shape_error>(c == gamma_.value.size(), "nn::batch_norm: input has ",
                                           c, " channels, expected ", gamma_.value.size());
    tensor<Scalar> y(x.shape());
    training_ = training;
    if (training) {
      xhat_ = tensor<Scalar>(x.shape());
      inv_std_.assign(static_cast<std::size_t>(c), 0.0);
    }
    const double m = double(n * inner);
    for (index_type ch = 0; ch < c; ++ch) {
      double mu, var;
      if (training) {
        double s = 0, ss = 0;
        for (index_type sidx = 0; sidx < n; ++sidx)
          for (index_type i = 0; i < inner; ++i)
            s += x.data()[(sidx * c + ch) * inner + i];
        mu = s / m;
        for (index_type sidx = 0; sidx < n; ++sidx)
          for (index_type i = 0; i < inner; ++i) {
            const double d = x.data()[(sidx * c + ch) * inner + i] - mu;
            ss += d * d;
          }
        var = ss / m;
        mean_(ch) = static_cast<Scalar>((1 - momentum_) * mean_(ch) + momentum_ * mu);
        var_(ch) = static_cast<Scalar>((1 - momentum_) * var_(ch) +
                                       momentum_ * (m > 1 ? ss / (m - 1) : var));
      } else {
        mu = mean_(ch);
        var = var_(ch);
      }
      const double inv = 1.0 / std::sqrt(var + eps_);
      if (training) inv_std_[static_cast<std::size_t>(ch)] = inv;
      for (index_type sidx = 0; sidx < n; ++sidx)
        for (index_type i = 0; i < inner; ++i) {
          const index_type o = (sidx * c + ch) * inner + i;
          const double xh = (x.data()[o] - mu) * inv;
          if (training) xhat_.data()[o] = static_cast<Scalar>(xh);
          y.data()[o] = static_cast<Scalar>(gamma_.value(ch) * xh + beta_.value(ch));
        }
    }
    return y;
  }
  tensor<Scalar> backward(const tensor<Scalar>& dy) override {
    netmorph::detail::require<error>(
        xhat_.shape() == dy.shape(),
        "nn::batch_norm::backward: no cached input (call forward with training = true)");
    const index_type n = dy.dim(0), c = dy.dim(1),
                     inner = dy.size() / std::max<index_type>(1, n * c);
    const double m = double(n * inner);
    tensor<Scalar> dx(dy.shape());
    for (index_type ch = 0; ch < c; ++ch) {
      double sdy = 0, sdyx = 0;
      for (index_type sidx = 0; sidx < n; ++sidx)
        for (index_type i = 0; i < inner; ++i) {
          const index_type o = (sidx * c + ch) * inner + i;
          sdy += dy.data()[o];
          sdyx += double(dy.data()[o]) * xhat_.data()[o];
        }
      gamma_.grad(ch) += static_cast<Scalar>(sdyx);
      beta_.grad(ch) += static_cast<Scalar>(sdy);
      const double g = gamma_.value(ch) * inv_std_[static_cast<std::size_t>(ch)];
      for (index_type sidx = 0; sidx < n; ++sidx)
        for (index_type i = 0; i < inner; ++i) {
          const index_type o = (sidx * c + ch) * inner + i;
          dx.data()[o] =
              static_cast<Scalar>(g * (dy.data()[o] - sdy / m - xhat_.data()[o] * sdyx / m));
        }
    }
    return dx;
  }
  std::vector<parameter<Scalar>*> parameters() override { return {&gamma_, &beta_}; }
  std::unique_ptr<layer<Scalar>> clone() const override {
    return std::make_unique<batch_norm>(*this);
  }

  batch_norm_weights<Scalar> weights() const {
    return batch_norm_weights<Scalar>{gamma_.value, beta_.value, mean_, var_, eps_};
  }
  parameter<Scalar>& gamma() { return gamma_; }
  parameter<Scalar>& beta() { return beta_; }
  tensor<Scalar>& running_mean() { return mean_; }
  tensor<Scalar>& running_var() { return var_; }
  double momentum() const { return momentum_; }

 private:
  parameter<Scalar> gamma_, beta_;
  tensor<Scalar> mean_, var_;
  double eps_, momentum_;
  bool training_ = false;
  tensor<Scalar> xhat_;
  std::vector<double> inv_std_;
};

/// Inverted dropout: in training, zero each value with probability `p` and scale the rest by
/// `1/(1-p)`; the identity in inference.
template <typename Scalar>
class dropout : public layer<Scalar> {
 public:
  explicit dropout(double p) : p_(p) {
    netmorph::detail::require<value_error>(p >= 0 && p < 1,
                                           "nn::dropout: p must be in [0, 1), got ", p);
  }
  std::string kind() const override { return "dropout"; }
  double rate() const { return p_; }
  shape_type output_shape(const shape_type& in) const override { return in; }
  tensor<Scalar> forward(const tensor<Scalar>& x, bool training) override {
    if (!training) return x;  // what the backward pass needs stays as the training pass left it
    if (p_ == 0) {
      mask_ = tensor<Scalar>();
      return x;
    }
    netmorph::detail::require<error>(rng_ != nullptr,
                                     "nn::dropout: no random generator (add it to a model)");
    mask_ = tensor<Scalar>(x.shape());
    std::bernoulli_distribution keep(1 - p_);
    const Scalar scale = static_cast<Scalar>(1.0 / (1.0 - p_));
    tensor<Scalar> y = x;
    for (index_type i = 0; i < x.size(); ++i) {
      mask_.data()[i] = keep(*rng_) ? scale : Scalar(0);
      y.data()[i] *= mask_.data()[i];
    }
    return y;
  }
  tensor<Scalar> backward(const tensor<Scalar>& dy) override {
    if (mask_.empty()) return dy;
    tensor<Scalar> dx = dy;
    for (index_type i = 0; i < dx.size(); ++i)
      dx.data()[i] *= mask_.data()[i];
    return dx;
  }
  std::unique_ptr<layer<Scalar>> clone() const override { return std::make_unique<dropout>(*this); }
  void set_rng(std::mt19937_64* rng) override { rng_ = rng; }

 private:
  double p_;
  std::mt19937_64* rng_ = nullptr;
  tensor<Scalar> mask_;
};

/// An elementwise activation `phi`.
template <typename Scalar>
class activation : public layer<Scalar> {
 public:
  explicit activation(activation_fn phi) : phi_(phi) {}
  std::string kind() const override { return to_string(phi_.kind); }
  const activation_fn& fn() const { return phi_; }
  shape_type output_shape(const shape_type& in) const override { return in; }
  tensor<Scalar> forward(const tensor<Scalar>& x, bool training) override {
    tensor<Scalar> y;
    forward_into(training ? x_.keep(x) : x, y, training);
    return y;
  }
  void forward_into(const tensor<Scalar>& x, tensor<Scalar>& y, bool training) override {
    if (training) x_.refer(x);
    netmorph::detail::ensure_shape(y, x.shape());
    const Scalar* xs = x.data();
    Scalar* ys = y.data();
    const activation_fn phi = phi_;
    netmorph::detail::for_chunks(x.size(), chunk, [&](index_type lo, index_type len) {
      if (phi.kind == activation_kind::relu) {  // vectorised fast path of the common case
        Eigen::Map<vector>(ys + lo, len) =
            Eigen::Map<const vector>(xs + lo, len).cwiseMax(Scalar(0));
        return;
      }
      for (index_type i = lo; i < lo + len; ++i)
        ys[i] = static_cast<Scalar>(phi.value(xs[i]));
    });
  }
  tensor<Scalar> backward(const tensor<Scalar>& dy) override {
    tensor<Scalar> dx;
    backward_into(dy, dx);
    return dx;
  }
  void backward_into(const tensor<Scalar>& dy, tensor<Scalar>& dx) override {
    const tensor<Scalar>* x = x_.get();
    netmorph::detail::require<error>(
        x != nullptr && x->shape() == dy.shape(),
        "nn::activation::backward: no cached input (call forward with training = true)");
    netmorph::detail::ensure_shape(dx, dy.shape());
    const Scalar *xs = x->data(), *gs = dy.data();
    Scalar* ds = dx.data();
    const activation_fn phi = phi_;
    netmorph::detail::for_chunks(dy.size(), chunk, [&](index_type lo, index_type len) {
      if (phi.kind == activation_kind::relu) {
        Eigen::Map<vector>(ds + lo, len) =
            (Eigen::Map<const vector>(xs + lo, len).array() > Scalar(0))
                .select(Eigen::Map<const vector>(gs + lo, len), Scalar(0));
        return;
      }
      for (index_type i = lo; i < lo + len; ++i)
        ds[i] = static_cast<Scalar>(gs[i] * phi.derivative(xs[i]));
    });
  }
  std::unique_ptr<layer<Scalar>> clone() const override {
    return std::make_unique<activation>(*this);
  }

 private:
  using vector = typename tensor<Scalar>::vector_type;
  static constexpr index_type chunk = 1 << 14;
  activation_fn phi_;
  detail::input_ref<Scalar> x_;
};

/// The parametric activation \f$ (1-a)\phi(x) + a x \f$ with a learned scalar `a`, clamped to
/// [0, 1] after every optimizer step. Inserted by depth morphs at `a = 1` (the identity).
template <typename Scalar>
class p_activation : public layer<Scalar> {
 public:
  explicit p_activation(p_activation_fn p)
      : phi_(make_p_activation(p.phi, p.a).phi),
        a_("a", tensor<Scalar>({1}, static_cast<Scalar>(p.a))) {}
  std::string kind() const override { return std::string("p_") + to_string(phi_.kind); }
  p_activation_fn fn() const { return p_activation_fn{phi_, double(a_.value(0))}; }
  parameter<Scalar>& a() { return a_; }
  shape_type output_shape(const shape_type& in) const override { return in; }
  tensor<Scalar> forward(const tensor<Scalar>& x, bool training) override {
    if (training) x_ = x;
    return apply(fn(), x);
  }
  tensor<Scalar> backward(const tensor<Scalar>& dy) override {
    netmorph::detail::require<error>(
        x_.shape() == dy.shape(),
        "nn::p_activation::backward: no cached input (call forward with training = true)");
    const p_activation_fn p = fn();
    tensor<Scalar> dx = dy;
    double da = 0;
    for (index_type i = 0; i < dx.size(); ++i) {
      const double xi = x_.data()[i];
      da += double(dy.data()[i]) * p.da(xi);
      dx.data()[i] = static_cast<Scalar>(dy.data()[i] * p.dx(xi));
    }
    a_.grad(0) += static_cast<Scalar>(da);
    return dx;
  }
  std::vector<parameter<Scalar>*> parameters() override { return {&a_}; }
  void after_step() override {
    a_.value(0) = std::min(Scalar(1), std::max(Scalar(0), a_.value(0)));
  }
  std::unique_ptr<layer<Scalar>> clone() const override {
    return std::make_unique<p_activation>(*this);
  }

 private:
  activation_fn phi_;
  parameter<Scalar> a_;
  tensor<Scalar> x_;
};

}  // namespace nn
}  // namespace netmorph

#endif  // NETMORPH_NN_LAYERS_HPP
