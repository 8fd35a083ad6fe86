// Channel crash behaviour (ipc/channel.hpp, "Crash behaviour", R1–R3):
//  - producers and consumers SIGKILLed at random points while traffic flows
//    (SPSC and MPMC, inline and buffer payloads, 115 iterations unless
//    IPC_TEST_ITERATIONS says otherwise; seed from IPC_TEST_SEED): after
//    channel.reclaim(pid) / pool.reclaim(pid) the parent drains the channel
//    with timeouts and finds no duplicate, no lost acknowledged message
//    beyond one per dead consumer, nothing received that was never sent,
//    per-producer order kept, the pool fully returned;
//  - deterministic: a producer parked inside send() between claim and
//    commit (its payload source faults; the SIGSEGV handler parks it), so its
//    slot is `writing`. While it lives nobody recovers the slot; once it is
//    SIGKILLed a consumer blocked in receive gets going promptly
//    without anyone calling reclaim; with a buffer in flight, reclaim returns
//    the slot and pool.reclaim the buffer;
//  - deterministic: a consumer parked between claim (C1) and release (C4)
//    (it made its own mapping of the slot's payload page PROT_NONE, so the
//    copy in C3 faults and parks it): a producer that needs that slot is not
//    given it while the consumer lives, and gets it within a second of the
//    SIGKILL without reclaim; the message is the one the dead consumer had
//    taken (lost), the slot's buffer returns to the pool without pool.reclaim.
//
// Not labelled "threads": every test here uses processes only.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <optional>
#include <ostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "ipc/channel.hpp"
#include "ipc/error.hpp"
#include "ipc/pool.hpp"
#include "ipc/segment.hpp"
#include "support.hpp"

using namespace ipc;
using namespace std::chrono_literals;
using ipc::test::check_exit;
using ipc::test::Children;
using ipc::test::eventually;
using ipc::test::kHangMs;
using ipc::test::kPromptMs;
using ipc::test::make_board;
using ipc::test::ms_between;
using ipc::test::ms_since;
using ipc::test::now_ns;
using ipc::test::opts;
using ipc::test::TestDomain;

using Clock = std::chrono::steady_clock;

