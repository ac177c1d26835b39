/* cfutures.hpp: a header-only C++17 face over the C API (docs/CPP.md).
 *
 *   cf::thread_pool pool(cf::thread_pool_options().max_workers(4));
 *   cf::future<std::string> f = pool.submit([name] { return "hello " + name; });
 *   std::string s = f.get();                  // rethrows what the task threw
 *   auto g = f.then([](std::string v) { return v.size(); });
 *   for (int sq : pool.map([](int x) { return x * x; }, std::vector<int>{1, 2, 3})) use(sq);
 *
 *   cf::process_pool procs;                   // a plain function, bytes in and out
 *   cf::future<int64_t> p = procs.submit(square, int64_t{7});
 *
 * The rules, in short (docs/CPP.md says more):
 * - Handles are move-only. ~thread_pool/~process_pool shut down with wait and
 *   free the pool; ~future drops its reference (the task still runs).
 * - Thread pool: any callable and arguments; they are moved into one heap
 *   object whose address travels as the task's argument bytes. The callable
 *   is destroyed in the thread that ran it right after it runs, or at once
 *   when the future is cancelled or failed before it ran. Results that are trivially
 *   copyable travel as the C future's result bytes; others live in the heap
 *   object, which the future handle shares.
 * - Process pool: a plain function pointer, trivially copyable arguments and
 *   a trivially copyable (or void) result, checked at compile time. Workers
 *   are forked when the pool is made: they see memory as it was then.
 * - A task's exception never terminates the program: the thread pool keeps
 *   the std::exception_ptr and get() rethrows that very exception; the
 *   process pool sends what() back and get() throws cf::task_error.
 * - Every other failure is a cf::error carrying the CF_E* code; timeouts,
 *   cancellation and a broken pool have subclasses of their own.
 * - then(f) runs f in the thread that completes the first future (a worker,
 *   the process pool's collector, a thread that cancels it), or at once in
 *   the caller when it is already done: keep it short, or submit from it. */
#ifndef CFUTURES_HPP
#define CFUTURES_HPP

