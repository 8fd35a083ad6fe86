// pool_bench: the cost of an alloc+free pair from our shared-memory buffer
// pool against its baselines, all in the same run. Our pools live in one real
// ipc::Segment (domain "bench<pid>"); the Boost baseline is a
// managed_shared_memory segment /dev/shm/ipc_pool_bench_<pid>. Both are
// unlinked on every exit path (normal, error, signal, watchdog).
//
// Every side touches the first byte of the block and lets the pointer escape,
// so the compiler cannot drop a malloc/free pair.
//
// 1. One process pinned to CPU 0, alloc+free pairs of 256 B and of 64 KiB
//    (ns per pair):
//      ours      BufferPool::allocate + ~Buffer (release), default PoolConfig
//                (classes 64..65536, per-handle cache of 8 per class)
//      ours      the same with cache_per_class = 0: the shared lock-free path alone
//      baseline  malloc/free (glibc; 256 B is a tcache hit, 64 KiB is below the
//                mmap threshold, so it comes from the heap)
//      baseline  boost::interprocess::managed_shared_memory allocate/deallocate
// 2. Two processes (fork; parent on CPU 0, child on CPU 1), each doing 256 B
//    alloc+free pairs at the same time: ours (one pool, each process its own
//    BufferPool handle; with and without the cache), malloc (process-private
//    heaps), Boost (one managed segment). Cost = wall time from the barrier
//    that starts a chunk until both are done / pairs per process, i.e. ns per
//    pair per process while both run.
// 3. Hand-over of a 64 B payload between two processes (busy-polling, A on
//    CPU 0, B on CPU 1), round trip per payload, p50:
//      ours   A: allocate(64), write 64 B, detach, publish the handle in a
//             shared slot; B: adopt(handle, A), read all 64 B, release (frees
//             the buffer); B acks
//      floor  A: write 64 B into a fixed shared line, publish; B reads all 64 B; B acks
//    The difference is what the pool adds to a zero-copy hand-over.
//
// Drift (this is a noisy 2-vCPU VM) must hit all sides alike, so within each
// repetition the sides alternate in chunks, in an order that rotates with the
// chunk and the repetition. Median of the repetitions.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/interprocess/managed_shared_memory.hpp>
#include <boost/interprocess/shared_memory_object.hpp>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <new>
#include <optional>
#include <string>
#include <vector>

#include "bench_util.hpp"
#include "ipc/pool.hpp"
#include "ipc/segment.hpp"

