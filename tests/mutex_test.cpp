// Mutex: mutual exclusion across processes and threads, owner death by real
// SIGKILL (kernel robust-list path, blocked waiters), not_recoverable, timed
// locking, error checking (relock, foreign unlock), introspection, validity.
//
// Labelled "threads": the in-process threaded tests also run under TSan. The
// fork-based tests fork only while the parent is single-threaded.
#include <doctest/doctest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "ipc/mutex.hpp"
#include "ipc/segment.hpp"
#include "support.hpp"

using namespace ipc;
using namespace std::chrono_literals;
using ipc::test::now_ns;
using ipc::test::opts;
using ipc::test::TestDomain;

using ipc::test::check_exit;
using ipc::test::Children;
using ipc::test::eventually;
using ipc::test::kPromptMs;
using ipc::test::make_board;
using ipc::test::ms_since;
using ipc::test::spin;
using ipc::test::str;

using Clock = std::chrono::steady_clock;

#if defined(__SANITIZE_THREAD__)
#define IPC_TEST_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define IPC_TEST_TSAN 1
#endif
#endif
#ifndef IPC_TEST_TSAN
#define IPC_TEST_TSAN 0
#endif

namespace {

Mutex& make_mutex(Segment& seg, const char* name = "lock") {
  return seg.find_or_create<Mutex>(name, ObjectType::mutex);
}

// Non-atomic increment under the lock: read, a little work, write. Returns
// false if a lock call did not return `acquired`.
bool locked_increments(Mutex& m, std::uint64_t& counter, int n) {
  for (int i = 0; i < n; ++i) {
    if (m.lock() != LockResult::acquired) return false;
    std::uint64_t v = counter;
    spin(20);
    if (i % 64 == 0) std::this_thread::yield();  // invite another thread into a broken section
    counter = v + 1;
    m.unlock();
  }
  return true;
}

// A child that holds `m` until `release` is set (or 20 s pass), then unlocks.
struct HoldBoard {
  std::atomic<int> holding;
  std::atomic<int> release;
  std::atomic<std::uint32_t> tid;
};
int hold_until_released(Mutex& m, HoldBoard& b) {
  if (m.lock() != LockResult::acquired) return 1;
  b.tid.store(static_cast<std::uint32_t>(::gettid()));
  b.holding.store(1);
  if (!eventually([&] { return b.release.load() != 0; }, 20s)) return 2;
  m.unlock();
  return 0;
}
// A child that locks `m` and then waits to be SIGKILLed (returns after 30 s).
int hold_until_killed(Mutex& m, std::atomic<int>& holding) {
  if (m.lock() != LockResult::acquired) return 1;
  holding.store(1);
  std::this_thread::sleep_for(30s);
  return 2;
}

// Waits for a child to report that it holds the lock; on timeout kills it
// and fails the test (so no child outlives a failed test for long).
void await_holder(pid_t child, const std::atomic<int>& holding) {
  if (!eventually([&] { return holding.load() != 0; })) {
    test::kill_child(child);
    FAIL("child " << child << " never reported holding the lock");
  }
}

}  // namespace

// ---------------------------------------------------------------------------
// 1, 2: mutual exclusion

TEST_CASE("mutual exclusion: 4 processes x 2 threads increment a non-atomic counter") {
  TestDomain d;
  Segment seg = Segment::create("excl", opts(d));
  Mutex& m = make_mutex(seg);
  struct Board {
    std::uint64_t counter;  // guarded by m
    std::atomic<int> ready, go, errors;
  };
  Board& b = make_board<Board>(seg);
  constexpr int kProcs = 4, kThreads = 2, kIncrements = 10000;

  std::vector<pid_t> kids;
  for (int p = 0; p < kProcs; ++p) {
    kids.push_back(test::fork_child([&] {
      b.ready.fetch_add(1);
      if (!eventually([&] { return b.go.load() != 0; })) return 1;
      std::vector<std::thread> threads;
      for (int t = 0; t < kThreads; ++t)
        threads.emplace_back([&] {
          if (!locked_increments(m, b.counter, kIncrements)) b.errors.fetch_add(1);
        });
      for (auto& t : threads) t.join();
      return b.errors.load() == 0 ? 0 : 2;
    }));
  }
  CHECK(eventually([&] { return b.ready.load() == kProcs; }));
  b.go.store(1);
  for (pid_t k : kids) CHECK(test::child_ok(test::wait_child(k, 60s)));
  CHECK(b.errors.load() == 0);
  CHECK(m.lock() == LockResult::acquired);
  CHECK(b.counter == std::uint64_t{kProcs} * kThreads * kIncrements);
  LockInfo info = m.info();
  CHECK(info.acquisitions == std::uint64_t{kProcs} * kThreads * kIncrements + 1);
  CHECK(info.waiters == 0);
  CHECK(info.owner_pid == static_cast<std::uint32_t>(::getpid()));
  m.unlock();
}

