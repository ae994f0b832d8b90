#include "support/test_support.hpp"

#include <netmorph/solve/factor_ls.hpp>

#include <Eigen/LU>
#include <Eigen/QR>

#include <cmath>
#include <random>
#include <vector>

using netmorph::shape_error;
using netmorph::tensor;
using netmorph::solve::factor_solve_options;
using netmorph::solve::factor_solve_report;
using nmtest::draw;
using nmtest::idx;

namespace {

Eigen::MatrixXd rows_of(const tensor<double>& t) {
  return t.matrix(t.dim(0), t.size() / t.dim(0));
}

}  // namespace

TEST_CASE("toeplitz_matrix, its Gram matrices and the adjoint agree with the definitions",
          "[solve][property]") {
  auto rng = nmtest::make_rng(40);
  for (int trial = 0; trial < 40; ++trial) {
    const idx cin = draw(rng, 1, 4), cmid = draw(rng, 1, 4), cout = draw(rng, 1, 3),
              kf = draw(rng, 1, 4), kx = draw(rng, 1, 4), kt = kf + kx - 1;
    CAPTURE(trial, cin, cmid, cout, kf, kx);
    auto f = nmtest::randn<double>({cmid, cin, kf, kf}, rng);
    auto x = nmtest::randn<double>({cout, cmid, kx, kx}, rng);
    const Eigen::MatrixXd a = netmorph::solve::toeplitz_matrix(f, kx);
    REQUIRE(a.rows() == cin * kt * kt);
    REQUIRE(a.cols() == cmid * kx * kx);
    // vec(compose(X, F)[o]) = A vec(X[o]) for every o.
    const Eigen::MatrixXd lhs = rows_of(netmorph::compose(x, f));
    const Eigen::MatrixXd rhs = rows_of(x) * a.transpose();
    REQUIRE((lhs - rhs).norm() <= nmtest::reorder_tolerance() * (1 + lhs.norm()));
    const Eigen::MatrixXd ata = a.transpose() * a, aat = a * a.transpose();
    REQUIRE((netmorph::solve::detail::gram_cols(f, kx) - ata).norm() <=
            nmtest::reorder_tolerance() * (1 + ata.norm()));
    REQUIRE((netmorph::solve::detail::gram_rows(f, kx) - aat).norm() <=
            nmtest::reorder_tolerance() * (1 + aat.norm()));
    auto y = nmtest::randn<double>({cout, cin, kt, kt}, rng);
    const Eigen::MatrixXd adj = rows_of(netmorph::solve::detail::adjoint_apply(y, f, kx));
    const Eigen::MatrixXd ref = rows_of(y) * a;
    REQUIRE((adj - ref).norm() <= nmtest::reorder_tolerance() * (1 + ref.norm()));
  }
}

