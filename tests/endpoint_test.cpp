// Typed Cap'n Proto endpoints (ipc/endpoint.hpp): Publisher<Task> /
// Subscriber<Task> as a work queue over an MPMC channel (2 producer × 2
// consumer processes: every task exactly once, fields intact byte by byte,
// per-producer order per consumer, the pool fully returned); Publisher<EventMsg>
// fanned out over a blocking Broadcast to 3 subscriber processes (every union
// member round-trips; the ring keeps the last `capacity` messages' buffers,
// exact in_use at each step, 0 once overwritten inline); a 1 MiB task, a
// multi-segment message and the too_large refusal of a slot with room for 3
// handles; lifetime (a Received outlives later traffic through a 4-buffer
// pool; a held backlog makes publish() return no_buffers at once, and it
// succeeds after the holder lets go); hand-made malformed messages (garbage
// buffer, corrupt header, no buffers, a bad pointer behind a valid header and
// checksum) refused with a reason while the channel keeps flowing; a write
// after send caught by ChecksumCheck::always; receive / send timeouts; and a
// publisher SIGKILLed 36 times while building 16-240 KiB messages (after
// channel.reclaim + pool.reclaim the pool holds exactly what the subscriber
// holds; the subscriber never hangs and sees only complete messages, none
// lost that was committed). In one process: a lossy overrun reported through
// missed(), the 10th concurrent holder of one broadcast message refused as
// malformed with the cause, and a moved-from Received being empty (fails
// today: Received's defaulted move leaves the source engaged).
//
// Not labelled "threads": processes only. Children open their own Segment,
// BufferPool and Channel/Broadcast; only the zeroed "board" struct is used
// through the mapping inherited over fork.
#include <doctest/doctest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <optional>
#include <ostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "events.capnp.h"
#include "ipc/broadcast.hpp"
#include "ipc/channel.hpp"
#include "ipc/endpoint.hpp"
#include "ipc/error.hpp"
#include "ipc/message.hpp"
#include "ipc/pool.hpp"
#include "ipc/segment.hpp"
#include "support.hpp"
#include "tasks.capnp.h"

using namespace ipc;
using namespace std::chrono_literals;
using EventMsg = ipc::schema::Event;  // ipc::Event is the futex notifier
using ipc::schema::Task;
using ipc::test::check_exit;
using ipc::test::Children;
using ipc::test::eventually;
using ipc::test::kPromptMs;
using ipc::test::make_board;
using ipc::test::ms_since;
using ipc::test::opts;
using ipc::test::TestDomain;

using Clock = std::chrono::steady_clock;

// doctest prints these by name.
namespace ipc {
std::ostream& operator<<(std::ostream& os, TypedStatus s) { return os << to_string(s); }
}  // namespace ipc

