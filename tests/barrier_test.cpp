// Barrier: phases across processes, a participant SIGKILLed before arriving
// breaks the barrier (status broken, the dead pid, a message naming it),
// reset() and re-join, join limits and errors, not_joined, timeouts that
// withdraw the arrival, invalid participant counts.
//
// Not labelled "threads": every test here uses processes only.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "ipc/barrier.hpp"
#include "ipc/segment.hpp"
#include "support.hpp"

using namespace ipc;
using namespace std::chrono_literals;
using ipc::test::kPromptMs;
using ipc::test::ms_between;
using ipc::test::ms_since;
using ipc::test::now_ns;
using ipc::test::opts;
using ipc::test::TestDomain;

using ipc::test::check_exit;
using ipc::test::Children;
using ipc::test::eventually;
using ipc::test::make_board;

using Clock = std::chrono::steady_clock;

namespace {

Barrier& make_barrier(Segment& seg, std::uint32_t participants, const char* name = "barrier") {
  return seg.find_or_create<Barrier>(name, ObjectType::barrier, participants);
}

const char* status_name(int s) {
  switch (s) {
    case BarrierResult::ok: return "ok";
    case BarrierResult::broken: return "broken";
    case BarrierResult::timed_out: return "timed_out";
    case BarrierResult::not_joined: return "not_joined";
    case BarrierResult::not_recoverable: return "not_recoverable";
  }
  return "?";
}
std::string status_str(int s) { return status_name(s); }

// State letter of /proc/<pid>/stat (R, S, T, Z, ...), 0 if unreadable.
char proc_state(pid_t pid) {
  std::string path = "/proc/" + std::to_string(pid) + "/stat";
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return 0;
  char buf[512];
  ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return 0;
  buf[n] = 0;
  std::string text(buf);
  auto paren = text.rfind(')');
  return paren != std::string::npos && paren + 2 < text.size() ? text[paren + 2] : 0;
}

// SIGSTOPs `pid` while it sleeps (in the barrier's futex wait), so that it
// cannot observe anything until SIGCONT. Returns false if it never slept.
bool stop_while_sleeping(pid_t pid) {
  if (!eventually([&] { return proc_state(pid) == 'S'; }, 5s)) return false;
  ::kill(pid, SIGSTOP);
  return eventually([&] { return proc_state(pid) == 'T'; }, 5s);
}

// Returns the ErrorCode join() threw, or nullopt if it did not throw.
std::optional<ErrorCode> join_error(Barrier& b) {
  try {
    b.join();
  } catch (const Error& e) {
    return e.code();
  }
  return std::nullopt;
}

}  // namespace

// ---------------------------------------------------------------------------
// Phases

TEST_CASE("4 processes x 1000 phases: nobody passes phase k before all 4 arrived at k") {
  TestDomain d;
  Segment seg = Segment::create("phases", opts(d));
  constexpr std::uint32_t kProcs = 4;
  constexpr int kPhases = 1000;
  Barrier& bar = make_barrier(seg, kProcs);
  struct Board {
    std::atomic<std::uint32_t> arrived[kPhases];
    std::atomic<int> errors, first_error_phase, first_error_status;
  };
  Board& b = make_board<Board>(seg);
  CHECK(bar.participants() == kProcs);
  CHECK(bar.joined() == 0);

  Children kids;
  std::vector<pid_t> pids;
  for (std::uint32_t p = 0; p < kProcs; ++p) {
    pids.push_back(kids.spawn([&, p] {
      // Half of them map the segment afresh (another address).
      std::optional<Segment> own;
      Barrier* br = &bar;
      Board* bb = &b;
      if (p % 2) {
        own.emplace(Segment::open("phases", {.domain = d.name()}));
        br = &own->open<Barrier>("barrier", ObjectType::barrier);
        bb = &own->open<Board>("board", ObjectType::raw);
      }
      br->join();
      for (int k = 0; k < kPhases; ++k) {
        bb->arrived[k].fetch_add(1);
        BarrierResult r = br->arrive_and_wait_for(10s);
        int bad = 0;
        if (r.status != BarrierResult::ok)
          bad = 1;
        else if (bb->arrived[k].load() != kProcs)
          bad = 2;  // passed before everyone arrived
        else if (br->phase() < static_cast<std::uint32_t>(k) + 1)
          bad = 3;
        if (bad) {
          if (bb->errors.fetch_add(1) == 0) {
            bb->first_error_phase.store(k);
            bb->first_error_status.store(r.status);
          }
          return bad;
        }
        if (static_cast<std::uint32_t>(k % 37) == p) std::this_thread::yield();  // vary who arrives last
      }
      return 0;
    }));
  }
  auto t0 = Clock::now();
  for (pid_t p : pids) check_exit(kids.wait(p, 60s));
  MESSAGE(kPhases << " phases took " << ms_since(t0) << " ms");
  INFO("first error at phase " << b.first_error_phase.load() << " status " << status_str(b.first_error_status.load()));
  CHECK(b.errors.load() == 0);
  CHECK(bar.phase() == static_cast<std::uint32_t>(kPhases));
  for (int k = 0; k < kPhases; ++k) CHECK(b.arrived[k].load() == kProcs);
  CHECK(bar.broken_pid() == 0);
}

