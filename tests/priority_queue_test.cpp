// PriorityQueue: order (priority, then FIFO), bounds and timeouts, blocking
// pop/push woken from another process, 3 producer × 2 consumer processes
// (every element exactly once, per-producer FIFO per priority), BufferHandle
// payloads through a pool, the pollable listener with epoll across
// processes, bad input, and crash safety: SIGKILL at random moments of
// push/pop loops (200 kills) and of repairs themselves, with a survivor
// that accounts for every acknowledged element.
//
// Not labelled "threads": every test here uses processes only.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "ipc/pool.hpp"
#include "ipc/priority_queue.hpp"
#include "ipc/segment.hpp"
#include "ipc/semaphore.hpp"
#include "support.hpp"

using namespace ipc;
using namespace std::chrono_literals;
using ipc::test::check_exit;
using ipc::test::Children;
using ipc::test::eventually;
using ipc::test::kPromptMs;
using ipc::test::make_board;
using ipc::test::ms_since;
using ipc::test::opts;
using ipc::test::str;
using ipc::test::TestDomain;

using Clock = std::chrono::steady_clock;

namespace {

struct Pair {
  std::uint32_t producer;
  std::uint32_t seq;
};

// 64 bytes whose tail is a function of the id, so a torn copy is detected.
struct Item {
  std::uint64_t id;
  std::uint64_t check;
  std::uint8_t fill[48];
};
static_assert(sizeof(Item) == 64);

Item make_item(std::uint64_t id) {
  Item it{};
  it.id = id;
  it.check = id * 0x9E3779B97F4A7C15ull ^ 0x5bd1e995u;
  std::memset(it.fill, static_cast<int>(id & 0xff), sizeof it.fill);
  return it;
}

bool intact(const Item& it) {
  if (it.check != (it.id * 0x9E3779B97F4A7C15ull ^ 0x5bd1e995u)) return false;
  for (std::uint8_t b : it.fill)
    if (b != static_cast<std::uint8_t>(it.id & 0xff)) return false;
  return true;
}

}  // namespace

// ---------------------------------------------------------------------------

TEST_CASE("order: highest priority first, FIFO among equal priorities, peek and stats") {
  TestDomain d;
  Segment seg = Segment::create("order", opts(d));
  auto q = PriorityQueue<Pair>::create(seg, "q", 64);
  CHECK(q.capacity() == 64);
  CHECK(q.size() == 0);
  // (priority, seq) pushed in a scrambled order; negative priorities too.
  const std::int32_t prios[] = {1, 5, -3, 5, 1, 0, 5, -3, 1, 7, 0, 5};
  for (std::uint32_t i = 0; i < std::size(prios); ++i) REQUIRE(q.try_push(Pair{0, i}, prios[i]) == QueueStatus::ok);
  CHECK(q.size() == std::size(prios));
  CHECK_FALSE(q.check().has_value());

  Pair top{};
  std::int32_t top_prio = 0;
  REQUIRE(q.peek(top, &top_prio) == QueueStatus::ok);
  CHECK(top_prio == 7);
  CHECK(top.seq == 9);
  CHECK(q.size() == std::size(prios));  // peek removes nothing

  std::vector<std::pair<std::int32_t, std::uint32_t>> got;
  Pair p{};
  std::int32_t prio = 0;
  while (q.try_pop(p, &prio) == QueueStatus::ok) got.emplace_back(prio, p.seq);
  std::vector<std::pair<std::int32_t, std::uint32_t>> want;
  for (std::uint32_t i = 0; i < std::size(prios); ++i) want.emplace_back(prios[i], i);
  // Expected: priority descending, then push order (stable sort by priority).
  std::stable_sort(want.begin(), want.end(), [](auto a, auto b) { return a.first > b.first; });
  CHECK(got == want);
  CHECK(q.try_pop(p) == QueueStatus::empty);
  CHECK(q.peek(p) == QueueStatus::empty);
  CHECK_FALSE(q.try_pop().has_value());

  QueueStats st = q.stats();
  CHECK(st.pushes == std::size(prios));
  CHECK(st.pops == std::size(prios));
  CHECK(st.depth == 0);
  CHECK(st.element_size == sizeof(Pair));
  CHECK(st.repairs == 0);
}

