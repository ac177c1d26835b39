# Install rules, the pkg-config file, the CMake package and the Debian
# packages (cpack). Included by the top CMakeLists.txt; off with
# CF_INSTALL=OFF (the default when cfutures is a subproject).
#
# Two components, one per Debian package (and two more, mpi and mpi-dev,
# when libcfutures-mpi is built: cmake/mpi.cmake):
#   runtime  libcfutures.so.<SOVERSION> and its versioned name
#            (package libcfutures<SOVERSION>, e.g. libcfutures0.2);
#   dev      headers, libcfutures.so (the link-time name), libcfutures.a,
#            cfutures.pc, the CMake package and cfutures-info
#            (package libcfutures-dev).
if(NOT CF_INSTALL)
  return()
endif()

set(CF_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/cfutures)

# cfutures/mpi.h belongs to libcfutures-mpi's dev component (cmake/mpi.cmake).
install(DIRECTORY include/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT dev
  PATTERN "*.in" EXCLUDE PATTERN "mpi.h" EXCLUDE)
install(FILES ${PROJECT_BINARY_DIR}/include/cfutures/version.h
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/cfutures COMPONENT dev)

# The shared and the static library go to two export sets: a consumer of
# the shared one loads only cfuturesTargets.cmake, which names no other
# package (its dependencies are private, linked into libcfutures.so);
# cfuturesStaticTargets.cmake names them, and cfuturesConfig.cmake finds
# them only when the static component is asked for.
install(TARGETS cfutures EXPORT cfuturesTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT runtime NAMELINK_COMPONENT dev)
install(TARGETS cfutures_static EXPORT cfuturesStaticTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev)
if(TARGET cfutures_noudev)
  install(TARGETS cfutures_noudev EXPORT cfuturesStaticTargets
    ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev)
endif()
if(TARGET cfutures-info)
  install(TARGETS cfutures-info RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT dev)
endif()
install(EXPORT cfuturesTargets NAMESPACE cfutures:: DESTINATION ${CF_CMAKE_DIR} COMPONENT dev)
install(EXPORT cfuturesStaticTargets NAMESPACE cfutures:: DESTINATION ${CF_CMAKE_DIR}
  COMPONENT dev)

include(CMakePackageConfigHelpers)
# The static component finds jemalloc only in a CF_JEMALLOC build.
if(CF_JEMALLOC)
  set(CF_CONFIG_JEMALLOC_DEP "\"JEMALLOC;jemalloc\"")
  set(CF_JEMALLOC_DEV ", libjemalloc-dev")
else()
  set(CF_CONFIG_JEMALLOC_DEP "")
  set(CF_JEMALLOC_DEV "")
endif()
configure_package_config_file(cmake/cfuturesConfig.cmake.in
  ${PROJECT_BINARY_DIR}/cfuturesConfig.cmake
  INSTALL_DESTINATION ${CF_CMAKE_DIR})
if(PROJECT_VERSION_MAJOR EQUAL 0)
  set(CF_COMPAT SameMinorVersion) # 0.x: a minor release may break the ABI (docs/ABI.md)
else()
  set(CF_COMPAT SameMajorVersion)
endif()
write_basic_package_version_file(${PROJECT_BINARY_DIR}/cfuturesConfigVersion.cmake
  COMPATIBILITY ${CF_COMPAT})
install(FILES ${PROJECT_BINARY_DIR}/cfuturesConfig.cmake
  ${PROJECT_BINARY_DIR}/cfuturesConfigVersion.cmake
  DESTINATION ${CF_CMAKE_DIR} COMPONENT dev)

# ---- cfutures.pc ----
# Libs.private lists the private dependencies' libraries by name instead
# of naming their packages in Requires.private:
# - `pkg-config cfutures` (the shared library) then needs no other .pc file,
#   so it works without the dependencies' dev packages;
# - hwloc's own Libs.private is `-lm -ludev -lpthread`, and `pkg-config
#   --static` would pass -ludev on, which needs libudev-dev, missing on most
#   machines. libcfutures.a only calls hwloc, and libhwloc.so already
#   brings its libudev.so.1, so `-lhwloc` alone is what a static link of
#   cfutures needs. A fully -static program links libhwloc.a, which calls
#   libudev, of which Debian ships no static library: -lcfutures-noudev
#   right after -lhwloc answers those calls (static/no_udev.c); the linker
#   takes it only in that case.
# urcu (and jemalloc, with CF_JEMALLOC) keep their own private libraries
# (none today), read from their .pc files. With CF_JEMALLOC, -lc first:
# see the object libraries in CMakeLists.txt (glibc stays the program's
# malloc).
set(CF_PC_LIBS_PRIVATE)
set(CF_PC_NOUDEV)
if(TARGET cfutures_noudev)
  set(CF_PC_NOUDEV cfutures-noudev)