TEST_CASE("a 1-participant barrier completes every phase at once") {
  TestDomain d;
  Segment seg = Segment::create("solo", opts(d));
  Barrier& bar = make_barrier(seg, 1);
  bar.join();
  CHECK(bar.joined() == 1);
  auto t0 = Clock::now();
  for (int k = 0; k < 10; ++k) CHECK(bar.arrive_and_wait().status == BarrierResult::ok);
  CHECK(bar.arrive_and_wait_for(0ns).status == BarrierResult::ok);
  CHECK_PROMPT(ms_since(t0), kPromptMs);
  CHECK(bar.phase() == 11);
}

// ---------------------------------------------------------------------------
// Death of a participant

TEST_CASE("a participant SIGKILLed before arriving breaks the barrier, reset() lets survivors and a new joiner go on") {
  TestDomain d;
  Segment seg = Segment::create("broken", opts(d));
  constexpr int kSurvivors = 3, kPhasesAfter = 20;
  Barrier& bar = make_barrier(seg, kSurvivors + 1);
  struct Board {
    std::atomic<int> victim_joined, arrived, broken_seen, reset_done;
    std::atomic<int> status[kSurvivors];
    std::atomic<std::uint32_t> dead_pid[kSurvivors];
    std::atomic<int> message_names_pid[kSurvivors];
    std::atomic<std::int64_t> got_ns[kSurvivors];
    std::atomic<int> second_status[kSurvivors];
    std::atomic<double> second_ms[kSurvivors];  // how long the second, still-broken arrival took
    std::atomic<int> errors;
  };
  Board& b = make_board<Board>(seg);
  Children kids;

  pid_t victim = kids.spawn([&] {
    bar.join();
    b.victim_joined.store(1);
    std::this_thread::sleep_for(30s);  // never arrives
    return 2;
  });
  REQUIRE(eventually([&] { return b.victim_joined.load() != 0; }));

  std::vector<pid_t> survivors;
  for (int i = 0; i < kSurvivors; ++i) {
    survivors.push_back(kids.spawn([&, i] {
      bar.join();
      b.arrived.fetch_add(1);
      BarrierResult r = bar.arrive_and_wait_for(10s);
      b.got_ns[i].store(now_ns());
      b.dead_pid[i].store(r.dead_pid);
      b.message_names_pid[i].store(r.message().find(std::to_string(r.dead_pid)) != std::string::npos ? 1 : 0);
      b.status[i].store(r.status + 1);
      if (r.status != BarrierResult::broken) return 1;
      // Still broken, at once, until someone resets it.
      auto t0 = Clock::now();
      BarrierResult again = bar.arrive_and_wait_for(60s);  // far longer than the bound below
      b.second_ms[i].store(ms_since(t0));
      b.second_status[i].store(again.status + 1);
      if (again.status != BarrierResult::broken || b.second_ms[i].load() >= kPromptMs) return 2;
      // Survivor 0 resets once every survivor has seen the break.
      b.broken_seen.fetch_add(1);
      if (i == 0) {
        if (!eventually([&] { return b.broken_seen.load() == kSurvivors; })) return 3;
        bar.reset();
        b.reset_done.store(1);
      }
      if (!eventually([&] { return b.reset_done.load() != 0; })) return 4;
      for (int k = 0; k < kPhasesAfter; ++k) {
        BarrierResult rk = bar.arrive_and_wait_for(10s);
        if (rk.status != BarrierResult::ok) {
          b.errors.fetch_add(1);
          return 10 + rk.status;
        }
      }
      return 0;
    }));
  }
  REQUIRE(eventually([&] { return b.arrived.load() == kSurvivors; }));
  std::this_thread::sleep_for(250ms);  // they sleep through liveness slices: the victim is alive
  for (int i = 0; i < kSurvivors; ++i) CHECK(b.status[i].load() == 0);
  CHECK(bar.broken_pid() == 0);
  CHECK(bar.joined() == kSurvivors + 1);

  std::int64_t killed_ns = now_ns();
  kids.kill(victim);
  REQUIRE(eventually([&] { return b.broken_seen.load() == kSurvivors; }, 15s));
  for (int i = 0; i < kSurvivors; ++i) {
    INFO("survivor " << i << ": " << status_str(b.status[i].load() - 1) << ", second "
                     << status_str(b.second_status[i].load() - 1));
    CHECK(b.status[i].load() == BarrierResult::broken + 1);
    CHECK(b.dead_pid[i].load() == static_cast<std::uint32_t>(victim));
    CHECK(b.message_names_pid[i].load() == 1);
    CHECK_PROMPT(ms_between(killed_ns, b.got_ns[i].load()), kPromptMs);
    CHECK(b.second_status[i].load() == BarrierResult::broken + 1);
    CHECK_PROMPT(b.second_ms[i].load(), kPromptMs);
  }

  // A replacement joins after the reset (the victim's slot is free again).
  pid_t joiner = kids.spawn([&] {
    if (!eventually([&] { return b.reset_done.load() != 0; })) return 1;
    bar.join();
    for (int k = 0; k < kPhasesAfter; ++k) {
      BarrierResult rk = bar.arrive_and_wait_for(10s);
      if (rk.status != BarrierResult::ok) {
        b.errors.fetch_add(1);
        return 10 + rk.status;
      }
    }
    return 0;
  });
  for (pid_t p : survivors) check_exit(kids.wait(p), "survivor");
  check_exit(kids.wait(joiner), "joiner");
  CHECK(b.errors.load() == 0);
  CHECK(bar.broken_pid() == 0);
  CHECK(bar.joined() == kSurvivors + 1);
}