TEST_CASE("the blocked Cholesky and the split Gram matrix agree with Eigen on 1 and 2 threads",
          "[solve][property]") {
  namespace d = netmorph::solve::detail;
  auto rng = nmtest::make_rng(43);
  const int threads_before = Eigen::nbThreads();
  for (int threads : {1, 2}) {
    // Without OpenMP Eigen ignores the request and everything runs on one thread.
    Eigen::setNbThreads(threads);
    for (int trial = 0; trial < 4; ++trial) {
      // Sizes below, at and above the 128 block and the 128 split thresholds.
      const idx n = draw(rng, 100, 420), k = n + draw(rng, -40, 60);
      CAPTURE(threads, trial, n, k);
      const Eigen::MatrixXd a = Eigen::MatrixXd::Random(n, k);
      const Eigen::MatrixXd ref = a * a.transpose();
      const Eigen::MatrixXd g = d::gram(a);
      REQUIRE((g - ref).norm() <= 0.1 * nmtest::reorder_tolerance() * ref.norm());
      REQUIRE((g - g.transpose()).norm() == 0.0);
      const Eigen::MatrixXd spd = ref + 1e-3 * Eigen::MatrixXd::Identity(n, n);
      const d::cholesky chol(spd);
      REQUIRE(chol.ok());
      const Eigen::LLT<Eigen::MatrixXd> llt(spd);
      // Both estimate the same 1-norm condition number by Hager's method.
      CAPTURE(chol.rcond(), llt.rcond());
      REQUIRE(chol.rcond() > 0.1 * llt.rcond());
      REQUIRE(chol.rcond() < 10 * llt.rcond());
      const Eigen::MatrixXd b = Eigen::MatrixXd::Random(n, 70);
      Eigen::MatrixXd x = b;
      chol.solve(x);
      REQUIRE((spd * x - b).norm() <= 1e-9 * b.norm() / llt.rcond());
      REQUIRE((x - llt.solve(b)).norm() <= nmtest::solver_agreement() * x.norm());
      Eigen::MatrixXd w = b;
      chol.solve_lower(w, false);
      REQUIRE((llt.matrixL() * w - b).norm() <= 1e-10 * b.norm() / std::sqrt(llt.rcond()));
      // The residual estimate is within a factor of 10 of the exact value (a chi-square with 32
      // degrees of freedom stays between 3.2 and 320 except with probability < 1e-10).
      const Eigen::MatrixXd r = spd * x - b + 1e-3 * Eigen::MatrixXd::Random(n, 70);
      const double exact = r.squaredNorm();
      const double est = d::residual_norm2(spd, x, Eigen::MatrixXd(spd * x - r), rng);
      CAPTURE(exact, est);
      REQUIRE(est > 0.1 * exact);
      REQUIRE(est < 10 * exact);
    }
    // Many more right-hand sides than rows: L^-1 is formed once and applied as a product.
    {
      const idx m = draw(rng, 8, 70);
      CAPTURE(threads, m);
      const Eigen::MatrixXd a = Eigen::MatrixXd::Random(m, m + 5);
      const Eigen::MatrixXd spd = a * a.transpose();
      const d::cholesky chol(spd);
      REQUIRE(chol.ok());
      const Eigen::LLT<Eigen::MatrixXd> llt(spd);
      const Eigen::MatrixXd b = Eigen::MatrixXd::Random(m, 4 * m + 3);
      for (int repeat = 0; repeat < 2; ++repeat) {  // the second solve reuses the inverse
        Eigen::MatrixXd x = b;
        chol.solve(x);
        REQUIRE((x - llt.solve(b)).norm() <= 1e-9 * x.norm() / llt.rcond());
        Eigen::MatrixXd w = b;
        chol.solve_lower(w, false);
        REQUIRE((llt.matrixL() * w - b).norm() <= 1e-10 * b.norm() / std::sqrt(llt.rcond()));
      }
    }
    // Not positive definite: no factor, rcond 0.
    Eigen::MatrixXd indef = Eigen::MatrixXd::Identity(300, 300);
    indef(250, 250) = -1;
    const d::cholesky bad(indef);
    REQUIRE_FALSE(bad.ok());
    REQUIRE(bad.rcond() == 0.0);
  }
  Eigen::setNbThreads(threads_before);
}

TEST_CASE("the null-space noise has the requested mean and spread and follows the seed",
          "[solve]") {
  std::mt19937_64 a(5), b(5), c(6);
  std::vector<double> x(200000), y(200000), z(200000);
  netmorph::solve::detail::fill_noise(x.data(), idx(x.size()), 2.5, a);
  netmorph::solve::detail::fill_noise(y.data(), idx(y.size()), 2.5, b);
  netmorph::solve::detail::fill_noise(z.data(), idx(z.size()), 2.5, c);
  REQUIRE(x == y);
  REQUIRE(x != z);
  const Eigen::Map<const Eigen::VectorXd> v(x.data(), idx(x.size()));
  const double mean = v.mean(), sd = std::sqrt((v.array() - mean).square().mean());
  // Standard error of the mean 2.5 / sqrt(2e5) = 0.0056, of the std about 0.003.
  REQUIRE(std::abs(mean) < 0.03);
  REQUIRE(std::abs(sd - 2.5) < 0.02);
  REQUIRE(v.cwiseAbs().maxCoeff() <= 2.5 * 2 * std::sqrt(3.0));
  // A value is exactly 0 when the four 16-bit parts sum to their mean: probability about 1e-5.
  REQUIRE(netmorph::nonzero_fraction(tensor<double>({idx(x.size())}, x)) >= 0.9999);
}

