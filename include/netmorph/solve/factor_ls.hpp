#ifndef NETMORPH_SOLVE_FACTOR_LS_HPP
#define NETMORPH_SOLVE_FACTOR_LS_HPP

/// \file factor_ls.hpp
/// Structured least squares for one factor of a filter composition (docs/DESIGN.md §3.3).
///
/// With the first filter `F (C_mid, C_in, K_f, K_f)` fixed, `compose(X, F) = T` is linear in the
/// second filter `X (C_out, C_mid, K_x, K_x)` and decouples per output channel `o`:
/// \f$ T[o] = A(F)\, X[o] \f$ with the block-Toeplitz matrix
/// \f$ A[(i,w),(c,v)] = F[c,i](w-v) \f$ of size `(C_in K_t^2) x (C_mid K_x^2)`,
/// `K_t = K_f + K_x - 1`, shared by all `C_out` right-hand sides. One Gram matrix is formed from
/// the filter's channel correlations (never by a GEMM on the explicit matrix), factorised once
/// by Cholesky and used for every right-hand side; `A` itself is only applied through
/// compositions. A `K_f = 1` problem is permuted into a small `C_in x C_mid` one (Kronecker
/// structure). Two cases skip the Gram matrix: a fixed factor whose Gram matrix is the identity
/// (`K_x = 1` and a semi-orthogonal `F`, as Algorithm 1 starts from) needs one product, and a
/// square system, whose explicit matrix is no larger than its Gram matrix, is solved by one LU
/// factorisation of `A` (no squared condition number). When the Gram matrix is too
/// ill-conditioned, or the exact route misses, the explicit matrix is solved by a complete
/// orthogonal decomposition instead. Everything is in double.
///
/// Threads: when the consumer compiles with OpenMP, the products run on Eigen's threads
/// (`Eigen::setNbThreads`, `OMP_NUM_THREADS`) and the parts Eigen keeps on one thread (symmetric
/// rank updates, the Cholesky trailing updates, triangular solves) are split over the same number
/// of threads. Without OpenMP, or called from inside a parallel region, everything runs on the
/// calling thread. The result does not depend on the thread count beyond rounding.

#include <netmorph/detail/message.hpp>
#include <netmorph/detail/parallel.hpp>
#include <netmorph/error.hpp>
#include <netmorph/ops/compose.hpp>
#include <netmorph/tensor.hpp>