TEST_CASE("order holds over 5000 random pushes and interleaved pops against a reference model") {
  TestDomain d;
  Segment seg = Segment::create("model", opts(d, 2u << 20));
  auto q = PriorityQueue<std::uint64_t>::create(seg, "q", 1000);
  unsigned seed = ipc::test::seed();
  INFO("seed " << seed);
  std::mt19937 rng(seed);
  // Reference: (priority desc, seq asc) in a std::set.
  std::set<std::pair<std::int64_t, std::uint64_t>> model;  // (-priority, seq)
  std::uint64_t seq = 0;
  int mismatches = 0;
  for (int i = 0; i < 5000; ++i) {
    if (rng() % 3 != 0 && model.size() < 1000) {
      std::int32_t prio = static_cast<std::int32_t>(rng() % 8) - 2;
      REQUIRE(q.try_push(seq, prio) == QueueStatus::ok);
      model.emplace(-prio, seq++);
    } else {
      std::uint64_t v = 0;
      std::int32_t prio = 0;
      QueueStatus st = q.try_pop(v, &prio);
      if (model.empty()) {
        mismatches += st != QueueStatus::empty;
        continue;
      }
      auto want = *model.begin();
      model.erase(model.begin());
      mismatches += st != QueueStatus::ok || v != want.second || prio != -want.first;
    }
  }
  CHECK(mismatches == 0);
  CHECK(q.size() == model.size());
  CHECK_FALSE(q.check().has_value());
}

TEST_CASE("bounded: try_push on a full queue fails, push_for and pop_for time out after their timeout") {
  TestDomain d;
  Segment seg = Segment::create("bounded", opts(d));
  auto q = PriorityQueue<std::uint32_t>::create(seg, "q", 4);
  for (std::uint32_t i = 0; i < 4; ++i) REQUIRE(q.try_push(i, 0) == QueueStatus::ok);
  CHECK(str(q.try_push(99, 100)) == "full");
  CHECK(q.size() == 4);

  auto t0 = Clock::now();
  CHECK(q.push_for(99, 100, 150ms) == QueueStatus::timed_out);
  double waited = ms_since(t0);
  CHECK(waited >= 150.0);
  CHECK_PROMPT(waited, kPromptMs);
  CHECK(q.push_for(99, 100, 0ms) == QueueStatus::timed_out);  // a past deadline: try once

  std::uint32_t v = 0;
  for (std::uint32_t i = 0; i < 4; ++i) {
    REQUIRE(q.pop_for(v, 1s) == QueueStatus::ok);
    CHECK(v == i);
  }
  t0 = Clock::now();
  CHECK(q.pop_for(v, 120ms) == QueueStatus::timed_out);
  waited = ms_since(t0);
  CHECK(waited >= 120.0);
  CHECK_PROMPT(waited, kPromptMs);
  CHECK(q.stats().wait_ns >= 270'000'000u);  // both timed waits are counted
  CHECK(q.stats().pushes == 4);
}

