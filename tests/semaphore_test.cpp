// Semaphore: post/wait handoff across processes, owned permits returned when
// their holder is SIGKILLed (through a blocked acquirer's liveness slice and
// through reclaim_dead()), release() rules, try/timed variants, the holder
// table limit, saturation, SIGKILL at random points.
//
// Not labelled "threads": every test here uses processes only.
#include <doctest/doctest.h>
#include <signal.h>
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
#include "ipc/semaphore.hpp"
#include "support.hpp"

using namespace ipc;
using namespace std::chrono_literals;
using ipc::test::kPromptMs;
using ipc::test::ms_between;
using ipc::test::ms_since;
using ipc::test::now_ns;
using ipc::test::opts;
using ipc::test::spin;
using ipc::test::str;
using ipc::test::TestDomain;

using ipc::test::check_exit;
using ipc::test::Children;
using ipc::test::eventually;
using ipc::test::make_board;

using Clock = std::chrono::steady_clock;

namespace {

Semaphore& make_sem(Segment& seg, std::uint32_t initial, const char* name = "sem") {
  return seg.find_or_create<Semaphore>(name, ObjectType::semaphore, initial);
}

std::string str_code(int result_plus_one) {
  return result_plus_one == 0 ? std::string("(none)")
                              : std::string(to_string(static_cast<SemaphoreResult>(result_plus_one - 1)));
}

// A child that acquires `n` owned permits and holds them until `release`
// is set (then releases them) or until it is SIGKILLed.
struct HoldBoard {
  std::atomic<int> holding;
  std::atomic<int> release;
};
int hold_permits(Semaphore& s, HoldBoard& b, int n) {
  for (int i = 0; i < n; ++i)
    if (s.acquire_for(5s) != SemaphoreResult::acquired) return 1;
  if (s.held_by_me() != static_cast<std::uint32_t>(n)) return 2;
  b.holding.fetch_add(1);
  if (!eventually([&] { return b.release.load() != 0; }, 30s)) return 3;
  for (int i = 0; i < n; ++i)
    if (!s.release()) return 4;
  return s.held_by_me() == 0 ? 0 : 5;
}

}  // namespace

// ---------------------------------------------------------------------------
// Signals: post / wait

TEST_CASE("post/wait ping-pong across processes: 2000 round trips, nothing lost") {
  TestDomain d;
  Segment seg = Segment::create("pingpong", opts(d));
  Semaphore& ping = make_sem(seg, 0, "ping");
  Semaphore& pong = make_sem(seg, 0, "pong");
  constexpr int kRounds = 2000;
  Children kids;
  pid_t child = kids.spawn([&] {
    // Its own mapping: another address, same futex words.
    Segment own = Segment::open("pingpong", {.domain = d.name()});
    Semaphore& oping = own.open<Semaphore>("ping", ObjectType::semaphore);
    Semaphore& opong = own.open<Semaphore>("pong", ObjectType::semaphore);
    for (int i = 0; i < kRounds; ++i) {
      SemaphoreResult r = oping.wait_for(10s);
      if (r != SemaphoreResult::acquired) return 10 + static_cast<int>(r);
      opong.post();
    }
    return 0;
  });
  auto t0 = Clock::now();
  int failures = 0;
  for (int i = 0; i < kRounds && failures == 0; ++i) {
    ping.post();
    if (pong.wait_for(10s) != SemaphoreResult::acquired) ++failures;
  }
  CHECK(failures == 0);
  check_exit(kids.wait(child));
  MESSAGE(kRounds << " round trips took " << ms_since(t0) << " ms");
  CHECK(ping.available() == 0);
  CHECK(pong.available() == 0);
  CHECK_FALSE(ping.try_wait());
}

