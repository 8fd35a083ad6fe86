// sync_bench: the cost of our process-shared synchronisation against its
// baselines, all in the same run, all objects in one real ipc::Segment
// (domain "bench<pid>", unlinked on every exit path).
//
// 1. Uncontended lock+unlock, one thread pinned to CPU 0 (ns per pair):
//      ours      ipc::Mutex (robust, pshared, error-checking pthread mutex + owner record)
//      baseline  pthread_mutex_t, PTHREAD_PROCESS_SHARED + PTHREAD_MUTEX_ROBUST (default type)
//      baseline  boost::interprocess::interprocess_mutex (1.74: pshared, not robust)
// 2. Blocking ping-pong between two processes (fork; parent on CPU 0, child on
//    CPU 1); one-way latency = round trip / 2; p50 of the round trips of a
//    repetition, median over repetitions:
//      ours      two ipc::Events, one per direction: notify(), then wait(seen)
//      ours      ipc::Mutex + ipc::CondVar guarding a turn variable (notify_one)
//      floor     two 32-bit words, raw FUTEX_WAIT/FUTEX_WAKE (shared, no
//                FUTEX_PRIVATE_FLAG); the waker always makes the wake syscall
//    No side spins: every wait goes straight to the futex once the value is
//    unchanged. RATIO pingpong_blocking_vs_futex uses the Event variant,
//    pingpong_condvar_vs_futex the Mutex + CondVar one.
// 3. Contended: two processes (CPU 0 and 1) each do N lock / ++counter /
//    unlock on one lock; cost = wall time until both are done / (2N).
//    Ours vs pthread robust pshared. The counter is checked at the end.
//
// Drift (this is a noisy 2-vCPU VM) must hit all sides alike, so within each
// repetition the sides alternate in short chunks (1: 1/10 of the pairs;
// 2: blocks of 250 round trips in one child; 3: chunks of 200k ops per
// process between spin barriers), in an order that rotates with the chunk.
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/interprocess/sync/interprocess_mutex.hpp>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "bench_util.hpp"
#include "ipc/condvar.hpp"
#include "ipc/event.hpp"
#include "ipc/mutex.hpp"
#include "ipc/segment.hpp"

