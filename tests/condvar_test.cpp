// CondVar: producer/consumer across processes (no lost wake-ups), timeouts
// that return with the mutex owned, notify_all / notify_one across processes,
// a waiter SIGKILLed while waiting, a mutex holder SIGKILLed (the relock
// reports owner_died), the predicate forms, threads of one process.
//
// Labelled "threads": the in-process threaded tests also run under TSan. The
// fork-based tests fork only while the parent is single-threaded.
#include <doctest/doctest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "ipc/condvar.hpp"
#include "ipc/mutex.hpp"
#include "ipc/segment.hpp"
#include "support.hpp"

using namespace ipc;
using namespace std::chrono_literals;
using ipc::test::kHangMs;
using ipc::test::kPromptMs;
using ipc::test::ms_between;
using ipc::test::ms_since;
using ipc::test::now_ns;
using ipc::test::opts;
using ipc::test::str;
using ipc::test::TestDomain;

using ipc::test::check_exit;
using ipc::test::Children;
using ipc::test::eventually;
using ipc::test::make_board;

using Clock = std::chrono::steady_clock;

namespace {

Mutex& make_mutex(Segment& seg, const char* name = "m") { return seg.find_or_create<Mutex>(name, ObjectType::mutex); }
CondVar& make_cv(Segment& seg, const char* name = "cv") {
  return seg.find_or_create<CondVar>(name, ObjectType::condvar);
}

std::string str_code(int result_plus_one) {
  return result_plus_one == 0 ? std::string("(none)")
                              : std::string(to_string(static_cast<LockResult>(result_plus_one - 1)));
}

// ---------------------------------------------------------------------------
// Producer/consumer through a one-slot buffer. Producers notify under the
// lock, consumers after unlocking (both are legal). Every wait has a 10 s
// deadline; a lost wake-up shows up as a timeout.

constexpr std::uint32_t kMaxItems = 10000;

struct PcState {
  // Guarded by the mutex.
  bool full;
  std::uint32_t item;
  std::uint32_t consumed;
  std::uint64_t sum;
  std::uint64_t waits;
  std::uint8_t seen[kMaxItems];
};

int produce(Mutex& m, CondVar& not_full, CondVar& not_empty, PcState& s, std::uint32_t from, std::uint32_t to) {
  for (std::uint32_t i = from; i < to; ++i) {
    LockResult r = m.lock();
    if (r != LockResult::acquired) return 10 + static_cast<int>(r);
    while (s.full) {
      ++s.waits;
      CondWait w = not_full.wait_for(m, 10s);
      if (w.lock != LockResult::acquired) return 20 + static_cast<int>(w.lock);
      if (w.timed_out && s.full) {
        m.unlock();
        return 3;  // a lost wake-up
      }
    }
    s.item = i;
    s.full = true;
    not_empty.notify_one();
    m.unlock();
  }
  return 0;
}

int consume(Mutex& m, CondVar& not_full, CondVar& not_empty, PcState& s, std::uint32_t total) {
  for (;;) {
    LockResult r = m.lock();
    if (r != LockResult::acquired) return 10 + static_cast<int>(r);
    while (!s.full && s.consumed < total) {
      ++s.waits;
      CondWait w = not_empty.wait_for(m, 10s);
      if (w.lock != LockResult::acquired) return 20 + static_cast<int>(w.lock);
      if (w.timed_out && !s.full && s.consumed < total) {
        m.unlock();
        return 4;  // a lost wake-up
      }
    }
    if (s.consumed == total) {
      m.unlock();
      return 0;
    }
    std::uint32_t x = s.item;
    s.full = false;
    ++s.consumed;
    s.sum += x;
    if (x < kMaxItems) ++s.seen[x];
    bool last = s.consumed == total;
    m.unlock();
    not_full.notify_one();
    if (last) not_empty.notify_all();  // let the other consumers see the end
  }
}

void check_pc_result(const PcState& s, std::uint32_t total) {
  CHECK(s.consumed == total);
  CHECK_FALSE(s.full);
  CHECK(s.sum == std::uint64_t{total} * (total - 1) / 2);
  int missing = 0, duplicated = 0;
  for (std::uint32_t i = 0; i < total; ++i) {
    missing += s.seen[i] == 0;
    duplicated += s.seen[i] > 1;
  }
  CHECK(missing == 0);
  CHECK(duplicated == 0);
  MESSAGE(total << " items, " << s.waits << " waits");
}

}  // namespace

