# IpcInstall.cmake — install rules, package config, pkg-config files, CPack.
# Included by the top-level CMakeLists.txt when IPC_INSTALL is ON.
#
# Layout under the prefix:
#   include/ipc/**.hpp                  public headers
#   include/ipc/schemas/*.capnp, *.h    the shared schemas and their generated headers
#   lib*/libipc_core.a, libipc_message.a, libipc_schemas.a
#   lib*/cmake/libipc/                  libipcConfig.cmake (+Version, targets), IpcCapnp.cmake
#   lib*/pkgconfig/libipc-core.pc, libipc.pc
include(CMakePackageConfigHelpers)

set(IPC_CMAKE_INSTALL_DIR "${CMAKE_INSTALL_LIBDIR}/cmake/libipc")
set(IPC_SCHEMA_INSTALL_DIR "${CMAKE_INSTALL_INCLUDEDIR}/ipc/schemas")
get_target_property(_ipc_core_type ipc_core TYPE)
if(_ipc_core_type STREQUAL "STATIC_LIBRARY")
  set(IPC_STATIC ON)   # consumers link spdlog/fmt too
else()
  set(IPC_STATIC OFF)
endif()

install(TARGETS ipc_core EXPORT libipcCoreTargets
        ARCHIVE DESTINATION "${CMAKE_INSTALL_LIBDIR}"
        LIBRARY DESTINATION "${CMAKE_INSTALL_LIBDIR}"
        RUNTIME DESTINATION "${CMAKE_INSTALL_BINDIR}")
install(TARGETS ipc_capnp ipc_message ipc_schemas EXPORT libipcMessageTargets
        ARCHIVE DESTINATION "${CMAKE_INSTALL_LIBDIR}"
        LIBRARY DESTINATION "${CMAKE_INSTALL_LIBDIR}"
        RUNTIME DESTINATION "${CMAKE_INSTALL_BINDIR}")
install(EXPORT libipcCoreTargets NAMESPACE libipc:: DESTINATION "${IPC_CMAKE_INSTALL_DIR}")
install(EXPORT libipcMessageTargets NAMESPACE libipc:: DESTINATION "${IPC_CMAKE_INSTALL_DIR}")

install(DIRECTORY "${PROJECT_SOURCE_DIR}/libipc/include/ipc" DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}"
        FILES_MATCHING PATTERN "*.hpp" PATTERN "*.h")
get_target_property(_ipc_schema_headers ipc_schemas IPC_CAPNP_HEADERS)
install(FILES ${IPC_SCHEMA_FILES} ${_ipc_schema_headers} DESTINATION "${IPC_SCHEMA_INSTALL_DIR}")

configure_package_config_file("${CMAKE_CURRENT_LIST_DIR}/libipcConfig.cmake.in"
  "${PROJECT_BINARY_DIR}/libipcConfig.cmake" INSTALL_DESTINATION "${IPC_CMAKE_INSTALL_DIR}")
write_basic_package_version_file("${PROJECT_BINARY_DIR}/libipcConfigVersion.cmake"
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMajorVersion)
install(FILES "${PROJECT_BINARY_DIR}/libipcConfig.cmake" "${PROJECT_BINARY_DIR}/libipcConfigVersion.cmake"
              "${CMAKE_CURRENT_LIST_DIR}/IpcCapnp.cmake"
        DESTINATION "${IPC_CMAKE_INSTALL_DIR}")

# pkg-config: prefix relative to the .pc file, so the files are right for
# `cmake --install --prefix <any>` and for the .deb alike. Static archives
# need spdlog/fmt at link time, so they are Requires (not .private) then:
# plain `pkg-config --libs` must be enough.
file(RELATIVE_PATH IPC_PC_TO_PREFIX "/prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/prefix")
string(REGEX REPLACE "/$" "" IPC_PC_TO_PREFIX "${IPC_PC_TO_PREFIX}")
if(IPC_STATIC)
  set(IPC_PC_CORE_REQUIRES "spdlog fmt")
  set(IPC_PC_CORE_REQUIRES_PRIVATE "")
else()
  set(IPC_PC_CORE_REQUIRES "")
  set(IPC_PC_CORE_REQUIRES_PRIVATE "spdlog fmt")
endif()
configure_file("${CMAKE_CURRENT_LIST_DIR}/libipc-core.pc.in" "${PROJECT_BINARY_DIR}/libipc-core.pc" @ONLY)
configure_file("${CMAKE_CURRENT_LIST_DIR}/libipc.pc.in" "${PROJECT_BINARY_DIR}/libipc.pc" @ONLY)
install(FILES "${PROJECT_BINARY_DIR}/libipc-core.pc" "${PROJECT_BINARY_DIR}/libipc.pc"
        DESTINATION "${CMAKE_INSTALL_LIBDIR}/pkgconfig")

# CPack: `cpack -G DEB` in the build directory makes libipc-dev_<version>_<arch>.deb.
# Depends on what a consumer needs: Cap'n Proto headers, library and CMake
# config (libcapnp-dev) of the version libipc was built with, its compiler
# for ipc_capnp_schemas() (capnproto), and spdlog/fmt (static archives).
string(REGEX MATCH "^([0-9]+)\\.([0-9]+)\\.([0-9]+)" _ipc_capnp_v "${CapnProto_VERSION}")
if(_ipc_capnp_v)
  math(EXPR _ipc_capnp_next "${CMAKE_MATCH_3} + 1")
  set(_ipc_capnp_dep "libcapnp-dev (>= ${_ipc_capnp_v}), libcapnp-dev (<< ${CMAKE_MATCH_1}.${CMAKE_MATCH_2}.${_ipc_capnp_next}~), capnproto (>= ${_ipc_capnp_v}), capnproto (<< ${CMAKE_MATCH_1}.${CMAKE_MATCH_2}.${_ipc_capnp_next}~)")
else()
  set(_ipc_capnp_dep "libcapnp-dev, capnproto")
endif()
set(CPACK_PACKAGE_NAME "libipc-dev")
set(CPACK_PACKAGE_VENDOR "libipc developers")
set(CPACK_PACKAGE_CONTACT "libipc developers")
set(CPACK_PACKAGE_VERSION "${PROJECT_VERSION}")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "libipc: shared-memory IPC for C++20 (headers, static libraries, CMake and pkg-config files)")
set(CPACK_GENERATOR "DEB")
set(CPACK_DEBIAN_PACKAGE_NAME "libipc-dev")
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "libipc developers")
set(CPACK_DEBIAN_PACKAGE_SECTION "libdevel")
set(CPACK_DEBIAN_FILE_NAME "DEB-DEFAULT")
set(CPACK_DEBIAN_PACKAGE_DEPENDS "${_ipc_capnp_dep}, libspdlog-dev, libfmt-dev")
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS OFF)  # static archives only
set(CPACK_PACKAGING_INSTALL_PREFIX "/usr")
include(CPack)