TEST_CASE("a blocking pop in another process is woken by a push, a blocking push by a pop") {
  TestDomain d;
  Segment seg = Segment::create("wake", opts(d));
  auto q = PriorityQueue<std::uint64_t>::create(seg, "q", 2);
  struct Board {
    std::atomic<int> waiting;
    std::atomic<std::int64_t> woke_ns;
    std::atomic<std::uint64_t> value;
  };
  Board& b = make_board<Board>(seg);
  Children kids;

  // 1. A consumer blocked in pop() (no timeout) on an empty queue.
  pid_t consumer = kids.spawn([&] {
    Segment own = Segment::open("wake", {.domain = d.name()});
    auto oq = PriorityQueue<std::uint64_t>::open(own, "q");
    b.waiting.store(1);
    std::uint64_t v = 0;
    if (oq.pop(v) != QueueStatus::ok) return 1;
    b.woke_ns.store(ipc::test::now_ns());
    b.value.store(v);
    return 0;
  });
  REQUIRE(eventually([&] { return b.waiting.load() == 1; }));
  REQUIRE(eventually([&] { return q.stats().pop_waiters == 1; }));  // it is asleep in pop()
  std::this_thread::sleep_for(50ms);
  CHECK(b.woke_ns.load() == 0);
  const std::int64_t pushed_ns = ipc::test::now_ns();
  REQUIRE(q.try_push(4242, 3) == QueueStatus::ok);
  check_exit(kids.wait(consumer), "consumer");
  CHECK(b.value.load() == 4242);
  // Woken by the push, not by a liveness slice (which would take 100 ms).
  MESSAGE("pop woke " << (b.woke_ns.load() - pushed_ns) / 1000 << " us after the push");
  CHECK(b.woke_ns.load() - pushed_ns < 90'000'000);
  CHECK(q.stats().wait_ns > 40'000'000u);

  // 2. A producer blocked in push() on a full queue.
  REQUIRE(q.try_push(1, 0) == QueueStatus::ok);
  REQUIRE(q.try_push(2, 0) == QueueStatus::ok);
  b.waiting.store(0);
  b.woke_ns.store(0);
  pid_t producer = kids.spawn([&] {
    Segment own = Segment::open("wake", {.domain = d.name()});
    auto oq = PriorityQueue<std::uint64_t>::open(own, "q");
    b.waiting.store(1);
    if (oq.push(3, 0) != QueueStatus::ok) return 1;
    b.woke_ns.store(ipc::test::now_ns());
    return 0;
  });
  REQUIRE(eventually([&] { return q.stats().push_waiters == 1; }));
  std::this_thread::sleep_for(30ms);
  CHECK(b.woke_ns.load() == 0);
  std::uint64_t v = 0;
  REQUIRE(q.try_pop(v) == QueueStatus::ok);
  CHECK(v == 1);
  check_exit(kids.wait(producer), "producer");
  CHECK(q.size() == 2);
  REQUIRE(q.try_pop(v) == QueueStatus::ok);
  CHECK(v == 2);
  REQUIRE(q.try_pop(v) == QueueStatus::ok);
  CHECK(v == 3);
}

TEST_CASE("3 producer and 2 consumer processes: every element received exactly once, FIFO per producer and priority") {
  TestDomain d;
  Segment seg = Segment::create("mpmc", opts(d, 2u << 20));
  constexpr std::uint32_t kProducers = 3, kPerProducer = 4000, kTotal = kProducers * kPerProducer;
  auto q = PriorityQueue<Pair>::create(seg, "q", 64);  // small: producers block often
  struct Board {
    std::atomic<std::uint8_t> got[kProducers][kPerProducer];
    std::atomic<std::uint32_t> received;
    std::atomic<std::uint32_t> duplicates;
    std::atomic<std::uint32_t> order_violations;
    std::atomic<std::uint32_t> bad;
  };
  Board& b = make_board<Board>(seg);
  const unsigned seed = ipc::test::seed();
  INFO("seed " << seed);
  Children kids{30s};
  std::vector<pid_t> pids;
  for (std::uint32_t p = 0; p < kProducers; ++p)
    pids.push_back(kids.spawn([&, p] {
      Segment own = Segment::open("mpmc", {.domain = d.name()});
      auto oq = PriorityQueue<Pair>::open(own, "q");
      std::mt19937 rng(seed + p);
      for (std::uint32_t i = 0; i < kPerProducer; ++i)
        if (oq.push_for(Pair{p, i}, static_cast<std::int32_t>(rng() % 4), 10s) != QueueStatus::ok) return 1;
      return 0;
    }));
  for (int c = 0; c < 2; ++c)
    pids.push_back(kids.spawn([&] {
      Segment own = Segment::open("mpmc", {.domain = d.name()});
      auto oq = PriorityQueue<Pair>::open(own, "q");
      // last[prio][producer]: the last seq this consumer saw; within one
      // consumer, one producer's elements of one priority arrive in order.
      std::int64_t last[4][kProducers];
      for (auto& row : last)
        for (auto& x : row) x = -1;
      while (b.received.load() < kTotal) {
        Pair v{};
        std::int32_t prio = 0;
        QueueStatus st = oq.pop_for(v, 50ms, &prio);
        if (st == QueueStatus::timed_out) continue;
        if (st != QueueStatus::ok || v.producer >= kProducers || v.seq >= kPerProducer || prio < 0 || prio > 3) {
          b.bad.fetch_add(1);
          return 2;
        }
        if (b.got[v.producer][v.seq].fetch_add(1) != 0) b.duplicates.fetch_add(1);
        if (static_cast<std::int64_t>(v.seq) <= last[prio][v.producer]) b.order_violations.fetch_add(1);
        last[prio][v.producer] = v.seq;
        b.received.fetch_add(1);
      }
      return 0;
    }));
  for (pid_t p : pids) check_exit(kids.wait(p));
  CHECK(b.received.load() == kTotal);
  CHECK(b.duplicates.load() == 0);
  CHECK(b.order_violations.load() == 0);
  CHECK(b.bad.load() == 0);
  std::uint32_t missing = 0;
  for (auto& row : b.got)
    for (auto& x : row) missing += x.load() != 1;
  CHECK(missing == 0);
  QueueStats st = q.stats();
  CHECK(st.pushes == kTotal);
  CHECK(st.pops == kTotal);
  CHECK(st.depth == 0);
  CHECK_FALSE(q.check().has_value());
}