TEST_CASE("producer/consumer across 4 processes: 10000 handoffs through a 1-slot buffer, nothing lost") {
  TestDomain d;
  Segment seg = Segment::create("pc", opts(d));
  Mutex& m = make_mutex(seg);
  CondVar& not_full = make_cv(seg, "not_full");
  CondVar& not_empty = make_cv(seg, "not_empty");
  PcState& s = make_board<PcState>(seg, "state");
  struct Go {
    std::atomic<int> ready, go;
  };
  Go& g = make_board<Go>(seg, "go");
  constexpr std::uint32_t kItems = kMaxItems, kProducers = 2, kConsumers = 2;
  Children kids;
  std::vector<pid_t> pids;
  auto start = [&] {
    g.ready.fetch_add(1);
    return eventually([&] { return g.go.load() != 0; });
  };
  for (std::uint32_t p = 0; p < kProducers; ++p)
    pids.push_back(kids.spawn([&, p] {
      if (!start()) return 1;
      return produce(m, not_full, not_empty, s, p * kItems / kProducers, (p + 1) * kItems / kProducers);
    }));
  for (std::uint32_t c = 0; c < kConsumers; ++c)
    pids.push_back(kids.spawn([&] {
      if (!start()) return 1;
      return consume(m, not_full, not_empty, s, kItems);
    }));
  REQUIRE(eventually([&] { return g.ready.load() == static_cast<int>(kProducers + kConsumers); }));
  auto t0 = Clock::now();
  g.go.store(1);
  for (pid_t p : pids) check_exit(kids.wait(p, 60s));
  MESSAGE("took " << ms_since(t0) << " ms");
  REQUIRE(m.try_lock_for(5s) == LockResult::acquired);
  check_pc_result(s, kItems);
  m.unlock();
}

// ---------------------------------------------------------------------------
// Timeouts

TEST_CASE("wait_for with nobody notifying times out and returns with the mutex owned") {
  TestDomain d;
  Segment seg = Segment::create("timeout", opts(d));
  Mutex& m = make_mutex(seg);
  CondVar& cv = make_cv(seg);
  Children kids;

  REQUIRE(m.lock() == LockResult::acquired);
  auto t0 = Clock::now();
  CondWait w = cv.wait_for(m, 100ms);
  double ms = ms_since(t0);
  CHECK(w.timed_out);
  CHECK(w.lock == LockResult::acquired);
  CHECK(w.owns_lock());
  CHECK(ms >= 90.0);
  CHECK_PROMPT(ms, kPromptMs);
  // This thread owns the mutex again: relocking is refused, another process cannot take it.
  CHECK(m.lock() == LockResult::deadlock);
  CHECK(m.info().owner_pid == static_cast<std::uint32_t>(::getpid()));
  pid_t probe = kids.spawn([&] { return m.try_lock() == LockResult::timed_out ? 0 : 1; });
  check_exit(kids.wait(probe), "probe");

  // Longer than a liveness slice.
  t0 = Clock::now();
  w = cv.wait_for(m, Mutex::kLivenessSlice * 3 + 50ms);
  ms = ms_since(t0);
  CHECK(w.timed_out);
  CHECK(w.lock == LockResult::acquired);
  CHECK(ms >= 340.0);
  CHECK_PROMPT(ms, kPromptMs);

  // Deadlines in the past return at once, still owning the mutex.
  t0 = Clock::now();
  w = cv.wait_until(m, Clock::now() - 1s);
  CHECK(w.timed_out);
  CHECK(w.lock == LockResult::acquired);
  w = cv.wait_for(m, 0ns);
  CHECK(w.timed_out);
  CHECK(w.lock == LockResult::acquired);
  CHECK_PROMPT(ms_since(t0), kPromptMs);

  // Predicate forms: false until the deadline → timed_out; true → returns at once.
  t0 = Clock::now();
  w = cv.wait_for(m, 100ms, [] { return false; });
  ms = ms_since(t0);
  CHECK(w.timed_out);
  CHECK(w.lock == LockResult::acquired);
  CHECK(ms >= 90.0);
  CHECK_PROMPT(ms, kPromptMs);
  t0 = Clock::now();
  w = cv.wait_for(m, 60s, [] { return true; });  // far longer than the bound below
  CHECK_FALSE(w.timed_out);
  CHECK(w.lock == LockResult::acquired);
  CHECK_PROMPT(ms_since(t0), kPromptMs);
  CHECK(m.lock() == LockResult::deadlock);
  m.unlock();

  // A notify nobody waits for is not remembered.
  cv.notify_all();
  cv.notify_one();
  REQUIRE(m.lock() == LockResult::acquired);
  t0 = Clock::now();
  w = cv.wait_for(m, 50ms);
  CHECK(w.timed_out);
  CHECK(ms_since(t0) >= 45.0);
  m.unlock();
  CHECK(cv.waiters() == 0);
}