#include "cfutures.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <initializer_list>
#include <iterator>
#include <memory>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace cf
{

/* ---- errors ---- */

/* Every failure the wrapper reports: code() is a CF_E* value and what() starts
 * with cf_strerror(code()). */
class error : public std::runtime_error
{
  public:
    error(int rc, const std::string &text) : std::runtime_error(text), code_(rc)
    {
    }
    explicit error(int rc) : error(rc, cf_strerror(rc))
    {
    }
    int code() const noexcept
    {
        return code_;
    }

  private:
    int code_;
};

/* get(timeout) or wait ran out of time (CF_ETIMEDOUT); the future goes on. */
class timeout_error : public error
{
  public:
    explicit timeout_error(const std::string &text) : error(CF_ETIMEDOUT, text)
    {
    }
};

/* The future was cancelled (CF_ECANCELLED). */
class cancelled_error : public error
{
  public:
    explicit cancelled_error(const std::string &text) : error(CF_ECANCELLED, text)
    {
    }
};

/* The executor failed the future (CF_EBROKEN): what() names the cause. */
class broken_error : public error
{
  public:
    explicit broken_error(const std::string &text) : error(CF_EBROKEN, text)
    {
    }
};

/* The task failed in a way that could not be rethrown as itself (CF_ETASK):
 * an exception in a process-pool worker (task_code() == exception_code, what()
 * is the exception's what()), or a C task's own code and message. */
class task_error : public error
{
  public:
    task_error(int code_of_task, const std::string &text)
        : error(CF_ETASK, text), task_code_(code_of_task)
    {
    }
    int task_code() const noexcept
    {
        return task_code_;
    }

  private:
    int task_code_;
};

/* The task code a C++ task reports to the C layer when it throws (what C
 * callers see in cf_future_exception, with what() as the message). */
inline constexpr int exception_code = 1000;

namespace detail
{

[[noreturn]] inline void throw_code(int code, const char *detail = nullptr)
{
    std::string text = cf_strerror(code);
    if (detail && *detail) text += std::string(": ") + detail;
    switch (code) {
    case CF_ETIMEDOUT: throw timeout_error(text);
    case CF_ECANCELLED: throw cancelled_error(text);
    case CF_EBROKEN: throw broken_error(text);
    default: throw error(code, text);
    }
}

inline void check(int rc)
{
    if (rc < 0) throw_code(rc);
}

/* A chrono duration as the C API's seconds; a negative one polls. */
template <class Rep, class Period> double seconds(std::chrono::duration<Rep, Period> d)
{
    double s = std::chrono::duration<double>(d).count();
    return s > 0 ? s : CF_POLL;
}

/* Results travel as the C future's bytes when they can; the rest live in a
 * heap cell that the future handle shares. */
template <class T>
inline constexpr bool stored_as_bytes = std::is_void_v<T> || std::is_trivially_copyable_v<T>;

template <class T> T from_bytes(const void *data)
{
    /* memcpy into suitably aligned storage: the bytes may be unaligned. */
    alignas(T) unsigned char buf[sizeof(T)];
    std::memcpy(buf, data, sizeof(T));
    return *std::launder(reinterpret_cast<T *>(buf));
}

/* What a thread-pool task, a continuation or a combinator shares with the
 * future handles that read its outcome. Counted references: the handles, and
 * the done-callback that stands for the task until the future is done. */
struct cell {
    std::atomic<long> refs{1};
    std::exception_ptr exc; /* what the task threw; written before the C future completes */

    cell() = default;
    cell(const cell &) = delete;
    cell &operator=(const cell &) = delete;
    virtual ~cell() = default;
    /* The callable, when the task never ran (cancelled, or failed by the
     * pool): destroyed once the future is done. */
    virtual void drop_work() noexcept
    {
    }

    void retain() noexcept
    {
        /* relaxed: a new reference is made from one the caller holds. */
        refs.fetch_add(1, std::memory_order_relaxed);
    }
    void release() noexcept
    {
        /* acq_rel: every owner's writes to the cell (the task's result, an
         * iterator's reads) happen before the last owner deletes it. */
        if (refs.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
    }
};

/* A counted pointer to a cell (or nothing). */
class cell_ptr
{
  public:
    cell_ptr() noexcept = default;
    explicit cell_ptr(cell *c) noexcept : c_(c)
    {
    } /* adopts one reference */
    cell_ptr(const cell_ptr &o) noexcept : c_(o.c_)
    {
        if (c_) c_->retain();
    }
    cell_ptr(cell_ptr &&o) noexcept : c_(std::exchange(o.c_, nullptr))
    {
    }
    cell_ptr &operator=(cell_ptr o) noexcept
    {
        std::swap(c_, o.c_);
        return *this;
    }
    ~cell_ptr()
    {
        if (c_) c_->release();
    }
    cell *get() const noexcept
    {
        return c_;
    }

  private:
    cell *c_ = nullptr;
};

template <class T, bool Bytes = stored_as_bytes<T>> struct result_cell : cell {
};
template <class T> struct result_cell<T, false> : cell {
    std::optional<T> value; /* written before the C future completes */
};

/* Set the outcome of a future made by cf_future_new and already RUNNING:
 * compute()'s value, or the exception it throws. Never throws. */
template <class U, class Compute> void fulfil(cf_future *dst, cell *c, Compute &&compute) noexcept
{
    int rc = 0;
    try {
        if constexpr (std::is_void_v<U>) {
            compute();
            rc = cf_future_set_result(dst, nullptr, 0);
        } else if constexpr (stored_as_bytes<U>) {
            U v = compute();
            rc = cf_future_set_result(dst, &v, sizeof v);
        } else {
            static_cast<result_cell<U> *>(c)->value.emplace(compute());
            rc = cf_future_set_result(dst, nullptr, 0);
        }
        if (rc == 0) return;
    } catch (const std::exception &e) {
        c->exc = std::current_exception();
        rc = cf_future_set_exception(dst, exception_code, e.what());
        if (rc == 0) return;
    } catch (...) {
        c->exc = std::current_exception();
        rc = cf_future_set_exception(dst, exception_code, "unknown C++ exception");
        if (rc == 0) return;
    }
    /* Storing the outcome failed (out of memory): fail with the code, and
     * without a message, which needs no memory. */
    if (cf_future_set_exception(dst, rc, nullptr) != 0)
        cf_future_set_exception(dst, exception_code, nullptr);
}

/* A future made by the wrapper itself (then, when_all, when_any). */
inline cf_future *new_promise()
{
    cf_future *f = nullptr;
    check(cf_future_new(&f));
    return f;
}

} // namespace detail

template <class T> class future;

template <class T> struct is_future : std::false_type {
};
template <class T> struct is_future<future<T>> : std::true_type {
};

/* ---- futures ---- */

/* The eventual value of one task: T, or void. Move-only; dropping it drops a
 * reference and never cancels or waits. A moved-from (or default) future is
 * empty: valid() is false and every call but valid() throws cf::error
 * (CF_EINVAL). One handle is for one thread at a time; the futures of the
 * combinators and continuations are handles of their own. */
template <class T> class future
{
  public:
    using value_type = T;

    future() noexcept = default;
    /* Adopt one reference to a C future, e.g. from cf_submit: T must be void
     * or trivially copyable and match the result's size. The cell is how the
     * wrapper's own futures share a heap-held result (leave it out). */
    explicit future(cf_future *f, detail::cell_ptr c = {}) noexcept : f_(f), cell_(std::move(c))
    {
    }
    future(future &&o) noexcept : f_(std::exchange(o.f_, nullptr)), cell_(std::move(o.cell_))
    {
    }
    future &operator=(future &&o) noexcept
    {
        if (this != &o) {
            cf_future_release(f_);
            f_ = std::exchange(o.f_, nullptr);
            cell_ = std::move(o.cell_);
        }
        return *this;
    }
    future(const future &) = delete;
    future &operator=(const future &) = delete;
    ~future()
    {
        cf_future_release(f_);
    }

    bool valid() const noexcept
    {
        return f_ != nullptr;
    }
    /* The C future (borrowed): for cf_wait, cf_as_completed and other C calls. */
    cf_future *native() const noexcept
    {
        return f_;
    }

    /* Wait, then return the value (void: nothing), or throw: the task's own
     * exception (thread pool), cf::task_error, cf::cancelled_error,
     * cf::broken_error. A copyable value is copied, so get() may be called
     * again; a move-only one is moved out, and a second get() throws
     * cf::error (CF_ESTATE). */
    T get()
    {
        return get_seconds(CF_FOREVER);
    }
    /* As get(), but cf::timeout_error when the timeout passes first. */
    template <class Rep, class Period> T get(std::chrono::duration<Rep, Period> timeout)
    {
        return get_seconds(detail::seconds(timeout));
    }

    /* Wait until done (finished or cancelled), whatever the outcome. */
    void wait() const
    {
        wait_seconds(CF_FOREVER);
    }
    /* As wait(); false if the timeout passed first. */
    template <class Rep, class Period> bool wait(std::chrono::duration<Rep, Period> timeout) const
    {
        return wait_seconds(detail::seconds(timeout));
    }

    bool done() const
    {
        return cf_future_done(valid_f());
    }
    bool running() const
    {
        return cf_future_running(valid_f());
    }
    bool cancelled() const
    {
        return cf_future_cancelled(valid_f());
    }
    /* Cancel it if it has not started: true (also when already cancelled);
     * false when it runs or is finished. Continuations run in this thread. */
    bool cancel()
    {
        return cf_future_cancel(valid_f());
    }

    /* A future of fn's result, with fn run once this one is done: fn(value)
     * (fn() for void), or fn(*this-like future) when fn takes a cf::future<T>&
     * (then it sees every outcome). Called with the value, fn is skipped when
     * this future failed or was cancelled and the new future holds the same
     * exception (cf::cancelled_error for a cancellation). fn runs in the
     * thread that completes this future, or here if it is already done; what
     * it throws goes into the new future. Cancelling the new future before
     * this one is done skips fn. This future stays valid. */
    template <class F> auto then(F &&fn);

  private:
    cf_future *valid_f() const
    {
        if (!f_) detail::throw_code(CF_EINVAL, "empty cf::future");
        return f_;
    }

    bool wait_seconds(double timeout) const
    {
        cf_future *one[1] = {valid_f()};
        size_t n_done = 0;
        detail::check(cf_wait(one, 1, CF_ALL_COMPLETED, timeout, &n_done));
        return n_done == 1;
    }

    [[noreturn]] void throw_failure(int rc)
    {
        if (rc == CF_ETASK && cell_.get() && cell_.get()->exc)
            std::rethrow_exception(cell_.get()->exc);
        int code = 0;
        const char *msg = nullptr;
        if (rc == CF_ETASK || rc == CF_EBROKEN) cf_future_exception(f_, CF_POLL, &code, &msg);
        if (rc == CF_ETASK) {
            std::string text = msg ? std::string(msg) : "task error code " + std::to_string(code);
            throw task_error(code, text);
        }
        detail::throw_code(rc, msg);
    }

    T get_seconds(double timeout)
    {
        const void *data = nullptr;
        size_t len = 0;
        int rc = cf_future_result(valid_f(), timeout, &data, &len);
        if (rc != 0) throw_failure(rc);
        if constexpr (std::is_void_v<T>) {
            return;
        } else if constexpr (detail::stored_as_bytes<T>) {
            if (len != sizeof(T))
                detail::throw_code(CF_EINVAL, "the result's size is not sizeof(T)");
            return detail::from_bytes<T>(data);
        } else {
            auto *c = static_cast<detail::result_cell<T> *>(cell_.get());
            if (!c) detail::throw_code(CF_EINVAL, "this C future holds no C++ value");
            if constexpr (std::is_copy_constructible_v<T>) {
                return *c->value;
            } else {
                if (!c->value) detail::throw_code(CF_ESTATE, "the move-only result was taken");
                T v = std::move(*c->value);
                c->value.reset();
                return v;
            }
        }
    }

    cf_future *f_ = nullptr;
    detail::cell_ptr cell_;
};

/* ---- continuations ---- */

namespace detail
{
template <class X> struct type_tag {
    using type = X;
};
/* The continuation's result: fn(future) if fn takes the future, else fn(value)
 * (fn() for void). */
template <class Fn, class T> auto then_result()
{
    if constexpr (std::is_invocable_v<Fn &, future<T> &>)
        return type_tag<std::invoke_result_t<Fn &, future<T> &>>{};
    else if constexpr (std::is_void_v<T>) return type_tag<std::invoke_result_t<Fn &>>{};
    else return type_tag<std::invoke_result_t<Fn &, T>>{};
}
template <class Fn, class T>
using then_result_t = std::decay_t<typename decltype(then_result<Fn, T>())::type>;
} // namespace detail

namespace detail
{
/* What a continuation holds until it has run: its own handle on the first
 * future, the function, and the new future and its cell. Owned by the
 * done-callback, which runs exactly once and deletes it. */
template <class U, class T, class Fn> struct then_state {
    future<T> src;
    Fn fn;
    cf_future *dst;
    detail::cell_ptr dcell;

    static void run(cf_future *, void *ud) noexcept
    {
        auto *st = static_cast<then_state *>(ud);
        /* 0 unless the new future was cancelled: then fn is skipped. */
        if (cf_future_set_running_or_notify_cancel(st->dst) == 0)
            detail::fulfil<U>(st->dst, st->dcell.get(), [st]() -> U { return st->call(); });
        cf_future_release(st->dst);
        delete st;
    }

    U call()
    {
        if constexpr (std::is_invocable_v<Fn &, future<T> &>) {
            return std::invoke(fn, src);
        } else if constexpr (std::is_void_v<T>) {
            src.get();
            return std::invoke(fn);
        } else {
            return std::invoke(fn, src.get());
        }
    }
};
} // namespace detail

template <class T> template <class F> auto future<T>::then(F &&fn)
{
    using Fn = std::decay_t<F>;
    using U = detail::then_result_t<Fn, T>;
    static_assert(std::is_copy_constructible_v<T> || std::is_void_v<T> ||
                      std::is_invocable_v<Fn &, future<T> &>,
                  "cf::future::then: a move-only result can be taken once: let the continuation "
                  "take the cf::future<T>& and call get() itself");
    cf_future *src = valid_f();
    cf_future *dst = detail::new_promise();
    detail::cell_ptr dcell(new detail::result_cell<U>());
    detail::then_state<U, T, Fn> *st = nullptr;
    try {
        st = new detail::then_state<U, T, Fn>{future<T>(cf_future_retain(src), cell_),
                                              std::forward<F>(fn), cf_future_retain(dst), dcell};
    } catch (...) {
        cf_future_release(dst);
        throw;
    }
    int rc = cf_future_add_done_callback(src, &detail::then_state<U, T, Fn>::run, st);
    if (rc != 0) { /* the callback will never run */
        cf_future_release(st->dst);
        delete st;
        cf_future_release(dst);
        detail::throw_code(rc);
    }
    return future<U>(dst, std::move(dcell));
}

/* ---- when_all, when_any ---- */

namespace detail
{

/* One done-callback per input future; the last one to run frees the state.
 * when_all completes its future in that last callback, when_any in the
 * first. */
struct join_state {
    struct slot {
        join_state *st;
        size_t index;
    };
    std::atomic<size_t> pending;
    std::atomic<bool> decided{false};
    bool any;
    cf_future *dst; /* the state's own reference */
    std::vector<slot> slots;

    join_state(size_t n, bool want_any, cf_future *f)
        : pending(n + 1), any(want_any), dst(cf_future_retain(f)), slots(n)
    {
        for (size_t i = 0; i < n; i++) slots[i] = slot{this, i};
    }

    static void on_done(cf_future *, void *ud) noexcept
    {
        auto *s = static_cast<slot *>(ud);
        join_state *st = s->st;
        /* relaxed: it only elects one winner; the outcome is published by
         * the C future. */
        if (st->any && !st->decided.exchange(true, std::memory_order_relaxed)) {
            if (cf_future_set_running_or_notify_cancel(st->dst) == 0)
                cf_future_set_result(st->dst, &s->index, sizeof s->index);
        }
        st->arrive(1);
    }

    void arrive(size_t k) noexcept
    {
        /* acq_rel: every callback's use of the state happens before the last
         * one deletes it. */
        if (pending.fetch_sub(k, std::memory_order_acq_rel) != k) return;
        if (!any && cf_future_set_running_or_notify_cancel(dst) == 0)
            cf_future_set_result(dst, nullptr, 0);
        cf_future_release(dst);
        delete this;
    }
};

inline cf_future *join(const std::vector<cf_future *> &fs, bool any)
{
    for (cf_future *f : fs)
        if (!f) throw_code(CF_EINVAL, "empty cf::future");
    if (any && fs.empty()) throw_code(CF_EINVAL, "when_any of no futures");
    cf_future *dst = new_promise();
    join_state *st = nullptr;
    try {
        st = new join_state(fs.size(), any, dst);
    } catch (...) {
        cf_future_release(dst);
        throw;
    }
    for (size_t i = 0; i < fs.size(); i++) {
        int rc = cf_future_add_done_callback(fs[i], &join_state::on_done, &st->slots[i]);
        if (rc != 0) { /* the callbacks i.. never run: fail the future, settle the count */
            cf_future_set_exception(dst, rc, nullptr);
            st->arrive(fs.size() - i + 1);
            cf_future_release(dst);
            throw_code(rc);
        }
    }
    st->arrive(1); /* the setup's own count */
    return dst;
}

template <class C> std::vector<cf_future *> natives(const C &futs)
{
    std::vector<cf_future *> v;
    for (const auto &f : futs) v.push_back(f.native());
    return v;
}

template <class C>
using if_container = std::enable_if_t<!is_future<std::remove_cv_t<C>>::value, int>;

} // namespace detail

/* A future<void> that completes once every input is done (finished, failed
 * or cancelled: read each input for its outcome). The inputs stay valid and
 * may belong to any executors. Over a container of futures, or the futures
 * themselves as arguments. */
template <class C, detail::if_container<C> = 0> future<void> when_all(const C &futs)
{
    return future<void>(detail::join(detail::natives(futs), false));
}
template <class T, class... Ts> future<void> when_all(const future<T> &f, const future<Ts> &...fs)
{
    return future<void>(detail::join({f.native(), fs.native()...}, false));
}

/* A future<size_t>: the index (in the container, or among the arguments) of
 * the first input to be done. At least one input (else cf::error CF_EINVAL). */
template <class C, detail::if_container<C> = 0> future<size_t> when_any(const C &futs)
{
    return future<size_t>(detail::join(detail::natives(futs), true));
}
template <class T, class... Ts> future<size_t> when_any(const future<T> &f, const future<Ts> &...fs)
{
    return future<size_t>(detail::join({f.native(), fs.native()...}, true));
}

/* ---- as_completed ---- */

/* Range over a container of futures in completion order (those already done
 * first, in input order): yields a reference to each future, or its index
 * (as_completed_indices). The container must outlive the loop and not change
 * during it. Past the deadline, the next step throws cf::timeout_error. */
template <class C, bool Indices> class as_completed_range
{
  public:
    using future_type = std::remove_reference_t<decltype(*std::begin(std::declval<C &>()))>;
    using yielded_type = std::conditional_t<Indices, size_t, future_type &>;

    as_completed_range(C &futs, double timeout)
    {
        std::vector<cf_future *> fs;
        for (auto &f : futs) {
            if (!f.valid()) detail::throw_code(CF_EINVAL, "empty cf::future");
            elems_.push_back(&f);
            fs.push_back(f.native());
        }
        if (fs.empty()) done_ = true;
        else detail::check(cf_as_completed_new(fs.data(), fs.size(), timeout, &it_));
    }
    as_completed_range(as_completed_range &&o) noexcept
        : it_(std::exchange(o.it_, nullptr)), elems_(std::move(o.elems_)), cur_(o.cur_),
          done_(o.done_), started_(o.started_)
    {
    }
    as_completed_range(const as_completed_range &) = delete;
    as_completed_range &operator=(const as_completed_range &) = delete;
    as_completed_range &operator=(as_completed_range &&) = delete;
    ~as_completed_range()
    {
        cf_as_completed_free(it_);
    }

    /* Futures not yet yielded. */
    size_t remaining() const
    {
        return it_ ? cf_as_completed_remaining(it_) : 0;
    }

    struct sentinel {
    };
    class iterator
    {
      public:
        using iterator_category = std::input_iterator_tag;
        using difference_type = std::ptrdiff_t;
        using value_type = std::remove_reference_t<yielded_type>;
        using reference = yielded_type;
        using pointer = value_type *;

        explicit iterator(as_completed_range *r) : r_(r)
        {
        }
        reference operator*() const
        {
            if constexpr (Indices) return r_->cur_;
            else return *r_->elems_[r_->cur_];
        }
        iterator &operator++()
        {
            r_->advance();
            return *this;
        }
        void operator++(int)
        {
            r_->advance();
        }
        bool operator==(sentinel) const
        {
            return r_->done_;
        }
        bool operator!=(sentinel) const
        {
            return !r_->done_;
        }

      private:
        as_completed_range *r_;
    };

    iterator begin()
    {
        if (!started_) {
            started_ = true;
            if (!done_) advance();
        }
        return iterator(this);
    }
    sentinel end() const
    {
        return {};
    }

  private:
    void advance()
    {
        /* The C iterator reports the input position itself. */
        int rc = cf_as_completed_next_index(it_, nullptr, &cur_);
        if (rc == CF_END) {
            done_ = true;
            return;
        }
        if (rc != 0) detail::throw_code(rc);
    }

    cf_as_completed *it_ = nullptr;
    std::vector<future_type *> elems_;
    size_t cur_ = 0;
    bool done_ = false;
    bool started_ = false;
};

template <class C> as_completed_range<C, false> as_completed(C &futs)
{
    return as_completed_range<C, false>(futs, CF_FOREVER);
}
template <class C, class Rep, class Period>
as_completed_range<C, false> as_completed(C &futs, std::chrono::duration<Rep, Period> timeout)
{
    return as_completed_range<C, false>(futs, detail::seconds(timeout));
}
template <class C> as_completed_range<C, true> as_completed_indices(C &futs)
{
    return as_completed_range<C, true>(futs, CF_FOREVER);
}
template <class C, class Rep, class Period>
as_completed_range<C, true> as_completed_indices(C &futs,
                                                 std::chrono::duration<Rep, Period> timeout)
{
    return as_completed_range<C, true>(futs, detail::seconds(timeout));
}

/* ---- options ---- */

/* The C option structs work in C++ as they are (value-initialize, then set
 * fields: `cf_thread_pool_opts o{}; o.max_workers = 4;`). These builders do
 * the same with chained setters and own their strings. */
class thread_pool_options
{
  public:
    thread_pool_options &max_workers(int n)
    {
        o_.max_workers = n;
        return *this;
    }
    thread_pool_options &initializer(cf_init_fn *fn, void *arg = nullptr)
    {
        o_.initializer = fn;
        o_.initializer_arg = arg;
        return *this;
    }
    thread_pool_options &thread_name_prefix(std::string prefix)
    {
        prefix_ = std::move(prefix);
        has_prefix_ = true;
        return *this;
    }
    thread_pool_options &pin(cf_pin_policy policy)
    {
        o_.pin = policy;
        return *this;
    }
    thread_pool_options &cpu_list(std::string cpus)
    {
        cpus_ = std::move(cpus);
        has_cpus_ = true;
        return *this;
    }
    thread_pool_options &spin(std::chrono::nanoseconds ns)
    {
        o_.spin_ns = ns.count() > 0 ? static_cast<long>(ns.count()) : CF_SPIN_NONE;
        return *this;
    }
    thread_pool_options &steal_attempts(int n)
    {
        o_.steal_attempts = n;
        return *this;
    }
    thread_pool_options &map_window(size_t tasks)
    {
        o_.map_window = tasks;
        return *this;
    }
    thread_pool_options &numa(bool on)
    {
        o_.numa = on ? CF_SWITCH_ON : CF_SWITCH_OFF;
        return *this;
    }
    thread_pool_options &stats(bool on)
    {
        o_.stats = on ? CF_SWITCH_ON : CF_SWITCH_OFF;
        return *this;
    }
    /* The C struct, valid while this object lives. */
    cf_thread_pool_opts c_opts() const
    {
        cf_thread_pool_opts o = o_;
        if (has_prefix_) o.thread_name_prefix = prefix_.c_str();
        if (has_cpus_) o.cpu_list = cpus_.c_str();
        return o;
    }

  private:
    cf_thread_pool_opts o_{};
    std::string prefix_, cpus_;
    bool has_prefix_ = false, has_cpus_ = false;
};

class process_pool_options
{
  public:
    process_pool_options &max_workers(int n)
    {
        o_.max_workers = n;
        return *this;
    }
    /* Runs in each worker process; arg is read there as a fork snapshot. */
    process_pool_options &initializer(cf_init_fn *fn, void *arg = nullptr)
    {
        o_.initializer = fn;
        o_.initializer_arg = arg;
        return *this;
    }
    process_pool_options &max_tasks_per_child(int n)
    {
        o_.max_tasks_per_child = n;
        return *this;
    }
    process_pool_options &slot_size(size_t bytes)
    {
        o_.slot_size = bytes;
        return *this;
    }
    process_pool_options &ring_depth(size_t slots)
    {
        o_.ring_depth = slots;
        return *this;
    }
    process_pool_options &spin(std::chrono::nanoseconds ns)
    {
        o_.spin_ns = ns.count() > 0 ? static_cast<long>(ns.count()) : CF_SPIN_NONE;
        return *this;
    }
    process_pool_options &map_window(size_t tasks)
    {
        o_.map_window = tasks;
        return *this;
    }
    process_pool_options &stats(bool on)
    {
        o_.stats = on ? CF_SWITCH_ON : CF_SWITCH_OFF;
        return *this;
    }
    cf_process_pool_opts c_opts() const
    {
        return o_;
    }

  private:
    cf_process_pool_opts o_{};
};

/* Options of one map: a deadline for the whole map, items per task, and
 * how many tasks may be submitted ahead of the reader. */
class map_options
{
  public:
    template <class Rep, class Period> map_options &timeout(std::chrono::duration<Rep, Period> d)
    {
        o_.timeout = detail::seconds(d);
        o_.has_timeout = true;
        return *this;
    }
    map_options &chunksize(size_t items)
    {
        o_.chunksize = items;
        return *this;
    }
    map_options &window(size_t tasks)
    {
        o_.window = tasks;
        return *this;
    }
    const cf_map_opts &c_opts() const
    {
        return o_;
    }

  private:
    cf_map_opts o_{};
};

/* ---- map ---- */

namespace detail
{

/* What a map's tasks share with its reader: per item, the thread pool's
 * heap-held value and the exception it threw. Items are written by the
 * tasks and read by the reader after cf_map_next hands the item out. */
template <class R> struct map_ctx {
    std::vector<std::optional<R>> values; /* thread pool, non-trivially-copyable R */
    std::vector<std::exception_ptr> excs; /* thread pool */
    virtual ~map_ctx() = default;
};

template <class R, class Fn, class E> struct thread_map_ctx final : map_ctx<R> {
    struct item {
        thread_map_ctx *ctx;
        size_t index;
    };
    Fn fn;
    std::vector<E> items;
    std::vector<item> args; /* the C map's argument array */

    thread_map_ctx(Fn f, std::vector<E> v) : fn(std::move(f)), items(std::move(v))
    {
        size_t n = items.size();
        args.resize(n);
        for (size_t i = 0; i < n; i++) args[i] = item{this, i};
        this->excs.resize(n);
        if constexpr (!stored_as_bytes<R>) this->values.resize(n);
    }

    static int task(const void *arg, size_t, cf_out *out) noexcept
    {
        item it;
        std::memcpy(&it, arg, sizeof it);
        thread_map_ctx *c = it.ctx;
        try {
            if constexpr (stored_as_bytes<R>) {
                R v = std::invoke(std::as_const(c->fn), std::as_const(c->items[it.index]));
                return cf_out_set(out, &v, sizeof v);
            } else {
                c->values[it.index].emplace(
                    std::invoke(std::as_const(c->fn), std::as_const(c->items[it.index])));
                return 0;
            }
        } catch (const std::exception &e) {
            c->excs[it.index] = std::current_exception();
            return cf_out_error(out, exception_code, "%s", e.what());
        } catch (...) {
            c->excs[it.index] = std::current_exception();
            return cf_out_error(out, exception_code, "unknown C++ exception");
        }
    }
};

} // namespace detail

/* The results of a map, in input order, for range-for (an input range: walk
 * it once). A failed item throws when the loop reaches it (the thread
 * pool's own exception, or cf::task_error), a cancelled or broken one
 * cf::cancelled_error / cf::broken_error, the deadline cf::timeout_error.
 * Destroying it cancels what has not started and, on a thread pool, waits
 * for the items that are running. */
template <class R> class map_range
{
    static_assert(!std::is_void_v<R>, "cf map: the function must return a value "
                                      "(submit each item for a function returning void)");

  public:
    map_range(std::unique_ptr<detail::map_ctx<R>> ctx, cf_map_iter *it)
        : ctx_(std::move(ctx)), it_(it), done_(it == nullptr)
    {
    }
    map_range(map_range &&o) noexcept
        : ctx_(std::move(o.ctx_)), it_(std::exchange(o.it_, nullptr)), cur_(std::move(o.cur_)),
          index_(o.index_), batch_(o.batch_), stride_(o.stride_), pos_(o.pos_), count_(o.count_),
          done_(o.done_), started_(o.started_)
    {
    }
    map_range(const map_range &) = delete;
    map_range &operator=(const map_range &) = delete;
    map_range &operator=(map_range &&) = delete;
    ~map_range()
    {
        cf_map_free(it_); /* first: on a thread pool it waits for running items */
    }

    struct sentinel {
    };
    class iterator
    {
      public:
        using iterator_category = std::input_iterator_tag;
        using difference_type = std::ptrdiff_t;
        using value_type = R;
        using reference = R &;
        using pointer = R *;

        explicit iterator(map_range *r) : r_(r)
        {
        }
        R &operator*() const
        {
            return *r_->cur_;
        }
        iterator &operator++()
        {
            r_->advance();
            return *this;
        }
        void operator++(int)
        {
            r_->advance();
        }
        bool operator==(sentinel) const
        {
            return r_->done_;
        }
        bool operator!=(sentinel) const
        {
            return !r_->done_;
        }

      private:
        map_range *r_;
    };

    iterator begin()
    {
        if (!started_) {
            started_ = true;
            if (!done_) advance();
        }
        return iterator(this);
    }
    sentinel end() const
    {
        return {};
    }

  private:
    void advance()
    {
        if constexpr (detail::stored_as_bytes<R>) {
            if (pos_ < count_) { /* the rest of the batch cf_map_next_batch handed out */
                cur_.emplace(detail::from_bytes<R>(batch_ + pos_ * stride_));
                pos_++;
                index_++;
                return;
            }
            const void *data = nullptr;
            size_t len = 0, stride = 0, count = 0;
            int rc = cf_map_next_batch(it_, 64, &data, &len, &stride, &count);
            if (rc == 0 && len != sizeof(R)) rc = CF_EINVAL;
            if (rc != 0) return fail(rc);
            batch_ = static_cast<const unsigned char *>(data);
            stride_ = stride;
            count_ = count;
            pos_ = 0;
            advance();
        } else {
            const void *data = nullptr;
            size_t len = 0;
            int rc = cf_map_next(it_, &data, &len);
            if (rc != 0) return fail(rc);
            std::optional<R> &slot = ctx_->values.at(index_);
            cur_.emplace(std::move(*slot));
            slot.reset();
            index_++;
        }
    }

    void fail(int rc)
    {
        if (rc == CF_END) {
            done_ = true;
            return;
        }
        done_ = true;
        size_t i = index_;
        if (rc == CF_ETASK && ctx_ && i < ctx_->excs.size() && ctx_->excs[i])
            std::rethrow_exception(ctx_->excs[i]);
        if (rc == CF_ETASK || rc == CF_EBROKEN) {
            int code = 0;
            const char *msg = nullptr;
            cf_map_exception(it_, &code, &msg);
            if (rc == CF_ETASK)
                throw task_error(code, msg ? std::string(msg)
                                           : "task error code " + std::to_string(code));
            detail::throw_code(rc, msg);
        }
        detail::throw_code(rc, rc == CF_EINVAL ? "the result's size is not sizeof(R)" : nullptr);
    }

    std::unique_ptr<detail::map_ctx<R>> ctx_;
    cf_map_iter *it_;
    std::optional<R> cur_;
    size_t index_ = 0; /* input position of the next item */
    const unsigned char *batch_ = nullptr;
    size_t stride_ = 0, pos_ = 0, count_ = 0;
    bool done_;
    bool started_ = false;
};

/* ---- process-pool calls: a function pointer and its arguments as bytes ---- */

namespace detail
{

template <class T> inline constexpr bool always_false = false;

/* Where each argument starts after `first` bytes, each at its alignment;
 * the last entry is the total size. */
template <class... T> constexpr std::array<size_t, sizeof...(T) + 1> arg_offsets(size_t first)
{
    constexpr size_t count = sizeof...(T);
    constexpr std::array<size_t, count + 1> sizes{sizeof(T)..., 0};
    constexpr std::array<size_t, count + 1> aligns{alignof(T)..., 1};
    std::array<size_t, count + 1> off{};
    size_t at = first;
    for (size_t i = 0; i < count; i++) {
        at = (at + aligns[i] - 1) / aligns[i] * aligns[i];
        off[i] = at;
        at += sizes[i];
    }
    off[count] = at;
    return off;
}

/* The argument bytes of one process-pool call: the function pointer, then
 * each argument at its alignment. The worker copies them into aligned
 * storage and calls the function (the same address after fork). */
template <class R, class... P> struct proc_call {
    using fn_t = R (*)(P...);
    using arg_types = std::tuple<std::decay_t<P>...>;
    static constexpr size_t count = sizeof...(P);

    static constexpr size_t align = std::max({alignof(fn_t), alignof(std::decay_t<P>)...});
    static constexpr std::array<size_t, count + 1> offsets = arg_offsets<std::decay_t<P>...>(
        sizeof(fn_t));
    static constexpr size_t size = offsets[count];

    struct alignas(align) bytes {
        unsigned char b[size];
    };

    template <class... A, size_t... I>
    static bytes pack_at(fn_t fn, std::index_sequence<I...>, A &&...a)
    {
        bytes out{};
        std::memcpy(out.b, &fn, sizeof fn);
        (..., (void)::new (static_cast<void *>(out.b + offsets[I]))
                  std::tuple_element_t<I, arg_types>(std::forward<A>(a)));
        return out;
    }
    template <class... A> static bytes pack(fn_t fn, A &&...a)
    {
        return pack_at(fn, std::index_sequence_for<P...>{}, std::forward<A>(a)...);
    }

    template <size_t... I> static R call(bytes &in, std::index_sequence<I...>)
    {
        fn_t fn;
        std::memcpy(&fn, in.b, sizeof fn);
        return fn(std::move(*std::launder(
            reinterpret_cast<std::tuple_element_t<I, arg_types> *>(in.b + offsets[I])))...);
    }

    /* The C task, run in the worker process. */
    static int task(const void *arg, size_t len, cf_out *out) noexcept
    {
        if (len != size) return cf_out_error(out, CF_EINVAL, "cfutures.hpp: argument size");
        bytes in;
        std::memcpy(in.b, arg, size);
        try {
            if constexpr (std::is_void_v<R>) {
                call(in, std::index_sequence_for<P...>{});
                return 0;
            } else {
                R v = call(in, std::index_sequence_for<P...>{});
                return cf_out_set(out, &v, sizeof v);
            }
        } catch (const std::exception &e) {
            return cf_out_error(out, exception_code, "%s", e.what());
        } catch (...) {
            return cf_out_error(out, exception_code, "unknown C++ exception");
        }
    }
};

template <class R, class... P> constexpr void check_process_call()
{
    static_assert(std::is_void_v<R> || (std::is_trivially_copyable_v<R> && !std::is_reference_v<R>),
                  "cf::process_pool: the function's result must be void or trivially copyable "
                  "(it comes back from the worker process as bytes)");
    static_assert((std::is_trivially_copyable_v<std::decay_t<P>> && ...),
                  "cf::process_pool: every argument must be trivially copyable (it is copied as "
                  "bytes into the worker process; a pointer there sees the fork snapshot)");
}

/* ---- thread-pool tasks: the callable and its arguments in one heap cell ---- */

template <class T, class Fn, class Tup> struct task_cell final : result_cell<T> {
    struct work_t {
        Fn fn;
        Tup args;
        template <class F, class... A>
        explicit work_t(F &&f, A &&...a) : fn(std::forward<F>(f)), args(std::forward<A>(a)...)
        {
        }
    };
    std::optional<work_t> work; /* destroyed right after it runs, or when it never will */

    template <class F, class... A> explicit task_cell(F &&f, A &&...a)
    {
        work.emplace(std::forward<F>(f), std::forward<A>(a)...);
    }

    void drop_work() noexcept override
    {
        work.reset();
    }

    int run(cf_out *out) noexcept
    {
        int rc = 0;
        try {
            work_t &w = *work;
            if constexpr (std::is_void_v<T>) {
                std::apply(std::move(w.fn), std::move(w.args));
            } else if constexpr (stored_as_bytes<T>) {
                T v = std::apply(std::move(w.fn), std::move(w.args));
                rc = cf_out_set(out, &v, sizeof v);
            } else {
                this->value.emplace(std::apply(std::move(w.fn), std::move(w.args)));
            }
        } catch (const std::exception &e) {
            this->exc = std::current_exception();
            rc = cf_out_error(out, exception_code, "%s", e.what());
        } catch (...) {
            this->exc = std::current_exception();
            rc = cf_out_error(out, exception_code, "unknown C++ exception");
        }
        work.reset();
        return rc;
    }

    static int task(const void *arg, size_t, cf_out *out) noexcept
    {
        task_cell *c;
        std::memcpy(&c, arg, sizeof c);
        return c->run(out);
    }
};

/* The done-callback of a thread-pool task: it runs once the future is done
 * (after the task, if it ran), drops the callable if it never ran, and
 * releases the task's reference. */
inline void task_done(cf_future *, void *ud) noexcept
{
    auto *c = static_cast<cell *>(ud);
    c->drop_work();
    c->release();
}

/* A submitted future whose done-callback could not be registered: cancel it,
 * or wait until the task that uses the cell has finished. */
inline bool settle_without_callback(cf_future *f) noexcept
{
    if (cf_future_cancel(f)) return false; /* it will never run */
    cf_future *one[1] = {f};
    cf_wait(one, 1, CF_ALL_COMPLETED, CF_FOREVER, nullptr);
    return true;
}

template <class F, class... A>
using thread_result_t = std::decay_t<std::invoke_result_t<std::decay_t<F>, std::decay_t<A>...>>;

template <class F>
inline constexpr bool is_function_like =
    std::is_function_v<std::remove_pointer_t<std::decay_t<F>>> ||
    std::is_function_v<std::remove_reference_t<F>>;

} // namespace detail

/* ---- executors ---- */

/* What both pools share: the move-only ownership of one cf_executor. */
class executor
{
  public:
    executor(executor &&o) noexcept : ex_(std::exchange(o.ex_, nullptr))
    {
    }
    executor &operator=(executor &&o) noexcept
    {
        if (this != &o) {
            cf_executor_free(ex_);
            ex_ = std::exchange(o.ex_, nullptr);
        }
        return *this;
    }
    executor(const executor &) = delete;
    executor &operator=(const executor &) = delete;
    /* Shut down with wait (every queued task runs) and free. */
    ~executor()
    {
        cf_executor_free(ex_);
    }

    cf_executor *native() const noexcept
    {
        return ex_;
    }
    int workers() const
    {
        return cf_executor_workers(ex_);
    }
    /* Stop taking work (cf_executor_shutdown); the destructor still frees. */
    void shutdown(bool wait = true, bool cancel_futures = false)
    {
        detail::check(cf_executor_shutdown(ex_, wait, cancel_futures));
    }

  protected:
    explicit executor(cf_executor *ex) noexcept : ex_(ex)
    {
    }
    cf_executor *ex_;
};

class thread_pool : public executor
{
  public:
    thread_pool() : thread_pool(thread_pool_options())
    {
    }
    explicit thread_pool(const thread_pool_options &o) : executor(make(o.c_opts()))
    {
    }
    explicit thread_pool(const cf_thread_pool_opts &o) : executor(make(o))
    {
    }

    /* Run fn(args...) on a worker (or on a thread that waits for it without
     * a timeout while every worker is busy: docs/SEMANTICS.md item 22c): a
     * future of its (decayed) result. fn and args are moved (or copied)
     * into the task; fn runs once, as an rvalue with its arguments as
     * rvalues (as std::thread does). */
    template <class F, class... A>
    future<detail::thread_result_t<F, A...>> submit(F &&fn, A &&...args)
    {
        using T = detail::thread_result_t<F, A...>;
        using Cell = detail::task_cell<T, std::decay_t<F>, std::tuple<std::decay_t<A>...>>;
        Cell *c = new Cell(std::forward<F>(fn), std::forward<A>(args)...);
        detail::cell_ptr handle(c); /* the future's reference */
        cf_future *f = nullptr;
        detail::check(cf_submit(ex_, &Cell::task, &c, sizeof c, &f));
        c->retain(); /* the task's reference, dropped by its done-callback */
        int rc = cf_future_add_done_callback(f, &detail::task_done, c);
        if (rc != 0) {
            bool ran = detail::settle_without_callback(f);
            c->drop_work();
            c->release();
            if (!ran) {
                cf_future_release(f);
                detail::throw_code(rc);
            }
        }
        return future<T>(f, std::move(handle));
    }

    /* fn over each item of items (copied, or moved from an rvalue vector),
     * results in input order, for range-for. fn is shared by the workers: it
     * is called as const, concurrently, with each item as a const reference. */
    template <class F, class Range> auto map(F &&fn, Range &&items, const map_options &o = {})
    {
        using Fn = std::decay_t<F>;
        using E = std::decay_t<decltype(*std::begin(items))>;
        using R = std::decay_t<std::invoke_result_t<const Fn &, const E &>>;
        using Ctx = detail::thread_map_ctx<R, Fn, E>;
        std::vector<E> v;
        if constexpr (std::is_same_v<std::decay_t<Range>, std::vector<E>> &&
                      std::is_rvalue_reference_v<Range &&>)
            v = std::move(items);
        else v.assign(std::begin(items), std::end(items));
        auto ctx = std::make_unique<Ctx>(std::forward<F>(fn), std::move(v));
        cf_map_iter *it = nullptr;
        if (!ctx->args.empty())
            detail::check(cf_map(ex_, &Ctx::task, ctx->args.data(), sizeof(ctx->args[0]),
                                 ctx->args.size(), &o.c_opts(), &it));
        return map_range<R>(std::move(ctx), it);
    }

  private:
    static cf_executor *make(const cf_thread_pool_opts &o)
    {
        cf_executor *ex = nullptr;
        int rc = cf_thread_pool_new(&ex, &o);
        if (rc != 0) detail::throw_code(rc, "cf_thread_pool_new");
        return ex;
    }
};

class process_pool : public executor
{
  public:
    process_pool() : process_pool(process_pool_options())
    {
    }
    explicit process_pool(const process_pool_options &o) : executor(make(o.c_opts()))
    {
    }
    explicit process_pool(const cf_process_pool_opts &o) : executor(make(o))
    {
    }

    /* Run fn(args...) in a worker process. fn is a plain function (named by
     * its address, the same in every worker); the arguments are converted
     * to fn's parameter types and copied as bytes; the result comes back as
     * bytes. Checked at compile time. */
    template <class R, class... P, class... A> future<R> submit(R (*fn)(P...), A &&...args)
    {
        detail::check_process_call<R, P...>();
        static_assert(sizeof...(P) == sizeof...(A),
                      "cf::process_pool::submit: wrong number of arguments for the function");
        using Call = detail::proc_call<R, P...>;
        auto bytes = Call::pack(fn, std::forward<A>(args)...);
        cf_future *f = nullptr;
        detail::check(cf_submit(ex_, &Call::task, bytes.b, sizeof bytes.b, &f));
        return future<R>(f);
    }
    template <class F, class... A, std::enable_if_t<!detail::is_function_like<F>, int> = 0>
    void submit(F &&, A &&...)
    {
        static_assert(detail::always_false<F>,
                      "cf::process_pool runs only plain functions: pass a function pointer (a "
                      "lambda or functor cannot cross into a worker process; a captureless "
                      "lambda converts with unary +)");
    }

    /* fn over each item (converted to fn's parameter type), results in input
     * order, for range-for; the same compile-time rules as submit. */
    template <class R, class P, class Range>
    map_range<R> map(R (*fn)(P), const Range &items, const map_options &o = {})
    {
        detail::check_process_call<R, P>();
        using Call = detail::proc_call<R, P>;
        using Bytes = typename Call::bytes;
        auto buf = std::make_unique<buffer_ctx<R>>();
        for (const auto &item : items) {
            Bytes b = Call::pack(fn, item);
            buf->bytes.insert(buf->bytes.end(), b.b, b.b + Call::size);
        }
        size_t n = buf->bytes.size() / Call::size;
        cf_map_iter *it = nullptr;
        if (n)
            detail::check(
                cf_map(ex_, &Call::task, buf->bytes.data(), Call::size, n, &o.c_opts(), &it));
        return map_range<R>(std::move(buf), it);
    }
    template <class F, class Range, std::enable_if_t<!detail::is_function_like<F>, int> = 0>
    void map(F &&, const Range &, const map_options & = {})
    {
        static_assert(detail::always_false<F>,
                      "cf::process_pool runs only plain functions: pass a function pointer (a "
                      "lambda or functor cannot cross into a worker process; a captureless "
                      "lambda converts with unary +)");
    }

    /* Stop now (cf_process_pool_terminate): signo is SIGTERM or SIGKILL. */
    void terminate(int signo)
    {
        detail::check(cf_process_pool_terminate(ex_, signo));
    }

  private:
    /* The argument array of a process-pool map (the C map reads it in place
     * until cf_map_free; the workers get copies). */
    template <class R> struct buffer_ctx final : detail::map_ctx<R> {
        std::vector<unsigned char> bytes;
    };

    static cf_executor *make(const cf_process_pool_opts &o)
    {
        cf_executor *ex = nullptr;
        int rc = cf_process_pool_new(&ex, &o);
        if (rc != 0) detail::throw_code(rc, "cf_process_pool_new");
        return ex;
    }
};

} // namespace cf

#endif
