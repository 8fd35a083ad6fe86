// SharedMutex: concurrent readers across processes, writer exclusion, timed
// variants, writer preference, reader and writer death by real SIGKILL (slot
// reclaim; owner_died until mark_consistent), SIGKILL at random points, the
// reader-slot table, threads of one process.
//
// Labelled "threads": the in-process threaded tests also run under TSan. The
// fork-based tests fork only while the parent is single-threaded.
#include <doctest/doctest.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "ipc/segment.hpp"
#include "ipc/shared_mutex.hpp"
#include "support.hpp"

using namespace ipc;
using namespace std::chrono_literals;
using ipc::test::Children;
using ipc::test::kPromptMs;
using ipc::test::ms_between;
using ipc::test::ms_since;
using ipc::test::now_ns;
using ipc::test::opts;
using ipc::test::spin;
using ipc::test::str;
using ipc::test::TestDomain;

using ipc::test::check_exit;
using ipc::test::eventually;
using ipc::test::make_board;

using Clock = std::chrono::steady_clock;

namespace {

SharedMutex& make_rw(Segment& seg, const char* name = "rw") {
  return seg.find_or_create<SharedMutex>(name, ObjectType::shared_mutex);
}

double cpu_ms() {
  timespec ts{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) / 1e6;
}

// A child that holds the lock (exclusive or shared) until `release` is set.
struct HoldBoard {
  std::atomic<int> holding;
  std::atomic<int> release;
};
int hold_exclusive(SharedMutex& m, HoldBoard& b) {
  if (m.lock() != LockResult::acquired) return 1;
  b.holding.store(1);
  bool released = eventually([&] { return b.release.load() != 0; }, 20s);
  m.unlock();
  return released ? 0 : 2;
}
int hold_shared(SharedMutex& m, HoldBoard& b) {
  if (m.lock_shared() != LockResult::acquired) return 1;
  b.holding.fetch_add(1);
  bool released = eventually([&] { return b.release.load() != 0; }, 20s);
  m.unlock_shared();
  return released ? 0 : 2;
}
// Children that take the lock and wait to be SIGKILLed.
int shared_until_killed(SharedMutex& m, std::atomic<int>& holding) {
  if (m.lock_shared() != LockResult::acquired) return 1;
  holding.fetch_add(1);
  std::this_thread::sleep_for(30s);
  return 2;
}

}  // namespace

// ---------------------------------------------------------------------------
// Readers share, writers exclude

TEST_CASE("readers in 3 processes hold the shared lock at the same time, a writer is kept out") {
  TestDomain d;
  Segment seg = Segment::create("readers", opts(d));
  SharedMutex& m = make_rw(seg);
  struct Board {
    std::atomic<int> inside, peak, release;
  };
  Board& b = make_board<Board>(seg);
  Children kids;
  constexpr int kReaders = 3;
  std::vector<pid_t> pids;
  for (int i = 0; i < kReaders; ++i) {
    pids.push_back(kids.spawn([&, i] {
      // Reader 0 maps the segment afresh (another address, same futex words).
      std::optional<Segment> own;
      SharedMutex* rw = &m;
      Board* bb = &b;
      if (i == 0) {
        own.emplace(Segment::open("readers", {.domain = d.name()}));
        rw = &own->open<SharedMutex>("rw", ObjectType::shared_mutex);
        bb = &own->open<Board>("board", ObjectType::raw);
      }
      LockResult r = rw->lock_shared();
      if (r != LockResult::acquired) return 10 + static_cast<int>(r);
      int n = bb->inside.fetch_add(1) + 1;
      int p = bb->peak.load();
      while (n > p && !bb->peak.compare_exchange_weak(p, n)) {
      }
      bool all_in = eventually([&] { return bb->peak.load() == kReaders; });
      bool released = eventually([&] { return bb->release.load() != 0; });
      bb->inside.fetch_sub(1);
      rw->unlock_shared();
      return all_in && released ? 0 : 2;
    }));
  }
  CHECK_MESSAGE(eventually([&] { return b.peak.load() == kReaders; }), "peak readers " << b.peak.load());
  CHECK(m.readers() == kReaders);
  // A 4th reader (this process) joins them; a writer cannot get in.
  CHECK(m.try_lock_shared() == LockResult::acquired);
  CHECK(m.readers() == kReaders + 1);
  m.unlock_shared();
  CHECK(m.try_lock() == LockResult::timed_out);
  auto t0 = Clock::now();
  CHECK(m.try_lock_for(100ms) == LockResult::timed_out);
  CHECK(ms_since(t0) >= 90.0);
  // The writer gave up cleanly: readers are not held off.
  CHECK(m.try_lock_shared() == LockResult::acquired);
  m.unlock_shared();
  b.release.store(1);
  for (pid_t p : pids) check_exit(kids.wait(p));
  CHECK(b.peak.load() == kReaders);
  CHECK(m.readers() == 0);
  CHECK(m.try_lock() == LockResult::acquired);
  m.unlock();
}

