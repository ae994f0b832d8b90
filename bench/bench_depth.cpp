// One Algorithm-1 step of depth morphing (both least-squares half-steps, build + solve) for a
// parent G (C2, C0, K, K) with K = K1 + K2 - 1, so G~ = G:
//   F2-step  F2 = argmin ||compose(F2, F1) - G||  with F1 the random initialisation,
//   F1-step  F1 = argmin ||compose(F2, F1) - G||  with the F2 just found,
// done by netmorph::solve (structured Gram matrix + Cholesky) against the same two half-steps on
// the explicit block-Toeplitz matrices solved by Eigen's HouseholderQR. Both run in one program,
// so the ratio is not skewed by machine drift.
//
// Shapes are ->Args({C0, C1, C2, K1, K2}). The library always solves in double; the <float>
// variants generate G and F1 as float tensors and cast them to double inside the timed region.
// Counters, both computed outside the timed loop or independent of it:
//   residual   ||G - compose(F2, F1)|| / ||G|| after the step (in double)
//   QR-FLOP/s  the flops of the dense Householder reference (factorisations, Q^T applied to the
//              right-hand sides, triangular solves) per second of wall time: the reference's
//              achieved rate, and for ours the rate at which it would have had to run to match.
//              The numerator is the same for both, so the two rates compare like the times.
//   threads    Eigen's OpenMP threads (OMP_NUM_THREADS caps them)
//   cod        (ours) half-steps that took the rank-revealing COD fallback instead of Cholesky
//
// BM_deepen_square/d times the whole public call a user makes on a square dense layer,
// netmorph::deepen(dense_weights{W (d, d), b (d)}) with default options (C1 = d, K1 = K2 = 1:
// random start, half-step, exactness check, biases, report and probes), against
// BM_dense_qr_square/d, Eigen's HouseholderQR of the same d x d matrix: the deepen costs a small
// multiple of one dense factorisation. Their QR-FLOP/s counter is 4/3 d^3 per second for both.

#include <netmorph/morph/depth.hpp>
#include <netmorph/ops/compose.hpp>
#include <netmorph/ops/dense.hpp>
#include <netmorph/solve/factor_ls.hpp>
#include <netmorph/tensor.hpp>

#include <benchmark/benchmark.h>
#include <Eigen/Core>
#include <Eigen/QR>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <utility>

#ifdef __GLIBC__
#include <malloc.h>
#endif