TEST_CASE("solve_second_factor: overdetermined systems give the least-squares solution",
          "[solve][property]") {
  auto rng = nmtest::make_rng(41);
  int checked = 0;
  for (int trial = 0; trial < 40; ++trial) {
    const idx cin = draw(rng, 2, 5), cmid = draw(rng, 1, 3), cout = draw(rng, 1, 4),
              kf = draw(rng, 1, 3), kx = draw(rng, 1, 3), kt = kf + kx - 1;
    if (cmid * kx * kx > cin * kt * kt) continue;
    ++checked;
    CAPTURE(trial, cin, cmid, cout, kf, kx);
    auto f = nmtest::randn<double>({cmid, cin, kf, kf}, rng);
    auto t = nmtest::randn<double>({cout, cin, kt, kt}, rng);
    auto x_res = netmorph::solve::solve_second_factor(t, f, kx, rng);
    const tensor<double>& x = x_res.x;
    const factor_solve_report& info = x_res.report;
    REQUIRE_FALSE(info.underdetermined);
    const Eigen::MatrixXd a = netmorph::solve::toeplitz_matrix(f, kx);
    // Tall is not full rank in general (syzygies of the filters, see the next test): the
    // reference is the rank-revealing minimum-norm least-squares solution and its residual.
    const auto cod_ref = a.completeOrthogonalDecomposition();
    const Eigen::MatrixXd ref = cod_ref.solve(rows_of(t).transpose()).transpose();
    const double best = (ref * a.transpose() - rows_of(t)).norm() / rows_of(t).norm();
    const bool full_rank = cod_ref.rank() == a.cols();
    CAPTURE(best, full_rank);
    REQUIRE(info.relative_residual <= best + nmtest::exact_tolerance<double>());
    REQUIRE(netmorph::relative_error(netmorph::compose(x, f), t) <=
            best + nmtest::exact_tolerance<double>());
    if (full_rank) {
      REQUIRE((rows_of(x) - ref).norm() <= nmtest::solver_agreement() * (1 + ref.norm()));
    } else {
      REQUIRE(info.route == netmorph::solve::ls_route::cod);
    }
    factor_solve_options cod;
    cod.force_cod = true;
    auto xc_res = netmorph::solve::solve_second_factor(t, f, kx, rng, cod);
    const tensor<double>& xc = xc_res.x;
    const factor_solve_report& cinfo = xc_res.report;
    REQUIRE(cinfo.route == netmorph::solve::ls_route::cod);
    REQUIRE((rows_of(xc) - ref).norm() <= nmtest::solver_agreement() * (1 + ref.norm()));
  }
  REQUIRE(checked >= 10);
}

TEST_CASE("solve_second_factor: underdetermined systems are least squares, dense, not minimum-norm",
          "[solve][property]") {
  auto rng = nmtest::make_rng(42);
  int checked = 0, exact = 0;
  for (int trial = 0; trial < 60; ++trial) {
    const idx cin = draw(rng, 1, 3), cmid = draw(rng, 3, 12), cout = draw(rng, 1, 4),
              kf = draw(rng, 1, 3), kx = draw(rng, 1, 3), kt = kf + kx - 1;
    if (cmid * kx * kx < cin * kt * kt + 2) continue;
    ++checked;
    CAPTURE(trial, cin, cmid, cout, kf, kx);
    auto f = nmtest::randn<double>({cmid, cin, kf, kf}, rng);
    auto t = nmtest::randn<double>({cout, cin, kt, kt}, rng);
    // More unknowns than equations does not make A(F) surjective: with one input channel and
    // K_x >= K_f, the Koszul syzygies X_c = F_c', X_c' = -F_c lie in its null space. The
    // reference is therefore the optimal residual of a rank-revealing solve.
    const Eigen::MatrixXd a = netmorph::solve::toeplitz_matrix(f, kx);
    const auto cod_ref = a.completeOrthogonalDecomposition();
    const Eigen::MatrixXd mn = cod_ref.solve(rows_of(t).transpose()).transpose();
    const double best = (mn * a.transpose() - rows_of(t)).norm() / rows_of(t).norm();
    CAPTURE(best);
    if (best <= nmtest::residual_tolerance()) ++exact;
    for (bool cod : {false, true}) {
      CAPTURE(cod);
      factor_solve_options s;
      s.force_cod = cod;
      auto x_res = netmorph::solve::solve_second_factor(t, f, kx, rng, s);
      const tensor<double>& x = x_res.x;
      const factor_solve_report& info = x_res.report;
      REQUIRE(info.underdetermined);
      REQUIRE(info.kronecker == (kf == 1 && kx > 1));
      REQUIRE(info.relative_residual <= best + nmtest::residual_tolerance());
      REQUIRE(netmorph::relative_error(netmorph::compose(x, f), t) <=
              best + nmtest::residual_tolerance());
      if (best > nmtest::residual_tolerance())
        REQUIRE(info.route == netmorph::solve::ls_route::cod);
      REQUIRE(netmorph::nonzero_fraction(x) >= 0.99);
      // The null-space component makes it differ from the minimum-norm solution ...
      REQUIRE((rows_of(x) - mn).norm() >= 1e-3 * mn.norm());
      // ... by a vector of the null space only: the minimum-norm part is unchanged.
      const Eigen::MatrixXd back = cod_ref.solve(a * rows_of(x).transpose()).transpose();
      REQUIRE((back - mn).norm() <= nmtest::solver_agreement() * (1 + mn.norm()));
    }
  }
  REQUIRE(checked >= 10);
  REQUIRE(exact >= checked / 2);
}