TEST_CASE("3 posting processes and 2 waiting processes: every permit is consumed exactly once") {
  TestDomain d;
  Segment seg = Segment::create("many", opts(d));
  Semaphore& s = make_sem(seg, 0);
  struct Board {
    std::atomic<int> go;
    std::atomic<int> consumed;
  };
  Board& b = make_board<Board>(seg);
  constexpr int kPosters = 3, kPerPoster = 1000, kWaiters = 2, kTotal = kPosters * kPerPoster;
  Children kids;
  std::vector<pid_t> pids;
  for (int p = 0; p < kPosters; ++p)
    pids.push_back(kids.spawn([&, p] {
      if (!eventually([&] { return b.go.load() != 0; })) return 1;
      for (int i = 0; i < kPerPoster;) {
        std::uint32_t n = i % 3 == 0 && i + 1 < kPerPoster ? 2 : 1;  // sometimes 2 at once
        s.post(n);
        i += static_cast<int>(n);
        if (i % 50 == p) std::this_thread::yield();
      }
      return 0;
    }));
  for (int w = 0; w < kWaiters; ++w)
    pids.push_back(kids.spawn([&] {
      if (!eventually([&] { return b.go.load() != 0; })) return 1;
      auto deadline = Clock::now() + 30s;
      while (b.consumed.load() < kTotal) {
        if (Clock::now() > deadline) return 2;
        SemaphoreResult r = s.wait_for(200ms);  // a timeout is fine: the other waiter may take the rest
        if (r == SemaphoreResult::acquired)
          b.consumed.fetch_add(1);
        else if (r != SemaphoreResult::timed_out)
          return 10 + static_cast<int>(r);
      }
      return 0;
    }));
  b.go.store(1);
  for (pid_t p : pids) check_exit(kids.wait(p, 60s));
  CHECK(b.consumed.load() == kTotal);
  CHECK(s.available() == 0);
  CHECK_FALSE(s.try_wait());
}

// ---------------------------------------------------------------------------
// Try and timed variants

TEST_CASE("try_wait and try_acquire on 0 fail at once, wait_for and acquire_for time out") {
  TestDomain d;
  Segment seg = Segment::create("empty", opts(d));
  Semaphore& s = make_sem(seg, 0);
  CHECK(s.available() == 0);
  auto t0 = Clock::now();
  CHECK_FALSE(s.try_wait());
  CHECK_FALSE(s.try_acquire());
  CHECK(s.wait_for(0ns) == SemaphoreResult::timed_out);
  CHECK(s.acquire_for(-1s) == SemaphoreResult::timed_out);
  CHECK_PROMPT(ms_since(t0), kPromptMs);

  t0 = Clock::now();
  CHECK(s.wait_for(100ms) == SemaphoreResult::timed_out);
  double ms = ms_since(t0);
  CHECK(ms >= 90.0);
  CHECK_PROMPT(ms, kPromptMs);
  t0 = Clock::now();
  CHECK(s.acquire_for(100ms) == SemaphoreResult::timed_out);
  ms = ms_since(t0);
  CHECK(ms >= 90.0);
  CHECK_PROMPT(ms, kPromptMs);
  // Across several liveness slices (each ends in a reclaim_dead()).
  t0 = Clock::now();
  CHECK(s.acquire_for(Mutex::kLivenessSlice * 3 + 50ms) == SemaphoreResult::timed_out);
  ms = ms_since(t0);
  CHECK(ms >= 340.0);
  CHECK_PROMPT(ms, kPromptMs);
  CHECK(s.available() == 0);
  CHECK(s.held_by_me() == 0);

  s.post();
  CHECK(s.available() == 1);
  CHECK(s.try_wait());
  CHECK_FALSE(s.try_wait());
  s.post(2);
  CHECK(s.try_acquire());
  CHECK(s.held_by_me() == 1);
  CHECK(s.available() == 1);
  CHECK(s.release());
  CHECK(s.available() == 2);
}

TEST_CASE("a waiter blocked in wait_for is woken by a post from another process") {
  TestDomain d;
  Segment seg = Segment::create("wake", opts(d));
  Semaphore& s = make_sem(seg, 0);
  struct Board {
    std::atomic<int> waiting, result;  // SemaphoreResult + 1
    std::atomic<std::int64_t> got_ns;
  };
  Board& b = make_board<Board>(seg);
  Children kids;
  pid_t waiter = kids.spawn([&] {
    b.waiting.store(1);
    SemaphoreResult r = s.wait_for(10s);
    b.got_ns.store(now_ns());
    b.result.store(static_cast<int>(r) + 1);
    return r == SemaphoreResult::acquired ? 0 : 1;
  });
  REQUIRE(eventually([&] { return b.waiting.load() != 0; }));
  std::this_thread::sleep_for(250ms);  // asleep, through a couple of slices
  CHECK(b.result.load() == 0);
  std::int64_t posted_ns = now_ns();
  s.post();
  check_exit(kids.wait(waiter));
  CHECK(b.result.load() == static_cast<int>(SemaphoreResult::acquired) + 1);
  CHECK_PROMPT(ms_between(posted_ns, b.got_ns.load()), kPromptMs);
  CHECK(s.available() == 0);
}