TEST_CASE("2 writer and 2 reader processes: writers exclude everyone, non-atomic data stays consistent") {
  TestDomain d;
  Segment seg = Segment::create("excl", opts(d));
  SharedMutex& m = make_rw(seg);
  struct Board {
    std::uint64_t a, b;  // guarded; a == b outside a writer's critical section
    std::atomic<int> writers_in, readers_in, ready, go, writers_done, errors, readers_started;
    std::atomic<std::uint64_t> reads;
  };
  Board& b = make_board<Board>(seg);
  constexpr int kWriters = 2, kReaders = 2, kWrites = 2000;
  Children kids;
  std::vector<pid_t> pids;
  for (int w = 0; w < kWriters; ++w) {
    pids.push_back(kids.spawn([&] {
      b.ready.fetch_add(1);
      if (!eventually([&] { return b.go.load() != 0; })) return 1;
      // Overlap with the readers: 2 x 2000 writes take a few ms, less than a
      // loaded machine may need to schedule a reader's first lock_shared.
      if (!eventually([&] { return b.readers_started.load() == kReaders; })) return 2;
      for (int i = 0; i < kWrites; ++i) {
        LockResult r = m.lock();
        if (r != LockResult::acquired) return 10 + static_cast<int>(r);
        if (b.writers_in.fetch_add(1) != 0) b.errors.fetch_add(1);
        if (b.readers_in.load() != 0) b.errors.fetch_add(1);
        std::uint64_t v = b.a;
        b.a = v + 1;
        spin(300);
        if (i % 50 == 0) std::this_thread::yield();  // invite others into a broken section
        b.b = v + 1;
        b.writers_in.fetch_sub(1);
        m.unlock();
      }
      b.writers_done.fetch_add(1);
      return 0;
    }));
  }
  for (int r = 0; r < kReaders; ++r) {
    pids.push_back(kids.spawn([&] {
      b.ready.fetch_add(1);
      if (!eventually([&] { return b.go.load() != 0; })) return 1;
      auto deadline = Clock::now() + 60s;
      bool started = false;
      while (b.writers_done.load() < kWriters) {
        if (Clock::now() > deadline) return 3;
        LockResult res = m.lock_shared();
        if (res != LockResult::acquired) return 10 + static_cast<int>(res);
        b.readers_in.fetch_add(1);
        if (b.writers_in.load() != 0) b.errors.fetch_add(1);
        std::uint64_t x = b.a;
        spin(100);
        std::uint64_t y = b.b;
        if (x != y) b.errors.fetch_add(1);
        b.readers_in.fetch_sub(1);
        m.unlock_shared();
        b.reads.fetch_add(1);
        if (!started) b.readers_started.fetch_add(1);
        started = true;
        spin(200);
      }
      return 0;
    }));
  }
  REQUIRE(eventually([&] { return b.ready.load() == kWriters + kReaders; }));
  b.go.store(1);
  for (pid_t p : pids) check_exit(kids.wait(p, 90s));
  CHECK(b.errors.load() == 0);
  MESSAGE("reads under lock_shared: " << b.reads.load());
  CHECK(b.reads.load() > 0);
  REQUIRE(m.try_lock_for(5s) == LockResult::acquired);
  CHECK(b.a == std::uint64_t{kWriters} * kWrites);
  CHECK(b.b == b.a);
  CHECK(m.readers() == 0);
  m.unlock();
}

// ---------------------------------------------------------------------------
// Timed variants, writer preference

TEST_CASE("try_lock_shared and timed variants time out while another process holds the exclusive lock") {
  TestDomain d;
  Segment seg = Segment::create("timedx", opts(d));
  SharedMutex& m = make_rw(seg);
  HoldBoard& b = make_board<HoldBoard>(seg);
  Children kids;
  pid_t holder = kids.spawn([&] { return hold_exclusive(m, b); });
  REQUIRE(eventually([&] { return b.holding.load() != 0; }));
  CHECK(m.writer_info().owner_pid == static_cast<std::uint32_t>(holder));

  CHECK(m.try_lock_shared() == LockResult::timed_out);
  CHECK(m.try_lock() == LockResult::timed_out);
  auto t0 = Clock::now();
  CHECK(m.try_lock_shared_for(100ms) == LockResult::timed_out);
  double ms = ms_since(t0);
  CHECK(ms >= 90.0);
  CHECK_PROMPT(ms, kPromptMs);
  t0 = Clock::now();
  CHECK(m.try_lock_for(100ms) == LockResult::timed_out);
  ms = ms_since(t0);
  CHECK(ms >= 90.0);
  CHECK_PROMPT(ms, kPromptMs);
  // Longer than a few liveness slices: a live writer is never "recovered".
  t0 = Clock::now();
  CHECK(m.try_lock_shared_for(Mutex::kLivenessSlice * 3 + 50ms) == LockResult::timed_out);
  ms = ms_since(t0);
  CHECK(ms >= 340.0);
  CHECK_PROMPT(ms, kPromptMs);
  // Zero and negative timeouts: try once.
  t0 = Clock::now();
  CHECK(m.try_lock_shared_for(0ns) == LockResult::timed_out);
  CHECK(m.try_lock_shared_for(-1s) == LockResult::timed_out);
  CHECK(m.try_lock_for(-1s) == LockResult::timed_out);
  CHECK_PROMPT(ms_since(t0), kPromptMs);
  CHECK(m.readers() == 0);

  b.release.store(1);
  check_exit(kids.wait(holder));
  CHECK(m.try_lock_shared_for(1s) == LockResult::acquired);  // not owner_died: the writer unlocked
  m.unlock_shared();
  CHECK(m.try_lock_for(1s) == LockResult::acquired);
  m.unlock();
}