namespace {

constexpr const char* kChannel = "tasks";
constexpr std::uint64_t kStopId = ~std::uint64_t{0};

int fail(int code, const char* what, std::uint64_t a = 0, std::uint64_t b = 0) {
  std::fprintf(stderr, "child %d: check %d failed: %s (%llu, %llu)\n", ::getpid(), code, what,
               static_cast<unsigned long long>(a), static_cast<unsigned long long>(b));
  return code;
}
int fail(int code, const std::string& what, std::uint64_t a = 0) { return fail(code, what.c_str(), a); }

std::uint32_t in_use(const BufferPool& p) {
  std::uint32_t n = 0;
  for (const auto& c : p.stats().classes) n += c.in_use;
  return n;
}

PoolConfig pool_config(std::vector<std::size_t> classes, std::uint32_t per_class) {
  PoolConfig c;
  c.class_sizes = std::move(classes);
  c.buffers_per_class = per_class;
  c.cache_per_class = 0;  // exact in_use counts
  return c;
}

ChannelConfig channel_config(std::uint32_t capacity, std::uint32_t slot_bytes = kMessageSlotBytes,
                             Backpressure bp = Backpressure::block) {
  ChannelConfig c;
  c.kind = ChannelKind::mpmc;
  c.capacity = capacity;
  c.slot_bytes = slot_bytes;
  c.backpressure = bp;
  return c;
}

// A child's own mapping, pool handle and channel, built in place (the
// channel points at the pool handle: never move this).
struct ChildChannel {
  Segment seg;
  BufferPool pool;
  Channel ch;
  ChildChannel(const TestDomain& d, const char* seg_name, const char* channel = kChannel)
      : seg(Segment::open(seg_name, {.domain = d.name()})),
        pool(BufferPool::open(seg, "pool")),
        ch(Channel::open(seg, channel, &pool)) {}
};

// ---- message contents: everything derives from the id, so a receiver checks without being told ----

std::uint64_t mix(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

kj::byte payload_byte(std::uint64_t id, std::size_t i) {
  return static_cast<kj::byte>((mix(id) >> (8 * (i & 7))) + i * 131 + (i >> 9));
}

std::string kind_text(std::uint64_t id) { return "kind-" + std::to_string(id % 7) + "-" + std::to_string(id); }

std::string str(capnp::Text::Reader t) { return std::string(t.cStr(), t.size()); }
kj::StringPtr sp(const std::string& s) { return kj::StringPtr(s.c_str(), s.size()); }

void fill_payload(capnp::Data::Builder p, std::uint64_t id) {
  for (std::size_t i = 0; i < p.size(); ++i) p[i] = payload_byte(id, i);
}

void fill_task(Task::Builder t, std::uint64_t id, std::size_t len) {
  t.setId(id);
  t.setKind(sp(kind_text(id)));
  fill_payload(t.initPayload(static_cast<capnp::uint>(len)), id);
  t.setDeadlineNs(static_cast<std::int64_t>(id * 3 + 1));
  t.setAttempt(static_cast<std::uint32_t>(id % 5 + 1));
}

// "" or the first mismatch.
std::string check_task(Task::Reader t, std::uint64_t id, std::size_t len) {
  if (t.getId() != id) return "id " + std::to_string(t.getId()) + " != " + std::to_string(id);
  if (str(t.getKind()) != kind_text(id)) return "kind '" + str(t.getKind()) + "' of task " + std::to_string(id);
  auto p = t.getPayload();
  if (p.size() != len) return "payload size " + std::to_string(p.size()) + " != " + std::to_string(len);
  for (std::size_t i = 0; i < p.size(); ++i)
    if (p[i] != payload_byte(id, i)) return "payload byte " + std::to_string(i) + " of task " + std::to_string(id);
  if (t.getDeadlineNs() != static_cast<std::int64_t>(id * 3 + 1)) return "deadline of task " + std::to_string(id);
  if (t.getAttempt() != id % 5 + 1) return "attempt of task " + std::to_string(id);
  return "";
}

// Event i: one of the 4 union members (i % 4), every field derived from i.
void fill_event(EventMsg::Builder e, std::uint32_t i) {
  e.setTimestampNs(std::int64_t{i} * 1000 + 7);
  e.setSourcePid(4000 + i);
  e.setSeverity(static_cast<ipc::schema::Severity>(i % 5));
  switch (i % 4) {
    case 0: {
      auto p = e.initProcessDied();
      p.setPid(1000 + i);
      p.setSignal(static_cast<std::int32_t>(i % 32));
      break;
    }
    case 1: {
      auto s = e.initSegmentCreated();
      const std::string name = "segment-" + std::to_string(i);
      s.setName(sp(name));
      s.setSize(std::uint64_t{i} << 20);
      break;
    }
    case 2: {
      auto p = e.initPoolPressure();
      const std::string pool = "pool-" + std::to_string(i);
      p.setPool(sp(pool));
      p.setLevel(static_cast<ipc::schema::PressureLevel>(i % 5));
      break;
    }
    default: {
      auto c = e.initCustom();
      const std::string topic = "topic-" + std::to_string(i);
      c.setTopic(sp(topic));
      fill_payload(c.initBody(i * 7 % 300 + 1), i);
      break;
    }
  }
}

std::string check_event(EventMsg::Reader e, std::uint32_t i) {
  const std::string at = " of event " + std::to_string(i);
  if (e.getTimestampNs() != std::int64_t{i} * 1000 + 7) return "timestamp" + at;
  if (e.getSourcePid() != 4000 + i) return "sourcePid" + at;
  if (e.getSeverity() != static_cast<ipc::schema::Severity>(i % 5)) return "severity" + at;
  switch (i % 4) {
    case 0:
      if (!e.isProcessDied()) return "union member (want processDied)" + at;
      if (e.getProcessDied().getPid() != 1000 + i ||
          e.getProcessDied().getSignal() != static_cast<std::int32_t>(i % 32))
        return "processDied fields" + at;
      return "";
    case 1:
      if (!e.isSegmentCreated()) return "union member (want segmentCreated)" + at;
      if (str(e.getSegmentCreated().getName()) != "segment-" + std::to_string(i) ||
          e.getSegmentCreated().getSize() != std::uint64_t{i} << 20)
        return "segmentCreated fields" + at;
      return "";
    case 2:
      if (!e.isPoolPressure()) return "union member (want poolPressure)" + at;
      if (str(e.getPoolPressure().getPool()) != "pool-" + std::to_string(i) ||
          e.getPoolPressure().getLevel() != static_cast<ipc::schema::PressureLevel>(i % 5))
        return "poolPressure fields" + at;
      return "";
    default: {
      if (!e.isCustom()) return "union member (want custom)" + at;
      if (str(e.getCustom().getTopic()) != "topic-" + std::to_string(i)) return "custom topic" + at;
      auto body = e.getCustom().getBody();
      if (body.size() != i * 7 % 300 + 1) return "custom body size" + at;
      for (std::size_t j = 0; j < body.size(); ++j)
        if (body[j] != payload_byte(i, j)) return "custom body byte " + std::to_string(j) + at;
      return "";
    }
  }
}

// A Task with `segments` (3 or ≥ 4) segments, built from a 128-byte hint in
// a pool whose classes are {256, 4096, 65536} (+ a large region): the kind
// text does not fit segment 0, the payload not segment 1; for ≥ 4,
// unadopted orphans of 5000 and 70000 bytes push the payload further out.
// The orphans are gone (zeroed by capnp) before the loan is sent.
std::uint64_t multi_segment_payload(bool four_or_more) { return four_or_more ? 300000 : 5000; }
void build_multi_segment(Publisher<Task>::Loan& loan, std::uint64_t id, bool four_or_more) {
  Task::Builder t = loan.root();
  t.setId(id);
  t.setKind(sp(std::string(300, 'm')));
  if (four_or_more) {
    auto o1 = loan.builder().getOrphanage().newOrphan<capnp::Data>(5000);
    auto o2 = loan.builder().getOrphanage().newOrphan<capnp::Data>(70000);
  }
  fill_payload(t.initPayload(static_cast<capnp::uint>(multi_segment_payload(four_or_more))), id);
  t.setAttempt(1);
}
std::string check_multi_segment(Task::Reader t, std::uint64_t id, bool four_or_more) {
  if (t.getId() != id) return "id";
  if (str(t.getKind()) != std::string(300, 'm')) return "kind";
  auto p = t.getPayload();
  if (p.size() != multi_segment_payload(four_or_more)) return "payload size " + std::to_string(p.size());
  for (std::size_t i = 0; i < p.size(); ++i)
    if (p[i] != payload_byte(id, i)) return "payload byte " + std::to_string(i);
  return t.getAttempt() == 1 ? "" : "attempt";
}

}  // namespace

// ---------------------------------------------------------------------------
// Work queue

namespace {
constexpr std::uint32_t kPerProducer = 3000;
constexpr std::size_t kMaxWorkPayload = 2000;  // + kind: one 4 KiB segment
std::size_t work_len(std::uint64_t id) { return mix(id ^ 0x5555) % (kMaxWorkPayload + 1); }

struct QueueBoard {
  std::atomic<int> consumers_ready;
  std::atomic<int> go;
  std::atomic<std::uint32_t> per_consumer[2];
  std::atomic<std::uint8_t> seen[2][kPerProducer];
};
}  // namespace

TEST_CASE(
    "work queue: 2 producer x 2 consumer processes over an MPMC channel - every task once, intact, in per-producer "
    "order, pool returned") {
  TestDomain d;
  Segment seg = Segment::create("wq", opts(d, 4u << 20));
  BufferPool pool = BufferPool::create(seg, "pool", pool_config({256, 4096}, 160));
  Channel ch = Channel::create(seg, kChannel, channel_config(64), &pool);
  auto& board = make_board<QueueBoard>(seg);
  Children kids(30s);
  std::vector<pid_t> consumers, producers;
  for (int c = 0; c < 2; ++c)
    consumers.push_back(kids.spawn([&, c] {
      ChildChannel a(d, "wq");
      Subscriber<Task> sub(a.ch);
      board.consumers_ready.fetch_add(1);
      std::uint64_t next[2] = {0, 0};  // per producer: the lowest seq still acceptable
      Received<Task> msg;
      for (;;) {
        const TypedStatus st = sub.receive(msg, 10s);
        if (st != TypedStatus::ok) return fail(10, "receive: " + std::string(to_string(st)) + " " + sub.last_error());
        Task::Reader t = msg.root();
        if (t.getId() == kStopId) return str(t.getKind()) == "stop" ? 0 : fail(11, "stop kind");
        const std::uint64_t id = t.getId();
        const std::uint64_t p = id >> 32, seq = id & 0xffffffffu;
        if (p >= 2 || seq >= kPerProducer) return fail(12, "unknown task id", id);
        if (const std::string m = check_task(t, id, work_len(id)); !m.empty()) return fail(13, m, id);
        if (seq < next[p]) return fail(14, "out of per-producer order (seq)", seq);
        next[p] = seq + 1;
        board.seen[p][seq].fetch_add(1);
        board.per_consumer[c].fetch_add(1);
      }
    }));
  REQUIRE(eventually([&] { return board.consumers_ready.load() == 2; }));
  for (std::uint64_t p = 0; p < 2; ++p)
    producers.push_back(kids.spawn([&, p] {
      ChildChannel a(d, "wq");
      Publisher<Task> pub(a.ch, a.pool);
      if (!eventually([&] { return board.go.load() != 0; })) return fail(20, "no go");
      for (std::uint64_t seq = 0; seq < kPerProducer; ++seq) {
        const std::uint64_t id = p << 32 | seq;
        const TypedStatus st = pub.publish([&](Task::Builder t) { fill_task(t, id, work_len(id)); }, 10s);
        if (st != TypedStatus::ok) return fail(21, "publish: " + pub.last_error(), seq);
      }
      return 0;
    }));
  board.go.store(1);
  for (pid_t p : producers) check_exit(kids.wait(p), "producer");
  {
    Publisher<Task> stop(ch, pool);
    for (int i = 0; i < 2; ++i)
      REQUIRE(stop.publish(
                  [](Task::Builder t) {
                    t.setId(kStopId);
                    t.setKind("stop");
                  },
                  5s) == TypedStatus::ok);
  }
  for (pid_t c : consumers) check_exit(kids.wait(c), "consumer");
  int missing = 0, duplicated = 0;
  for (int p = 0; p < 2; ++p)
    for (std::uint32_t s = 0; s < kPerProducer; ++s) {
      missing += board.seen[p][s].load() == 0;
      duplicated += board.seen[p][s].load() > 1;
    }
  CHECK(missing == 0);
  CHECK(duplicated == 0);
  CHECK(board.per_consumer[0].load() + board.per_consumer[1].load() == 2 * kPerProducer);
  MESSAGE("consumer shares: " << board.per_consumer[0].load() << " / " << board.per_consumer[1].load());
  const ChannelStats st = ch.stats();
  CHECK(st.sends == 2 * kPerProducer + 2);
  CHECK(st.receives == 2 * kPerProducer + 2);
  CHECK(st.depth == 0);
  CHECK(in_use(pool) == 0);
}

// ---------------------------------------------------------------------------
// Fan-out

namespace {
struct FanBoard {
  std::atomic<int> subscribed;
  std::atomic<int> read_all;
  std::atomic<int> read_fill;
  std::atomic<int> drop;
  std::atomic<std::uint32_t> verified;
};
}  // namespace

TEST_CASE(
    "fan-out: Publisher<Event> over a blocking broadcast to 3 subscriber processes - every union member round-trips, "
    "buffers return when overwritten and dropped") {
  TestDomain d;
  Segment seg = Segment::create("fan", opts(d, 4u << 20));
  BufferPool pool = BufferPool::create(seg, "pool", pool_config({256, 4096}, 64));
  constexpr std::uint32_t kCap = 8, kCount = 40, kSubs = 3;
  BroadcastConfig bcfg;
  bcfg.capacity = kCap;
  bcfg.slot_bytes = kMessageSlotBytes;
  bcfg.policy = BroadcastPolicy::blocking;
  bcfg.max_subscribers = 8;
  Broadcast bc = Broadcast::create(seg, "events", bcfg, &pool);
  auto& board = make_board<FanBoard>(seg);
  Children kids(20s);
  std::vector<pid_t> subs;
  for (std::uint32_t s = 0; s < kSubs; ++s)
    subs.push_back(kids.spawn([&] {
      Segment own = Segment::open("fan", {.domain = d.name()});
      BufferPool p = BufferPool::open(own, "pool");
      Broadcast b = Broadcast::open(own, "events", &p);
      Subscriber<EventMsg> sub(b.subscribe(StartAt::next));
      board.subscribed.fetch_add(1);
      Received<EventMsg> held;  // the last event, kept across the fillers
      Received<EventMsg> msg;
      std::uint64_t last_position = 0;
      for (std::uint32_t i = 0; i < kCount; ++i) {
        const TypedStatus st = sub.receive(msg, 5s);
        if (st != TypedStatus::ok)
          return fail(30, "receive: " + std::string(to_string(st)) + " " + sub.last_error(), i);
        if (const std::string m = check_event(msg.root(), i); !m.empty()) return fail(31, m, i);
        if (msg.missed() != 0) return fail(32, "blocking subscriber told it missed", msg.missed());
        if (i > 0 && msg.position() != last_position + 1) return fail(33, "position gap", msg.position());
        last_position = msg.position();
        board.verified.fetch_add(1);
        if (i == kCount - 1) held = std::move(msg);
      }
      board.read_all.fetch_add(1);
      for (std::uint32_t i = 0; i < kCap; ++i) {
        const TypedStatus st = sub.receive(msg, 5s);
        if (st != TypedStatus::ok) return fail(34, "filler: " + std::string(to_string(st)), i);
        if (!msg.root().isCustom() || str(msg.root().getCustom().getTopic()) != "filler") return fail(35, "filler", i);
      }
      msg.reset();
      board.read_fill.fetch_add(1);
      if (!eventually([&] { return board.drop.load() != 0; })) return fail(36, "no drop");
      // Its slot was overwritten long ago: the Received's own reference kept it.
      if (const std::string m = check_event(held.root(), kCount - 1); !m.empty()) return fail(37, "held: " + m);
      held.reset();
      return 0;
    }));
  REQUIRE(eventually([&] { return board.subscribed.load() == static_cast<int>(kSubs); }));
  Publisher<EventMsg> pub(bc, pool);
  for (std::uint32_t i = 0; i + 1 < kCount; ++i)
    REQUIRE(pub.publish([&](EventMsg::Builder e) { fill_event(e, i); }, 5s) == TypedStatus::ok);
  // The last one through loan → seal → send_sealed, to learn its buffer's handle.
  BufferHandle last_handle{};
  {
    MessageBuilder b(pool);
    fill_event(b.initRoot<EventMsg>(), kCount - 1);
    SealedMessage m = std::move(b).seal();
    REQUIRE(m.segment_count() == 1);
    last_handle = m.handles()[0];
    REQUIRE(pub.send_sealed(std::move(m), 5s) == TypedStatus::ok);
  }
  REQUIRE(eventually([&] { return board.read_all.load() == static_cast<int>(kSubs); }));
  // One buffer per event: the ring still references the last kCap; the
  // subscribers hold only the last one, which is also in the ring.
  CHECK(in_use(pool) == kCap);
  CHECK(pool.holders(last_handle) == 1 + kSubs);
  for (std::uint32_t i = 0; i < kCap; ++i)
    REQUIRE(pub.publish([](EventMsg::Builder e) { e.initCustom().setTopic("filler"); }, 5s) == TypedStatus::ok);
  REQUIRE(eventually([&] { return board.read_fill.load() == static_cast<int>(kSubs); }));
  // The fillers overwrote every slot: the ring holds kCap fillers, the subscribers the last event.
  CHECK(in_use(pool) == kCap + 1);
  CHECK(pool.holders(last_handle) == kSubs);
  board.drop.store(1);
  for (pid_t s : subs) check_exit(kids.wait(s), "subscriber");
  CHECK(board.verified.load() == kCount * kSubs);
  CHECK(pool.holders(last_handle) == 0);  // freed by the last subscriber to drop it
  CHECK(in_use(pool) == kCap);            // the fillers, still referenced by the ring
  // Overwrite the ring with inline messages: nothing references pool buffers any more.
  const std::byte inline_bytes[8]{};
  for (std::uint32_t i = 0; i < kCap; ++i) REQUIRE(bc.publish(inline_bytes, {}, 5s) == SendStatus::ok);
  CHECK(in_use(pool) == 0);
  CHECK(bc.stats().subscribers.empty());
}

// ---------------------------------------------------------------------------
// Large and multi-segment messages, too_large

namespace {
PoolConfig large_pool_config() {
  PoolConfig c = pool_config({256, 4096, 65536}, 16);
  c.large_strategy = LargeStrategy::best_fit;
  c.large_min_block = 64 * 1024;
  c.large_region_bytes = 4u << 20;
  return c;
}

struct LargeBoard {
  std::atomic<int> done;
  std::atomic<std::uint32_t> segments[2];  // as the receiver saw them
};
}  // namespace

TEST_CASE("large messages: a 1 MiB task and a multi-segment task cross to another process intact") {
  TestDomain d;
  Segment seg = Segment::create("big", opts(d, 16u << 20));
  BufferPool pool = BufferPool::create(seg, "pool", large_pool_config());
  Channel ch = Channel::create(seg, kChannel, channel_config(4), &pool);
  auto& board = make_board<LargeBoard>(seg);
  constexpr std::size_t kMiB = 1u << 20;
  Children kids(30s);
  pid_t kid = kids.spawn([&] {
    ChildChannel a(d, "big");
    Subscriber<Task> sub(a.ch);
    Received<Task> msg;
    TypedStatus st = sub.receive(msg, 10s);
    if (st != TypedStatus::ok) return fail(40, "1 MiB: " + std::string(to_string(st)) + " " + sub.last_error());
    if (const std::string m = check_task(msg.root(), 1, kMiB); !m.empty()) return fail(41, "1 MiB: " + m);
    board.segments[0].store(static_cast<std::uint32_t>(msg.reader().segment_count()));
    st = sub.receive(msg, 10s);
    if (st != TypedStatus::ok) return fail(42, "multi-segment: " + std::string(to_string(st)) + " " + sub.last_error());
    if (const std::string m = check_multi_segment(msg.root(), 2, true); !m.empty()) return fail(43, "multi: " + m);
    board.segments[1].store(static_cast<std::uint32_t>(msg.reader().segment_count()));
    return 0;
  });
  Publisher<Task> pub(ch, pool);
  std::uint32_t sent_segments[2] = {};
  {
    auto loan = pub.loan();
    fill_task(loan.root(), 1, kMiB);
    sent_segments[0] = static_cast<std::uint32_t>(loan.builder().segment_count());
    REQUIRE(pub.send(std::move(loan), 5s) == TypedStatus::ok);
  }
  {
    auto loan = pub.loan(128);
    build_multi_segment(loan, 2, true);
    sent_segments[1] = static_cast<std::uint32_t>(loan.builder().segment_count());
    CHECK(sent_segments[1] >= 4);
    REQUIRE(pub.send(std::move(loan), 5s) == TypedStatus::ok);
  }
  check_exit(kids.wait(kid), "receiver");
  CHECK(board.segments[0].load() == sent_segments[0]);
  CHECK(board.segments[1].load() == sent_segments[1]);
  CHECK(in_use(pool) == 0);
}

TEST_CASE(
    "too_large: a slot with room for 3 handles takes a 3-segment message and refuses a 4+-segment one, returning its "
    "buffers") {
  TestDomain d;
  Segment seg = Segment::create("tl", opts(d, 16u << 20));
  BufferPool pool = BufferPool::create(seg, "pool", large_pool_config());
  Channel narrow = Channel::create(seg, "narrow", channel_config(4, 64), &pool);  // 48 B payload = 3 handles
  REQUIRE(narrow.max_payload() == 3 * sizeof(BufferHandle));
  Publisher<Task> pub(narrow, pool);
  {
    auto loan = pub.loan(128);
    build_multi_segment(loan, 3, false);
    REQUIRE(loan.builder().segment_count() == 3);
    CHECK(pub.send(std::move(loan), 1s) == TypedStatus::ok);
  }
  {
    auto loan = pub.loan(128);
    build_multi_segment(loan, 4, true);
    REQUIRE(loan.builder().segment_count() >= 4);
    CHECK(pub.send(std::move(loan), 1s) == TypedStatus::too_large);
    CHECK(pub.last_error().find("too_large") != std::string::npos);
  }
  CHECK(in_use(pool) == 3);  // only the 3-segment message, waiting in the channel
  Children kids(20s);
  pid_t kid = kids.spawn([&] {
    ChildChannel a(d, "tl", "narrow");
    Subscriber<Task> sub(a.ch);
    Received<Task> msg;
    const TypedStatus st = sub.receive(msg, 5s);
    if (st != TypedStatus::ok) return fail(45, "receive: " + std::string(to_string(st)) + " " + sub.last_error());
    if (msg.reader().segment_count() != 3) return fail(46, "segments", msg.reader().segment_count());
    if (const std::string m = check_multi_segment(msg.root(), 3, false); !m.empty()) return fail(47, m);
    if (sub.try_receive(msg) != TypedStatus::empty) return fail(48, "the refused message arrived");
    return 0;
  });
  check_exit(kids.wait(kid), "receiver");
  CHECK(in_use(pool) == 0);
}

// ---------------------------------------------------------------------------
// Lifetime

namespace {
struct LifeBoard {
  std::atomic<std::uint32_t> received;
  std::atomic<int> checked;
  std::atomic<int> release;
  std::atomic<int> released;
};
}  // namespace

TEST_CASE("lifetime: a held Received stays intact while 20 later messages cycle through a 4-buffer pool") {
  TestDomain d;
  Segment seg = Segment::create("life", opts(d, 1u << 20));
  BufferPool pool = BufferPool::create(seg, "pool", pool_config({4096}, 4));
  Channel ch = Channel::create(seg, kChannel, channel_config(4), &pool);
  auto& board = make_board<LifeBoard>(seg);
  constexpr std::uint32_t kLater = 20;
  Children kids(20s);
  pid_t kid = kids.spawn([&] {
    ChildChannel a(d, "life");
    Subscriber<Task> sub(a.ch);
    Received<Task> first, msg;
    if (sub.receive(first, 5s) != TypedStatus::ok) return fail(50, "first: " + sub.last_error());
    board.received.store(1);
    for (std::uint32_t k = 1; k <= kLater; ++k) {
      if (sub.receive(msg, 5s) != TypedStatus::ok) return fail(51, "later: " + sub.last_error(), k);
      if (const std::string m = check_task(msg.root(), k, 3000); !m.empty()) return fail(52, m, k);
      msg.reset();
      board.received.store(k + 1);
    }
    if (const std::string m = check_task(first.root(), 0, 3000); !m.empty()) return fail(53, "held: " + m);
    board.checked.store(1);
    if (!eventually([&] { return board.release.load() != 0; })) return fail(54, "no release");
    first.reset();
    return 0;
  });
  Publisher<Task> pub(ch, pool);
  for (std::uint32_t k = 0; k <= kLater; ++k) {
    // One at a time: the held one plus at most one in flight, so the
    // other 3 buffers are reused over and over.
    REQUIRE(pub.publish([&](Task::Builder t) { fill_task(t, k, 3000); }, 5s) == TypedStatus::ok);
    REQUIRE(eventually([&] { return board.received.load() == k + 1; }));
  }
  REQUIRE(eventually([&] { return board.checked.load() != 0; }));
  CHECK(in_use(pool) == 1);  // only the held message
  board.release.store(1);
  check_exit(kids.wait(kid), "holder");
  CHECK(in_use(pool) == 0);
  pool.flush();  // publishes this handle's counters
  CHECK(pool.stats().classes[0].allocs >= kLater + 1);
}

TEST_CASE(
    "lifetime: a subscriber holding messages exhausts a tiny pool - publish returns no_buffers at once, and succeeds "
    "after they are dropped") {
  TestDomain d;
  Segment seg = Segment::create("tiny", opts(d, 1u << 20));
  BufferPool pool = BufferPool::create(seg, "pool", pool_config({4096}, 4));  // ExhaustionPolicy::fail
  Channel ch = Channel::create(seg, kChannel, channel_config(8), &pool);
  auto& board = make_board<LifeBoard>(seg);
  Children kids(20s);
  pid_t kid = kids.spawn([&] {
    ChildChannel a(d, "tiny");
    Subscriber<Task> sub(a.ch);
    std::vector<Received<Task>> held(4);
    for (std::uint32_t k = 0; k < 4; ++k)
      if (sub.receive(held[k], 5s) != TypedStatus::ok) return fail(55, "receive: " + sub.last_error(), k);
    board.received.store(4);
    if (!eventually([&] { return board.release.load() != 0; })) return fail(56, "no release");
    for (std::uint32_t k = 0; k < 4; ++k)
      if (const std::string m = check_task(held[k].root(), k, 1000); !m.empty()) return fail(57, m, k);
    held.clear();
    board.released.store(1);
    Received<Task> msg;
    if (sub.receive(msg, 5s) != TypedStatus::ok) return fail(58, "after release: " + sub.last_error());
    if (const std::string m = check_task(msg.root(), 4, 1000); !m.empty()) return fail(59, m);
    return 0;
  });
  Publisher<Task> pub(ch, pool);
  for (std::uint32_t k = 0; k < 4; ++k)
    REQUIRE(pub.publish([&](Task::Builder t) { fill_task(t, k, 1000); }, 5s) == TypedStatus::ok);
  REQUIRE(eventually([&] { return board.received.load() == 4; }));
  CHECK(in_use(pool) == 4);
  for (int attempt = 0; attempt < 3; ++attempt) {
    const auto t0 = Clock::now();
    CHECK(pub.publish([&](Task::Builder t) { fill_task(t, 4, 1000); }, 60s) == TypedStatus::no_buffers);
    CHECK_PROMPT(ms_since(t0), kPromptMs);  // refused at once: not ended by the 60 s send timeout, not a hang
    CHECK(pub.last_error().find("'pool'") != std::string::npos);
    CHECK(pub.last_error().find("exhausted") != std::string::npos);
    CHECK(in_use(pool) == 4);  // the failed attempt gave back what it had
  }
  board.release.store(1);
  REQUIRE(eventually([&] { return board.released.load() != 0; }));
  CHECK(pub.publish([&](Task::Builder t) { fill_task(t, 4, 1000); }, 5s) == TypedStatus::ok);
  check_exit(kids.wait(kid), "holder");
  CHECK(in_use(pool) == 0);
}

// ---------------------------------------------------------------------------
// Malformed input, frozen after send

namespace {
constexpr int kSteps = 9;
struct MalformedBoard {
  std::atomic<int> done;
  struct Step {
    std::atomic<int> status;  // TypedStatus + 1 once written
    std::uint64_t id;
    char error[256];
  } steps[kSteps];
};

// Fills board.steps[0..n) from n receives.
int receive_steps(Subscriber<Task>& sub, MalformedBoard& board, int n) {
  Received<Task> msg;
  for (int k = 0; k < n; ++k) {
    const TypedStatus st = sub.receive(msg, 5s);
    auto& step = board.steps[k];
    step.id = st == TypedStatus::ok ? msg.root().getId() : 0;
    std::snprintf(step.error, sizeof step.error, "%s", st == TypedStatus::ok ? "" : sub.last_error().c_str());
    step.status.store(static_cast<int>(st) + 1);
    if (st == TypedStatus::timed_out) return fail(60, "timed out at step", static_cast<std::uint64_t>(k));
  }
  return 0;
}
}  // namespace

TEST_CASE(
    "malformed input: garbage, a corrupt header, no buffers and a bad pointer are refused with a reason and the next "
    "good message flows") {
  TestDomain d;
  Segment seg = Segment::create("bad", opts(d, 2u << 20));
  BufferPool pool = BufferPool::create(seg, "pool", pool_config({256, 4096}, 16));
  Channel ch = Channel::create(seg, kChannel, channel_config(16), &pool);
  auto& board = make_board<MalformedBoard>(seg);
  Publisher<Task> pub(ch, pool);
  auto good = [&](std::uint64_t id) {
    REQUIRE(pub.publish([&](Task::Builder t) { fill_task(t, id, 100); }, 1s) == TypedStatus::ok);
  };
  auto sealed = [&](std::uint64_t id) {
    MessageBuilder b(pool);
    fill_task(b.initRoot<Task>(), id, 100);
    return std::move(b).seal().take_buffers();
  };
  good(0);
  {  // 1: a raw pool buffer full of garbage
    Allocation a = pool.allocate(4096);
    REQUIRE(a);
    std::mt19937_64 rng(test::seed());
    for (std::size_t i = 0; i < 4096; i += 8) {
      const std::uint64_t w = rng();
      std::memcpy(a.buffer.data() + i, &w, 8);
    }
    REQUIRE(ch.send(std::move(a.buffer), {}, 1s) == SendStatus::ok);
  }
  good(2);
  {  // 3: a sealed message whose header claims more words than its buffer has
    std::vector<Buffer> bufs = sealed(3);
    MessageHeader h;
    std::memcpy(&h, bufs[0].data(), sizeof h);
    h.segment_words[0] = 0x00ffffffu;
    std::memcpy(bufs[0].data(), &h, sizeof h);
    REQUIRE(ch.send({}, std::span<Buffer>(bufs), 1s) == SendStatus::ok);
  }
  good(4);
  {  // 5: inline bytes only, no buffers
    const std::byte bytes[16]{};
    REQUIRE(ch.send(bytes, {}, 1s) == SendStatus::ok);
  }
  good(6);
  {  // 7: a valid header and checksum over content whose root pointer points far outside the segment
    std::vector<Buffer> bufs = sealed(7);
    MessageHeader h;
    std::memcpy(&h, bufs[0].data(), sizeof h);
    const std::uint64_t root_pointer =
        std::uint64_t{5} << 32 | (std::uint64_t{0x10000} << 2);  // struct, offset 64 Ki words
    std::memcpy(bufs[0].data() + sizeof h, &root_pointer, 8);
    const kj::ArrayPtr<const capnp::word> segment(reinterpret_cast<const capnp::word*>(bufs[0].data() + sizeof h),
                                                  h.segment_words[0]);
    h.checksum = message_checksum(std::span(&segment, 1));
    std::memcpy(bufs[0].data(), &h, sizeof h);
    REQUIRE(ch.send({}, std::span<Buffer>(bufs), 1s) == SendStatus::ok);
  }
  good(8);
  Children kids(20s);
  pid_t kid = kids.spawn([&] {
    ChildChannel a(d, "bad");
    Subscriber<Task> sub(a.ch);
    return receive_steps(sub, board, kSteps);
  });
  check_exit(kids.wait(kid), "subscriber");
  const char* const want_error[kSteps] = {
      nullptr, "bad magic", nullptr, "segment 0 claims", nullptr, "no buffers", nullptr, "malformed (capnp)", nullptr};
  for (int k = 0; k < kSteps; ++k) {
    CAPTURE(k);
    const auto& step = board.steps[k];
    REQUIRE(step.status.load() != 0);
    const TypedStatus st = static_cast<TypedStatus>(step.status.load() - 1);
    const std::string error = step.error;
    INFO("error: " << error);
    if (want_error[k] == nullptr) {
      CHECK(st == TypedStatus::ok);
      CHECK(step.id == static_cast<std::uint64_t>(k));
    } else {
      CHECK(st == TypedStatus::malformed);
      CHECK(error.find(want_error[k]) != std::string::npos);
    }
  }
  CHECK(ch.stats().depth == 0);
  CHECK(in_use(pool) == 0);  // refused messages were dropped, their buffers released
}

namespace {
struct FrozenBoard {
  std::atomic<int> written;
  std::atomic<int> status[2];  // TypedStatus + 1
  char error[256];
};
}  // namespace

TEST_CASE(
    "frozen after send: a write through a kept Builder after send is reported malformed (checksum mismatch) with "
    "ChecksumCheck::always") {
  TestDomain d;
  Segment seg = Segment::create("frz", opts(d, 2u << 20));
  BufferPool pool = BufferPool::create(seg, "pool", pool_config({256, 4096}, 16));
  Channel ch = Channel::create(seg, kChannel, channel_config(8), &pool);
  auto& board = make_board<FrozenBoard>(seg);
  Children kids(20s);
  pid_t kid = kids.spawn([&] {
    ChildChannel a(d, "frz");
    SubscriberConfig cfg;
    cfg.reader.checksum = ChecksumCheck::always;
    Subscriber<Task> sub(a.ch, cfg);
    // Receive only after the sender has written: the write cannot race the check.
    if (!eventually([&] { return board.written.load() != 0; })) return fail(70, "no write");
    Received<Task> msg;
    TypedStatus st = sub.receive(msg, 5s);
    std::snprintf(board.error, sizeof board.error, "%s", sub.last_error().c_str());
    board.status[0].store(static_cast<int>(st) + 1);
    st = sub.receive(msg, 5s);
    board.status[1].store(static_cast<int>(st) + 1);
    if (st == TypedStatus::ok && !check_task(msg.root(), 2, 64).empty()) return fail(71, "the good message");
    return 0;
  });
  Publisher<Task> pub(ch, pool);
  auto loan = pub.loan();
  Task::Builder kept = loan.root();  // a sender that keeps its Builder ...
  fill_task(kept, 1, 64);
  REQUIRE(pub.send(std::move(loan), 1s) == TypedStatus::ok);
  kept.setAttempt(99);  // ... and writes into the sent message (its buffer is still mapped here)
  REQUIRE(pub.publish([](Task::Builder t) { fill_task(t, 2, 64); }, 1s) == TypedStatus::ok);
  board.written.store(1);
  check_exit(kids.wait(kid), "subscriber");
  CHECK(board.status[0].load() - 1 == static_cast<int>(TypedStatus::malformed));
  const std::string error = board.error;
  INFO("error: " << error);
  CHECK(error.find("checksum mismatch") != std::string::npos);
  CHECK(board.status[1].load() - 1 == static_cast<int>(TypedStatus::ok));
  CHECK(in_use(pool) == 0);
}

// ---------------------------------------------------------------------------
// Timeouts and bad use

TEST_CASE(
    "timeouts: receive on an empty channel or broadcast is timed_out after the timeout, try_receive is empty, a full "
    "channel times out or is full") {
  TestDomain d;
  Segment seg = Segment::create("to", opts(d, 2u << 20));
  BufferPool pool = BufferPool::create(seg, "pool", pool_config({256, 4096}, 16));
  Channel ch = Channel::create(seg, kChannel, channel_config(2), &pool);
  BroadcastConfig bcfg;
  bcfg.capacity = 4;
  bcfg.slot_bytes = kMessageSlotBytes;
  Broadcast bc = Broadcast::create(seg, "events", bcfg, &pool);
  Subscriber<Task> sub(ch);
  Subscriber<EventMsg> events(bc.subscribe());
  Received<Task> msg;
  Received<EventMsg> ev;
  for (auto timeout : {20ms, 60ms}) {
    CAPTURE(timeout.count());
    auto t0 = Clock::now();
    CHECK(sub.receive(msg, timeout) == TypedStatus::timed_out);
    CHECK(ms_since(t0) >= static_cast<double>(timeout.count()));
    CHECK_FALSE(msg);
    t0 = Clock::now();
    CHECK(events.receive(ev, timeout) == TypedStatus::timed_out);
    CHECK(ms_since(t0) >= static_cast<double>(timeout.count()));
    CHECK_FALSE(ev);
  }
  CHECK(sub.try_receive(msg) == TypedStatus::empty);
  CHECK(events.try_receive(ev) == TypedStatus::empty);
  CHECK_FALSE(msg);

  Publisher<Task> pub(ch, pool);
  for (std::uint64_t id = 0; id < 2; ++id)
    REQUIRE(pub.publish([&](Task::Builder t) { fill_task(t, id, 10); }, 1s) == TypedStatus::ok);
  const auto t0 = Clock::now();
  CHECK(pub.publish([](Task::Builder t) { fill_task(t, 2, 10); }, 30ms) == TypedStatus::timed_out);
  CHECK(ms_since(t0) >= 30.0);
  CHECK(in_use(pool) == 2);  // the refused message's buffer went back
  Channel failing = Channel::create(seg, "failing", channel_config(2, kMessageSlotBytes, Backpressure::fail), &pool);
  Publisher<Task> fpub(failing, pool);
  for (std::uint64_t id = 0; id < 2; ++id)
    REQUIRE(fpub.publish([&](Task::Builder t) { fill_task(t, id, 10); }) == TypedStatus::ok);
  CHECK(fpub.publish([](Task::Builder t) { fill_task(t, 2, 10); }) == TypedStatus::full);
  CHECK(in_use(pool) == 4);
  // The queued ones are still there, intact and in order.
  for (std::uint64_t id = 0; id < 2; ++id) {
    REQUIRE(sub.try_receive(msg) == TypedStatus::ok);
    CHECK(check_task(msg.root(), id, 10) == "");
  }
  msg.reset();
  CHECK(failing.discard_all() == 2);
  CHECK(in_use(pool) == 0);
}

TEST_CASE("bad use: a loan sent without a root, a channel without a pool - failed with a message, nothing leaks") {
  TestDomain d;
  Segment seg = Segment::create("use", opts(d, 2u << 20));
  BufferPool pool = BufferPool::create(seg, "pool", pool_config({256, 4096}, 16));
  Channel ch = Channel::create(seg, kChannel, channel_config(4), &pool);
  Publisher<Task> pub(ch, pool);
  {
    auto loan = pub.loan();
    CHECK(pub.send(std::move(loan)) == TypedStatus::failed);
    CHECK(pub.last_error().find("without a root") != std::string::npos);
  }
  {
    auto loan = pub.loan();
    fill_task(loan.root(), 1, 10);
  }  // a loan dropped unsent gives its buffers back
  CHECK(in_use(pool) == 0);
  Channel bare = Channel::create(seg, "bare", channel_config(4));  // no pool: cannot carry buffers
  Publisher<Task> bare_pub(bare, pool);
  CHECK(bare_pub.publish([](Task::Builder t) { fill_task(t, 1, 10); }) == TypedStatus::failed);
  CHECK(bare_pub.last_error().find("no_pool") != std::string::npos);
  CHECK(in_use(pool) == 0);
  CHECK(bare.stats().depth == 0);
  // Every status has a name.
  for (TypedStatus s : {TypedStatus::ok, TypedStatus::empty, TypedStatus::timed_out, TypedStatus::full,
                        TypedStatus::too_large, TypedStatus::no_buffers, TypedStatus::malformed, TypedStatus::failed})
    CHECK(std::string(to_string(s)) != "unknown");
}

// ---------------------------------------------------------------------------
// Crash

namespace {
constexpr int kCrashIterations = 36;       // default (IPC_TEST_ITERATIONS overrides, up to the board size)
constexpr int kMaxCrashIterations = 1000;  // board size
std::size_t crash_len(std::uint64_t id) { return 16 * 1024 + mix(id ^ 0xabcd) % (224 * 1024); }

struct CrashBoard {
  std::atomic<std::uint32_t> phase;     // publisher: 0 between messages, 1 filling the payload, 2 in send()
  std::atomic<std::uint32_t> progress;  // publisher: payload bytes written so far (current message)
  std::atomic<int> subscribed;
  std::atomic<int> pause_request;           // parent: iteration + 1 to pause after
  std::atomic<int> paused;                  // subscriber: = pause_request once drained
  std::atomic<int> resume;                  // parent: = pause_request to go on
  std::atomic<std::uint32_t> held_buffers;  // subscriber, while paused: buffers of the Received it holds
  std::atomic<int> stop;
  std::atomic<std::uint32_t> sent[kMaxCrashIterations];      // publisher of iteration i: sends that returned ok
  std::atomic<std::uint32_t> received[kMaxCrashIterations];  // subscriber: messages of iteration i
};

// The subscriber: validates everything, keeps the latest message, pauses on request.
int crash_subscriber(const TestDomain& d, CrashBoard& board) {
  ChildChannel a(d, "crash");
  Subscriber<Task> sub(a.ch);
  board.subscribed.store(1);
  Received<Task> last, msg;
  auto take = [&](TypedStatus st) -> int {
    if (st == TypedStatus::timed_out || st == TypedStatus::empty) return 0;
    if (st != TypedStatus::ok) return fail(80, "receive: " + std::string(to_string(st)) + " " + sub.last_error());
    const std::uint64_t id = msg.root().getId();
    const std::uint64_t it = id >> 32, seq = id & 0xffffffffu;
    if (it >= kMaxCrashIterations) return fail(81, "unknown id", id);
    if (seq != board.received[it].load()) return fail(82, "out of order or repeated (seq, expected)", seq);
    if (const std::string m = check_task(msg.root(), id, crash_len(id)); !m.empty()) return fail(83, m, id);
    board.received[it].fetch_add(1);
    last = std::move(msg);
    return 0;
  };
  int done = 0;
  while (board.stop.load() == 0) {
    const int request = board.pause_request.load();
    if (request != done) {
      TypedStatus st;
      while ((st = sub.try_receive(msg)) == TypedStatus::ok)
        if (int rc = take(st)) return rc;
      if (st != TypedStatus::empty) return fail(84, "drain: " + std::string(to_string(st)));
      board.held_buffers.store(last ? static_cast<std::uint32_t>(last.reader().segment_count()) : 0);
      board.paused.store(request);
      if (!eventually([&] { return board.resume.load() == request; })) return fail(85, "no resume");
      done = request;
      last.reset();  // the next check expects 0 or the next message's buffers only
      continue;
    }
    if (int rc = take(sub.receive(msg, 20ms))) return rc;
  }
  return 0;
}

int crash_publisher(const TestDomain& d, CrashBoard& board, std::uint64_t it) {
  ChildChannel a(d, "crash");
  Publisher<Task> pub(a.ch, a.pool);
  for (std::uint64_t seq = 0;; ++seq) {
    const std::uint64_t id = it << 32 | seq;
    const std::size_t len = crash_len(id);
    auto loan = pub.loan();
    Task::Builder t = loan.root();
    t.setId(id);
    t.setKind(sp(kind_text(id)));
    auto payload = t.initPayload(static_cast<capnp::uint>(len));
    board.progress.store(0);
    board.phase.store(1);
    for (std::size_t i = 0; i < len; ++i) {
      payload[i] = payload_byte(id, i);
      if ((i & 4095) == 4095) board.progress.store(static_cast<std::uint32_t>(i));
    }
    t.setDeadlineNs(static_cast<std::int64_t>(id * 3 + 1));
    t.setAttempt(static_cast<std::uint32_t>(id % 5 + 1));
    board.phase.store(2);
    const TypedStatus st = pub.send(std::move(loan), 5s);
    board.phase.store(0);
    if (st != TypedStatus::ok) return fail(90, "send: " + pub.last_error(), seq);
    board.sent[it].fetch_add(1);
  }
}
}  // namespace

TEST_CASE(
    "crash: a publisher SIGKILLed 36 times while building big messages - after reclaim the pool holds exactly what the "
    "subscriber holds, no hang, only complete messages") {
  TestDomain d;
  Segment seg = Segment::create("crash", opts(d, 16u << 20));
  BufferPool pool = BufferPool::create(seg, "pool", pool_config({4096, 256 * 1024}, 24));
  Channel ch = Channel::create(seg, kChannel, channel_config(8), &pool);
  auto& board = make_board<CrashBoard>(seg);
  const unsigned seed = test::seed();
  CAPTURE(seed);
  std::mt19937 rng(seed);
  Children kids(30s);
  pid_t subscriber = kids.spawn([&] { return crash_subscriber(d, board); });
  REQUIRE(eventually([&] { return board.subscribed.load() != 0; }));
  int died_building = 0, died_sending = 0, died_between = 0;
  const int iterations = std::min(test::iterations(kCrashIterations), kMaxCrashIterations);
  for (int it = 0; it < iterations; ++it) {
    CAPTURE(it);
    board.phase.store(0);
    board.progress.store(0);
    pid_t pub = kids.spawn([&, it] { return crash_publisher(d, board, static_cast<std::uint64_t>(it)); });
    // Where to kill: mid-payload at a random byte, right when send() starts, or after a random pause.
    const std::uint32_t mode = static_cast<std::uint32_t>(it % 3);
    if (mode == 0) {
      const std::uint32_t at = rng() % (16 * 1024);
      eventually([&] { return board.phase.load() == 1 && board.progress.load() >= at; }, 5s);
    } else if (mode == 1) {
      const auto deadline = Clock::now() + 2s;
      while (board.phase.load() != 2 && Clock::now() < deadline) {
      }
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(200 + rng() % 3000));
    }
    kids.kill(pub);
    const std::uint32_t phase = board.phase.load();  // exact: the publisher is dead
    died_building += phase == 1;
    died_sending += phase == 2;
    died_between += phase == 0;
    ch.reclaim(static_cast<std::uint32_t>(pub));
    pool.reclaim(static_cast<std::uint32_t>(pub));
    board.pause_request.store(it + 1);
    REQUIRE_MESSAGE(eventually([&] { return board.paused.load() == it + 1; }, 10s),
                    "the subscriber did not drain the channel after the kill (hang?)");
    // The channel is empty and nothing is in flight: the pool holds exactly the subscriber's message.
    CHECK(ch.stats().depth == 0);
    CHECK(in_use(pool) == board.held_buffers.load());
    // Every committed message arrived; at most the one in send() when it died besides.
    const std::uint32_t sent = board.sent[it].load(), received = board.received[it].load();
    CHECK(received >= sent);
    CHECK(received <= sent + 1);
    board.resume.store(it + 1);
  }
  board.stop.store(1);
  check_exit(kids.wait(subscriber), "subscriber");
  MESSAGE("publishers died building " << died_building << ", in send() " << died_sending << ", between messages "
                                      << died_between);
  CHECK(died_building > 0);
  CHECK(in_use(pool) == 0);  // the subscriber drained and dropped everything
  std::uint64_t total = 0;
  for (int it = 0; it < iterations; ++it) total += board.received[it].load();
  CHECK(total > 0);
  CHECK(ch.stats().depth == 0);
}