endif()
# Only a CF_JEMALLOC build names jemalloc (a tree once configured with it
# keeps pkg-config's cached JEMALLOC_* variables).
set(CF_PC_JEMALLOC)
if(CF_JEMALLOC)
  set(CF_PC_JEMALLOC ${JEMALLOC_STATIC_LIBRARIES})
endif()
foreach(lib ${URCU_STATIC_LIBRARIES} ${HWLOC_LIBRARIES} ${CF_PC_NOUDEV} ${CF_PC_JEMALLOC}
    m pthread)
  list(APPEND CF_PC_LIBS_PRIVATE -l${lib})
endforeach()
# A library named twice keeps its last place (a static link reads left to right).
list(REVERSE CF_PC_LIBS_PRIVATE)
list(REMOVE_DUPLICATES CF_PC_LIBS_PRIVATE)
list(REVERSE CF_PC_LIBS_PRIVATE)
if(CF_JEMALLOC)
  list(PREPEND CF_PC_LIBS_PRIVATE -lc)
endif()
set(CF_PC_LIBDIRS_PRIVATE)
foreach(dir ${URCU_LIBRARY_DIRS} ${HWLOC_LIBRARY_DIRS} ${JEMALLOC_LIBRARY_DIRS})
  if(NOT dir IN_LIST CMAKE_C_IMPLICIT_LINK_DIRECTORIES)
    list(APPEND CF_PC_LIBDIRS_PRIVATE -L${dir})
  endif()
endforeach()
list(REMOVE_DUPLICATES CF_PC_LIBDIRS_PRIVATE)
list(JOIN CF_PC_LIBDIRS_PRIVATE " " CF_PC_LIBDIRS_PRIVATE)
list(JOIN CF_PC_LIBS_PRIVATE " " CF_PC_LIBS_PRIVATE)
string(STRIP "${CF_PC_LIBDIRS_PRIVATE} ${CF_PC_LIBS_PRIVATE}" CF_PC_LIBS_PRIVATE)

# The prefix is written when the files are installed, so `cmake --install
# build --prefix X` (and cpack, which installs under /usr) gets its own:
# relative to the .pc file's directory (${pcfiledir}: the tree may be moved
# afterwards), or absolute under /usr, where a distribution's package puts
# it and where pkg-config then drops -I/usr/include and -L/usr/lib as
# system directories. Absolute CMAKE_INSTALL_LIBDIR / INCLUDEDIR stay as
# they are.
# First pass now (version, libraries); the paths stay @...@ for the second.
foreach(var CF_PC_PREFIX CF_PC_LIBDIR CF_PC_INCLUDEDIR)
  set(${var} "@${var}@")
