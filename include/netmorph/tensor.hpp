#ifndef NETMORPH_TENSOR_HPP
#define NETMORPH_TENSOR_HPP

/// \file tensor.hpp
/// `netmorph::tensor<Scalar>`: an owning, contiguous, row-major (C order, like numpy and
/// PyTorch) n-d array with zero-copy Eigen views.

#include <netmorph/detail/message.hpp>
#include <netmorph/error.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <new>
#include <random>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace netmorph {

/// Signed index type used for every size and index in netmorph (as Eigen::Index).
using index_type = std::ptrdiff_t;
/// A tensor shape, outermost dimension first.
using shape_type = std::vector<index_type>;

/// The largest number of elements a tensor may hold: 2^34 (128 GiB of doubles). A shape beyond
/// it (or one whose element count overflows `index_type`) is refused with `value_error` before
/// anything is allocated, so an absurd request fails with a message instead of `std::bad_alloc`.
inline constexpr index_type max_tensor_elements = index_type(1) << 34;

namespace detail {

/// A testing hook for the strong exception guarantee: when set to `k >= 0`, the `k`-th tensor
/// allocation of this thread from now on (0: the next one) throws `std::bad_alloc` as if memory
/// had run out, and the hook disarms itself; -1 (the default) never fails. Tests sweep `k` over
/// every allocation of an operation and check that each failure leaves its inputs as they were.
/// Only the calling thread counts: allocations of OpenMP worker threads never fail on cue (an
/// injected failure on the calling thread inside a region is carried out of it, see
/// `detail::exception_trap`).
inline thread_local std::int64_t allocation_failure_countdown = -1;

/// Counts one allocation against `allocation_failure_countdown`. \throws std::bad_alloc when it
/// runs out.
inline void count_allocation() {
  if (allocation_failure_countdown >= 0 && allocation_failure_countdown-- == 0)
    throw std::bad_alloc();
}

/// The allocator of tensor storage: zero-filled memory from `std::calloc`. The C library takes a
/// large block straight from the kernel as zero pages, so a zero tensor costs neither a clearing
/// pass nor a page until it is written (a loaded model's gradients and velocities are never
/// touched before training). Value-initialising an element is therefore a no-op; `tensor` only
/// ever value-initialises freshly allocated storage (it never shrinks and regrows a buffer).
template <typename T>
struct zeroed_allocator {
  using value_type = T;
  zeroed_allocator() = default;
  template <typename U>
  zeroed_allocator(const zeroed_allocator<U>&) noexcept {}
  T* allocate(std::size_t n) {
    if (n > std::numeric_limits<std::size_t>::max() / sizeof(T)) throw std::bad_array_new_length();
    count_allocation();
    void* p = std::calloc(n == 0 ? 1 : n, sizeof(T));
    if (!p) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, std::size_t) noexcept { std::free(p); }
  /// Value-initialisation of an IEEE 754 scalar: the bytes are already zero. Any other type
  /// (a rebound allocator's) is constructed as usual.
  template <typename U>
  void construct(U* p) {
    if constexpr (!(std::is_floating_point<U>::value && std::numeric_limits<U>::is_iec559))
      ::new (static_cast<void*>(p)) U();
  }
  template <typename U, typename... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};
template <typename T, typename U>
bool operator==(const zeroed_allocator<T>&, const zeroed_allocator<U>&) noexcept {
  return true;
}
template <typename T, typename U>
bool operator!=(const zeroed_allocator<T>&, const zeroed_allocator<U>&) noexcept {
  return false;
}

/// The index of the first non-finite value of `p[0, n)`, or -1. A value is non-finite when its
/// exponent bits are all set (IEEE 754); blocks of 4096 are tested with a branch-free loop the
/// compiler vectorises, and only a failing block is searched element by element.
template <typename Scalar>
index_type first_non_finite(const Scalar* p, index_type n) {
  static_assert(std::numeric_limits<Scalar>::is_iec559, "first_non_finite assumes IEEE 754");
  using bits = std::conditional_t<sizeof(Scalar) == 4, std::uint32_t, std::uint64_t>;
  static_assert(sizeof(bits) == sizeof(Scalar), "float or double");
  constexpr bits exponent = sizeof(Scalar) == 4 ? bits(0x7f800000u) : bits(0x7ff0000000000000ull);
  const index_type block = 4096;
  for (index_type b = 0; b < n; b += block) {
    const index_type e = std::min(n, b + block);
    bits bad = 0;
    for (index_type i = b; i < e; ++i) {
      bits u;
      std::memcpy(&u, p + i, sizeof u);
      bad |= bits((u & exponent) == exponent);
    }
    if (bad)
      for (index_type i = b; i < e; ++i) {
        bits u;
        std::memcpy(&u, p + i, sizeof u);
        if ((u & exponent) == exponent) return i;
      }
  }
  return -1;
}

/// The element count of `shape` in double (no overflow; exact below 2^53).
inline double element_count(const shape_type& shape) {
  double n = shape.empty() ? 0.0 : 1.0;
  for (index_type e : shape)
    n *= double(e);
  return n;
}

/// Formats a byte count as "2.4e+14 bytes".
inline std::string bytes_string(double bytes) {
  std::ostringstream os;
  netmorph::detail::throwing(os);
  os.precision(2);
  os << bytes << " bytes";
  return os.str();
}

/// Throws `value_error` "who: what of shape (...) needs N bytes" when a tensor of `shape` with
/// `bytes_per_element` bytes a value would exceed `max_tensor_elements`. Morphs call it on the
/// tensors they are about to create, before any allocation.
inline void require_allocatable(const char* who, const std::string& what, const shape_type& shape,
                                std::size_t bytes_per_element) {
  const double n = element_count(shape);
  require<value_error>(n <= double(max_tensor_elements), who, ": ", what, " of shape ",
                       shape_string(shape), " needs ", bytes_string(n * double(bytes_per_element)),
                       ", beyond the limit of ", double(max_tensor_elements),
                       " elements a tensor may hold");
}

}  // namespace detail