TEST_CASE("mutual exclusion: 4 threads of one process (TSan)") {
  TestDomain d;
  Segment seg = Segment::create("threads", opts(d));
  Mutex& m = make_mutex(seg);
  auto& counter = make_board<std::uint64_t>(seg, "counter");
  constexpr int kThreads = 4, kIncrements = 10000;
  std::atomic<int> errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&] {
      if (!locked_increments(m, counter, kIncrements)) errors.fetch_add(1);
    });
  for (auto& t : threads) t.join();
  CHECK(errors.load() == 0);
  CHECK(counter == std::uint64_t{kThreads} * kIncrements);
  CHECK(m.info().acquisitions == std::uint64_t{kThreads} * kIncrements);
  CHECK(m.info().waiters == 0);
  CHECK(m.info().owner_pid == 0);
}

// ---------------------------------------------------------------------------
// 3: SIGKILL at random points, repair from a journal

namespace {

struct CrashData {
  // Guarded by the mutex. Invariant when consistent: pending == 0 and every
  // vals[i] holds the same value. An update journals the old value first.
  std::atomic<std::uint64_t> pending;
  std::atomic<std::uint64_t> old_value;
  std::atomic<std::uint64_t> vals[8];
  // Not guarded: child -> parent signals.
  std::atomic<int> started;
  std::atomic<int> holding;
  std::atomic<int> child_error;
  std::atomic<std::uint64_t> commits;
};

// Loops lock -> journal -> update in steps -> clear journal -> unlock until
// killed. With `hold`, stops in the middle of an update, holding the lock.
int crash_child(Mutex& m, CrashData& s, bool hold) {
  s.started.store(1);
  for (;;) {
    LockResult r = m.lock();
    if (r != LockResult::acquired) {
      s.child_error.store(10 + static_cast<int>(r));
      return 1;
    }
    std::uint64_t v = s.vals[0].load();
    s.old_value.store(v);
    s.pending.store(1);
    for (int i = 0; i < 8; ++i) {
      s.vals[i].store(v + 1);
      spin(100);
      if (hold && i == 3) {
        s.holding.store(1);
        std::this_thread::sleep_for(30s);
        s.child_error.store(99);
        return 2;
      }
    }
    s.pending.store(0);
    m.unlock();
    s.commits.fetch_add(1, std::memory_order_relaxed);
  }
}

// Checks the invariant (returns false and says why if broken).
bool consistent(const CrashData& s, std::uint64_t& value) {
  value = s.vals[0].load();
  if (s.pending.load() != 0) return false;
  for (const auto& v : s.vals)
    if (v.load() != value) return false;
  return true;
}

}  // namespace

TEST_CASE("owner SIGKILLed at random points: the next locker repairs from the journal, never hangs") {
  TestDomain d;
  Segment seg = Segment::create("crash", opts(d));
  Mutex& m = make_mutex(seg);
  CrashData& s = make_board<CrashData>(seg, "data");
  const unsigned seed = test::seed();
  INFO("seed " << seed);
  std::mt19937 rng(seed);

  const int kIterations = test::iterations(150);
  int done = 0, owner_died = 0, acquired = 0, holds = 0, repaired = 0;
  std::uint64_t last = 0;
  for (int it = 0; it < kIterations; ++it) {
    INFO("iteration " << it);
    const bool hold = it % 5 == 0;  // known to hold the lock when killed
    const bool wait_started = rng() % 4 != 0;
    const auto delay = std::chrono::microseconds(rng() % 2001);
    s.started.store(0);
    s.holding.store(0);

    pid_t child = test::fork_child([&] { return crash_child(m, s, hold); });
    if (hold) {
      ++holds;
      if (!eventually([&] { return s.holding.load() != 0; })) {
        test::kill_child(child);
        FAIL("child never reported holding the lock");
      }
    } else {
      if (wait_started && !eventually([&] { return s.started.load() != 0; })) {
        test::kill_child(child);
        FAIL("child never started");
      }
      std::this_thread::sleep_for(delay);
    }
    test::kill_child(child);

    auto t0 = Clock::now();
    LockResult r = m.try_lock_for(5s);
    if (!owns(r)) {
      FAIL("lock after the kill returned " << to_string(r) << " after " << ms_since(t0) << " ms");
    }
    if (r == LockResult::owner_died) {
      ++owner_died;
      CHECK(m.info().owner_died_unrepaired);
      if (s.pending.load() != 0) {  // roll back the half-done update
        ++repaired;
        std::uint64_t old = s.old_value.load();
        for (auto& v : s.vals) v.store(old);
        s.pending.store(0);
      }
      CHECK(m.mark_consistent());
      CHECK_FALSE(m.info().owner_died_unrepaired);
    } else {
      ++acquired;
      CHECK(s.pending.load() == 0);  // died outside the critical section: journal clean
    }
    if (hold) CHECK(r == LockResult::owner_died);
    std::uint64_t value = 0;
    bool ok = consistent(s, value);
    CHECK_MESSAGE(ok, "data invariant broken: pending=" << s.pending.load() << " vals[0]=" << value);
    CHECK(value >= last);  // committed updates are never lost
    last = value;
    CHECK(s.child_error.load() == 0);
    m.unlock();
    ++done;
    if (!ok || s.child_error.load() != 0) break;
  }
  MESSAGE("iterations " << done << ": owner_died " << owner_died << " (of which " << holds << " deliberate holds, "
                        << repaired << " rollbacks), acquired " << acquired << ", commits " << s.commits.load()
                        << ", final value " << last);
  CHECK(done == kIterations);
  CHECK(owner_died >= holds);
  CHECK(repaired >= holds);  // a deliberate hold always leaves a pending journal
  CHECK(owner_died > 0);
  // The mutex is healthy afterwards.
  CHECK(m.try_lock() == LockResult::acquired);
  m.unlock();
  CHECK_FALSE(m.info().not_recoverable);
}