TEST_CASE("try_lock and try_lock_for time out while another process holds a read lock, readers still share") {
  TestDomain d;
  Segment seg = Segment::create("timeds", opts(d));
  SharedMutex& m = make_rw(seg);
  HoldBoard& b = make_board<HoldBoard>(seg);
  Children kids;
  pid_t holder = kids.spawn([&] { return hold_shared(m, b); });
  REQUIRE(eventually([&] { return b.holding.load() != 0; }));
  CHECK(m.readers() == 1);

  CHECK(m.try_lock() == LockResult::timed_out);
  auto t0 = Clock::now();
  CHECK(m.try_lock_for(100ms) == LockResult::timed_out);
  double ms = ms_since(t0);
  CHECK(ms >= 90.0);
  CHECK_PROMPT(ms, kPromptMs);
  // Several liveness slices: the live reader's slot must not be reclaimed.
  t0 = Clock::now();
  CHECK(m.try_lock_for(Mutex::kLivenessSlice * 3 + 50ms) == LockResult::timed_out);
  ms = ms_since(t0);
  CHECK(ms >= 340.0);
  CHECK_PROMPT(ms, kPromptMs);
  CHECK(m.readers() == 1);
  // The writer that gave up does not hold readers off, and other readers share.
  t0 = Clock::now();
  CHECK(m.try_lock_shared() == LockResult::acquired);
  CHECK(m.readers() == 2);
  m.unlock_shared();
  CHECK_PROMPT(ms_since(t0), kPromptMs);
  pid_t probe = kids.spawn([&] {
    if (m.try_lock_shared_for(2s) != LockResult::acquired) return 1;
    if (m.readers() != 2) return 2;
    m.unlock_shared();
    return m.try_lock() == LockResult::timed_out ? 0 : 3;
  });
  check_exit(kids.wait(probe), "second reader process");

  b.release.store(1);
  check_exit(kids.wait(holder));
  CHECK(m.readers() == 0);
  CHECK(m.try_lock_for(1s) == LockResult::acquired);
  m.unlock();
}

TEST_CASE("a writer waiting for readers to drain holds off new readers, then gets the lock") {
  TestDomain d;
  Segment seg = Segment::create("pref", opts(d));
  SharedMutex& m = make_rw(seg);
  HoldBoard& b = make_board<HoldBoard>(seg);
  struct WriterBoard {
    std::atomic<int> result;  // LockResult + 1
    std::atomic<std::int64_t> got_ns;
  };
  WriterBoard& wb = make_board<WriterBoard>(seg, "writer");
  Children kids;
  pid_t reader = kids.spawn([&] { return hold_shared(m, b); });
  REQUIRE(eventually([&] { return b.holding.load() != 0; }));
  pid_t writer = kids.spawn([&] {
    LockResult r = m.try_lock_for(10s);
    wb.got_ns.store(now_ns());
    wb.result.store(static_cast<int>(r) + 1);
    if (!owns(r)) return 1;
    if (m.readers() != 0) return 2;
    std::this_thread::sleep_for(20ms);
    m.unlock();
    return r == LockResult::acquired ? 0 : 3;
  });
  // The writer owns the writer mutex and is draining the reader.
  REQUIRE(eventually([&] { return m.writer_info().owner_pid == static_cast<std::uint32_t>(writer); }));
  std::this_thread::sleep_for(50ms);
  CHECK(wb.result.load() == 0);
  auto t0 = Clock::now();
  CHECK(m.try_lock_shared_for(100ms) == LockResult::timed_out);
  CHECK(ms_since(t0) >= 90.0);
  CHECK(m.try_lock_shared() == LockResult::timed_out);
  CHECK(wb.result.load() == 0);

  std::int64_t released_ns = now_ns();
  b.release.store(1);
  check_exit(kids.wait(reader), "reader");
  check_exit(kids.wait(writer), "writer");
  CHECK(wb.result.load() == static_cast<int>(LockResult::acquired) + 1);
  CHECK_PROMPT(ms_between(released_ns, wb.got_ns.load()), kPromptMs);
  CHECK(m.try_lock_shared_for(2s) == LockResult::acquired);
  m.unlock_shared();
}

// ---------------------------------------------------------------------------
// Reader death

