#include "support/test_support.hpp"

#include <cmath>
#include <limits>

using netmorph::shape_error;
using netmorph::value_error;
using nmtest::idx;

TEMPLATE_TEST_CASE("tensor has row-major shape, strides and size", "[tensor]", float, double) {
  netmorph::tensor<TestType> t({2, 3, 4});
  REQUIRE(t.rank() == 3);
  REQUIRE(t.size() == 24);
  REQUIRE(t.shape() == netmorph::shape_type{2, 3, 4});
  REQUIRE(t.strides() == netmorph::shape_type{12, 4, 1});
  REQUIRE(t.dim(-1) == 4);
  for (TestType v : t)
    REQUIRE(v == TestType(0));
  t(1, 2, 3) = TestType(7);
  REQUIRE(t.data()[23] == TestType(7));
  REQUIRE(t.at(1, 2, 3) == TestType(7));
}

TEMPLATE_TEST_CASE("tensor::at is bounds-checked and names idx and shape", "[tensor]", float,
                   double) {
  netmorph::tensor<TestType> t({2, 3});
  NM_REQUIRE_THROWS_WITH(t.at(2, 0), shape_error,
                         "tensor::at: index (2, 0) out of range for shape (2, 3)");
  NM_REQUIRE_THROWS_WITH(t.at(0, -1), shape_error, "(0, -1)");
  NM_REQUIRE_THROWS_WITH(t.at(0), shape_error, "index (0) out of range for shape (2, 3)");
  NM_REQUIRE_THROWS_WITH(t.at(0, 0, 0), shape_error, "index (0, 0, 0)");
  NM_REQUIRE_THROWS_WITH(t.dim(2), shape_error, "tensor::dim: dimension 2 out of range");
}

TEMPLATE_TEST_CASE("tensor construction validates shapes and value counts", "[tensor]", float,
                   double) {
  NM_REQUIRE_THROWS_WITH(netmorph::tensor<TestType>({2, -1}), shape_error,
                         "tensor: negative extent in shape (2, -1)");
  NM_REQUIRE_THROWS_WITH(netmorph::tensor<TestType>({2, 2}, std::vector<TestType>(3)), shape_error,
                         "tensor: shape (2, 2) holds 4 values, got 3");
  // A shape beyond the documented limit, or one whose element count overflows, is refused before
  // anything is allocated.
  NM_REQUIRE_THROWS_WITH(netmorph::tensor<TestType>({idx(1) << 40, 3, 3, 3}), value_error,
                         "tensor: shape (1099511627776, 3, 3, 3) has 2.96868e+13 elements, more "
                         "than max_tensor_elements = 17179869184");
  NM_REQUIRE_THROWS_WITH(netmorph::tensor<TestType>({idx(1) << 62, 8}), value_error,
                         "tensor: shape (4611686018427387904, 8) has 3.68935e+19 elements");
  NM_REQUIRE_THROWS_WITH(netmorph::tensor<TestType>({2, 3}).reshape({idx(1) << 35, 2}), value_error,
                         "tensor::reshape: shape (34359738368, 2) has");
  REQUIRE(netmorph::tensor<TestType>({0, idx(1) << 40}).size() == 0);
  netmorph::tensor<TestType> e;
  REQUIRE(e.empty());
  REQUIRE(e.rank() == 0);
  netmorph::tensor<TestType> f({2, 2}, TestType(1.5));
  for (TestType v : f)
    REQUIRE(v == TestType(1.5));
}

TEMPLATE_TEST_CASE("matrix and vector views share storage with the tensor", "[tensor]", float,
                   double) {
  auto rng = nmtest::make_rng(1);
  auto t = nmtest::randn<TestType>({3, 2, 2}, rng);
  auto m = t.matrix();
  REQUIRE(m.rows() == 3);
  REQUIRE(m.cols() == 4);
  REQUIRE(m.data() == t.data());
  m(2, 3) = TestType(42);
  REQUIRE(t(2, 1, 1) == TestType(42));
  auto v = t.vector();
  REQUIRE(v.size() == 12);
  REQUIRE(v(11) == TestType(42));
  auto m2 = t.matrix(6, 2);
  REQUIRE(m2(5, 1) == TestType(42));
  NM_REQUIRE_THROWS_WITH(t.matrix(5, 2), shape_error,
                         "tensor::matrix: cannot view (3, 2, 2) (12 values) as a 5 x 2 matrix");
}

TEMPLATE_TEST_CASE("reshape keeps the data and checks the size", "[tensor]", float, double) {
  auto rng = nmtest::make_rng(2);
  auto t = nmtest::randn<TestType>({2, 3, 4}, rng);
  auto r = t.reshape({6, 4});
  REQUIRE(r.shape() == netmorph::shape_type{6, 4});
  REQUIRE(r.strides() == netmorph::shape_type{4, 1});
  for (idx i = 0; i < t.size(); ++i)
    REQUIRE(r.data()[i] == t.data()[i]);
  NM_REQUIRE_THROWS_WITH(
      t.reshape({5, 5}), shape_error,
      "tensor::reshape: cannot view (2, 3, 4) (24 values) as (5, 5) (25 values)");
  auto moved = std::move(r).reshape({24});
  REQUIRE(moved.rank() == 1);
}