// ---------------------------------------------------------------------------
// 4: owner killed while others are blocked in lock()

TEST_CASE("owner SIGKILLed while two processes are blocked in lock(): one gets owner_died promptly") {
  TestDomain d;
  Segment seg = Segment::create("blocked", opts(d));
  Mutex& m = make_mutex(seg);
  struct Board {
    std::atomic<int> holding;
    std::atomic<int> results[2];  // LockResult + 1, 0 = not yet
    std::atomic<std::int64_t> done_ns[2];
    std::uint64_t data;  // guarded
  };
  Board& b = make_board<Board>(seg);

  pid_t owner = test::fork_child([&] { return hold_until_killed(m, b.holding); });
  await_holder(owner, b.holding);

  pid_t waiters[2];
  for (int w = 0; w < 2; ++w) {
    waiters[w] = test::fork_child([&, w] {
      LockResult r = m.lock();
      b.done_ns[w].store(now_ns());
      b.results[w].store(static_cast<int>(r) + 1);
      if (r == LockResult::owner_died) {
        b.data = 42;  // "repair"
        if (!m.mark_consistent()) return 3;
      } else if (r != LockResult::acquired) {
        return 2;
      }
      m.unlock();
      return 0;
    });
  }
  CHECK_MESSAGE(eventually([&] { return m.info().waiters == 2; }), "waiters seen: " << m.info().waiters);
  std::this_thread::sleep_for(20ms);  // let both reach the futex wait
  CHECK(b.results[0].load() == 0);
  CHECK(b.results[1].load() == 0);
  CHECK(m.info().waited_ns > 0);

  std::int64_t killed_ns = now_ns();
  test::kill_child(owner);
  for (pid_t w : waiters) CHECK(test::child_ok(test::wait_child(w, 10s)));

  int died = 0, acquired = 0;
  for (int w = 0; w < 2; ++w) {
    int r = b.results[w].load() - 1;
    if (r == static_cast<int>(LockResult::owner_died)) ++died;
    if (r == static_cast<int>(LockResult::acquired)) ++acquired;
    double ms = static_cast<double>(b.done_ns[w].load() - killed_ns) / 1e6;
    INFO("waiter " << w << " got " << r);
    CHECK_PROMPT(ms, kPromptMs);
  }
  CHECK(died == 1);
  CHECK(acquired == 1);
  CHECK(m.lock() == LockResult::acquired);
  CHECK(b.data == 42);
  CHECK(m.info().waiters == 0);
  m.unlock();
}

// ---------------------------------------------------------------------------
// 5: unlock after owner_died without mark_consistent

TEST_CASE("unlock after owner_died without mark_consistent makes the mutex not_recoverable everywhere") {
  TestDomain d;
  Segment seg = Segment::create("norec", opts(d));
  Mutex& m = make_mutex(seg);
  struct Board {
    std::atomic<int> holding;
    std::atomic<int> waiter_result;  // LockResult + 1
  };
  Board& b = make_board<Board>(seg);

  pid_t owner = test::fork_child([&] { return hold_until_killed(m, b.holding); });
  await_holder(owner, b.holding);
  test::kill_child(owner);

  REQUIRE(m.lock() == LockResult::owner_died);
  CHECK(m.info().owner_died_unrepaired);
  CHECK_FALSE(m.info().not_recoverable);

  // A process that blocks on the unrepaired lock is woken with not_recoverable.
  pid_t waiter = test::fork_child([&] {
    LockResult r = m.lock();
    b.waiter_result.store(static_cast<int>(r) + 1);
    if (owns(r)) m.unlock();
    return r == LockResult::not_recoverable ? 0 : 1;
  });
  CHECK(eventually([&] { return m.info().waiters == 1; }));
  std::this_thread::sleep_for(20ms);
  CHECK(b.waiter_result.load() == 0);

  m.unlock();  // without mark_consistent
  CHECK(test::child_ok(test::wait_child(waiter, 10s)));
  CHECK(b.waiter_result.load() == static_cast<int>(LockResult::not_recoverable) + 1);

  LockInfo info = m.info();
  CHECK(info.not_recoverable);
  CHECK_FALSE(info.owner_died_unrepaired);
  CHECK(info.owner_pid == 0);
  CHECK(m.lock() == LockResult::not_recoverable);
  CHECK(m.try_lock() == LockResult::not_recoverable);
  CHECK(m.try_lock_for(50ms) == LockResult::not_recoverable);
  CHECK(m.try_lock_until(Clock::now() - 1s) == LockResult::not_recoverable);
  CHECK_FALSE(m.mark_consistent());
  {
    MutexGuard g(m);
    CHECK(g.result() == LockResult::not_recoverable);
    CHECK_FALSE(g.owns_lock());
  }

  // Another process, fresh, sees the same (lock() must not block: bounded by
  // the wait_child timeout).
  pid_t other = test::fork_child([&] {
    if (m.try_lock_for(1s) != LockResult::not_recoverable) return 1;
    if (m.try_lock() != LockResult::not_recoverable) return 2;
    if (m.lock() != LockResult::not_recoverable) return 3;
    if (!m.info().not_recoverable) return 4;
    return 0;
  });
  test::ChildExit e = test::wait_child(other, 5s);
  CHECK_MESSAGE(test::child_ok(e), "child exit code " << e.code << std::string(e.timed_out ? " (hung, killed)" : ""));
  CHECK(m.info().not_recoverable);
}

