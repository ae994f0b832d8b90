#ifndef NETMORPH_ERROR_HPP
#define NETMORPH_ERROR_HPP

/// \file error.hpp
/// The exception hierarchy of netmorph. Every run-time failure caused by the caller's input
/// throws one of these; the message always starts with the name of the function that refused
/// the input and names the offending values.

#include <stdexcept>
#include <string>

namespace netmorph {

/// Root of every exception netmorph throws on bad input or failed numerics.
class error : public std::runtime_error {
 public:
  explicit error(const std::string& what) : std::runtime_error(what) {}
};

/// Shapes, ranks or sizes that do not fit together (including out-of-range indices).
class shape_error : public error {
 public:
  explicit shape_error(const std::string& what) : error(what) {}
};

/// Values that are not acceptable: NaN/Inf weights, a shrinking "morph", an even kernel growth,
/// an option out of its range.
class value_error : public error {
 public:
  explicit value_error(const std::string& what) : error(what) {}
};

/// A numerical procedure could not deliver what was asked (e.g. a morph that could not reach its
/// tolerance). Thrown instead of returning a wrong answer quietly.
class numerical_error : public error {
 public:
  explicit numerical_error(const std::string& what) : error(what) {}
};

/// Files that cannot be opened, are truncated or malformed.
class io_error : public error {
 public:
  explicit io_error(const std::string& what) : error(what) {}
};

}  // namespace netmorph

#endif  // NETMORPH_ERROR_HPP