TEST_CASE("a reader process SIGKILLed holding a read lock does not block a writer") {
  TestDomain d;
  Segment seg = Segment::create("rdead", opts(d));
  SharedMutex& m = make_rw(seg);
  struct Board {
    std::atomic<int> holding;
  };
  Board& b = make_board<Board>(seg);
  Children kids;
  pid_t reader = kids.spawn([&] { return shared_until_killed(m, b.holding); });
  REQUIRE(eventually([&] { return b.holding.load() != 0; }));
  CHECK(m.readers() == 1);
  kids.kill(reader);
  CHECK(m.readers() == 1);  // nobody has noticed yet

  auto t0 = Clock::now();
  LockResult r = m.try_lock_for(30s);
  double ms = ms_since(t0);
  INFO("writer got " << str(r));
  CHECK(r == LockResult::acquired);  // a dead reader corrupts nothing: no owner_died
  CHECK_PROMPT(ms, kPromptMs);       // a few liveness slices
  CHECK(m.readers() == 0);
  if (owns(r)) m.unlock();
  CHECK(m.try_lock_shared() == LockResult::acquired);
  m.unlock_shared();
  CHECK(m.readers() == 0);
}

TEST_CASE("a writer blocked on a reader is released when the reader process is SIGKILLed") {
  TestDomain d;
  Segment seg = Segment::create("rdead2", opts(d));
  SharedMutex& m = make_rw(seg);
  struct Board {
    std::atomic<int> holding;
    std::atomic<int> result;  // LockResult + 1
    std::atomic<std::int64_t> got_ns;
  };
  Board& b = make_board<Board>(seg);
  Children kids;
  pid_t reader = kids.spawn([&] { return shared_until_killed(m, b.holding); });
  REQUIRE(eventually([&] { return b.holding.load() != 0; }));
  pid_t writer = kids.spawn([&] {
    LockResult r = m.try_lock_for(10s);
    b.got_ns.store(now_ns());
    b.result.store(static_cast<int>(r) + 1);
    if (owns(r)) m.unlock();
    return r == LockResult::acquired ? 0 : 1;
  });
  REQUIRE(eventually([&] { return m.writer_info().owner_pid == static_cast<std::uint32_t>(writer); }));
  std::this_thread::sleep_for(250ms);  // the writer sleeps through slices; the reader is alive
  CHECK(b.result.load() == 0);

  std::int64_t killed_ns = now_ns();
  kids.kill(reader);
  check_exit(kids.wait(writer), "writer");
  CHECK(b.result.load() == static_cast<int>(LockResult::acquired) + 1);
  double ms = ms_between(killed_ns, b.got_ns.load());
  INFO("writer got the lock after the kill");
  CHECK_PROMPT(ms, kPromptMs);
  CHECK(m.readers() == 0);
}

TEST_CASE("of two reader processes, the dead one is reclaimed but the live one keeps the writer out") {
  TestDomain d;
  Segment seg = Segment::create("rdead3", opts(d));
  SharedMutex& m = make_rw(seg);
  struct Board {
    std::atomic<int> dying;
    HoldBoard live;
  };
  Board& b = make_board<Board>(seg);
  Children kids;
  pid_t dying = kids.spawn([&] { return shared_until_killed(m, b.dying); });
  pid_t live = kids.spawn([&] { return hold_shared(m, b.live); });
  REQUIRE(eventually([&] { return b.dying.load() != 0 && b.live.holding.load() != 0; }));
  CHECK(m.readers() == 2);
  kids.kill(dying);

  auto t0 = Clock::now();
  CHECK(m.try_lock_for(Mutex::kLivenessSlice * 4) == LockResult::timed_out);
  double ms = ms_since(t0);
  CHECK(ms >= 390.0);
  CHECK_PROMPT(ms, kPromptMs);
  CHECK(m.readers() >= 1);  // the live reader's lock is never taken away

  b.live.release.store(1);
  check_exit(kids.wait(live), "live reader");
  t0 = Clock::now();
  CHECK(m.try_lock_for(30s) == LockResult::acquired);
  CHECK_PROMPT(ms_since(t0), kPromptMs);
  CHECK(m.readers() == 0);
  m.unlock();
}

// ---------------------------------------------------------------------------
// Writer death