/// Owning n-d array of `Scalar` in row-major order.
///
/// The strides are those of a C-contiguous array: `stride(d) = prod(shape[d+1:])`. Element access
/// with `at()` is bounds-checked and throws `shape_error`; `operator()` is unchecked.
/// `matrix(rows, cols)` and `vector()` are zero-copy `Eigen::Map` views of the storage.
template <typename Scalar>
class tensor {
  static_assert(std::is_floating_point<Scalar>::value,
                "netmorph::tensor holds floating-point scalars (float or double).");

 public:
  using scalar_type = Scalar;
  using matrix_type = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using vector_type = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
  using matrix_map = Eigen::Map<matrix_type>;
  using const_matrix_map = Eigen::Map<const matrix_type>;
  using vector_map = Eigen::Map<vector_type>;
  using const_vector_map = Eigen::Map<const vector_type>;

  /// An empty tensor: rank 0, size 0. Used for "no bias".
  tensor() = default;

  /// A zero-filled tensor of the given shape. Throws `shape_error` on a negative extent and
  /// `value_error` (naming the shape) when it has more than `max_tensor_elements` elements.
  explicit tensor(shape_type shape) : shape_(std::move(shape)) {
    data_.resize(static_cast<std::size_t>(checked_size(shape_, "tensor")));
    compute_strides();
  }

  /// A tensor of the given shape filled with `value`.
  tensor(shape_type shape, Scalar value) : tensor(std::move(shape)) {
    std::fill(data_.begin(), data_.end(), value);
  }

  /// A tensor of the given shape holding `values` in row-major order.
  /// Throws `shape_error` when the number of values differs from the shape's size.
  tensor(shape_type shape, const std::vector<Scalar>& values) : shape_(std::move(shape)) {
    const index_type n = checked_size(shape_, "tensor");
    detail::require<shape_error>(static_cast<index_type>(values.size()) == n, "tensor: shape ",
                                 detail::shape_string(shape_), " holds ", n, " values, got ",
                                 values.size());
    data_.assign(values.begin(), values.end());
    compute_strides();
  }