namespace {

// ---- message content (as in channel_test.cpp): a 16-byte tag {producer,
// len, seq}, then bytes that are a function of (producer, seq, index).
constexpr std::size_t kTagBytes = 16;

std::byte pattern(std::uint32_t producer, std::uint64_t seq, std::size_t i) {
  return static_cast<std::byte>((seq * 131 + producer * 31 + i * 7) ^ (i >> 8));
}

void fill(std::byte* out, std::size_t len, std::uint32_t producer, std::uint64_t seq) {
  for (std::size_t i = 0; i < len; ++i) out[i] = pattern(producer, seq, i);
  if (len >= kTagBytes) {
    const auto l = static_cast<std::uint32_t>(len);
    std::memcpy(out, &producer, 4);
    std::memcpy(out + 4, &l, 4);
    std::memcpy(out + 8, &seq, 8);
  }
}

bool matches(const std::byte* got, std::size_t len, std::uint32_t producer, std::uint64_t seq) {
  std::vector<std::byte> want(len);
  fill(want.data(), len, producer, seq);
  return std::equal(got, got + len, want.begin());
}

struct Tag {
  std::uint32_t producer = 0;
  std::uint32_t len = 0;
  std::uint64_t seq = 0;
};
std::optional<Tag> decode(std::span<const std::byte> m) {
  if (m.size() < kTagBytes) return std::nullopt;
  Tag t;
  std::memcpy(&t.producer, m.data(), 4);
  std::memcpy(&t.len, m.data() + 4, 4);
  std::memcpy(&t.seq, m.data() + 8, 8);
  if (t.len != m.size() || !matches(m.data(), m.size(), t.producer, t.seq)) return std::nullopt;
  return t;
}

PoolConfig pool_config(std::uint32_t buffers) {
  PoolConfig c;
  c.class_sizes = {256, 4096};
  c.buffers_per_class = buffers;
  c.cache_per_class = 0;  // stats().in_use counts exactly the buffers held
  return c;
}

std::uint32_t pool_in_use(const BufferPool& pool) {
  std::uint32_t n = 0;
  for (const ClassStats& c : pool.stats().classes) n += c.in_use;
  return n;
}

ChannelConfig config(ChannelKind kind, std::uint32_t capacity, std::uint32_t slot_bytes, std::uint32_t spin = 0) {
  ChannelConfig c;
  c.kind = kind;
  c.capacity = capacity;
  c.slot_bytes = slot_bytes;
  c.backpressure = Backpressure::block;
  c.spin = spin;
  return c;
}

// ---------------------------------------------------------------------------
// Random kills

constexpr int kMaxSide = 3;
constexpr std::uint32_t kMaxPerProducer = 30'000;

struct CrashBoard {
  std::atomic<int> go;
  std::atomic<int> stop;
  // Messages of producer p acknowledged: send() returned ok for seq < acked[p].
  // Written only after send returned, so a kill in between leaves it one low.
  std::atomic<std::uint32_t> acked[kMaxSide];
  std::atomic<std::uint64_t> corrupt;                         // bytes or buffer contents do not match the tag
  std::atomic<std::uint64_t> order_violations;                // a consumer saw a producer's seq go backwards
  std::atomic<std::uint64_t> unexpected;                      // a child hit a status it should never see
  std::atomic<std::uint8_t> seen[kMaxSide][kMaxPerProducer];  // receipts, recorded after receive returned
};

struct Scenario {
  const char* name;
  ChannelKind kind;
  int producers;
  int consumers;
  bool buffers;
  int iterations;
};

// A received message: checks it, records it. `last` is this consumer's
// last seq per producer.
void record(CrashBoard& b, const Message& m, bool buffers, std::array<std::int64_t, kMaxSide>& last) {
  std::optional<Tag> t = decode(m.data());
  if (!t || t->producer >= kMaxSide || t->seq >= kMaxPerProducer) {
    b.corrupt.fetch_add(1);
    return;
  }
  if (buffers) {
    const std::size_t size = t->seq % 2 ? 4096 : 200;
    if (m.buffers().size() != 1 || m.lost_buffers() != 0 || m.buffers()[0].capacity() < size ||
        !matches(m.buffers()[0].data(), size, t->producer, t->seq))
      b.corrupt.fetch_add(1);
  } else if (!m.buffers().empty()) {
    b.corrupt.fetch_add(1);
  }
  if (static_cast<std::int64_t>(t->seq) <= last[t->producer]) b.order_violations.fetch_add(1);
  last[t->producer] = static_cast<std::int64_t>(t->seq);
  b.seen[t->producer][t->seq].fetch_add(1);
}

int producer_main(const TestDomain& d, const std::string& seg_name, CrashBoard& b, int p, bool buffers) {
  Segment own = Segment::open(seg_name, {.domain = d.name()});
  BufferPool pool = BufferPool::open(own, "pool");
  Channel c = Channel::open(own, "ch", &pool);
  if (!eventually([&] { return b.go.load() != 0; })) return 1;
  std::vector<std::byte> bytes(c.max_payload());
  for (std::uint32_t seq = 0; seq < kMaxPerProducer && !b.stop.load(std::memory_order_relaxed);) {
    SendStatus st;
    if (buffers) {
      const std::size_t size = seq % 2 ? 4096 : 200;
      Allocation a = pool.allocate_for(size, 50ms);
      if (!a) continue;  // the pool is short while a dead holder's buffers wait for reclaim
      fill(a.buffer.data(), size, static_cast<std::uint32_t>(p), seq);
      fill(bytes.data(), kTagBytes, static_cast<std::uint32_t>(p), seq);
      st = c.send(std::move(a.buffer), {bytes.data(), kTagBytes}, 50ms);
    } else {
      const std::size_t len =
          kTagBytes + (seq * 37 + static_cast<std::uint32_t>(p)) % (c.max_payload() - kTagBytes + 1);
      fill(bytes.data(), len, static_cast<std::uint32_t>(p), seq);
      st = c.send({bytes.data(), len}, {}, 50ms);
    }
    if (st == SendStatus::ok) {
      ++seq;
      b.acked[p].store(seq, std::memory_order_release);
    } else if (st != SendStatus::timed_out) {
      b.unexpected.fetch_add(1);
      return 10;
    }
  }
  return 0;
}

int consumer_main(const TestDomain& d, const std::string& seg_name, CrashBoard& b, bool buffers) {
  Segment own = Segment::open(seg_name, {.domain = d.name()});
  BufferPool pool = BufferPool::open(own, "pool");
  Channel c = Channel::open(own, "ch", &pool);
  std::array<std::int64_t, kMaxSide> last;
  last.fill(-1);
  Message m;
  while (!b.stop.load(std::memory_order_relaxed)) {
    const ReceiveStatus st = c.receive(m, 20ms);
    if (st == ReceiveStatus::ok)
      record(b, m, buffers, last);
    else if (st != ReceiveStatus::timed_out) {
      b.unexpected.fetch_add(1);
      return 10;
    }
    m.clear();
  }
  return 0;
}

struct LoopTotals {
  std::uint64_t recovered_by_reclaim = 0;
  std::uint64_t recovered_total = 0;
  std::uint64_t lost_to_dead_consumers = 0;
  std::uint64_t in_flight_of_dead_producers = 0;
  std::uint64_t messages = 0;
  int kills = 0;
  double slowest_drain_ms = 0;
};

// One iteration; returns false after the first failed CHECK (so a broken
// library does not print 100 copies of the same failure).
bool run_iteration(const TestDomain& d, const Scenario& sc, int it, std::mt19937& rng, LoopTotals& totals) {
  const std::string seg_name = std::string("it") + std::to_string(it);
  bool ok = true;
  {
    Segment seg = Segment::create(seg_name, opts(d, 4u << 20));
    BufferPool pool = BufferPool::create(seg, "pool", pool_config(64));
    Channel ch = Channel::create(seg, "ch", config(sc.kind, 16, 256, 100), &pool);
    CrashBoard& b = make_board<CrashBoard>(seg);
    Children kids(10s);
    std::vector<pid_t> producers, consumers;
    for (int p = 0; p < sc.producers; ++p)
      producers.push_back(kids.spawn([&, p] { return producer_main(d, seg_name, b, p, sc.buffers); }));
    for (int k = 0; k < sc.consumers; ++k)
      consumers.push_back(kids.spawn([&] { return consumer_main(d, seg_name, b, sc.buffers); }));
    b.go.store(1);

    // Let traffic flow, then kill a producer, a consumer, or one of each.
    std::this_thread::sleep_for(std::chrono::microseconds(500 + rng() % 15'000));
    const int what = static_cast<int>(rng() % 3);  // 0 producer, 1 consumer, 2 both
    std::vector<pid_t> dead;
    std::vector<int> dead_producers;
    int dead_consumers = 0;
    if (what != 1) {
      const int p = static_cast<int>(rng() % producers.size());
      kids.kill(producers[p]);
      dead.push_back(producers[p]);
      dead_producers.push_back(p);
    }
    if (what != 0) {
      const int k = static_cast<int>(rng() % consumers.size());
      kids.kill(consumers[k]);
      dead.push_back(consumers[k]);
      ++dead_consumers;
    }
    totals.kills += static_cast<int>(dead.size());
    // Survivors keep going for a moment, running into the dead side's slots
    // (they recover them themselves after kStuckCheck), then stop.
    std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 20));
    b.stop.store(1);
    for (int p = 0; p < sc.producers; ++p)
      if (std::find(dead.begin(), dead.end(), producers[p]) == dead.end())
        check_exit(kids.wait(producers[p]), "producer");
    for (pid_t c : consumers)
      if (std::find(dead.begin(), dead.end(), c) == dead.end()) check_exit(kids.wait(c), "consumer");

    const std::uint64_t recovered_before = ch.stats().recovered;
    for (pid_t p : dead) {
      totals.recovered_by_reclaim += ch.reclaim(static_cast<std::uint32_t>(p));
      pool.reclaim(static_cast<std::uint32_t>(p));
    }
    CHECK(ch.stats().recovered >= recovered_before);

    // Drain: must not hang, must find only what the protocol allows.
    std::array<std::int64_t, kMaxSide> last;
    last.fill(-1);
    Message m;
    const auto t0 = Clock::now();
    ReceiveStatus st;
    while ((st = ch.receive(m, 100ms)) == ReceiveStatus::ok) {
      record(b, m, sc.buffers, last);
      m.clear();
    }
    CHECK(st == ReceiveStatus::timed_out);
    const double drain_ms = ms_since(t0);
    totals.slowest_drain_ms = std::max(totals.slowest_drain_ms, drain_ms);
    CHECK(drain_ms < kHangMs);  // no hang (the slowest is printed by run_scenario)
    totals.recovered_total += ch.stats().recovered;

    std::uint64_t duplicates = 0, missing = 0, unsent = 0, in_flight = 0;
    for (int p = 0; p < sc.producers; ++p) {
      const std::uint32_t acked = b.acked[p].load();
      const bool producer_died = std::find(dead_producers.begin(), dead_producers.end(), p) != dead_producers.end();
      totals.messages += acked;
      for (std::uint32_t s = 0; s < kMaxPerProducer; ++s) {
        const int n = b.seen[p][s].load();
        duplicates += n > 1;
        if (s < acked)
          missing += n == 0;
        else if (n && s == acked && producer_died)
          ++in_flight;  // committed, killed before it recorded the ack: allowed
        else if (n)
          ++unsent;
      }
    }
    totals.lost_to_dead_consumers += missing;
    totals.in_flight_of_dead_producers += in_flight;
    INFO("scenario " << sc.name << " iteration " << it << " kill " << what);
    CHECK(duplicates == 0);
    CHECK(missing <= static_cast<std::uint64_t>(dead_consumers));
    CHECK(unsent == 0);
    CHECK(b.corrupt.load() == 0);
    CHECK(b.order_violations.load() == 0);
    CHECK(b.unexpected.load() == 0);
    m.clear();
    CHECK(pool_in_use(pool) == 0);
    ChannelStats cs = ch.stats();
    CHECK(cs.depth == 0);
    // Still a working channel: a full lap goes through.
    const std::uint64_t x = 42;
    for (std::uint32_t i = 0; i < ch.capacity(); ++i)
      CHECK(ch.try_send({reinterpret_cast<const std::byte*>(&x), sizeof x}) == SendStatus::ok);
    std::uint32_t got = 0;
    while (ch.try_receive(m) == ReceiveStatus::ok) ++got;
    CHECK(got == ch.capacity());
    ok = duplicates == 0 && missing <= static_cast<std::uint64_t>(dead_consumers) && unsent == 0 &&
         b.corrupt.load() == 0 && b.order_violations.load() == 0 && b.unexpected.load() == 0 &&
         pool_in_use(pool) == 0 && got == ch.capacity();
  }
  Segment::unlink(seg_name, d.name());
  return ok;
}

void run_scenario(const Scenario& sc, LoopTotals& totals) {
  TestDomain d;
  const unsigned seed = ipc::test::seed();
  INFO("seed " << seed);
  std::mt19937 rng(seed);
  const int iterations = ipc::test::iterations(sc.iterations);
  for (int it = 0; it < iterations; ++it)
    if (!run_iteration(d, sc, it, rng, totals)) break;
  MESSAGE(std::string(sc.name) << ": " << iterations << " iterations, " << totals.kills << " kills, " << totals.messages
                               << " acknowledged messages, " << totals.lost_to_dead_consumers
                               << " lost with a dead consumer, " << totals.in_flight_of_dead_producers
                               << " in flight of a dead producer, slots recovered: " << totals.recovered_total << " ("
                               << totals.recovered_by_reclaim << " by reclaim), slowest drain "
                               << totals.slowest_drain_ms << " ms");
  CHECK(d.leftover_files() == 0);
}

}  // namespace