TEST_CASE("a writer SIGKILLed holding the lock: sleeping readers get owner_died, owner_died until mark_consistent") {
  TestDomain d;
  Segment seg = Segment::create("wdead", opts(d));
  SharedMutex& m = make_rw(seg);
  struct Board {
    std::uint64_t a, b;  // guarded; a == b when consistent
    std::atomic<int> holding;
    std::atomic<int> waiting;
    std::atomic<int> results[2];  // LockResult + 1
    std::atomic<std::int64_t> got_ns[2];
    std::atomic<int> saw_torn[2];
  };
  Board& b = make_board<Board>(seg);
  Children kids;
  pid_t writer = kids.spawn([&] {
    if (m.lock() != LockResult::acquired) return 1;
    b.a = 1;  // half an update: b stays 0
    b.holding.store(1);
    std::this_thread::sleep_for(30s);
    return 2;
  });
  REQUIRE(eventually([&] { return b.holding.load() != 0; }));

  pid_t readers[2];
  for (int i = 0; i < 2; ++i) {
    readers[i] = kids.spawn([&, i] {
      b.waiting.fetch_add(1);
      LockResult r = m.try_lock_shared_for(10s);
      b.got_ns[i].store(now_ns());
      if (owns(r)) {
        b.saw_torn[i].store(b.a != b.b ? 1 : 0);
        m.unlock_shared();
      }
      b.results[i].store(static_cast<int>(r) + 1);
      return 0;
    });
  }
  REQUIRE(eventually([&] { return b.waiting.load() == 2; }));
  std::this_thread::sleep_for(150ms);  // both asleep in lock_shared, past one liveness probe
  CHECK(b.results[0].load() == 0);
  CHECK(b.results[1].load() == 0);

  std::int64_t killed_ns = now_ns();
  kids.kill(writer);
  for (int i = 0; i < 2; ++i) {
    check_exit(kids.wait(readers[i]), "reader " + std::to_string(i));
    INFO("reader " << i);
    CHECK(b.results[i].load() == static_cast<int>(LockResult::owner_died) + 1);
    CHECK(b.saw_torn[i].load() == 1);
    CHECK_PROMPT(ms_between(killed_ns, b.got_ns[i].load()), kPromptMs);
  }
  CHECK(m.readers() == 0);

  // Still unrepaired: every lock reports owner_died, in any process.
  CHECK(m.try_lock_shared() == LockResult::owner_died);
  m.unlock_shared();
  pid_t probe = kids.spawn([&] {
    LockResult r = m.try_lock_shared_for(2s);
    if (owns(r)) m.unlock_shared();
    return r == LockResult::owner_died ? 0 : 10 + static_cast<int>(r);
  });
  check_exit(kids.wait(probe), "probe before repair");

  REQUIRE(m.try_lock_for(5s) == LockResult::owner_died);
  CHECK(b.a != b.b);
  b.b = b.a;  // repair
  m.mark_consistent();
  m.unlock();

  CHECK(m.try_lock_shared() == LockResult::acquired);
  CHECK(b.a == b.b);
  m.unlock_shared();
  probe = kids.spawn([&] {
    LockResult r = m.try_lock_shared_for(2s);
    if (owns(r)) m.unlock_shared();
    if (r != LockResult::acquired) return 10 + static_cast<int>(r);
    r = m.try_lock_for(2s);
    if (owns(r)) m.unlock();
    return r == LockResult::acquired ? 0 : 20 + static_cast<int>(r);
  });
  check_exit(kids.wait(probe), "probe after repair");
  CHECK(m.try_lock() == LockResult::acquired);
  m.unlock();
}

TEST_CASE("a dead writer's lock stays owner_died (never not_recoverable) until a writer calls mark_consistent") {
  TestDomain d;
  Segment seg = Segment::create("wdead2", opts(d));
  SharedMutex& m = make_rw(seg);
  struct Board {
    std::atomic<int> holding;
  };
  Board& b = make_board<Board>(seg);
  Children kids;
  pid_t writer = kids.spawn([&] {
    if (m.lock() != LockResult::acquired) return 1;
    b.holding.store(1);
    std::this_thread::sleep_for(30s);
    return 2;
  });
  REQUIRE(eventually([&] { return b.holding.load() != 0; }));
  kids.kill(writer);

  auto t0 = Clock::now();
  CHECK(m.try_lock_for(30s) == LockResult::owner_died);
  CHECK_PROMPT(ms_since(t0), kPromptMs);
  CHECK(m.writer_info().owner_pid == static_cast<std::uint32_t>(::getpid()));
  m.unlock();  // without mark_consistent
  CHECK(m.try_lock_shared_for(2s) == LockResult::owner_died);
  m.unlock_shared();
  CHECK(m.try_lock_for(2s) == LockResult::owner_died);
  m.unlock();  // still without
  CHECK_FALSE(m.writer_info().not_recoverable);
  pid_t probe = kids.spawn([&] {
    LockResult r = m.try_lock_for(2s);
    if (owns(r)) m.unlock();
    return r == LockResult::owner_died ? 0 : 10 + static_cast<int>(r);
  });
  check_exit(kids.wait(probe));

  REQUIRE(m.try_lock_for(2s) == LockResult::owner_died);
  m.mark_consistent();
  m.unlock();
  CHECK(m.try_lock() == LockResult::acquired);
  m.unlock();
  CHECK(m.try_lock_shared() == LockResult::acquired);
  m.unlock_shared();
}

// ---------------------------------------------------------------------------
// SIGKILL at random points

