# IpcCapnp.cmake — compile Cap'n Proto schemas into a target.
#
#   ipc_capnp_schemas(<target> <file.capnp>...)
#
# Runs Debian's `capnp compile -oc++` on each schema (paths relative to the
# calling CMakeLists.txt, or absolute) and adds the generated .c++ files to
# <target>. The headers land flat in
# ${CMAKE_CURRENT_BINARY_DIR}/capnp/<target>/, which is added to the target's
# PUBLIC include path (build tree only), so consumers write
# `#include "events.capnp.h"`. Schemas may import each other by path relative
# to their own directory (`using import "other.capnp";`). <target> gets the
# Cap'n Proto runtime PUBLIC (libipc::capnp, i.e. CapnProto::capnp). The
# generated headers are listed in <target>'s property IPC_CAPNP_HEADERS (for
# install rules).
#
# Works in libipc's own build, in a project that add_subdirectory()s libipc,
# and after find_package(libipc): the compiler's location is recorded in
# global properties by ipc_capnp_record() (called by libipc after it finds
# CapnProto), so it does not depend on CapnProto's variables being in scope.
#
# The generated code must come from the same capnp version as the headers it
# compiles against (it checks CAPNP_VERSION), so the compiler is the one
# CapnProtoConfig.cmake names, never one from PATH.
include_guard(GLOBAL)

# Records the capnp compiler, its C++ plugin and the directory holding
# /capnp/c++.capnp from CapnProtoConfig's variables (CAPNP_EXECUTABLE,
# CAPNPC_CXX_EXECUTABLE: cache; CAPNP_INCLUDE_DIRECTORY: a normal variable of
# the directory that called find_package(CapnProto)). A property already set
# is kept. (CapnProto's imported targets CapnProto::capnp_tool / capnpc_cpp
# point at /usr/lib/bin on Debian 12, a wrong prefix, so they are not used.)
function(ipc_capnp_record)
  get_property(have GLOBAL PROPERTY IPC_CAPNP_EXECUTABLE SET)
  if(have)
    return()
  endif()
  set(capnp "${CAPNP_EXECUTABLE}")
  set(cxx "${CAPNPC_CXX_EXECUTABLE}")
  set(inc "${CAPNP_INCLUDE_DIRECTORY}")
  if(NOT inc AND EXISTS "${capnp}")
    # Not in scope (CapnProto was found in another directory): the standard
    # imports sit in <prefix>/include next to <prefix>/bin/capnp.
    get_filename_component(bin_dir "${capnp}" DIRECTORY)
    get_filename_component(inc "${bin_dir}/../include" ABSOLUTE)
  endif()
  if(NOT EXISTS "${capnp}" OR NOT EXISTS "${cxx}" OR NOT EXISTS "${inc}/capnp/c++.capnp")
    return()  # ipc_capnp_schemas() reports it when it is actually used
  endif()
  set_property(GLOBAL PROPERTY IPC_CAPNP_EXECUTABLE "${capnp}")
  set_property(GLOBAL PROPERTY IPC_CAPNPC_CXX_EXECUTABLE "${cxx}")
  set_property(GLOBAL PROPERTY IPC_CAPNP_INCLUDE_DIRECTORY "${inc}")
endfunction()

function(ipc_capnp_schemas target)
  if(NOT ARGN)
    message(FATAL_ERROR "ipc_capnp_schemas(${target}): no schema files given")
  endif()
  ipc_capnp_record()  # in case the caller found CapnProto itself
  get_property(capnp GLOBAL PROPERTY IPC_CAPNP_EXECUTABLE)
  get_property(capnpc_cxx GLOBAL PROPERTY IPC_CAPNPC_CXX_EXECUTABLE)
  get_property(capnp_include GLOBAL PROPERTY IPC_CAPNP_INCLUDE_DIRECTORY)
  if(NOT capnp)
    message(FATAL_ERROR "ipc_capnp_schemas: capnp compiler not found (CAPNP_EXECUTABLE='${CAPNP_EXECUTABLE}', "
                        "CAPNPC_CXX_EXECUTABLE='${CAPNPC_CXX_EXECUTABLE}', CAPNP_INCLUDE_DIRECTORY="
                        "'${CAPNP_INCLUDE_DIRECTORY}'); install capnproto and libcapnp-dev (scripts/setup) and "
                        "find_package(libipc) or find_package(CapnProto) first")
  endif()
  set(out_dir "${CMAKE_CURRENT_BINARY_DIR}/capnp/${target}")
  file(MAKE_DIRECTORY "${out_dir}")
  set(sources)
  set(headers)
  foreach(schema IN LISTS ARGN)
    get_filename_component(abs "${schema}" ABSOLUTE)
    if(NOT EXISTS "${abs}")
      message(FATAL_ERROR "ipc_capnp_schemas(${target}): schema '${abs}' does not exist")
    endif()
    get_filename_component(dir "${abs}" DIRECTORY)
    get_filename_component(name "${abs}" NAME)
    add_custom_command(
      OUTPUT "${out_dir}/${name}.c++" "${out_dir}/${name}.h"
      COMMAND "${capnp}" compile
              "-o${capnpc_cxx}:${out_dir}"
              --src-prefix "${dir}" -I "${dir}" -I "${capnp_include}"
              "${abs}"
      DEPENDS "${abs}" "${capnp}" "${capnpc_cxx}"
      COMMENT "Cap'n Proto: ${name} -> ${name}.h for ${target}"
      VERBATIM)
    list(APPEND sources "${out_dir}/${name}.c++")
    list(APPEND headers "${out_dir}/${name}.h")
  endforeach()
  set_source_files_properties(${sources} PROPERTIES LANGUAGE CXX GENERATED TRUE)
  target_sources(${target} PRIVATE ${sources})
  target_include_directories(${target} PUBLIC "$<BUILD_INTERFACE:${out_dir}>")
  set_property(TARGET ${target} APPEND PROPERTY IPC_CAPNP_HEADERS ${headers})
  # libipc::capnp (an INTERFACE target of libipc linking CapnProto::capnp) is
  # visible in every directory, unlike CapnProto's directory-scoped imported
  # targets when libipc was add_subdirectory()'d.
  if(TARGET libipc::capnp)
    target_link_libraries(${target} PUBLIC libipc::capnp)
  else()
    target_link_libraries(${target} PUBLIC CapnProto::capnp)
  endif()
endfunction()