#include <Eigen/Cholesky>
#include <Eigen/Core>
#include <Eigen/LU>
#include <Eigen/QR>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace netmorph {
namespace solve {

/// How one factor solve was carried out.
enum class ls_route {
  gram_cholesky,  ///< Cholesky on the structured Gram matrix
  orthonormal,    ///< `K_x = 1` and the Gram matrix of `F` is the identity: one product
  lu,             ///< square system: partial-pivot LU of the explicit matrix
  cod             ///< complete orthogonal decomposition of the explicit matrix (fallback)
};

inline const char* to_string(ls_route r) {
  switch (r) {
    case ls_route::gram_cholesky:
      return "gram_cholesky";
    case ls_route::orthonormal:
      return "orthonormal";
    case ls_route::lu:
      return "lu";
    default:
      return "cod";
  }
}

/// Diagnostics of one factor solve.
struct factor_solve_report {
  index_type rows = 0;           ///< equations per right-hand side of the (reduced) system
  index_type cols = 0;           ///< unknowns per right-hand side of the (reduced) system
  index_type rhs = 0;            ///< number of right-hand sides
  bool underdetermined = false;  ///< cols > rows: minimum norm plus a null-space component
  bool kronecker = false;        ///< reduced by the Kronecker structure of a 1x1 fixed filter
  ls_route route = ls_route::gram_cholesky;
  /// Reciprocal condition estimate of the Gram matrix: computed (Cholesky), the square of the
  /// explicit matrix's (LU), 1 (orthonormal), or that of the route that failed (COD).
  double rcond = 0;
  /// \f$ \|compose(X, F) - T\| / \|T\| \f$ of the result; with more than 32 right-hand sides
  /// the exact-system routes estimate it from 32 random combinations of them (under 0.32 times
  /// the true value with probability below 1e-10, see `residual_norm2`).
  double relative_residual = 0;
};

/// Settings of one factor solve.
struct factor_solve_options {
  /// Std of the random null-space component, relative to the RMS of the minimum-norm solution.
  double noise = 1.0;
  /// An underdetermined or square solve whose relative residual exceeds this is redone by COD.
  double exact_tolerance = 1e-10;
  /// Gram matrices with a reciprocal condition estimate below this go to COD directly.
  double min_rcond = 1e-13;
  /// Skip Cholesky (for tests and benchmarks of the fallback).
  bool force_cod = false;
  /// Largest explicit matrix (rows x columns) the fallback may form (4e8 doubles = 3.2 GB).
  double max_explicit_entries = 4e8;
};

/// The solved factor and how it was solved.
struct factor_solve_result {
  tensor<double> x;
  factor_solve_report report;
};

namespace detail {

using rowmat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using colmat = Eigen::MatrixXd;

using netmorph::detail::for_blocks;
using netmorph::detail::solver_threads;

/// Lower triangle of \f$ C \mathrel{+}= \alpha A A^T \f$ (`C` any writable block). The symmetric
/// rank update Eigen runs on one thread is split on two: the off-diagonal block is one
/// (OpenMP-parallel) GEMM, the two diagonal blocks are rank updates run side by side; the flops
/// are those of one symmetric update.
template <typename Block, typename Derived>
void lower_rank_update(Block&& c, const Eigen::MatrixBase<Derived>& a, double alpha) {
  const index_type n = a.rows();
  if (solver_threads() > 1 && n >= 128) {
    const index_type h = n / 2;
    c.bottomLeftCorner(n - h, h).noalias() +=
        alpha * (a.bottomRows(n - h) * a.topRows(h).transpose());
    for_blocks(2, 1, [&](index_type part, index_type) {
      if (part == 0) {
        auto blk = c.topLeftCorner(h, h);
        blk.template selfadjointView<Eigen::Lower>().rankUpdate(a.topRows(h), alpha);
      } else {
        auto blk = c.bottomRightCorner(n - h, n - h);
        blk.template selfadjointView<Eigen::Lower>().rankUpdate(a.bottomRows(n - h), alpha);
      }
    });
  } else {
    c.template selfadjointView<Eigen::Lower>().rankUpdate(a, alpha);
  }
}

/// \f$ C = A A^T \f$, both triangles, on the solver threads (`lower_rank_update`).
template <typename Derived>
colmat gram(const Eigen::MatrixBase<Derived>& a) {
  colmat c = colmat::Zero(a.rows(), a.rows());
  lower_rank_update(c, a, 1.0);
  c.template triangularView<Eigen::StrictlyUpper>() = c.transpose();
  return c;
}

/// Cholesky factorisation \f$ K = L L^T \f$ of a symmetric positive definite Gram matrix, blocked
/// and right-looking so that both cores work: the trailing update, almost all of the flops, is
/// a `lower_rank_update`, and the panel's triangular solve by rows. Eigen's LLT runs its symmetric
/// updates on one thread. `rcond` is the reciprocal 1-norm condition estimate (Hager's method on
/// the factor), 0 when `K` is not numerically positive definite.
class cholesky {
 public:
  explicit cholesky(colmat k) : l_(std::move(k)) {
    const index_type n = l_.rows();
    const double norm1 = l_.cwiseAbs().colwise().sum().maxCoeff();
    constexpr index_type nb = 128;
    for (index_type j = 0; j < n; j += nb) {
      const index_type b = std::min(nb, n - j), r = n - j - b;
      auto a11 = l_.block(j, j, b, b);
      Eigen::LLT<Eigen::Ref<colmat>> diag(a11);  // in place
      if (diag.info() != Eigen::Success) return;
      if (r == 0) break;
      auto a21 = l_.block(j + b, j, r, b);
      for_blocks(r, 64, [&](index_type r0, index_type nr) {
        auto rows = a21.middleRows(r0, nr);
        a11.triangularView<Eigen::Lower>().transpose().template solveInPlace<Eigen::OnTheRight>(
            rows);
      });
      lower_rank_update(l_.block(j + b, j + b, r, r), a21, -1.0);
    }
    if (!l_.allFinite()) return;
    ok_ = true;
    rcond_ = norm1 > 0 ? 1.0 / (norm1 * inverse_norm1()) : 0.0;
  }

  bool ok() const { return ok_; }
  double rcond() const { return rcond_; }