TEST_CASE("a message for a broken result names the dead pid, other statuses have messages too") {
  BarrierResult r{BarrierResult::broken, 4321};
  CHECK(r.message().find("4321") != std::string::npos);
  CHECK(r.message().find("reset()") != std::string::npos);
  CHECK_FALSE(BarrierResult{BarrierResult::ok, 0}.message().empty());
  CHECK_FALSE(BarrierResult{BarrierResult::timed_out, 0}.message().empty());
  CHECK(BarrierResult{BarrierResult::not_joined, 0}.message().find("join") != std::string::npos);
  CHECK_FALSE(BarrierResult{BarrierResult::not_recoverable, 0}.message().empty());
}

// ---------------------------------------------------------------------------
// Joining

TEST_CASE("join beyond the participant count throws ipc::Error, a dead participant's slot is reclaimed") {
  TestDomain d;
  Segment seg = Segment::create("join", opts(d));
  Barrier& bar = make_barrier(seg, 2);
  struct Board {
    std::atomic<int> joined, release;
    std::atomic<int> code;  // ErrorCode + 1 from the refused joiner, -1 = no throw
  };
  Board& b = make_board<Board>(seg);
  Children kids;

  bar.join();
  CHECK(join_error(bar) == ErrorCode::already_exists);  // this thread already joined
  pid_t other = kids.spawn([&] {
    bar.join();
    b.joined.store(1);
    std::this_thread::sleep_for(30s);
    return 2;
  });
  REQUIRE(eventually([&] { return b.joined.load() != 0; }));
  CHECK(bar.joined() == 2);

  pid_t third = kids.spawn([&] {
    try {
      bar.join();
    } catch (const Error& e) {
      b.code.store(static_cast<int>(e.code()) + 1);
      return 0;
    }
    b.code.store(-1);
    return 1;
  });
  check_exit(kids.wait(third), "third joiner");
  CHECK(b.code.load() == static_cast<int>(ErrorCode::no_space) + 1);
  CHECK(bar.joined() == 2);

  // The slot of a dead participant is reclaimed by the next join.
  kids.kill(other);
  pid_t replacement = kids.spawn([&] {
    try {
      bar.join();
    } catch (const Error& e) {
      return 10 + static_cast<int>(e.code());
    }
    // Both live participants arrive: the phase completes.
    BarrierResult r = bar.arrive_and_wait_for(10s);
    return r.status == BarrierResult::ok ? 0 : 3;
  });
  CHECK(bar.arrive_and_wait_for(10s).status == BarrierResult::ok);
  check_exit(kids.wait(replacement), "replacement");
  CHECK(bar.phase() == 1);
}

