/* What cf::process_pool must refuse at compile time: each CF_REJECT_* case
 * is compiled by a test that expects the static_assert's message (see
 * tests in CMakeLists.txt); with none defined it must compile. */
#include "cfutures.hpp"

#include <string>

[[maybe_unused]] static int twice(int x)
{
    return 2 * x;
}
[[maybe_unused]] static std::string name(int x)
{
    return std::to_string(x);
}
[[maybe_unused]] static int length(std::string s)
{
    return static_cast<int>(s.size());
}

void reject(cf::process_pool &p);
void reject(cf::process_pool &p)
{
#if defined(CF_REJECT_lambda)
    int k = 1;
    p.submit([k](int x) { return x + k; }, 1);
#elif defined(CF_REJECT_map_lambda)
    int items[] = {1, 2};
    for (int v : p.map([](int x) { return x; }, items)) (void)v;
#elif defined(CF_REJECT_result)
    p.submit(name, 1);
#elif defined(CF_REJECT_argument)
    p.submit(length, std::string("x"));
#else
    p.submit(twice, 1).get();
    for (int v : p.map(twice, std::string("ab"))) (void)v;
#endif
}
