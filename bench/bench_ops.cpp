// Forward convolution: netmorph::conv2d (shifted rows or blocked im2col, then Eigen GEMMs) against
// a naive 7-loop reference, both timed in the same run so the ratio is not skewed by machine
// drift.
//
// Shapes are ->Args({N, C_in, C_out, H, K}) with W = H, stride 1 and "same" padding (K-1)/2.
// The "FLOP/s" counter counts 2*N*C_out*H_out*W_out*C_in*K*K flops (one multiply and one add per
// weight tap; the bias is not counted) per iteration.

#include <netmorph/ops/conv2d.hpp>
#include <netmorph/tensor.hpp>

#include <benchmark/benchmark.h>
#include <Eigen/Core>

#include <random>
#include <string>

namespace {

using netmorph::index_type;

struct conv_shape {
  index_type n, c_in, c_out, h, k;
  index_type padding() const { return (k - 1) / 2; }
  index_type out() const { return h + 2 * padding() - k + 1; }
  double flops() const {
    return 2.0 * double(n) * double(c_out) * double(out()) * double(out()) * double(c_in) *
           double(k) * double(k);
  }
};

conv_shape shape_of(const benchmark::State& state) {
  return {state.range(0), state.range(1), state.range(2), state.range(3), state.range(4)};
}

template <typename Scalar>
struct conv_operands {
  netmorph::tensor<Scalar> x, weight, bias;
};

// The same seed for ours and naive, so both see identical data.
template <typename Scalar>
conv_operands<Scalar> make_operands(const conv_shape& s) {
  std::mt19937_64 rng(20240611);
  conv_operands<Scalar> ops;
  ops.x = netmorph::tensor<Scalar>::random_normal({s.n, s.c_in, s.h, s.h}, rng);
  ops.weight = netmorph::tensor<Scalar>::random_normal({s.c_out, s.c_in, s.k, s.k}, rng, 0.1);
  ops.bias = netmorph::tensor<Scalar>::random_normal({s.c_out}, rng, 0.1);
  return ops;
}

// Reference: cross-correlation with zero padding, stride 1, straight from the definition
// y[n,o,oy,ox] = b[o] + sum_{i,ky,kx} W[o,i,ky,kx] x[n,i,oy+ky-P,ox+kx-P], accumulated in Scalar.
template <typename Scalar>
netmorph::tensor<Scalar> naive_conv2d(const netmorph::tensor<Scalar>& x,
                                      const netmorph::tensor<Scalar>& weight,
                                      const netmorph::tensor<Scalar>& bias, index_type padding) {
  const index_type n = x.dim(0), c_in = x.dim(1), h = x.dim(2), w = x.dim(3);
  const index_type c_out = weight.dim(0), kh = weight.dim(2), kw = weight.dim(3);
  const index_type ho = h + 2 * padding - kh + 1, wo = w + 2 * padding - kw + 1;
  netmorph::tensor<Scalar> y({n, c_out, ho, wo});
  const Scalar* xp = x.data();
  const Scalar* wp = weight.data();
  const Scalar* bp = bias.data();
  Scalar* yp = y.data();
  for (index_type s = 0; s < n; ++s) {
    for (index_type o = 0; o < c_out; ++o) {
      for (index_type oy = 0; oy < ho; ++oy) {
        for (index_type ox = 0; ox < wo; ++ox) {
          Scalar acc = bp[o];
          for (index_type i = 0; i < c_in; ++i) {
            for (index_type ky = 0; ky < kh; ++ky) {
              const index_type iy = oy + ky - padding;
              if (iy < 0 || iy >= h) continue;
              for (index_type kx = 0; kx < kw; ++kx) {
                const index_type ix = ox + kx - padding;
                if (ix < 0 || ix >= w) continue;
                acc += wp[((o * c_in + i) * kh + ky) * kw + kx] *
                       xp[((s * c_in + i) * h + iy) * w + ix];
              }
            }
          }
          yp[((s * c_out + o) * ho + oy) * wo + ox] = acc;
        }
      }
    }
  }
  return y;
}

void set_counters(benchmark::State& state, const conv_shape& s) {
  state.counters["FLOP/s"] =
      benchmark::Counter(s.flops(), benchmark::Counter::kIsIterationInvariantRate);
}

template <typename Scalar>
void BM_conv2d(benchmark::State& state) {
  const conv_shape s = shape_of(state);
  const conv_operands<Scalar> ops = make_operands<Scalar>(s);
  const netmorph::conv2d_options p{1, s.padding()};
  for (auto _ : state) {
    netmorph::tensor<Scalar> y = netmorph::conv2d(ops.x, ops.weight, ops.bias, p);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, s);
  // Eigen's GEMM is OpenMP-parallel when the benchmark links OpenMP (OMP_NUM_THREADS caps it);
  // the naive loop never is.
  state.counters["threads"] = Eigen::nbThreads();
}

template <typename Scalar>
void BM_naive_conv2d(benchmark::State& state) {
  const conv_shape s = shape_of(state);
  const conv_operands<Scalar> ops = make_operands<Scalar>(s);
  netmorph::tensor<Scalar> y;
  for (auto _ : state) {
    y = naive_conv2d(ops.x, ops.weight, ops.bias, s.padding());
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, s);
  state.counters["threads"] = 1;
  // A fast kernel that computes the wrong thing is not worth timing: check ours against the
  // reference once, outside the timed loop. Both sum the same C_in*K*K products in different
  // orders; n*eps (the rounding bound of a length-n sum) is far above that difference and far
  // below the O(1) error of any indexing bug.
  const netmorph::tensor<Scalar> ours =
      netmorph::conv2d(ops.x, ops.weight, ops.bias, netmorph::conv2d_options{1, s.padding()});
  const double rel = netmorph::relative_error(ours, y);
  const double tol = double(s.c_in * s.k * s.k) * double(Eigen::NumTraits<Scalar>::epsilon());
  if (!(rel <= tol)) {
    state.SkipWithError(
        ("conv2d differs from the naive loop, relative error " + std::to_string(rel)).c_str());
  }
}

void conv_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"N", "Cin", "Cout", "H", "K"});
  b->Args({64, 32, 32, 32, 5});  // a mid-network layer on CIFAR-sized maps
  b->Args({64, 3, 32, 32, 5});   // the first layer on RGB input: a short reduction
  b->Args({16, 64, 64, 16, 3});  // deeper, smaller maps, 3x3
  b->Args({64, 1, 32, 28, 5});   // MNIST first layer: reduction of only 25
  b->Unit(benchmark::kMillisecond);
  // Wall time: with OpenMP the GEMM's worker threads do work the main thread's CPU clock never
  // sees, and when they are starved of cores the main thread waits, which only the wall clock
  // shows. The FLOP/s rate follows the wall clock too.
  b->UseRealTime();
}

// One naive iteration of the largest shape takes about two seconds, so it is timed once; the
// smaller shapes repeat for about a second, enough to average out scheduling noise.
void naive_conv_shapes(benchmark::internal::Benchmark* b) {
  conv_shapes(b);
  b->MinTime(1.0);
}

}  // namespace

BENCHMARK_TEMPLATE(BM_conv2d, float)->Apply(conv_shapes);
BENCHMARK_TEMPLATE(BM_naive_conv2d, float)->Apply(naive_conv_shapes);
BENCHMARK_TEMPLATE(BM_conv2d, double)->Apply(conv_shapes);
BENCHMARK_TEMPLATE(BM_naive_conv2d, double)->Apply(naive_conv_shapes);

BENCHMARK_MAIN();
