# Builds and runs tests/consumer in a fresh build folder, the way a user would:
#   cmake -DMODE=installed -DBUILD_DIR=<tinyllm build> -DWORK_DIR=<scratch> [...] -P run.cmake
#     installs that build (cmake --install) into WORK_DIR/prefix, then uses find_package(tinyllm)
#   cmake -DMODE=subdir -DSOURCE_DIR=<tinyllm source> -DWORK_DIR=<scratch> [...] -P run.cmake
#     uses add_subdirectory(SOURCE_DIR)
# Optional: -DCXX=<compiler> -DGENERATOR=<generator> -DNATIVE=ON|OFF -DBUILD_TYPE=<type>
# -DCXX_FLAGS=<that build type's flags> -DPROGRAMS=<which of consumer and consumer_dispatch to build
# and run, comma-separated; default both>.
cmake_minimum_required(VERSION 3.20)
foreach(var MODE WORK_DIR)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run.cmake needs -D${var}=...")
  endif()
endforeach()
if(NOT DEFINED BUILD_TYPE)
  set(BUILD_TYPE Release)
endif()

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    string(REPLACE ";" " " cmd "${ARGN}")
    message(FATAL_ERROR "failed (${rc}): ${cmd}")
  endif()
endfunction()

file(REMOVE_RECURSE "${WORK_DIR}")
set(configure_args -S "${CMAKE_CURRENT_LIST_DIR}" -B "${WORK_DIR}/build" -DCMAKE_BUILD_TYPE=${BUILD_TYPE})
if(DEFINED CXX_FLAGS)   # e.g. -O1: the build and the run are checked, not the speed
  string(TOUPPER "${BUILD_TYPE}" build_type_upper)
  list(APPEND configure_args "-DCMAKE_CXX_FLAGS_${build_type_upper}=${CXX_FLAGS}")
endif()
if(CXX)
  list(APPEND configure_args -DCMAKE_CXX_COMPILER=${CXX})
endif()
if(GENERATOR)
  list(APPEND configure_args -G "${GENERATOR}")
endif()

if(MODE STREQUAL "installed")
  set(prefix "${WORK_DIR}/prefix")
  run(${CMAKE_COMMAND} --install "${BUILD_DIR}" --prefix "${prefix}")
  # The installed tree holds the headers, the single header and the package files.
  foreach(f include/tinyllm/tinyllm.hpp include/tinyllm/serve/engine.hpp include/tinyllm-single/tinyllm/tinyllm.hpp
            share/cmake/tinyllm/tinyllmConfig.cmake share/cmake/tinyllm/tinyllmConfigVersion.cmake
            share/cmake/tinyllm/tinyllmTargets.cmake)
    if(NOT EXISTS "${prefix}/${f}")
      message(FATAL_ERROR "the install lacks ${f}")
    endif()
  endforeach()
  if(SOURCE_DIR)
    run(${CMAKE_COMMAND} -E compare_files "${SOURCE_DIR}/single_include/tinyllm/tinyllm.hpp"
        "${prefix}/include/tinyllm-single/tinyllm/tinyllm.hpp")
  endif()
  list(APPEND configure_args -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_FIND_PACKAGE_NO_PACKAGE_REGISTRY=ON)
elseif(MODE STREQUAL "subdir")
  list(APPEND configure_args -DTINYLLM_ROOT=${SOURCE_DIR})
  if(DEFINED NATIVE)
    list(APPEND configure_args -DTINYLLM_NATIVE=${NATIVE})
  endif()
else()
  message(FATAL_ERROR "MODE must be installed or subdir, not '${MODE}'")
endif()

run(${CMAKE_COMMAND} ${configure_args})
if(NOT DEFINED PROGRAMS)
  set(PROGRAMS consumer,consumer_dispatch)
endif()
string(REPLACE "," ";" programs "${PROGRAMS}")
foreach(program ${programs})
  run(${CMAKE_COMMAND} --build "${WORK_DIR}/build" --target ${program})
endforeach()
foreach(program ${programs})
  execute_process(COMMAND "${WORK_DIR}/build/${program}" RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  message("${program}: ${out}")
  if(NOT rc EQUAL 0 OR NOT out MATCHES "tinyllm consumer OK")
    message(FATAL_ERROR "${program} failed (${rc})")
  endif()
endforeach()