  /// Zeros of the given shape.
  static tensor zeros(shape_type shape) { return tensor(std::move(shape)); }

  /// Independent N(0, stddev^2) draws.
  template <typename Rng>
  static tensor random_normal(shape_type shape, Rng& rng, double stddev = 1.0) {
    tensor t(std::move(shape));
    std::normal_distribution<double> dist(0.0, stddev);
    for (auto& v : t.data_)
      v = static_cast<Scalar>(dist(rng));
    return t;
  }

  /// Independent U(lo, hi) draws.
  template <typename Rng>
  static tensor random_uniform(shape_type shape, Rng& rng, double lo = -1.0, double hi = 1.0) {
    tensor t(std::move(shape));
    std::uniform_real_distribution<double> dist(lo, hi);
    for (auto& v : t.data_)
      v = static_cast<Scalar>(dist(rng));
    return t;
  }

  index_type rank() const { return static_cast<index_type>(shape_.size()); }
  index_type size() const { return static_cast<index_type>(data_.size()); }
  bool empty() const { return data_.empty(); }
  const shape_type& shape() const { return shape_; }
  const shape_type& strides() const { return strides_; }

  /// Extent of dimension `d`; negative `d` counts from the back. Throws `shape_error`.
  index_type dim(index_type d) const {
    const index_type r = rank();
    const index_type k = d < 0 ? d + r : d;
    detail::require<shape_error>(k >= 0 && k < r, "tensor::dim: dimension ", d,
                                 " out of range for a rank-", r, " tensor");
    return shape_[static_cast<std::size_t>(k)];
  }

  Scalar* data() { return data_.data(); }
  const Scalar* data() const { return data_.data(); }
  Scalar* begin() { return data_.data(); }
  Scalar* end() { return data_.data() + data_.size(); }
  const Scalar* begin() const { return data_.data(); }
  const Scalar* end() const { return data_.data() + data_.size(); }

  /// Unchecked element access; the caller guarantees rank and bounds.
  template <typename... Idx>
  Scalar& operator()(Idx... idx) {
    return data_[static_cast<std::size_t>(offset_unchecked(idx...))];
  }
  template <typename... Idx>
  const Scalar& operator()(Idx... idx) const {
    return data_[static_cast<std::size_t>(offset_unchecked(idx...))];
  }

  /// Bounds-checked element access. Throws `shape_error` naming the index and the shape.
  template <typename... Idx>
  Scalar& at(Idx... idx) {
    return data_[static_cast<std::size_t>(offset_checked({static_cast<index_type>(idx)...}))];
  }
  template <typename... Idx>
  const Scalar& at(Idx... idx) const {
    return data_[static_cast<std::size_t>(offset_checked({static_cast<index_type>(idx)...}))];
  }

  /// Row-major view of the storage as a `rows x cols` matrix. Throws `shape_error` unless
  /// `rows * cols == size()`.
  matrix_map matrix(index_type rows, index_type cols) {
    check_matrix(rows, cols);
    return matrix_map(data_.data(), rows, cols);
  }
  const_matrix_map matrix(index_type rows, index_type cols) const {
    check_matrix(rows, cols);
    return const_matrix_map(data_.data(), rows, cols);
  }
  /// View as `shape[0] x (size / shape[0])`: rows are the outermost index (e.g. OIHW -> O x IHW).
  matrix_map matrix() { return matrix(leading(), trailing()); }
  const_matrix_map matrix() const { return matrix(leading(), trailing()); }

  /// View of the storage as one column vector.
  vector_map vector() { return vector_map(data_.data(), size()); }
  const_vector_map vector() const { return const_vector_map(data_.data(), size()); }

  /// Same data, new shape (a copy; use the rvalue overload to move). Throws `shape_error` unless
  /// the sizes agree.
  tensor reshape(shape_type new_shape) const& {
    tensor t(*this);
    t.reshape_in_place(std::move(new_shape));
    return t;
  }
  tensor reshape(shape_type new_shape) && {
    reshape_in_place(std::move(new_shape));
    return std::move(*this);
  }

