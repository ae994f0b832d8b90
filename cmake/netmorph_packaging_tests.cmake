# Packaging tests, label "packaging" (included from tests/CMakeLists.txt):
#
#   packaging_build_system      fixture: brings this build tree's build system up to date;
#   packaging_headers[_openmp]  every header under include/netmorph compiles alone, included twice,
#                               with strict warnings and -Werror; those with OpenMP code of their
#                               own also with OpenMP;
#   packaging_install           fixture: installs this build tree to a prefix in the build dir;
#   packaging_consumer_find_package, packaging_consumer_add_subdirectory
#                               examples/consumer (find_package on that prefix) and
#                               examples/consumer_subdirectory (add_subdirectory on this source
#                               tree) are configured, built with the same warnings and run, each
#                               by `ctest --build-and-test` in its own build directory.
#
# They compile (rather than run) netmorph code, each in a build of its own: a build with
# instrumentation flags such as the sanitizer build of .ci/run skips them with -LE packaging.

# The warning set a strict consumer uses; the headers must be clean under it.
set(NETMORPH_CONSUMER_WARNINGS -Wall -Wextra -Wpedantic -Wshadow -Werror)
set(_netmorph_strict_compiler "$<CXX_COMPILER_ID:GNU,Clang,AppleClang>")
get_property(_netmorph_multi_config GLOBAL PROPERTY GENERATOR_IS_MULTI_CONFIG)

# `cmake --build` / `--install` of this tree in the configuration under test.
set(_netmorph_config_args "")
if(_netmorph_multi_config)
  set(_netmorph_config_args --config $<CONFIG>)
endif()

# --- Tests that drive this build tree ------------------------------------------------------------
# packaging_build_system brings the build system up to date first (re-running CMake when the
# header glob changed), so the tests that build or install from this tree afterwards never
# regenerate it concurrently. The Makefile generator builds disjoint targets of one tree safely at
# the same time; other generators (Ninja keeps one log and one deps file per tree) take turns.
add_custom_target(netmorph_build_system_check)
add_test(NAME packaging_build_system
         COMMAND "${CMAKE_COMMAND}" --build "${CMAKE_BINARY_DIR}"
                 --target netmorph_build_system_check ${_netmorph_config_args})
set_tests_properties(packaging_build_system PROPERTIES
  LABELS packaging FIXTURES_SETUP netmorph_build_system TIMEOUT 300)
function(_netmorph_drives_build_tree test)
  set_tests_properties(${test} PROPERTIES FIXTURES_REQUIRED netmorph_build_system)
  if(NOT CMAKE_GENERATOR MATCHES "Makefiles")
    set_tests_properties(${test} PROPERTIES RESOURCE_LOCK netmorph_build_tree)
  endif()
endfunction()

# --- Each header alone --------------------------------------------------------------------------
# One generated translation unit per header. The glob re-runs at build time (CONFIGURE_DEPENDS),
# so headers added, renamed or removed later are picked up without editing this file.
file(GLOB_RECURSE _netmorph_headers CONFIGURE_DEPENDS RELATIVE "${PROJECT_SOURCE_DIR}/include"
     "${PROJECT_SOURCE_DIR}/include/netmorph/*.hpp")
if(NOT _netmorph_headers)
  message(FATAL_ERROR "netmorph: no headers under ${PROJECT_SOURCE_DIR}/include/netmorph")
endif()
if(NOT NETMORPH_HAS_IO)  # netmorph::io's headers need its dependencies
  list(FILTER _netmorph_headers EXCLUDE REGEX "^netmorph/io(/|\\.hpp$)")
endif()
list(SORT _netmorph_headers)
set(_netmorph_header_dir "${CMAKE_CURRENT_BINARY_DIR}/header_check")
set(_netmorph_header_units "")
foreach(NETMORPH_HEADER IN LISTS _netmorph_headers)
  set(unit "${_netmorph_header_dir}/${NETMORPH_HEADER}.cpp")
  # Rewritten only when its content changes, so a re-configure does not recompile the checks.
  configure_file("${PROJECT_SOURCE_DIR}/tests/header_check.cpp.in" "${unit}" @ONLY)
  list(APPEND _netmorph_header_units "${unit}")
