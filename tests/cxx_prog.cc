// cxx_prog.cc — a C++ program run under the malloc override by
// tests/override.sh: containers, strings and shared_ptr handed between
// threads (so blocks are freed by threads other than their allocators),
// plus the C allocation entry points the override provides.  It prints
// only values that do not depend on the allocator, so its output under
// glibc and under ouro must be identical.
#include <malloc.h>
#include <stdlib.h>

#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

static uint64_t work(int id)
{
    std::map<std::string, std::vector<int>> m;
    std::unordered_map<int, std::string> u;
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < 20000; i++) {
        std::string k = "key" + std::to_string((i * 7919 + id) % 5000);
        m[k].push_back(i);
        u[i % 3000] = k + std::string(i % 200, 'x');
        if (i % 3 == 0)
            m.erase("key" + std::to_string(i % 5000));
    }
    for (auto &kv : m)
        for (int v : kv.second)
            h = (h ^ (uint64_t)v) * 1099511628211ull;
    for (auto &kv : u)
        h += kv.second.size();
    return h;
}

int main()
{
    // containers built in several threads
    std::vector<std::thread> ts;
    std::vector<uint64_t> out(4);
    for (int t = 0; t < 4; t++)
        ts.emplace_back([t, &out] { out[t] = work(t); });
    for (auto &t : ts)
        t.join();
    uint64_t total = 0;
    for (auto v : out)
        total ^= v;
    std::printf("containers %016llx\n", (unsigned long long)total);

    // objects made in one thread, dropped in another
    std::mutex mu;
    std::vector<std::shared_ptr<std::string>> box;
    std::thread prod([&] {
        for (int i = 0; i < 50000; i++) {
            auto s = std::make_shared<std::string>(std::string(i % 300 + 1, 'a' + i % 26));
            std::lock_guard<std::mutex> g(mu);
            box.push_back(s);
        }
    });
    size_t seen = 0, bytes = 0;
    std::thread cons([&] {
        while (seen < 50000) {
            std::vector<std::shared_ptr<std::string>> take;
            {
                std::lock_guard<std::mutex> g(mu);
                take.swap(box);
            }
            for (auto &s : take) {
                bytes += s->size();
                seen++;
            }
        }
    });
    prod.join();
    cons.join();
    std::printf("handed over %zu strings, %zu bytes\n", seen, bytes);

    // the C entry points
    void *p = nullptr;
    int r1 = posix_memalign(&p, 4096, 100);
    void *keep = p;
    int r2 = posix_memalign(&p, 3, 100); // bad alignment: EINVAL, p untouched
    std::printf("posix_memalign %d aligned %d, bad alignment %d untouched %d\n", r1,
                (int)((uintptr_t)p % 4096 == 0), r2, (int)(p == keep));
    free(p);
    void *a = aligned_alloc(256, 1000), *m = memalign(64, 10), *v = valloc(10);
    std::printf("aligned_alloc %d memalign %d valloc %d\n", (int)((uintptr_t)a % 256 == 0),
                (int)((uintptr_t)m % 64 == 0), (int)((uintptr_t)v % 4096 == 0));
    char *c = (char *)calloc(1000, 10);
    int zero = 1;
    for (int i = 0; i < 10000; i++)
        zero &= c[i] == 0;
    std::printf("calloc zero %d usable>=10000 %d\n", zero, (int)(malloc_usable_size(c) >= 10000));
    c = (char *)realloc(c, 100000);
    std::printf("realloc keeps zero %d\n", (int)(c[9999] == 0));
    free(a);
    free(m);
    free(v);
    free(c);
    std::unique_ptr<int[]> arr(new int[1000]());
    std::printf("new[] zero %d\n", (int)(arr[999] == 0));
    return 0;
}