namespace {

struct RandomBoard {
  std::uint64_t a, b;  // guarded; a == b when consistent
  std::atomic<int> writer_started, reader_started, holding;
  std::atomic<int> errors;
  std::atomic<std::uint64_t> writes, reads, reader_owner_died;
};

int random_writer(SharedMutex& m, RandomBoard& s, bool hold) {
  s.writer_started.store(1);
  for (unsigned i = 0;; ++i) {
    LockResult r = m.lock();
    if (r == LockResult::owner_died) {
      s.b = s.a;
      m.mark_consistent();
    } else if (r != LockResult::acquired) {
      s.errors.fetch_add(1);
      return 10 + static_cast<int>(r);
    }
    std::uint64_t v = s.a;
    s.a = v + 1;
    spin(200);
    if (hold) {
      s.holding.store(1);
      std::this_thread::sleep_for(30s);
      return 2;
    }
    s.b = v + 1;
    m.unlock();
    s.writes.fetch_add(1, std::memory_order_relaxed);
    spin(100 + i % 300);
  }
}

int random_reader(SharedMutex& m, RandomBoard& s) {
  s.reader_started.store(1);
  for (unsigned i = 0;; ++i) {
    LockResult r = m.lock_shared();
    if (r == LockResult::acquired) {
      std::uint64_t x = s.a;
      spin(50);
      if (x != s.b) s.errors.fetch_add(1);
    } else if (r == LockResult::owner_died) {
      s.reader_owner_died.fetch_add(1, std::memory_order_relaxed);
    } else {
      s.errors.fetch_add(1);
      return 10 + static_cast<int>(r);
    }
    m.unlock_shared();
    s.reads.fetch_add(1, std::memory_order_relaxed);
    spin(100 + i % 300);
  }
}

}  // namespace

TEST_CASE("writers and readers SIGKILLed at random points: invariant holds, nothing hangs") {
  TestDomain d;
  Segment seg = Segment::create("random", opts(d));
  SharedMutex& m = make_rw(seg);
  RandomBoard& s = make_board<RandomBoard>(seg);
  const unsigned seed = test::seed();
  INFO("seed " << seed);
  std::mt19937 rng(seed);

  const int kIterations = test::iterations(60);
  int owner_died = 0, torn = 0, holds = 0;
  double worst_ms = 0;
  Children kids;
  for (int it = 0; it < kIterations; ++it) {
    INFO("iteration " << it);
    const int mode = static_cast<int>(rng() % 3);  // 0 writer, 1 reader, 2 both
    const bool hold = mode != 1 && it % 6 == 0;    // the writer is known to die mid-update
    const auto delay = std::chrono::microseconds(rng() % 3001);
    const bool writer_first = rng() % 2 == 0;
    s.writer_started.store(0);
    s.reader_started.store(0);
    s.holding.store(0);

    pid_t writer = 0, reader = 0;
    if (mode != 1) writer = kids.spawn([&] { return random_writer(m, s, hold); });
    if (mode != 0) reader = kids.spawn([&] { return random_reader(m, s); });
    if (hold) {
      ++holds;
      REQUIRE_MESSAGE(eventually([&] { return s.holding.load() != 0; }), "writer never held the lock");
    } else {
      REQUIRE(eventually([&] {
        return (writer == 0 || s.writer_started.load() != 0) && (reader == 0 || s.reader_started.load() != 0);
      }));
    }
    std::this_thread::sleep_for(delay);
    if (writer_first && writer) kids.kill(writer);
    if (reader) {
      if (rng() % 2) std::this_thread::sleep_for(std::chrono::microseconds(rng() % 500));
      kids.kill(reader);
    }
    if (!writer_first && writer) kids.kill(writer);

    auto t0 = Clock::now();
    LockResult r = m.try_lock_for(30s);
    double ms = ms_since(t0);
    worst_ms = std::max(worst_ms, ms);
    REQUIRE_MESSAGE(owns(r), "lock after the kills returned " << str(r) << " after " << ms << " ms");
    CHECK(ms < kPromptMs);    // the slowest is printed below
    CHECK(m.readers() == 0);  // every reader is dead: their counts were reclaimed
    if (hold) CHECK(r == LockResult::owner_died);
    if (r == LockResult::owner_died) {
      ++owner_died;
      if (s.a != s.b) ++torn;
      s.b = s.a;  // repair
      m.mark_consistent();
    } else {
      CHECK_MESSAGE(s.a == s.b, "acquired (not owner_died) but the data is torn: a=" << s.a << " b=" << s.b);
    }
    m.unlock();
    LockResult rs = m.try_lock_shared_for(5s);
    CHECK(rs == LockResult::acquired);
    if (owns(rs)) {
      CHECK(s.a == s.b);
      m.unlock_shared();
    }
    CHECK(s.errors.load() == 0);
    if (s.errors.load() != 0) break;
  }
  MESSAGE("iterations " << kIterations << ": owner_died " << owner_died << " (torn " << torn << ", deliberate holds "
                        << holds << "), writes " << s.writes.load() << ", reads " << s.reads.load()
                        << ", reader owner_died " << s.reader_owner_died.load() << ", slowest recovery " << worst_ms
                        << " ms");
  CHECK(owner_died >= holds);
  CHECK(torn >= holds);
  CHECK(m.try_lock() == LockResult::acquired);
  m.unlock();
  CHECK(m.try_lock_shared() == LockResult::acquired);
  m.unlock_shared();
}

// ---------------------------------------------------------------------------
// The reader-slot table

