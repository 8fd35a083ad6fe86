// Event notifier: futex waits across processes, pollable listeners in a real
// epoll loop, dead listener reclaim, bad input.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "ipc/event.hpp"
#include "ipc/segment.hpp"
#include "support.hpp"

using namespace ipc;
using namespace std::chrono_literals;
using ipc::test::check_exit;
using ipc::test::Children;
using ipc::test::eventually;
using ipc::test::kPromptMs;
using ipc::test::ms_since;
using ipc::test::now_ns;
using ipc::test::opts;
using ipc::test::TestDomain;

namespace {

struct Shared {
  Event event;
  std::atomic<std::uint64_t> produced;
  std::atomic<int> ready;
};

}  // namespace

TEST_CASE("wait returns when another process notifies and wait_for times out otherwise") {
  TestDomain d;
  Segment seg = Segment::create("ev", opts(d));
  auto& sh = seg.find_or_create<Shared>("shared", ObjectType::event);

  std::uint32_t seen = sh.event.value();
  auto t0 = std::chrono::steady_clock::now();
  CHECK(sh.event.wait_for(seen, 100ms) == EventWait::timed_out);
  auto waited = std::chrono::steady_clock::now() - t0;
  CHECK(waited >= 90ms);
  CHECK_PROMPT(ms_since(t0), kPromptMs);

  pid_t child = test::fork_child([&] {
    Segment s = Segment::open("ev", {.domain = d.name()});
    auto& c = s.open<Shared>("shared", ObjectType::event);
    while (c.event.waiters() == 0) std::this_thread::yield();
    c.produced.store(42);
    c.event.notify();
    return 0;
  });
  EventWait r = EventWait::timed_out;
  while (sh.produced.load() != 42) {
    r = sh.event.wait_for(seen, 10s);
    if (r == EventWait::timed_out) break;
  }
  CHECK(r == EventWait::changed);
  CHECK(sh.produced.load() == 42);
  CHECK(test::child_ok(test::wait_child(child)));
  // A wait on a value that is already stale returns at once.
  CHECK(sh.event.wait_for(seen, 10s) == EventWait::changed);
}

TEST_CASE("an epoll loop woken by listeners sees every notification's data (no lost wake-up)") {
  TestDomain d;
  Segment seg = Segment::create("ev", opts(d));
  auto& sh = seg.find_or_create<Shared>("shared", ObjectType::event);
  constexpr std::uint64_t kItems = 3000;

  EventListener listener(sh.event);
  CHECK(sh.event.listeners() == 1);
  int ep = ::epoll_create1(EPOLL_CLOEXEC);
  REQUIRE(ep >= 0);
  epoll_event ev{};
  ev.events = EPOLLIN;
  REQUIRE(::epoll_ctl(ep, EPOLL_CTL_ADD, listener.fd(), &ev) == 0);

  pid_t producer = test::fork_child([&] {
    Segment s = Segment::open("ev", {.domain = d.name()});
    auto& c = s.open<Shared>("shared", ObjectType::event);
    for (std::uint64_t i = 1; i <= kItems; ++i) {
      c.produced.store(i);
      c.event.notify();
      if (i % 64 == 0) std::this_thread::sleep_for(200us);  // let the consumer fall asleep often
    }
    return 0;
  });

  std::uint64_t consumed = 0;
  int sleeps = 0, wakeups = 0;
  auto deadline = std::chrono::steady_clock::now() + 20s;
  while (consumed < kItems && std::chrono::steady_clock::now() < deadline) {
    listener.arm();                          // L1
    std::uint64_t now = sh.produced.load();  // L2: re-check after arming
    if (now != consumed) {
      consumed = now;
      continue;
    }
    ++sleeps;
    epoll_event out{};
    int n = ::epoll_wait(ep, &out, 1, 5000);  // L3: must not miss the wake-up
    if (n == 1) {
      ++wakeups;
      listener.drain();  // L4
    } else {
      break;  // a lost wake-up: 5 s without readiness while data was pending
    }
  }
  ::close(ep);
  CHECK(consumed == kItems);
  CHECK(sleeps > 0);
  CHECK(wakeups > 0);
  MESSAGE("consumer slept " << sleeps << " times, woken " << wakeups << " times by epoll");
  CHECK(test::child_ok(test::wait_child(producer)));
}

