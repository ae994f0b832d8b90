# Command-line programs built on netmorph::io: netmorph-morph (tools/netmorph_morph.cpp). Included
# from the top-level CMakeLists.txt after cmake/netmorph_io.cmake; built only where netmorph::io
# is (NETMORPH_HAS_IO), installed to the binary directory with the package.

option(NETMORPH_BUILD_TOOLS "Build the netmorph-morph command (needs netmorph::io)"
       ${NETMORPH_TOP_LEVEL})

if(NETMORPH_HAS_IO AND (NETMORPH_BUILD_TOOLS OR NETMORPH_BUILD_EXAMPLES))
  add_executable(netmorph-morph "${CMAKE_CURRENT_LIST_DIR}/../tools/netmorph_morph.cpp")
  target_link_libraries(netmorph-morph PRIVATE netmorph::io)
  target_compile_options(netmorph-morph PRIVATE
    $<$<CXX_COMPILER_ID:GNU,Clang>:-Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wno-sign-conversion>
    $<$<AND:$<CXX_COMPILER_ID:GNU,Clang>,$<BOOL:${NETMORPH_WERROR}>>:-Werror>)
  # A program, not a header: it may use OpenMP (convolutions, solver; OMP_NUM_THREADS) when found.
  find_package(OpenMP QUIET)
  if(OpenMP_CXX_FOUND)
    target_link_libraries(netmorph-morph PRIVATE OpenMP::OpenMP_CXX)
  endif()
  if(NETMORPH_INSTALL)
    install(TARGETS netmorph-morph RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
  endif()
elseif(NETMORPH_BUILD_TOOLS AND NOT NETMORPH_HAS_IO)
  message(STATUS "netmorph: netmorph-morph not built (it needs netmorph::io)")
endif()