  /// Element-wise conversion to another scalar type.
  template <typename Other>
  tensor<Other> cast() const {
    tensor<Other> out(shape_);
    std::copy(data_.begin(), data_.end(), out.data());
    return out;
  }

  /// Exact equality of shape and values.
  friend bool operator==(const tensor& a, const tensor& b) {
    return a.shape_ == b.shape_ && a.data_ == b.data_;
  }
  friend bool operator!=(const tensor& a, const tensor& b) { return !(a == b); }

 private:
  static index_type checked_size(const shape_type& shape, const char* who) {
    for (index_type e : shape)
      detail::require<shape_error>(e >= 0, who, ": negative extent in shape ",
                                   detail::shape_string(shape));
    const double count = detail::element_count(shape);
    detail::require<value_error>(
        count <= double(max_tensor_elements), who, ": shape ", detail::shape_string(shape), " has ",
        count, " elements, more than max_tensor_elements = ", max_tensor_elements);
    // The strides are products of the extents: they must not overflow even when a zero extent
    // makes the element count small ((0, 2^34, 2^34) would).
    double nonzero = 1;
    for (index_type e : shape)
      if (e != 0) nonzero *= double(e);
    detail::require<value_error>(nonzero < 0x1p62, who, ": shape ", detail::shape_string(shape),
                                 " has extents whose product overflows its strides");
    index_type n = 1;
    for (index_type e : shape)
      n *= e;
    return shape.empty() ? 0 : n;
  }

  void compute_strides() {
    strides_.assign(shape_.size(), 1);
    for (std::size_t d = shape_.size(); d-- > 1;)
      strides_[d - 1] = strides_[d] * shape_[d];
  }

  void reshape_in_place(shape_type new_shape) {
    const index_type n = checked_size(new_shape, "tensor::reshape");
    detail::require<shape_error>(n == size(), "tensor::reshape: cannot view ",
                                 detail::shape_string(shape_), " (", size(), " values) as ",
                                 detail::shape_string(new_shape), " (", n, " values)");
    shape_ = std::move(new_shape);
    compute_strides();
  }

  index_type leading() const { return rank() == 0 ? 0 : shape_[0]; }
  index_type trailing() const { return leading() == 0 ? 0 : size() / leading(); }

  void check_matrix(index_type rows, index_type cols) const {
    detail::require<shape_error>(rows >= 0 && cols >= 0 && rows * cols == size(),
                                 "tensor::matrix: cannot view ", detail::shape_string(shape_), " (",
                                 size(), " values) as a ", rows, " x ", cols, " matrix");
  }

  template <typename... Idx>
  index_type offset_unchecked(Idx... idx) const {
    const index_type ids[] = {static_cast<index_type>(idx)...};
    index_type off = 0;
    for (std::size_t d = 0; d < sizeof...(Idx); ++d)
      off += ids[d] * strides_[d];
    return off;
  }

  index_type offset_checked(std::initializer_list<index_type> idx) const {
    const bool rank_ok = static_cast<index_type>(idx.size()) == rank();
    bool in_range = rank_ok;
    index_type off = 0;
    std::size_t d = 0;
    for (index_type i : idx) {
      if (!rank_ok) break;
      if (i < 0 || i >= shape_[d]) in_range = false;
      off += i * strides_[d];
      ++d;
    }
    if (!in_range) {
      throw shape_error(detail::cat("tensor::at: index ",
                                    detail::shape_string(shape_type(idx.begin(), idx.end())),
                                    " out of range for shape ", detail::shape_string(shape_)));
    }
    return off;
  }

  shape_type shape_;
  shape_type strides_;
  // Zero-initialised by the allocator, not by the vector: only ever `resize`d while empty
  // (never shrunk and regrown, never `emplace_back`ed), or stale values would show through.
  std::vector<Scalar, detail::zeroed_allocator<Scalar>> data_;
};