TEST_CASE("a not_recoverable result from try_lock leaves the lock free for others") {
  TestDomain d;
  Segment seg = Segment::create("norec2", opts(d));
  Mutex& m = make_mutex(seg);
  auto& holding = make_board<std::atomic<int>>(seg);
  pid_t owner = test::fork_child([&] { return hold_until_killed(m, holding); });
  await_holder(owner, holding);
  test::kill_child(owner);
  REQUIRE(m.lock() == LockResult::owner_died);
  m.unlock();  // without mark_consistent
  REQUIRE(m.info().not_recoverable);

  // One try_lock() in this thread; it must not keep the lock word.
  CHECK(m.try_lock() == LockResult::not_recoverable);
  CHECK(m.try_lock() == LockResult::not_recoverable);  // not deadlock
  pid_t other = test::fork_child([&] {
    LockResult r = m.try_lock();  // not timed_out
    return r == LockResult::not_recoverable ? 0 : 10 + static_cast<int>(r);
  });
  test::ChildExit e = test::wait_child(other, 5s);
  CHECK_MESSAGE(test::child_ok(e), "other process: exit code " << e.code << " (10 + LockResult)");
}

TEST_CASE("mark_consistent is refused unless the caller holds an owner_died lock") {
  TestDomain d;
  Segment seg = Segment::create("markc", opts(d));
  Mutex& m = make_mutex(seg);
  CHECK_FALSE(m.mark_consistent());  // free
  REQUIRE(m.lock() == LockResult::acquired);
  CHECK_FALSE(m.mark_consistent());  // held normally
  m.unlock();
  CHECK(m.lock() == LockResult::acquired);  // still healthy
  m.unlock();
  CHECK_FALSE(m.info().not_recoverable);
}

// ---------------------------------------------------------------------------
// 6: try_lock family, error checking

TEST_CASE("try_lock, try_lock_for, try_lock_until time out while another process holds the lock") {
  TestDomain d;
  Segment seg = Segment::create("timed", opts(d));
  Mutex& m = make_mutex(seg);
  HoldBoard& b = make_board<HoldBoard>(seg);
  pid_t holder = test::fork_child([&] { return hold_until_released(m, b); });
  await_holder(holder, b.holding);

  CHECK(m.try_lock() == LockResult::timed_out);

  auto t0 = Clock::now();
  CHECK(m.try_lock_for(100ms) == LockResult::timed_out);
  double ms = ms_since(t0);
  CHECK(ms >= 90.0);
  CHECK_PROMPT(ms, kPromptMs);

  t0 = Clock::now();
  CHECK(m.try_lock_until(Clock::now() + 100ms) == LockResult::timed_out);
  ms = ms_since(t0);
  CHECK(ms >= 90.0);
  CHECK_PROMPT(ms, kPromptMs);

  // Longer than one liveness slice: the live owner must not be "recovered".
  t0 = Clock::now();
  CHECK(m.try_lock_for(Mutex::kLivenessSlice * 3 + 50ms) == LockResult::timed_out);
  ms = ms_since(t0);
  CHECK(ms >= 340.0);
  CHECK_PROMPT(ms, kPromptMs);

  // Deadlines in the past, or zero: try once.
  t0 = Clock::now();
  CHECK(m.try_lock_until(Clock::now() - 1s) == LockResult::timed_out);
  CHECK(m.try_lock_until(Clock::time_point{}) == LockResult::timed_out);
  CHECK(m.try_lock_for(0ns) == LockResult::timed_out);
  CHECK(m.try_lock_for(-5s) == LockResult::timed_out);
  CHECK_PROMPT(ms_since(t0), kPromptMs);
  CHECK(m.info().owner_pid == static_cast<std::uint32_t>(holder));
  CHECK(m.info().waiters == 0);

  b.release.store(1);
  CHECK(test::child_ok(test::wait_child(holder, 10s)));
  CHECK(m.try_lock_for(1s) == LockResult::acquired);
  m.unlock();
  // A free lock with a past deadline is still acquired (try once).
  CHECK(m.try_lock_until(Clock::now() - 1s) == LockResult::acquired);
  m.unlock();
}

