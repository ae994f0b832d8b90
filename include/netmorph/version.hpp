#ifndef NETMORPH_VERSION_HPP
#define NETMORPH_VERSION_HPP

/// \file version.hpp
/// netmorph's version, written only here: CMake reads these three lines for project(VERSION) and
/// the installed package version (cmake/netmorph_version.cmake), so keep their form.

#define NETMORPH_VERSION_MAJOR 0
#define NETMORPH_VERSION_MINOR 1
#define NETMORPH_VERSION_PATCH 0

#endif  // NETMORPH_VERSION_HPP