TEST_CASE("arrive without join (or after leave) is not_joined and does not count") {
  TestDomain d;
  Segment seg = Segment::create("notjoined", opts(d));
  Barrier& bar = make_barrier(seg, 2);
  BarrierResult r = bar.arrive_and_wait_for(1s);
  CHECK(r.status == BarrierResult::not_joined);
  CHECK(bar.arrive_and_wait().status == BarrierResult::not_joined);
  CHECK_FALSE(r.message().empty());
  CHECK(bar.phase() == 0);

  bar.join();
  CHECK(bar.joined() == 1);
  bar.leave();
  CHECK(bar.joined() == 0);
  CHECK(bar.arrive_and_wait_for(1s).status == BarrierResult::not_joined);
  bar.leave();  // leaving twice is harmless
  CHECK(bar.joined() == 0);

  // A child joins; this process, not joined, cannot complete its phase.
  struct Board {
    std::atomic<int> arrived, status;  // BarrierResult::Status + 1
  };
  Board& b = make_board<Board>(seg);
  Children kids;
  pid_t child = kids.spawn([&] {
    bar.join();
    b.arrived.store(1);
    BarrierResult res = bar.arrive_and_wait_for(400ms);
    b.status.store(res.status + 1);
    return 0;
  });
  REQUIRE(eventually([&] { return b.arrived.load() != 0; }));
  CHECK(bar.arrive_and_wait_for(1s).status == BarrierResult::not_joined);
  check_exit(kids.wait(child));
  CHECK(b.status.load() == BarrierResult::timed_out + 1);
  CHECK(bar.phase() == 0);
}

TEST_CASE("an invalid participant count reports 0 participants and join throws invalid_argument") {
  TestDomain d;
  Segment seg = Segment::create("invalid", opts(d));
  Barrier& zero = make_barrier(seg, 0, "zero");
  CHECK(zero.participants() == 0);
  CHECK(join_error(zero) == ErrorCode::invalid_argument);
  CHECK(zero.joined() == 0);
  CHECK(zero.arrive_and_wait_for(100ms).status == BarrierResult::not_joined);

  Barrier& too_many = make_barrier(seg, Barrier::kMaxParticipants + 1, "too_many");
  CHECK(too_many.participants() == 0);
  CHECK(join_error(too_many) == ErrorCode::invalid_argument);

  Barrier& max = make_barrier(seg, Barrier::kMaxParticipants, "max");
  CHECK(max.participants() == Barrier::kMaxParticipants);
  CHECK_FALSE(join_error(max).has_value());
  CHECK(max.joined() == 1);
}

// ---------------------------------------------------------------------------
// Timeouts

TEST_CASE("a timed-out arrival returns timed_out, is withdrawn, and does not corrupt the next phase") {
  TestDomain d;
  Segment seg = Segment::create("timeout", opts(d));
  Barrier& bar = make_barrier(seg, 2);
  struct Board {
    std::atomic<int> joined, go, status[2];  // Status + 1
    std::atomic<std::int64_t> passed_ns;
  };
  Board& b = make_board<Board>(seg);
  Children kids;
  bar.join();
  pid_t child = kids.spawn([&] {
    bar.join();
    b.joined.store(1);
    if (!eventually([&] { return b.go.load() != 0; })) return 1;
    for (int k = 0; k < 2; ++k) {
      BarrierResult r = bar.arrive_and_wait_for(10s);
      if (k == 0) b.passed_ns.store(now_ns());
      b.status[k].store(r.status + 1);
      if (r.status != BarrierResult::ok) return 2;
    }
    return 0;
  });
  REQUIRE(eventually([&] { return b.joined.load() != 0; }));

  auto t0 = Clock::now();
  BarrierResult r = bar.arrive_and_wait_for(100ms);
  double ms = ms_since(t0);
  CHECK(r.status == BarrierResult::timed_out);
  CHECK(ms >= 90.0);
  CHECK_PROMPT(ms, kPromptMs);
  // Longer than a few liveness slices: the live partner does not break it.
  t0 = Clock::now();
  r = bar.arrive_and_wait_for(Mutex::kLivenessSlice * 3 + 50ms);
  ms = ms_since(t0);
  CHECK(r.status == BarrierResult::timed_out);
  CHECK(ms >= 340.0);
  CHECK_PROMPT(ms, kPromptMs);
  CHECK(bar.phase() == 0);
  CHECK(bar.broken_pid() == 0);

  // The partner arrives alone: the withdrawn arrivals must not complete the phase.
  b.go.store(1);
  std::this_thread::sleep_for(300ms);
  CHECK(b.status[0].load() == 0);
  CHECK(bar.phase() == 0);

  std::int64_t arrive_ns = now_ns();
  CHECK(bar.arrive_and_wait_for(10s).status == BarrierResult::ok);
  CHECK(bar.arrive_and_wait_for(10s).status == BarrierResult::ok);
  check_exit(kids.wait(child));
  CHECK(b.status[0].load() == BarrierResult::ok + 1);
  CHECK(b.status[1].load() == BarrierResult::ok + 1);
  CHECK(b.passed_ns.load() >= arrive_ns);
  CHECK(bar.phase() == 2);
}