  /// `B <- L^-1 B` (`transposed`: `L^-T B`), the right-hand sides split over the solver threads.
  /// With many more right-hand sides than rows (a Kronecker-reduced half-step: `C x C` with
  /// `C K^2` right-hand sides), `L^-1` is formed once by a triangular solve and applied as a
  /// triangular product, which runs at GEMM speed where Eigen's blocked substitution does not.
  void solve_lower(colmat& b, bool transposed) const {
    const index_type n = l_.rows();
    if (b.cols() >= 4 * n && n <= 2048) {
      if (linv_.rows() != n) {
        linv_ = colmat::Identity(n, n);
        l_.triangularView<Eigen::Lower>().solveInPlace(linv_);
      }
      for_blocks(b.cols(), 32, [&](index_type c0, index_type nc) {
        auto blk = b.middleCols(c0, nc);
        colmat t(n, nc);
        if (transposed)
          t.noalias() = linv_.transpose().triangularView<Eigen::Upper>() * blk;
        else
          t.noalias() = linv_.triangularView<Eigen::Lower>() * blk;
        blk = t;
      });
      return;
    }
    for_blocks(b.cols(), 32, [&](index_type c0, index_type nc) {
      auto blk = b.middleCols(c0, nc);
      if (transposed)
        l_.triangularView<Eigen::Lower>().transpose().solveInPlace(blk);
      else
        l_.triangularView<Eigen::Lower>().solveInPlace(blk);
    });
  }
  /// `B <- K^-1 B`.
  void solve(colmat& b) const {
    solve_lower(b, false);
    solve_lower(b, true);
  }

 private:
  // Hager's estimate of ||K^-1||_1 (K symmetric, so K^-T = K^-1): a few solves with one vector.
  double inverse_norm1() const {
    const index_type n = l_.rows();
    colmat x = colmat::Constant(n, 1, 1.0 / double(n));
    double est = 0;
    for (int it = 0; it < 5; ++it) {
      colmat y = x;
      solve(y);
      est = y.cwiseAbs().sum();
      colmat z = y.unaryExpr([](double v) { return v >= 0 ? 1.0 : -1.0; });
      solve(z);
      index_type jmax = 0;
      const double zmax = z.col(0).cwiseAbs().maxCoeff(&jmax);
      if (zmax <= z.col(0).dot(x.col(0))) break;
      x.setZero();
      x(jmax, 0) = 1.0;
    }
    return est;
  }

