# One netmorph-morph test (cmake -P), driven by -D variables:
#   TOOL, MAKE_MODEL  the two programs;  DIR  a fresh working directory (recreated)
#   ARGS              the tool's arguments separated by '|' (run in DIR)
#   DTYPE             dtype of in.safetensors written by make_model (default float32)
#   STATE             sgd or adam: in.safetensors holds that optimizer's state and settings, and
#                     out.safetensors must carry them (`make_model state in.safetensors
#                     out.safetensors`)
#   TRUNCATE          also write trunc.safetensors, the first TRUNCATE bytes of in.safetensors
#   SENTINEL          ON: write out.safetensors with a known text first; it must survive a failure
#   EXPECT_RC         expected exit code
#   STDOUT_REGEX, STDERR_REGEX   regexes the output must match ('|' is alternation as usual)
#   COMPARE_TOL       run `make_model compare in.safetensors out.safetensors COMPARE_TOL`
#   JSON_KEYS         ','-separated keys every object of the JSON array on stdout must have
#                     (checked with /usr/bin/python3 when it exists)
#   SETUP             a /bin/sh command run in DIR before the tool (e.g. make OUT a FIFO)
#   CHECK             a /bin/sh command run in DIR after the tool; it must exit 0
#   LIST_REGEX        a regex `TOOL --list out.safetensors` must match (after a successful run)
# Any mismatch is a FATAL_ERROR, so the test fails.

foreach(v TOOL MAKE_MODEL DIR EXPECT_RC)
  if(NOT DEFINED ${v})
    message(FATAL_ERROR "run_cli.cmake: ${v} is not set")
  endif()
endforeach()
if(NOT DTYPE)
  set(DTYPE float32)
endif()

file(REMOVE_RECURSE "${DIR}")
file(MAKE_DIRECTORY "${DIR}")
execute_process(COMMAND "${MAKE_MODEL}" write in.safetensors ${DTYPE} ${STATE}
                WORKING_DIRECTORY "${DIR}" RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "make_model write failed: ${rc}")
endif()
if(TRUNCATE)
  execute_process(COMMAND "${MAKE_MODEL}" truncate in.safetensors trunc.safetensors ${TRUNCATE}
                  WORKING_DIRECTORY "${DIR}" RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "make_model truncate failed: ${rc}")
  endif()
endif()
set(sentinel "not a model: this file must be left as it was\n")
if(SENTINEL)
  file(WRITE "${DIR}/out.safetensors" "${sentinel}")
endif()

if(DEFINED SETUP)
  execute_process(COMMAND /bin/sh -c "${SETUP}" WORKING_DIRECTORY "${DIR}" RESULT_VARIABLE rc
                  ERROR_VARIABLE setup_err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "SETUP '${SETUP}' failed (${rc}): ${setup_err}")
  endif()
endif()
# Whether OUT existed before the run (as anything: a FIFO, a link), for the checks of a failure.
set(out_existed OFF)
if(EXISTS "${DIR}/out.safetensors" OR IS_SYMLINK "${DIR}/out.safetensors")
  set(out_existed ON)
endif()

string(REPLACE "|" ";" args "${ARGS}")
execute_process(COMMAND "${TOOL}" ${args} WORKING_DIRECTORY "${DIR}" RESULT_VARIABLE rc
                OUTPUT_VARIABLE out ERROR_VARIABLE err)
file(WRITE "${DIR}/stdout.txt" "${out}")
message(STATUS "netmorph-morph ${args}\n-- exit ${rc}\n-- stdout:\n${out}\n-- stderr:\n${err}")

if(NOT rc STREQUAL EXPECT_RC)
  message(FATAL_ERROR "exit code ${rc}, expected ${EXPECT_RC}")
endif()
if(DEFINED STDOUT_REGEX AND NOT out MATCHES "${STDOUT_REGEX}")
  message(FATAL_ERROR "stdout does not match '${STDOUT_REGEX}'")
endif()
if(DEFINED STDERR_REGEX AND NOT err MATCHES "${STDERR_REGEX}")
  message(FATAL_ERROR "stderr does not match '${STDERR_REGEX}'")
endif()
if(NOT EXPECT_RC EQUAL 0)
  if(SENTINEL)
    file(READ "${DIR}/out.safetensors" now)
    if(NOT now STREQUAL sentinel)
      message(FATAL_ERROR "a failed run changed the existing out.safetensors")
    endif()
  elseif(NOT out_existed AND (EXISTS "${DIR}/out.safetensors" OR IS_SYMLINK "${DIR}/out.safetensors"))
    message(FATAL_ERROR "a failed run wrote out.safetensors")
  endif()
endif()
if(DEFINED CHECK)
  execute_process(COMMAND /bin/sh -c "${CHECK}" WORKING_DIRECTORY "${DIR}" RESULT_VARIABLE rc
                  OUTPUT_VARIABLE check_out ERROR_VARIABLE check_out)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "CHECK '${CHECK}' failed (${rc}): ${check_out}")
  endif()
endif()
if(DEFINED LIST_REGEX)
  execute_process(COMMAND "${TOOL}" --list out.safetensors WORKING_DIRECTORY "${DIR}"
                  RESULT_VARIABLE rc OUTPUT_VARIABLE listed ERROR_VARIABLE list_err)
  message(STATUS "netmorph-morph --list out.safetensors\n${listed}${list_err}")
  if(NOT rc EQUAL 0 OR NOT listed MATCHES "${LIST_REGEX}")
    message(FATAL_ERROR "--list out.safetensors (exit ${rc}) does not match '${LIST_REGEX}'")
  endif()
endif()
if(COMPARE_TOL)
  execute_process(COMMAND "${MAKE_MODEL}" compare in.safetensors out.safetensors ${COMPARE_TOL}
                  WORKING_DIRECTORY "${DIR}" RESULT_VARIABLE rc OUTPUT_VARIABLE cmp
                  ERROR_VARIABLE cmp)
  message(STATUS "${cmp}")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "out.safetensors does not compute in.safetensors' function: ${cmp}")
  endif()
endif()
if(STATE AND EXPECT_RC EQUAL 0)
  execute_process(COMMAND "${MAKE_MODEL}" state in.safetensors out.safetensors
                  WORKING_DIRECTORY "${DIR}" RESULT_VARIABLE rc OUTPUT_VARIABLE st
                  ERROR_VARIABLE st)
  message(STATUS "${st}")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "out.safetensors does not carry in.safetensors' optimizer state: ${st}")
  endif()
endif()
if(JSON_KEYS AND EXISTS /usr/bin/python3)
  execute_process(
    COMMAND /usr/bin/python3 -c
            "import json, sys\nreports = json.load(open(sys.argv[1]))\nassert isinstance(reports, list) and reports, 'not a non-empty array'\nfor r in reports:\n    missing = [k for k in sys.argv[2].split(',') if k not in r]\n    assert not missing, 'missing keys %s in %s' % (missing, sorted(r))\n"
            "${DIR}/stdout.txt" "${JSON_KEYS}"
    RESULT_VARIABLE rc ERROR_VARIABLE perr)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "stdout is not the expected JSON: ${perr}")
  endif()
endif()