TEST_CASE("a timed-out waiter's relock waits for the process holding the mutex") {
  TestDomain d;
  Segment seg = Segment::create("relock", opts(d));
  Mutex& m = make_mutex(seg);
  CondVar& cv = make_cv(seg);
  struct Board {
    std::atomic<int> holding;
  };
  Board& b = make_board<Board>(seg);
  Children kids;
  REQUIRE(m.lock() == LockResult::acquired);
  pid_t holder = kids.spawn([&] {
    if (!eventually([&] { return cv.waiters() == 1; })) return 1;
    if (m.lock() != LockResult::acquired) return 2;  // possible once the waiter released it
    b.holding.store(1);
    std::this_thread::sleep_for(400ms);
    m.unlock();
    return 0;
  });
  auto t0 = Clock::now();
  CondWait w = cv.wait_for(m, 100ms);
  double ms = ms_since(t0);
  CHECK(w.timed_out);
  CHECK(w.lock == LockResult::acquired);
  CHECK(b.holding.load() == 1);
  CHECK(ms >= 350.0);  // the holder kept it ~400 ms
  CHECK_PROMPT(ms, kPromptMs);
  CHECK(m.lock() == LockResult::deadlock);  // owned by this thread
  m.unlock();
  check_exit(kids.wait(holder));
}

// ---------------------------------------------------------------------------
// Notify across processes

TEST_CASE("notify_all wakes waiters in 3 processes (each with its own mapping)") {
  TestDomain d;
  Segment seg = Segment::create("all", opts(d));
  Mutex& m = make_mutex(seg);
  CondVar& cv = make_cv(seg);
  struct Board {
    int go;  // guarded by m
    std::atomic<std::int64_t> woke_ns[3];
  };
  Board& b = make_board<Board>(seg);
  Children kids;
  std::vector<pid_t> pids;
  for (int i = 0; i < 3; ++i) {
    pids.push_back(kids.spawn([&, i] {
      Segment own = Segment::open("all", {.domain = d.name()});
      Mutex& om = own.open<Mutex>("m", ObjectType::mutex);
      CondVar& ocv = own.open<CondVar>("cv", ObjectType::condvar);
      Board& ob = own.open<Board>("board", ObjectType::raw);
      if (om.lock() != LockResult::acquired) return 1;
      while (ob.go == 0) {
        CondWait w = ocv.wait_for(om, 10s);
        if (w.lock != LockResult::acquired) return 10 + static_cast<int>(w.lock);
        if (w.timed_out && ob.go == 0) {
          om.unlock();
          return 3;
        }
      }
      ob.woke_ns[i].store(now_ns());
      om.unlock();
      return 0;
    }));
  }
  REQUIRE_MESSAGE(eventually([&] { return cv.waiters() == 3; }), "waiters " << cv.waiters());
  std::this_thread::sleep_for(50ms);  // let them reach the futex wait
  REQUIRE(m.lock() == LockResult::acquired);
  b.go = 1;
  std::int64_t notified_ns = now_ns();
  cv.notify_all();
  m.unlock();
  for (int i = 0; i < 3; ++i) {
    check_exit(kids.wait(pids[i]), "waiter " + std::to_string(i));
    double ms = ms_between(notified_ns, b.woke_ns[i].load());
    INFO("waiter " << i << " woke after notify_all");
    CHECK(b.woke_ns[i].load() != 0);
    CHECK_PROMPT(ms, kPromptMs);
  }
  CHECK(cv.waiters() == 0);
}