TEST_CASE("BufferHandle payloads: buffers written by one process are read by the consumer process in priority order") {
  TestDomain d;
  Segment seg = Segment::create("handles", opts(d, 2u << 20));
  PoolConfig cfg;
  cfg.class_sizes = {256};
  cfg.buffers_per_class = 16;
  cfg.cache_per_class = 0;
  BufferPool pool = BufferPool::create(seg, "pool", cfg);
  auto q = PriorityQueue<BufferHandle>::create(seg, "q", 16);
  constexpr int kBuffers = 12;
  for (int i = 0; i < kBuffers; ++i) {
    Allocation a = pool.allocate(256);
    REQUIRE(a.status == AllocStatus::ok);
    std::memset(a.buffer.data(), i + 1, 256);
    BufferHandle h = a.buffer.detach();
    REQUIRE(q.try_push(h, i % 3) == QueueStatus::ok);
  }
  const std::uint32_t parent = static_cast<std::uint32_t>(::getpid());
  Children kids;
  pid_t child = kids.spawn([&] {
    Segment own = Segment::open("handles", {.domain = d.name()});
    BufferPool p = BufferPool::open(own, "pool");
    auto oq = PriorityQueue<BufferHandle>::open(own, "q");
    std::int32_t last_prio = 100;
    int last_fill = 0;
    for (int i = 0; i < kBuffers; ++i) {
      BufferHandle h;
      std::int32_t prio = 0;
      if (oq.try_pop(h, &prio) != QueueStatus::ok) return 1;
      std::optional<Buffer> buf = p.adopt(h, parent);
      if (!buf) return 2;
      const int fill = static_cast<int>(buf->data()[0]);
      for (int k = 0; k < 256; ++k)
        if (static_cast<int>(buf->data()[k]) != fill) return 3;
      if ((fill - 1) % 3 != prio) return 4;                  // the handle travelled with its priority
      if (prio > last_prio) return 5;                        // priority order
      if (prio == last_prio && fill <= last_fill) return 6;  // FIFO among equals
      last_prio = prio;
      last_fill = fill;
    }  // each Buffer releases its reference: the pool is empty again
    return oq.size() == 0 ? 0 : 7;
  });
  check_exit(kids.wait(child), "consumer");
  PoolStats ps = pool.stats();
  REQUIRE(ps.classes.size() == 1);
  CHECK(ps.classes[0].in_use == 0);
}