namespace {

namespace bench = ipc::bench;
using boost::interprocess::interprocess_mutex;

constexpr const char* kBench = "sync_bench";
constexpr const char* kSegment = "sync";
constexpr unsigned kWatchdogSeconds = 30;  // per child run; a hung run is cleaned up, not left forever

using bench::cleanup::die;
using bench::cleanup::g_child;
using bench::cleanup::g_is_child;

// ---- shared state --------------------------------------------------------------------------

struct alignas(64) Line32 {
  std::atomic<std::uint32_t> v{0};
};

struct State {
  Line32 to_child;   // futex floor: parent -> child
  Line32 to_parent;  // futex floor: child -> parent
  struct alignas(64) {
    int turn = 0;  // condvar ping-pong: 0 parent's turn, 1 child's; guarded by the ipc::Mutex
  } cv;
  struct alignas(64) {
    std::uint64_t counter = 0;           // contended: guarded by the lock under test
    std::uint32_t last = 0;              // who held the lock last (1 parent, 2 child)
    std::uint64_t switches[2] = {0, 0};  // hand-overs between the processes, per lock type
  } data;
  struct alignas(64) {
    std::atomic<std::uint32_t> arrive{0};  // two-party spin barrier
    std::atomic<int> child_cpu{-1};
  } ctl;
};

struct alignas(64) PthreadBox {
  pthread_mutex_t m;
};
struct alignas(64) BoostBox {
  interprocess_mutex m;
};

struct Objects {
  ipc::Mutex* mutex;
  ipc::CondVar* cv;
  ipc::Event* ev_to_child;
  ipc::Event* ev_to_parent;
  pthread_mutex_t* probust;
  interprocess_mutex* bmutex;
  State* st;
};

void init_pthread_robust(pthread_mutex_t* m) {
  pthread_mutexattr_t a;
  ::pthread_mutexattr_init(&a);
  ::pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
  ::pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
  int rc = ::pthread_mutex_init(m, &a);
  ::pthread_mutexattr_destroy(&a);
  if (rc != 0) die(std::string("pthread_mutex_init: ") + std::strerror(rc));
}

Objects make_objects(ipc::Segment& seg) {
  Objects o{};
  o.mutex = &seg.find_or_create<ipc::Mutex>("mutex", ipc::ObjectType::mutex);
  o.cv = &seg.find_or_create<ipc::CondVar>("condvar", ipc::ObjectType::condvar);
  o.ev_to_child = &seg.find_or_create<ipc::Event>("ev_to_child", ipc::ObjectType::event);
  o.ev_to_parent = &seg.find_or_create<ipc::Event>("ev_to_parent", ipc::ObjectType::event);
  o.probust = &seg.find_or_create<PthreadBox>("pthread_robust", ipc::ObjectType::raw).m;
  init_pthread_robust(o.probust);
  o.bmutex = &seg.find_or_create<BoostBox>("boost_mutex", ipc::ObjectType::raw).m;
  o.st = &seg.find_or_create<State>("state", ipc::ObjectType::raw);
  return o;
}

// ---- child processes -----------------------------------------------------------------------

// Forks a child pinned to CPU 1 that runs fn() and exits; the parent returns its pid.
template <typename Fn>
pid_t spawn(State* st, Fn fn) {
  st->ctl.child_cpu.store(-1);
  return bench::cleanup::fork_watched(kWatchdogSeconds, [&] {
    st->ctl.child_cpu.store(bench::pin_to_cpu(1));
    fn();
  });
}

using bench::cleanup::reap;

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Two-party spin barrier on st->ctl.arrive; `gen` counts the barriers this side passed.
void barrier(State* st, std::uint32_t& gen) {
  ++gen;
  st->ctl.arrive.fetch_add(1, std::memory_order_acq_rel);
  while (st->ctl.arrive.load(std::memory_order_acquire) < 2 * gen) cpu_relax();
}

// ---- 1. uncontended ------------------------------------------------------------------------

double ns_ours(ipc::Mutex& m, long iters) {
  double t0 = bench::now_ns();
  for (long i = 0; i < iters; ++i) {
    if (m.lock() != ipc::LockResult::acquired) [[unlikely]]
      die("ipc::Mutex::lock failed");
    m.unlock();
  }
  return bench::now_ns() - t0;
}

double ns_pthread(pthread_mutex_t* m, long iters) {
  double t0 = bench::now_ns();
  for (long i = 0; i < iters; ++i) {
    if (::pthread_mutex_lock(m) != 0) [[unlikely]]
      die("pthread_mutex_lock failed");
    ::pthread_mutex_unlock(m);
  }
  return bench::now_ns() - t0;
}

double ns_boost(interprocess_mutex& m, long iters) {
  double t0 = bench::now_ns();
  for (long i = 0; i < iters; ++i) {
    m.lock();
    m.unlock();
  }
  return bench::now_ns() - t0;
}

// One repetition: `iters` pairs per side, run in `chunks` interleaved chunks
// (rotating order) so that drift within the repetition hits all sides alike.
// Returns ns per pair for {ours, pthread robust, boost}.
std::array<double, 3> uncontended_rep(const Objects& o, long iters, int chunks, int rep) {
  std::array<double, 3> total{0, 0, 0};
  const long per = iters / chunks;
  for (int c = 0; c < chunks; ++c) {
    for (int k = 0; k < 3; ++k) {
      int side = (rep + c + k) % 3;
      if (side == 0) total[0] += ns_ours(*o.mutex, per);
      if (side == 1) total[1] += ns_pthread(o.probust, per);
      if (side == 2) total[2] += ns_boost(*o.bmutex, per);
    }
  }
  for (double& t : total) t /= static_cast<double>(per * chunks);
  return total;
}

// ---- 2. blocking ping-pong -------------------------------------------------------------------

long futex(std::atomic<std::uint32_t>* w, int op, std::uint32_t val) {
  return ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(w), op, val, nullptr, nullptr, 0);
}

enum PingKind { kEvent = 0, kCondVar = 1, kFutex = 2 };
constexpr const char* kPingName[3] = {
    "ours: ipc::Event x2 (notify / wait)",
    "ours: ipc::Mutex + ipc::CondVar (turn)",
    "floor: raw FUTEX_WAIT/FUTEX_WAKE",
};

struct PingResult {
  double p50_oneway_ns[3];
  double mean_oneway_ns[3];
};