namespace {

// Waiters that each consume one token; `tokens` and `done` guarded by m.
struct TokenBoard {
  int tokens;
  int done;
  std::atomic<int> errors;
};
int token_waiter(Mutex& m, CondVar& cv, TokenBoard& b) {
  if (m.lock() != LockResult::acquired) return 1;
  while (b.tokens == 0) {
    CondWait w = cv.wait_for(m, 10s);
    if (w.lock != LockResult::acquired) return 10 + static_cast<int>(w.lock);
    if (w.timed_out && b.tokens == 0) {
      m.unlock();
      return 3;
    }
  }
  --b.tokens;
  ++b.done;
  m.unlock();
  return 0;
}
int done_count(Mutex& m, TokenBoard& b) {
  if (m.try_lock_for(5s) != LockResult::acquired) return -1;
  int n = b.done;
  m.unlock();
  return n;
}
void give_token(Mutex& m, CondVar& cv, TokenBoard& b) {
  REQUIRE(m.try_lock_for(5s) == LockResult::acquired);
  ++b.tokens;
  cv.notify_one();
  m.unlock();
}

}  // namespace

TEST_CASE("notify_one wakes one waiter per call across processes") {
  TestDomain d;
  Segment seg = Segment::create("one", opts(d));
  Mutex& m = make_mutex(seg);
  CondVar& cv = make_cv(seg);
  TokenBoard& b = make_board<TokenBoard>(seg);
  Children kids;
  std::vector<pid_t> pids;
  for (int i = 0; i < 3; ++i) pids.push_back(kids.spawn([&] { return token_waiter(m, cv, b); }));
  REQUIRE(eventually([&] { return cv.waiters() == 3; }));
  std::this_thread::sleep_for(50ms);
  for (int round = 1; round <= 3; ++round) {
    INFO("round " << round);
    auto t0 = Clock::now();
    give_token(m, cv, b);
    CHECK(eventually([&] { return done_count(m, b) == round; }, 20s));
    CHECK_PROMPT(ms_since(t0), kHangMs);
    std::this_thread::sleep_for(50ms);
    CHECK(done_count(m, b) == round);  // exactly one left per token
  }
  for (pid_t p : pids) check_exit(kids.wait(p));
  CHECK(cv.waiters() == 0);
}

// ---------------------------------------------------------------------------
// Crashes

TEST_CASE("a waiter SIGKILLed while waiting does not break the other waiters or the notifiers") {
  TestDomain d;
  Segment seg = Segment::create("wkill", opts(d));
  Mutex& m = make_mutex(seg);
  CondVar& cv = make_cv(seg);
  TokenBoard& b = make_board<TokenBoard>(seg);
  Children kids;
  std::vector<pid_t> pids;
  for (int i = 0; i < 3; ++i) pids.push_back(kids.spawn([&] { return token_waiter(m, cv, b); }));
  REQUIRE(eventually([&] { return cv.waiters() == 3; }));
  std::this_thread::sleep_for(50ms);
  kids.kill(pids[0]);

  // The victim held nothing: the mutex is free and healthy.
  CHECK(m.try_lock_for(1s) == LockResult::acquired);
  m.unlock();
  CHECK(cv.waiters() >= 2);
  CHECK(cv.waiters() <= 3);  // the dead waiter may leave the hint one too high

  for (int round = 1; round <= 2; ++round) {
    INFO("round " << round);
    give_token(m, cv, b);
    CHECK(eventually([&] { return done_count(m, b) == round; }, 5s));
  }
  for (std::size_t i = 1; i < pids.size(); ++i) check_exit(kids.wait(pids[i]));
  CHECK(cv.waiters() <= 1);

  // New waiters and notify_all still work with the stale hint.
  pids.clear();
  for (int i = 0; i < 2; ++i) pids.push_back(kids.spawn([&] { return token_waiter(m, cv, b); }));
  REQUIRE(eventually([&] { return cv.waiters() >= 2; }));
  std::this_thread::sleep_for(50ms);
  REQUIRE(m.try_lock_for(5s) == LockResult::acquired);
  b.tokens += 2;
  cv.notify_all();
  m.unlock();
  for (pid_t p : pids) check_exit(kids.wait(p));
  CHECK(done_count(m, b) == 4);
}

