// structures_bench: the shared structures against Boost.Interprocess
// baselines, in one run. main() runs the hash map part (this file) and then
// the priority queue part (run_pq_bench, bench/structures_pq.cpp).
//
// Hash map: uint64 keys → 64-byte values, kKeys keys pre-loaded, a 90/10
// get/put mix over uniformly random keys (a get copies the 64-byte value out;
// a put is insert_or_assign of a new value). Cost = ns per operation.
//   ours      ipc::HashMap<std::uint64_t, Value64>, 64 shards, sized so that
//             no growth happens during the run, in an ipc::Segment
//             (domain "bench<pid>")
//   baseline  boost::interprocess::map<std::uint64_t, Value64> in a
//             managed_shared_memory segment /dev/shm/ipc_structures_bench_<pid>,
//             every operation under one interprocess_mutex in that segment
// 1 process: pinned to CPU 0. 2 processes: parent on CPU 0, forked child on
// CPU 1, both run the mix at once on the same map (the child on its own
// reader slot); cost = max(wall time of the two) / operations per process.
// Sides alternate within each repetition; median of the repetitions. Both
// shm files are unlinked on every exit path (cleanup module).
#include <unistd.h>

#include <atomic>
#include <boost/interprocess/allocators/allocator.hpp>
#include <boost/interprocess/containers/map.hpp>
#include <boost/interprocess/managed_shared_memory.hpp>
#include <boost/interprocess/sync/interprocess_mutex.hpp>
#include <boost/interprocess/sync/scoped_lock.hpp>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <functional>
#include <string>
#include <vector>

#include "bench_util.hpp"
#include "ipc/hash_map.hpp"
#include "ipc/segment.hpp"

namespace ipc::bench {
void run_pq_bench(const Args& args);
}