// One repetition: a forked child answers `blocks` blocks of `block` round
// trips of each kind, the kinds interleaved block by block in a rotating
// order that parent and child both derive from (rep, block). The parent times
// every round trip; the first round of each block (a hand-over between kinds)
// and the first `warmup_blocks` blocks are not counted.
PingResult pingpong_rep(const Objects& o, int block, int blocks, int warmup_blocks, int rep) {
  State* st = o.st;
  st->to_child.v.store(0);
  st->to_parent.v.store(0);
  st->cv.turn = 0;
  // Sequence number the child starts from, read before anyone can notify.
  const std::uint32_t ev_child_start = o.ev_to_child->value();
  auto kind_of = [rep](int b, int k) { return static_cast<PingKind>((rep + b + k) % 3); };

  pid_t pid = spawn(st, [&] {
    std::uint32_t ev_seen = ev_child_start;
    std::uint32_t fx_seen = 0;
    for (int b = 0; b < warmup_blocks + blocks; ++b) {
      for (int k = 0; k < 3; ++k) {
        switch (kind_of(b, k)) {
          case kEvent:
            for (int r = 0; r < block; ++r) {
              o.ev_to_child->wait(ev_seen);
              ev_seen = o.ev_to_child->value();
              o.ev_to_parent->notify();
            }
            break;
          case kCondVar:
            if (o.mutex->lock() != ipc::LockResult::acquired) die("mutex lock failed");
            for (int r = 0; r < block; ++r) {
              while (st->cv.turn != 1)
                if (!o.cv->wait(*o.mutex).owns_lock()) die("condvar wait lost the mutex");
              st->cv.turn = 0;
              o.cv->notify_one();
            }
            o.mutex->unlock();
            break;
          case kFutex:
            for (int r = 0; r < block; ++r) {
              while (st->to_child.v.load(std::memory_order_acquire) == fx_seen)
                futex(&st->to_child.v, FUTEX_WAIT, fx_seen);
              fx_seen = st->to_child.v.load(std::memory_order_acquire);
              st->to_parent.v.fetch_add(1, std::memory_order_release);
              futex(&st->to_parent.v, FUTEX_WAKE, 1);
            }
            break;
        }
      }
    }
  });

  std::vector<double> rt[3];
  for (auto& v : rt) v.reserve(static_cast<std::size_t>(block * blocks));
  for (int b = 0; b < warmup_blocks + blocks; ++b) {
    for (int k = 0; k < 3; ++k) {
      PingKind kind = kind_of(b, k);
      for (int r = 0; r < block; ++r) {
        double t0 = bench::now_ns();
        switch (kind) {
          case kEvent: {
            std::uint32_t seen = o.ev_to_parent->value();
            o.ev_to_child->notify();
            o.ev_to_parent->wait(seen);
            break;
          }
          case kCondVar: {
            if (o.mutex->lock() != ipc::LockResult::acquired) die("mutex lock failed");
            st->cv.turn = 1;
            o.cv->notify_one();
            while (st->cv.turn != 0)
              if (!o.cv->wait(*o.mutex).owns_lock()) die("condvar wait lost the mutex");
            o.mutex->unlock();
            break;
          }
          case kFutex: {
            std::uint32_t seen = st->to_parent.v.load(std::memory_order_acquire);
            st->to_child.v.fetch_add(1, std::memory_order_release);
            futex(&st->to_child.v, FUTEX_WAKE, 1);
            while (st->to_parent.v.load(std::memory_order_acquire) == seen) futex(&st->to_parent.v, FUTEX_WAIT, seen);
            break;
          }
        }
        double t1 = bench::now_ns();
        if (b >= warmup_blocks && r > 0) rt[kind].push_back(t1 - t0);
      }
    }
  }
  reap(pid);
  PingResult out{};
  for (int k = 0; k < 3; ++k) {
    double sum = 0;
    for (double x : rt[k]) sum += x;
    out.p50_oneway_ns[k] = bench::percentile(rt[k], 0.5) / 2;
    out.mean_oneway_ns[k] = sum / static_cast<double>(rt[k].size()) / 2;
  }
  return out;
}

// ---- 3. contended, two processes -----------------------------------------------------------

enum LockKind { kOurs = 0, kPthread = 1 };

struct ContendedResult {
  double ns_per_op[2];
  double switch_rate[2];  // hand-overs between the processes per lock acquisition
};

template <typename Lock, typename Unlock>
void contended_loop(State* st, long n, std::uint32_t me, int kind, Lock lock, Unlock unlock) {
  for (long i = 0; i < n; ++i) {
    lock();
    ++st->data.counter;
    if (st->data.last != me) {
      st->data.last = me;
      ++st->data.switches[kind];
    }
    unlock();
  }
}