// ---------------------------------------------------------------------------
// Owned permits

TEST_CASE("release() without holding returns false and changes nothing, post/wait permits are not owned") {
  TestDomain d;
  Segment seg = Segment::create("release", opts(d));
  Semaphore& s = make_sem(seg, 3);
  HoldBoard& b = make_board<HoldBoard>(seg);
  Children kids;
  CHECK_FALSE(s.release());
  CHECK(s.available() == 3);

  pid_t holder = kids.spawn([&] { return hold_permits(s, b, 1); });
  REQUIRE(eventually([&] { return b.holding.load() != 0; }));
  CHECK(s.available() == 2);
  CHECK(s.held_by_me() == 0);
  CHECK_FALSE(s.release());  // the child's permit is not ours
  CHECK(s.available() == 2);

  CHECK(s.try_acquire());
  CHECK(s.try_acquire());
  CHECK(s.held_by_me() == 2);
  CHECK(s.available() == 0);
  CHECK_FALSE(s.try_acquire());
  CHECK(s.release());
  CHECK(s.release());
  CHECK_FALSE(s.release());
  CHECK(s.held_by_me() == 0);
  CHECK(s.available() == 2);

  // A permit consumed by wait() is nobody's: release() cannot return it.
  CHECK(s.try_wait());
  CHECK(s.available() == 1);
  CHECK_FALSE(s.release());
  CHECK(s.available() == 1);
  s.post();
  CHECK(s.available() == 2);

  b.release.store(1);
  check_exit(kids.wait(holder));
  CHECK(s.available() == 3);
  CHECK(s.reclaim_dead() == 0);
}

TEST_CASE("a holder of 2 permits SIGKILLed: a waiter blocked in acquire_for gets one through the liveness slice") {
  TestDomain d;
  Segment seg = Segment::create("ownkill", opts(d));
  Semaphore& s = make_sem(seg, 2);
  struct Board {
    std::atomic<int> holding, waiting, result, release;  // result: SemaphoreResult + 1
    std::atomic<std::uint32_t> held_by_waiter;
    std::atomic<std::int64_t> got_ns;
  };
  Board& b = make_board<Board>(seg);
  Children kids;
  pid_t holder = kids.spawn([&] {
    if (!s.try_acquire() || !s.try_acquire()) return 1;
    if (s.held_by_me() != 2) return 2;
    b.holding.store(1);
    std::this_thread::sleep_for(30s);
    return 3;
  });
  REQUIRE(eventually([&] { return b.holding.load() != 0; }));
  CHECK(s.available() == 0);

  pid_t waiter = kids.spawn([&] {
    b.waiting.store(1);
    SemaphoreResult r = s.acquire_for(10s);
    b.got_ns.store(now_ns());
    b.held_by_waiter.store(s.held_by_me());
    b.result.store(static_cast<int>(r) + 1);
    if (r != SemaphoreResult::acquired) return 1;
    if (!eventually([&] { return b.release.load() != 0; })) return 2;
    return s.release() ? 0 : 3;
  });
  REQUIRE(eventually([&] { return b.waiting.load() != 0; }));
  std::this_thread::sleep_for(250ms);  // asleep through slices: the holder is alive
  CHECK(b.result.load() == 0);
  CHECK(s.available() == 0);

  std::int64_t killed_ns = now_ns();
  kids.kill(holder);
  REQUIRE(eventually([&] { return b.result.load() != 0; }));
  INFO("waiter got " << str_code(b.result.load()));
  CHECK(b.result.load() == static_cast<int>(SemaphoreResult::acquired) + 1);
  CHECK_PROMPT(ms_between(killed_ns, b.got_ns.load()), kPromptMs);
  CHECK(b.held_by_waiter.load() == 1);
  CHECK(s.available() == 1);     // 2 permits, 1 held by the waiter
  CHECK(s.reclaim_dead() == 0);  // already reclaimed

  b.release.store(1);
  check_exit(kids.wait(waiter));
  CHECK(s.available() == 2);
}

