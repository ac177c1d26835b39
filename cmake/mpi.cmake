# libcfutures-mpi: the executor over MPI (src/mpi/, include/cfutures/mpi.h,
# docs/MPI.md). A library of its own so that programs without MPI never
# link MPI: it links libcfutures and MPI::MPI_C; libcfutures knows nothing
# of it. Included by the top CMakeLists.txt when CF_BUILD_MPI is on.
find_package(MPI REQUIRED COMPONENTS C)

file(GLOB CF_MPI_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/src/mpi/*.c)
add_library(cfutures-mpi SHARED ${CF_MPI_SOURCES})
set_target_properties(cfutures-mpi PROPERTIES VERSION ${PROJECT_VERSION} SOVERSION ${CF_SOVERSION}
  C_VISIBILITY_PRESET hidden OUTPUT_NAME cfutures-mpi)
target_compile_definitions(cfutures-mpi PRIVATE CFUTURES_BUILDING=1 _GNU_SOURCE=1)
# The executor interface (src/core/executor.h, the hook fields of
# src/core/future.h) is header-only to it: it calls libcfutures only
# through the exported cf_* functions. future.h includes urcu's headers.
target_include_directories(cfutures-mpi PRIVATE ${PROJECT_SOURCE_DIR}/src
  $<TARGET_PROPERTY:PkgConfig::URCU,INTERFACE_INCLUDE_DIRECTORIES>)
target_include_directories(cfutures-mpi PUBLIC
  $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/include>
  $<BUILD_INTERFACE:${PROJECT_BINARY_DIR}/include>
  $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
target_link_libraries(cfutures-mpi PUBLIC cfutures MPI::MPI_C PRIVATE Threads::Threads ${CMAKE_DL_LIBS})
target_link_options(cfutures-mpi PRIVATE -Wl,--no-undefined)
add_library(cfutures::cfutures-mpi ALIAS cfutures-mpi)
if(CF_HAVE_SDT_H) # the root's USDT probes (src/mpi/mpi_hooks.h)
  target_compile_definitions(cfutures-mpi PRIVATE CF_HAVE_SDT=1)
endif()

# mpirun as root (CI containers) needs Open MPI's consent. The tests run on
# one host: shared memory only (btl self,vader), which also keeps Open MPI's
# TCP transport, whose own lock order ThreadSanitizer reports, out of the
# TSan tree. Open MPI leaks by design at exit: no LeakSanitizer there.
set(CF_MPI_TEST_ENV OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  OMPI_MCA_btl=self,vader ASAN_OPTIONS=detect_leaks=0
  TSAN_OPTIONS=suppressions=${PROJECT_SOURCE_DIR}/tests/mpi/tsan.supp)

if(CF_BUILD_EXAMPLES)
  add_executable(primes_mpi ${PROJECT_SOURCE_DIR}/examples/mpi/primes_mpi.c)
  target_link_libraries(primes_mpi PRIVATE cfutures-mpi m)
endif()

# The MPI workloads beside a hand-written MPI master/worker
# (perf/mpi/cfutures-mpi-bench.c; run it under mpirun -n 3).
if(CF_BUILD_PERF)
  add_executable(cfutures-mpi-bench ${PROJECT_SOURCE_DIR}/perf/mpi/cfutures-mpi-bench.c)
  target_link_libraries(cfutures-mpi-bench PRIVATE cfutures-mpi m)
endif()

# ---- tests: every tests/mpi/test_mpi_*.c runs under mpirun -n 3 and -n 2 ----
if(CF_BUILD_TESTS AND NOT MPIEXEC_EXECUTABLE)
  message(WARNING "cfutures: no mpiexec/mpirun found (Debian: openmpi-bin): the MPI tests are not built")
endif()
if(CF_BUILD_TESTS AND MPIEXEC_EXECUTABLE)
  file(GLOB CF_MPI_TESTS CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/tests/mpi/test_mpi_*.c)
  # A module test_mpi_exec loads on the root after making its executor.
  add_library(cf_mpi_late_plugin MODULE ${PROJECT_SOURCE_DIR}/tests/mpi/plugin/late_plugin.c)
  target_link_libraries(cf_mpi_late_plugin PRIVATE cfutures)
  # The same sources with the test hooks in (src/mpi/mpi_hooks.h), never
  # installed: test_mpi_hooks*.c link it instead of libcfutures-mpi.so.
  add_library(cfutures_mpi_hooks STATIC ${CF_MPI_SOURCES})
  target_compile_definitions(cfutures_mpi_hooks PRIVATE CFUTURES_BUILDING=1 _GNU_SOURCE=1
    PUBLIC CF_TEST_HOOKS=1)
  if(CF_HAVE_SDT_H)
    target_compile_definitions(cfutures_mpi_hooks PRIVATE CF_HAVE_SDT=1)
  endif()
  target_include_directories(cfutures_mpi_hooks PRIVATE ${PROJECT_SOURCE_DIR}/src
    $<TARGET_PROPERTY:PkgConfig::URCU,INTERFACE_INCLUDE_DIRECTORIES>)
  target_link_libraries(cfutures_mpi_hooks PUBLIC cfutures MPI::MPI_C Threads::Threads
    ${CMAKE_DL_LIBS})
  foreach(src ${CF_MPI_TESTS})
    get_filename_component(name ${src} NAME_WE)
    add_executable(${name} ${src} ${PROJECT_SOURCE_DIR}/tests/mpi/support/file_gates.c)
    target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR}/tests/mpi)
    add_dependencies(${name} cf_mpi_late_plugin)
    target_compile_definitions(${name} PRIVATE _GNU_SOURCE=1
      CF_MPI_LATE_PLUGIN="$<TARGET_FILE:cf_mpi_late_plugin>")
    target_link_libraries(${name} PRIVATE ${CMAKE_DL_LIBS})
    if(name MATCHES "^test_mpi_hooks")
      target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR}/src)
      target_link_libraries(${name} PRIVATE cfutures_mpi_hooks PkgConfig::CMOCKA)
    else()
      target_link_libraries(${name} PRIVATE cfutures-mpi PkgConfig::CMOCKA)
    endif()
    foreach(np 3 2)
      add_test(NAME ${name}_n${np} COMMAND ${MPIEXEC_EXECUTABLE} --oversubscribe
        ${MPIEXEC_NUMPROC_FLAG} ${np} $<TARGET_FILE:${name}>)
      # A hang fails after the timeout instead of blocking CI.
      set_tests_properties(${name}_n${np} PROPERTIES TIMEOUT 120 LABELS mpi
        ENVIRONMENT "${CF_MPI_TEST_ENV}")
    endforeach()
  endforeach()
  # The root's USDT probes are in the shipped library (test_mpi_hooks
  # counts their firings through its hook; this checks the ELF notes).
  find_program(CF_READELF readelf)
  if(CF_HAVE_SDT_H AND CF_READELF)
    add_test(NAME test_mpi_probe_notes COMMAND sh -c
      "${CF_READELF} -n \"$1\" | grep -E 'Name: (submit|start|finish)$' | sort -u | wc -l | grep -qx 3"
      sh $<TARGET_FILE:cfutures-mpi>)
    set_tests_properties(test_mpi_probe_notes PROPERTIES LABELS mpi)
  endif()
  # A serving rank that dies ends the job with mpirun's message naming it
  # (docs/MPI.md, "Failures"); the root must never be left waiting.
  add_executable(rank_death_mpi ${PROJECT_SOURCE_DIR}/tests/mpi/rank_death_mpi.c)
  target_link_libraries(rank_death_mpi PRIVATE cfutures-mpi)
  add_test(NAME test_mpi_rank_death COMMAND ${MPIEXEC_EXECUTABLE} --oversubscribe
    ${MPIEXEC_NUMPROC_FLAG} 3 $<TARGET_FILE:rank_death_mpi>)
  set_tests_properties(test_mpi_rank_death PROPERTIES TIMEOUT 60 LABELS mpi
    ENVIRONMENT "${CF_MPI_TEST_ENV}"
    PASS_REGULAR_EXPRESSION "process rank [12] with PID [0-9]+ on node [^ ]+ exited on signal"
    FAIL_REGULAR_EXPRESSION "UNEXPECTED")
  # Spawn mode: one process started by mpirun spawns two serving copies.
  add_executable(spawn_mpi ${PROJECT_SOURCE_DIR}/tests/mpi/spawn_mpi.c)
  target_link_libraries(spawn_mpi PRIVATE cfutures-mpi)
  add_test(NAME test_mpi_spawn COMMAND ${MPIEXEC_EXECUTABLE} --oversubscribe
    ${MPIEXEC_NUMPROC_FLAG} 1 $<TARGET_FILE:spawn_mpi>)
  # Open MPI 4.1's shared-memory transport does not connect spawned
  # processes: this one keeps the default transports (TCP).
  set_tests_properties(test_mpi_spawn PROPERTIES TIMEOUT 120 LABELS mpi
    ENVIRONMENT "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1;ASAN_OPTIONS=detect_leaks=0"
    PASS_REGULAR_EXPRESSION "spawn: ok")
endif()

# Installed as two components of its own, one per Debian package (cmake/
# install.cmake makes them with cpack when the library is built):
#   mpi      libcfutures-mpi.so.<SOVERSION> (package libcfutures-mpi<SOVERSION>)
#   mpi-dev  cfutures/mpi.h, libcfutures-mpi.so, cfutures-mpi.pc and the
#            CMake targets that find_package(cfutures COMPONENTS mpi)
#            loads (package libcfutures-mpi-dev)
# `cmake --install . --component mpi` (and mpi-dev) installs them alone.
if(CF_INSTALL)
  install(TARGETS cfutures-mpi EXPORT cfuturesMpiTargets
    LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT mpi NAMELINK_COMPONENT mpi-dev)
  install(EXPORT cfuturesMpiTargets NAMESPACE cfutures::
    DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/cfutures COMPONENT mpi-dev)
  install(FILES ${PROJECT_SOURCE_DIR}/include/cfutures/mpi.h
    DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/cfutures COMPONENT mpi-dev)
  # Relocatable, as cfutures.pc: the prefix is found from the file's place.
  file(RELATIVE_PATH CF_MPI_PC_UP /prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig /prefix)
  configure_file(${PROJECT_SOURCE_DIR}/cmake/cfutures-mpi.pc.in
    ${PROJECT_BINARY_DIR}/cfutures-mpi.pc @ONLY)
  install(FILES ${PROJECT_BINARY_DIR}/cfutures-mpi.pc
    DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig COMPONENT mpi-dev)
endif()