TEST_CASE("random SIGKILL of SPSC producer and consumer, inline payloads: no duplicate, no loss beyond the protocol") {
  LoopTotals t;
  run_scenario({"spsc-inline", ChannelKind::spsc, 1, 1, false, 35}, t);
}

TEST_CASE("random SIGKILL of SPSC producer and consumer, buffer payloads: no duplicate, no loss, pool returned") {
  LoopTotals t;
  run_scenario({"spsc-buffers", ChannelKind::spsc, 1, 1, true, 25}, t);
}

TEST_CASE(
    "random SIGKILL among 3 MPMC producers and 3 consumers, inline payloads: no duplicate, no loss beyond the "
    "protocol") {
  LoopTotals t;
  run_scenario({"mpmc-inline", ChannelKind::mpmc, 3, 3, false, 30}, t);
}

TEST_CASE(
    "random SIGKILL among 3 MPMC producers and 3 consumers, buffer payloads: no duplicate, no loss, pool returned") {
  LoopTotals t;
  run_scenario({"mpmc-buffers", ChannelKind::mpmc, 3, 3, true, 25}, t);
}

// ---------------------------------------------------------------------------
// Deterministic: a producer parked between claim (P1) and commit (P5)

namespace {

struct ParkBoard {
  std::atomic<int> parked;
  std::atomic<int> received;
  std::atomic<std::int64_t> received_at;
  std::atomic<std::uint64_t> got;
};
ParkBoard* g_park_board = nullptr;  // the parker child's only global: read by its SIGSEGV handler

extern "C" void park_on_fault(int) {
  g_park_board->parked.store(1);  // lock-free atomic store: async-signal-safe
  for (;;) ::pause();
}

// In a child: sends a message whose bytes run into a PROT_NONE page. put()
// claims the slot (P1, P2), then faults copying the bytes (P3): the handler
// parks the process with the slot in `writing`. With `buffer`, a buffer is
// part of the message (its handle is copied into the slot before the bytes).
int park_inside_send(const TestDomain& d, const std::string& seg_name, ParkBoard& b, bool buffer) {
  Segment own = Segment::open(seg_name, {.domain = d.name()});
  BufferPool pool = BufferPool::open(own, "pool");
  Channel c = Channel::open(own, "ch", &pool);
  const long page = ::sysconf(_SC_PAGESIZE);
  void* mem =
      ::mmap(nullptr, static_cast<std::size_t>(2 * page), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return 20;
  auto* base = static_cast<std::byte*>(mem);
  if (::mprotect(base + page, static_cast<std::size_t>(page), PROT_NONE) != 0) return 21;
  g_park_board = &b;
  struct sigaction sa {};
  sa.sa_handler = park_on_fault;
  sigemptyset(&sa.sa_mask);
  if (::sigaction(SIGSEGV, &sa, nullptr) != 0 || ::sigaction(SIGBUS, &sa, nullptr) != 0) return 22;
  std::span<const std::byte> bytes(base + page - 16, 64);  // 16 readable bytes, then the fault
  SendStatus st;
  if (buffer) {
    Allocation a = pool.allocate(200);
    if (!a) return 23;
    st = c.send(std::move(a.buffer), bytes, 1s);
  } else {
    st = c.send(bytes, {}, 1s);
  }
  return 30 + static_cast<int>(st);  // not reached: the copy faults
}

// A consumer child: one blocking receive; records when and what.
int receive_one(const TestDomain& d, const std::string& seg_name, ParkBoard& b) {
  Segment own = Segment::open(seg_name, {.domain = d.name()});
  BufferPool pool = BufferPool::open(own, "pool");
  Channel c = Channel::open(own, "ch", &pool);
  Message m;
  if (c.receive(m, 8s) != ReceiveStatus::ok) return 10;
  b.received_at.store(now_ns());
  std::uint64_t v = 0;
  if (m.size() != sizeof v) return 11;
  std::memcpy(&v, m.data().data(), sizeof v);
  b.got.store(v);
  b.received.store(1);
  return 0;
}

}  // namespace

TEST_CASE(
    "a producer killed between claim and commit: not recovered while it lives, a blocked consumer gets going within a "
    "second without reclaim") {
  for (ChannelKind kind : {ChannelKind::mpmc, ChannelKind::spsc}) {
    const bool spsc = kind == ChannelKind::spsc;
    CAPTURE(spsc);
    TestDomain d;
    Segment seg = Segment::create("park", opts(d, 4u << 20));
    BufferPool pool = BufferPool::create(seg, "pool", pool_config(8));
    Channel ch = Channel::create(seg, "ch", config(kind, 8, 256), &pool);
    ParkBoard& b = make_board<ParkBoard>(seg);
    Children kids(10s);
    pid_t parker = kids.spawn([&] { return park_inside_send(d, "park", b, false); });
    REQUIRE(eventually([&] { return b.parked.load() != 0; }, 5s));
    CHECK(ch.stats().depth == 1);  // the claimed slot counts as sent-not-received

    const std::uint64_t after = 0xA5A5;
    const std::span<const std::byte> after_bytes{reinterpret_cast<const std::byte*>(&after), sizeof after};
    if (!spsc) REQUIRE(ch.try_send(after_bytes) == SendStatus::ok);  // behind the stuck slot
    pid_t consumer = kids.spawn([&] { return receive_one(d, "park", b); });

    // While the parked producer lives, its slot is not taken from it, and
    // the message behind it is not delivered out of order.
    std::this_thread::sleep_for(300ms);
    CHECK(b.received.load() == 0);
    CHECK(ch.stats().recovered == 0);
    CHECK(ch.reclaim_dead() == 0);

    const std::int64_t killed_at = now_ns();
    kids.kill(parker);                                              // SIGKILL + reap
    if (spsc) REQUIRE(ch.try_send(after_bytes) == SendStatus::ok);  // the successor producer
    check_exit(kids.wait(consumer), "consumer");
    CHECK(b.got.load() == after);
    const double ms = ms_between(killed_at, b.received_at.load());
    MESSAGE((spsc ? "spsc" : "mpmc") << ": consumer got going " << ms << " ms after the kill");
    CHECK(ms > 0);  // only after the kill
    CHECK_PROMPT(ms, kPromptMs);
    CHECK(ch.stats().recovered == 1);
    CHECK(ch.reclaim(static_cast<std::uint32_t>(parker)) == 0);  // nothing left to reclaim
    CHECK(ch.stats().depth == 0);
    Message m;
    CHECK(ch.try_receive(m) == ReceiveStatus::empty);
    // The ring works on: two full laps.
    for (std::uint64_t i = 0; i < 2 * ch.capacity(); ++i) {
      REQUIRE(ch.try_send({reinterpret_cast<const std::byte*>(&i), sizeof i}) == SendStatus::ok);
      REQUIRE(ch.try_receive(m) == ReceiveStatus::ok);
      std::uint64_t v = 0;
      std::memcpy(&v, m.data().data(), sizeof v);
      CHECK(v == i);
    }
  }
}

TEST_CASE(
    "a producer killed between claim and commit with a buffer: reclaim recovers the slot, pool.reclaim returns the "
    "buffer") {
  TestDomain d;
  Segment seg = Segment::create("parkbuf", opts(d, 4u << 20));
  BufferPool pool = BufferPool::create(seg, "pool", pool_config(8));
  Channel ch = Channel::create(seg, "ch", config(ChannelKind::mpmc, 4, 256), &pool);
  ParkBoard& b = make_board<ParkBoard>(seg);
  Children kids(10s);
  pid_t parker = kids.spawn([&] { return park_inside_send(d, "parkbuf", b, true); });
  REQUIRE(eventually([&] { return b.parked.load() != 0; }, 5s));
  CHECK(pool_in_use(pool) == 1);
  kids.kill(parker);
  CHECK(ch.reclaim(static_cast<std::uint32_t>(parker)) == 1);
  CHECK(ch.reclaim(static_cast<std::uint32_t>(parker)) == 0);  // exactly once
  CHECK(ch.stats().recovered == 1);
  CHECK(pool.reclaim(static_cast<std::uint32_t>(parker)) == 1);
  CHECK(pool_in_use(pool) == 0);
  // Nothing is delivered from the dead producer's slot; a full lap fits again.
  Message m;
  CHECK(ch.receive(m, 50ms) == ReceiveStatus::timed_out);
  for (std::uint32_t i = 0; i < ch.capacity(); ++i) {
    Allocation a = pool.allocate(200);
    REQUIRE(a);
    std::memcpy(a.buffer.data(), &i, sizeof i);
    REQUIRE(ch.try_send({}, std::span<Buffer>(&a.buffer, 1)) == SendStatus::ok);
  }
  for (std::uint32_t i = 0; i < ch.capacity(); ++i) {
    REQUIRE(ch.try_receive(m) == ReceiveStatus::ok);
    REQUIRE(m.buffers().size() == 1);
    std::uint32_t v = 99;
    std::memcpy(&v, m.buffers()[0].data(), sizeof v);
    CHECK(v == i);
  }
  m.clear();
  CHECK(pool_in_use(pool) == 0);
}

namespace {

// In a child: a consumer whose own view of slot 0's payload (past the first
// page of the slot) is PROT_NONE. take() claims slot 0 (C1, C2) and faults
// copying the bytes (C3): the handler parks it with the slot in `reading`.
int park_inside_receive(const TestDomain& d, const std::string& seg_name, ParkBoard& b, const ChannelConfig& cfg) {
  Segment own = Segment::open(seg_name, {.domain = d.name()});
  BufferPool pool = BufferPool::open(own, "pool");
  Channel c = Channel::open(own, "ch", &pool);
  std::optional<Object> obj = own.find_object("ch");
  if (!obj) return 20;
  // channel.hpp: the slots follow the header; bytes_needed = header + capacity × slot_bytes.
  const std::size_t header = Channel::bytes_needed(cfg) - std::size_t(cfg.capacity) * cfg.slot_bytes;
  const auto slot0 = reinterpret_cast<std::uintptr_t>(obj->data) + header;
  const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  const std::uintptr_t victim =
      (slot0 + ring::kSlotHeaderBytes + page) & ~(page - 1);  // a payload page, not the word's
  if (victim <= slot0 + ring::kSlotHeaderBytes || victim + page > slot0 + cfg.slot_bytes + page) return 21;
  if (::mprotect(reinterpret_cast<void*>(victim), page, PROT_NONE) != 0) return 22;
  g_park_board = &b;
  struct sigaction sa {};
  sa.sa_handler = park_on_fault;
  sigemptyset(&sa.sa_mask);
  if (::sigaction(SIGSEGV, &sa, nullptr) != 0 || ::sigaction(SIGBUS, &sa, nullptr) != 0) return 23;
  Message m;
  const ReceiveStatus st = c.receive(m, 5s);
  return 30 + static_cast<int>(st);  // not reached: the copy faults
}

}  // namespace

TEST_CASE(
    "a consumer killed between claim and release: its slot is not taken while it lives, a blocked producer gets it "
    "within a second without reclaim") {
  for (ChannelKind kind : {ChannelKind::mpmc, ChannelKind::spsc}) {
    const bool spsc = kind == ChannelKind::spsc;
    CAPTURE(spsc);
    TestDomain d;
    Segment seg = Segment::create("parkrx", opts(d, 4u << 20));
    BufferPool pool = BufferPool::create(seg, "pool", pool_config(8));
    const ChannelConfig cfg = config(kind, 4, 16384);
    Channel ch = Channel::create(seg, "ch", cfg, &pool);
    ParkBoard& b = make_board<ParkBoard>(seg);
    // Message 0 (slot 0): a buffer and 12000 inline bytes, so the copy reaches the protected page.
    {
      Allocation a = pool.allocate(200);
      REQUIRE(a);
      std::vector<std::byte> big(12000, std::byte{7});
      REQUIRE(ch.send(std::move(a.buffer), {big.data(), big.size()}, 1s) == SendStatus::ok);
    }
    CHECK(pool_in_use(pool) == 1);
    Children kids(10s);
    pid_t consumer = kids.spawn([&] { return park_inside_receive(d, "parkrx", b, cfg); });
    REQUIRE(eventually([&] { return b.parked.load() != 0; }, 5s));
    // Messages 1..3 fill the other slots; message 4 needs slot 0.
    for (std::uint64_t i = 1; i < 4; ++i)
      REQUIRE(ch.try_send({reinterpret_cast<const std::byte*>(&i), sizeof i}) == SendStatus::ok);
    const std::uint64_t four = 4;
    const std::span<const std::byte> four_bytes{reinterpret_cast<const std::byte*>(&four), sizeof four};
    auto t0 = Clock::now();
    CHECK(ch.send(four_bytes, {}, 200ms) == SendStatus::timed_out);  // the live reader keeps its slot
    CHECK(Clock::now() - t0 >= 200ms);
    CHECK(ch.reclaim_dead() == 0);
    CHECK(ch.stats().recovered == 0);

    // A producer in another process blocks on the full ring; the kill frees it.
    pid_t producer = kids.spawn([&] {
      Segment own = Segment::open("parkrx", {.domain = d.name()});
      BufferPool p = BufferPool::open(own, "pool");
      Channel c = Channel::open(own, "ch", &p);
      if (c.send(four_bytes, {}, 8s) != SendStatus::ok) return 10;
      b.received_at.store(now_ns());  // here: when the send went through
      return 0;
    });
    std::this_thread::sleep_for(100ms);
    const std::int64_t killed_at = now_ns();
    kids.kill(consumer);
    check_exit(kids.wait(producer), "producer");
    const double ms = ms_between(killed_at, b.received_at.load());
    MESSAGE((spsc ? "spsc" : "mpmc") << ": blocked producer got the slot " << ms << " ms after the consumer's kill");
    CHECK(ms > 0);  // only after the kill
    CHECK_PROMPT(ms, kPromptMs);
    CHECK(ch.stats().recovered == 1);
    CHECK(ch.reclaim(static_cast<std::uint32_t>(consumer)) == 0);
    // The slot's reference was released by the recovery (the dead consumer
    // had not adopted it yet): the pool has it back without pool.reclaim.
    CHECK(pool_in_use(pool) == 0);
    // Messages 1..4 in order; message 0 was the one the dead consumer had taken.
    Message m;
    for (std::uint64_t i = 1; i <= 4; ++i) {
      REQUIRE(ch.receive(m, 1s) == ReceiveStatus::ok);
      std::uint64_t v = 0;
      REQUIRE(m.size() == sizeof v);
      std::memcpy(&v, m.data().data(), sizeof v);
      CHECK(v == i);
    }
    CHECK(ch.try_receive(m) == ReceiveStatus::empty);
    CHECK(pool.reclaim(static_cast<std::uint32_t>(consumer)) == 0);
  }
}