TEST_CASE("a waiter blocked in wait_for also gets a permit freed by a SIGKILLed holder") {
  TestDomain d;
  Segment seg = Segment::create("ownkill2", opts(d));
  Semaphore& s = make_sem(seg, 1);
  struct Board {
    std::atomic<int> holding, waiting, result;  // SemaphoreResult + 1
    std::atomic<std::int64_t> got_ns;
  };
  Board& b = make_board<Board>(seg);
  Children kids;
  pid_t holder = kids.spawn([&] {
    if (!s.try_acquire()) return 1;
    b.holding.store(1);
    std::this_thread::sleep_for(30s);
    return 2;
  });
  REQUIRE(eventually([&] { return b.holding.load() != 0; }));
  pid_t waiter = kids.spawn([&] {
    b.waiting.store(1);
    SemaphoreResult r = s.wait_for(10s);
    b.got_ns.store(now_ns());
    b.result.store(static_cast<int>(r) + 1);
    return r == SemaphoreResult::acquired ? 0 : 1;
  });
  REQUIRE(eventually([&] { return b.waiting.load() != 0; }));
  std::this_thread::sleep_for(150ms);
  CHECK(b.result.load() == 0);
  std::int64_t killed_ns = now_ns();
  kids.kill(holder);
  check_exit(kids.wait(waiter));
  CHECK(b.result.load() == static_cast<int>(SemaphoreResult::acquired) + 1);
  CHECK_PROMPT(ms_between(killed_ns, b.got_ns.load()), kPromptMs);
  CHECK(s.available() == 0);  // the permit came back and was consumed as a signal
  CHECK(s.reclaim_dead() == 0);
}

TEST_CASE("reclaim_dead() returns the permits of dead holders (killed or exited) and only theirs") {
  TestDomain d;
  Segment seg = Segment::create("reclaim", opts(d));
  Semaphore& s = make_sem(seg, 8);
  struct Board {
    HoldBoard killed, live;
  };
  Board& b = make_board<Board>(seg);
  Children kids;
  CHECK(s.reclaim_dead() == 0);

  pid_t killed = kids.spawn([&] {
    for (int i = 0; i < 3; ++i)
      if (!s.try_acquire()) return 1;
    b.killed.holding.store(1);
    std::this_thread::sleep_for(30s);
    return 2;
  });
  pid_t exited = kids.spawn([&] { return s.try_acquire() ? 0 : 1; });  // exits still holding 1
  pid_t live = kids.spawn([&] { return hold_permits(s, b.live, 2); });
  check_exit(kids.wait(exited), "exited holder");
  REQUIRE(eventually([&] { return b.killed.holding.load() != 0 && b.live.holding.load() != 0; }));
  CHECK(s.available() == 2);  // 8 - 3 - 1 - 2
  kids.kill(killed);
  CHECK(s.available() == 2);  // nobody noticed yet

  CHECK(s.reclaim_dead() == 4);
  CHECK(s.available() == 6);  // the live holder keeps its 2
  CHECK(s.reclaim_dead() == 0);
  CHECK(s.available() == 6);

  b.live.release.store(1);
  check_exit(kids.wait(live), "live holder");
  CHECK(s.available() == 8);
  CHECK(s.reclaim_dead() == 0);
}

TEST_CASE("acquire() returns no_slot when all holder slots belong to live processes, a dead one's slot is reused") {
  TestDomain d;
  Segment seg = Segment::create("noslot", opts(d));
  Semaphore& s = make_sem(seg, 100);
  HoldBoard& b = make_board<HoldBoard>(seg);
  Children kids;
  std::vector<pid_t> pids;
  for (int i = 0; i < Semaphore::kMaxHolders; ++i) pids.push_back(kids.spawn([&] { return hold_permits(s, b, 1); }));
  REQUIRE(eventually([&] { return b.holding.load() == Semaphore::kMaxHolders; }, 20s));
  CHECK(s.available() == 100 - Semaphore::kMaxHolders);

  auto t0 = Clock::now();
  CHECK_FALSE(s.try_acquire());
  SemaphoreResult r = s.acquire_for(60s);  // far longer than the bound below
  INFO("acquire_for returned " << str(r));
  CHECK(r == SemaphoreResult::no_slot);
  CHECK_PROMPT(ms_since(t0), kPromptMs);  // reported at once, not after the timeout
  CHECK(s.held_by_me() == 0);
  CHECK(s.available() == 100 - Semaphore::kMaxHolders);
  // Signals need no slot.
  CHECK(s.try_wait());
  s.post();

  kids.kill(pids[0]);
  r = s.acquire_for(5s);
  CHECK(r == SemaphoreResult::acquired);
  CHECK(s.held_by_me() == 1);
  CHECK(s.available() == 100 - Semaphore::kMaxHolders);  // 31 children + this process
  CHECK(s.release());

  b.release.store(1);
  for (std::size_t i = 1; i < pids.size(); ++i) check_exit(kids.wait(pids[i]));
  CHECK(s.available() == 100);
}

