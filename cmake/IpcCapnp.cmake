# IpcCapnp.cmake — compile Cap'n Proto schemas into a target.
#
#   ipc_capnp_schemas(<target> <file.capnp>...)
#
# Runs Debian's `capnp compile -oc++` on each schema (paths relative to the
# calling CMakeLists.txt, or absolute) and adds the generated .c++ files to
# <target>. The headers land flat in
# ${CMAKE_CURRENT_BINARY_DIR}/capnp/<target>/, which is added to the target's
# PUBLIC include path, so consumers write `#include "events.capnp.h"`.
# Schemas may import each other by path relative to their own directory
# (`using import "other.capnp";`). <target> gets CapnProto::capnp PUBLIC.
#
# The generated code must come from the same capnp version as the headers it
# compiles against (it checks CAPNP_VERSION), so the compiler is the one
# CapnProtoConfig.cmake names, never one from PATH.
include_guard(GLOBAL)

function(ipc_capnp_schemas target)
  if(NOT ARGN)
    message(FATAL_ERROR "ipc_capnp_schemas(${target}): no schema files given")
  endif()
  # CapnProtoConfig sets these to the installed compiler. (Its imported
  # targets CapnProto::capnp_tool / capnpc_cpp point at /usr/lib/bin on
  # Debian 12, a wrong prefix, so they are not used.)
  if(NOT EXISTS "${CAPNP_EXECUTABLE}" OR NOT EXISTS "${CAPNPC_CXX_EXECUTABLE}")
    message(FATAL_ERROR "ipc_capnp_schemas: capnp compiler not found (CAPNP_EXECUTABLE='${CAPNP_EXECUTABLE}', "
                        "CAPNPC_CXX_EXECUTABLE='${CAPNPC_CXX_EXECUTABLE}'); install capnproto (scripts/setup)")
  endif()
  set(out_dir "${CMAKE_CURRENT_BINARY_DIR}/capnp/${target}")
  file(MAKE_DIRECTORY "${out_dir}")
  # Where c++.capnp and the other standard imports live (set by CapnProtoConfig).
  set(capnp_include "${CAPNP_INCLUDE_DIRECTORY}")
  if(NOT capnp_include)
    message(FATAL_ERROR "ipc_capnp_schemas: CAPNP_INCLUDE_DIRECTORY is not set; call find_package(CapnProto) first")
  endif()
  set(sources)
  foreach(schema IN LISTS ARGN)
    get_filename_component(abs "${schema}" ABSOLUTE)
    if(NOT EXISTS "${abs}")
      message(FATAL_ERROR "ipc_capnp_schemas(${target}): schema '${abs}' does not exist")
    endif()
    get_filename_component(dir "${abs}" DIRECTORY)
    get_filename_component(name "${abs}" NAME)
    add_custom_command(
      OUTPUT "${out_dir}/${name}.c++" "${out_dir}/${name}.h"
      COMMAND "${CAPNP_EXECUTABLE}" compile
              "-o${CAPNPC_CXX_EXECUTABLE}:${out_dir}"
              --src-prefix "${dir}" -I "${dir}" -I "${capnp_include}"
              "${abs}"
      DEPENDS "${abs}" "${CAPNP_EXECUTABLE}" "${CAPNPC_CXX_EXECUTABLE}"
      COMMENT "Cap'n Proto: ${name} -> ${name}.h for ${target}"
      VERBATIM)
    list(APPEND sources "${out_dir}/${name}.c++")
  endforeach()
  set_source_files_properties(${sources} PROPERTIES LANGUAGE CXX GENERATED TRUE)
  target_sources(${target} PRIVATE ${sources})
  target_include_directories(${target} PUBLIC "${out_dir}")
  target_link_libraries(${target} PUBLIC CapnProto::capnp)
endfunction()