TEST_CASE("reader slots: with all slots held by live readers a new reader times out, a dead one's slot is reused") {
  TestDomain d;
  Segment seg = Segment::create("slots", opts(d));
  SharedMutex& m = make_rw(seg);
  HoldBoard& b = make_board<HoldBoard>(seg);
  Children kids;
  std::vector<pid_t> pids;
  for (int i = 0; i < SharedMutex::kReaderSlots; ++i) pids.push_back(kids.spawn([&] { return hold_shared(m, b); }));
  REQUIRE(eventually([&] { return b.holding.load() == SharedMutex::kReaderSlots; }, 20s));
  CHECK(m.readers() == static_cast<std::uint32_t>(SharedMutex::kReaderSlots));

  double cpu0 = cpu_ms();
  auto t0 = Clock::now();
  CHECK(m.try_lock_shared_for(300ms) == LockResult::timed_out);
  double ms = ms_since(t0);
  double cpu = cpu_ms() - cpu0;
  CHECK(ms >= 290.0);
  CHECK_PROMPT(ms, kPromptMs);
  MESSAGE("waiting " << ms << " ms for a reader slot used " << cpu << " ms of CPU");

  kids.kill(pids[0]);
  t0 = Clock::now();
  LockResult r = m.try_lock_shared_for(30s);
  CHECK(r == LockResult::acquired);
  CHECK_PROMPT(ms_since(t0), kPromptMs);
  CHECK(m.readers() == static_cast<std::uint32_t>(SharedMutex::kReaderSlots));  // 31 children + this process
  if (owns(r)) m.unlock_shared();

  b.release.store(1);
  for (std::size_t i = 1; i < pids.size(); ++i) check_exit(kids.wait(pids[i]));
  CHECK(m.readers() == 0);
  CHECK(m.try_lock_for(2s) == LockResult::acquired);
  m.unlock();
}

TEST_CASE("reader slots: live processes that released their read locks do not use up the slot table") {
  // The header: "one slot per process holding read locks"; a reader waits
  // only when all slots are held by live processes holding read locks.
  TestDomain d;
  Segment seg = Segment::create("slots2", opts(d));
  SharedMutex& m = make_rw(seg);
  HoldBoard& b = make_board<HoldBoard>(seg);
  Children kids;
  std::vector<pid_t> pids;
  for (int i = 0; i < SharedMutex::kReaderSlots; ++i) {
    pids.push_back(kids.spawn([&] {
      if (m.lock_shared() != LockResult::acquired) return 1;
      m.unlock_shared();
      b.holding.fetch_add(1);  // done reading, but alive
      return eventually([&] { return b.release.load() != 0; }, 20s) ? 0 : 2;
    }));
  }
  REQUIRE(eventually([&] { return b.holding.load() == SharedMutex::kReaderSlots; }, 20s));
  CHECK(m.readers() == 0);

  double cpu0 = cpu_ms();
  auto t0 = Clock::now();
  LockResult r = m.try_lock_shared_for(60s);  // far longer than the bound below
  double ms = ms_since(t0);
  INFO("try_lock_shared_for(60s) with no read lock held anywhere returned " << str(r) << ", using " << cpu_ms() - cpu0
                                                                            << " ms of CPU");
  CHECK(r == LockResult::acquired);
  CHECK_PROMPT(ms, kPromptMs);
  if (owns(r)) m.unlock_shared();
  b.release.store(1);
  for (pid_t p : pids) check_exit(kids.wait(p));
}

// ---------------------------------------------------------------------------
// Threads of one process (TSan)

TEST_CASE("threads of one process: 3 readers share, 2 writers exclude (TSan)") {
  TestDomain d;
  Segment seg = Segment::create("threads", opts(d));
  SharedMutex& m = make_rw(seg);
  struct Data {
    std::uint64_t a, b;  // guarded
  };
  Data& data = make_board<Data>(seg, "data");
  constexpr int kReaders = 3, kWriters = 2, kWrites = 1500;

  // Phase 1: three reader threads inside at the same time.
  std::atomic<int> inside{0}, peak{0}, errors{0};
  {
    std::vector<std::thread> threads;
    for (int t = 0; t < kReaders; ++t)
      threads.emplace_back([&] {
        if (m.lock_shared() != LockResult::acquired) {
          errors.fetch_add(1);
          return;
        }
        int n = inside.fetch_add(1) + 1;
        int p = peak.load();
        while (n > p && !peak.compare_exchange_weak(p, n)) {
        }
        if (!eventually([&] { return peak.load() == kReaders; })) errors.fetch_add(1);
        inside.fetch_sub(1);
        m.unlock_shared();
      });
    for (auto& t : threads) t.join();
  }
  CHECK(peak.load() == kReaders);
  CHECK(errors.load() == 0);
  CHECK(m.readers() == 0);

  // Phase 2: writers and readers on non-atomic data.
  std::atomic<int> writers_done{0}, writers_in{0}, readers_in{0};
  std::atomic<std::uint64_t> reads{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kWriters; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < kWrites; ++i) {
        if (m.lock() != LockResult::acquired) {
          errors.fetch_add(1);
          break;
        }
        if (writers_in.fetch_add(1) != 0 || readers_in.load() != 0) errors.fetch_add(1);
        std::uint64_t v = data.a;
        data.a = v + 1;
        spin(100);
        if (i % 64 == 0) std::this_thread::yield();
        data.b = v + 1;
        writers_in.fetch_sub(1);
        m.unlock();
      }
      writers_done.fetch_add(1);
    });
  for (int t = 0; t < kReaders; ++t)
    threads.emplace_back([&] {
      auto deadline = Clock::now() + 60s;
      while (writers_done.load() < kWriters && Clock::now() < deadline) {
        if (m.lock_shared() != LockResult::acquired) {
          errors.fetch_add(1);
          break;
        }
        readers_in.fetch_add(1);
        if (writers_in.load() != 0) errors.fetch_add(1);
        std::uint64_t x = data.a;
        spin(50);
        if (x != data.b) errors.fetch_add(1);
        readers_in.fetch_sub(1);
        m.unlock_shared();
        reads.fetch_add(1);
        std::this_thread::yield();
      }
    });
  for (auto& t : threads) t.join();
  CHECK(errors.load() == 0);
  CHECK(writers_done.load() == kWriters);
  CHECK(data.a == std::uint64_t{kWriters} * kWrites);
  CHECK(data.b == data.a);
  CHECK(m.readers() == 0);
  MESSAGE("reads " << reads.load());
}