TEST_CASE("epoll: a consumer process sleeps on the listener fd and is woken by each push from another process") {
  TestDomain d;
  Segment seg = Segment::create("epoll", opts(d));
  auto q = PriorityQueue<std::uint32_t>::create(seg, "q", 8);
  struct Board {
    std::atomic<int> ready;
    std::atomic<int> received;
    std::atomic<int> wakeups;
    std::atomic<int> timeouts;
  };
  Board& b = make_board<Board>(seg);
  constexpr int kPushes = 5;
  Children kids;
  pid_t child = kids.spawn([&] {
    Segment own = Segment::open("epoll", {.domain = d.name()});
    auto oq = PriorityQueue<std::uint32_t>::open(own, "q");
    PriorityQueueListener l = oq.listen();
    int ep = ::epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) return 1;
    epoll_event ev{};
    ev.events = EPOLLIN;
    if (::epoll_ctl(ep, EPOLL_CTL_ADD, l.fd(), &ev) != 0) return 2;
    b.ready.store(1);
    std::uint32_t expect = 0;
    while (b.received.load() < kPushes) {
      l.arm();  // 1. arm
      std::uint32_t v = 0;
      bool got = false;
      while (oq.try_pop(v) == QueueStatus::ok) {  // 2. try_pop
        if (v != expect++) return 3;
        b.received.fetch_add(1);
        got = true;
      }
      if (got) continue;
      epoll_event out{};
      int n = ::epoll_wait(ep, &out, 1, 5000);  // 3. epoll
      if (n == 0) b.timeouts.fetch_add(1);
      if (n > 0) b.wakeups.fetch_add(1);
      l.drain();
    }
    ::close(ep);
    return 0;
  });
  REQUIRE(eventually([&] { return b.ready.load() == 1; }));
  CHECK(q.stats().pop_waiters == 1);  // the listener registered as a consumer
  for (std::uint32_t i = 0; i < kPushes; ++i) {
    std::this_thread::sleep_for(30ms);  // the consumer is back in epoll_wait by now
    REQUIRE(q.try_push(i, 0) == QueueStatus::ok);
  }
  check_exit(kids.wait(child), "epoll consumer");
  CHECK(b.received.load() == kPushes);
  CHECK(b.timeouts.load() == 0);
  CHECK(b.wakeups.load() >= 1);
  MESSAGE("epoll wake-ups: " << b.wakeups.load() << " for " << kPushes << " pushes");
  CHECK(q.stats().pop_waiters == 0);  // the listener's destructor unregistered
}

TEST_CASE("bad input: zero capacity, oversized elements, wrong object type, element size mismatch, duplicates") {
  TestDomain d;
  Segment seg = Segment::create("bad", opts(d));
  auto code_of = [](auto&& fn) -> std::optional<std::pair<ErrorCode, std::string>> {
    try {
      fn();
    } catch (const Error& e) {
      return std::make_pair(e.code(), std::string(e.what()));
    }
    return std::nullopt;
  };

  auto e = code_of([&] { PriorityQueue<int>::create(seg, "zero", 0); });
  REQUIRE(e);
  CHECK(e->first == ErrorCode::invalid_argument);
  CHECK(e->second.find("capacity") != std::string::npos);
  CHECK(e->second.find("'zero'") != std::string::npos);
  CHECK_FALSE(seg.find_object("zero").has_value());

  e = code_of([&] { PriorityQueueCore::create(seg, "huge", 4, PriorityQueueCore::kMaxElementSize + 1); });
  REQUIRE(e);
  CHECK(e->first == ErrorCode::invalid_argument);
  CHECK(e->second.find("element size") != std::string::npos);

  e = code_of([&] { PriorityQueue<Item>::create(seg, "toobig", 1u << 20); });  // 80 MiB in a 1 MiB segment
  REQUIRE(e);
  CHECK(e->first == ErrorCode::no_space);
  CHECK(e->second.find("bytes") != std::string::npos);

  seg.find_or_create<Semaphore>("sem", ObjectType::semaphore, 1u);
  e = code_of([&] { PriorityQueue<int>::open(seg, "sem"); });
  REQUIRE(e);
  CHECK(e->first == ErrorCode::type_mismatch);
  CHECK(e->second.find("semaphore") != std::string::npos);
  CHECK(e->second.find("priority_queue") != std::string::npos);

  e = code_of([&] { PriorityQueue<int>::open(seg, "absent"); });
  REQUIRE(e);
  CHECK(e->first == ErrorCode::not_found);

  auto q = PriorityQueue<std::uint64_t>::create(seg, "q", 8);
  REQUIRE(q.try_push(7, 1) == QueueStatus::ok);
  e = code_of([&] { PriorityQueue<std::uint32_t>::open(seg, "q"); });
  REQUIRE(e);
  CHECK(e->first == ErrorCode::invalid_argument);
  CHECK(e->second.find("8-byte") != std::string::npos);
  CHECK(e->second.find("4 bytes") != std::string::npos);

  e = code_of([&] { PriorityQueue<std::uint64_t>::create(seg, "q", 8); });
  REQUIRE(e);
  CHECK(e->first == ErrorCode::already_exists);

  // A raw object of the right type tag but never initialised: bad_magic.
  seg.create_object("fake", ObjectType::priority_queue, 8192);
  e = code_of([&] { PriorityQueue<std::uint64_t>::open(seg, "fake"); });
  REQUIRE(e);
  CHECK(e->first == ErrorCode::bad_magic);

  // The untyped open accepts any element size; the original still works.
  PriorityQueueCore any = PriorityQueueCore::open(seg, "q");
  CHECK(any.element_size() == 8);
  std::uint64_t v = 0;
  REQUIRE(PriorityQueue<std::uint64_t>::open(seg, "q").try_pop(v) == QueueStatus::ok);
  CHECK(v == 7);
}