// ---------------------------------------------------------------------------
// Broadcast edges (in one process: the subscriber side of the bound is per holder slot, not per process)

TEST_CASE("lossy broadcast: an overrun typed subscriber is told missed() and reads the retained messages intact") {
  TestDomain d;
  Segment seg = Segment::create("lossy", opts(d, 2u << 20));
  BufferPool pool = BufferPool::create(seg, "pool", pool_config({256, 4096}, 32));
  constexpr std::uint32_t kCap = 4;
  BroadcastConfig bcfg;
  bcfg.capacity = kCap;
  bcfg.slot_bytes = kMessageSlotBytes;
  bcfg.policy = BroadcastPolicy::lossy;
  Broadcast bc = Broadcast::create(seg, "events", bcfg, &pool);
  Subscriber<EventMsg> sub(bc.subscribe(StartAt::next));
  Publisher<EventMsg> pub(bc, pool);
  for (std::uint32_t i = 0; i < 3 * kCap; ++i)
    REQUIRE(pub.publish([&](EventMsg::Builder e) { fill_event(e, i); }) == TypedStatus::ok);
  CHECK(in_use(pool) == kCap);  // overwritten messages' buffers went back at once
  Received<EventMsg> msg;
  std::uint64_t missed = 0, got = 0;
  while (sub.try_receive(msg) == TypedStatus::ok) {
    missed += msg.missed();
    const std::uint32_t i = static_cast<std::uint32_t>(msg.position());
    CAPTURE(i);
    CHECK(check_event(msg.root(), i) == "");
    ++got;
  }
  CHECK(got == kCap);  // the ring's last kCap
  CHECK(missed == 2 * kCap);
  msg.reset();
  CHECK(in_use(pool) == kCap);
}