  colmat l_;
  mutable colmat linv_;  // L^-1, formed on the first solve with many right-hand sides
  bool ok_ = false;
  double rcond_ = 0;
};

/// Fills `x` with independent zero-mean noise of standard deviation `sd`: a sum of four 16-bit
/// uniforms (Irwin-Hall, bounded by 2 sqrt(3) sd, exactly 0 with probability about 1e-5) from a
/// splitmix64 stream seeded by `rng`.
/// The null-space component only has to be random and dense, not Gaussian; this costs about a
/// nanosecond per value where std::normal_distribution costs tens.
template <typename Rng>
void fill_noise(double* x, index_type n, double sd, Rng& rng) {
  std::uint64_t state = (std::uint64_t(rng()) << 32) ^ std::uint64_t(rng());
  // Each 16-bit uniform has mean 32767.5 and variance about 65536^2 / 12.
  const double scale = sd * std::sqrt(3.0) / 65536.0;
  for (index_type i = 0; i < n; ++i) {
    std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    const double s = double(z & 0xFFFF) + double((z >> 16) & 0xFFFF) + double((z >> 32) & 0xFFFF) +
                     double(z >> 48);
    x[i] = (s - 4.0 * 32767.5) * scale;
  }
}

/// \f$ \|K Y - B\|_F^2 \f$. With more than 32 columns it is estimated from 32 random
/// combinations of them, \f$ \|(K Y - B)\Omega\|^2 / 32 \f$ with independent unit-variance
/// entries in \f$ \Omega \f$: unbiased, and below a tenth of the true value with probability
/// below 1e-10 (a chi-square with 32 degrees of freedom), for 32/r of the cost of the product.
template <typename Rng>
double residual_norm2(const colmat& k, const colmat& y, const colmat& b, Rng& rng) {
  constexpr index_type sketch = 32;
  if (y.cols() <= sketch) return (k * y - b).squaredNorm();
  colmat omega(y.cols(), sketch);
  fill_noise(omega.data(), omega.size(), 1.0, rng);
  const colmat yo = y * omega;
  return (k * yo - b * omega).squaredNorm() / double(sketch);
}

/// \f$ \text{out}[o,c](v) = \sum_{i,u} Y[o,i](u+v)\, F[c,i](u) \f$: applies \f$ A(F)^T \f$ to every
/// row of `Y (C_out, C_in, K_t, K_t)`; the adjoint of `compose(., F)`.
template <typename Real>
tensor<double> adjoint_apply(const tensor<Real>& y, const tensor<double>& f, index_type kx) {
  const index_type cout = y.dim(0), cin = y.dim(1), kt = y.dim(2);
  const index_type cmid = f.dim(0), kf = f.dim(2), q = cin * kf * kf;
  tensor<double> out({cout, cmid, kx, kx});
  const auto fm = f.matrix(cmid, q);
  if (kx == 1) {  // the window is Y itself
    out.matrix(cout, cmid).noalias() = y.matrix(cout, q) * fm.transpose();
    return out;
  }
  rowmat win(cout, q), r(cout, cmid);
  for (index_type vy = 0; vy < kx; ++vy)
    for (index_type vx = 0; vx < kx; ++vx) {
      for (index_type o = 0; o < cout; ++o)
        for (index_type i = 0; i < cin; ++i)
          for (index_type uy = 0; uy < kf; ++uy) {
            const double* src = y.data() + ((o * cin + i) * kt + uy + vy) * kt + vx;
            double* dst = win.data() + o * q + (i * kf + uy) * kf;
            for (index_type ux = 0; ux < kf; ++ux)
              dst[ux] = src[ux];
          }
      r.noalias() = win * fm.transpose();
      for (index_type o = 0; o < cout; ++o)
        for (index_type c = 0; c < cmid; ++c)
          out(o, c, vy, vx) = r(o, c);
    }
  return out;
}

/// \f$ A^T A \f$ with index `(c, v)`: block `(v, v')` is the channel correlation of `F` at shift
/// `v - v'`, \f$ R_\delta[c,c'] = \sum_{i,u} F[c,i](u)\, F[c',i](u+\delta) \f$.
template <typename Real>
colmat gram_cols(const tensor<Real>& f, index_type kx) {
  const index_type cmid = f.dim(0), cin = f.dim(1), kf = f.dim(2), kk = kx * kx, n = cmid * kk;
  if (kx == 1) return gram(f.matrix(cmid, cin * kf * kf));  // only the zero shift
  colmat h = colmat::Zero(n, n);
  // H is symmetric (R_{-d} = R_d^T): only shifts d > 0 (lexicographically) and d = 0 are formed,
  // d = 0 as a symmetric rank update.
  for (index_type dy = 0; dy <= kx - 1; ++dy)
    for (index_type dx = -(kx - 1); dx <= kx - 1; ++dx) {
      if (dy == 0 && dx < 0) continue;
      if (dy >= kf || dx <= -kf || dx >= kf) continue;
      const index_type y0 = 0, y1 = kf - dy;
      const index_type x0 = std::max<index_type>(0, -dx), x1 = std::min(kf, kf - dx);
      const index_type ov = (y1 - y0) * (x1 - x0);
      colmat r;
      if (dy == 0 && dx == 0) {
        r = gram(f.matrix(cmid, cin * kf * kf));
      } else {
        rowmat wa(cmid, cin * ov), wb(cmid, cin * ov);
        for (index_type c = 0; c < cmid; ++c)
          for (index_type i = 0; i < cin; ++i) {
            index_type k = i * ov;
            for (index_type uy = y0; uy < y1; ++uy)
              for (index_type ux = x0; ux < x1; ++ux, ++k) {
                wa(c, k) = f(c, i, uy, ux);
                wb(c, k) = f(c, i, uy + dy, ux + dx);
              }
          }
        r.noalias() = wa * wb.transpose();
      }
      // Every (v, v') with v - v' = (dy, dx), and its mirror (v', v).
      for (index_type vy = dy; vy < kx; ++vy)
        for (index_type vx = std::max<index_type>(0, dx); vx < std::min(kx, kx + dx); ++vx) {
          const index_type v = vy * kx + vx, vp = (vy - dy) * kx + (vx - dx);
          for (index_type cp = 0; cp < cmid; ++cp)
            for (index_type c = 0; c < cmid; ++c) {
              h(c * kk + v, cp * kk + vp) = r(c, cp);
              h(cp * kk + vp, c * kk + v) = r(c, cp);
            }
        }
    }
  return h;
}

/// \f$ A A^T \f$ with index `(i, w)`: the sum over the `K_x^2` offsets `v` of
/// \f$ P = F_{mat}^T F_{mat} \f$ (index `(i, u)`) placed at `w = u + v`.
template <typename Real>
colmat gram_rows(const tensor<Real>& f, index_type kx) {
  const index_type cmid = f.dim(0), cin = f.dim(1), kf = f.dim(2), kt = kf + kx - 1;
  const index_type q = cin * kf * kf, m = cin * kt * kt;
  const colmat p = gram(f.matrix(cmid, q).transpose());
  if (kx == 1) return p;
  colmat k = colmat::Zero(m, m);
  std::vector<index_type> map(static_cast<std::size_t>(q));
  for (index_type vy = 0; vy < kx; ++vy)
    for (index_type vx = 0; vx < kx; ++vx) {
      for (index_type i = 0; i < cin; ++i)
        for (index_type uy = 0; uy < kf; ++uy)
          for (index_type ux = 0; ux < kf; ++ux)
            map[static_cast<std::size_t>((i * kf + uy) * kf + ux)] =
                (i * kt + uy + vy) * kt + ux + vx;
      for (index_type b = 0; b < q; ++b) {
        const index_type col = map[static_cast<std::size_t>(b)];
        for (index_type a = 0; a < q; ++a)
          k(map[static_cast<std::size_t>(a)], col) += p(a, b);
      }
    }
  return k;
}

/// Permutes `(A, B, K, K) <-> (A*K*K, B, 1, 1)` (moves the spatial index next to the first one).
inline tensor<double> spatial_to_rows(const tensor<double>& t) {
  const index_type a = t.dim(0), b = t.dim(1), kk = t.dim(2) * t.dim(3);
  tensor<double> r({a * kk, b, 1, 1});
  for (index_type i = 0; i < a; ++i)
    for (index_type j = 0; j < b; ++j)
      for (index_type w = 0; w < kk; ++w)
        r.data()[(i * kk + w) * b + j] = t.data()[(i * b + j) * kk + w];
  return r;
}
inline tensor<double> rows_to_spatial(const tensor<double>& r, index_type a, index_type k) {
  const index_type b = r.dim(1), kk = k * k;
  tensor<double> t({a, b, k, k});
  for (index_type i = 0; i < a; ++i)
    for (index_type j = 0; j < b; ++j)
      for (index_type w = 0; w < kk; ++w)
        t.data()[(i * b + j) * kk + w] = r.data()[(i * kk + w) * b + j];
  return t;
}

inline double frobenius(const tensor<double>& t) {
  return t.vector().norm();
}

template <typename Real>
double relative_residual(const tensor<Real>& x, const tensor<double>& f,
                         const tensor<double>& target) {
  const tensor<double> c = compose(x, f);
  const double den = frobenius(target);
  const double num = (c.vector() - target.vector()).norm();
  return den > 0 ? num / den : num;
}

/// \f$ \|compose(X, F) - T\| / \|T\| \f$: exact with at most 32 right-hand sides (rows of `X`),
/// else estimated from 32 random combinations \f$ \Omega X \f$ of them as in `residual_norm2`,
/// for 32/C_out of the cost of a composition.
template <typename Rng>
double sketched_relative_residual(const tensor<double>& x, const tensor<double>& f,
                                  const tensor<double>& target, Rng& rng) {
  constexpr index_type sketch = 32;
  const index_type cout = x.dim(0);
  if (cout <= sketch) return relative_residual(x, f, target);
  const index_type n = x.size() / cout, m = target.size() / cout;
  rowmat omega(sketch, cout);
  fill_noise(omega.data(), omega.size(), 1.0, rng);
  tensor<double> xs({sketch, x.dim(1), x.dim(2), x.dim(3)});
  xs.matrix(sketch, n).noalias() = omega * x.matrix(cout, n);
  const tensor<double> c = compose(xs, f);
  rowmat r = c.matrix(sketch, m);
  r.noalias() -= omega * target.matrix(cout, m);
  const double num = std::sqrt(r.squaredNorm() / double(sketch)), den = frobenius(target);
  return den > 0 ? num / den : num;
}

/// Largest deviation of a Gram matrix from the identity that the orthonormal route accepts.
/// A computed orthonormal basis (Householder) is about 1e-15 from it at every size; 1e-12 moves
/// a solution by far less than any exact tolerance, and a general matrix is order 1 away.
constexpr double orthonormal_tolerance = 1e-12;

/// \f$ \|(M - I)\Omega\| / \|\Omega\| \f$ for two random columns \f$ \Omega \f$, where `M` is the
/// smaller of \f$ F F^T \f$ and \f$ F^T F \f$, the Gram matrix a solve with `F (n x m)` would
/// factorise: a test that `F` has orthonormal rows (columns) in `4 n m` flops per column.
template <typename Derived, typename Rng>
double gram_identity_deviation(const Eigen::MatrixBase<Derived>& fm, Rng& rng) {
  constexpr index_type probes = 2;
  const bool by_rows = fm.rows() <= fm.cols();
  colmat omega(by_rows ? fm.rows() : fm.cols(), probes);
  fill_noise(omega.data(), omega.size(), 1.0, rng);
  colmat dev;
  if (by_rows) {
    const colmat t = fm.transpose() * omega;
    dev.noalias() = fm * t;
  } else {
    const colmat t = fm * omega;
    dev.noalias() = fm.transpose() * t;
  }
  dev -= omega;
  return dev.norm() / omega.norm();
}

}  // namespace detail

/// The explicit block-Toeplitz matrix \f$ A(F)[(i,w),(c,v)] = F[c,i](w-v) \f$ of size
/// `(C_in K_t^2) x (C_mid K_x^2)`, so that `vec(compose(X, F)[o]) = A vec(X[o])`. Used by the
/// rank-revealing fallback, by tests and by the reference benchmark.
template <typename Real>
Eigen::MatrixXd toeplitz_matrix(const tensor<Real>& f, index_type kx) {
  netmorph::detail::check_filter(f.shape(), "toeplitz_matrix", "F");
  netmorph::detail::require<value_error>(kx >= 1, "toeplitz_matrix: K_x must be >= 1, got ", kx);
  const index_type cmid = f.dim(0), cin = f.dim(1), kf = f.dim(2), kt = kf + kx - 1;
  Eigen::MatrixXd a = Eigen::MatrixXd::Zero(cin * kt * kt, cmid * kx * kx);
  for (index_type i = 0; i < cin; ++i)
    for (index_type c = 0; c < cmid; ++c)
      for (index_type vy = 0; vy < kx; ++vy)
        for (index_type vx = 0; vx < kx; ++vx)
          for (index_type uy = 0; uy < kf; ++uy)
            for (index_type ux = 0; ux < kf; ++ux)
              a((i * kt + uy + vy) * kt + ux + vx, (c * kx + vy) * kx + vx) = f(c, i, uy, ux);
  return a;
}

namespace detail {

/// `solve_second_factor` on operands already checked; fills `inf`.
template <typename Rng>
tensor<double> solve_second_factor_checked(const tensor<double>& target, const tensor<double>& f,
                                           index_type kx, Rng& rng,
                                           const factor_solve_options& settings,
                                           factor_solve_report& inf) {
  using netmorph::detail::require;
  const index_type cout = target.dim(0), cin = target.dim(1), kt = target.dim(2);
  const index_type cmid = f.dim(0), kf = f.dim(2);

  if (kf == 1 && kx > 1) {
    // Kronecker structure: T[o,i](w) = sum_c X[o,c](w) F[c,i], a (C_out K^2) x C_mid unknown
    // times C_mid x C_in, i.e. the K_x = 1 problem with rows (o, w).
    tensor<double> xr =
        solve_second_factor_checked(detail::spatial_to_rows(target), f, 1, rng, settings, inf);
    inf.kronecker = true;
    return detail::rows_to_spatial(xr, cout, kx);
  }

  const index_type m = cin * kt * kt, n = cmid * kx * kx;
  inf.rows = m;
  inf.cols = n;
  inf.rhs = cout;
  inf.underdetermined = n > m;
  inf.kronecker = false;
  tensor<double> x({cout, cmid, kx, kx});
  if (cout == 0 || n == 0) return x;

  bool done = false;
  if (!settings.force_cod) {
    const double tnorm2 = target.vector().squaredNorm();
    auto relative = [&](double r2) {
      return tnorm2 > 0 ? std::sqrt(std::max(0.0, r2) / tnorm2) : std::sqrt(std::max(0.0, r2));
    };
    if (kx == 1 &&
        detail::gram_identity_deviation(f.matrix(cmid, m), rng) <= detail::orthonormal_tolerance) {
      // A = F^T with F F^T = I (n <= m) or F^T F = I (n > m): the least-squares or minimum-norm
      // solution is T F^T, and Z - Z F F^T is the noise's null-space part, so
      // X = Z + (T - Z F) F^T with no factorisation (Algorithm 1's first half-step). The minimum
      // norm solution's norm is ||T||.
      inf.route = ls_route::orthonormal;
      inf.rcond = 1;
      const double sd =
          inf.underdetermined ? settings.noise * std::sqrt(tnorm2 / double(cout * n)) : 0.0;
      if (sd > 0) {
        tensor<double> z({cout, cmid, 1, 1});
        detail::fill_noise(z.data(), z.size(), sd, rng);
        tensor<double> r = target;
        r.vector() -= compose(z, f).vector();
        x = detail::adjoint_apply(r, f, 1);
        x.vector() += z.vector();
      } else {
        x = detail::adjoint_apply(target, f, 1);
      }
      inf.relative_residual = detail::sketched_relative_residual(x, f, target, rng);
      done = n < m || inf.relative_residual <= settings.exact_tolerance;
    }
    if (!done && m == n) {
      // Square: A is no larger than its Gram matrix, so A itself is factorised, once for all
      // right-hand sides, without squaring its condition number. Same acceptance as Cholesky
      // (the Gram matrix's condition number is the square of A's), then the exact tolerance.
      inf.route = ls_route::lu;
      const Eigen::PartialPivLU<detail::colmat> lu(
          kx == 1 ? detail::colmat(f.matrix(cmid, m).transpose()) : toeplitz_matrix(f, kx));
      const double rc = lu.rcond();
      inf.rcond = rc * rc;
      if (inf.rcond >= settings.min_rcond) {
        detail::colmat y = lu.permutationP() * target.matrix(cout, m).transpose();
        // Eigen's triangular solves run on one thread: the right-hand sides are split instead.
        detail::for_blocks(cout, 32, [&](index_type c0, index_type nc) {
          auto blk = y.middleCols(c0, nc);
          lu.matrixLU().triangularView<Eigen::UnitLower>().solveInPlace(blk);
          lu.matrixLU().triangularView<Eigen::Upper>().solveInPlace(blk);
        });
        x.matrix(cout, n) = y.transpose();
        inf.relative_residual = detail::sketched_relative_residual(x, f, target, rng);
        done = inf.relative_residual <= settings.exact_tolerance;
      }
    } else if (!done && !inf.underdetermined) {
      inf.route = ls_route::gram_cholesky;
      const detail::cholesky llt(detail::gram_cols(f, kx));
      inf.rcond = llt.rcond();
      if (inf.rcond >= settings.min_rcond) {
        tensor<double> b = detail::adjoint_apply(target, f, kx);
        detail::colmat sol = b.matrix(cout, n).transpose();
        llt.solve(sol);
        x.matrix(cout, n) = sol.transpose();
        // ||T - A X||^2 = ||T||^2 - <X, A^T T> for the least-squares X: free, but it cancels
        // when the residual is small, so small values are measured exactly.
        const double est =
            relative(tnorm2 - (sol.transpose().cwiseProduct(b.matrix(cout, n))).sum());
        inf.relative_residual = est > 1e-6 ? est : detail::relative_residual(x, f, target);
        done = true;
      }
    } else if (!done) {
      inf.route = ls_route::gram_cholesky;
      const detail::colmat k = detail::gram_rows(f, kx);
      const detail::cholesky llt(k);
      inf.rcond = llt.rcond();
      if (inf.rcond >= settings.min_rcond) {
        // X = Z + (T - Z A^T) K^-1 A: the minimum-norm solution T K^-1 A plus the null-space part
        // of the noise Z. With K = L L^T, W = L^-1 T^T gives the squared norm of the minimum-norm
        // solution as ||W||^2, and is reused: K^-1 (T - A Z)^T = L^-T (W - L^-1 (A Z)^T).
        detail::colmat rhs = target.matrix(cout, m).transpose();
        detail::colmat w = rhs;
        llt.solve_lower(w, false);
        const double rms = std::sqrt(w.squaredNorm() / double(cout * n));
        tensor<double> z({cout, cmid, kx, kx});
        const double sd = settings.noise * rms;
        if (sd > 0) {
          detail::fill_noise(z.data(), z.size(), sd, rng);
          const tensor<double> za = compose(z, f);
          detail::colmat v = za.matrix(cout, m).transpose();
          rhs -= v;
          llt.solve_lower(v, false);
          w -= v;
        }
        llt.solve_lower(w, true);
        // A X - T = K Y - (T - A Z): the residual from the m x m Gram matrix instead of a
        // composition with the m x n one; it exposes an inaccurate Cholesky solve.
        inf.relative_residual = relative(detail::residual_norm2(k, w, rhs, rng));
        tensor<double> y({cout, cin, kt, kt});
        y.matrix(cout, m) = w.transpose();
        x = detail::adjoint_apply(y, f, kx);
        if (sd > 0) x.vector() += z.vector();
        done = inf.relative_residual <= settings.exact_tolerance;
      }
    }
  }
  if (!done) {
    inf.route = ls_route::cod;
    // The explicit matrix is only formed for the rank-revealing fallback; refuse sizes that
    // would exhaust memory instead of failing inside the allocator.
    require<numerical_error>(double(m) * double(n) <= settings.max_explicit_entries,
                             "solve_second_factor: the structured solve failed (Gram rcond ",
                             inf.rcond, ") and the ", m, " x ", n,
                             " explicit system is too large for the rank-revealing fallback");
    const Eigen::MatrixXd a = toeplitz_matrix(f, kx);
    Eigen::CompleteOrthogonalDecomposition<Eigen::MatrixXd> cod(a);
    Eigen::MatrixXd sol = cod.solve(target.matrix(cout, m).transpose());  // n x cout
    if (inf.underdetermined && settings.noise > 0) {
      const double rms = sol.norm() / std::sqrt(double(cout * n));
      Eigen::MatrixXd z(n, cout);
      detail::fill_noise(z.data(), z.size(), settings.noise * rms, rng);
      const Eigen::MatrixXd az = a * z;
      sol += z - cod.solve(az);
    }
    x.matrix(cout, n) = sol.transpose();
  }
  if (!done) inf.relative_residual = detail::relative_residual(x, f, target);
  return x;
}

}  // namespace detail

/// Least-squares solve for the second factor: \f$ \min_X \|compose(X, F) - T\| \f$ with `X` of
/// shape `(C_out, C_mid, K_x, K_x)`. An overdetermined system returns the least-squares
/// solution; an underdetermined one the minimum-norm solution plus a random component from the
/// null space of `A(F)` (std `settings.noise` times the RMS of the minimum-norm solution), so
/// the result is dense while `compose(X, F) = T` still holds.
///
/// \param target `T (C_out, C_in, K_t, K_t)` with `K_t = K_f + K_x - 1`
/// \param f      `F (C_mid, C_in, K_f, K_f)`
/// \throws shape_error when the shapes do not fit together.
template <typename Rng>
factor_solve_result solve_second_factor(const tensor<double>& target, const tensor<double>& f,
                                        index_type kx, Rng& rng,
                                        const factor_solve_options& settings = {}) {
  using netmorph::detail::require;
  using netmorph::detail::shape_string;
  netmorph::detail::check_filter(target.shape(), "solve_second_factor", "target");
  netmorph::detail::check_filter(f.shape(), "solve_second_factor", "F");
  require<shape_error>(target.dim(2) == target.dim(3) && f.dim(2) == f.dim(3),
                       "solve_second_factor: kernels must be square, got target ",
                       shape_string(target.shape()), " and F ", shape_string(f.shape()));
  require<shape_error>(target.dim(1) == f.dim(1), "solve_second_factor: target has ", target.dim(1),
                       " input channels, F has ", f.dim(1));
  require<shape_error>(kx >= 1 && target.dim(2) == f.dim(2) + kx - 1,
                       "solve_second_factor: target kernel ", target.dim(2),
                       " != K_f + K_x - 1 = ", f.dim(2), " + ", kx, " - 1");
  factor_solve_result res;
  res.x = detail::solve_second_factor_checked(target, f, kx, rng, settings, res.report);
  return res;
}

/// Least-squares solve for the first factor: \f$ \min_X \|compose(F_2, X) - T\| \f$ with `X` of
/// shape `(C_mid, C_in, K_x, K_x)`; the channel-transposed problem of `solve_second_factor`
/// (`compose(F2, X)^T = compose(X^T, F2^T)`), with the same guarantees.
/// \param target `T (C_out, C_in, K_t, K_t)`, \param f2 `F2 (C_out, C_mid, K_2, K_2)`.
template <typename Rng>
factor_solve_result solve_first_factor(const tensor<double>& target, const tensor<double>& f2,
                                       index_type kx, Rng& rng,
                                       const factor_solve_options& settings = {}) {
  netmorph::detail::check_filter(target.shape(), "solve_first_factor", "target");
  netmorph::detail::check_filter(f2.shape(), "solve_first_factor", "F2");
  netmorph::detail::require<shape_error>(target.dim(0) == f2.dim(0),
                                         "solve_first_factor: target has ", target.dim(0),
                                         " output channels, F2 has ", f2.dim(0));
  factor_solve_result r =
      solve_second_factor(transpose_channels(target), transpose_channels(f2), kx, rng, settings);
  r.x = transpose_channels(r.x);
  return r;
}

}  // namespace solve
}  // namespace netmorph

#endif  // NETMORPH_SOLVE_FACTOR_LS_HPP
