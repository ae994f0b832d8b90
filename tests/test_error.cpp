#include "support/test_support.hpp"

#include <limits>
#include <stdexcept>
#include <type_traits>

TEST_CASE("every netmorph exception derives from netmorph::error and std::runtime_error",
          "[error]") {
  STATIC_REQUIRE(std::is_base_of<std::runtime_error, netmorph::error>::value);
  STATIC_REQUIRE(std::is_base_of<netmorph::error, netmorph::shape_error>::value);
  STATIC_REQUIRE(std::is_base_of<netmorph::error, netmorph::value_error>::value);
  STATIC_REQUIRE(std::is_base_of<netmorph::error, netmorph::numerical_error>::value);
  STATIC_REQUIRE(std::is_base_of<netmorph::error, netmorph::io_error>::value);
}

TEST_CASE("the library's refusals are caught by the root with the function and values named",
          "[error]") {
  const netmorph::tensor<double> t({2, 3});
  try {
    (void)t.at(1, 5);
    FAIL("tensor::at did not throw");
  } catch (const netmorph::error& e) {
    REQUIRE(dynamic_cast<const netmorph::shape_error*>(&e) != nullptr);
    REQUIRE(std::string(e.what()) == "tensor::at: index (1, 5) out of range for shape (2, 3)");
  }
  netmorph::conv2d_weights<double> parent{netmorph::tensor<double>({2, 2, 3, 3}), {}, {}};
  parent.weight(0, 1, 2, 2) = std::numeric_limits<double>::quiet_NaN();
  try {
    netmorph::deepen(parent);
    FAIL("deepen did not throw");
  } catch (const std::runtime_error& e) {
    REQUIRE(dynamic_cast<const netmorph::value_error*>(&e) != nullptr);
    REQUIRE(std::string(e.what()) ==
            "deepen: weight holds nan at index (0, 1, 2, 2) (shape (2, 2, 3, 3))");
  }
}

TEST_CASE("detail::require throws the requested type with the concatenated message", "[error]") {
  NM_REQUIRE_THROWS_WITH(
      netmorph::detail::require<netmorph::value_error>(false, "f: got ", 3, "x", 2.5),
      netmorph::value_error, "f: got 3x2.5");
  REQUIRE_NOTHROW(netmorph::detail::require<netmorph::value_error>(true, "never"));
}
