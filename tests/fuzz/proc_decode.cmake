# fuzz_proc_decode: the parent's decoding of what a process-pool worker
# writes into shared memory (slot states, lengths, flags, spill positions,
# messages; see the opening comment of fuzz_proc_decode.c).
#
# Meant to be included from tests/fuzz/CMakeLists.txt when CF_BUILD_FUZZ=ON
# and the compiler is clang. The library's own code is only instrumented
# for coverage if cfutures_obj is compiled with -fsanitize=fuzzer-no-link
# (with address,undefined); this file only builds the target and a ctest
# that replays the seed corpus once (a regression run, not a fuzzing run).
#
#   build/fuzz/fuzz_proc_decode -max_total_time=300 corpus-dir \
#       tests/fuzz/corpus/proc_decode
set(CF_FUZZ_PROC_DECODE_DIR ${CMAKE_CURRENT_LIST_DIR})
add_executable(fuzz_proc_decode ${CF_FUZZ_PROC_DECODE_DIR}/fuzz_proc_decode.c)
target_compile_definitions(fuzz_proc_decode PRIVATE _GNU_SOURCE=1)
target_compile_options(fuzz_proc_decode PRIVATE -fsanitize=fuzzer,address,undefined)
target_link_options(fuzz_proc_decode PRIVATE -fsanitize=fuzzer,address,undefined)
target_link_libraries(fuzz_proc_decode PRIVATE cfutures_obj)
file(GLOB CF_FUZZ_PROC_DECODE_SEEDS ${CF_FUZZ_PROC_DECODE_DIR}/corpus/proc_decode/*)
add_test(NAME fuzz_proc_decode_seeds COMMAND fuzz_proc_decode ${CF_FUZZ_PROC_DECODE_SEEDS})