TEST_CASE("construction clamps to kMaxValue and post saturates there") {
  TestDomain d;
  Segment seg = Segment::create("sat", opts(d));
  Semaphore& big = make_sem(seg, Semaphore::kMaxValue - 1, "big");
  CHECK(big.available() == Semaphore::kMaxValue - 1);
  big.post(5);
  CHECK(big.available() == Semaphore::kMaxValue);
  big.post(0xffffffffu);
  CHECK(big.available() == Semaphore::kMaxValue);
  CHECK(big.try_wait());
  CHECK(big.available() == Semaphore::kMaxValue - 1);

  Semaphore& over = make_sem(seg, 0xffffffffu, "over");
  CHECK(over.available() == Semaphore::kMaxValue);
  CHECK(over.try_acquire());
  CHECK(over.available() == Semaphore::kMaxValue - 1);
  CHECK(over.release());
  CHECK(over.available() == Semaphore::kMaxValue);
}

// ---------------------------------------------------------------------------
// SIGKILL at random points

namespace {

struct RandomBoard {
  std::atomic<int> started, holding, errors;
  std::atomic<std::uint64_t> cycles;
};

// acquire 1..2 permits, work, release them; forever (until killed). With
// `hold`, stops holding 2 permits.
int acquire_release_loop(Semaphore& s, RandomBoard& b, bool hold, unsigned salt) {
  b.started.store(1);
  for (unsigned i = 0;; ++i) {
    int want = hold ? 2 : 1 + static_cast<int>((i + salt) % 2);
    int got = 0;
    for (; got < want; ++got) {
      SemaphoreResult r = s.acquire_for(10s);
      if (r != SemaphoreResult::acquired) {
        b.errors.fetch_add(1);
        return 10 + static_cast<int>(r);
      }
    }
    if (hold) {
      b.holding.store(1);
      std::this_thread::sleep_for(30s);
      return 2;
    }
    spin(100 + (i * 7 + salt) % 400);
    for (; got > 0; --got) {
      if (!s.release()) {
        b.errors.fetch_add(1);
        return 3;
      }
    }
    b.cycles.fetch_add(1, std::memory_order_relaxed);
  }
}

}  // namespace

