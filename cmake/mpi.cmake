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

# mpirun as root (CI containers) needs Open MPI's consent.
set(CF_MPI_TEST_ENV OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  OMPI_MCA_rmaps_base_oversubscribe=1 ASAN_OPTIONS=detect_leaks=0)

if(CF_BUILD_EXAMPLES)
  add_executable(primes_mpi ${PROJECT_SOURCE_DIR}/examples/mpi/primes_mpi.c)
  target_link_libraries(primes_mpi PRIVATE cfutures-mpi m)
endif()

# ---- tests: every tests/mpi/test_mpi_*.c runs under mpirun -n 3 and -n 2 ----
if(CF_BUILD_TESTS)
  file(GLOB CF_MPI_TESTS CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/tests/mpi/test_mpi_*.c)
  foreach(src ${CF_MPI_TESTS})
    get_filename_component(name ${src} NAME_WE)
    add_executable(${name} ${src})
    target_compile_definitions(${name} PRIVATE _GNU_SOURCE=1)
    target_link_libraries(${name} PRIVATE cfutures-mpi PkgConfig::CMOCKA)
    foreach(np 3 2)
      add_test(NAME ${name}_n${np} COMMAND ${MPIEXEC_EXECUTABLE} --oversubscribe
        ${MPIEXEC_NUMPROC_FLAG} ${np} $<TARGET_FILE:${name}>)
      # A hang fails after the timeout instead of blocking CI.
      set_tests_properties(${name}_n${np} PROPERTIES TIMEOUT 120 LABELS mpi
        ENVIRONMENT "${CF_MPI_TEST_ENV}")
    endforeach()
  endforeach()
endif()

if(CF_INSTALL)
  install(TARGETS cfutures-mpi EXPORT cfuturesMpiTargets
    LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT runtime NAMELINK_COMPONENT dev)
  install(EXPORT cfuturesMpiTargets NAMESPACE cfutures::
    DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/cfutures COMPONENT dev)
  configure_file(${PROJECT_SOURCE_DIR}/cmake/cfutures-mpi.pc.in
    ${PROJECT_BINARY_DIR}/cfutures-mpi.pc @ONLY)
  install(FILES ${PROJECT_BINARY_DIR}/cfutures-mpi.pc
    DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig COMPONENT dev)
endif()