namespace {

/// A filter `(rows, cols / (k k), k, k)` whose `(rows, cols)` matrix has orthonormal rows or
/// columns: the Q of a Householder QR of a Gaussian matrix.
tensor<double> orthonormal_filter(idx rows, idx cin, idx k, std::mt19937_64& rng) {
  const idx cols = cin * k * k;
  const Eigen::MatrixXd g =
      rows_of(nmtest::randn<double>({std::max(rows, cols), std::min(rows, cols)}, rng));
  const Eigen::MatrixXd q = Eigen::HouseholderQR<Eigen::MatrixXd>(g).householderQ() *
                            Eigen::MatrixXd::Identity(g.rows(), g.cols());
  tensor<double> f({rows, cin, k, k});
  if (rows >= cols)
    f.matrix(rows, cols) = q;
  else
    f.matrix(rows, cols) = q.transpose();
  return f;
}

}  // namespace

TEST_CASE("square systems are solved by one LU factorisation of the explicit matrix",
          "[solve][property]") {
  auto rng = nmtest::make_rng(45);
  for (int trial = 0; trial < 30; ++trial) {
    // K_x = 1 with C_mid = C_in K_f^2, or a Kronecker-reduced K_f = 1 system with C_mid = C_in.
    // Some trials have more than 32 right-hand sides, where the residual is sketched.
    const bool kron = trial % 3 == 2;
    const idx cin = draw(rng, 1, 4), kf = kron ? 1 : draw(rng, 1, 3),
              kx = kron ? draw(rng, 2, 3) : 1;
    const idx cmid = cin * kf * kf, cout = trial % 2 ? draw(rng, 33, 60) : draw(rng, 1, 4);
    const idx kt = kf + kx - 1;
    CAPTURE(trial, cin, cmid, cout, kf, kx);
    auto f = nmtest::randn<double>({cmid, cin, kf, kf}, rng);
    auto t = nmtest::randn<double>({cout, cin, kt, kt}, rng);
    const auto res = netmorph::solve::solve_second_factor(t, f, kx, rng);
    CAPTURE(res.report.rcond, res.report.relative_residual);
    REQUIRE(res.report.route == netmorph::solve::ls_route::lu);
    REQUIRE(res.report.kronecker == kron);
    REQUIRE(res.report.rows == res.report.cols);
    REQUIRE_FALSE(res.report.underdetermined);
    REQUIRE(res.report.relative_residual <= nmtest::residual_tolerance());
    const double err = netmorph::relative_error(netmorph::compose(res.x, f), t);
    REQUIRE(err <= nmtest::residual_tolerance());
    // The sketched residual is an estimate: within a factor 10 of the exact one (or both at the
    // rounding floor).
    REQUIRE(res.report.relative_residual <= 10 * err + 1e-14);
    const Eigen::MatrixXd a = netmorph::solve::toeplitz_matrix(f, kx);
    const Eigen::MatrixXd ref = a.fullPivLu().solve(rows_of(t).transpose()).transpose();
    REQUIRE((rows_of(res.x) - ref).norm() <= nmtest::solver_agreement() * (1 + ref.norm()));
  }
  // A singular square system has no LU solution: the rank-revealing fallback gives the
  // least-squares one.
  auto f = nmtest::randn<double>({3, 3, 1, 1}, rng);
  for (idx i = 0; i < 3; ++i)
    f(2, i, 0, 0) = f(0, i, 0, 0) - f(1, i, 0, 0);
  auto t = nmtest::randn<double>({2, 3, 1, 1}, rng);
  const auto res = netmorph::solve::solve_second_factor(t, f, 1, rng);
  REQUIRE(res.report.route == netmorph::solve::ls_route::cod);
  const Eigen::MatrixXd a = netmorph::solve::toeplitz_matrix(f, 1);
  const Eigen::MatrixXd ref =
      a.completeOrthogonalDecomposition().solve(rows_of(t).transpose()).transpose();
  REQUIRE((rows_of(res.x) - ref).norm() <= nmtest::solver_agreement() * (1 + ref.norm()));
}

