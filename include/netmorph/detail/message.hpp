#ifndef NETMORPH_DETAIL_MESSAGE_HPP
#define NETMORPH_DETAIL_MESSAGE_HPP

#include <netmorph/error.hpp>

#include <cstddef>
#include <sstream>
#include <string>
#include <vector>

namespace netmorph {
namespace detail {

/// A string stream that lets an exception from its buffer (`std::bad_alloc`) through: by default
/// a stream swallows it and sets badbit, which would truncate a message silently and hide the
/// failure from the caller (and from the allocation-failure tests of the model morphs).
inline void throwing(std::ostringstream& os) {
  os.exceptions(std::ios::badbit);
}

/// Concatenates anything streamable into one string; used to build error messages.
template <typename... Args>
std::string cat(const Args&... args) {
  std::ostringstream os;
  throwing(os);
  os.precision(6);
  (os << ... << args);
  return os.str();
}

/// Formats a shape as "(2, 3, 5, 5)".
inline std::string shape_string(const std::vector<std::ptrdiff_t>& shape) {
  std::ostringstream os;
  throwing(os);
  os << '(';
  for (std::size_t i = 0; i < shape.size(); ++i)
    os << (i ? ", " : "") << shape[i];
  os << ')';
  return os.str();
}

/// Throws `Error` with the concatenation of `args` when `condition` is false.
template <typename Error, typename... Args>
void require(bool condition, const Args&... args) {
  if (!condition) throw Error(cat(args...));
}

}  // namespace detail
}  // namespace netmorph

/// Internal invariant check: a failure is a bug in netmorph, not in the caller's input. Always on,
/// because a morph must never return a wrong answer quietly; the cost is negligible next to the
/// numerical work it guards.
#define NETMORPH_ASSERT(cond)                                                                     \
  do {                                                                                            \
    if (!(cond))                                                                                  \
      throw ::netmorph::error(::netmorph::detail::cat("netmorph internal error: ", #cond, " at ", \
                                                      __FILE__, ":", __LINE__));                  \
  } while (0)

#endif  // NETMORPH_DETAIL_MESSAGE_HPP