TEST_CASE(
    "a thread that exits holding a read lock leaves it held while its process lives, stray unlock_shared is ignored") {
  TestDomain d;
  Segment seg = Segment::create("texit", opts(d));
  SharedMutex& m = make_rw(seg);
  LockResult r = LockResult::timed_out;
  std::thread([&] { r = m.lock_shared(); }).join();
  REQUIRE(r == LockResult::acquired);
  CHECK(m.readers() == 1);
  // The process is alive, so a writer's liveness check never reclaims the lock.
  auto t0 = Clock::now();
  CHECK(m.try_lock_for(Mutex::kLivenessSlice * 2 + 50ms) == LockResult::timed_out);
  CHECK(ms_since(t0) >= 240.0);
  CHECK(m.readers() == 1);
  // Read locks are per process: another thread of it releases it.
  m.unlock_shared();
  CHECK(m.readers() == 0);
  CHECK(m.try_lock() == LockResult::acquired);
  m.unlock();

  // unlock_shared without a read lock: logged and ignored (no underflow).
  m.unlock_shared();
  CHECK(m.readers() == 0);
  REQUIRE(m.try_lock_shared() == LockResult::acquired);
  m.unlock_shared();
  m.unlock_shared();
  CHECK(m.readers() == 0);
  CHECK(m.try_lock() == LockResult::acquired);
  m.unlock();
}

// ---------------------------------------------------------------------------
// kForever

TEST_CASE("try_lock_for(kForever) and try_lock_shared_for(kForever) block until the other process unlocks") {
  TestDomain d;
  Segment seg = Segment::create("forever", opts(d));
  SharedMutex& m = make_rw(seg);
  struct Board {
    std::atomic<int> holding, waiting;
    std::atomic<std::int64_t> released_ns;  // set just before the unlock
  };
  Board& b = make_board<Board>(seg);
  Children kids;
  // The other process holds the lock in the mode that excludes ours
  // (`exclusive`), releases it ~200 ms after we start waiting.
  auto holder = [&](bool exclusive) {
    return kids.spawn([&, exclusive] {
      LockResult r = exclusive ? m.lock() : m.lock_shared();
      if (r != LockResult::acquired) return 1;
      b.holding.store(1);
      if (!eventually([&] { return b.waiting.load() != 0; })) return 2;
      std::this_thread::sleep_for(200ms);
      b.released_ns.store(now_ns());
      if (exclusive)
        m.unlock();
      else
        m.unlock_shared();
      return 0;
    });
  };
  SUBCASE("try_lock_for(kForever) waits for a reader") {
    pid_t p = holder(false);
    REQUIRE(eventually([&] { return b.holding.load() != 0; }));
    b.waiting.store(1);
    LockResult r = m.try_lock_for(ipc::kForever);
    const std::int64_t returned_ns = now_ns();
    CHECK_MESSAGE(r == LockResult::acquired, "try_lock_for(kForever) returned " << str(r));
    CHECK_RETURNED_AFTER(b.released_ns.load(), returned_ns, "try_lock_for(kForever)");
    if (owns(r)) m.unlock();
    check_exit(kids.wait(p), "reader");
  }
  SUBCASE("try_lock_shared_for(kForever) waits for a writer") {
    pid_t p = holder(true);
    REQUIRE(eventually([&] { return b.holding.load() != 0; }));
    b.waiting.store(1);
    LockResult r = m.try_lock_shared_for(ipc::kForever);
    const std::int64_t returned_ns = now_ns();
    CHECK_MESSAGE(r == LockResult::acquired, "try_lock_shared_for(kForever) returned " << str(r));
    CHECK_RETURNED_AFTER(b.released_ns.load(), returned_ns, "try_lock_shared_for(kForever)");
    if (owns(r)) m.unlock_shared();
    check_exit(kids.wait(p), "writer");
  }
  CHECK(m.readers() == 0);
}