namespace {

struct KillBoard {
  std::uint64_t a, b;  // guarded; a == b when consistent
  int ready;           // guarded
  std::atomic<int> holding;
  std::atomic<int> lock_result;  // LockResult + 1
  std::atomic<int> timed_out;    // bool + 1
  std::atomic<int> not_recoverable_after;
  std::atomic<std::int64_t> got_ns;
};

// The holder: waits until the waiter is inside wait(), locks the mutex,
// optionally notifies, tears the data and waits to be SIGKILLed.
int doomed_holder(Mutex& m, CondVar& cv, KillBoard& b, bool notify) {
  if (!eventually([&] { return cv.waiters() == 1; })) return 1;
  if (m.lock() != LockResult::acquired) return 2;
  b.a = b.a + 1;  // half an update
  if (notify) cv.notify_all();
  b.holding.store(1);
  std::this_thread::sleep_for(30s);
  return 3;
}

void record(KillBoard& b, Mutex& m, const CondWait& w) {
  b.got_ns.store(now_ns());
  b.timed_out.store(w.timed_out ? 2 : 1);
  if (w.lock == LockResult::owner_died) {
    b.b = b.a;  // repair
    m.mark_consistent();
  }
  if (w.owns_lock()) m.unlock();
  b.not_recoverable_after.store(m.info().not_recoverable ? 1 : 0);
  b.lock_result.store(static_cast<int>(w.lock) + 1);
}

void killed_holder_case(bool notify) {
  TestDomain d;
  Segment seg = Segment::create("hkill", opts(d));
  Mutex& m = make_mutex(seg);
  CondVar& cv = make_cv(seg);
  KillBoard& b = make_board<KillBoard>(seg);
  Children kids;
  pid_t waiter = kids.spawn([&] {
    if (m.lock() != LockResult::acquired) return 1;
    // Notified: wakes at once, then blocks in the relock. Not notified: times
    // out after 300 ms, then blocks in the relock.
    CondWait w = cv.wait_for(m, notify ? 10s : 300ms);
    record(b, m, w);
    return 0;
  });
  pid_t holder = kids.spawn([&] { return doomed_holder(m, cv, b, notify); });
  REQUIRE(eventually([&] { return b.holding.load() != 0; }));
  std::this_thread::sleep_for(notify ? 100ms : 500ms);  // the waiter is blocked in the relock
  CHECK(b.lock_result.load() == 0);

  std::int64_t killed_ns = now_ns();
  kids.kill(holder);
  check_exit(kids.wait(waiter), "waiter");
  INFO("waiter's relock: " << str_code(b.lock_result.load()));
  CHECK(b.lock_result.load() == static_cast<int>(LockResult::owner_died) + 1);
  CHECK(b.timed_out.load() == (notify ? 1 : 2));
  CHECK_PROMPT(ms_between(killed_ns, b.got_ns.load()), kPromptMs);
  CHECK(b.not_recoverable_after.load() == 0);
  REQUIRE(m.try_lock_for(2s) == LockResult::acquired);  // repaired by the waiter
  CHECK(b.a == b.b);
  m.unlock();
}

}  // namespace

TEST_CASE("a notifier SIGKILLed holding the mutex: the woken waiter's relock returns owner_died") {
  killed_holder_case(true);
}

TEST_CASE("a process SIGKILLed holding the mutex: a timed-out waiter's relock returns owner_died") {
  killed_holder_case(false);
}

TEST_CASE("predicate wait_for hands owner_died to the caller instead of unlocking the unrepaired mutex") {
  // The header: "The relock in W6 reports owner_died like Mutex::lock(): the
  // caller owns the mutex and must repair". The predicate form must not
  // release an owner_died mutex (that makes it not_recoverable for everyone).
  TestDomain d;
  Segment seg = Segment::create("pkill", opts(d));
  Mutex& m = make_mutex(seg);
  CondVar& cv = make_cv(seg);
  KillBoard& b = make_board<KillBoard>(seg);
  Children kids;
  pid_t waiter = kids.spawn([&] {
    if (m.lock() != LockResult::acquired) return 1;
    CondWait w = cv.wait_for(m, 2s, [&] { return b.ready != 0; });
    record(b, m, w);
    return 0;
  });
  pid_t holder = kids.spawn([&] { return doomed_holder(m, cv, b, true); });  // notifies, never sets ready
  REQUIRE(eventually([&] { return b.holding.load() != 0; }));
  std::this_thread::sleep_for(100ms);
  kids.kill(holder);
  check_exit(kids.wait(waiter), "waiter");
  INFO("predicate wait returned lock=" << str_code(b.lock_result.load()) << " timed_out=" << b.timed_out.load() - 1);
  CHECK(b.lock_result.load() == static_cast<int>(LockResult::owner_died) + 1);
  CHECK(b.not_recoverable_after.load() == 0);
  LockResult r = m.try_lock_for(2s);
  CHECK_MESSAGE(r == LockResult::acquired, "mutex after the predicate wait: " << str(r));
  if (owns(r)) m.unlock();
}

// ---------------------------------------------------------------------------
// Threads of one process (TSan)

