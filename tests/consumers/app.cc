/* The C++ consumer (tools/check-consumers, pc-cxx): the installed
 * cfutures.hpp, squares 1..6 through cf::thread_pool::map, and their sum, 91. */
#include <cfutures.hpp>

#include <cstdint>
#include <cstdio>
#include <vector>

int main()
{
    cf::thread_pool pool;
    int64_t sum = 0;
    for (int64_t y :
         pool.map([](int64_t x) { return x * x; }, std::vector<int64_t>{1, 2, 3, 4, 5, 6}))
        sum += y;
    std::printf("cfutures %s: sum of squares %lld\n", cf_version(), static_cast<long long>(sum));
    return sum == 91 ? 0 : 1;
}