TEST_CASE("an orthonormal fixed factor is solved by one product, with the same guarantees",
          "[solve][property]") {
  auto rng = nmtest::make_rng(46);
  for (int trial = 0; trial < 30; ++trial) {
    // Tall (least squares), square, or wide (minimum norm plus null-space noise) A = F^T;
    // every third trial a 1x1 F with K_x > 1 (Kronecker-reduced).
    const int kind = trial % 3;
    const bool kron = trial % 4 == 3;
    const idx cin = draw(rng, 1, 4), kf = kron ? 1 : draw(rng, 1, 2), q = cin * kf * kf;
    const idx cmid = kind == 0 ? draw(rng, 1, q) : kind == 1 ? q : q + draw(rng, 1, 6);
    const idx kx = kron ? draw(rng, 2, 3) : 1, kt = kf + kx - 1;
    const idx cout = trial % 2 ? draw(rng, 33, 50) : draw(rng, 1, 4);
    CAPTURE(trial, kind, cin, cmid, cout, kf, kx);
    const tensor<double> f = orthonormal_filter(cmid, cin, kf, rng);
    auto t = nmtest::randn<double>({cout, cin, kt, kt}, rng);
    const auto res = netmorph::solve::solve_second_factor(t, f, kx, rng);
    const tensor<double>& x = res.x;
    REQUIRE(res.report.route == netmorph::solve::ls_route::orthonormal);
    REQUIRE(res.report.kronecker == kron);
    REQUIRE(res.report.underdetermined == (cmid > q));
    const Eigen::MatrixXd a = netmorph::solve::toeplitz_matrix(f, kx);
    const auto cod_ref = a.completeOrthogonalDecomposition();
    const Eigen::MatrixXd mn = cod_ref.solve(rows_of(t).transpose()).transpose();
    const double best = (mn * a.transpose() - rows_of(t)).norm() / rows_of(t).norm();
    const double err = netmorph::relative_error(netmorph::compose(x, f), t);
    CAPTURE(best, err, res.report.relative_residual);
    REQUIRE(err <= best + nmtest::residual_tolerance());
    if (kind == 0) {  // the least-squares solution itself
      REQUIRE((rows_of(x) - mn).norm() <= nmtest::solver_agreement() * (1 + mn.norm()));
      continue;
    }
    REQUIRE(best <= nmtest::residual_tolerance());
    REQUIRE(res.report.relative_residual <= nmtest::residual_tolerance());
    if (kind == 2) {  // dense, and minimum norm plus a null-space vector only
      REQUIRE(netmorph::nonzero_fraction(x) >= 0.99);
      REQUIRE((rows_of(x) - mn).norm() >= 1e-3 * mn.norm());
      const Eigen::MatrixXd back = cod_ref.solve(a * rows_of(x).transpose()).transpose();
      REQUIRE((back - mn).norm() <= nmtest::solver_agreement() * (1 + mn.norm()));
    }
  }
  // A general factor is not mistaken for an orthonormal one, nor is an orthonormal one scaled.
  auto g = nmtest::randn<double>({3, 5, 1, 1}, rng);
  auto t = nmtest::randn<double>({2, 5, 1, 1}, rng);
  REQUIRE(netmorph::solve::solve_second_factor(t, g, 1, rng).report.route ==
          netmorph::solve::ls_route::gram_cholesky);
  tensor<double> scaled = orthonormal_filter(3, 5, 1, rng);
  scaled.vector() *= 1.0 + 1e-9;
  REQUIRE(netmorph::solve::solve_second_factor(t, scaled, 1, rng).report.route ==
          netmorph::solve::ls_route::gram_cholesky);
}

