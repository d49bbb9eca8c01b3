// micro.cc — micro-benchmarks over ouro's C API, with Google Benchmark.
// Reference counts: the owner's incref+decref pair against a plain and an
// atomic pair on the same memory, the non-owner path, and merging.
// Allocation: fast path per size class, cross-thread free, aligned, realloc.
// Collector: a container's life (tracked on a young list and untracked),
// the write barrier when no collection runs, and full collections of live
// and of garbage 2-cycles, with the time of each step (last_phase_ns).
// Benchmarks, not tests: they assert nothing.  Run: bench/micro
#include <benchmark/benchmark.h>

#include <atomic>
#include <string>
#include <cstdint>
#include <thread>
#include <vector>

extern "C" {
#include "ouro.h"
}

static inline void clobber() { asm volatile("" ::: "memory"); }

struct obj {
    ouro_object_t ob;
    uint64_t payload;
};
static const ouro_type_t obj_type = {"obj", sizeof(obj), nullptr, nullptr, nullptr, nullptr, 0};

// ---- reference counts ----
static void BM_PlainPair(benchmark::State &st)
{
    obj *o = (obj *)ouro_new(&obj_type);
    uint32_t *c = &o->ob.local;
    for (auto _ : st) {
        *c = *c + 1;
        clobber();
        *c = *c - 1;
        clobber();
    }
    ouro_decref(&o->ob);
}
BENCHMARK(BM_PlainPair);

static void BM_AtomicPair(benchmark::State &st)
{
    obj *o = (obj *)ouro_new(&obj_type);
    auto *c = reinterpret_cast<std::atomic<int64_t> *>(&o->ob.shared);
    for (auto _ : st) {
        c->fetch_add(4, std::memory_order_relaxed);
        clobber();
        c->fetch_sub(4, std::memory_order_acq_rel);
        clobber();
    }
    ouro_decref(&o->ob);
}
BENCHMARK(BM_AtomicPair);

static void BM_OwnerIncDec(benchmark::State &st)
{
    ouro_object_t *o = ouro_new(&obj_type);
    for (auto _ : st) {
        ouro_incref(o);
        clobber();
        ouro_decref(o);
        clobber();
    }
    ouro_decref(o);
}
BENCHMARK(BM_OwnerIncDec);

static void BM_NonOwnerIncDec(benchmark::State &st)
{
    ouro_object_t *o = nullptr;
    std::thread t([&] { o = ouro_new(&obj_type); ouro_incref(o); });
    t.join(); // the owner exited: o is shared (merged), count 2
    for (auto _ : st) {
        ouro_incref(o);
        clobber();
        ouro_decref(o);
        clobber();
    }
    ouro_decref(o);
    ouro_decref(o);
}
BENCHMARK(BM_NonOwnerIncDec);

// Objects created by this thread, handed to another thread that drops the
// only reference: each is queued back to us and merged at our quiescent
// state.  Time per object of queue + merge + free, measured on the owner.
static void BM_QueuedMerge(benchmark::State &st)
{
    const int n = 1000;
    std::vector<ouro_object_t *> v(n);
    for (auto _ : st) {
        st.PauseTiming();
        for (int i = 0; i < n; i++)
            v[i] = ouro_new(&obj_type);
        st.ResumeTiming();
        std::thread t([&] {
            for (int i = 0; i < n; i++)
                ouro_decref(v[i]);
        });
        t.join();
        ouro_quiescent(); // merges n queued objects
    }
    st.SetItemsProcessed(st.iterations() * n);
    ouro_barrier();
}
BENCHMARK(BM_QueuedMerge)->UseRealTime();

static void BM_NewDecref(benchmark::State &st)
{
    for (auto _ : st) {
        ouro_object_t *o = ouro_new(&obj_type);
        benchmark::DoNotOptimize(o);
        ouro_decref(o);
    }
    ouro_barrier();
}
BENCHMARK(BM_NewDecref);

// ---- the collector ----
struct pair {
    ouro_object_t ob;
    ouro_object_t *other;
};
static int pair_traverse(ouro_object_t *self, ouro_visit_fn *visit, void *arg)
{
    ouro_object_t *o = ouro_load(&((pair *)self)->other);
    return o ? visit(o, arg) : 0;
}
static void pair_clear(ouro_object_t *self) { ouro_setref(&((pair *)self)->other, nullptr); }
static const ouro_type_t pair_type = {"pair", sizeof(pair), pair_traverse, pair_clear, pair_clear, nullptr, 0};

// A container's life: made (tracked young) and freed (untracked).
static void BM_ContainerNewDecref(benchmark::State &st)
{
    ouro_gc_disable();
    for (auto _ : st) {
        ouro_object_t *o = ouro_new(&pair_type);
        benchmark::DoNotOptimize(o);
        ouro_decref(o);
    }
    ouro_barrier();
    ouro_gc_enable();
}
BENCHMARK(BM_ContainerNewDecref);

// ouro_store and ouro_setref with no collection running (the barrier's off path).
static void BM_SetrefNoCollection(benchmark::State &st)
{
    pair *a = (pair *)ouro_new(&pair_type);
    ouro_object_t *b = ouro_new(&obj_type);
    for (auto _ : st) {
        ouro_incref(b);
        ouro_setref(&a->other, b);
        clobber();
    }
    ouro_setref(&a->other, nullptr);
    ouro_decref(b);
    ouro_decref(&a->ob);
    ouro_barrier();
}
BENCHMARK(BM_SetrefNoCollection);