TEST_CASE("a SIGKILLed listener's slot is reclaimed by the next notify and by new listeners") {
  TestDomain d;
  Segment seg = Segment::create("ev", opts(d));
  auto& sh = seg.find_or_create<Shared>("shared", ObjectType::event);

  pid_t child = test::fork_child([&]() -> int {
    Segment s = Segment::open("ev", {.domain = d.name()});
    auto& c = s.open<Shared>("shared", ObjectType::event);
    EventListener l(c.event);
    l.arm();
    c.ready.store(1);
    for (;;) ::pause();
  });
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (sh.ready.load() == 0 && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
  REQUIRE(sh.ready.load() == 1);
  CHECK(sh.event.listeners() == 1);
  test::kill_child(child);
  sh.event.notify();  // sendto → ECONNREFUSED → owner dead → slot freed
  CHECK(sh.event.listeners() == 0);

  // Fill the table, kill one owner, and a new listener still gets a slot.
  std::vector<std::unique_ptr<EventListener>> mine;
  for (int i = 0; i < Event::kMaxListeners - 1; ++i) mine.push_back(std::make_unique<EventListener>(sh.event));
  sh.ready.store(0);
  child = test::fork_child([&]() -> int {
    Segment s = Segment::open("ev", {.domain = d.name()});
    auto& c = s.open<Shared>("shared", ObjectType::event);
    EventListener l(c.event);
    c.ready.store(1);
    for (;;) ::pause();
  });
  deadline = std::chrono::steady_clock::now() + 10s;
  while (sh.ready.load() == 0 && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
  REQUIRE(sh.ready.load() == 1);
  CHECK(sh.event.listeners() == Event::kMaxListeners);
  try {
    EventListener extra(sh.event);
    FAIL("a full table of live listeners must refuse another");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::no_space);
  }
  test::kill_child(child);
  EventListener replacement(sh.event);  // reclaims the dead process's slot
  CHECK(sh.event.listeners() == Event::kMaxListeners);
  mine.clear();
  CHECK(sh.event.listeners() == 1);
}

TEST_CASE("notify with no sleepers does not touch listeners that are not armed") {
  TestDomain d;
  Segment seg = Segment::create("ev", opts(d));
  auto& sh = seg.find_or_create<Shared>("shared", ObjectType::event);
  EventListener l(sh.event);
  for (int i = 0; i < 100; ++i) sh.event.notify();
  CHECK(l.drain() == 0);  // never armed: no datagrams
  l.arm();
  sh.event.notify();
  sh.event.notify();
  CHECK(l.drain() == 1);  // armed once: exactly one datagram for the burst
  CHECK(sh.event.value() == 102);
}

TEST_CASE("wait_for(kForever) blocks until another process notifies") {
  TestDomain d;
  Segment seg = Segment::create("ev", opts(d));
  auto& sh = seg.find_or_create<Shared>("shared", ObjectType::event);
  struct Board {
    std::atomic<int> waiting;
    std::atomic<std::int64_t> notified_ns;  // set just before the notify
  };
  Board& b = ipc::test::make_board<Board>(seg);
  Children kids;
  pid_t notifier = kids.spawn([&] {
    if (!eventually([&] { return b.waiting.load() != 0 && sh.event.waiters() != 0; })) return 1;
    std::this_thread::sleep_for(200ms);
    b.notified_ns.store(now_ns());
    sh.event.notify();
    return 0;
  });
  const std::uint32_t seen = sh.event.value();
  b.waiting.store(1);
  EventWait r = sh.event.wait_for(seen, ipc::kForever);
  const std::int64_t returned_ns = now_ns();
  CHECK(r == EventWait::changed);
  CHECK_RETURNED_AFTER(b.notified_ns.load(), returned_ns, "wait_for(kForever)");
  check_exit(kids.wait(notifier), "notifier");
}