namespace {

using netmorph::index_type;
using netmorph::tensor;

constexpr std::uint64_t data_seed = 20240611;
constexpr std::uint64_t solve_seed = 7;

struct depth_shape {
  index_type c0, c1, c2, k1, k2;
  index_type kt() const { return k1 + k2 - 1; }
  // Rows and columns of the two explicit systems, F2-step A(F1) and F1-step A(F2^T).
  index_type f2_rows() const { return c0 * kt() * kt(); }
  index_type f2_cols() const { return c1 * k2 * k2; }
  index_type f1_rows() const { return c2 * kt() * kt(); }
  index_type f1_cols() const { return c1 * k1 * k1; }
};

depth_shape shape_of(const benchmark::State& state) {
  return {state.range(0), state.range(1), state.range(2), state.range(3), state.range(4)};
}

// Householder QR of an m x n matrix (min(m, n) reflectors), Q^T applied to `rhs` columns and the
// triangular solve with the leading min(m, n) block.
double dense_qr_flops(index_type m, index_type n, index_type rhs) {
  const double p = double(std::min(m, n)), q = double(std::max(m, n)), r = double(rhs);
  return 2.0 * q * p * p - 2.0 * p * p * p / 3.0 + 4.0 * r * (double(m) * p - p * p / 2.0) +
         r * p * p;
}

double reference_flops(const depth_shape& s) {
  return dense_qr_flops(s.f2_rows(), s.f2_cols(), s.c2) +
         dense_qr_flops(s.f1_rows(), s.f1_cols(), s.c0);
}

template <typename Scalar>
struct depth_operands {
  tensor<Scalar> g, f1;
};

// The same seed for ours and the reference, so both see identical data. F1 is scaled as
// netmorph::detail::algorithm1 initialises it.
template <typename Scalar>
depth_operands<Scalar> make_operands(const depth_shape& s) {
  std::mt19937_64 rng(data_seed);
  depth_operands<Scalar> ops;
  ops.g = tensor<Scalar>::random_normal({s.c2, s.c0, s.kt(), s.kt()}, rng);
  ops.f1 = tensor<Scalar>::random_normal({s.c1, s.c0, s.k1, s.k1}, rng,
                                         1.0 / std::sqrt(double(s.c0 * s.k1 * s.k1)));
  return ops;
}

// Double data is used as is; float data is converted (and the conversion is timed).
template <typename Scalar>
tensor<double> as_double(const tensor<Scalar>& t) {
  return t.template cast<double>();
}
const tensor<double>& as_double(const tensor<double>& t) {
  return t;
}

struct step_result {
  tensor<double> f1, f2;
  int cod = 0;
};

template <typename Scalar>
step_result algo1_step(const depth_operands<Scalar>& ops, const depth_shape& s,
                       const netmorph::solve::factor_solve_options& settings) {
  const tensor<double>& g = as_double(ops.g);
  const tensor<double>& f1_init = as_double(ops.f1);
  std::mt19937_64 rng(solve_seed);
  step_result r;
  netmorph::solve::factor_solve_result second =
      netmorph::solve::solve_second_factor(g, f1_init, s.k2, rng, settings);
  r.f2 = std::move(second.x);
  r.cod += second.report.route == netmorph::solve::ls_route::cod;
  netmorph::solve::factor_solve_result first =
      netmorph::solve::solve_first_factor(g, r.f2, s.k1, rng, settings);
  r.f1 = std::move(first.x);
  r.cod += first.report.route == netmorph::solve::ls_route::cod;
  return r;
}

// Reference: A X^T = T^T on the explicit block-Toeplitz matrix, by Householder QR (least squares
// when overdetermined, the basic solution with zeros below the leading block when not).
template <typename Scalar>
step_result dense_qr_step(const depth_operands<Scalar>& ops, const depth_shape& s) {
  const tensor<double>& g = as_double(ops.g);
  const tensor<double>& f1_init = as_double(ops.f1);
  step_result r;
  {
    // F2-step: A(F1) is (C0 Kt^2) x (C1 K2^2); right-hand sides are the C2 rows of G.
    const Eigen::MatrixXd a = netmorph::solve::toeplitz_matrix(f1_init, s.k2);
    const Eigen::MatrixXd x = a.householderQr().solve(g.matrix(s.c2, s.f2_rows()).transpose());
    r.f2 = tensor<double>({s.c2, s.c1, s.k2, s.k2});
    r.f2.matrix(s.c2, s.f2_cols()) = x.transpose();
  }
  {
    // F1-step, channel-transposed: A(F2^T) is (C2 Kt^2) x (C1 K1^2); right-hand sides are the
    // C0 rows of G^T, unknowns the C0 rows of F1^T.
    const tensor<double> gt = netmorph::transpose_channels(g);
    const Eigen::MatrixXd a =
        netmorph::solve::toeplitz_matrix(netmorph::transpose_channels(r.f2), s.k1);
    const Eigen::MatrixXd y = a.householderQr().solve(gt.matrix(s.c0, s.f1_rows()).transpose());
    tensor<double> f1t({s.c0, s.c1, s.k1, s.k1});
    f1t.matrix(s.c0, s.f1_cols()) = y.transpose();
    r.f1 = netmorph::transpose_channels(f1t);
  }
  return r;
}

double step_residual(const tensor<double>& g, const step_result& r) {
  const tensor<double> c = netmorph::compose(r.f2, r.f1);
  return (c.vector() - g.vector()).norm() / g.vector().norm();
}

void set_counters(benchmark::State& state, const depth_shape& s, double residual) {
  state.counters["residual"] = residual;
  state.counters["QR-FLOP/s"] =
      benchmark::Counter(reference_flops(s), benchmark::Counter::kIsIterationInvariantRate);
  // Eigen's GEMM (inside Cholesky, QR and compose) is OpenMP-parallel when the benchmark links
  // OpenMP.
  state.counters["threads"] = Eigen::nbThreads();
}

template <typename Scalar>
void BM_algo1_step(benchmark::State& state) {
  const depth_shape s = shape_of(state);
  const depth_operands<Scalar> ops = make_operands<Scalar>(s);
  // What detail::algorithm1 passes with deepen's defaults.
  const netmorph::solve::factor_solve_options settings =
      netmorph::detail::half_step_options(netmorph::deepen_options{});
  step_result r;
  for (auto _ : state) {
    r = algo1_step(ops, s, settings);
    benchmark::DoNotOptimize(r.f1.data());
    benchmark::ClobberMemory();
  }
  const double residual = step_residual(as_double(ops.g), r);
  set_counters(state, s, residual);
  state.counters["cod"] = r.cod;
  // When the F1-step is underdetermined (C1 K1^2 >= C2 Kt^2, true of every shape below) the step
  // must end exact; the library itself holds an underdetermined solve to exact_tolerance.
  if (s.f1_cols() >= s.f1_rows() && !(residual <= settings.exact_tolerance)) {
    state.SkipWithError(
        ("the step is not exact, relative residual " + std::to_string(residual)).c_str());
  }
}

template <typename Scalar>
void BM_dense_qr_step(benchmark::State& state) {
  const depth_shape s = shape_of(state);
  const depth_operands<Scalar> ops = make_operands<Scalar>(s);
  step_result r;
  for (auto _ : state) {
    r = dense_qr_step(ops, s);
    benchmark::DoNotOptimize(r.f1.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, s, step_residual(as_double(ops.g), r));
}

// A step that takes longer than the default minimum time (0.5 s) is timed once; the reference's
// largest shape takes about 40 s on one core, so repeating it is not affordable. Google Benchmark
// appends "/real_time" to every name because of UseRealTime().
void depth_shapes(benchmark::internal::Benchmark* b) {
  b->Args({784, 50, 10, 1, 1});       // MNIST-sized dense layer (K = 1)
  b->Args({1024, 4096, 1024, 1, 1});  // wide dense layer: both half-steps underdetermined
  b->Args({32, 128, 32, 5, 1});       // 5x5 parent, F1-step reduced by the Kronecker structure
  b->Args({64, 256, 64, 3, 1});
  b->Args({256, 1024, 256, 3, 1});
  b->Args({64, 256, 64, 3, 3});  // K = 5 split into two 3x3 layers: no Kronecker reduction
  b->Args({128, 512, 128, 3, 3});
  b->Args({512, 2048, 512, 3, 1});  // the largest: explicit F1-step matrix 4608 x 18432
  b->Unit(benchmark::kMillisecond);
  // Wall time: OpenMP worker threads do work the main thread's CPU clock never sees.
  b->UseRealTime();
}

// A random dense layer W (d, d) with std 1/sqrt(d) and a bias, the same data for ours and the
// reference.
template <typename Scalar>
netmorph::dense_weights<Scalar> square_parent(index_type d) {
  std::mt19937_64 rng(data_seed);
  netmorph::dense_weights<Scalar> p;
  p.weight = tensor<Scalar>::random_normal({d, d}, rng, 1.0 / std::sqrt(double(d)));
  p.bias = tensor<Scalar>::random_normal({d}, rng);
  return p;
}

template <typename Scalar>
void BM_deepen_square(benchmark::State& state) {
  const index_type d = state.range(0);
  const netmorph::dense_weights<Scalar> parent = square_parent<Scalar>(d);
  netmorph::deepen_result<netmorph::dense_weights<Scalar>> r;
  for (auto _ : state) {
    r = netmorph::deepen(parent, netmorph::deepen_options{});
    benchmark::DoNotOptimize(r.first.weight.data());
    benchmark::ClobberMemory();
  }
  state.counters["residual"] = r.report.relative_residual.value_or(-1.0);
  state.counters["QR-FLOP/s"] =
      benchmark::Counter(dense_qr_flops(d, d, 0), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["threads"] = Eigen::nbThreads();
  state.counters["cod"] = r.report.depth && r.report.depth->fallback;
  if (!r.report.exact) state.SkipWithError("the square deepen is not exact");
}

void BM_dense_qr_square(benchmark::State& state) {
  const index_type d = state.range(0);
  const netmorph::dense_weights<double> parent = square_parent<double>(d);
  const Eigen::MatrixXd a = parent.weight.matrix(d, d);
  for (auto _ : state) {
    Eigen::HouseholderQR<Eigen::MatrixXd> qr(a);
    benchmark::DoNotOptimize(qr.matrixQR().data());
    benchmark::ClobberMemory();
  }
  state.counters["QR-FLOP/s"] =
      benchmark::Counter(dense_qr_flops(d, d, 0), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["threads"] = Eigen::nbThreads();
}

void square_shapes(benchmark::internal::Benchmark* b) {
  for (index_type d : {1024, 2048, 4096})
    b->Arg(d);
  b->Unit(benchmark::kMillisecond);
  b->UseRealTime();
}

}  // namespace

BENCHMARK_TEMPLATE(BM_algo1_step, float)->Apply(depth_shapes);
BENCHMARK_TEMPLATE(BM_dense_qr_step, float)->Apply(depth_shapes);
BENCHMARK_TEMPLATE(BM_algo1_step, double)->Apply(depth_shapes);
BENCHMARK_TEMPLATE(BM_dense_qr_step, double)->Apply(depth_shapes);
BENCHMARK_TEMPLATE(BM_deepen_square, float)->Apply(square_shapes);
BENCHMARK_TEMPLATE(BM_deepen_square, double)->Apply(square_shapes);
BENCHMARK(BM_dense_qr_square)->Apply(square_shapes);

int main(int argc, char** argv) {
#ifdef __GLIBC__
  // glibc serves every block above 128 KiB (raised dynamically up to 32 MiB) with a fresh mmap and
  // trims the heap on free, so each half-step's temporaries were page-faulted in anew: up to 40 %
  // of a small step. A long-running trainer's allocator keeps such memory; so does this harness,
  // for ours and the reference alike.
  mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);
  mallopt(M_TRIM_THRESHOLD, 1024 * 1024 * 1024);
#endif
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