// ---------------------------------------------------------------------------
// A waiter that is slow to wake (SIGSTOPped in its sleep) must get the result
// of *its* phase, not of what happened afterwards.

namespace {

struct StopBoard {
  std::atomic<int> go, b_waiting, b_status;  // Status + 1
  std::atomic<int> v_passed, a_waiting_next, a_status, a_done;
  std::atomic<std::uint32_t> a_dead_pid, b_dead_pid;
};

}  // namespace

TEST_CASE("a waiter whose phase completed gets ok even if a participant dies before it wakes up") {
  // The header: "When all N joined participants have arrived, the phase
  // completes and every waiter returns ok."
  TestDomain d;
  Segment seg = Segment::create("slowok", opts(d));
  Barrier& bar = make_barrier(seg, 3);
  StopBoard& b = make_board<StopBoard>(seg);
  Children kids;
  pid_t sleeper = kids.spawn([&] {
    bar.join();
    b.b_waiting.store(1);
    BarrierResult r = bar.arrive_and_wait_for(30s);  // phase 0
    b.b_dead_pid.store(r.dead_pid);
    b.b_status.store(r.status + 1);
    return 0;
  });
  REQUIRE(eventually([&] { return b.b_waiting.load() != 0; }));
  std::this_thread::sleep_for(50ms);
  REQUIRE(stop_while_sleeping(sleeper));

  pid_t victim = kids.spawn([&] {
    bar.join();
    if (!eventually([&] { return b.go.load() != 0; })) return 1;
    if (bar.arrive_and_wait_for(10s).status != BarrierResult::ok) return 2;  // phase 0
    b.v_passed.store(1);
    std::this_thread::sleep_for(30s);  // dies before arriving at phase 1
    return 3;
  });
  pid_t other = kids.spawn([&] {
    bar.join();
    if (!eventually([&] { return b.go.load() != 0; })) return 1;
    if (bar.arrive_and_wait_for(10s).status != BarrierResult::ok) return 2;  // phase 0
    b.a_waiting_next.store(1);
    BarrierResult r = bar.arrive_and_wait_for(10s);  // phase 1: broken
    b.a_dead_pid.store(r.dead_pid);
    b.a_status.store(r.status + 1);
    b.a_done.store(1);
    return 0;
  });
  REQUIRE(eventually([&] { return bar.joined() == 3; }));
  b.go.store(1);
  bool phase0_done = eventually([&] { return b.v_passed.load() != 0 && b.a_waiting_next.load() != 0; }, 5s);
  if (!phase0_done) ::kill(sleeper, SIGCONT);  // stopped at a bad moment: do not wedge the others
  REQUIRE(phase0_done);
  CHECK(bar.phase() == 1);  // phase 0 completed, with the sleeper's arrival
  kids.kill(victim);
  REQUIRE(eventually([&] { return b.a_done.load() != 0; }));
  CHECK(b.a_status.load() == BarrierResult::broken + 1);
  CHECK(b.a_dead_pid.load() == static_cast<std::uint32_t>(victim));

  ::kill(sleeper, SIGCONT);
  check_exit(kids.wait(sleeper), "sleeper");
  check_exit(kids.wait(other), "other");
  INFO("the sleeper's phase-0 wait returned " << status_str(b.b_status.load() - 1) << " (dead_pid "
                                              << b.b_dead_pid.load() << ")");
  CHECK(b.b_status.load() == BarrierResult::ok + 1);
}

