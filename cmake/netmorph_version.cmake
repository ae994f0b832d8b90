# netmorph_read_version(<header> <out-var>): sets <out-var> to "MAJOR.MINOR.PATCH" read from the
# NETMORPH_VERSION_* macros of <header>, and re-runs CMake when the header changes.
#
# Why the header is the one source of the version, rather than a header generated from
# project(VERSION): the header is the copy every consumer compiles against (an installed prefix,
# add_subdirectory, or a plain -I to the source tree), so keeping it a plain source file keeps
# include/ complete and usable without running CMake, and leaves nothing generated to install
# or to go stale. CMake only reads it, before project(), so the package version
# (netmorphConfigVersion.cmake) cannot drift from what the code reports.
function(netmorph_read_version header out_var)
  file(STRINGS "${header}" lines REGEX "^#define NETMORPH_VERSION_(MAJOR|MINOR|PATCH) +[0-9]+ *$")
  set(version "")
  foreach(part MAJOR MINOR PATCH)
    set(value "")
    foreach(line IN LISTS lines)
      if(line MATCHES "^#define NETMORPH_VERSION_${part} +([0-9]+)")
        set(value "${CMAKE_MATCH_1}")
      endif()
    endforeach()
    if(value STREQUAL "")
      message(FATAL_ERROR "netmorph: no '#define NETMORPH_VERSION_${part} <number>' in ${header}")
    endif()
    list(APPEND version "${value}")
  endforeach()
  list(JOIN version "." version)
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS "${header}")
  set(${out_var} "${version}" PARENT_SCOPE)
endfunction()
