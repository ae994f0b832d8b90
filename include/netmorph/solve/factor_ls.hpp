#ifndef NETMORPH_SOLVE_FACTOR_LS_HPP
#define NETMORPH_SOLVE_FACTOR_LS_HPP

/// \file factor_ls.hpp
/// Structured least squares for one factor of a filter composition (DESIGN §3).
///
/// With the first filter `F (C_mid, C_in, K_f, K_f)` fixed, `compose(X, F) = T` is linear in the
/// second filter `X (C_out, C_mid, K_x, K_x)` and decouples per output channel `o`:
/// \f$ T[o] = A(F)\, X[o] \f$ with the block-Toeplitz matrix
/// \f$ A[(i,w),(c,v)] = F[c,i](w-v) \f$ of size `(C_in K_t^2) x (C_mid K_x^2)`,
/// `K_t = K_f + K_x - 1`, shared by all `C_out` right-hand sides. One Gram matrix is formed from
/// the filter's channel correlations (never by a GEMM on the explicit matrix), factorised once
/// by Cholesky and used for every right-hand side; `A` itself is only applied through
/// compositions. A `K_f = 1` problem is permuted into a small `C_in x C_mid` one (Kronecker
/// structure). When the Gram matrix is too ill-conditioned, or the exact route misses, the
/// explicit matrix is solved by a complete orthogonal decomposition instead. Everything is in
/// double.

#include <netmorph/detail/message.hpp>
#include <netmorph/error.hpp>
#include <netmorph/ops/compose.hpp>
#include <netmorph/tensor.hpp>

#include <Eigen/Cholesky>
#include <Eigen/Core>
#include <Eigen/QR>

#include <cmath>
#include <random>
#include <string>
#include <vector>