// ---------------------------------------------------------------------------
// Crash safety

namespace {

constexpr std::uint32_t kMaxIds = 1u << 22;

enum : std::uint8_t { kUnacked = 0, kAcked = 1, kPopped = 2, kRefused = 3 };

struct CrashBoard {
  std::atomic<std::uint64_t> next_id;
  std::atomic<int> started;
  std::atomic<std::uint32_t> duplicate_pops;  // a child popped an id already recorded as popped
  std::atomic<std::uint32_t> torn_pops;
  Item pop_out;  // written by the library before the element leaves
  std::atomic<std::uint8_t> state[kMaxIds];
};

// Push/pop loop until killed. Acknowledgements are written after the call returns.
int worker(const TestDomain& d, const char* segname, CrashBoard& b, unsigned seed) {
  Segment own = Segment::open(segname, {.domain = d.name()});
  auto q = PriorityQueue<Item>::open(own, "q");
  std::mt19937 rng(seed);
  const std::uint32_t cap = q.capacity();
  b.started.store(1);
  for (;;) {
    const std::uint32_t size = q.size();
    const bool push = size < cap / 4 || (size < cap - cap / 4 && rng() % 2 == 0);
    if (push) {
      const std::uint64_t id = b.next_id.fetch_add(1);
      if (id >= kMaxIds) return 0;
      const QueueStatus st = q.try_push(make_item(id), static_cast<std::int32_t>(rng() % 4));
      b.state[id].store(st == QueueStatus::ok ? kAcked : kRefused);
    } else {
      std::int32_t prio = 0;
      if (q.try_pop(b.pop_out, &prio) != QueueStatus::ok) continue;
      const std::uint64_t id = b.pop_out.id;
      if (id >= kMaxIds || !intact(b.pop_out)) {
        b.torn_pops.fetch_add(1);
        continue;
      }
      if (b.state[id].exchange(kPopped) == kPopped) b.duplicate_pops.fetch_add(1);
    }
  }
}

// Runs `iterations` rounds of: worker killed at a random moment; optionally a
// repairer (check()) killed at a random moment; the parent checks the
// invariants. Then drains the queue and accounts for every acknowledged id.
void crash_rounds(const char* segname, std::uint32_t capacity, std::uint32_t prefill, int iterations,
                  bool kill_repairers, int max_delay_us) {
  iterations = ipc::test::iterations(iterations);
  TestDomain d;
  Segment seg = Segment::create(segname, opts(d, 8u << 20));
  auto q = PriorityQueue<Item>::create(seg, "q", capacity);
  CrashBoard& b = make_board<CrashBoard>(seg);
  const unsigned seed = ipc::test::seed();
  INFO("seed " << seed);
  std::mt19937 rng(seed);
  for (std::uint32_t i = 0; i < prefill; ++i) {
    const std::uint64_t id = b.next_id.fetch_add(1);
    REQUIRE(q.try_push(make_item(id), static_cast<std::int32_t>(rng() % 4)) == QueueStatus::ok);
    b.state[id].store(kAcked);
  }
  std::set<std::uint64_t> maybe_consumed;  // ids a killed pop had copied out (see below)
  Children kids{20s};
  int bad_checks = 0, rounds = 0, repairers_killed_running = 0;
  double slowest_check_ms = 0;
  std::string first_problem;
  for (int it = 0; it < iterations && b.next_id.load() < kMaxIds - 200000; ++it, ++rounds) {
    b.started.store(0);
    b.pop_out.id = ~std::uint64_t{0};
    pid_t w = kids.spawn([&] { return worker(d, segname, b, seed + 1000u * static_cast<unsigned>(it)); });
    REQUIRE(eventually([&] { return b.started.load() == 1; }));
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % max_delay_us));
    kids.kill(w);
    // The killed pop (if any) copied its element to pop_out before taking it
    // out; if it returned but died before recording, that element is gone
    // legitimately (the consumer had it). Nothing else may be missing.
    const std::uint64_t out = b.pop_out.id;
    if (out < kMaxIds && b.state[out].load() == kAcked) maybe_consumed.insert(out);
    if (kill_repairers) {
      pid_t r = kids.spawn([&] {
        Segment own = Segment::open(segname, {.domain = d.name()});
        auto oq = PriorityQueue<Item>::open(own, "q");
        b.started.store(2);
        return oq.check().has_value() ? 1 : 0;
      });
      REQUIRE(eventually([&] { return b.started.load() == 2; }));
      std::this_thread::sleep_for(std::chrono::microseconds(rng() % max_delay_us));
      ::kill(r, SIGKILL);
      const ipc::test::ChildExit ex = kids.wait(r);
      if (ex.signaled)
        ++repairers_killed_running;  // killed inside open/lock/repair/check
      else
        CHECK_MESSAGE(ipc::test::child_ok(ex), "a repairer found a broken queue");
    }
    auto t0 = Clock::now();
    std::optional<std::string> problem = q.check();  // repairs if the victim held the lock
    const double check_ms = ms_since(t0);
    slowest_check_ms = std::max(slowest_check_ms, check_ms);
    CHECK(check_ms < kPromptMs);  // no hang (the slowest is printed below)
    if (problem) {
      if (bad_checks++ == 0) first_problem = *problem;
    }
  }
  CHECK_MESSAGE(bad_checks == 0, "first invariant violation: " << first_problem);
  CHECK(b.duplicate_pops.load() == 0);
  CHECK(b.torn_pops.load() == 0);

  // Drain: order, integrity, exactly-once.
  std::set<std::uint64_t> present;
  std::int32_t last_prio = INT32_MAX;
  std::uint64_t last_id = 0;
  int order_violations = 0, torn = 0, twice = 0, resurrected = 0, refused_seen = 0;
  Item v{};
  std::int32_t prio = 0;
  while (q.try_pop(v, &prio) == QueueStatus::ok) {
    if (v.id >= kMaxIds || !intact(v)) {
      ++torn;
      continue;
    }
    if (!present.insert(v.id).second) ++twice;
    if (prio > last_prio || (prio == last_prio && v.id <= last_id)) ++order_violations;
    last_prio = prio;
    last_id = v.id;
    const std::uint8_t s = b.state[v.id].load();
    if (s == kPopped) ++resurrected;  // popped (acknowledged) and still queued: a duplicate
    if (s == kRefused) ++refused_seen;
  }
  int lost = 0, excused = 0;
  const std::uint64_t n = std::min<std::uint64_t>(b.next_id.load(), kMaxIds);
  for (std::uint64_t id = 0; id < n; ++id) {
    if (b.state[id].load() != kAcked || present.count(id)) continue;
    if (maybe_consumed.count(id))
      ++excused;
    else
      ++lost;
  }
  QueueStats st = q.stats();
  CHECK(rounds == iterations);  // the id space did not run out first
  if (kill_repairers) MESSAGE(repairers_killed_running << " repairers were killed before finishing");
  MESSAGE(rounds << " kills: " << st.repairs << " repairs, " << n << " ids, " << present.size()
                 << " left in the queue, " << excused
                 << " consumed by a pop killed before recording it; slowest check() " << slowest_check_ms << " ms");
  CHECK(torn == 0);
  CHECK(twice == 0);
  CHECK(order_violations == 0);
  CHECK(resurrected == 0);
  CHECK(refused_seen == 0);
  CHECK(lost == 0);
  CHECK(excused <= iterations);
  CHECK(st.repairs >= 1);  // the kills did land inside push/pop
  CHECK(q.size() == 0);
}

}  // namespace

