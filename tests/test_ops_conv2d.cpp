#include "support/test_support.hpp"

#include <netmorph/detail/parallel.hpp>

#include <atomic>
#include <new>

using netmorph::conv2d_options;
using netmorph::shape_error;
using netmorph::value_error;
using nmtest::draw;
using nmtest::idx;

TEMPLATE_TEST_CASE("conv2d equals the naive loop on random shapes, strides and paddings",
                   "[conv2d][property]", float, double) {
  auto rng = nmtest::make_rng(10);
  for (int trial = 0; trial < 60; ++trial) {
    const idx n = draw(rng, 1, 3), ci = draw(rng, 1, 5), co = draw(rng, 1, 6);
    const idx kh = draw(rng, 1, 5), kw = draw(rng, 1, 5), stride = draw(rng, 1, 3),
              pad = draw(rng, 0, 3);
    const idx h = draw(rng, std::max<idx>(1, kh - 2 * pad), 11),
              w = draw(rng, std::max<idx>(1, kw - 2 * pad), 11);
    const bool with_bias = trial % 3 != 0;
    CAPTURE(trial, n, ci, co, kh, kw, stride, pad, h, w, with_bias);
    auto x = nmtest::randn<TestType>({n, ci, h, w}, rng);
    auto wt = nmtest::randn<TestType>({co, ci, kh, kw}, rng);
    auto b = with_bias ? nmtest::randn<TestType>({co}, rng) : netmorph::tensor<TestType>();
    auto y = netmorph::conv2d(x, wt, b, conv2d_options{stride, pad});
    auto ref = nmtest::naive_conv2d(x, wt, b, stride, pad);
    REQUIRE(y.shape() == ref.shape());
    REQUIRE(netmorph::relative_error(y, ref) <= nmtest::exact_tolerance<TestType>());
  }
}

TEMPLATE_TEST_CASE("conv2d with a centred delta and 'same' padding is the identity", "[conv2d]",
                   float, double) {
  auto rng = nmtest::make_rng(11);
  auto x = nmtest::randn<TestType>({2, 3, 7, 6}, rng);
  for (idx k : {1, 3, 5}) {
    auto y =
        netmorph::conv2d(x, netmorph::identity_filter<TestType>(3, k), conv2d_options{1, k / 2});
    REQUIRE(y == x);
  }
}

TEMPLATE_TEST_CASE("conv2d layer overload uses the layer's stride, padding and bias", "[conv2d]",
                   float, double) {
  auto rng = nmtest::make_rng(12);
  netmorph::conv2d_weights<TestType> layer{nmtest::randn<TestType>({4, 2, 3, 3}, rng),
                                           nmtest::randn<TestType>({4}, rng), conv2d_options{2, 1}};
  auto x = nmtest::randn<TestType>({1, 2, 9, 9}, rng);
  REQUIRE(netmorph::conv2d(x, layer) ==
          netmorph::conv2d(x, layer.weight, layer.bias, layer.options));
  REQUIRE(netmorph::conv2d(x, layer).shape() == netmorph::shape_type{1, 4, 5, 5});
  auto nb = netmorph::conv2d(x, layer.weight, layer.options);
  REQUIRE(netmorph::relative_error(
              nb, nmtest::naive_conv2d(x, layer.weight, netmorph::tensor<TestType>(), 2, 1)) <=
          nmtest::exact_tolerance<TestType>());
}

