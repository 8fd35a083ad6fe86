# IpcLayers.cmake — build-enforced layering for code that uses libipc.
#
#   ipc_public_only(<target>)
#
# <target> (a daemon, a client, an example) may use only libipc's installed
# interface: headers under libipc/include (`#include "ipc/..."`). The build
# fails if
#   * a source of <target> (or a header next to one) includes a file from
#     libipc/src, by a path naming libipc/src/, by a relative path that lands
#     there, or by a bare name that only libipc/src provides;
#   * libipc/src is in <target>'s include directories, its own or any it gets
#     from the libraries it links.
# Checked at configure time (the target's own sources and include dirs, at the
# end of the calling directory so later target_sources() count) and again
# before each build of <target> (so an include added later fails the build
# without re-running cmake).
#
#   ipc_forbid_includes(<target> <regex> <why>)
#
# Fails the configure if a source of <target> has an #include whose path
# matches <regex> (used by libipc to keep Cap'n Proto out of ipc_core).
#
# This file is also the build-time checker: cmake -P IpcLayers.cmake with
# -DIPC_LAYERS_TARGET, -DIPC_LAYERS_FILES (a file listing the files),
# -DIPC_LAYERS_INCLUDES (a file with the include dirs), -DIPC_LAYERS_PRIVATE
# (libipc/src), -DIPC_LAYERS_STAMP.

# --- shared by both modes ---------------------------------------------------

# Appends to `out` one "<file>: <reason>" per offending include of `files`.
# `private` is libipc/src (absolute); `include_dirs` the target's include path.
function(_ipc_layers_scan files private include_dirs out)
  set(bad)
  foreach(f IN LISTS files)
    if(NOT EXISTS "${f}" OR IS_DIRECTORY "${f}")
      continue()
    endif()
    get_filename_component(dir "${f}" DIRECTORY)
    file(STRINGS "${f}" lines REGEX "^[ \t]*#[ \t]*include[ \t]*[<\"]")
    foreach(line IN LISTS lines)
      if(NOT line MATCHES "#[ \t]*include[ \t]*([<\"])([^>\"]+)[>\"]")
        continue()
      endif()
      set(quote "${CMAKE_MATCH_1}")
      set(inc "${CMAKE_MATCH_2}")
      if(quote STREQUAL "<")
        set(shown "<${inc}>")
      else()
        set(shown "\"${inc}\"")
      endif()
      if(inc MATCHES "(^|/)libipc/src/")
        list(APPEND bad "${f}: #include ${shown} names libipc/src (private: use the public ipc/*.hpp headers)")
        continue()
      endif()
      if(quote STREQUAL "\"")
        get_filename_component(resolved "${dir}/${inc}" ABSOLUTE)
        cmake_path(IS_PREFIX private "${resolved}" NORMALIZE inside)
        if(inside AND EXISTS "${resolved}")
          list(APPEND bad "${f}: #include ${shown} reaches into libipc/src (private)")
          continue()
        endif()
        if(EXISTS "${resolved}")
          continue()  # a file next to the source: not libipc's
        endif()
      endif()
      # A name only libipc/src can satisfy (needs libipc/src on the path).
      if(EXISTS "${private}/${inc}")
        set(found_elsewhere FALSE)
        foreach(d IN LISTS include_dirs)
          if(NOT d STREQUAL private AND EXISTS "${d}/${inc}")
            set(found_elsewhere TRUE)
            break()
          endif()
        endforeach()
        if(NOT found_elsewhere)
          list(APPEND bad "${f}: #include ${shown} is a private libipc/src file")
        endif()
      endif()
    endforeach()
  endforeach()
  set(${out} "${bad}" PARENT_SCOPE)
endfunction()

# Appends to `out` the include dirs that are (or are inside) libipc/src.
function(_ipc_layers_dirs dirs private out)
  set(bad)
  foreach(d IN LISTS dirs)
    if(d STREQUAL "")
      continue()
    endif()
    get_filename_component(abs "${d}" ABSOLUTE)
    cmake_path(IS_PREFIX private "${abs}" NORMALIZE inside)
    if(inside OR abs MATCHES "(^|/)libipc/src(/|$)")
      list(APPEND bad "include directory ${d} is libipc/src (private)")
    endif()
  endforeach()
  set(${out} "${bad}" PARENT_SCOPE)
endfunction()

function(_ipc_layers_fail target problems)
  list(JOIN problems "\n  " text)
  message(FATAL_ERROR "ipc_public_only(${target}): ${target} must use only libipc's public headers:\n  ${text}")
endfunction()

# --- build-time check (script mode) ------------------------------------------

if(CMAKE_SCRIPT_MODE_FILE AND IPC_LAYERS_TARGET)
  file(STRINGS "${IPC_LAYERS_FILES}" files)
  file(READ "${IPC_LAYERS_INCLUDES}" dirs)
  string(STRIP "${dirs}" dirs)
  _ipc_layers_dirs("${dirs}" "${IPC_LAYERS_PRIVATE}" bad_dirs)
  _ipc_layers_scan("${files}" "${IPC_LAYERS_PRIVATE}" "${dirs}" bad_files)
  set(problems ${bad_dirs} ${bad_files})
  if(problems)
    file(REMOVE "${IPC_LAYERS_STAMP}")
    _ipc_layers_fail("${IPC_LAYERS_TARGET}" "${problems}")
  endif()
  file(TOUCH "${IPC_LAYERS_STAMP}")
  return()