TEST_CASE("crash: SIGKILLs at random moments of push/pop loops lose and duplicate nothing acknowledged") {
  crash_rounds("crash", 64, 32, 200, false, 3000);
}

TEST_CASE("crash: repairs killed at random moments are themselves repaired (12000-element heap)") {
  crash_rounds("crashrepair", 12000, 9000, 60, true, 5000);
}

// ---------------------------------------------------------------------------
// kForever

TEST_CASE("push_for(kForever) on a full queue and pop_for(kForever) on an empty one wait for another process") {
  TestDomain d;
  Segment seg = Segment::create("forever", opts(d));
  auto q = PriorityQueue<std::uint64_t>::create(seg, "q", 2);
  struct Board {
    std::atomic<int> waiting;
    std::atomic<std::int64_t> released_ns;  // set just before the other process's pop / push
  };
  Board& b = make_board<Board>(seg);
  Children kids;
  // The other process: ~200 ms after we start waiting, pops one (`pop`) or pushes 77.
  auto later = [&](bool pop) {
    b.waiting.store(0);
    b.released_ns.store(0);
    return kids.spawn([&, pop] {
      Segment own = Segment::open("forever", {.domain = d.name()});
      auto oq = PriorityQueue<std::uint64_t>::open(own, "q");
      if (!eventually([&] { return b.waiting.load() != 0; })) return 1;
      std::this_thread::sleep_for(200ms);
      b.released_ns.store(ipc::test::now_ns());
      std::uint64_t v = 0;
      return (pop ? oq.try_pop(v) : oq.try_push(77, 1)) == QueueStatus::ok ? 0 : 2;
    });
  };

  REQUIRE(q.try_push(1, 0) == QueueStatus::ok);
  REQUIRE(q.try_push(2, 0) == QueueStatus::ok);
  pid_t popper = later(true);
  b.waiting.store(1);
  QueueStatus st = q.push_for(3, 0, ipc::kForever);
  std::int64_t returned_ns = ipc::test::now_ns();
  CHECK_MESSAGE(st == QueueStatus::ok, "push_for(kForever) returned " << str(st));
  CHECK_RETURNED_AFTER(b.released_ns.load(), returned_ns, "push_for(kForever)");
  check_exit(kids.wait(popper), "popper");
  CHECK(q.size() == 2);

  std::uint64_t v = 0;
  while (q.try_pop(v) == QueueStatus::ok) {
  }
  pid_t pusher = later(false);
  b.waiting.store(1);
  st = q.pop_for(v, ipc::kForever);
  returned_ns = ipc::test::now_ns();
  CHECK_MESSAGE(st == QueueStatus::ok, "pop_for(kForever) returned " << str(st));
  CHECK_RETURNED_AFTER(b.released_ns.load(), returned_ns, "pop_for(kForever)");
  CHECK(v == 77);
  check_exit(kids.wait(pusher), "pusher");
}