namespace {

namespace bench = ipc::bench;
namespace bip = boost::interprocess;

constexpr const char* kBench = "pool_bench";
constexpr const char* kSegment = "pool";
constexpr const char* kPool = "pool";                 // default PoolConfig (cache on)
constexpr const char* kPoolNoCache = "pool_nocache";  // default PoolConfig, cache_per_class = 0
constexpr std::size_t kBoostSize = 8u << 20;
constexpr unsigned kWatchdogSeconds = 60;  // per child run; a hung run is cleaned up, not left forever
constexpr double kSeedTargetNs = 1000;     // the seed's goal: < 1 us per alloc+free

// ---- shared state --------------------------------------------------------------------------

struct State {
  struct alignas(64) {
    std::atomic<std::uint32_t> arrive{0};  // two-party spin barrier
    std::atomic<std::uint32_t> failed{0};  // set by a process that dies with an error
    std::atomic<int> child_cpu{-1};
    std::uint32_t parent_pid = 0;
  } ctl;
  struct alignas(64) {
    std::atomic<std::uint32_t> seq{0};  // hand-over: A publishes
    ipc::BufferHandle handle{};         // written before seq (release)
  } slot;
  struct alignas(64) {
    std::atomic<std::uint32_t> seq{0};  // hand-over: B acknowledges
    std::uint32_t errors = 0;           // payload or handle errors seen by B
    std::uint32_t first_error = 0;      // HandleStatus + 1, or 100 for a payload mismatch
  } ack;
  struct alignas(64) {
    unsigned char b[64];  // hand-over floor: the payload line
  } payload;
};

using bench::cleanup::die;
using bench::cleanup::g_child;
using bench::cleanup::g_is_child;
State* g_state = nullptr;  // a dying child flags the failure here for the parent

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Keeps the compiler from eliding an allocation whose result is otherwise unused.
inline void escape(void* p) { asm volatile("" : : "g"(p) : "memory"); }

void check_failed(State* st) {
  if (st->ctl.failed.load(std::memory_order_relaxed)) die("the other process failed");
}

// Two-party spin barrier on st->ctl.arrive; `gen` counts the barriers this side passed.
void barrier(State* st, std::uint32_t& gen) {
  ++gen;
  st->ctl.arrive.fetch_add(1, std::memory_order_acq_rel);
  while (st->ctl.arrive.load(std::memory_order_acquire) < 2 * gen) {
    check_failed(st);
    cpu_relax();
  }
}

// Forks a child pinned to CPU 1 that runs fn() and exits; the parent returns its pid.
template <typename Fn>
pid_t spawn(State* st, Fn fn) {
  st->ctl.child_cpu.store(-1);
  st->ctl.arrive.store(0);
  return bench::cleanup::fork_watched(kWatchdogSeconds, [&] {
    st->ctl.child_cpu.store(bench::pin_to_cpu(1));
    try {
      fn();
    } catch (const std::exception& e) {
      die(e.what());
    }
  });
}

using bench::cleanup::reap;

// ---- the sides: n alloc+free pairs, returns ns ------------------------------------------------

enum Side { kOurs = 0, kOursNoCache = 1, kMalloc = 2, kBoost = 3, kSides = 4 };
constexpr const char* kSideName[kSides] = {
    "ours: BufferPool (default config, cache on)",
    "ours: BufferPool, cache_per_class = 0",
    "baseline: malloc/free",
    "baseline: boost managed_shared_memory",
};

[[noreturn]] [[gnu::noinline]] void alloc_failed(const char* what, std::size_t size, const char* why) {
  die(std::string(what) + " of " + std::to_string(size) + " B failed: " + why);
}

double ns_pool(ipc::BufferPool& pool, std::size_t size, long n) {
  double t0 = bench::now_ns();
  for (long i = 0; i < n; ++i) {
    ipc::Allocation a = pool.allocate(size);
    if (!a) [[unlikely]]
      alloc_failed("BufferPool::allocate", size, ipc::to_string(a.status));
    a.buffer.data()[0] = std::byte{1};
    escape(a.buffer.data());
  }  // ~Allocation -> ~Buffer releases the buffer
  return bench::now_ns() - t0;
}

double ns_malloc(std::size_t size, long n) {
  double t0 = bench::now_ns();
  for (long i = 0; i < n; ++i) {
    void* p = std::malloc(size);
    if (p == nullptr) [[unlikely]]
      alloc_failed("malloc", size, "nullptr");
    static_cast<unsigned char*>(p)[0] = 1;
    escape(p);
    std::free(p);
  }
  return bench::now_ns() - t0;
}

double ns_boost(bip::managed_shared_memory& ms, std::size_t size, long n) {
  double t0 = bench::now_ns();
  for (long i = 0; i < n; ++i) {
    void* p = ms.allocate(size, std::nothrow);
    if (p == nullptr) [[unlikely]]
      alloc_failed("managed_shared_memory::allocate", size, "nullptr");
    static_cast<unsigned char*>(p)[0] = 1;
    escape(p);
    ms.deallocate(p);
  }
  return bench::now_ns() - t0;
}

struct Sides {
  ipc::BufferPool* pool;
  ipc::BufferPool* pool_nc;
  bip::managed_shared_memory* boost;
};

double run_side(const Sides& s, int side, std::size_t size, long n) {
  switch (side) {
    case kOurs: return ns_pool(*s.pool, size, n);
    case kOursNoCache: return ns_pool(*s.pool_nc, size, n);
    case kMalloc: return ns_malloc(size, n);
    default: return ns_boost(*s.boost, size, n);
  }
}

inline int side_of(int rep, int chunk, int k) { return (rep + chunk + k) % kSides; }

// ---- 1. one process ---------------------------------------------------------------------------

// One repetition: `iters` pairs per side in `chunks` interleaved chunks. Returns ns per pair per side.
std::array<double, kSides> single_rep(const Sides& s, std::size_t size, long iters, int chunks, int rep) {
  std::array<double, kSides> total{};
  const long per = iters / chunks;
  for (int c = 0; c < chunks; ++c)
    for (int k = 0; k < kSides; ++k) {
      int side = side_of(rep, c, k);
      total[side] += run_side(s, side, size, per);
    }
  for (double& t : total) t /= static_cast<double>(per * chunks);
  return total;
}

// ---- 2. two processes -------------------------------------------------------------------------

// Parent and a forked child run (warm-up + reps) repetitions of `chunks`
// chunks of `n` pairs per side, a spin barrier before and after each chunk;
// the child opens its own BufferPool handles. Returns per side the ns per pair
// per process of each repetition.
std::array<std::vector<double>, kSides> two_proc(ipc::Segment& seg, const Sides& s, State* st, std::size_t size, long n,
                                                 int chunks, int reps) {
  pid_t pid = spawn(st, [&] {
    ipc::BufferPool pool = ipc::BufferPool::open(seg, kPool);
    ipc::BufferPool pool_nc = ipc::BufferPool::open(seg, kPoolNoCache);
    Sides mine{&pool, &pool_nc, s.boost};  // the Boost segment manager lives in the (inherited) shared mapping
    std::uint32_t gen = 0;
    barrier(st, gen);
    for (int r = -1; r < reps; ++r)
      for (int c = 0; c < chunks; ++c)
        for (int k = 0; k < kSides; ++k) {
          run_side(mine, side_of(r + 1, c, k), size, n);
          barrier(st, gen);
        }
  });  // the child's handles close here (caches flushed), then it exits
  std::array<std::vector<double>, kSides> out;
  std::uint32_t gen = 0;
  barrier(st, gen);
  for (int r = -1; r < reps; ++r) {
    std::array<double, kSides> total{};
    double t0 = bench::now_ns();
    for (int c = 0; c < chunks; ++c)
      for (int k = 0; k < kSides; ++k) {
        int side = side_of(r + 1, c, k);
        run_side(s, side, size, n);
        barrier(st, gen);
        double t1 = bench::now_ns();
        total[side] += t1 - t0;
        t0 = t1;
      }
    if (r >= 0)
      for (int k = 0; k < kSides; ++k) out[k].push_back(total[k] / static_cast<double>(n * chunks));
  }
  reap(pid);
  return out;
}

// ---- 3. hand-over -----------------------------------------------------------------------------

enum HandKind { kHandPool = 0, kHandFloor = 1 };
constexpr const char* kHandName[2] = {
    "ours: allocate+write / handle / adopt+read+release",
    "floor: write fixed shared line / read it",
};

void wait_change(State* st, const std::atomic<std::uint32_t>& w, std::uint32_t old) {
  std::uint32_t spins = 0;
  while (w.load(std::memory_order_acquire) == old) {
    if ((++spins & 0xffff) == 0) check_failed(st);
    cpu_relax();
  }
}

bool payload_ok(const std::byte* p, std::uint32_t seq) {
  const auto v = static_cast<unsigned char>(seq);
  unsigned char bad = 0;
  for (int i = 0; i < 64; ++i) bad |= static_cast<unsigned char>(static_cast<unsigned char>(p[i]) ^ v);
  return bad == 0;
}

struct HandResult {
  double p50[2];
  double mean[2];
};

// One child for all repetitions; per repetition `blocks` blocks of `block`
// round trips per kind, kinds interleaved block by block in a rotating order.
// The first round trip of each block (a hand-over between kinds) and the
// warm-up repetition are not counted.
std::vector<HandResult> handover(ipc::Segment& seg, ipc::BufferPool& pool, State* st, int block, int blocks, int reps) {
  st->slot.seq.store(0);
  st->ack.seq.store(0);
  st->ack.errors = 0;
  st->ack.first_error = 0;
  st->ctl.parent_pid = static_cast<std::uint32_t>(::getpid());
  auto kind_of = [](int r, int b, int k) { return static_cast<HandKind>((r + 1 + b + k) % 2); };

  pid_t pid = spawn(st, [&] {
    ipc::BufferPool mine = ipc::BufferPool::open(seg, kPool);
    const std::uint32_t a_pid = st->ctl.parent_pid;
    std::uint32_t seen = 0;
    std::uint32_t gen = 0;
    barrier(st, gen);
    for (int r = -1; r < reps; ++r)
      for (int b = 0; b < blocks; ++b)
        for (int k = 0; k < 2; ++k) {
          HandKind kind = kind_of(r, b, k);
          for (int i = 0; i < block; ++i) {
            wait_change(st, st->slot.seq, seen);
            seen = st->slot.seq.load(std::memory_order_acquire);
            std::uint32_t error = 0;  // HandleStatus + 1, or 100 for a payload mismatch
            if (kind == kHandPool) {
              ipc::BufferHandle h = st->slot.handle;
              ipc::BufferPool::HandleStatus hs{};
              std::optional<ipc::Buffer> buf = mine.adopt(h, a_pid, &hs);
              if (!buf || !*buf) {
                error = static_cast<std::uint32_t>(hs) + 1;
              } else {
                if (!payload_ok(buf->data(), seen)) error = 100;
                buf->reset();  // the last reference: frees the buffer
              }
            } else if (!payload_ok(reinterpret_cast<const std::byte*>(st->payload.b), seen)) {
              error = 100;
            }
            if (error != 0 && st->ack.errors++ == 0) st->ack.first_error = error;
            st->ack.seq.store(seen, std::memory_order_release);
          }
        }
  });

  std::vector<HandResult> out;
  std::uint32_t seq = 0;
  std::uint32_t gen = 0;
  barrier(st, gen);
  for (int r = -1; r < reps; ++r) {
    std::vector<double> rt[2];
    for (auto& v : rt) v.reserve(static_cast<std::size_t>(block * blocks));
    for (int b = 0; b < blocks; ++b)
      for (int k = 0; k < 2; ++k) {
        HandKind kind = kind_of(r, b, k);
        for (int i = 0; i < block; ++i) {
          double t0 = bench::now_ns();
          ++seq;
          if (kind == kHandPool) {
            ipc::Allocation a = pool.allocate(64);
            if (!a) [[unlikely]]
              alloc_failed("BufferPool::allocate (hand-over)", 64, ipc::to_string(a.status));
            std::memset(a.buffer.data(), static_cast<unsigned char>(seq), 64);
            st->slot.handle = a.buffer.detach();  // B now owns the reference
          } else {
            std::memset(st->payload.b, static_cast<unsigned char>(seq), 64);
          }
          st->slot.seq.store(seq, std::memory_order_release);
          wait_change(st, st->ack.seq, seq - 1);
          double t1 = bench::now_ns();
          if (r >= 0 && i > 0) rt[kind].push_back(t1 - t0);
        }
      }
    if (r >= 0) {
      HandResult h{};
      for (int k = 0; k < 2; ++k) {
        double sum = 0;
        for (double x : rt[k]) sum += x;
        h.p50[k] = bench::percentile(rt[k], 0.5);
        h.mean[k] = sum / static_cast<double>(rt[k].size());
      }
      out.push_back(h);
    }
  }
  reap(pid);
  if (st->ack.errors != 0) {
    std::uint32_t fe = st->ack.first_error;
    die("hand-over: " + std::to_string(st->ack.errors) + " errors in B, first: " +
        (fe == 100 ? std::string("payload mismatch")
                   : std::string(ipc::BufferPool::to_string(static_cast<ipc::BufferPool::HandleStatus>(fe - 1)))));
  }
  return out;
}

// ---- the run ----------------------------------------------------------------------------------

struct Line {
  enum { result, ratio } kind;
  std::string metric;
  double a, b;
  const char* unit;
};

double vmin(const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); }
double vmax(const std::vector<double>& v) { return *std::max_element(v.begin(), v.end()); }