TEMPLATE_TEST_CASE("conv2d rejects bad operands with named messages", "[conv2d][error]", float,
                   double) {
  using T = netmorph::tensor<TestType>;
  T x({1, 3, 5, 5}), w({2, 4, 3, 3}), w3({2, 3, 3, 3});
  NM_REQUIRE_THROWS_WITH(netmorph::conv2d(x, w), shape_error,
                         "conv2d: input has 3 channels, weight expects 4");
  NM_REQUIRE_THROWS_WITH(netmorph::conv2d(T({3, 5, 5}), w3), shape_error,
                         "conv2d: input must be NCHW (rank 4), got shape (3, 5, 5)");
  NM_REQUIRE_THROWS_WITH(netmorph::conv2d(x, T({2, 3, 3})), shape_error,
                         "conv2d: weight must be OIHW (rank 4), got shape (2, 3, 3)");
  NM_REQUIRE_THROWS_WITH(netmorph::conv2d(x, w3, T({3})), shape_error,
                         "conv2d: bias must have shape (2), got (3)");
  NM_REQUIRE_THROWS_WITH(netmorph::conv2d(x, w3, conv2d_options{0, 0}), value_error,
                         "conv2d: stride must be >= 1, got 0");
  NM_REQUIRE_THROWS_WITH(netmorph::conv2d(x, w3, conv2d_options{1, -1}), value_error,
                         "conv2d: padding must be >= 0, got -1");
  NM_REQUIRE_THROWS_WITH(netmorph::conv2d(x, T({2, 3, 7, 7})), shape_error,
                         "conv2d: kernel extent 7 does not fit input extent 5 with padding 0");
  NM_REQUIRE_THROWS_WITH(netmorph::conv2d(x, T({2, 3, 0, 3})), shape_error,
                         "conv2d: empty kernel (2, 3, 0, 3)");
}

TEMPLATE_TEST_CASE("conv2d of an empty batch is an empty batch", "[conv2d]", float, double) {
  using T = netmorph::tensor<TestType>;
  auto y = netmorph::conv2d(T({0, 2, 4, 4}), T({3, 2, 3, 3}), conv2d_options{1, 1});
  REQUIRE(y.shape() == netmorph::shape_type{0, 3, 4, 4});
}

namespace {

/// Naive weight, bias and input gradients of `sum(dy * conv2d(x, w, b))`, accumulated in double.
template <typename Scalar>
void naive_conv2d_gradients(const netmorph::tensor<Scalar>& x, const netmorph::tensor<Scalar>& w,
                            const netmorph::tensor<Scalar>& dy, idx stride, idx pad,
                            netmorph::tensor<Scalar>& dw, netmorph::tensor<Scalar>& db,
                            netmorph::tensor<Scalar>& dx) {
  const idx n = x.dim(0), ci = x.dim(1), h = x.dim(2), wd = x.dim(3);
  const idx co = w.dim(0), kh = w.dim(2), kw = w.dim(3), ho = dy.dim(2), wo = dy.dim(3);
  std::vector<double> gw(static_cast<std::size_t>(w.size())),
      gx(static_cast<std::size_t>(x.size()));
  std::vector<double> gb(static_cast<std::size_t>(co));
  for (idx s = 0; s < n; ++s)
    for (idx o = 0; o < co; ++o)
      for (idx py = 0; py < ho; ++py)
        for (idx px = 0; px < wo; ++px) {
          const double g = dy(s, o, py, px);
          gb[static_cast<std::size_t>(o)] += g;
          for (idx i = 0; i < ci; ++i)
            for (idx uy = 0; uy < kh; ++uy)
              for (idx ux = 0; ux < kw; ++ux) {
                const idx iy = py * stride + uy - pad, ix = px * stride + ux - pad;
                if (iy < 0 || iy >= h || ix < 0 || ix >= wd) continue;
                gw[static_cast<std::size_t>(((o * ci + i) * kh + uy) * kw + ux)] +=
                    g * double(x(s, i, iy, ix));
                gx[static_cast<std::size_t>(((s * ci + i) * h + iy) * wd + ix)] +=
                    g * double(w(o, i, uy, ux));
              }
        }
  dw = netmorph::tensor<Scalar>(w.shape());
  db = netmorph::tensor<Scalar>({co});
  dx = netmorph::tensor<Scalar>(x.shape());
  for (idx i = 0; i < dw.size(); ++i)
    dw.data()[i] = static_cast<Scalar>(gw[static_cast<std::size_t>(i)]);
  for (idx i = 0; i < co; ++i)
    db.data()[i] = static_cast<Scalar>(gb[static_cast<std::size_t>(i)]);
  for (idx i = 0; i < dx.size(); ++i)
    dx.data()[i] = static_cast<Scalar>(gx[static_cast<std::size_t>(i)]);
}

}  // namespace

