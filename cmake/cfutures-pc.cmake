# Runs when cfutures.pc is installed (cmake/install.cmake): writes CF_PC_OUT
# from CF_PC_IN with the prefix of this install, and sets CF_PC_DIR, the
# directory it goes to. In: CMAKE_INSTALL_PREFIX (the install's, e.g. from
# `cmake --install build --prefix X`), CF_LIBDIR, CF_INCLUDEDIR (as
# GNUInstallDirs set them: relative to the prefix, or absolute).
if(IS_ABSOLUTE "${CF_LIBDIR}")
  set(CF_PC_DIR "${CF_LIBDIR}/pkgconfig")
else()
  set(CF_PC_DIR "${CMAKE_INSTALL_PREFIX}/${CF_LIBDIR}/pkgconfig")
endif()
if(CMAKE_INSTALL_PREFIX STREQUAL "/usr" OR IS_ABSOLUTE "${CF_LIBDIR}")
  # A distribution's prefix (cpack), or a libdir outside the prefix: absolute.
  set(CF_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
else()
  # ${pcfiledir}: where pkg-config found this file, so the tree may move.
  file(RELATIVE_PATH rel "${CF_PC_DIR}" "${CMAKE_INSTALL_PREFIX}")
  string(REGEX REPLACE "/$" "" rel "${rel}")
  set(CF_PC_PREFIX "\${pcfiledir}/${rel}")
endif()
foreach(kind LIBDIR INCLUDEDIR)
  if(IS_ABSOLUTE "${CF_${kind}}")
    set(CF_PC_${kind} "${CF_${kind}}")
  else()
    set(CF_PC_${kind} "\${prefix}/${CF_${kind}}")
  endif()
endforeach()
configure_file("${CF_PC_IN}" "${CF_PC_OUT}" @ONLY)