// Every buffer must be back in its pool once all handles are flushed.
void check_pools(ipc::BufferPool& pool, ipc::BufferPool& pool_nc) {
  for (ipc::BufferPool* p : {&pool, &pool_nc}) {
    p->flush();
    ipc::PoolStats s = p->stats();
    for (const ipc::ClassStats& c : s.classes) {
      if (c.in_use != 0 || c.cached != 0)
        std::printf("  WARNING: pool '%s' class %zu B: in_use %u, cached %u after every handle flushed\n",
                    p->name().c_str(), c.buffer_size, c.in_use, c.cached);
      if (c.failures != 0)
        std::printf("  WARNING: pool '%s' class %zu B: %llu allocation failures\n", p->name().c_str(), c.buffer_size,
                    static_cast<unsigned long long>(c.failures));
    }
  }
}

int run(const bench::Args& args, ipc::Segment& seg, const Sides& s, State* st) {
  const int reps = args.reps;
  const int cpu0 = bench::pin_to_cpu(0);
  std::vector<Line> lines;
  double worst_ours = 0;  // for the seed's < 1 us target

  // 1. One process.
  {
    const int chunks = 10;
    struct Size {
      std::size_t bytes;
      const char* tag;
      long iters;
    };
    const Size sizes[2] = {{256, "256B", args.quick ? 1'000'000L : 4'000'000L},
                           {65536, "64KiB", args.quick ? 500'000L : 2'000'000L}};
    for (const Size& z : sizes) {
      single_rep(s, z.bytes, z.iters / 10, chunks, 0);  // warm-up (page faults, caches, frequency)
      std::vector<double> v[kSides];
      for (int r = 0; r < reps; ++r) {
        std::array<double, kSides> x = single_rep(s, z.bytes, z.iters, chunks, r);
        for (int k = 0; k < kSides; ++k) v[k].push_back(x[k]);
      }
      std::printf(
          "pool_bench 1: alloc+free %s, 1 process pinned to CPU %d,\n"
          "  %ld pairs per side per repetition in %d interleaved chunks, median of %d\n",
          z.tag, cpu0, z.iters, chunks, reps);
      std::printf("  %-46s %12s %9s %9s %9s\n", "", "per pair", "min rep", "max rep", "vs malloc");
      const double m = bench::median(v[kMalloc]);
      for (int k = 0; k < kSides; ++k)
        std::printf("  %-46s %9.2f ns %9.2f %9.2f %9.3f\n", kSideName[k], bench::median(v[k]), vmin(v[k]), vmax(v[k]),
                    bench::median(v[k]) / m);
      std::printf("\n");
      const std::string base = std::string("alloc_free_") + z.tag;
      const double ours = bench::median(v[kOurs]), nc = bench::median(v[kOursNoCache]), bm = bench::median(v[kBoost]);
      worst_ours = std::max({worst_ours, ours, nc});
      lines.push_back({Line::result, base, ours, 0, "ns"});
      lines.push_back({Line::result, base + "_nocache", nc, 0, "ns"});
      lines.push_back({Line::result, base + "_malloc", m, 0, "ns"});
      lines.push_back({Line::result, base + "_boost_managed", bm, 0, "ns"});
      lines.push_back({Line::ratio, base + "_vs_malloc", ours, m, nullptr});
      lines.push_back({Line::ratio, base + "_vs_boost_managed", ours, bm, nullptr});
    }
  }

  if (bench::cpu_count() < 2) {
    std::printf("pool_bench 2, 3: skipped (need 2 CPUs, have %d)\n\n", bench::cpu_count());
  } else {
    // 2. Two processes.
    {
      const long n = args.quick ? 50'000 : 200'000;  // pairs per process per chunk
      const int chunks = args.quick ? 4 : 5;         // per side and repetition
      std::array<std::vector<double>, kSides> v = two_proc(seg, s, st, 256, n, chunks, reps);
      std::printf(
          "pool_bench 2: alloc+free 256B, 2 processes at once pinned to CPU %d and CPU %d,\n"
          "  %ld pairs per process per side per repetition in chunks of %ld, ns per pair per process\n"
          "  (wall time until both are done / pairs per process), median of %d\n",
          cpu0, st->ctl.child_cpu.load(), n * chunks, n, reps);
      std::printf("  %-46s %12s %9s %9s %9s\n", "", "per pair", "min rep", "max rep", "vs malloc");
      const double m = bench::median(v[kMalloc]);
      for (int k = 0; k < kSides; ++k)
        std::printf("  %-46s %9.2f ns %9.2f %9.2f %9.3f\n", kSideName[k], bench::median(v[k]), vmin(v[k]), vmax(v[k]),
                    bench::median(v[k]) / m);
      std::printf("\n");
      const double ours = bench::median(v[kOurs]), nc = bench::median(v[kOursNoCache]), bm = bench::median(v[kBoost]);
      worst_ours = std::max({worst_ours, ours, nc});
      lines.push_back({Line::result, "alloc_free_256B_2proc", ours, 0, "ns"});
      lines.push_back({Line::result, "alloc_free_256B_2proc_nocache", nc, 0, "ns"});
      lines.push_back({Line::result, "alloc_free_256B_2proc_malloc", m, 0, "ns"});
      lines.push_back({Line::result, "alloc_free_256B_2proc_boost_managed", bm, 0, "ns"});
      lines.push_back({Line::ratio, "alloc_free_256B_2proc_vs_malloc", ours, m, nullptr});
      lines.push_back({Line::ratio, "alloc_free_256B_2proc_vs_boost_managed", ours, bm, nullptr});
    }

    // 3. Hand-over.
    {
      const int block = 500;
      const int blocks = args.quick ? 10 : 40;  // per kind and repetition
      std::vector<HandResult> h = handover(seg, *s.pool, st, block, blocks, reps);
      std::vector<double> p50[2], mean[2], diff;
      for (const HandResult& x : h) {
        for (int k = 0; k < 2; ++k) {
          p50[k].push_back(x.p50[k]);
          mean[k].push_back(x.mean[k]);
        }
        diff.push_back(x.p50[kHandPool] - x.p50[kHandFloor]);
      }
      std::printf(
          "pool_bench 3: hand-over of 64 B, A pinned to CPU %d, B pinned to CPU %d, busy-polling,\n"
          "  %d round trips per kind per repetition, kinds interleaved in blocks of %d,\n"
          "  p50 round trip of a repetition, median of %d\n",
          cpu0, st->ctl.child_cpu.load(), block * blocks, block, reps);
      std::printf("  %-52s %11s %11s %11s %11s\n", "", "p50 rt", "min rep", "max rep", "mean rt");
      for (int k = 0; k < 2; ++k)
        std::printf("  %-52s %8.1f ns %8.1f ns %8.1f ns %8.1f ns\n", kHandName[k], bench::median(p50[k]), vmin(p50[k]),
                    vmax(p50[k]), bench::median(mean[k]));
      std::printf("  %-52s %8.1f ns (median over repetitions of p50 pool - p50 floor)\n\n",
                  "pool overhead per hand-over", bench::median(diff));
      lines.push_back({Line::result, "handover_64B_pool_p50", bench::median(p50[kHandPool]), 0, "ns"});
      lines.push_back({Line::result, "handover_64B_floor_p50", bench::median(p50[kHandFloor]), 0, "ns"});
      lines.push_back({Line::result, "handover_64B_pool_overhead", bench::median(diff), 0, "ns"});
    }
  }

  check_pools(*s.pool, *s.pool_nc);
  std::printf(
      "seed target: alloc+free < %.0f ns: worst of our medians above (cache on/off, 1 and 2 processes) "
      "= %.2f ns -> %s\n\n",
      kSeedTargetNs, worst_ours, worst_ours < kSeedTargetNs ? "met" : "NOT MET");

  for (const Line& l : lines)
    if (l.kind == Line::result) bench::result(kBench, l.metric, l.a, l.unit);
  for (const Line& l : lines)
    if (l.kind == Line::ratio) bench::ratio(kBench, l.metric, l.a, l.b);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  bench::Args args = bench::parse_args(argc, argv);
  bench::cleanup::install(kBench);
  bench::cleanup::g_on_die = [] {
    if (g_state != nullptr) g_state->ctl.failed.store(1);
  };

  const std::string domain = "bench" + std::to_string(::getpid());
  const std::string boost_name = "ipc_pool_bench_" + std::to_string(::getpid());
  int rc = 1;
  try {
    bench::cleanup::add_path("/dev/shm" + ipc::Segment::shm_name(kSegment, domain));
    bench::cleanup::add_path("/dev/shm/" + boost_name);
    ipc::Segment::unlink(kSegment, domain);
    bip::shared_memory_object::remove(boost_name.c_str());

    ipc::PoolConfig cfg;  // default: classes 64..65536, 20 buffers each, cache of 8 per class
    ipc::PoolConfig cfg_nc = cfg;
    cfg_nc.cache_per_class = 0;
    ipc::SegmentOptions so;
    so.size = ipc::BufferPool::bytes_needed(cfg) + ipc::BufferPool::bytes_needed(cfg_nc) + (1u << 20);
    so.domain = domain;
    ipc::Segment seg = ipc::Segment::create(kSegment, so);
    State* st = &seg.find_or_create<State>("state", ipc::ObjectType::raw);
    g_state = st;
    bip::managed_shared_memory boost_seg(bip::create_only, boost_name.c_str(), kBoostSize);
    {
      ipc::BufferPool pool = ipc::BufferPool::create(seg, kPool, cfg);
      ipc::BufferPool pool_nc = ipc::BufferPool::create(seg, kPoolNoCache, cfg_nc);
      for (std::size_t want : {std::size_t{256}, std::size_t{65536}}) {
        ipc::Allocation a = pool.allocate(want);
        if (!a || a.buffer.capacity() != want)
          die("allocate(" + std::to_string(want) + ") gave " + ipc::to_string(a.status) + ", capacity " +
              std::to_string(a.buffer.capacity()) + ": the default classes are not what pool_bench assumes");
      }
      Sides s{&pool, &pool_nc, &boost_seg};
      rc = run(args, seg, s, st);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pool_bench: %s\n", e.what());
    rc = 1;
  }
  g_state = nullptr;
  ipc::Segment::unlink(kSegment, domain);
  bip::shared_memory_object::remove(boost_name.c_str());
  bench::cleanup::forget_paths();
  std::fflush(stdout);
  return rc;
}
