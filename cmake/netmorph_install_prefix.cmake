# cmake -DNETMORPH_BUILD_DIR=<dir> -DNETMORPH_PREFIX=<prefix> [-DNETMORPH_CONFIG=<cfg>] -P <this>
# The packaging_install test: a fresh install of the build tree to <prefix>, so the find_package
# consumer never sees files left over from an earlier install (a removed or renamed header).
foreach(var NETMORPH_BUILD_DIR NETMORPH_PREFIX)
  if(NOT ${var})
    message(FATAL_ERROR "netmorph_install_prefix.cmake: ${var} is not set")
  endif()
endforeach()
file(REMOVE_RECURSE "${NETMORPH_PREFIX}")
set(config_args "")
if(NETMORPH_CONFIG)
  set(config_args --config "${NETMORPH_CONFIG}")
endif()
execute_process(
  COMMAND "${CMAKE_COMMAND}" --install "${NETMORPH_BUILD_DIR}" --prefix "${NETMORPH_PREFIX}"
          ${config_args}
  RESULT_VARIABLE result)
if(NOT result EQUAL 0)
  message(FATAL_ERROR
          "netmorph: installing ${NETMORPH_BUILD_DIR} to ${NETMORPH_PREFIX} failed (${result})")
endif()
