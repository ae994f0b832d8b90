# netmorph::io: the model-file target (header-only; adds nlohmann/json, and zlib for the IDX reader
# its package config promises). Included from the top-level CMakeLists.txt after the core target;
# skipped with a message when its dependencies are missing, so the core stays Eigen-only.

option(NETMORPH_IO "Build the netmorph::io target (needs nlohmann_json and ZLIB)" ON)
set(NETMORPH_HAS_IO OFF)
set(NETMORPH_IO_CMAKE_DIR "${CMAKE_CURRENT_LIST_DIR}")

if(NETMORPH_IO)
  find_package(nlohmann_json 3.2 QUIET)
  find_package(ZLIB QUIET)
  if(nlohmann_json_FOUND AND ZLIB_FOUND)
    set(NETMORPH_HAS_IO ON)
  else()
    message(STATUS "netmorph: netmorph::io disabled (nlohmann_json found: ${nlohmann_json_FOUND}, "
                   "ZLIB found: ${ZLIB_FOUND})")
  endif()
endif()

if(NETMORPH_HAS_IO)
  add_library(netmorph_io INTERFACE)
  add_library(netmorph::io ALIAS netmorph_io)
  set_target_properties(netmorph_io PROPERTIES EXPORT_NAME io)
  target_link_libraries(netmorph_io INTERFACE netmorph::netmorph nlohmann_json::nlohmann_json
                                              ZLIB::ZLIB)
  if(NETMORPH_INSTALL)
    install(TARGETS netmorph_io EXPORT netmorphTargets)
  endif()
endif()

# Called from tests/CMakeLists.txt: the io tests, the Python reader check and nothing else.
function(netmorph_io_add_tests)
  if(NOT NETMORPH_HAS_IO)
    return()
  endif()
  foreach(name test_io_safetensors test_io_architecture test_io_model test_io_idx test_io_files)
    add_executable(${name} ${CMAKE_CURRENT_SOURCE_DIR}/${name}.cpp)
    target_link_libraries(${name} PRIVATE netmorph::io Catch2::Catch2WithMain)
    target_include_directories(${name} PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
    target_compile_options(${name} PRIVATE
      $<$<CXX_COMPILER_ID:GNU,Clang>:-Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wno-sign-conversion>
      $<$<AND:$<CXX_COMPILER_ID:GNU,Clang>,$<BOOL:${NETMORPH_WERROR}>>:-Werror>)
    add_test(NAME ${name} COMMAND ${name} --rng-seed ${NETMORPH_TEST_SEED})
    set_tests_properties(${name} PROPERTIES WORKING_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR})
  endforeach()
  # A file written by netmorph, read by the ten-line struct/json/numpy reader.
  set(python /usr/bin/python3)
  if(EXISTS ${python})
    execute_process(COMMAND ${python} -c "import numpy" RESULT_VARIABLE no_numpy
                    OUTPUT_QUIET ERROR_QUIET)
    if(no_numpy EQUAL 0)
      set(dir ${CMAKE_CURRENT_BINARY_DIR}/io_python)
      add_test(NAME test_io_python_write
               COMMAND test_io_model "[.python_fixture]" --rng-seed ${NETMORPH_TEST_SEED})
      set_tests_properties(test_io_python_write PROPERTIES
        ENVIRONMENT "NETMORPH_IO_FIXTURE_DIR=${dir}" FIXTURES_SETUP netmorph_io_python)
      add_test(NAME test_io_python_read
               COMMAND ${python} ${CMAKE_CURRENT_SOURCE_DIR}/io/read_safetensors.py ${dir})
      set_tests_properties(test_io_python_read PROPERTIES FIXTURES_REQUIRED netmorph_io_python)
      # tests/python's bridge test loads these files too.
      set_property(GLOBAL PROPERTY NETMORPH_IO_FIXTURE_DIR ${dir})
    else()
      message(STATUS "netmorph: numpy not found for /usr/bin/python3; test_io_python_read skipped")
    endif()
  endif()
endfunction()