endforeach()
# Units of headers removed or renamed since the last configure are deleted, not left to confuse.
file(GLOB_RECURSE _netmorph_stale_units "${_netmorph_header_dir}/*.cpp")
list(REMOVE_ITEM _netmorph_stale_units ${_netmorph_header_units})
if(_netmorph_stale_units)
  file(REMOVE ${_netmorph_stale_units})
endif()
list(LENGTH _netmorph_headers _netmorph_header_count)

# The headers whose own code changes under OpenMP (`#pragma omp`, `_OPENMP`): the only ones
# packaging_headers_openmp compiles again with it (a header that merely includes one of them adds
# no OpenMP code of its own, and compiling all of them twice took four minutes of CI).
set(_netmorph_openmp_units "")
foreach(NETMORPH_HEADER IN LISTS _netmorph_headers)
  file(STRINGS "${PROJECT_SOURCE_DIR}/include/${NETMORPH_HEADER}" omp_lines
       REGEX "pragma omp|_OPENMP")
  if(omp_lines)
    list(APPEND _netmorph_openmp_units "${_netmorph_header_dir}/${NETMORPH_HEADER}.cpp")
  endif()
endforeach()

# _netmorph_add_header_check(<target> <test> <units> [libraries...]): an object library, outside
# `all`, of the units, and a test that builds it. The headers come in through netmorph::netmorph as
# a normal (not system) include directory, so their warnings count; Eigen's stay system headers.
function(_netmorph_add_header_check target test units)
  add_library(${target} OBJECT EXCLUDE_FROM_ALL ${units})
  target_link_libraries(${target} PRIVATE netmorph::netmorph ${ARGN})
  if(NETMORPH_HAS_IO)
    target_link_libraries(${target} PRIVATE netmorph::io)
  endif()
  target_compile_options(${target} PRIVATE
    "$<${_netmorph_strict_compiler}:${NETMORPH_CONSUMER_WARNINGS}>")
  add_test(NAME ${test}
           COMMAND "${CMAKE_COMMAND}" --build "${CMAKE_BINARY_DIR}" --target ${target}
                   ${_netmorph_config_args})
  # COST: ctest -j starts the longest tests first instead of leaving them for the end.
  set_tests_properties(${test} PROPERTIES LABELS packaging COST 1000 TIMEOUT 1200)
  _netmorph_drives_build_tree(${test})
endfunction()

_netmorph_add_header_check(netmorph_header_check packaging_headers "${_netmorph_header_units}")
list(LENGTH _netmorph_openmp_units _netmorph_openmp_count)
if(NOT _netmorph_openmp_units)
  message(FATAL_ERROR "netmorph: no header uses OpenMP; the OpenMP header check found nothing")
endif()
if(OpenMP_CXX_FOUND)
  _netmorph_add_header_check(netmorph_header_check_openmp packaging_headers_openmp
                             "${_netmorph_openmp_units}" OpenMP::OpenMP_CXX)
else()
  message(STATUS "netmorph: OpenMP not found, the headers are checked without it only")
endif()
message(STATUS "netmorph: ${_netmorph_header_count} headers checked alone (packaging_headers), "
               "${_netmorph_openmp_count} of them also with OpenMP")

# --- Consumer projects --------------------------------------------------------------------------
# Both are built like this project (compiler, generator, build type, CMAKE_CXX_FLAGS) plus the
# strict warnings, and find Eigen where this project found it.
set(_netmorph_consumer_flags "${CMAKE_CXX_FLAGS}")
if(CMAKE_CXX_COMPILER_ID MATCHES "^(GNU|Clang|AppleClang)$")
  list(JOIN NETMORPH_CONSUMER_WARNINGS " " _netmorph_warnings_string)
  string(STRIP "${_netmorph_consumer_flags} ${_netmorph_warnings_string}" _netmorph_consumer_flags)