// One repetition: a forked child and the parent each run `chunks` chunks of
// `n` lock/++/unlock per lock kind, kinds alternating chunk by chunk, a spin
// barrier before and after every chunk. A chunk's time runs from the barrier
// that starts it to the barrier that ends it (i.e. until both are done).
ContendedResult contended_rep(const Objects& o, long n, int chunks, int rep) {
  State* st = o.st;
  ipc::Mutex* m = o.mutex;
  pthread_mutex_t* pm = o.probust;
  st->data.counter = 0;
  st->data.last = 0;
  st->data.switches[0] = st->data.switches[1] = 0;
  st->ctl.arrive.store(0);
  auto kind_of = [rep](int c) { return (rep + c) % 2; };
  auto run_chunk = [&](int kind, std::uint32_t me) {
    if (kind == kOurs)
      contended_loop(
          st, n, me, kind,
          [m] {
            if (m->lock() != ipc::LockResult::acquired) [[unlikely]]
              die("ipc::Mutex::lock failed");
          },
          [m] { m->unlock(); });
    else
      contended_loop(
          st, n, me, kind,
          [pm] {
            if (::pthread_mutex_lock(pm) != 0) [[unlikely]]
              die("pthread_mutex_lock failed");
          },
          [pm] { ::pthread_mutex_unlock(pm); });
  };

  pid_t pid = spawn(st, [&] {
    std::uint32_t gen = 0;
    barrier(st, gen);
    for (int c = 0; c < 2 * chunks; ++c) {
      run_chunk(kind_of(c), 2);
      barrier(st, gen);
    }
  });
  std::uint32_t gen = 0;
  double total[2] = {0, 0};
  barrier(st, gen);
  double t0 = bench::now_ns();
  for (int c = 0; c < 2 * chunks; ++c) {
    run_chunk(kind_of(c), 1);
    barrier(st, gen);
    double t1 = bench::now_ns();
    total[kind_of(c)] += t1 - t0;
    t0 = t1;
  }
  reap(pid);
  const std::uint64_t expect = static_cast<std::uint64_t>(2 * n) * 2 * static_cast<std::uint64_t>(chunks);
  if (st->data.counter != expect)
    die("contended counter is " + std::to_string(st->data.counter) + ", expected " + std::to_string(expect) +
        ": a lock did not exclude");
  ContendedResult out{};
  const double ops = static_cast<double>(2 * n) * chunks;
  for (int k = 0; k < 2; ++k) {
    out.ns_per_op[k] = total[k] / ops;
    out.switch_rate[k] = static_cast<double>(st->data.switches[k]) / ops;
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

int run(const bench::Args& args, const Objects& o) {
  const int reps = args.reps;
  const int cpu0 = bench::pin_to_cpu(0);
  std::vector<Line> lines;

  // 1. Uncontended.
  {
    const long iters = args.quick ? 2'000'000 : 10'000'000;
    const int chunks = 10;
    uncontended_rep(o, iters / 10, chunks, 0);  // warm-up (page faults, caches, frequency)
    std::vector<double> v[3];
    for (int r = 0; r < reps; ++r) {
      std::array<double, 3> x = uncontended_rep(o, iters, chunks, r);
      for (int k = 0; k < 3; ++k) v[k].push_back(x[k]);
    }
    const char* names[3] = {"ours: ipc::Mutex (in ipc::Segment)", "baseline: pthread robust pshared (same segment)",
                            "baseline: boost interprocess_mutex (same segment)"};
    std::printf(
        "sync_bench 1: uncontended lock+unlock, 1 thread pinned to CPU %d,\n"
        "  %ld pairs per side per repetition in %d interleaved chunks, median of %d\n",
        cpu0, iters, chunks, reps);
    for (int k = 0; k < 3; ++k)
      std::printf("  %-52s %8.2f ns/pair  (min %.2f, max %.2f)\n", names[k], bench::median(v[k]), vmin(v[k]),
                  vmax(v[k]));
    double ours = bench::median(v[0]), pr = bench::median(v[1]), bi = bench::median(v[2]);
    lines.push_back({Line::result, "lock_uncontended", ours, 0, "ns"});
    lines.push_back({Line::result, "lock_uncontended_pthread_robust", pr, 0, "ns"});
    lines.push_back({Line::result, "lock_uncontended_boost_interprocess", bi, 0, "ns"});
    lines.push_back({Line::ratio, "lock_uncontended_vs_pthread_robust", ours, pr, nullptr});
    lines.push_back({Line::ratio, "lock_uncontended_vs_boost_interprocess", ours, bi, nullptr});
  }

  // 2. Blocking ping-pong.
  {
    const int block = 250;
    const int blocks = args.quick ? 12 : 40;  // per kind and repetition
    const int warmup_blocks = 1;
    std::vector<double> p50[3], mean[3];
    for (int r = 0; r < reps; ++r) {
      PingResult x = pingpong_rep(o, block, blocks, warmup_blocks, r);
      for (int k = 0; k < 3; ++k) {
        p50[k].push_back(x.p50_oneway_ns[k]);
        mean[k].push_back(x.mean_oneway_ns[k]);
      }
    }
    std::printf(
        "\nsync_bench 2: blocking ping-pong, parent pinned to CPU %d, child pinned to CPU %d,\n"
        "  %d round trips per kind per repetition, kinds interleaved in blocks of %d,\n"
        "  one-way = round trip / 2, p50 of a repetition, median of %d\n",
        cpu0, o.st->ctl.child_cpu.load(), block * blocks, block, reps);
    std::printf("  %-52s %11s %11s %11s %11s\n", "", "p50 1-way", "min rep", "max rep", "mean 1-way");
    for (int k = 0; k < 3; ++k)
      std::printf("  %-52s %8.2f us %8.2f us %8.2f us %8.2f us\n", kPingName[k], bench::median(p50[k]) / 1e3,
                  vmin(p50[k]) / 1e3, vmax(p50[k]) / 1e3, bench::median(mean[k]) / 1e3);
    double ev = bench::median(p50[kEvent]) / 1e3, cv = bench::median(p50[kCondVar]) / 1e3,
           fx = bench::median(p50[kFutex]) / 1e3;
    lines.push_back({Line::result, "pingpong_blocking_event_p50", ev, 0, "us"});
    lines.push_back({Line::result, "pingpong_blocking_condvar_p50", cv, 0, "us"});
    lines.push_back({Line::result, "pingpong_blocking_futex_p50", fx, 0, "us"});
    lines.push_back({Line::ratio, "pingpong_blocking_vs_futex", ev, fx, nullptr});
    lines.push_back({Line::ratio, "pingpong_condvar_vs_futex", cv, fx, nullptr});
  }

  // 3. Contended, two processes.
  {
    const long n = 200'000;                  // ops per process per chunk
    const int chunks = args.quick ? 3 : 10;  // per lock kind and repetition
    std::vector<double> v[2], sw[2];
    for (int r = 0; r < reps; ++r) {
      ContendedResult c = contended_rep(o, n, chunks, r);
      for (int k = 0; k < 2; ++k) {
        v[k].push_back(c.ns_per_op[k]);
        sw[k].push_back(c.switch_rate[k]);
      }
    }
    std::printf(
        "\nsync_bench 3: contended lock/++/unlock, 2 processes pinned to CPU %d and CPU %d,\n"
        "  %ld ops per process per kind per repetition, kinds interleaved in chunks of %ld,\n"
        "  wall time until both are done / total ops, median of %d\n",
        cpu0, o.st->ctl.child_cpu.load(), n * chunks, n, reps);
    std::printf("  %-52s %11s %11s %11s %14s\n", "", "per op", "min rep", "max rep", "hand-overs/op");
    const char* names[2] = {"ours: ipc::Mutex", "baseline: pthread robust pshared"};
    for (int k = 0; k < 2; ++k)
      std::printf("  %-52s %8.2f ns %8.2f ns %8.2f ns %14.4f\n", names[k], bench::median(v[k]), vmin(v[k]), vmax(v[k]),
                  bench::median(sw[k]));
    double ours = bench::median(v[kOurs]), pr = bench::median(v[kPthread]);
    lines.push_back({Line::result, "lock_contended_2proc", ours, 0, "ns"});
    lines.push_back({Line::result, "lock_contended_2proc_pthread_robust", pr, 0, "ns"});
    lines.push_back({Line::ratio, "lock_contended_2proc_vs_pthread_robust", ours, pr, nullptr});
  }

  std::printf("\n");
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

  const std::string domain = "bench" + std::to_string(::getpid());
  int rc = 1;
  try {
    bench::cleanup::add_path("/dev/shm" + ipc::Segment::shm_name(kSegment, domain));
    ipc::Segment::unlink(kSegment, domain);
    ipc::SegmentOptions so;
    so.size = 1u << 20;
    so.domain = domain;
    ipc::Segment seg = ipc::Segment::create(kSegment, so);
    Objects o = make_objects(seg);
    rc = run(args, o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sync_bench: %s\n", e.what());
    rc = 1;
  }
  ipc::Segment::unlink(kSegment, domain);
  bench::cleanup::forget_paths();
  std::fflush(stdout);
  return rc;
}
