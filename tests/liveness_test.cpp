// Liveness across PID namespaces and pid reuse (ipc/detail/process.hpp,
// "Liveness"): a live holder's lock is never taken from it, whichever
// namespaces holder and waiter are in; a dead one's is recovered even when
// its pid was reused at once. Real processes, real namespaces (unshare
// CLONE_NEWPID needs root: the tests say so and skip otherwise), real SIGKILL.
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <thread>

#include "ipc/detail/process.hpp"
#include "ipc/mutex.hpp"
#include "ipc/pool.hpp"
#include "ipc/segment.hpp"
#include "ipc/semaphore.hpp"
#include "support.hpp"

using namespace ipc;
using namespace ipc::test;
using namespace std::chrono_literals;

namespace {

struct Board {
  std::atomic<int> locked;         // the holder has the lock
  std::atomic<int> release;        // the holder may unlock now
  std::atomic<int> result;         // a waiter's LockResult + 1 (0: not yet)
  std::atomic<std::uint32_t> pid;  // a process's pid in its own namespace
  std::atomic<std::uint64_t> token;
};

// Can this process create PID namespaces? (root, or a user namespace.)
bool namespaces_permitted() {
  pid_t p = ::fork();
  if (p == 0) ::_exit(::unshare(CLONE_NEWPID) == 0 ? 0 : 1);
  int status = 0;
  ::waitpid(p, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

// Runs fn in a process of a new PID namespace (it is pid 1 there), through
// an intermediate child that unshares and forks; the intermediate's exit
// code is fn's. Returns the intermediate's pid (reap it with wait_child).
pid_t spawn_in_new_pid_namespace(Children& children, const std::function<int()>& fn) {
  return children.spawn([fn] {
    if (::unshare(CLONE_NEWPID) != 0) return 90;
    pid_t inner = ::fork();
    if (inner < 0) return 91;
    if (inner == 0) {
      // Killing the intermediate (Children does, on timeout or early exit)
      // must not leave this pid 1 running: it would count as a live process
      // of another namespace for every libipc process of the machine.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      ::_exit(fn());
    }
    int status = 0;
    if (::waitpid(inner, &status, 0) != inner) return 92;
    if (WIFSIGNALED(status)) return 93;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 94;
  });
}

#define REQUIRE_NAMESPACES()                                                                           \
  do {                                                                                                 \
    if (!namespaces_permitted()) {                                                                     \
      MESSAGE("skipped: this process may not create PID namespaces (needs root or a user namespace)"); \
      return;                                                                                          \
    }                                                                                                  \
  } while (0)

}  // namespace

TEST_CASE("a live holder in another PID namespace keeps its mutex; a waiter times out, then gets it on release") {
  REQUIRE_NAMESPACES();
  REQUIRE(detail::liveness_file_available());
  TestDomain d;
  Segment seg = Segment::create("ns", opts(d));
  auto& m = seg.find_or_create<Mutex>("m", ObjectType::mutex);
  auto& b = make_board<Board>(seg);
  Children children;
  const pid_t holder = spawn_in_new_pid_namespace(children, [&] {
    // Through the inherited mapping: pid 1 here means another process to the waiter.
    if (detail::self_pid() != 1) return 10;
    if (!owns(m.lock())) return 11;
    b.locked.store(1);
    if (!eventually([&] { return b.release.load() != 0; }, 30s)) return 12;
    m.unlock();
    return 0;
  });
  REQUIRE(eventually([&] { return b.locked.load() != 0; }));
  // Several liveness slices (Mutex::kLivenessSlice, 100 ms): before the
  // liveness file, the backstop took the lock from pid 1 here after one.
  const auto t0 = std::chrono::steady_clock::now();
  const LockResult r = m.try_lock_for(800ms);
  MESSAGE("waiter in the parent namespace: " << str(r) << " after " << ms_since(t0) << " ms");
  CHECK(r == LockResult::timed_out);
  if (owns(r)) m.unlock();
  b.release.store(1);
  CHECK(m.try_lock_for(10s) == LockResult::acquired);
  m.unlock();
  CHECK(child_ok(children.wait(holder)));
}

TEST_CASE("a waiter in another PID namespace does not take a live holder's mutex") {
  REQUIRE_NAMESPACES();
  TestDomain d;
  Segment seg = Segment::create("ns", opts(d));
  auto& m = seg.find_or_create<Mutex>("m", ObjectType::mutex);
  auto& b = make_board<Board>(seg);
  REQUIRE(owns(m.lock()));  // held by this (live) process of the parent namespace
  Children children;
  const pid_t waiter = spawn_in_new_pid_namespace(children, [&] {
    const LockResult first = m.try_lock_for(800ms);
    b.result.store(static_cast<int>(first) + 1);
    if (owns(first)) {
      m.unlock();
      return 20;  // two owners at once
    }
    b.locked.store(1);  // ready for the second attempt
    const LockResult second = m.try_lock_for(20s);
    if (!owns(second)) return 21;
    m.unlock();
    return second == LockResult::acquired ? 0 : 22;
  });
  REQUIRE(eventually([&] { return b.locked.load() != 0; }, 20s));
  CHECK(b.result.load() == static_cast<int>(LockResult::timed_out) + 1);
  m.unlock();
  CHECK(child_ok(children.wait(waiter)));
}

TEST_CASE("a holder SIGKILLed in another PID namespace: the waiter gets owner_died promptly") {
  REQUIRE_NAMESPACES();
  TestDomain d;
  Segment seg = Segment::create("ns", opts(d));
  auto& m = seg.find_or_create<Mutex>("m", ObjectType::mutex);
  auto& b = make_board<Board>(seg);
  Children children;
  const pid_t holder = spawn_in_new_pid_namespace(children, [&] {
    if (!owns(m.lock())) return 30;
    b.locked.store(1);
    for (;;) ::pause();
  });
  REQUIRE(eventually([&] { return b.locked.load() != 0; }));
  children.kill(holder);  // the intermediate: its pid-1 child dies with the namespace
  const auto t0 = std::chrono::steady_clock::now();
  const LockResult r = m.try_lock_for(20s);
  MESSAGE("owner_died after " << ms_since(t0) << " ms");
  CHECK(r == LockResult::owner_died);
  if (owns(r)) {
    m.mark_consistent();
    m.unlock();
  }
}

TEST_CASE("a segment opened by name from another PID namespace is refused with namespace_mismatch, saying what to do") {
  REQUIRE_NAMESPACES();
  REQUIRE(detail::liveness_file_available());
  TestDomain d;
  Segment seg = Segment::create("ns", opts(d));
  seg.find_or_create<Mutex>("m", ObjectType::mutex);
  const std::string domain = d.name();
  Children children;
  const pid_t opener = spawn_in_new_pid_namespace(children, [domain] {
    // Pool client slots, reader slots and mutex owner tids are still keyed
    // by pid/tid, which two namespaces reuse: refused until they are not.
    try {
      Segment mine = Segment::open("ns", {.domain = domain});
      return 40;
    } catch (const Error& e) {
      std::fprintf(stderr, "open from another namespace: %s\n", e.what());
      const std::string what = e.what();
      if (e.code() != ErrorCode::namespace_mismatch) return 41;
      return what.find("--pid=host") != std::string::npos && what.find("shareProcessNamespace") != std::string::npos
                 ? 0
                 : 42;
    }
  });
  CHECK(child_ok(children.wait(opener)));
}

TEST_CASE("a bare pid while another PID namespace lives: a namesake there keeps it alive, no namesake means dead") {
  REQUIRE_NAMESPACES();
  REQUIRE(detail::liveness_file_available());
  TestDomain d;
  Segment seg = Segment::create("ns", opts(d));
  auto& b = make_board<Board>(seg);
  // Two pids that exist nowhere in our namespace.
  pid_t gone[2];
  for (pid_t& g : gone) {
    g = ::fork();
    if (g == 0) ::_exit(0);
    ::waitpid(g, nullptr, 0);
  }
  CHECK(detail::process_liveness(gone[0], 0) == detail::Liveness::dead);
  Children children;
  const pid_t other = spawn_in_new_pid_namespace(children, [&] {
    // pid 1 of the new namespace forks a libipc process that gets the
    // number gone[0] there (ns_last_pid is ours to set in our namespace).
    {
      std::ofstream last("/proc/sys/kernel/ns_last_pid");
      last << gone[0] - 1;
    }
    pid_t namesake = ::fork();
    if (namesake == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      b.pid.store(detail::self_pid());  // registers: pid lock on gone[0]
      b.locked.store(1);
      for (;;) ::pause();
    }
    const bool ok = eventually([&] { return b.release.load() != 0; }, 30s);
    ::kill(namesake, SIGKILL);
    ::waitpid(namesake, nullptr, 0);
    return ok ? 0 : 50;
  });
  REQUIRE(eventually([&] { return b.locked.load() != 0; }));
  REQUIRE(b.pid.load() == static_cast<std::uint32_t>(gone[0]));
  CHECK(detail::foreign_namespace_alive());
  // kill(gone[0], 0) says ESRCH here, but the number is a live process there.
  CHECK(detail::process_liveness(gone[0], 0) == detail::Liveness::unknown);
  // No libipc process of any namespace has gone[1]: dead, foreign namespace or not.
  CHECK(detail::process_liveness(gone[1], 0) == detail::Liveness::dead);
  b.release.store(1);
  CHECK(child_ok(children.wait(other)));
  CHECK(eventually([] { return !detail::foreign_namespace_alive(); }));
  CHECK(detail::process_liveness(gone[0], 0) == detail::Liveness::dead);
}

TEST_CASE("pid reused at once: a dead permit holder's permit comes back although its pid runs again") {
  REQUIRE_NAMESPACES();
  TestDomain d;
  Segment seg = Segment::create("ns", opts(d));
  auto& sem = seg.find_or_create<Semaphore>("s", ObjectType::semaphore, 1u);
  auto& b = make_board<Board>(seg);
  Children children;
  // Inside a fresh PID namespace we own ns_last_pid: the holder gets pid 2,
  // dies, and the next fork gets pid 2 again, within the same clock tick
  // (the start-time token of the fallback could not tell them apart).
  const pid_t runner = spawn_in_new_pid_namespace(children, [&] {
    pid_t holder = ::fork();
    if (holder == 0) {
      if (sem.acquire() != SemaphoreResult::acquired) ::_exit(60);
      b.pid.store(detail::self_pid());
      b.token.store(detail::self_token());
      for (;;) ::pause();
    }
    if (!eventually([&] { return b.pid.load() != 0; })) return 61;
    ::kill(holder, SIGKILL);
    ::waitpid(holder, nullptr, 0);
    {
      std::ofstream last("/proc/sys/kernel/ns_last_pid");
      last << holder - 1;
    }
    pid_t reuser = ::fork();
    if (reuser == 0) {
      for (;;) ::pause();
    }
    const bool reused = reuser == holder;
    const detail::Liveness verdict = detail::process_liveness(static_cast<pid_t>(b.pid.load()), b.token.load());
    // The permit must come back (the waiter below recovers it).
    const SemaphoreResult got = sem.acquire_for(10s);
    ::kill(reuser, SIGKILL);
    ::waitpid(reuser, nullptr, 0);
    if (!reused) return 62;
    if (verdict != detail::Liveness::dead) return 63;
    return got == SemaphoreResult::acquired ? 0 : 64;
  });
  const ChildExit e = children.wait(runner);
  INFO("runner exit code " << e.code << " (62: pid not reused, 63: reused pid judged alive, 64: permit not back)");
  CHECK(child_ok(e));
}

TEST_CASE("reclaim(pid) of a live process is refused and takes nothing; once it is dead it takes everything") {
  TestDomain d;
  Segment seg = Segment::create("rc", opts(d, 4u << 20));
  PoolConfig pc;
  pc.class_sizes = {256};
  pc.buffers_per_class = 8;
  pc.cache_per_class = 0;
  BufferPool pool = BufferPool::create(seg, "pool", pc);
  auto& b = make_board<Board>(seg);
  const std::string domain = d.name();
  Children children;
  const pid_t holder = children.spawn([&] {
    Segment mine = Segment::open("rc", {.domain = domain});
    BufferPool p = BufferPool::open(mine, "pool");
    std::vector<Buffer> held;
    for (int i = 0; i < 3; ++i) {
      Allocation a = p.allocate(100);
      if (!a.buffer) return 70;
      held.push_back(std::move(a.buffer));
    }
    b.locked.store(1);
    for (;;) ::pause();
  });
  REQUIRE(eventually([&] { return b.locked.load() != 0; }));
  const auto pid = static_cast<std::uint32_t>(holder);
  CHECK(pool.reclaim(pid) == 0);  // alive: refused, logged
  CHECK(pool.stats().classes[0].in_use == 3);
  CHECK(pool.reclaim(detail::self_pid()) == 0);  // this process: refused
  children.kill(holder);
  CHECK(pool.reclaim(pid) == 3);
  CHECK(pool.stats().classes[0].in_use == 0);
}