TEMPLATE_TEST_CASE(
    "conv2d's forward and gradient kernels equal the naive loops for every sample block size",
    "[conv2d][property]", float, double) {
  using T = netmorph::tensor<TestType>;
  const double tol = nmtest::exact_tolerance<TestType>();
  auto rng = nmtest::make_rng(13);
  for (int trial = 0; trial < 40; ++trial) {
    // Even trials take the shifted-rows route (stride 1, C_in * K_w >= 16); odd ones draw freely,
    // including paddings above K - 1, where the input gradient needs col2im.
    const bool wide = trial % 2 == 0;
    const idx n = draw(rng, 1, 7), ci = wide ? draw(rng, 4, 8) : draw(rng, 1, 5),
              co = draw(rng, 1, 6);
    const idx kh = draw(rng, 1, 5), kw = wide ? draw(rng, 4, 5) : draw(rng, 1, 5);
    const idx stride = wide ? 1 : draw(rng, 1, 2), pad = draw(rng, 0, 5);
    const idx h = draw(rng, std::max<idx>(1, kh - 2 * pad), 9),
              w = draw(rng, std::max<idx>(1, kw - 2 * pad), 9);
    const conv2d_options p{stride, pad};
    const T x = nmtest::randn<TestType>({n, ci, h, w}, rng);
    const T wt = nmtest::randn<TestType>({co, ci, kh, kw}, rng);
    const T b = nmtest::randn<TestType>({co}, rng);
    const T ref = nmtest::naive_conv2d(x, wt, b, stride, pad);
    const T dy = nmtest::randn<TestType>(ref.shape(), rng);
    T dw_ref, db_ref, dx_ref;
    naive_conv2d_gradients(x, wt, dy, stride, pad, dw_ref, db_ref, dx_ref);
    // Block 0 lets the kernel choose; the others force im2col blocks that need not divide n.
    for (idx block : {idx(0), idx(1), idx(2), idx(3), n + 1}) {
      CAPTURE(trial, n, ci, co, kh, kw, stride, pad, h, w, block);
      netmorph::detail::conv2d_workspace<TestType> ws;
      T y, dx;
      netmorph::detail::conv2d_forward(x, wt, b.data(), p, y, ws, block);
      REQUIRE(y.shape() == ref.shape());
      REQUIRE(netmorph::relative_error(y, ref) <= tol);
      T dw(wt.shape()), db({co});
      netmorph::detail::conv2d_backward_weight(x, dy, kh, kw, p, dw.data(), db.data(), ws, block);
      REQUIRE(netmorph::relative_error(dw, dw_ref) <= tol);
      REQUIRE(netmorph::relative_error(db, db_ref) <= tol);
      netmorph::detail::conv2d_backward_input(dy, wt, p, h, w, dx, ws, block);
      REQUIRE(dx.shape() == x.shape());
      REQUIRE(netmorph::relative_error(dx, dx_ref) <= tol);
    }
  }
}

TEMPLATE_TEST_CASE("conv2d's reused output buffers and workspace give the results of fresh ones",
                   "[conv2d]", float, double) {
  using T = netmorph::tensor<TestType>;
  auto rng = nmtest::make_rng(14);
  const T wt = nmtest::randn<TestType>({5, 6, 3, 3}, rng);
  const T b = nmtest::randn<TestType>({5}, rng);
  netmorph::detail::conv2d_workspace<TestType> ws;
  T y, dx;
  for (idx n : {4, 2, 4, 1}) {
    for (idx block : {idx(0), idx(3)}) {
      CAPTURE(n, block);
      const T x = nmtest::randn<TestType>({n, 6, 7, 8}, rng);
      netmorph::detail::conv2d_forward(x, wt, b.data(), conv2d_options{1, 1}, y, ws, block);
      REQUIRE(netmorph::relative_error(y, netmorph::conv2d(x, wt, b, conv2d_options{1, 1})) <=
              nmtest::exact_tolerance<TestType>());
      netmorph::detail::conv2d_workspace<TestType> fresh_ws;
      T fresh;
      netmorph::detail::conv2d_backward_input(y, wt, conv2d_options{1, 1}, 7, 8, dx, ws, block);
      netmorph::detail::conv2d_backward_input(y, wt, conv2d_options{1, 1}, 7, 8, fresh, fresh_ws,
                                              block);
      REQUIRE(dx == fresh);
    }
  }
}