namespace {

namespace bip = boost::interprocess;
namespace bench = ipc::bench;
using bench::cleanup::die;

constexpr const char* kBench = "structures_bench";
constexpr const char* kSegment = "structures-map";
constexpr std::uint64_t kKeys = 50000;
constexpr unsigned kWatchdogSeconds = 120;

struct Value64 {
  std::uint64_t words[8];
};
static_assert(sizeof(Value64) == 64);

using BoostAlloc = bip::allocator<std::pair<const std::uint64_t, Value64>, bip::managed_shared_memory::segment_manager>;
using BoostMap = bip::map<std::uint64_t, Value64, std::less<std::uint64_t>, BoostAlloc>;
struct BoostSide {
  bip::interprocess_mutex* mutex;
  BoostMap* map;
};

struct alignas(64) Control {
  std::atomic<std::uint32_t> arrive;
  std::atomic<std::uint32_t> failed;
  alignas(64) std::atomic<double> child_ns;
  std::atomic<std::uint64_t> sink;
};

Control* g_control = nullptr;  // for the die() hook: tells the other process

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

std::uint64_t next_random(std::uint64_t& s) {  // xorshift64*
  s ^= s >> 12;
  s ^= s << 25;
  s ^= s >> 27;
  return s * 0x2545f4914f6cdd1dull;
}

// The mix on our map: n ops, returns ns.
double run_ours(ipc::HashMap<std::uint64_t, Value64>& m, long n, std::uint64_t seed, std::atomic<std::uint64_t>& sink) {
  std::uint64_t s = seed | 1, acc = 0;
  double t0 = bench::now_ns();
  for (long i = 0; i < n; ++i) {
    std::uint64_t r = next_random(s);
    std::uint64_t key = r % kKeys;
    if ((r >> 40) % 10 == 0) {
      Value64 v{};
      v.words[0] = key;
      v.words[1] = r;
      if (m.insert_or_assign(key, v) != ipc::MapStatus::ok) [[unlikely]]
        die("HashMap::insert_or_assign failed: " + ipc::BytesMap::last_error());
    } else {
      std::optional<Value64> v = m.get(key);
      if (!v) [[unlikely]]
        die("HashMap::get: key " + std::to_string(key) + " missing");
      acc += v->words[1];
    }
  }
  double t = bench::now_ns() - t0;
  sink.fetch_add(acc, std::memory_order_relaxed);
  return t;
}

double run_boost(BoostSide& b, long n, std::uint64_t seed, std::atomic<std::uint64_t>& sink) {
  std::uint64_t s = seed | 1, acc = 0;
  double t0 = bench::now_ns();
  for (long i = 0; i < n; ++i) {
    std::uint64_t r = next_random(s);
    std::uint64_t key = r % kKeys;
    bip::scoped_lock<bip::interprocess_mutex> lock(*b.mutex);
    if ((r >> 40) % 10 == 0) {
      Value64 v{};
      v.words[0] = key;
      v.words[1] = r;
      (*b.map)[key] = v;
    } else {
      auto it = b.map->find(key);
      if (it == b.map->end()) [[unlikely]]
        die("boost map: key " + std::to_string(key) + " missing");
      Value64 v = it->second;  // copy out, as our get does
      acc += v.words[1];
    }
  }
  double t = bench::now_ns() - t0;
  sink.fetch_add(acc, std::memory_order_relaxed);
  return t;
}

void barrier(Control* c, std::uint32_t target) {
  c->arrive.fetch_add(1, std::memory_order_acq_rel);
  while (c->arrive.load(std::memory_order_acquire) < target) {
    if (c->failed.load(std::memory_order_relaxed)) die("the other process failed");
    cpu_relax();
  }
}

// Both processes run fn(n) at once; returns ns per op per process.
double two_proc(Control* c, long n, const std::function<double(long, std::uint64_t)>& fn) {
  c->arrive.store(0);
  c->child_ns.store(0);
  pid_t pid = bench::cleanup::fork_watched(kWatchdogSeconds, [&] {
    bench::pin_to_cpu(1);
    barrier(c, 2);
    c->child_ns.store(fn(n, 0x9e3779b97f4a7c15ull));
  });
  barrier(c, 2);
  double mine = fn(n, 0x1234567887654321ull);
  bench::cleanup::reap(pid);
  return std::max(mine, c->child_ns.load()) / static_cast<double>(n);
}

void run_map_bench(const bench::Args& args) {
  const std::string domain = "bench" + std::to_string(::getpid());
  const std::string boost_name = "ipc_structures_bench_" + std::to_string(::getpid());
  bench::cleanup::add_path("/dev/shm" + ipc::Segment::shm_name(kSegment, domain));
  bench::cleanup::add_path("/dev/shm/" + boost_name);
  ipc::Segment::unlink(kSegment, domain);
  bip::shared_memory_object::remove(boost_name.c_str());
  try {
    ipc::MapOptions o;
    o.shards = 64;
    o.initial_capacity = 2048;  // 64 × 2048 × 0.75 = 98k ≥ kKeys: no growth in the run
    ipc::SegmentOptions so;
    so.domain = domain;
    {
      ipc::MapOptions sized = o;
      sized.max_key_bytes = 8;
      sized.max_value_bytes = 64;
      so.size = ipc::BytesMap::bytes_needed(sized) + (2u << 20);
    }
    ipc::Segment seg = ipc::Segment::create(kSegment, so);
    Control* c = &seg.find_or_create<Control>("control", ipc::ObjectType::raw);
    g_control = c;
    bench::cleanup::g_on_die = [] {
      if (g_control != nullptr) g_control->failed.store(1);
    };
    auto ours = ipc::HashMap<std::uint64_t, Value64>::create(seg, "map", o);
    bip::managed_shared_memory ms(bip::create_only, boost_name.c_str(), 32u << 20);
    BoostSide boost{ms.construct<bip::interprocess_mutex>("mutex")(),
                    ms.construct<BoostMap>("map")(std::less<std::uint64_t>(), BoostAlloc(ms.get_segment_manager()))};
    for (std::uint64_t k = 0; k < kKeys; ++k) {
      Value64 v{};
      v.words[0] = k;
      if (ours.insert(k, v) != ipc::MapStatus::ok) die("pre-load failed: " + ipc::BytesMap::last_error());
      boost.map->emplace(k, v);
    }
    const int cpu0 = bench::pin_to_cpu(0);
    const long n1 = args.quick ? 200000 : 1000000;
    const long n2 = args.quick ? 100000 : 500000;
    std::vector<double> o1, b1, o2, b2;
    for (int rep = 0; rep < args.reps; ++rep) {
      const bool ours_first = rep % 2 == 0;
      for (int side = 0; side < 2; ++side) {
        if ((side == 0) == ours_first)
          o1.push_back(run_ours(ours, n1, 42 + rep, c->sink) / static_cast<double>(n1));
        else
          b1.push_back(run_boost(boost, n1, 42 + rep, c->sink) / static_cast<double>(n1));
      }
      for (int side = 0; side < 2; ++side) {
        if ((side == 0) == ours_first)
          o2.push_back(two_proc(c, n2, [&](long n, std::uint64_t s) { return run_ours(ours, n, s + rep, c->sink); }));
        else
          b2.push_back(two_proc(c, n2, [&](long n, std::uint64_t s) { return run_boost(boost, n, s + rep, c->sink); }));
      }
    }
    const double mo1 = bench::median(o1), mb1 = bench::median(b1), mo2 = bench::median(o2), mb2 = bench::median(b2);
    ipc::MapStats st = ours.stats();
    std::uint64_t waits = 0, max_probe = 0;
    for (const ipc::ShardStats& s : st.shards) {
      waits += s.lock_waits;
      max_probe = std::max(max_probe, s.probe_max);
    }
    std::printf("\nhash map: %llu uint64 keys -> 64 B values, 90%% get / 10%% put, uniform keys, median of %d\n",
                static_cast<unsigned long long>(kKeys), args.reps);
    std::printf("  1 process on CPU %d; 2 processes on CPUs %d and 1 (ns per op per process)\n", cpu0, cpu0);
    std::printf("  %-58s %10s %10s\n", "side", "1 proc", "2 procs");
    std::printf("  %-58s %10.1f %10.1f\n", "ours: ipc::HashMap, 64 shards (SharedMutex each)", mo1, mo2);
    std::printf("  %-58s %10.1f %10.1f\n", "baseline: bip::map in managed_shared_memory + 1 mutex", mb1, mb2);
    std::printf("  our map after the run: %llu entries, %llu shard-lock waits, longest probe %llu slots\n",
                static_cast<unsigned long long>(st.size), static_cast<unsigned long long>(waits),
                static_cast<unsigned long long>(max_probe));
    bench::result(kBench, "map_1proc_ours_ns_per_op", mo1, "ns");
    bench::result(kBench, "map_1proc_boost_map_mutex_ns_per_op", mb1, "ns");
    bench::result(kBench, "map_2proc_ours_ns_per_op", mo2, "ns");
    bench::result(kBench, "map_2proc_boost_map_mutex_ns_per_op", mb2, "ns");
    bench::ratio(kBench, "map_1proc_vs_boost_map_mutex", mo1, mb1);
    bench::ratio(kBench, "map_2proc_vs_boost_map_mutex", mo2, mb2);
    std::fflush(stdout);
  } catch (const std::exception& e) {
    die(std::string("map bench: ") + e.what());
  }
  g_control = nullptr;
  bench::cleanup::g_on_die = nullptr;
  ipc::Segment::unlink(kSegment, domain);
  bip::shared_memory_object::remove(boost_name.c_str());
  bench::cleanup::forget_paths();  // run_pq_bench registers its own
}

}  // namespace

int main(int argc, char** argv) {
  bench::Args args = bench::parse_args(argc, argv);
  bench::cleanup::install(kBench);
  run_map_bench(args);
  ipc::bench::run_pq_bench(args);
  std::fflush(stdout);
  return 0;
}