endif()
set(_netmorph_build_and_test_args --build-generator "${CMAKE_GENERATOR}")
if(CMAKE_MAKE_PROGRAM)
  list(APPEND _netmorph_build_and_test_args --build-makeprogram "${CMAKE_MAKE_PROGRAM}")
endif()
if(CMAKE_GENERATOR_PLATFORM)
  list(APPEND _netmorph_build_and_test_args
       --build-generator-platform "${CMAKE_GENERATOR_PLATFORM}")
endif()
if(CMAKE_GENERATOR_TOOLSET)
  list(APPEND _netmorph_build_and_test_args
       --build-generator-toolset "${CMAKE_GENERATOR_TOOLSET}")
endif()
if(_netmorph_multi_config)
  list(APPEND _netmorph_build_and_test_args --build-config $<CONFIG>)
endif()
set(_netmorph_consumer_options
  "-DCMAKE_CXX_COMPILER=${CMAKE_CXX_COMPILER}"
  "-DCMAKE_CXX_FLAGS=${_netmorph_consumer_flags}"
  "-DEigen3_DIR=${Eigen3_DIR}")
if(NOT _netmorph_multi_config)
  list(APPEND _netmorph_consumer_options "-DCMAKE_BUILD_TYPE=${CMAKE_BUILD_TYPE}")
endif()
set(_netmorph_packaging_dir "${CMAKE_CURRENT_BINARY_DIR}/packaging")

if(NETMORPH_INSTALL)
  set(_netmorph_prefix "${_netmorph_packaging_dir}/prefix")
  add_test(NAME packaging_install
           COMMAND "${CMAKE_COMMAND}" "-DNETMORPH_BUILD_DIR=${PROJECT_BINARY_DIR}"
                   "-DNETMORPH_PREFIX=${_netmorph_prefix}" "-DNETMORPH_CONFIG=$<CONFIG>"
                   -P "${PROJECT_SOURCE_DIR}/cmake/netmorph_install_prefix.cmake")
  set_tests_properties(packaging_install PROPERTIES
    LABELS packaging FIXTURES_SETUP netmorph_installed TIMEOUT 300)
  _netmorph_drives_build_tree(packaging_install)

  # The consumer compares the version find_package reports (netmorph_VERSION, from the
  # installed netmorphConfigVersion.cmake) with the installed version.hpp macros.
  add_test(NAME packaging_consumer_find_package
           COMMAND "${CMAKE_CTEST_COMMAND}" --build-and-test
                   "${PROJECT_SOURCE_DIR}/examples/consumer"
                   "${_netmorph_packaging_dir}/consumer_find_package"
                   ${_netmorph_build_and_test_args}
                   --build-options ${_netmorph_consumer_options}
                                   "-DCMAKE_PREFIX_PATH=${_netmorph_prefix}"
                                   -DCONSUMER_CHECK_NETMORPH_HEADERS=ON
                                   "-DCONSUMER_WITH_IO=${NETMORPH_HAS_IO}"
                                   "-Dnlohmann_json_DIR=${nlohmann_json_DIR}"
                   --test-command consumer)
  set_tests_properties(packaging_consumer_find_package PROPERTIES
    LABELS packaging FIXTURES_REQUIRED netmorph_installed COST 500 TIMEOUT 900)
endif()

add_test(NAME packaging_consumer_add_subdirectory
         COMMAND "${CMAKE_CTEST_COMMAND}" --build-and-test
                 "${PROJECT_SOURCE_DIR}/examples/consumer_subdirectory"
                 "${_netmorph_packaging_dir}/consumer_add_subdirectory"
                 ${_netmorph_build_and_test_args}
                 --build-options ${_netmorph_consumer_options}
                                 "-DNETMORPH_SOURCE_DIR=${PROJECT_SOURCE_DIR}"
                 --test-command consumer_subdirectory)
set_tests_properties(packaging_consumer_add_subdirectory PROPERTIES
  LABELS packaging COST 500 TIMEOUT 900)