#if defined(_OPENMP)
#include <omp.h>

TEMPLATE_TEST_CASE("conv2d called from inside a parallel region with nesting enabled",
                   "[conv2d][openmp]", float, double) {
  // The kernels size their per-thread scratch for the team they start; with nested parallelism
  // enabled an inner region must not get more threads than that.
  using T = netmorph::tensor<TestType>;
  auto rng = nmtest::make_rng(15);
  const T wt = nmtest::randn<TestType>({4, 6, 3, 3}, rng);
  const T b = nmtest::randn<TestType>({4}, rng);
  const T x = nmtest::randn<TestType>({6, 6, 9, 9}, rng);
  const T ref = nmtest::naive_conv2d(x, wt, b, 1, 1);
  const int levels = omp_get_max_active_levels();
  omp_set_max_active_levels(2);
  std::vector<T> out(2);
#pragma omp parallel num_threads(2)
  {
    netmorph::detail::conv2d_workspace<TestType> ws;
    netmorph::detail::conv2d_forward(x, wt, b.data(), conv2d_options{1, 1},
                                     out[std::size_t(omp_get_thread_num())], ws);
  }
  omp_set_max_active_levels(levels);
  for (const T& y : out)
    REQUIRE(netmorph::relative_error(y, ref) <= nmtest::exact_tolerance<TestType>());
}

TEMPLATE_TEST_CASE("conv2d's weight gradient is the same on every call, whatever thread ends first",
                   "[conv2d][openmp]", float, double) {
  // Each thread sums its samples, and the partial sums are added in thread order: the same
  // inputs give bit-identical gradients (a seeded training run repeats exactly).
  using T = netmorph::tensor<TestType>;
  auto rng = nmtest::make_rng(16);
  const T x = nmtest::randn<TestType>({8, 6, 9, 9}, rng);
  const T dy = nmtest::randn<TestType>({8, 4, 9, 9}, rng);
  for (idx block : {idx(0), idx(2)}) {  // shifted rows, and im2col blocks
    CAPTURE(block);
    netmorph::detail::conv2d_workspace<TestType> ws;
    T first;
    for (int call = 0; call < 20; ++call) {
      T dw({4, 6, 3, 3}), db({4});
      netmorph::detail::conv2d_backward_weight(x, dy, 3, 3, conv2d_options{1, 1}, dw.data(),
                                               db.data(), ws, block);
      if (call == 0) first = dw;
      REQUIRE(dw == first);
    }
  }
}
#endif

TEST_CASE("an exception inside a parallel region reaches the caller", "[conv2d][parallel]") {
  // With OpenMP an exception may not leave a parallel region (the program would terminate); the
  // kernels' regions catch it and rethrow it on the calling thread (detail::exception_trap). This
  // test is built with OpenMP where CMake finds it, so both loops run on all threads.
  std::atomic<int> calls{0};
  auto failing = [&](netmorph::index_type first, netmorph::index_type) {
    ++calls;
    if (first == 0) throw std::bad_alloc();
  };
  REQUIRE_THROWS_AS(netmorph::detail::for_chunks(1000, 10, failing), std::bad_alloc);
  REQUIRE(calls.load() >= 1);
  REQUIRE_THROWS_AS(netmorph::detail::for_blocks(1000, 10, failing), std::bad_alloc);
  auto ok = [&](netmorph::index_type, netmorph::index_type) {};
  REQUIRE_NOTHROW(netmorph::detail::for_chunks(1000, 10, ok));
  netmorph::detail::exception_trap trap;
  trap.run([] { throw netmorph::value_error("first"); });
  trap.run([] { throw netmorph::value_error("second"); });  // skipped: the trap has failed
  NM_REQUIRE_THROWS_WITH(trap.rethrow(), netmorph::value_error, "first");
}