TEST_CASE(
    "fan-out bound: a 10th concurrent holder of one message gets malformed naming the cause, the next message is "
    "fine") {
  TestDomain d;
  Segment seg = Segment::create("ten", opts(d, 2u << 20));
  BufferPool pool = BufferPool::create(seg, "pool", pool_config({256, 4096}, 32));
  BroadcastConfig bcfg;
  bcfg.capacity = 4;
  bcfg.slot_bytes = kMessageSlotBytes;
  bcfg.policy = BroadcastPolicy::blocking;
  Broadcast bc = Broadcast::create(seg, "events", bcfg, &pool);
  std::vector<Subscriber<EventMsg>> subs;
  for (int s = 0; s < BufferPool::kMaxHolders; ++s) subs.emplace_back(bc.subscribe(StartAt::next));
  Publisher<EventMsg> pub(bc, pool);
  REQUIRE(pub.publish([](EventMsg::Builder e) { fill_event(e, 3); }) == TypedStatus::ok);
  std::vector<Received<EventMsg>> held(subs.size());
  for (std::size_t s = 0; s + 1 < subs.size(); ++s) {
    CAPTURE(s);
    REQUIRE(subs[s].try_receive(held[s]) == TypedStatus::ok);  // the ring's slot + 9 holders
  }
  Subscriber<EventMsg>& tenth = subs.back();
  CHECK(tenth.try_receive(held.back()) == TypedStatus::malformed);
  CHECK(tenth.last_error().find("could not be taken over") != std::string::npos);
  CHECK_FALSE(held.back());
  held.clear();
  REQUIRE(pub.publish([](EventMsg::Builder e) { fill_event(e, 4); }) == TypedStatus::ok);
  Received<EventMsg> msg;
  for (auto& s : subs) {
    REQUIRE(s.try_receive(msg) == TypedStatus::ok);
    CHECK(check_event(msg.root(), 4) == "");
  }
}

// Known issue, see the report: Received's defaulted move leaves the source's
// std::optional engaged with a moved-from MessageReader (impl_ == nullptr),
// so the moved-from object still converts to true and root() dereferences
// null. The test states the contract a handle type should keep.
TEST_CASE("a moved-from Received is empty") {
  TestDomain d;
  Segment seg = Segment::create("mv", opts(d, 2u << 20));
  BufferPool pool = BufferPool::create(seg, "pool", pool_config({256, 4096}, 16));
  Channel ch = Channel::create(seg, kChannel, channel_config(4), &pool);
  Publisher<Task> pub(ch, pool);
  Subscriber<Task> sub(ch);
  REQUIRE(pub.publish([](Task::Builder t) { fill_task(t, 1, 10); }) == TypedStatus::ok);
  Received<Task> a;
  REQUIRE(sub.try_receive(a) == TypedStatus::ok);
  Received<Task> b = std::move(a);
  CHECK(b);
  CHECK(check_task(b.root(), 1, 10) == "");
  CHECK_FALSE(a);  // fails today: a still says it holds a message
  Received<Task> c;
  c = std::move(b);
  CHECK_FALSE(b);  // fails today
  CHECK(c);
  c.reset();
  CHECK(in_use(pool) == 0);
}