TEST_CASE("relock by the owning thread returns deadlock and the lock stays held") {
  TestDomain d;
  Segment seg = Segment::create("relock", opts(d));
  Mutex& m = make_mutex(seg);
  REQUIRE(m.lock() == LockResult::acquired);
  std::uint64_t acquisitions = m.info().acquisitions;
  CHECK(m.lock() == LockResult::deadlock);
  CHECK(m.try_lock() == LockResult::deadlock);
  CHECK(m.try_lock_for(10ms) == LockResult::deadlock);
  CHECK(m.try_lock_until(Clock::now() - 1s) == LockResult::deadlock);
  {
    MutexGuard g(m);  // must not unlock in its destructor
    CHECK(g.result() == LockResult::deadlock);
    CHECK_FALSE(g.owns_lock());
  }
  CHECK(m.info().acquisitions == acquisitions);
  CHECK(m.info().owner_pid == static_cast<std::uint32_t>(::getpid()));
  // Still held: another process cannot take it.
  pid_t probe = test::fork_child([&] { return m.try_lock() == LockResult::timed_out ? 0 : 1; });
  CHECK(test::child_ok(test::wait_child(probe, 10s)));
  m.unlock();
  probe = test::fork_child([&] {
    if (m.try_lock() != LockResult::acquired) return 1;
    m.unlock();
    return 0;
  });
  CHECK(test::child_ok(test::wait_child(probe, 10s)));
}

TEST_CASE("unlock by a process that does not hold the lock is ignored") {
  if (IPC_TEST_TSAN) {
    // TSan reports the deliberate misuse ("unlock of an unlocked mutex") in the child.
    MESSAGE("skipped under TSan");
    return;
  }
  TestDomain d;
  Segment seg = Segment::create("foreign", opts(d));
  Mutex& m = make_mutex(seg);
  HoldBoard& b = make_board<HoldBoard>(seg);
  pid_t holder = test::fork_child([&] { return hold_until_released(m, b); });
  await_holder(holder, b.holding);

  // The non-owner runs in the parent.
  m.unlock();
  pid_t probe = test::fork_child([&] { return m.try_lock() == LockResult::timed_out ? 0 : 1; });
  CHECK(test::child_ok(test::wait_child(probe, 10s)));
  CHECK(m.try_lock() == LockResult::timed_out);

  b.release.store(1);
  CHECK(test::child_ok(test::wait_child(holder, 10s)));
  CHECK(m.try_lock() == LockResult::acquired);
  m.unlock();
}

TEST_CASE("unlock by a non-owner thread of the owning process is ignored") {
  if (IPC_TEST_TSAN) {
    MESSAGE("skipped under TSan: it reports the deliberate non-owner unlock");
    return;
  }
  TestDomain d;
  Segment seg = Segment::create("foreign2", opts(d));
  Mutex& m = make_mutex(seg);
  REQUIRE(m.lock() == LockResult::acquired);
  std::thread([&] { m.unlock(); }).join();
  // A third party (another process) still finds it held.
  pid_t probe = test::fork_child([&] { return m.try_lock() == LockResult::timed_out ? 0 : 1; });
  CHECK(test::child_ok(test::wait_child(probe, 10s)));
  LockResult third = LockResult::acquired;
  std::thread([&] { third = m.try_lock(); }).join();
  CHECK(third == LockResult::timed_out);
  CHECK(m.lock() == LockResult::deadlock);  // this thread still owns it
  m.unlock();
  std::thread([&] {
    third = m.try_lock();
    if (owns(third)) m.unlock();
  }).join();
  CHECK(third == LockResult::acquired);
}

TEST_CASE("an ignored non-owner unlock leaves the owner record intact") {
  if (IPC_TEST_TSAN) {
    MESSAGE("skipped under TSan: it reports the deliberate non-owner unlock");
    return;
  }
  TestDomain d;
  Segment seg = Segment::create("record", opts(d));
  Mutex& m = make_mutex(seg);
  HoldBoard& b = make_board<HoldBoard>(seg);
  pid_t holder = test::fork_child([&] { return hold_until_released(m, b); });
  await_holder(holder, b.holding);
  CHECK(m.info().owner_pid == static_cast<std::uint32_t>(holder));

  m.unlock();  // not the owner: "logged and ignored"

  // The lock is still held by `holder`, so info() must still name it; the
  // liveness backstop also relies on this record (a zero record means
  // "owner unknown", which disables recovery if the kernel walk misses it).
  LockInfo info = m.info();
  CHECK(info.owner_pid == static_cast<std::uint32_t>(holder));
  CHECK(info.owner_tid == b.tid.load());

  b.release.store(1);
  CHECK(test::child_ok(test::wait_child(holder, 10s)));
}

// ---------------------------------------------------------------------------
// 7: info()