static void add_step_counters(benchmark::State &st, size_t objects)
{
    ouro_gc_stats_t s;
    ouro_gc_get_stats(&s);
    static const char *const step[OURO_GC_NPHASES] = {"h1", "walk", "count", "mark", "h2", "validate", "finish"};
    for (int p = 0; p < OURO_GC_NPHASES; p++)
        st.counters[std::string(step[p]) + "_ns/obj"] = (double)s.last_phase_ns[p] / (double)objects;
}

// A full collection of N containers in live 2-cycles (issue 4's shape).
static void BM_GcFullLive(benchmark::State &st)
{
    ouro_gc_disable();
    ouro_gc_set_markers((int)st.range(1));
    size_t n = (size_t)st.range(0);
    std::vector<ouro_object_t *> roots(n / 2);
    for (auto &r : roots) {
        pair *a = (pair *)ouro_new(&pair_type), *b = (pair *)ouro_new(&pair_type);
        ouro_store(&a->other, &b->ob);
        ouro_incref(&a->ob);
        ouro_store(&b->other, &a->ob);
        r = &a->ob;
    }
    ouro_gc_collect(2); // promote everything
    for (auto _ : st)
        benchmark::DoNotOptimize(ouro_gc_collect(2));
    st.SetItemsProcessed(st.iterations() * (int64_t)n);
    add_step_counters(st, n);
    for (auto r : roots)
        ouro_decref(r);
    ouro_gc_collect(2);
    ouro_barrier();
    ouro_gc_set_markers(0);
    ouro_gc_enable();
}
BENCHMARK(BM_GcFullLive)->Args({1 << 20, 1})->Args({1 << 20, 2})->Unit(benchmark::kMillisecond)->UseRealTime();

// A collection that finds N containers of garbage 2-cycles (made untimed).
static void BM_GcGarbage(benchmark::State &st)
{
    ouro_gc_disable();
    ouro_gc_set_markers(1);
    size_t n = (size_t)st.range(0);
    for (auto _ : st) {
        st.PauseTiming();
        for (size_t i = 0; i < n / 2; i++) {
            pair *a = (pair *)ouro_new(&pair_type), *b = (pair *)ouro_new(&pair_type);
            ouro_store(&a->other, &b->ob);
            ouro_incref(&a->ob);
            ouro_store(&b->other, &a->ob);
            ouro_decref(&a->ob);
        }
        st.ResumeTiming();
        benchmark::DoNotOptimize(ouro_gc_collect(0));
    }
    st.SetItemsProcessed(st.iterations() * (int64_t)n);
    add_step_counters(st, n);
    ouro_barrier();
    ouro_gc_set_markers(0);
    ouro_gc_enable();
}
BENCHMARK(BM_GcGarbage)->Arg(1 << 18)->Unit(benchmark::kMillisecond)->UseRealTime();

// ---- allocation ----
static void BM_MallocFree(benchmark::State &st)
{
    size_t n = (size_t)st.range(0);
    for (auto _ : st) {
        void *p = ouro_malloc(n);
        benchmark::DoNotOptimize(p);
        ouro_free(p);
    }
}
BENCHMARK(BM_MallocFree)->Arg(16)->Arg(64)->Arg(256)->Arg(512)->Arg(1024)->Arg(4096)->Arg(32768)->Arg(131072)->Arg(1 << 20);

// a large block used and given back: the mapping waits for the next one (large.c)
static void BM_LargeTouchFree(benchmark::State &st)
{
    size_t n = (size_t)st.range(0);
    for (auto _ : st) {
        char *p = (char *)ouro_malloc(n);
        p[0] = p[n / 2] = p[n - 1] = 1;
        benchmark::DoNotOptimize(p);
        ouro_free(p);
    }
}
BENCHMARK(BM_LargeTouchFree)->Arg(256 << 10)->Arg(4000000);

static void BM_CallocFree(benchmark::State &st)
{
    size_t n = (size_t)st.range(0);
    for (auto _ : st) {
        char *p = (char *)ouro_calloc(1, n);
        p[n - 1] = 1;
        benchmark::DoNotOptimize(p);
        ouro_free(p);
    }
}
BENCHMARK(BM_CallocFree)->Arg(4096)->Arg(512 << 10)->Arg(2 << 20);

static void BM_AlignedAlloc(benchmark::State &st)
{
    size_t a = (size_t)st.range(0);
    for (auto _ : st) {
        void *p = ouro_aligned_alloc(a, 100);
        benchmark::DoNotOptimize(p);
        ouro_free(p);
    }
}
BENCHMARK(BM_AlignedAlloc)->Arg(64)->Arg(4096);

static void BM_ReallocGrow(benchmark::State &st)
{
    for (auto _ : st) {
        void *p = nullptr;
        for (size_t n = 16; n <= 65536; n *= 2)
            p = ouro_realloc(p, n);
        ouro_free(p);
    }
}
BENCHMARK(BM_ReallocGrow);

// blocks allocated here, freed by another thread (remote frees)
static void BM_CrossThreadFree(benchmark::State &st)
{
    const int n = 10000;
    std::vector<void *> v(n);
    for (auto _ : st) {
        for (int i = 0; i < n; i++)
            v[i] = ouro_malloc(64);
        std::thread t([&] {
            for (int i = 0; i < n; i++)
                ouro_free(v[i]);
        });
        t.join();
    }
    st.SetItemsProcessed(st.iterations() * n);
}
BENCHMARK(BM_CrossThreadFree)->UseRealTime();

BENCHMARK_MAIN();
