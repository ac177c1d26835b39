// cfutures-bench: the Google Benchmark harness. It only registers the C
// workload bodies (perf/wl_*.c), hands their measured wall time to the
// library as manual time, reports their counters, and at the end prints
// cfutures' ratio to the baseline measured in the same run, and to oneTBB
// where the peer was built (with CFB_REPS > 1, the medians of the
// repetitions). A failed check
// makes the exit status non-zero; the one deliberate skip (baseline/fib)
// does not.
#include <benchmark/benchmark.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "cfb.h"

namespace
{

struct Outcome {
    // per counter: one value (the mean over iterations) per repetition
    std::vector<std::pair<std::string, std::vector<double>>> counters;
};

int g_failures = 0;
std::map<std::string, Outcome> g_outcomes;
std::vector<std::string> g_ran; // cfutures workloads, in run order
const char *volatile g_current = "";

void on_alarm(int)
{
    static const char msg[] = "cfutures-bench: a workload exceeded CFB_TIMEOUT; stopping: ";
    ssize_t ignored = write(2, msg, sizeof msg - 1);
    ignored = write(2, g_current, strlen(g_current));
    ignored = write(2, "\n", 1);
    (void)ignored;
    _exit(3);
}

long env_long(const char *var, long def, long min)
{
    const char *s = getenv(var);
    if (!s || !*s) return def;
    char *end;
    long v = strtol(s, &end, 10);
    if (*end || v < min) {
        fprintf(stderr, "cfutures-bench: %s=%s: expected an integer >= %ld\n", var, s, min);
        exit(2);
    }
    return v;
}

void run(benchmark::State &st, const cfb_workload *w, unsigned timeout)
{
    std::vector<std::pair<std::string, double>> sums;
    std::string note;
    int n = 0;
    bool ok = true;
    for (auto _ : st) {
        cfb_result r;
        memset(&r, 0, sizeof r);
        g_current = w->name;
        alarm(timeout);
        w->body(&r);
        alarm(0);
        if (r.status != CFB_OK) {
            if (r.status == CFB_FAIL) g_failures++;
            fprintf(stderr, "cfutures-bench: %s: %s%s\n", w->name,
                    r.status == CFB_FAIL ? "FAILED: " : "", r.msg);
            st.SkipWithError(r.msg);
            ok = false;
            break;
        }
        st.SetIterationTime(r.wall_s > 0 ? r.wall_s : 1e-9);
        for (int i = 0; i < r.n_counters; i++) {
            if (n == 0) sums.emplace_back(r.counters[i].name, 0.0);
            for (auto &s : sums)
                if (s.first == r.counters[i].name) s.second += r.counters[i].value;
        }
        if (r.msg[0]) note = r.msg;
        n++;
    }
    if (!ok || n == 0) return;
    Outcome &o = g_outcomes[w->name];
    for (auto &s : sums) {
        st.counters[s.first] = benchmark::Counter(s.second / n);
        bool found = false;
        for (auto &c : o.counters)
            if (c.first == s.first) c.second.push_back(s.second / n), found = true;
        if (!found) o.counters.emplace_back(s.first, std::vector<double>{s.second / n});
    }
    if (!note.empty()) st.SetLabel(note);
}

double median(std::vector<double> v)
{
    std::sort(v.begin(), v.end());
    size_t n = v.size();
    return n == 0 ? 0 : n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

bool higher_is_better(const std::string &counter)
{
    return counter == "efficiency" || counter.rfind("speedup", 0) == 0;
}

// The median of counter `counter` of workload `name`, or false if it did
// not run (or failed).
bool median_of(const std::string &name, const std::string &counter, double *v)
{
    auto o = g_outcomes.find(name);
    if (o == g_outcomes.end()) return false;
    for (auto &kv : o->second.counters)
        if (kv.first == counter) return *v = median(kv.second), true;
    return false;
}

void print_ratios()
{
    fprintf(stderr, "\n%-14s %-16s %12s %12s %8s %12s %8s\n", "workload", "counter", "cfutures",
            "baseline", "ratio", "oneTBB", "cf/tbb");
    for (const std::string &name : g_ran) {
        auto c = g_outcomes.find(name);
        if (c == g_outcomes.end()) continue;
        for (auto &kv : c->second.counters) {
            double mine = median(kv.second), base = 0, tbb = 0;
            bool have_base = median_of("baseline/" + name, kv.first, &base) && base != 0;
            bool have_tbb = median_of("tbb/" + name, kv.first, &tbb) && tbb != 0;
            char b[16] = "-", br[16] = "-", t[16] = "-", tr[16] = "-";
            if (have_base) {
                snprintf(b, sizeof b, "%.4g", base);
                snprintf(br, sizeof br, "%.3f", mine / base);
            }
            if (have_tbb) {
                snprintf(t, sizeof t, "%.4g", tbb);
                snprintf(tr, sizeof tr, "%.3f", mine / tbb);
            }
            fprintf(stderr, "%-14s %-16s %12.4g %12s %8s %12s %8s  (%s is better)\n", name.c_str(),
                    kv.first.c_str(), mine, b, br, t, tr,
                    higher_is_better(kv.first) ? "higher" : "lower");
        }
    }
}

void add(const cfb_workload *w, long iters, long reps, unsigned timeout)
{
    auto *b = benchmark::RegisterBenchmark(w->name, run, w, timeout)
                  ->Iterations(iters)
                  ->UseManualTime()
                  ->Unit(benchmark::kMillisecond);
    if (reps > 1) b->Repetitions((int)reps);
}

const cfb_workload *find(const cfb_workload *table, const std::string &name)
{
    for (; table->name; table++)
        if (name == table->name) return table;
    return nullptr;
}

} // namespace

int main(int argc, char **argv)
{
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;
    long iters = env_long("CFB_ITERS", 1, 1);
    long reps = env_long("CFB_REPS", 1, 1);
    unsigned timeout = (unsigned)env_long("CFB_TIMEOUT", 600, 0);
    signal(SIGALRM, on_alarm);
    signal(SIGPIPE, SIG_IGN); // a dead fork+pipes worker must fail a write, not kill us

    // Each cfutures workload, then its baseline, then oneTBB's (if built).
    for (const cfb_workload *w = cfb_cf_thread_workloads; w->name; w++) {
        add(w, iters, reps, timeout);
        g_ran.push_back(w->name);
        if (const cfb_workload *b = find(cfb_bl_thread_workloads,
                                         std::string("baseline/") + w->name))
            add(b, iters, reps, timeout);
        if (const cfb_workload *t = find(cfb_tbb_thread_workloads, std::string("tbb/") + w->name))
            add(t, iters, reps, timeout);
    }
    for (const cfb_workload *w = cfb_proc_workloads; w->name; w++) {
        add(w, iters, reps, timeout);
        if (strncmp(w->name, "baseline/", 9) != 0) g_ran.push_back(w->name);
    }
    benchmark::AddCustomContext("cfb_workers", std::to_string(cfb_workers()));
    if (const char *s = getenv("CFB_SCALE")) benchmark::AddCustomContext("cfb_scale", s);
    benchmark::AddCustomContext("cfb_reps", std::to_string(reps));
    const char *tbb = cfb_tbb_version();
    benchmark::AddCustomContext("cfb_tbb", tbb ? tbb : "not built");
    // What the machine gives right now: W on an idle machine, 1 when a
    // shared host lets us run on one CPU only (then no pool can scale).
    if (env_long("CFB_CAPACITY", 1, 0)) { // 0: skip (e.g. under perf record)
        char buf[32];
        snprintf(buf, sizeof buf, "%.2f", cfb_parallel_capacity(cfb_workers()));
        benchmark::AddCustomContext("cfb_cpu_capacity", buf);
    }

    benchmark::RunSpecifiedBenchmarks();
    const char *summary = getenv("CFB_SUMMARY");
    if (!summary || strcmp(summary, "0") != 0) print_ratios();
    benchmark::Shutdown();
    if (g_failures)
        fprintf(stderr, "cfutures-bench: %d workload(s) FAILED their checks\n", g_failures);
    return g_failures ? 1 : 0;
}