endif()

# --- module -----------------------------------------------------------------

include_guard(GLOBAL)
get_filename_component(_ipc_layers_private "${CMAKE_CURRENT_LIST_DIR}/../libipc/src" ABSOLUTE)
set_property(GLOBAL PROPERTY IPC_LAYERS_PRIVATE_DIR "${_ipc_layers_private}")
set_property(GLOBAL PROPERTY IPC_LAYERS_MODULE "${CMAKE_CURRENT_LIST_FILE}")
unset(_ipc_layers_private)

# The non-generated sources of `target` as absolute paths, plus the headers
# in those sources' directories.
function(_ipc_layers_files target out)
  get_target_property(srcs ${target} SOURCES)
  get_target_property(src_dir ${target} SOURCE_DIR)
  set(files)
  set(dirs)
  foreach(s IN LISTS srcs)
    if(s MATCHES "\\$<")
      continue()
    endif()
    get_filename_component(abs "${s}" ABSOLUTE BASE_DIR "${src_dir}")
    if(NOT EXISTS "${abs}")
      continue()  # generated
    endif()
    list(APPEND files "${abs}")
    get_filename_component(d "${abs}" DIRECTORY)
    list(APPEND dirs "${d}")
  endforeach()
  list(REMOVE_DUPLICATES dirs)
  foreach(d IN LISTS dirs)
    file(GLOB hdrs "${d}/*.h" "${d}/*.hpp")
    list(APPEND files ${hdrs})
  endforeach()
  list(REMOVE_DUPLICATES files)
  set(${out} "${files}" PARENT_SCOPE)
endfunction()

function(ipc_public_only target)
  if(NOT TARGET ${target})
    message(FATAL_ERROR "ipc_public_only: no target '${target}'")
  endif()
  # Deferred to the end of this directory: sources added later are seen.
  cmake_language(EVAL CODE "cmake_language(DEFER CALL _ipc_public_only_now [[${target}]])")
endfunction()

function(_ipc_public_only_now target)
  get_property(private GLOBAL PROPERTY IPC_LAYERS_PRIVATE_DIR)
  get_property(module GLOBAL PROPERTY IPC_LAYERS_MODULE)
  _ipc_layers_files(${target} files)
  get_target_property(own_dirs ${target} INCLUDE_DIRECTORIES)
  if(NOT own_dirs)
    set(own_dirs)
  endif()
  string(REGEX REPLACE "\\$<BUILD_INTERFACE:([^>]*)>" "\\1" own_dirs "${own_dirs}")
  _ipc_layers_dirs("${own_dirs}" "${private}" bad_dirs)
  # The bare-name rule needs the full include path: build time only.
  _ipc_layers_scan("${files}" "${private}" "" bad_files)
  set(problems ${bad_dirs})
  foreach(p IN LISTS bad_files)
    if(NOT p MATCHES "is a private libipc/src file$")
      list(APPEND problems "${p}")
    endif()
  endforeach()
  if(problems)
    _ipc_layers_fail(${target} "${problems}")
  endif()

  # Build time: the same scan with the target's full (transitive) include path.
  set(dir "${CMAKE_CURRENT_BINARY_DIR}/ipc_layers")
  file(MAKE_DIRECTORY "${dir}")
  list(JOIN files "\n" listing)
  file(WRITE "${dir}/${target}.files" "${listing}\n")
  file(GENERATE OUTPUT "${dir}/${target}.includes"
       CONTENT "$<TARGET_PROPERTY:${target},INCLUDE_DIRECTORIES>\n")
  add_custom_command(
    OUTPUT "${dir}/${target}.ok"
    COMMAND "${CMAKE_COMMAND}" "-DIPC_LAYERS_TARGET=${target}" "-DIPC_LAYERS_FILES=${dir}/${target}.files"
            "-DIPC_LAYERS_INCLUDES=${dir}/${target}.includes" "-DIPC_LAYERS_PRIVATE=${private}"
            "-DIPC_LAYERS_STAMP=${dir}/${target}.ok" -P "${module}"
    DEPENDS ${files} "${dir}/${target}.files" "${dir}/${target}.includes" "${module}"
    COMMENT "Layer check: ${target} uses only libipc's public headers"
    VERBATIM)
  add_custom_target(${target}_layer_check DEPENDS "${dir}/${target}.ok")
  add_dependencies(${target} ${target}_layer_check)
endfunction()

function(ipc_forbid_includes target regex why)
  get_target_property(srcs ${target} SOURCES)
  get_target_property(src_dir ${target} SOURCE_DIR)
  set(bad)
  foreach(s IN LISTS srcs)
    get_filename_component(abs "${s}" ABSOLUTE BASE_DIR "${src_dir}")
    if(NOT EXISTS "${abs}")
      continue()
    endif()
    file(STRINGS "${abs}" lines REGEX "^[ \t]*#[ \t]*include[ \t]*[<\"]")
    foreach(line IN LISTS lines)
      if(line MATCHES "#[ \t]*include[ \t]*[<\"]([^>\"]+)[>\"]" AND CMAKE_MATCH_1 MATCHES "${regex}")
        list(APPEND bad "${abs}: #include ${CMAKE_MATCH_1}")
      endif()
    endforeach()
  endforeach()
  if(bad)
    list(JOIN bad "\n  " text)
    message(FATAL_ERROR "${target}: ${why}:\n  ${text}")
  endif()
endfunction()