TEST_CASE("a waiter whose phase never completed is not released with ok by another survivor's reset()") {
  TestDomain d;
  Segment seg = Segment::create("slowreset", opts(d));
  Barrier& bar = make_barrier(seg, 3);
  StopBoard& b = make_board<StopBoard>(seg);
  Children kids;
  pid_t sleeper = kids.spawn([&] {
    bar.join();
    if (bar.arrive_and_wait_for(10s).status != BarrierResult::ok) return 1;  // phase 0
    b.b_waiting.store(1);
    BarrierResult r = bar.arrive_and_wait_for(30s);  // phase 1: never completes
    b.b_dead_pid.store(r.dead_pid);
    b.b_status.store(r.status + 1);
    return 0;
  });
  pid_t victim = kids.spawn([&] {
    bar.join();
    if (bar.arrive_and_wait_for(10s).status != BarrierResult::ok) return 1;  // phase 0
    b.v_passed.store(1);
    std::this_thread::sleep_for(30s);  // dies before arriving at phase 1
    return 3;
  });
  pid_t other = kids.spawn([&] {
    bar.join();
    if (bar.arrive_and_wait_for(10s).status != BarrierResult::ok) return 1;  // phase 0
    if (!eventually([&] { return b.go.load() != 0; })) return 2;
    BarrierResult r = bar.arrive_and_wait_for(10s);  // phase 1: broken
    b.a_dead_pid.store(r.dead_pid);
    b.a_status.store(r.status + 1);
    if (r.status == BarrierResult::broken) bar.reset();  // a survivor resets
    b.a_done.store(1);
    return 0;
  });
  REQUIRE(eventually([&] { return b.b_waiting.load() != 0 && b.v_passed.load() != 0; }));
  std::this_thread::sleep_for(50ms);
  REQUIRE(stop_while_sleeping(sleeper));
  b.go.store(1);
  kids.kill(victim);
  REQUIRE(eventually([&] { return b.a_done.load() != 0; }));
  CHECK(b.a_status.load() == BarrierResult::broken + 1);
  CHECK(b.a_dead_pid.load() == static_cast<std::uint32_t>(victim));
  CHECK(bar.phase() >= 1);

  ::kill(sleeper, SIGCONT);
  check_exit(kids.wait(sleeper), "sleeper");
  check_exit(kids.wait(other), "other");
  INFO("the sleeper's phase-1 wait returned " << status_str(b.b_status.load() - 1) << " (dead_pid "
                                              << b.b_dead_pid.load() << ")");
  CHECK(b.b_status.load() != BarrierResult::ok + 1);  // phase 1 never completed
}

// ---------------------------------------------------------------------------
// kForever

TEST_CASE("arrive_and_wait_for(kForever) blocks until the other participant (another process) arrives") {
  TestDomain d;
  Segment seg = Segment::create("forever", opts(d));
  Barrier& bar = make_barrier(seg, 2);
  struct Board {
    std::atomic<int> joined, waiting, status;  // Status + 1
    std::atomic<std::int64_t> arrived_ns;      // set just before the partner arrives
  };
  Board& b = make_board<Board>(seg);
  Children kids;
  bar.join();
  pid_t partner = kids.spawn([&] {
    bar.join();
    b.joined.store(1);
    if (!eventually([&] { return b.waiting.load() != 0; })) return 1;
    std::this_thread::sleep_for(200ms);
    b.arrived_ns.store(now_ns());
    BarrierResult r = bar.arrive_and_wait_for(10s);
    b.status.store(r.status + 1);
    bar.leave();
    return r.status == BarrierResult::ok ? 0 : 2;
  });
  REQUIRE(eventually([&] { return b.joined.load() != 0; }));
  b.waiting.store(1);
  BarrierResult r = bar.arrive_and_wait_for(ipc::kForever);
  const std::int64_t returned_ns = now_ns();
  CHECK_MESSAGE(r.status == BarrierResult::ok, "arrive_and_wait_for(kForever): " << status_str(r.status));
  CHECK_RETURNED_AFTER(b.arrived_ns.load(), returned_ns, "arrive_and_wait_for(kForever)");
  check_exit(kids.wait(partner), "partner");
  CHECK(b.status.load() == BarrierResult::ok + 1);
  CHECK(bar.phase() == 1);
  bar.leave();
}