TEMPLATE_TEST_CASE("comparison helpers measure what they claim", "[tensor]", float, double) {
  netmorph::tensor<TestType> a({3}, std::vector<TestType>{1, 2, 2});
  netmorph::tensor<TestType> b({3}, std::vector<TestType>{1, 2, 4});
  REQUIRE(netmorph::max_abs_error(a, b) == Approx(2.0));
  REQUIRE(netmorph::relative_error(a, b) == Approx(2.0 / std::sqrt(21.0)));
  REQUIRE(netmorph::relative_error(a, a) == 0.0);
  REQUIRE(netmorph::all_close(a, a, 0.0));
  REQUIRE_FALSE(netmorph::all_close(a, b, 0.4));
  REQUIRE(netmorph::all_close(a, b, 0.5));
  REQUIRE(netmorph::nonzero_fraction(
              netmorph::tensor<TestType>({4}, std::vector<TestType>{0, 1, 0, 2})) == 0.5);
  REQUIRE(netmorph::stddev(b) == Approx(std::sqrt(14.0 / 9.0)));
  REQUIRE(a != b);
  REQUIRE(a == a.template cast<double>().template cast<TestType>());
  netmorph::tensor<TestType> c({2});
  NM_REQUIRE_THROWS_WITH(netmorph::relative_error(a, c), shape_error,
                         "relative_error: shapes (3) and (2) differ");
  NM_REQUIRE_THROWS_WITH(netmorph::max_abs_error(a, c), shape_error,
                         "max_abs_error: shapes (3) and (2) differ");
  REQUIRE_FALSE(netmorph::all_close(a, c, 1.0));
}

TEMPLATE_TEST_CASE("require_finite names the function and the first bad index", "[tensor]", float,
                   double) {
  netmorph::tensor<TestType> t({2, 2});
  REQUIRE_NOTHROW(netmorph::require_finite(t, "f", "weight"));
  t(1, 0) = std::numeric_limits<TestType>::quiet_NaN();
  NM_REQUIRE_THROWS_WITH(netmorph::require_finite(t, "deepen", "weight"), value_error,
                         "deepen: weight holds nan at index (1, 0) (shape (2, 2))");
  t(1, 0) = std::numeric_limits<TestType>::infinity();
  NM_REQUIRE_THROWS_WITH(netmorph::require_finite(t, "deepen", "bias"), value_error, "inf");
  netmorph::tensor<TestType> u({2});
  u(1) = -std::numeric_limits<TestType>::infinity();
  NM_REQUIRE_THROWS_WITH(netmorph::require_finite(u, "deepen", "bias"), value_error,
                         "-inf at index (1)");
}

TEMPLATE_TEST_CASE("require_finite finds the first bad value in any block, of any kind", "[tensor]",
                   float, double) {
  // The test runs in blocks of 4096: a value at either edge of a block, in the last partial
  // block, or two bad values in one block, is found at the right index.
  using lim = std::numeric_limits<TestType>;
  const TestType bad[] = {lim::quiet_NaN(), lim::signaling_NaN(), lim::infinity(), -lim::infinity(),
                          -lim::quiet_NaN()};
  for (idx at : {idx(0), idx(4095), idx(4096), idx(8191), idx(10000)}) {
    for (TestType b : bad) {
      netmorph::tensor<TestType> t({10001}, TestType(1));
      t(0) = lim::max();  // finite extremes are not flagged
      t(1) = lim::denorm_min();
      t(2) = -lim::max();
      t(at) = b;
      if (at + 3 < t.size()) t(at + 3) = b;
      REQUIRE(netmorph::detail::first_non_finite(t.data(), t.size()) == at);
      NM_REQUIRE_THROWS_WITH(netmorph::require_finite(t, "f", "w"), value_error,
                             "at index (" + std::to_string(at) + ")");
    }
  }
  netmorph::tensor<TestType> fine({10001}, lim::max());
  REQUIRE(netmorph::detail::first_non_finite(fine.data(), fine.size()) == -1);
  REQUIRE(netmorph::detail::first_non_finite(fine.data(), 0) == -1);
}

TEMPLATE_TEST_CASE("a new tensor is zero even where freed storage held values", "[tensor]", float,
                   double) {
  // Storage is calloc'd (a zero tensor costs no clearing pass); value-initialisation is skipped,
  // so this checks that reused memory is zero too, for small blocks (from the heap's free lists)
  // and large ones (mapped pages).
  for (idx n : {idx(7), idx(1000), idx(1) << 20}) {
    for (int round = 0; round < 3; ++round) {
      { netmorph::tensor<TestType> dirty({n}, TestType(-3.5)); }
      netmorph::tensor<TestType> t({n});
      idx nonzero = 0;
      for (TestType v : t)
        nonzero += v != TestType(0) || std::signbit(v);
      REQUIRE(nonzero == 0);
    }
  }
  netmorph::tensor<TestType> a({3}, {1, 2, 3});
  netmorph::tensor<TestType> b = a;  // copies hold the values, not zeros
  REQUIRE(b == a);
  b = netmorph::tensor<TestType>({2, 2});
  REQUIRE(b.size() == 4);
  REQUIRE(b(1, 1) == TestType(0));
  REQUIRE(a.template cast<double>()(2) == 3.0);
}

TEST_CASE("a zero extent does not let the other extents overflow the strides", "[tensor][error]") {
  NM_REQUIRE_THROWS_WITH(netmorph::tensor<float>({0, idx(1) << 34, idx(1) << 34}),
                         netmorph::value_error,
                         "tensor: shape (0, 17179869184, 17179869184) has extents whose product "
                         "overflows its strides");
  REQUIRE(netmorph::tensor<float>({0, 3, 4}).size() == 0);
}