endforeach()
configure_file(cmake/cfutures.pc.in ${PROJECT_BINARY_DIR}/cfutures.pc.in @ONLY)
install(CODE "
  set(CF_PC_IN \"${PROJECT_BINARY_DIR}/cfutures.pc.in\")
  set(CF_PC_OUT \"${PROJECT_BINARY_DIR}/pc-install/cfutures.pc\")
  set(CF_LIBDIR \"${CMAKE_INSTALL_LIBDIR}\")
  set(CF_INCLUDEDIR \"${CMAKE_INSTALL_INCLUDEDIR}\")
  include(\"${PROJECT_SOURCE_DIR}/cmake/cfutures-pc.cmake\")
  file(INSTALL DESTINATION \"\${CF_PC_DIR}\" TYPE FILE FILES \"\${CF_PC_OUT}\")
" COMPONENT dev)

# ---- Debian packages: `cpack -G DEB` in a tree configured with
# -DCMAKE_INSTALL_PREFIX=/usr (tools/check-packages) ----
if(PROJECT_IS_TOP_LEVEL)
  set(CPACK_PACKAGE_NAME cfutures)
  set(CPACK_PACKAGE_VENDOR "the cfutures authors")
  set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "concurrent.futures for C: lock-free, NUMA-aware executors")
  set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
  set(CPACK_RESOURCE_FILE_LICENSE ${PROJECT_SOURCE_DIR}/LICENSE)
  set(CPACK_COMPONENTS_ALL runtime dev)
  set(CPACK_DEB_COMPONENT_INSTALL ON)
  set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
  set(CPACK_DEBIAN_PACKAGE_MAINTAINER "the cfutures authors")
  set(CPACK_DEBIAN_RUNTIME_PACKAGE_NAME libcfutures${CF_SOVERSION})
  set(CPACK_DEBIAN_RUNTIME_PACKAGE_SECTION libs)
  # dpkg-shlibdeps: liburcu8, libhwloc15, libc6 (libjemalloc2 with CF_JEMALLOC) at the
  # versions this build linked against; a shlibs file and the ldconfig
  # trigger for the library.
  set(CPACK_DEBIAN_RUNTIME_PACKAGE_SHLIBDEPS ON)
  set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS ON)
  set(CPACK_DEBIAN_DEV_PACKAGE_NAME libcfutures-dev)
  set(CPACK_DEBIAN_DEV_PACKAGE_SECTION libdevel)
  set(CPACK_DEBIAN_DEV_PACKAGE_SHLIBDEPS ON) # cfutures-info
  set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS "libcfutures${CF_SOVERSION} (= ${PROJECT_VERSION})")
  # Only a static link (libcfutures.a) needs the dependencies' dev packages.
  set(CPACK_DEBIAN_DEV_PACKAGE_SUGGESTS "liburcu-dev, libhwloc-dev")
  if(CF_JEMALLOC)
    string(APPEND CPACK_DEBIAN_DEV_PACKAGE_SUGGESTS ", libjemalloc-dev")
  endif()
  # libcfutures-mpi, when built: its library, and its dev files beside
  # libcfutures-dev's. dpkg-shlibdeps cannot name libcfutures' package (it
  # is not installed while packaging): the dependencies are written here,
  # Open MPI's runtime found from the package that holds the library
  # libcfutures-mpi links.
  if(TARGET cfutures-mpi)
    list(APPEND CPACK_COMPONENTS_ALL mpi mpi-dev)
    set(CF_MPI_RUNTIME_DEB)
    find_program(CF_DPKG_QUERY dpkg-query)
    list(GET MPI_C_LIBRARIES 0 CF_MPI_LIB)
    if(CF_DPKG_QUERY AND CF_MPI_LIB)
      get_filename_component(CF_MPI_LIB_REAL ${CF_MPI_LIB} REALPATH)
      execute_process(COMMAND ${CF_DPKG_QUERY} -S ${CF_MPI_LIB_REAL}
        OUTPUT_VARIABLE CF_MPI_OWNER ERROR_QUIET OUTPUT_STRIP_TRAILING_WHITESPACE)
      string(REGEX REPLACE "[:,].*" "" CF_MPI_RUNTIME_DEB "${CF_MPI_OWNER}")
    endif()
    set(CPACK_DEBIAN_MPI_PACKAGE_NAME libcfutures-mpi${CF_SOVERSION})
    set(CPACK_DEBIAN_MPI_PACKAGE_SECTION libs)
    set(CPACK_DEBIAN_MPI_PACKAGE_DEPENDS
      "libcfutures${CF_SOVERSION} (= ${PROJECT_VERSION}), libc6")
    if(CF_MPI_RUNTIME_DEB)
      string(APPEND CPACK_DEBIAN_MPI_PACKAGE_DEPENDS ", ${CF_MPI_RUNTIME_DEB}")
    endif()
    set(CPACK_DEBIAN_MPI-DEV_PACKAGE_NAME libcfutures-mpi-dev)
    set(CPACK_DEBIAN_MPI-DEV_PACKAGE_SECTION libdevel)
    set(CPACK_DEBIAN_MPI-DEV_PACKAGE_DEPENDS
      "libcfutures-mpi${CF_SOVERSION} (= ${PROJECT_VERSION}), libcfutures-dev (= ${PROJECT_VERSION}), libopenmpi-dev")
    set(CPACK_COMPONENT_MPI_DESCRIPTION
      "concurrent.futures for C: the executor over MPI, shared library")
    set(CPACK_COMPONENT_MPI-DEV_DESCRIPTION
      "concurrent.futures for C: the executor over MPI, header, pkg-config and CMake files")
  endif()
  set(CPACK_COMPONENT_RUNTIME_DESCRIPTION "concurrent.futures for C: the shared library")
  set(CPACK_COMPONENT_DEV_DESCRIPTION
    "concurrent.futures for C: headers, static library, pkg-config and CMake files")
  include(CPack)
endif()