namespace detail {

/// Gives `t` the shape `s`, keeping its storage (and stale values) when the shape already matches,
/// so buffers reused across calls are not reallocated or cleared.
template <typename Scalar>
void ensure_shape(tensor<Scalar>& t, const shape_type& s) {
  if (t.shape() != s) t = tensor<Scalar>(s);
}

}  // namespace detail

/// \f$ \|a-b\|_2 / \max(\|b\|_2, \text{tiny}) \f$, accumulated in double. Throws `shape_error`
/// when the shapes differ.
template <typename Scalar>
double relative_error(const tensor<Scalar>& a, const tensor<Scalar>& b) {
  detail::require<shape_error>(a.shape() == b.shape(), "relative_error: shapes ",
                               detail::shape_string(a.shape()), " and ",
                               detail::shape_string(b.shape()), " differ");
  double num = 0, den = 0;
  for (index_type i = 0; i < a.size(); ++i) {
    const double d = double(a.data()[i]) - double(b.data()[i]);
    num += d * d;
    den += double(b.data()[i]) * double(b.data()[i]);
  }
  if (den == 0) return std::sqrt(num);
  return std::sqrt(num / den);
}

/// \f$ \max_i |a_i - b_i| \f$. Throws `shape_error` when the shapes differ.
template <typename Scalar>
double max_abs_error(const tensor<Scalar>& a, const tensor<Scalar>& b) {
  detail::require<shape_error>(a.shape() == b.shape(), "max_abs_error: shapes ",
                               detail::shape_string(a.shape()), " and ",
                               detail::shape_string(b.shape()), " differ");
  double m = 0;
  for (index_type i = 0; i < a.size(); ++i)
    m = std::max(m, std::abs(double(a.data()[i]) - double(b.data()[i])));
  return m;
}

/// True when the shapes agree and \f$ |a_i - b_i| \le atol + rtol |b_i| \f$ for every element
/// (numpy's `allclose`). NaN never compares close.
template <typename Scalar>
bool all_close(const tensor<Scalar>& a, const tensor<Scalar>& b, double rtol, double atol = 0.0) {
  if (a.shape() != b.shape()) return false;
  for (index_type i = 0; i < a.size(); ++i) {
    const double x = a.data()[i], y = b.data()[i];
    if (!(std::abs(x - y) <= atol + rtol * std::abs(y))) return false;
  }
  return true;
}

/// Fraction of elements that are exactly non-zero (0 for an empty tensor).
template <typename Scalar>
double nonzero_fraction(const tensor<Scalar>& t) {
  if (t.size() == 0) return 0.0;
  index_type nz = 0;
  for (Scalar v : t)
    nz += (v != Scalar(0));
  return double(nz) / double(t.size());
}

/// Population standard deviation of all elements, in double (0 for an empty tensor).
template <typename Scalar>
double stddev(const tensor<Scalar>& t) {
  if (t.size() == 0) return 0.0;
  double mean = 0;
  for (Scalar v : t)
    mean += v;
  mean /= double(t.size());
  double ss = 0;
  for (Scalar v : t)
    ss += (double(v) - mean) * (double(v) - mean);
  return std::sqrt(ss / double(t.size()));
}

/// Throws `value_error` naming `who`, `what` and the first offending index when `t` holds a NaN
/// or an infinity.
template <typename Scalar>
void require_finite(const tensor<Scalar>& t, const char* who, const char* what) {
  const index_type i = detail::first_non_finite(t.data(), t.size());
  if (i < 0) return;
  shape_type pos(t.shape().size());
  index_type rem = i;
  for (std::size_t d = 0; d < pos.size(); ++d) {
    pos[d] = rem / t.strides()[d];
    rem %= t.strides()[d];
  }
  throw value_error(detail::cat(who, ": ", what, " holds ", double(t.data()[i]), " at index ",
                                detail::shape_string(pos), " (shape ",
                                detail::shape_string(t.shape()), ")"));
}

}  // namespace netmorph

#endif  // NETMORPH_TENSOR_HPP
