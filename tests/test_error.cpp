#include "support/test_support.hpp"

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

TEST_CASE("exceptions carry their message and are caught by the root", "[error]") {
  try {
    throw netmorph::io_error("load: file 'x' is truncated");
  } catch (const netmorph::error& e) {
    REQUIRE(std::string(e.what()) == "load: file 'x' is truncated");
  }
  REQUIRE_THROWS_AS(throw netmorph::shape_error("a"), std::runtime_error);
}

TEST_CASE("detail::require throws the requested type with the concatenated message", "[error]") {
  NM_REQUIRE_THROWS_WITH(
      netmorph::detail::require<netmorph::value_error>(false, "f: got ", 3, "x", 2.5),
      netmorph::value_error, "f: got 3x2.5");
  REQUIRE_NOTHROW(netmorph::detail::require<netmorph::value_error>(true, "never"));
}