TEST_CASE("solve_first_factor solves compose(F2, X) = T", "[solve][property]") {
  auto rng = nmtest::make_rng(43);
  for (int trial = 0; trial < 30; ++trial) {
    const idx c0 = draw(rng, 1, 3), c2 = draw(rng, 1, 3), k2 = draw(rng, 1, 3),
              k1 = draw(rng, 1, 3), kt = k1 + k2 - 1;
    const idx c1 = c2 * kt * kt + draw(rng, 0, 3);  // enough unknowns for an exact solve
    CAPTURE(trial, c0, c1, c2, k1, k2);
    auto f2 = nmtest::randn<double>({c2, c1, k2, k2}, rng);
    auto t = nmtest::randn<double>({c2, c0, kt, kt}, rng);
    auto x_res = netmorph::solve::solve_first_factor(t, f2, k1, rng);
    const tensor<double>& x = x_res.x;
    REQUIRE(x.shape() == netmorph::shape_type{c1, c0, k1, k1});
    REQUIRE(netmorph::relative_error(netmorph::compose(f2, x), t) <= nmtest::residual_tolerance());
  }
}

TEST_CASE("a rank-deficient system falls back to the orthogonal decomposition", "[solve]") {
  auto rng = nmtest::make_rng(44);
  // Two identical channels in F make A(F) rank deficient: the Gram matrix is singular.
  auto f = nmtest::randn<double>({2, 1, 1, 1}, rng);
  f(1, 0, 0, 0) = f(0, 0, 0, 0);
  auto t = nmtest::randn<double>({3, 1, 1, 1}, rng);
  auto x_res = netmorph::solve::solve_second_factor(t, f, 1, rng);
  const tensor<double>& x = x_res.x;
  const factor_solve_report& info = x_res.report;
  REQUIRE(info.underdetermined);
  REQUIRE(netmorph::relative_error(netmorph::compose(x, f), t) <= nmtest::reorder_tolerance());
  auto f3 = nmtest::randn<double>({2, 3, 1, 1}, rng);
  for (idx i = 0; i < 3; ++i)
    f3(1, i, 0, 0) = 2 * f3(0, i, 0, 0);  // rank 1, overdetermined
  auto t3 = nmtest::randn<double>({2, 3, 1, 1}, rng);
  auto x3_res = netmorph::solve::solve_second_factor(t3, f3, 1, rng);
  const tensor<double>& x3 = x3_res.x;
  const factor_solve_report& info3 = x3_res.report;
  REQUIRE(info3.route == netmorph::solve::ls_route::cod);
  const Eigen::MatrixXd a = netmorph::solve::toeplitz_matrix(f3, 1);
  const Eigen::MatrixXd ref =
      a.completeOrthogonalDecomposition().solve(rows_of(t3).transpose()).transpose();
  REQUIRE((rows_of(x3) - ref).norm() <= nmtest::residual_tolerance() * (1 + ref.norm()));
}

TEST_CASE("factor solves reject shapes that do not fit", "[solve][error]") {
  std::mt19937_64 rng(1);
  tensor<double> t({2, 3, 3, 3}), f({4, 3, 3, 3});
  NM_REQUIRE_THROWS_WITH(netmorph::solve::solve_second_factor(t, f, 2, rng), shape_error,
                         "solve_second_factor: target kernel 3 != K_f + K_x - 1 = 3 + 2 - 1");
  NM_REQUIRE_THROWS_WITH(
      netmorph::solve::solve_second_factor(t, tensor<double>({4, 2, 1, 1}), 3, rng), shape_error,
      "solve_second_factor: target has 3 input channels, F has 2");
  NM_REQUIRE_THROWS_WITH(
      netmorph::solve::solve_first_factor(t, tensor<double>({3, 4, 1, 1}), 3, rng), shape_error,
      "solve_first_factor: target has 2 output channels, F2 has 3");
  factor_solve_options tiny;
  tiny.force_cod = true;
  tiny.max_explicit_entries = 10;
  NM_REQUIRE_THROWS_WITH(
      netmorph::solve::solve_second_factor(t, tensor<double>({4, 3, 1, 1}), 3, rng, tiny),
      netmorph::numerical_error,
      "the 3 x 4 explicit system is too large for the rank-revealing fallback");
  NM_REQUIRE_THROWS_WITH(netmorph::solve::toeplitz_matrix(f, 0), netmorph::value_error,
                         "toeplitz_matrix: K_x must be >= 1, got 0");
}