TEST_CASE("threads of one process: producer/consumer and notify_all (TSan)") {
  TestDomain d;
  Segment seg = Segment::create("threads", opts(d));
  Mutex& m = make_mutex(seg);
  CondVar& not_full = make_cv(seg, "not_full");
  CondVar& not_empty = make_cv(seg, "not_empty");
  PcState& s = make_board<PcState>(seg, "state");
  constexpr std::uint32_t kItems = 4000;
  std::atomic<int> errors{0};
  {
    std::vector<std::thread> threads;
    for (std::uint32_t p = 0; p < 2; ++p)
      threads.emplace_back([&, p] {
        if (int rc = produce(m, not_full, not_empty, s, p * kItems / 2, (p + 1) * kItems / 2)) errors.store(rc);
      });
    for (int c = 0; c < 2; ++c)
      threads.emplace_back([&] {
        if (int rc = consume(m, not_full, not_empty, s, kItems)) errors.store(rc);
      });
    for (auto& t : threads) t.join();
  }
  CHECK(errors.load() == 0);
  REQUIRE(m.lock() == LockResult::acquired);
  check_pc_result(s, kItems);
  m.unlock();

  // notify_all releases 3 waiting threads.
  CondVar& cv = make_cv(seg);
  int go = 0;  // guarded by m
  std::atomic<int> woke{0};
  {
    std::vector<std::thread> threads;
    for (int t = 0; t < 3; ++t)
      threads.emplace_back([&] {
        if (m.lock() != LockResult::acquired) {
          errors.fetch_add(1);
          return;
        }
        CondWait w = cv.wait_for(m, 10s, [&] { return go != 0; });
        if (w.timed_out || w.lock != LockResult::acquired) errors.fetch_add(1);
        if (w.owns_lock()) m.unlock();
        woke.fetch_add(1);
      });
    CHECK(eventually([&] { return cv.waiters() == 3; }));
    // No REQUIRE while threads run: a throw here would destroy joinable threads.
    LockResult r = m.lock();
    CHECK(r == LockResult::acquired);
    go = 1;
    cv.notify_all();
    if (owns(r)) m.unlock();
    for (auto& t : threads) t.join();
  }
  CHECK(woke.load() == 3);
  CHECK(errors.load() == 0);
  CHECK(cv.waiters() == 0);
}

// ---------------------------------------------------------------------------
// kForever

namespace {

// A process that, once `waiting` is set and the waiter is inside the wait,
// sleeps ~200 ms, then under the mutex sets `go`, stamps `released_ns` and
// notifies.
struct ForeverBoard {
  int go;  // guarded by the mutex
  std::atomic<int> waiting;
  std::atomic<std::int64_t> released_ns;
};
int notify_later(Mutex& m, CondVar& cv, ForeverBoard& b) {
  if (!eventually([&] { return b.waiting.load() != 0 && cv.waiters() == 1; })) return 1;
  std::this_thread::sleep_for(200ms);
  if (m.try_lock_for(10s) != LockResult::acquired) return 2;
  b.go = 1;
  b.released_ns.store(now_ns());
  cv.notify_all();
  m.unlock();
  return 0;
}

}  // namespace

TEST_CASE("wait_for(kForever), plain and with a predicate, blocks until another process notifies") {
  TestDomain d;
  Segment seg = Segment::create("forever", opts(d));
  Mutex& m = make_mutex(seg);
  CondVar& cv = make_cv(seg);
  ForeverBoard& b = make_board<ForeverBoard>(seg);
  Children kids;
  for (bool predicate : {false, true}) {
    CAPTURE(predicate);
    b.go = 0;
    b.waiting.store(0);
    b.released_ns.store(0);
    pid_t notifier = kids.spawn([&] { return notify_later(m, cv, b); });
    REQUIRE(m.lock() == LockResult::acquired);
    b.waiting.store(1);
    CondWait w = predicate ? cv.wait_for(m, ipc::kForever, [&] { return b.go != 0; }) : cv.wait_for(m, ipc::kForever);
    const std::int64_t returned_ns = now_ns();
    CHECK_FALSE(w.timed_out);
    CHECK_MESSAGE(w.lock == LockResult::acquired, "relock: " << str(w.lock));
    CHECK_RETURNED_AFTER(b.released_ns.load(), returned_ns, "wait_for(kForever)");
    CHECK(b.go == 1);
    if (w.owns_lock()) m.unlock();
    check_exit(kids.wait(notifier), "notifier");
  }
}
