/* The C++ face (include/cfutures.hpp): typed results, void, heap-held
 * results, move-only callables, exceptions rethrown, cancellation without
 * leaks, then, when_all/when_any, as_completed and map range-for, on the
 * thread pool and the process pool.
 *
 * A small harness of its own (CHECK keeps going, main returns non-zero on
 * any failure): cmocka's longjmp would skip C++ destructors. Gates hold the
 * orders the tests need; there are no timing assertions. */
#include "cfutures.hpp"

#include <atomic>
#include <cstdio>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#ifdef CF_TSAN
/* jemalloc's fork handler takes every arena's locks at once, more than
 * ThreadSanitizer's lock-order detector can track (it aborts on a CHECK
 * when the process pool forks after thread pools made arenas); data races
 * are still reported. */
extern "C" const char *__tsan_default_options(void);
extern "C" const char *__tsan_default_options(void)
{
    return "detect_deadlocks=0";
}
#endif

static int failures;

#define CHECK(cond)                                                                       \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                                   \
        }                                                                                 \
    } while (0)

/* expr must throw Exc; then `check` runs with the exception as `e`. */
#define CHECK_THROWS(Exc, expr, check)                                                             \
    do {                                                                                           \
        bool thrown_ = false;                                                                      \
        try {                                                                                      \
            expr;                                                                                  \
        } catch (const Exc &e) {                                                                   \
            thrown_ = true;                                                                        \
            check;                                                                                 \
        }                                                                                          \
        if (!thrown_) {                                                                            \
            std::fprintf(stderr, "%s:%d: %s did not throw %s\n", __FILE__, __LINE__, #expr, #Exc); \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

/* A gate a task waits at until the test opens it. */
struct gate {
    std::atomic<bool> open{false};
    std::atomic<int> arrived{0};
    void wait()
    {
        arrived.fetch_add(1, std::memory_order_release);
        while (!open.load(std::memory_order_acquire)) std::this_thread::yield();
    }
    void await_arrivals(int n)
    {
        while (arrived.load(std::memory_order_acquire) < n) std::this_thread::yield();
    }
    void release()
    {
        open.store(true, std::memory_order_release);
    }
};

/* Counts its live instances: callables and results that must all be gone
 * once their futures and pools are (LeakSanitizer cannot see a leaked cell:
 * a stale copy of its address stays in the library's recycled memory). */
struct tracked {
    static std::atomic<int> live;
    tracked()
    {
        live.fetch_add(1, std::memory_order_relaxed);
    }
    tracked(const tracked &)
    {
        live.fetch_add(1, std::memory_order_relaxed);
    }
    ~tracked()
    {
        live.fetch_sub(1, std::memory_order_relaxed);
    }
};
std::atomic<int> tracked::live{0};

struct point {
    int32_t x, y;
    double w;
};

static void test_typed_results()
{
    cf::thread_pool pool(cf::thread_pool_options().max_workers(2).thread_name_prefix("cpp"));
    CHECK(pool.workers() == 2);
    int base = 40;
    cf::future<int> a = pool.submit([base](int k) { return base + k; }, 2);
    cf::future<double> b = pool.submit([] { return 0.5; });
    cf::future<point> c = pool.submit([](int32_t x) { return point{x, x * 2, 1.5}; }, 21);
    CHECK(a.get() == 42);
    CHECK(a.get() == 42); /* a copyable value may be read again */
    CHECK(b.get() == 0.5);
    point p = c.get();
    CHECK(p.x == 21 && p.y == 42 && p.w == 1.5);
    CHECK(a.done() && !a.cancelled() && !a.running());
}

static void test_void_result()
{
    std::atomic<int> hits{0};
    {
        cf::thread_pool pool;
        std::vector<cf::future<void>> fs;
        for (int i = 0; i < 16; i++)
            fs.push_back(pool.submit([&hits] { hits.fetch_add(1, std::memory_order_relaxed); }));
        for (auto &f : fs) f.get();
        CHECK(hits.load(std::memory_order_relaxed) == 16);
        pool.submit([&hits] { hits.fetch_add(1, std::memory_order_relaxed); }); /* dropped */
    } /* the destructor waits for the dropped one */
    CHECK(hits.load(std::memory_order_relaxed) == 17);
}

static void test_heap_results()
{
    cf::thread_pool pool(cf::thread_pool_options().max_workers(2));
    std::string name = "world";
    cf::future<std::string> s = pool.submit([name] { return "hello " + name; });
    cf::future<std::vector<int>> v = pool.submit(
        [](int n) {
            std::vector<int> out;
            for (int i = 0; i < n; i++) out.push_back(i * i);
            return out;
        },
        1000);
    CHECK(s.get() == "hello world");
    CHECK(s.get() == "hello world");
    std::vector<int> got = v.get();
    CHECK(got.size() == 1000 && got[999] == 999 * 999);
    /* A result nobody reads is freed with the last handle. */
    pool.submit([] { return std::make_pair(std::string(4096, 'x'), tracked()); });
    cf::future<tracked> kept = pool.submit([t = tracked()] { return t; });
    kept.get();
}

static void test_move_only()
{
    cf::thread_pool pool(cf::thread_pool_options().max_workers(2));
    auto owned = std::make_unique<int>(7);
    cf::future<int> a = pool.submit([p = std::move(owned)] { return *p * 6; });
    CHECK(a.get() == 42);
    cf::future<int> b = pool.submit([](std::unique_ptr<int> q) { return *q + 1; },
                                    std::make_unique<int>(1));
    CHECK(b.get() == 2);
    /* A move-only result is moved out by the first get(). */
    cf::future<std::unique_ptr<int>> c = pool.submit([] { return std::make_unique<int>(5); });
    std::unique_ptr<int> r = c.get();
    CHECK(r && *r == 5);
    CHECK_THROWS(cf::error, c.get(), CHECK(e.code() == CF_ESTATE));
    /* Handles move. */
    cf::future<int> moved = std::move(a);
    CHECK(moved.valid() && !a.valid());
    CHECK_THROWS(cf::error, a.get(), CHECK(e.code() == CF_EINVAL));
}

struct custom_error {
    int value;
};

static void test_exceptions_thread_pool()
{
    cf::thread_pool pool(cf::thread_pool_options().max_workers(2));
    cf::future<int> a = pool.submit([]() -> int { throw std::out_of_range("index 9"); });
    CHECK_THROWS(std::out_of_range, a.get(), CHECK(std::string(e.what()) == "index 9"));
    CHECK_THROWS(std::out_of_range, a.get(), (void)e); /* the same exception again */
    cf::future<void> b = pool.submit([] { throw custom_error{5}; });
    CHECK_THROWS(custom_error, b.get(), CHECK(e.value == 5));
    cf::future<std::string> c = pool.submit([]() -> std::string { throw std::runtime_error("s"); });
    CHECK_THROWS(std::runtime_error, c.get(), CHECK(std::string(e.what()) == "s"));
    /* C callers see a task error with the exception's message. */
    int code = 0;
    const char *msg = nullptr;
    CHECK(cf_future_exception(a.native(), CF_FOREVER, &code, &msg) == 0);
    CHECK(code == cf::exception_code && msg && std::string(msg) == "index 9");
}

static int64_t square(int64_t x)
{
    return x * x;
}
static point scale(point p, int k)
{
    return point{p.x * k, p.y * k, p.w * k};
}
static int64_t fails(int64_t x)
{
    if (x == 3) throw std::invalid_argument("three is not allowed");
    return x;
}
static void nothing()
{
}

static void test_process_pool()
{
    cf::process_pool procs(cf::process_pool_options().max_workers(2));
    cf::future<int64_t> a = procs.submit(square, int64_t{7});
    cf::future<int64_t> a2 = procs.submit(square, 9); /* converted to the parameter type */
    cf::future<point> b = procs.submit(scale, point{1, 2, 0.25}, 4);
    cf::future<void> c = procs.submit(nothing);
    cf::future<int64_t> d = procs.submit(fails, 3);
    cf::future<int64_t> e2 = procs.submit(
        +[](int64_t x) { return x + 1; }, 1);
    CHECK(a.get() == 49);
    CHECK(a2.get() == 81);
    point p = b.get();
    CHECK(p.x == 4 && p.y == 8 && p.w == 1.0);
    c.get();
    CHECK_THROWS(cf::task_error, d.get(),
                 CHECK(e.task_code() == cf::exception_code && e.code() == CF_ETASK &&
                       std::string(e.what()) == "three is not allowed"));
    CHECK(e2.get() == 2);
}

static void test_cancel_before_run()
{
    cf::thread_pool pool(cf::thread_pool_options().max_workers(1));
    gate g;
    cf::future<void> blocker = pool.submit([&g] { g.wait(); });
    g.await_arrivals(1); /* the only worker is busy */
    auto token = std::make_shared<int>(1);
    std::atomic<bool> ran{false};
    cf::future<std::string> victim = pool.submit([token, &ran, big = std::vector<char>(1 << 16)] {
        ran.store(true, std::memory_order_relaxed);
        return std::string(big.begin(), big.end());
    });
    CHECK(token.use_count() == 2);
    CHECK(victim.cancel());
    /* The callable (and its captures) went at once, though the handle lives. */
    CHECK(token.use_count() == 1);
    CHECK(victim.cancelled() && victim.done());
    CHECK_THROWS(cf::cancelled_error, victim.get(), CHECK(e.code() == CF_ECANCELLED));
    /* Cancelled by shutdown after its handle was dropped: nothing leaks. */
    pool.submit([token, t = tracked()] { return std::string("never"); });
    CHECK(token.use_count() == 2);
    pool.shutdown(false, true);
    CHECK(token.use_count() == 1);
    g.release();
    blocker.get();
    CHECK(!ran.load(std::memory_order_relaxed));
}

static void test_timeout_and_wait()
{
    cf::thread_pool pool(cf::thread_pool_options().max_workers(1));
    gate g;
    cf::future<int> f = pool.submit([&g] {
        g.wait();
        return 3;
    });
    g.await_arrivals(1);
    CHECK_THROWS(cf::timeout_error, f.get(std::chrono::milliseconds(1)),
                 CHECK(e.code() == CF_ETIMEDOUT));
    CHECK(!f.wait(std::chrono::milliseconds(0)));
    CHECK(!f.done() && f.running() && !f.cancel());
    g.release();
    f.wait();
    CHECK(f.wait(std::chrono::seconds(0)));
    CHECK(f.get(std::chrono::hours(1)) == 3);
}

static void test_then()
{
    cf::thread_pool pool(cf::thread_pool_options().max_workers(2));
    cf::future<int> a = pool.submit([] { return 20; });
    cf::future<std::string> b = a.then([](int v) { return std::to_string(v + 1); });
    cf::future<size_t> c = b.then([](const std::string &s) { return s.size(); });
    CHECK(b.get() == "21");
    CHECK(c.get() == 2);
    CHECK(a.get() == 20); /* the first future stays valid */

    /* An exception skips a value continuation and reaches its future. */
    std::atomic<bool> called{false};
    cf::future<int> bad = pool.submit([]() -> int { throw std::length_error("long"); });
    cf::future<int> after = bad.then([&called](int v) {
        called.store(true, std::memory_order_relaxed);
        return v;
    });
    CHECK_THROWS(std::length_error, after.get(), CHECK(std::string(e.what()) == "long"));
    CHECK(!called.load(std::memory_order_relaxed));

    /* A continuation that takes the future sees every outcome. */
    cf::future<std::string> handled = bad.then([](cf::future<int> &f) -> std::string {
        try {
            f.get();
            return "value";
        } catch (const std::length_error &e) {
            return std::string("caught ") + e.what();
        }
    });
    CHECK(handled.get() == "caught long");

    /* void on both sides, a throwing continuation, and then on an already
     * done future (runs at once, in this thread). */
    cf::future<void> v = pool.submit([] {});
    v.get();
    std::thread::id here = std::this_thread::get_id(), where;
    cf::future<void> v2 = v.then([&where] { where = std::this_thread::get_id(); });
    v2.get();
    CHECK(where == here);
    /* Not yet done: the continuation runs in the worker that completes it. */
    gate held;
    cf::future<int> gated = pool.submit([&held] {
        held.wait();
        return 1;
    });
    held.await_arrivals(1);
    std::thread::id in_worker;
    cf::future<int> after_gate = gated.then([&in_worker](int x) {
        in_worker = std::this_thread::get_id();
        return x + 1;
    });
    held.release();
    CHECK(after_gate.get() == 2);
    CHECK(in_worker != here && in_worker != std::thread::id());
    /* The first future's handle may go at once: the continuation keeps it. */
    cf::future<int> chained = pool.submit([] { return 5; }).then([](int x) { return x * 2; });
    CHECK(chained.get() == 10);
    CHECK(cf::when_all(pool.submit([] { return 1; }), pool.submit([] {
          })).wait(std::chrono::hours(1)));
    cf::future<int> thrower = v.then([t = tracked()]() -> int { throw std::domain_error("then"); });
    CHECK_THROWS(std::domain_error, thrower.get(), (void)e);

    /* A cancelled first future: the continuation's future holds
     * cf::cancelled_error. */
    gate g;
    cf::thread_pool one(cf::thread_pool_options().max_workers(1));
    cf::future<void> blocker = one.submit([&g] { g.wait(); });
    g.await_arrivals(1);
    cf::future<int> queued = one.submit([] { return 1; });
    cf::future<int> next = queued.then([t = tracked()](int x) { return x + 1; });
    CHECK(queued.cancel());
    CHECK_THROWS(cf::cancelled_error, next.get(), (void)e);
    g.release();
    blocker.get();

    /* then on a process-pool future (runs in the parent). */
    cf::process_pool procs(cf::process_pool_options().max_workers(1));
    cf::future<int64_t> sq = procs.submit(square, int64_t{12});
    cf::future<std::string> text = sq.then([](int64_t x) { return std::to_string(x); });
    CHECK(text.get() == "144");
}

static void test_when_all_any()
{
    cf::thread_pool pool(cf::thread_pool_options().max_workers(2));
    std::vector<cf::future<int>> fs;
    for (int i = 0; i < 8; i++) fs.push_back(pool.submit([i] { return i; }));
    cf::when_all(fs).get();
    for (auto &f : fs) CHECK(f.done());
    cf::future<std::string> s = pool.submit([] { return std::string("x"); });
    cf::future<void> v = pool.submit([] {});
    cf::when_all(fs[0], s, v).get();
    CHECK(s.done() && v.done());
    std::vector<cf::future<int>> none;
    cf::when_all(none).get();

    /* when_any: the one that is not held at a gate wins. */
    gate g;
    cf::future<int> slow = pool.submit([&g] {
        g.wait();
        return 1;
    });
    g.await_arrivals(1);
    cf::future<std::string> quick = pool.submit([] { return std::string("quick"); });
    CHECK(cf::when_any(slow, quick).get() == 1);
    std::vector<cf::future<int>> pair;
    pair.push_back(std::move(slow));
    pair.push_back(pool.submit([] { return 2; }));
    CHECK(cf::when_any(pair).get() == 1);
    CHECK(!pair[0].done());
    g.release();
    CHECK(cf::when_any(pair).get() < 2);
    CHECK_THROWS(cf::error, cf::when_any(none), CHECK(e.code() == CF_EINVAL));
}

/* A C future completed by hand, adopted by the wrapper. */
static cf::future<int64_t> manual()
{
    cf_future *f = nullptr;
    if (cf_future_new(&f) != 0) throw std::bad_alloc();
    cf_future_set_running_or_notify_cancel(f);
    return cf::future<int64_t>(f);
}
static void finish(cf::future<int64_t> &f, int64_t v)
{
    cf_future_set_result(f.native(), &v, sizeof v);
}

static void test_as_completed()
{
    /* The order is forced: f[2] is done before the loop, the body of each
     * step finishes the next one. */
    std::vector<cf::future<int64_t>> fs;
    for (int i = 0; i < 3; i++) fs.push_back(manual());
    finish(fs[2], 20);
    std::vector<size_t> order;
    for (size_t i : cf::as_completed_indices(fs)) {
        order.push_back(i);
        if (i == 2) finish(fs[0], 0);
        if (i == 0) finish(fs[1], 10);
    }
    CHECK((order == std::vector<size_t>{2, 0, 1}));

    /* Futures from a pool, yielded as references to the caller's. */
    cf::thread_pool pool(cf::thread_pool_options().max_workers(2));
    std::vector<cf::future<std::string>> ss;
    for (int i = 0; i < 20; i++) ss.push_back(pool.submit([i] { return std::to_string(i); }));
    std::set<std::string> seen;
    for (cf::future<std::string> &f : cf::as_completed(ss)) {
        CHECK(f.done());
        seen.insert(f.get());
    }
    CHECK(seen.size() == 20 && seen.count("19") == 1);

    /* A deadline: the unfinished one times out. */
    std::vector<cf::future<int64_t>> late;
    late.push_back(manual());
    late.push_back(manual());
    finish(late[1], 1);
    std::vector<size_t> got;
    CHECK_THROWS(cf::timeout_error,
                 for (size_t i
                      : cf::as_completed_indices(late, std::chrono::milliseconds(1)))
                     got.push_back(i),
                 (void)e);
    CHECK((got == std::vector<size_t>{1}));
    finish(late[0], 0);
    std::vector<cf::future<int64_t>> empty;
    for (auto &f : cf::as_completed(empty)) CHECK(!f.valid());
}

static std::string label(int x)
{
    return "item " + std::to_string(x);
}

static int64_t negate(int64_t x)
{
    return -x;
}

static void test_map()
{
    cf::thread_pool pool(cf::thread_pool_options().max_workers(2));
    std::vector<int> in;
    for (int i = 0; i < 500; i++) in.push_back(i);
    int64_t expect = 0;
    for (int64_t sq : pool.map([](int x) { return int64_t{x} * x; }, in)) {
        CHECK(sq == expect * expect);
        expect++;
    }
    CHECK(expect == 500);

    /* Heap-held results, a function pointer, items moved from an rvalue. */
    int k = 0;
    for (const std::string &s : pool.map(label, std::vector<int>{0, 1, 2, 3}))
        CHECK(s == "item " + std::to_string(k++));
    CHECK(k == 4);
    for (const std::string &s :
         pool.map([](const std::string &x) { return x + x; }, std::vector<std::string>{"ab"}))
        CHECK(s == "abab");

    /* An exception stops the loop at its item, as itself. */
    int before = 0;
    CHECK_THROWS(
        std::runtime_error,
        for (int v
             : pool.map(
                 [](int x) {
                     if (x == 7) throw std::runtime_error("seven");
                     return x;
                 },
                 in)) {
            CHECK(v == before);
            before++;
        },
        CHECK(std::string(e.what()) == "seven"));
    CHECK(before == 7);

    /* A map left early cancels the rest and frees everything. */
    for (int v : pool.map([](int x) { return x; }, in))
        if (v == 3) break;

    std::vector<int> nothing_in;
    for (int v : pool.map([](int x) { return x; }, nothing_in)) CHECK(v < 0);

    /* The process pool: a function pointer, bytes in and out, with options. */
    cf::process_pool procs(cf::process_pool_options().max_workers(2));
    int64_t i = 0;
    for (int64_t v : procs.map(negate, in, cf::map_options().chunksize(16))) CHECK(v == -i++);
    CHECK(i == 500);
    std::vector<int64_t> with_three = {1, 2, 3, 4};
    int64_t seen = 0;
    CHECK_THROWS(cf::task_error,
                 for (int64_t v
                      : procs.map(fails, with_three)) seen += v,
                 CHECK(std::string(e.what()) == "three is not allowed"));
    CHECK(seen == 3);
}

static void test_options_and_errors()
{
    CHECK_THROWS(
        cf::error, cf::thread_pool bad(cf::thread_pool_options().max_workers(-1)),
        CHECK(e.code() == CF_EINVAL && std::string(e.what()).find(cf_strerror(CF_EINVAL)) == 0));
    cf_thread_pool_opts raw{};
    raw.max_workers = 1;
    cf::thread_pool pool(raw);
    CHECK(pool.workers() == 1);
    cf::thread_pool moved = std::move(pool);
    CHECK(moved.workers() == 1 && pool.native() == nullptr);
    moved.shutdown();
    CHECK_THROWS(cf::error, moved.submit([] { return 1; }), CHECK(e.code() == CF_ESHUTDOWN));
}

int main()
{
    struct {
        const char *name;
        void (*fn)();
    } tests[] = {
        {"typed_results", test_typed_results},
        {"void_result", test_void_result},
        {"heap_results", test_heap_results},
        {"move_only", test_move_only},
        {"exceptions_thread_pool", test_exceptions_thread_pool},
        {"process_pool", test_process_pool},
        {"cancel_before_run", test_cancel_before_run},
        {"timeout_and_wait", test_timeout_and_wait},
        {"then", test_then},
        {"when_all_any", test_when_all_any},
        {"as_completed", test_as_completed},
        {"map", test_map},
        {"options_and_errors", test_options_and_errors},
    };
    for (auto &t : tests) {
        int before = failures;
        try {
            t.fn();
        } catch (const std::exception &e) {
            std::fprintf(stderr, "%s: unexpected exception: %s\n", t.name, e.what());
            failures++;
        } catch (...) {
            std::fprintf(stderr, "%s: unexpected exception\n", t.name);
            failures++;
        }
        std::printf("[ %s ] %s\n", failures == before ? "  OK  " : "FAILED", t.name);
        std::fflush(stdout);
    }
    /* Every callable and result the tests made is gone. */
    if (tracked::live.load(std::memory_order_relaxed) != 0) {
        std::fprintf(stderr, "%d tracked object(s) leaked\n",
                     tracked::live.load(std::memory_order_relaxed));
        failures++;
    }
    std::printf("%d check(s) failed\n", failures);
    return failures ? 1 : 0;
}