TEST_CASE("holders SIGKILLed at random points in acquire/release cycles: reclaim_dead() restores every permit") {
  TestDomain d;
  Segment seg = Segment::create("random", opts(d));
  constexpr std::uint32_t kInitial = 3;
  Semaphore& s = make_sem(seg, kInitial);
  RandomBoard& b = make_board<RandomBoard>(seg);
  const unsigned seed = test::seed();
  INFO("seed " << seed);
  std::mt19937 rng(seed);

  const int kIterations = test::iterations(80);
  double max_reclaim_ms = 0;
  int holds = 0;
  std::uint32_t reclaimed_total = 0;
  Children kids;
  for (int it = 0; it < kIterations; ++it) {
    INFO("iteration " << it);
    const bool hold = it % 8 == 0;  // known to die holding exactly 2 permits
    const bool two = !hold && rng() % 2 == 0;
    const auto delay = std::chrono::microseconds(rng() % 3001);
    b.started.store(0);
    b.holding.store(0);

    pid_t first =
        kids.spawn([&, salt = static_cast<unsigned>(rng())] { return acquire_release_loop(s, b, hold, salt); });
    pid_t second = 0;
    if (two)
      second = kids.spawn([&, salt = static_cast<unsigned>(rng())] { return acquire_release_loop(s, b, false, salt); });
    if (hold) {
      ++holds;
      REQUIRE(eventually([&] { return b.holding.load() != 0; }));
      CHECK(s.available() == kInitial - 2);
    } else {
      REQUIRE(eventually([&] { return b.started.load() != 0; }));
    }
    std::this_thread::sleep_for(delay);
    kids.kill(first);
    if (second) {
      if (rng() % 2) std::this_thread::sleep_for(std::chrono::microseconds(rng() % 500));
      kids.kill(second);
    }

    auto t0 = Clock::now();
    std::uint32_t reclaimed = s.reclaim_dead();
    reclaimed_total += reclaimed;
    const double reclaim_ms = ms_since(t0);
    max_reclaim_ms = std::max(max_reclaim_ms, reclaim_ms);
    CHECK(reclaim_ms < kPromptMs);
    if (hold) CHECK(reclaimed == 2);
    CHECK(reclaimed <= 4);
    CHECK(s.available() == kInitial);
    CHECK(s.reclaim_dead() == 0);
    CHECK(b.errors.load() == 0);
    if (it % 10 == 9) {  // the permits are really there
      for (std::uint32_t i = 0; i < kInitial; ++i) CHECK(s.try_acquire());
      CHECK_FALSE(s.try_acquire());
      for (std::uint32_t i = 0; i < kInitial; ++i) CHECK(s.release());
    }
    if (s.available() != kInitial || b.errors.load() != 0) break;
  }
  MESSAGE("iterations " << kIterations << ": " << holds << " deliberate holds, " << reclaimed_total
                        << " permits reclaimed, " << b.cycles.load()
                        << " acquire/release cycles; slowest reclaim_dead() " << max_reclaim_ms << " ms");
  CHECK(s.available() == kInitial);
  CHECK(s.held_by_me() == 0);
}

// ---------------------------------------------------------------------------
// kForever

TEST_CASE("wait_for(kForever) and acquire_for(kForever) block until another process posts or releases") {
  TestDomain d;
  Segment seg = Segment::create("forever", opts(d));
  struct Board {
    std::atomic<int> holding, waiting;
    std::atomic<std::int64_t> released_ns;  // set just before the post / release
  };
  Children kids;

  SUBCASE("wait_for: a post from another process") {
    Semaphore& s = make_sem(seg, 0, "signal");
    Board& b = make_board<Board>(seg, "signal_board");
    pid_t poster = kids.spawn([&] {
      if (!eventually([&] { return b.waiting.load() != 0; })) return 1;
      std::this_thread::sleep_for(200ms);
      b.released_ns.store(now_ns());
      s.post();
      return 0;
    });
    b.waiting.store(1);
    SemaphoreResult r = s.wait_for(ipc::kForever);
    const std::int64_t returned_ns = now_ns();
    CHECK_MESSAGE(r == SemaphoreResult::acquired, "wait_for(kForever) returned " << str(r));
    CHECK_RETURNED_AFTER(b.released_ns.load(), returned_ns, "wait_for(kForever)");
    CHECK(s.available() == 0);
    check_exit(kids.wait(poster), "poster");
  }
  SUBCASE("acquire_for: the owned permit another process holds") {
    Semaphore& s = make_sem(seg, 1, "owned");
    Board& b = make_board<Board>(seg, "owned_board");
    pid_t holder = kids.spawn([&] {
      if (s.acquire() != SemaphoreResult::acquired) return 1;
      b.holding.store(1);
      if (!eventually([&] { return b.waiting.load() != 0; })) return 2;
      std::this_thread::sleep_for(200ms);
      b.released_ns.store(now_ns());
      return s.release() ? 0 : 3;
    });
    REQUIRE(eventually([&] { return b.holding.load() != 0; }));
    b.waiting.store(1);
    SemaphoreResult r = s.acquire_for(ipc::kForever);
    const std::int64_t returned_ns = now_ns();
    CHECK_MESSAGE(r == SemaphoreResult::acquired, "acquire_for(kForever) returned " << str(r));
    CHECK_RETURNED_AFTER(b.released_ns.load(), returned_ns, "acquire_for(kForever)");
    CHECK(s.held_by_me() == (r == SemaphoreResult::acquired ? 1u : 0u));
    if (r == SemaphoreResult::acquired) CHECK(s.release());
    check_exit(kids.wait(holder), "holder");
  }
}
