// micro.cc — micro-benchmarks over ouro's C API, with Google Benchmark.
// Reference counts: the owner's incref+decref pair against a plain and an
// atomic pair on the same memory, the non-owner path, and merging.
// Allocation: fast path per size class, cross-thread free, aligned, realloc.
// Benchmarks, not tests: they assert nothing.  Run: bench/micro
#include <benchmark/benchmark.h>

#include <atomic>
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