TEST_CASE("info(): owner of another process, waiters, acquisitions") {
  TestDomain d;
  Segment seg = Segment::create("info", opts(d));
  Mutex& m = make_mutex(seg);
  struct Board {
    HoldBoard hold;
    std::atomic<int> waiter_result;  // LockResult + 1
  };
  Board& b = make_board<Board>(seg);

  LockInfo info = m.info();
  CHECK(info.owner_pid == 0);
  CHECK(info.owner_tid == 0);
  CHECK(info.waiters == 0);
  CHECK(info.acquisitions == 0);
  CHECK(info.waited_ns == 0);
  CHECK_FALSE(info.owner_died_unrepaired);
  CHECK_FALSE(info.not_recoverable);

  pid_t holder = test::fork_child([&] { return hold_until_released(m, b.hold); });
  await_holder(holder, b.hold.holding);
  info = m.info();
  CHECK(info.owner_pid == static_cast<std::uint32_t>(holder));
  CHECK(info.owner_tid == b.hold.tid.load());
  CHECK(info.owner_tid != 0);
  CHECK(info.acquisitions == 1);
  CHECK(info.waiters == 0);

  CHECK(m.try_lock() == LockResult::timed_out);  // failures do not count
  pid_t waiter = test::fork_child([&] {
    LockResult r = m.lock();
    b.waiter_result.store(static_cast<int>(r) + 1);
    if (!owns(r)) return 1;
    m.unlock();
    return 0;
  });
  CHECK(eventually([&] { return m.info().waiters == 1; }));
  std::this_thread::sleep_for(30ms);
  info = m.info();
  CHECK(info.waiters == 1);
  CHECK(info.waited_ns >= 10'000'000u);  // loose: it has been waiting ~30 ms
  CHECK(info.waited_ns < 60'000'000'000u);
  CHECK(info.owner_pid == static_cast<std::uint32_t>(holder));
  CHECK(b.waiter_result.load() == 0);

  b.hold.release.store(1);
  CHECK(test::child_ok(test::wait_child(holder, 10s)));
  CHECK(test::child_ok(test::wait_child(waiter, 10s)));
  CHECK(b.waiter_result.load() == static_cast<int>(LockResult::acquired) + 1);

  info = m.info();
  CHECK(info.owner_pid == 0);
  CHECK(info.waiters == 0);
  CHECK(info.waited_ns == 0);
  CHECK(info.acquisitions == 2);

  for (int i = 0; i < 3; ++i) {
    REQUIRE(m.lock() == LockResult::acquired);
    info = m.info();
    CHECK(info.owner_pid == static_cast<std::uint32_t>(::getpid()));
    CHECK(info.owner_tid == static_cast<std::uint32_t>(::gettid()));
    m.unlock();
  }
  CHECK(m.try_lock() == LockResult::acquired);
  CHECK(m.lock() == LockResult::deadlock);  // does not count
  m.unlock();
  CHECK(m.info().acquisitions == 6);
}

// ---------------------------------------------------------------------------
// 8: validity

TEST_CASE("zeroed memory is not a valid Mutex but a constructed one is") {
  TestDomain d;
  Segment seg = Segment::create("valid", opts(d));
  void* raw = seg.create_object("raw", ObjectType::raw, sizeof(Mutex)).data;
  REQUIRE(reinterpret_cast<std::uintptr_t>(raw) % alignof(Mutex) == 0);
  CHECK_FALSE(static_cast<const Mutex*>(raw)->valid());
  Mutex* m = new (raw) Mutex();
  CHECK(m->valid());
  CHECK(m->lock() == LockResult::acquired);
  m->unlock();

  Mutex& typed = make_mutex(seg, "typed");
  CHECK(typed.valid());
  // Another process sees the same through its own mapping.
  pid_t child = test::fork_child([&] {
    Segment s = Segment::open("valid", {.domain = d.name()});
    if (!s.open<Mutex>("typed", ObjectType::mutex).valid()) return 1;
    Object r = s.open_object("raw", ObjectType::raw);
    if (!static_cast<const Mutex*>(r.data)->valid()) return 2;
    return 0;
  });
  CHECK(test::child_ok(test::wait_child(child, 10s)));
}

// ---------------------------------------------------------------------------
// 9: try_lock_for(kForever)

TEST_CASE("try_lock_for(kForever) blocks until another process releases the lock, then acquires it") {
  TestDomain d;
  Segment seg = Segment::create("forever", opts(d));
  Mutex& m = make_mutex(seg);
  struct Board {
    std::atomic<int> holding, waiting;
    std::atomic<std::int64_t> released_ns;  // set just before the unlock
  };
  Board& b = make_board<Board>(seg);
  Children kids;
  pid_t holder = kids.spawn([&] {
    if (m.lock() != LockResult::acquired) return 1;
    b.holding.store(1);
    if (!eventually([&] { return b.waiting.load() != 0; })) return 2;
    std::this_thread::sleep_for(200ms);
    b.released_ns.store(now_ns());
    m.unlock();
    return 0;
  });
  REQUIRE(eventually([&] { return b.holding.load() != 0; }));
  b.waiting.store(1);
  LockResult r = m.try_lock_for(ipc::kForever);
  const std::int64_t returned_ns = now_ns();
  CHECK_MESSAGE(r == LockResult::acquired, "try_lock_for(kForever) returned " << str(r));
  CHECK_RETURNED_AFTER(b.released_ns.load(), returned_ns, "try_lock_for(kForever)");
  if (owns(r)) m.unlock();
  check_exit(kids.wait(holder), "holder");
}

// ---------------------------------------------------------------------------
// 10: the liveness backstop (the kernel's robust-list walk misses a dead owner)

TEST_CASE("backstop: an owner that dies after unmapping the segment it holds a lock in is still detected") {
  // Real way to make the kernel's robust-list cleanup miss a dead owner (the
  // header's "a held lock in a segment that was unmapped stops the walk"):
  // the owner maps the segment a second time (Segment::open → another
  // address), locks through that mapping B (glibc links the robust-list entry
  // at B's address), unmaps B and is SIGKILLed. The kernel's walk faults on
  // the entry in unmapped memory and stops: the lock word (the same page,
  // still mapped as A by everyone else) keeps the dead tid. Only the
  // backstop (Mutex::recover_dead_owner, after a kLivenessSlice) frees it.
  TestDomain d;
  Segment seg = Segment::create("backstop", opts(d));
  Mutex& m = make_mutex(seg);
  struct Board {
    std::atomic<int> holding;
    std::atomic<int> result;  // LockResult + 1 of the waiter
    std::atomic<std::int64_t> got_ns;
  };
  Board& b = make_board<Board>(seg);
  Children kids;
  pid_t owner = kids.spawn([&] {
    Segment a = Segment::open("backstop", {.domain = d.name()});
    Board& ab = a.open<Board>("board", ObjectType::raw);
    {
      Segment second = Segment::open("backstop", {.domain = d.name()});
      if (second.base() == a.base()) return 1;
      if (second.open<Mutex>("lock", ObjectType::mutex).lock() != LockResult::acquired) return 2;
    }  // unmapped while held
    ab.holding.store(1);
    std::this_thread::sleep_for(30s);
    return 3;
  });
  REQUIRE(eventually([&] { return b.holding.load() != 0; }));
  CHECK(m.info().owner_pid == static_cast<std::uint32_t>(owner));
  kids.kill(owner);  // SIGKILL and reap
  const std::int64_t killed_ns = now_ns();

  // The kernel did not mark the lock: try_lock (no backstop) still finds it held.
  CHECK(m.try_lock() == LockResult::timed_out);
  CHECK(m.info().owner_pid == static_cast<std::uint32_t>(owner));

  // A blocked lock() recovers it. In a child, so that a missing backstop
  // fails the test (child killed after 20 s) instead of hanging it. Its
  // stderr goes to a file, to see the backstop's log line.
  char log_path[] = "/tmp/ipc_backstop_XXXXXX";
  int log_fd = ::mkstemp(log_path);
  REQUIRE(log_fd >= 0);
  ::unlink(log_path);
  pid_t waiter = kids.spawn([&] {
    ::dup2(log_fd, STDERR_FILENO);
    LockResult r = m.lock();
    b.got_ns.store(now_ns());
    b.result.store(static_cast<int>(r) + 1);
    if (r != LockResult::owner_died) return 1;
    if (!m.mark_consistent()) return 2;
    m.unlock();
    return 0;
  });
  test::ChildExit e = kids.wait(waiter, std::chrono::milliseconds(static_cast<int>(test::kHangMs)));
  check_exit(e, "waiter");
  CHECK_MESSAGE(b.result.load() == static_cast<int>(LockResult::owner_died) + 1,
                "waiter's lock() returned (LockResult + 1) " << b.result.load());
  if (b.got_ns.load() != 0) CHECK_PROMPT(test::ms_between(killed_ns, b.got_ns.load()), test::kHangMs);

  std::string log(4096, '\0');
  ssize_t n = ::pread(log_fd, log.data(), log.size(), 0);
  ::close(log_fd);
  log.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
  INFO("waiter's stderr: " << log);
  const char* level = std::getenv("IPC_LOG_LEVEL");
  if (level == nullptr || std::string(level) == "warn" || std::string(level) == "info" ||
      std::string(level) == "debug" || std::string(level) == "trace")
    CHECK(log.find("the kernel did not release the lock") != std::string::npos);

  // Healthy afterwards.
  LockResult after = m.try_lock();
  CHECK(after == LockResult::acquired);
  if (owns(after)) m.unlock();
}

// ---------------------------------------------------------------------------
// 11: a Mutex whose memory was never initialised

TEST_CASE("a contended lock on zeroed (never constructed) memory returns invalid and never blocks") {
  // Zeroed memory passes as a glibc private, non-robust mutex: the holder
  // below takes it through the fast path (a release build does not check the
  // magic there; a debug build returns invalid already). Every slow path must
  // see the missing magic and return invalid instead of waiting. Run in a
  // child, so that a lock() that blocks fails the test instead of hanging it.
  TestDomain d;
  Segment seg = Segment::create("zeroed", opts(d));
  struct alignas(Mutex) Raw {
    unsigned char bytes[sizeof(Mutex)];
  };
  Mutex& m = *reinterpret_cast<Mutex*>(make_board<Raw>(seg, "raw").bytes);
  REQUIRE_FALSE(m.valid());
  struct Board {
    std::atomic<int> holder_result, held, done;  // LockResult + 1
    std::atomic<int> results[5];                 // LockResult + 1 of each contended call
  };
  Board& b = make_board<Board>(seg);
  Children kids;
  pid_t child = kids.spawn([&] {
    std::thread holder([&] {
      LockResult r = m.lock();
      b.holder_result.store(static_cast<int>(r) + 1);
      b.held.store(1);
      eventually([&] { return b.done.load() != 0; });
      if (owns(r)) m.unlock();
    });
    eventually([&] { return b.held.load() != 0; });
    b.results[0].store(static_cast<int>(m.lock()) + 1);
    b.results[1].store(static_cast<int>(m.try_lock()) + 1);
    b.results[2].store(static_cast<int>(m.try_lock_for(50ms)) + 1);
    b.results[3].store(static_cast<int>(m.try_lock_until(Clock::now() + 50ms)) + 1);
    b.results[4].store(static_cast<int>(m.try_lock_for(ipc::kForever)) + 1);
    b.done.store(1);
    holder.join();
    return 0;
  });
  test::ChildExit e = kids.wait(child, std::chrono::milliseconds(static_cast<int>(test::kHangMs)));
  check_exit(e, "child (timed_out: a lock call blocked)");
  const int holder = b.holder_result.load() - 1;
  INFO("holder's uncontended lock(): " << (holder >= 0 ? to_string(static_cast<LockResult>(holder)) : "(none)"));
  CHECK((holder == static_cast<int>(LockResult::acquired) || holder == static_cast<int>(LockResult::invalid)));
  const char* calls[] = {"lock()", "try_lock()", "try_lock_for(50ms)", "try_lock_until(+50ms)",
                         "try_lock_for(kForever)"};
  for (int i = 0; i < 5; ++i) {
    const int r = b.results[i].load() - 1;
    CHECK_MESSAGE(r == static_cast<int>(LockResult::invalid),
                  calls[i] << " returned " << (r >= 0 ? to_string(static_cast<LockResult>(r)) : "(nothing)"));
  }
  CHECK_FALSE(m.valid());
}

// ---------------------------------------------------------------------------
// 12: IPC_LOG_LEVEL (read once, when the first log line is written)

namespace {

// In a fresh process (a role: the level is fixed at start-up, a forked
// child would inherit ours): a debug line (Segment::create), an error line
// (unlock of a lock nobody holds) and a warning (owner_died after a thread
// exited holding the lock).
int log_lines_role() {
  const char* domain = std::getenv("IPC_TEST_ROLE_DOMAIN");
  if (!domain) return 1;
  Segment seg = Segment::create("log", opts(domain));
  Mutex& m = seg.find_or_create<Mutex>("m", ObjectType::mutex);
  m.unlock();                                        // error: "unlock by a thread that does not own it"
  std::thread([&] { (void)m.lock(); }).join();       // exits holding it
  if (m.lock() != LockResult::owner_died) return 2;  // warning: "previous owner died"
  m.mark_consistent();
  m.unlock();
  return 0;
}
const test::Role log_lines("mutex-log-lines", log_lines_role);

int count(const std::string& text, const std::string& what) {
  int n = 0;
  for (std::size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

}  // namespace

TEST_CASE("IPC_LOG_LEVEL: a bad value keeps the default level with one warning, names are case-insensitive") {
  if (IPC_TEST_TSAN) {
    MESSAGE("skipped under TSan: the role unlocks a mutex it does not hold on purpose");
    return;
  }
  TestDomain d;
  struct Case {
    const char* env;  // IPC_LOG_LEVEL=..., or just the name to unset it
    bool bad_value, debug, warning, error;
  };
  const Case cases[] = {
      {"IPC_LOG_LEVEL", false, false, true, true},         // unset: default warn
      {"IPC_LOG_LEVEL=bogus", true, false, true, true},    // bad: default kept, one warning
      {"IPC_LOG_LEVEL=", true, false, true, true},         // empty: the same
      {"IPC_LOG_LEVEL=WARN", false, false, true, true},    // upper case accepted
      {"IPC_LOG_LEVEL=ERROR", false, false, false, true},  // upper case, and a level above the default
      {"IPC_LOG_LEVEL=Debug", false, true, true, true},    // mixed case, below the default
      {"IPC_LOG_LEVEL=off", false, false, false, false},
  };
  char dir_template[] = "/tmp/ipc_log_test_XXXXXX";
  REQUIRE(::mkdtemp(dir_template) != nullptr);
  const std::string dir = dir_template;
  int n = 0;
  for (const Case& c : cases) {
    CAPTURE(c.env);
    const std::string out = dir + "/" + std::to_string(n++);
    test::ChildExit e = test::run_role("mutex-log-lines", {c.env, "IPC_TEST_ROLE_DOMAIN=" + d.name()}, out);
    const std::string text = test::read_file(out);
    ::unlink(out.c_str());
    Segment::unlink("log", d.name());
    INFO("output:\n" << text);
    check_exit(e, "role");
    CHECK(count(text, "is not a log level") == (c.bad_value ? 1 : 0));
    CHECK((count(text, "[debug]") > 0) == c.debug);
    CHECK((count(text, "previous owner died") > 0) == c.warning);
    CHECK((count(text, "does not own it") > 0) == c.error);
  }
  ::rmdir(dir.c_str());
  CHECK(d.leftover_files() == 0);
}