namespace netmorph {
namespace solve {

/// How one factor solve was carried out.
enum class ls_route {
  gram_cholesky,  ///< Cholesky on the structured Gram matrix
  cod             ///< complete orthogonal decomposition of the explicit matrix (fallback)
};

inline const char* to_string(ls_route r) {
  return r == ls_route::gram_cholesky ? "gram_cholesky" : "cod";
}

/// Diagnostics of one factor solve.
struct factor_solve_info {
  index rows = 0;                ///< equations per right-hand side of the (reduced) system
  index cols = 0;                ///< unknowns per right-hand side of the (reduced) system
  index rhs = 0;                 ///< number of right-hand sides
  bool underdetermined = false;  ///< cols > rows: minimum norm plus a null-space component
  bool kronecker = false;        ///< reduced by the Kronecker structure of a 1x1 fixed filter
  ls_route route = ls_route::gram_cholesky;
  double rcond = 0;              ///< reciprocal condition estimate of the Gram matrix (Cholesky)
  double relative_residual = 0;  ///< \f$ \|compose(X, F) - T\| / \|T\| \f$ of the result
};

/// Settings of one factor solve.
struct factor_solve_settings {
  /// Std of the random null-space component, relative to the RMS of the minimum-norm solution.
  double noise = 1.0;
  /// An underdetermined Cholesky solve whose relative residual exceeds this is redone by COD.
  double exact_tolerance = 1e-10;
  /// Gram matrices with a reciprocal condition estimate below this go to COD directly.
  double min_rcond = 1e-13;
  /// Skip Cholesky (for tests and benchmarks of the fallback).
  bool force_cod = false;
  /// Largest explicit matrix (rows x columns) the fallback may form (4e8 doubles = 3.2 GB).
  double max_explicit_entries = 4e8;
};

namespace detail {

using rowmat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using colmat = Eigen::MatrixXd;

/// \f$ \text{out}[o,c](v) = \sum_{i,u} Y[o,i](u+v)\, F[c,i](u) \f$: applies \f$ A(F)^T \f$ to every
/// row of `Y (C_out, C_in, K_t, K_t)`; the adjoint of `compose(., F)`.
inline tensor<double> adjoint_apply(const tensor<double>& y, const tensor<double>& f, index kx) {
  const index cout = y.dim(0), cin = y.dim(1), kt = y.dim(2);
  const index cmid = f.dim(0), kf = f.dim(2), q = cin * kf * kf;
  tensor<double> out({cout, cmid, kx, kx});
  const auto fm = f.matrix(cmid, q);
  rowmat win(cout, q), r(cout, cmid);
  for (index vy = 0; vy < kx; ++vy)
    for (index vx = 0; vx < kx; ++vx) {
      for (index o = 0; o < cout; ++o)
        for (index i = 0; i < cin; ++i)
          for (index uy = 0; uy < kf; ++uy) {
            const double* src = y.data() + ((o * cin + i) * kt + uy + vy) * kt + vx;
            double* dst = win.data() + o * q + (i * kf + uy) * kf;
            for (index ux = 0; ux < kf; ++ux)
              dst[ux] = src[ux];
          }
      r.noalias() = win * fm.transpose();
      for (index o = 0; o < cout; ++o)
        for (index c = 0; c < cmid; ++c)
          out(o, c, vy, vx) = r(o, c);
    }
  return out;
}

/// \f$ A^T A \f$ with index `(c, v)`: block `(v, v')` is the channel correlation of `F` at shift
/// `v - v'`, \f$ R_\delta[c,c'] = \sum_{i,u} F[c,i](u)\, F[c',i](u+\delta) \f$.
inline colmat gram_cols(const tensor<double>& f, index kx) {
  const index cmid = f.dim(0), cin = f.dim(1), kf = f.dim(2), kk = kx * kx, n = cmid * kk;
  colmat h = colmat::Zero(n, n);
  // H is symmetric (R_{-d} = R_d^T): only shifts d > 0 (lexicographically) and d = 0 are formed,
  // d = 0 as a symmetric rank update.
  for (index dy = 0; dy <= kx - 1; ++dy)
    for (index dx = -(kx - 1); dx <= kx - 1; ++dx) {
      if (dy == 0 && dx < 0) continue;
      if (dy >= kf || dx <= -kf || dx >= kf) continue;
      const index y0 = 0, y1 = kf - dy;
      const index x0 = std::max<index>(0, -dx), x1 = std::min(kf, kf - dx);
      const index ov = (y1 - y0) * (x1 - x0);
      const bool zero_shift = dy == 0 && dx == 0;
      rowmat wa(cmid, cin * ov), wb(zero_shift ? 0 : cmid, zero_shift ? 0 : cin * ov);
      for (index c = 0; c < cmid; ++c)
        for (index i = 0; i < cin; ++i) {
          index k = i * ov;
          for (index uy = y0; uy < y1; ++uy)
            for (index ux = x0; ux < x1; ++ux, ++k) {
              wa(c, k) = f(c, i, uy, ux);
              if (!zero_shift) wb(c, k) = f(c, i, uy + dy, ux + dx);
            }
        }
      colmat r;
      if (zero_shift) {
        r = colmat::Zero(cmid, cmid);
        r.selfadjointView<Eigen::Lower>().rankUpdate(wa);
        r.triangularView<Eigen::StrictlyUpper>() = r.transpose();
      } else {
        r.noalias() = wa * wb.transpose();
      }
      // Every (v, v') with v - v' = (dy, dx), and its mirror (v', v).
      for (index vy = dy; vy < kx; ++vy)
        for (index vx = std::max<index>(0, dx); vx < std::min(kx, kx + dx); ++vx) {
          const index v = vy * kx + vx, vp = (vy - dy) * kx + (vx - dx);
          for (index cp = 0; cp < cmid; ++cp)
            for (index c = 0; c < cmid; ++c) {
              h(c * kk + v, cp * kk + vp) = r(c, cp);
              h(cp * kk + vp, c * kk + v) = r(c, cp);
            }
        }
    }
  return h;
}

/// \f$ A A^T \f$ with index `(i, w)`: the sum over the `K_x^2` offsets `v` of
/// \f$ P = F_{mat}^T F_{mat} \f$ (index `(i, u)`) placed at `w = u + v`.
inline colmat gram_rows(const tensor<double>& f, index kx) {
  const index cmid = f.dim(0), cin = f.dim(1), kf = f.dim(2), kt = kf + kx - 1;
  const index q = cin * kf * kf, m = cin * kt * kt;
  colmat p = colmat::Zero(q, q);
  p.selfadjointView<Eigen::Lower>().rankUpdate(f.matrix(cmid, q).transpose());
  p.triangularView<Eigen::StrictlyUpper>() = p.transpose();
  if (kx == 1) return p;
  colmat k = colmat::Zero(m, m);
  std::vector<index> map(static_cast<std::size_t>(q));
  for (index vy = 0; vy < kx; ++vy)
    for (index vx = 0; vx < kx; ++vx) {
      for (index i = 0; i < cin; ++i)
        for (index uy = 0; uy < kf; ++uy)
          for (index ux = 0; ux < kf; ++ux)
            map[static_cast<std::size_t>((i * kf + uy) * kf + ux)] =
                (i * kt + uy + vy) * kt + ux + vx;
      for (index b = 0; b < q; ++b) {
        const index col = map[static_cast<std::size_t>(b)];
        for (index a = 0; a < q; ++a)
          k(map[static_cast<std::size_t>(a)], col) += p(a, b);
      }
    }
  return k;
}

/// Permutes `(A, B, K, K) <-> (A*K*K, B, 1, 1)` (moves the spatial index next to the first one).
inline tensor<double> spatial_to_rows(const tensor<double>& t) {
  const index a = t.dim(0), b = t.dim(1), kk = t.dim(2) * t.dim(3);
  tensor<double> r({a * kk, b, 1, 1});
  for (index i = 0; i < a; ++i)
    for (index j = 0; j < b; ++j)
      for (index w = 0; w < kk; ++w)
        r.data()[(i * kk + w) * b + j] = t.data()[(i * b + j) * kk + w];
  return r;
}
inline tensor<double> rows_to_spatial(const tensor<double>& r, index a, index k) {
  const index b = r.dim(1), kk = k * k;
  tensor<double> t({a, b, k, k});
  for (index i = 0; i < a; ++i)
    for (index j = 0; j < b; ++j)
      for (index w = 0; w < kk; ++w)
        t.data()[(i * b + j) * kk + w] = r.data()[(i * kk + w) * b + j];
  return t;
}

inline double frobenius(const tensor<double>& t) {
  return t.vector().norm();
}

inline double relative_residual(const tensor<double>& x, const tensor<double>& f,
                                const tensor<double>& target) {
  const tensor<double> c = compose(x, f);
  const double den = frobenius(target);
  const double num = (c.vector() - target.vector()).norm();
  return den > 0 ? num / den : num;
}

}  // namespace detail

/// The explicit block-Toeplitz matrix \f$ A(F)[(i,w),(c,v)] = F[c,i](w-v) \f$ of size
/// `(C_in K_t^2) x (C_mid K_x^2)`, so that `vec(compose(X, F)[o]) = A vec(X[o])`. Used by the
/// rank-revealing fallback, by tests and by the reference benchmark.
inline Eigen::MatrixXd toeplitz_matrix(const tensor<double>& f, index kx) {
  netmorph::detail::check_filter(f.shape(), "toeplitz_matrix", "F");
  netmorph::detail::require<value_error>(kx >= 1, "toeplitz_matrix: K_x must be >= 1, got ", kx);
  const index cmid = f.dim(0), cin = f.dim(1), kf = f.dim(2), kt = kf + kx - 1;
  Eigen::MatrixXd a = Eigen::MatrixXd::Zero(cin * kt * kt, cmid * kx * kx);
  for (index i = 0; i < cin; ++i)
    for (index c = 0; c < cmid; ++c)
      for (index vy = 0; vy < kx; ++vy)
        for (index vx = 0; vx < kx; ++vx)
          for (index uy = 0; uy < kf; ++uy)
            for (index ux = 0; ux < kf; ++ux)
              a((i * kt + uy + vy) * kt + ux + vx, (c * kx + vy) * kx + vx) = f(c, i, uy, ux);
  return a;
}

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
tensor<double> solve_second_factor(const tensor<double>& target, const tensor<double>& f, index kx,
                                   Rng& rng, const factor_solve_settings& settings = {},
                                   factor_solve_info* info = nullptr) {
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
  factor_solve_info local;
  factor_solve_info& inf = info ? *info : local;
  const index cout = target.dim(0), cin = target.dim(1), kt = target.dim(2);
  const index cmid = f.dim(0), kf = f.dim(2);

  if (kf == 1 && kx > 1) {
    // Kronecker structure: T[o,i](w) = sum_c X[o,c](w) F[c,i], a (C_out K^2) x C_mid unknown
    // times C_mid x C_in, i.e. the K_x = 1 problem with rows (o, w).
    tensor<double> xr =
        solve_second_factor(detail::spatial_to_rows(target), f, 1, rng, settings, &inf);
    inf.kronecker = true;
    return detail::rows_to_spatial(xr, cout, kx);
  }

  const index m = cin * kt * kt, n = cmid * kx * kx;
  inf.rows = m;
  inf.cols = n;
  inf.rhs = cout;
  inf.underdetermined = n > m;
  inf.kronecker = false;
  tensor<double> x({cout, cmid, kx, kx});
  if (cout == 0 || n == 0) return x;
  std::normal_distribution<double> normal(0.0, 1.0);

  bool done = false;
  if (!settings.force_cod) {
    inf.route = ls_route::gram_cholesky;
    const double tnorm2 = target.vector().squaredNorm();
    auto relative = [&](double r2) {
      return tnorm2 > 0 ? std::sqrt(std::max(0.0, r2) / tnorm2) : std::sqrt(std::max(0.0, r2));
    };
    if (!inf.underdetermined) {
      Eigen::LLT<detail::colmat> llt(detail::gram_cols(f, kx));
      inf.rcond = llt.info() == Eigen::Success ? llt.rcond() : 0.0;
      if (inf.rcond >= settings.min_rcond) {
        tensor<double> b = detail::adjoint_apply(target, f, kx);
        detail::colmat sol = llt.solve(b.matrix(cout, n).transpose());
        x.matrix(cout, n) = sol.transpose();
        // ||T - A X||^2 = ||T||^2 - <X, A^T T> for the least-squares X: free, but it cancels
        // when the residual is small, so small values are measured exactly.
        const double est =
            relative(tnorm2 - (sol.transpose().cwiseProduct(b.matrix(cout, n))).sum());
        inf.relative_residual = est > 1e-6 ? est : detail::relative_residual(x, f, target);
        done = true;
      }
    } else {
      const detail::colmat k = detail::gram_rows(f, kx);
      Eigen::LLT<detail::colmat> llt(k);
      inf.rcond = llt.info() == Eigen::Success ? llt.rcond() : 0.0;
      if (inf.rcond >= settings.min_rcond) {
        // Y0 = T K^-1 gives the minimum-norm solution Y0 A; its squared norm is <Y0, T>.
        detail::colmat rhs = target.matrix(cout, m).transpose();
        detail::colmat y0 = llt.solve(rhs);
        const double rms = std::sqrt(std::max(0.0, y0.cwiseProduct(rhs).sum()) / double(cout * n));
        // X = Z + (T - Z A^T) K^-1 A: minimum norm plus the null-space part of Z.
        tensor<double> z({cout, cmid, kx, kx});
        const double sd = settings.noise * rms;
        if (sd > 0) {
          for (double& v : z)
            v = sd * normal(rng);
          tensor<double> za = compose(z, f);
          rhs -= za.matrix(cout, m).transpose();
          y0 = llt.solve(rhs);
        }
        // A X - T = K Y - (T - A Z): the residual from the m x m Gram matrix instead of a
        // composition with the m x n one; it exposes an inaccurate Cholesky solve.
        inf.relative_residual = relative((k * y0 - rhs).squaredNorm());
        tensor<double> y({cout, cin, kt, kt});
        y.matrix(cout, m) = y0.transpose();
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
      for (index j = 0; j < cout; ++j)
        for (index r = 0; r < n; ++r)
          z(r, j) = settings.noise * rms * normal(rng);
      const Eigen::MatrixXd az = a * z;
      sol += z - cod.solve(az);
    }
    x.matrix(cout, n) = sol.transpose();
  }
  if (!done) inf.relative_residual = detail::relative_residual(x, f, target);
  return x;
}

/// Least-squares solve for the first factor: \f$ \min_X \|compose(F_2, X) - T\| \f$ with `X` of
/// shape `(C_mid, C_in, K_x, K_x)`; the channel-transposed problem of `solve_second_factor`
/// (`compose(F2, X)^T = compose(X^T, F2^T)`), with the same guarantees.
/// \param target `T (C_out, C_in, K_t, K_t)`, \param f2 `F2 (C_out, C_mid, K_2, K_2)`.
template <typename Rng>
tensor<double> solve_first_factor(const tensor<double>& target, const tensor<double>& f2, index kx,
                                  Rng& rng, const factor_solve_settings& settings = {},
                                  factor_solve_info* info = nullptr) {
  netmorph::detail::check_filter(target.shape(), "solve_first_factor", "target");
  netmorph::detail::check_filter(f2.shape(), "solve_first_factor", "F2");
  netmorph::detail::require<shape_error>(target.dim(0) == f2.dim(0),
                                         "solve_first_factor: target has ", target.dim(0),
                                         " output channels, F2 has ", f2.dim(0));
  return transpose_channels(solve_second_factor(transpose_channels(target), transpose_channels(f2),
                                                kx, rng, settings, info));
}

}  // namespace solve
}  // namespace netmorph

#endif  // NETMORPH_SOLVE_FACTOR_LS_HPP
