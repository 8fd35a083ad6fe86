// Channel (ipc/channel.hpp): order and integrity across processes (SPSC
// 200k messages of every inline length; MPMC 4 producer × 4 consumer
// processes, each message received exactly once, per-producer order kept
// per consumer), zero-copy buffers (several per message, pool fully returned,
// bad_buffer / no_pool / too_large, the skip slot of a failed hand-over),
// backpressure (fail, block with a receiver in another process, drop_oldest
// with exact drop counts and buffers returned), blocking / timed / spinning /
// batched receive, a ChannelPoller in a real epoll loop, stats read from
// another process, and bad arguments.
//
// Not labelled "threads": every test here uses processes only. Children open
// their own Segment, BufferPool and Channel (a BufferPool handle belongs to
// the process that opened it).
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/epoll.h>
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
#include "ipc/mutex.hpp"
#include "ipc/pool.hpp"
#include "ipc/segment.hpp"
#include "support.hpp"

using namespace ipc;
using namespace std::chrono_literals;
using ipc::test::check_exit;
using ipc::test::Children;
using ipc::test::eventually;
using ipc::test::kPromptMs;
using ipc::test::make_board;
using ipc::test::ms_since;
using ipc::test::now_ns;
using ipc::test::opts;
using ipc::test::TestDomain;

using Clock = std::chrono::steady_clock;

namespace {

// ---- message content: every byte is a function of (producer, seq, index) ----
// A message of len >= kTagBytes starts with {producer u32, len u32, seq u64},
// so a receiver that does not know what to expect (MPMC) can identify and
// check it; a shorter one is checked against the expected (producer, seq).
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

std::vector<std::byte> make_message(std::size_t len, std::uint32_t producer, std::uint64_t seq) {
  std::vector<std::byte> v(len);
  fill(v.data(), len, producer, seq);
  return v;
}

bool matches(std::span<const std::byte> got, std::uint32_t producer, std::uint64_t seq) {
  std::vector<std::byte> want = make_message(got.size(), producer, seq);
  return std::equal(got.begin(), got.end(), want.begin());
}

struct Tag {
  std::uint32_t producer = 0;
  std::uint32_t len = 0;
  std::uint64_t seq = 0;
};
// The tag of a message that carries one, if the rest of it is intact.
std::optional<Tag> decode(std::span<const std::byte> m) {
  if (m.size() < kTagBytes) return std::nullopt;
  Tag t;
  std::memcpy(&t.producer, m.data(), 4);
  std::memcpy(&t.len, m.data() + 4, 4);
  std::memcpy(&t.seq, m.data() + 8, 8);
  if (t.len != m.size() || !matches(m, t.producer, t.seq)) return std::nullopt;
  return t;
}

std::span<const std::byte> bytes_of(const std::vector<std::byte>& v) { return {v.data(), v.size()}; }

template <typename T>
std::span<const std::byte> bytes_of(const T& v) {
  return {reinterpret_cast<const std::byte*>(&v), sizeof v};
}

PoolConfig pool_config(std::uint32_t buffers = 64) {
  PoolConfig c;
  c.class_sizes = {256, 4096};
  c.buffers_per_class = buffers;
  c.cache_per_class = 0;  // so that stats().in_use counts exactly the buffers held
  return c;
}

std::uint32_t pool_in_use(const BufferPool& pool) {
  std::uint32_t n = 0;
  for (const ClassStats& c : pool.stats().classes) n += c.in_use;
  return n;
}

ChannelConfig config(ChannelKind kind, std::uint32_t capacity, std::uint32_t slot_bytes,
                     Backpressure bp = Backpressure::block, std::uint32_t spin = 0) {
  ChannelConfig c;
  c.kind = kind;
  c.capacity = capacity;
  c.slot_bytes = slot_bytes;
  c.backpressure = bp;
  c.spin = spin;
  return c;
}

template <typename Fn>
std::pair<ErrorCode, std::string> error_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return {e.code(), e.what()};
  }
  return {ErrorCode::system, "(nothing thrown)"};
}

}  // namespace

// ---------------------------------------------------------------------------
// Order and integrity

TEST_CASE("SPSC across two processes: 200k messages of every length 0..max_payload arrive in order and intact") {
  TestDomain d;
  Segment seg = Segment::create("spsc", opts(d, 4u << 20));
  Channel ch = Channel::create(seg, "ch", config(ChannelKind::spsc, 1024, 256, Backpressure::block, 2000));
  const std::size_t max = ch.max_payload();
  REQUIRE(max == 240);
  constexpr std::uint64_t kMessages = 200'000;
  Children kids;
  pid_t producer = kids.spawn([&] {
    Segment own = Segment::open("spsc", {.domain = d.name()});
    Channel c = Channel::open(own, "ch");
    std::vector<std::byte> buf(max);
    for (std::uint64_t seq = 0; seq < kMessages; ++seq) {
      const std::size_t len = seq % (max + 1);
      fill(buf.data(), len, 7, seq);
      if (c.send({buf.data(), len}, {}, 10s) != SendStatus::ok) return 10;
    }
    return 0;
  });
  auto t0 = Clock::now();
  Message m;
  std::uint64_t received = 0, bad = 0, lengths_seen = 0;
  for (; received < kMessages; ++received) {
    if (ch.receive(m, 10s) != ReceiveStatus::ok) break;
    const std::size_t len = received % (max + 1);
    if (m.size() != len || !matches(m.data(), 7, received)) ++bad;
    if (m.size() == max) ++lengths_seen;
  }
  check_exit(kids.wait(producer));
  MESSAGE(received << " messages in " << ms_since(t0) << " ms");
  CHECK(received == kMessages);
  CHECK(bad == 0);
  CHECK(lengths_seen > 0);  // the full payload length was exercised
  CHECK(ch.try_receive(m) == ReceiveStatus::empty);
  ChannelStats st = ch.stats();
  CHECK(st.sends == kMessages);
  CHECK(st.receives == kMessages);
  CHECK(st.depth == 0);
  CHECK(st.recovered == 0);
}

namespace {
constexpr int kMpmcProducers = 4, kMpmcConsumers = 4;
constexpr std::uint32_t kMpmcPerProducer = 20'000;
struct MpmcBoard {
  std::atomic<int> go;
  std::atomic<std::uint64_t> received;          // all consumers together
  std::atomic<std::uint64_t> corrupt;           // messages whose bytes do not match their tag
  std::atomic<std::uint64_t> order_violations;  // per consumer: a producer's seq not increasing
  std::atomic<std::uint64_t> per_consumer[kMpmcConsumers];
  std::atomic<std::uint8_t> seen[kMpmcProducers][kMpmcPerProducer];
};
}  // namespace

TEST_CASE(
    "MPMC 4 producer × 4 consumer processes: every message received exactly once, per-producer order kept per "
    "consumer") {
  TestDomain d;
  Segment seg = Segment::create("mpmc", opts(d, 4u << 20));
  Channel ch = Channel::create(seg, "ch", config(ChannelKind::mpmc, 256, 128, Backpressure::block, 200));
  MpmcBoard& b = make_board<MpmcBoard>(seg);
  constexpr std::uint64_t kTotal = std::uint64_t(kMpmcProducers) * kMpmcPerProducer;
  const std::size_t max = ch.max_payload();
  Children kids(20s);
  std::vector<pid_t> pids;
  for (int p = 0; p < kMpmcProducers; ++p)
    pids.push_back(kids.spawn([&, p] {
      Segment own = Segment::open("mpmc", {.domain = d.name()});
      Channel c = Channel::open(own, "ch");
      if (!eventually([&] { return b.go.load() != 0; })) return 1;
      std::vector<std::byte> buf(max);
      for (std::uint32_t seq = 0; seq < kMpmcPerProducer; ++seq) {
        const std::size_t len = kTagBytes + (seq * 13 + p) % (max - kTagBytes + 1);
        fill(buf.data(), len, static_cast<std::uint32_t>(p), seq);
        if (c.send({buf.data(), len}, {}, 10s) != SendStatus::ok) return 10;
      }
      return 0;
    }));
  for (int k = 0; k < kMpmcConsumers; ++k)
    pids.push_back(kids.spawn([&, k] {
      Segment own = Segment::open("mpmc", {.domain = d.name()});
      Channel c = Channel::open(own, "ch");
      std::array<std::int64_t, kMpmcProducers> last;
      last.fill(-1);
      Message m;
      const auto deadline = Clock::now() + 15s;
      while (b.received.load() < kTotal && Clock::now() < deadline) {
        if (c.receive(m, 20ms) != ReceiveStatus::ok) continue;
        std::optional<Tag> t = decode(m.data());
        if (!t || t->producer >= kMpmcProducers || t->seq >= kMpmcPerProducer) {
          b.corrupt.fetch_add(1);
          continue;
        }
        if (static_cast<std::int64_t>(t->seq) <= last[t->producer]) b.order_violations.fetch_add(1);
        last[t->producer] = static_cast<std::int64_t>(t->seq);
        b.seen[t->producer][t->seq].fetch_add(1);
        b.per_consumer[k].fetch_add(1);
        b.received.fetch_add(1);
      }
      return 0;
    }));
  auto t0 = Clock::now();
  b.go.store(1);
  for (pid_t p : pids) check_exit(kids.wait(p));
  MESSAGE(kTotal << " messages through 4x4 processes in " << ms_since(t0) << " ms");
  CHECK(b.received.load() == kTotal);
  CHECK(b.corrupt.load() == 0);
  CHECK(b.order_violations.load() == 0);
  std::uint64_t missing = 0, duplicated = 0;
  for (int p = 0; p < kMpmcProducers; ++p)
    for (std::uint32_t s = 0; s < kMpmcPerProducer; ++s) {
      const int n = b.seen[p][s].load();
      missing += n == 0;
      duplicated += n > 1;
    }
  CHECK(missing == 0);
  CHECK(duplicated == 0);
  std::uint64_t consumers_that_got_some = 0;
  for (auto& c : b.per_consumer) consumers_that_got_some += c.load() > 0;
  MESSAGE("consumers that received something: " << consumers_that_got_some);
  Message m;
  CHECK(ch.try_receive(m) == ReceiveStatus::empty);
  CHECK(ch.stats().sends == kTotal);
  CHECK(ch.stats().receives == kTotal);
}

// ---------------------------------------------------------------------------
// Zero-copy buffers

TEST_CASE("buffers travel as handles between processes: 1-3 per message, contents intact, the pool fully returned") {
  TestDomain d;
  Segment seg = Segment::create("zc", opts(d, 8u << 20));
  BufferPool pool = BufferPool::create(seg, "pool", pool_config(64));
  Channel ch = Channel::create(seg, "ch", config(ChannelKind::mpmc, 16, 128), &pool);
  constexpr std::uint32_t kMessages = 2000;
  Children kids;
  pid_t producer = kids.spawn([&] {
    Segment own = Segment::open("zc", {.domain = d.name()});
    BufferPool p = BufferPool::open(own, "pool");
    Channel c = Channel::open(own, "ch", &p);
    for (std::uint32_t seq = 0; seq < kMessages; ++seq) {
      const std::uint32_t n = 1 + seq % 3;
      std::vector<Buffer> bufs;
      for (std::uint32_t i = 0; i < n; ++i) {
        const std::size_t size = (seq + i) % 2 ? 4096 : 200;
        Allocation a = p.allocate_for(size, 5s);
        if (!a) return 10;
        fill(a.buffer.data(), size, i, seq);
        bufs.push_back(std::move(a.buffer));
      }
      std::array<std::uint32_t, 2> inline_bytes{seq, n};
      if (c.send(bytes_of(inline_bytes), bufs, 10s) != SendStatus::ok) return 11;
      for (const Buffer& bf : bufs)
        if (bf) return 12;  // sent buffers are emptied
    }
    return 0;
  });
  Message m;
  std::uint32_t received = 0, bad = 0;
  for (; received < kMessages; ++received) {
    if (ch.receive(m, 10s) != ReceiveStatus::ok) break;
    std::array<std::uint32_t, 2> inline_bytes{};
    if (m.size() != sizeof inline_bytes) {
      ++bad;
      continue;
    }
    std::memcpy(inline_bytes.data(), m.data().data(), sizeof inline_bytes);
    const std::uint32_t seq = inline_bytes[0], n = inline_bytes[1];
    if (seq != received || n != 1 + seq % 3 || m.buffers().size() != n || m.lost_buffers() != 0) {
      ++bad;
      continue;
    }
    for (std::uint32_t i = 0; i < n; ++i) {
      const std::size_t size = (seq + i) % 2 ? 4096 : 200;
      if (!matches({m.buffers()[i].data(), size}, i, seq)) ++bad;
    }
  }
  m.clear();
  check_exit(kids.wait(producer));
  CHECK(received == kMessages);
  CHECK(bad == 0);
  CHECK(pool_in_use(pool) == 0);
  CHECK(ch.stats().depth == 0);
}

TEST_CASE(
    "buffer send errors: foreign or empty buffer is bad_buffer, no pool is no_pool, too_large — nothing changes") {
  TestDomain d;
  Segment seg = Segment::create("bad", opts(d, 8u << 20));
  BufferPool pool = BufferPool::create(seg, "pool", pool_config(16));
  BufferPool other = BufferPool::create(seg, "other", pool_config(16));
  Channel ch = Channel::create(seg, "ch", config(ChannelKind::mpmc, 8, 128), &pool);
  Channel bare = Channel::create(seg, "bare", config(ChannelKind::mpmc, 8, 128));
  REQUIRE(ch.max_payload() == 112);

  Allocation foreign = other.allocate(64);
  REQUIRE(foreign);
  CHECK(ch.try_send({}, std::span<Buffer>(&foreign.buffer, 1)) == SendStatus::bad_buffer);
  CHECK(ch.send({}, std::span<Buffer>(&foreign.buffer, 1), 10ms) == SendStatus::bad_buffer);
  CHECK(static_cast<bool>(foreign.buffer));  // still ours

  Buffer empty;
  CHECK(ch.try_send({}, std::span<Buffer>(&empty, 1)) == SendStatus::bad_buffer);
  // One good buffer and one empty one: refused as a whole, the good one stays ours.
  Allocation good = pool.allocate(64);
  REQUIRE(good);
  std::vector<Buffer> pair;
  pair.push_back(std::move(good.buffer));
  pair.emplace_back();
  CHECK(ch.try_send({}, pair) == SendStatus::bad_buffer);
  CHECK(static_cast<bool>(pair[0]));
  CHECK(pool.holders(pair[0].handle()) == 1);

  CHECK(bare.try_send({}, std::span<Buffer>(&pair[0], 1)) == SendStatus::no_pool);
  CHECK(static_cast<bool>(pair[0]));

  std::vector<std::byte> big(ch.max_payload() + 1);
  CHECK(ch.try_send(bytes_of(big)) == SendStatus::too_large);
  CHECK(ch.send(bytes_of(big), {}, 10ms) == SendStatus::too_large);
  // bytes + 16 per handle must fit: 112 - 16 = 96 inline bytes with one buffer.
  std::vector<std::byte> fits(96), one_over(97);
  CHECK(ch.try_send(bytes_of(one_over), std::span<Buffer>(&pair[0], 1)) == SendStatus::too_large);
  CHECK(static_cast<bool>(pair[0]));
  CHECK(ch.stats().depth == 0);
  CHECK(ch.stats().sends == 0);
  CHECK(ch.try_send(bytes_of(fits), std::span<Buffer>(&pair[0], 1)) == SendStatus::ok);
  CHECK_FALSE(static_cast<bool>(pair[0]));
  Message m;
  REQUIRE(ch.try_receive(m) == ReceiveStatus::ok);
  CHECK(m.size() == 96);
  CHECK(m.buffers().size() == 1);
  m.clear();
  pair.clear();
  foreign.buffer.reset();
  CHECK(pool_in_use(pool) == 0);
  CHECK(pool_in_use(other) == 0);
}

TEST_CASE(
    "a buffer whose reference is not ours fails the hand-over: bad_buffer, the slot is skipped, earlier buffers come "
    "back") {
  TestDomain d;
  Segment seg = Segment::create("skip", opts(d, 8u << 20));
  BufferPool pool = BufferPool::create(seg, "pool", pool_config(16));
  Channel ch = Channel::create(seg, "ch", config(ChannelKind::mpmc, 4, 128), &pool);
  const std::uint32_t me = static_cast<std::uint32_t>(::getpid());
  constexpr std::uint32_t kElsewhere = 4242;  // a holder id that is not us

  std::vector<Buffer> bufs;
  for (int i = 0; i < 2; ++i) {
    Allocation a = pool.allocate(64);
    REQUIRE(a);
    bufs.push_back(std::move(a.buffer));
  }
  // The second Buffer's reference is moved away: the Buffer still looks valid.
  REQUIRE(pool.transfer(bufs[1].handle(), me, kElsewhere) == BufferPool::HandleStatus::ok);
  const std::uint32_t tag = 1;
  CHECK(ch.send(bytes_of(tag), bufs, 100ms) == SendStatus::bad_buffer);
  CHECK(static_cast<bool>(bufs[0]));
  CHECK(static_cast<bool>(bufs[1]));
  // The first buffer's reference came back to us: we can release it exactly once.
  const BufferHandle h0 = bufs[0].handle(), h1 = bufs[1].handle();
  bufs[0].detach();
  CHECK(pool.release(h0, me) == BufferPool::HandleStatus::ok);
  bufs[1].detach();
  CHECK(pool.release(h1, kElsewhere) == BufferPool::HandleStatus::ok);
  CHECK(pool_in_use(pool) == 0);

  // A receiver never sees the skipped slot; the next message comes through.
  const std::uint32_t next = 2;
  CHECK(ch.try_send(bytes_of(next)) == SendStatus::ok);
  Message m;
  REQUIRE(ch.receive(m, 1s) == ReceiveStatus::ok);
  REQUIRE(m.size() == sizeof next);
  std::uint32_t got = 0;
  std::memcpy(&got, m.data().data(), sizeof got);
  CHECK(got == next);
  CHECK(m.buffers().empty());
  CHECK(ch.try_receive(m) == ReceiveStatus::empty);
  CHECK(ch.stats().receives == 1);
  // The skipped slot is usable again: a full lap of messages fits.
  for (std::uint32_t i = 0; i < ch.capacity(); ++i) CHECK(ch.try_send(bytes_of(i)) == SendStatus::ok);
  CHECK(ch.try_send(bytes_of(next)) == SendStatus::full);
}

TEST_CASE("a channel created with a pool cannot be opened without it: invalid_argument naming the channel") {
  // channel.hpp: a process without the pool could not take over or release
  // the references its slots hold, so open() refuses it.
  TestDomain d;
  Segment seg = Segment::create("nopool", opts(d, 8u << 20));
  BufferPool pool = BufferPool::create(seg, "pool", pool_config(16));
  Channel ch = Channel::create(seg, "jobs", config(ChannelKind::mpmc, 4, 128), &pool);
  Allocation a = pool.allocate(64);
  REQUIRE(a);
  REQUIRE(ch.send(std::move(a.buffer)) == SendStatus::ok);
  Children kids;
  pid_t receiver = kids.spawn([&] {
    Segment own = Segment::open("nopool", {.domain = d.name()});
    try {
      Channel c = Channel::open(own, "jobs");  // no pool
      return 10;
    } catch (const Error& e) {
      if (e.code() != ErrorCode::invalid_argument) return 11;
      if (std::string(e.what()).find("jobs") == std::string::npos) return 12;
    }
    BufferPool p = BufferPool::open(own, "pool");
    Channel c = Channel::open(own, "jobs", &p);
    Message m;
    if (c.receive(m, 5s) != ReceiveStatus::ok) return 13;
    return m.buffers().size() == 1 && m.lost_buffers() == 0 ? 0 : 14;
  });
  check_exit(kids.wait(receiver));
  CHECK(ch.stats().depth == 0);
  CHECK(pool_in_use(pool) == 0);
}

// ---------------------------------------------------------------------------
// Backpressure

TEST_CASE("Backpressure::fail: try_send and send on a full ring return full at once") {
  TestDomain d;
  Segment seg = Segment::create("fail", opts(d));
  for (ChannelKind kind : {ChannelKind::spsc, ChannelKind::mpmc}) {
    CAPTURE(static_cast<int>(kind));
    const std::string name = kind == ChannelKind::spsc ? "spsc" : "mpmc";
    Channel ch = Channel::create(seg, name, config(kind, 4, 64, Backpressure::fail));
    for (std::uint32_t i = 0; i < 4; ++i) CHECK(ch.try_send(bytes_of(i)) == SendStatus::ok);
    const std::uint32_t x = 99;
    CHECK(ch.try_send(bytes_of(x)) == SendStatus::full);
    auto t0 = Clock::now();
    CHECK(ch.send(bytes_of(x), {}, 60s) == SendStatus::full);  // far longer than the bound below
    CHECK_PROMPT(ms_since(t0), kPromptMs);                     // did not wait for the timeout
    CHECK(ch.stats().depth == 4);
    CHECK(ch.stats().sends == 4);
    Message m;
    for (std::uint32_t i = 0; i < 4; ++i) {
      REQUIRE(ch.try_receive(m) == ReceiveStatus::ok);
      std::uint32_t got = 0;
      std::memcpy(&got, m.data().data(), 4);
      CHECK(got == i);
    }
    CHECK(ch.try_receive(m) == ReceiveStatus::empty);
    CHECK(ch.try_send(bytes_of(x)) == SendStatus::ok);
  }
}

TEST_CASE(
    "Backpressure::block: send times out (elapsed >= timeout), then blocks until a receiver in another process frees a "
    "slot") {
  TestDomain d;
  Segment seg = Segment::create("block", opts(d));
  for (ChannelKind kind : {ChannelKind::spsc, ChannelKind::mpmc}) {
    CAPTURE(static_cast<int>(kind));
    const std::string name = kind == ChannelKind::spsc ? "spsc" : "mpmc";
    Channel ch = Channel::create(seg, name, config(kind, 4, 64, Backpressure::block));
    for (std::uint32_t i = 0; i < 4; ++i) REQUIRE(ch.try_send(bytes_of(i)) == SendStatus::ok);
    const std::uint32_t x = 4;
    CHECK(ch.try_send(bytes_of(x)) == SendStatus::full);
    auto t0 = Clock::now();
    CHECK(ch.send(bytes_of(x), {}, 80ms) == SendStatus::timed_out);
    CHECK(ms_since(t0) >= 80);
    CHECK(ch.send(bytes_of(x), {}, 0ns) == SendStatus::timed_out);

    struct Board {
      std::atomic<std::int64_t> received_at;
    };
    Board& b = make_board<Board>(seg, ("board-" + name).c_str());
    Children kids;
    pid_t receiver = kids.spawn([&, name] {
      Segment own = Segment::open("block", {.domain = d.name()});
      Channel c = Channel::open(own, name);
      std::this_thread::sleep_for(150ms);
      Message m;
      b.received_at.store(now_ns());
      if (c.try_receive(m) != ReceiveStatus::ok) return 10;
      std::uint32_t got = 99;
      std::memcpy(&got, m.data().data(), 4);
      return got == 0 ? 0 : 11;
    });
    t0 = Clock::now();
    CHECK(ch.send(bytes_of(x), {}, 30s) == SendStatus::ok);
    const std::int64_t sent_at = now_ns();
    check_exit(kids.wait(receiver));
    CHECK(sent_at >= b.received_at.load());  // it really waited for the receiver
    CHECK_PROMPT(ms_since(t0), kPromptMs);
    CHECK(ch.stats().send_blocked_ns > 0);
    Message m;
    for (std::uint32_t i = 1; i <= 4; ++i) {
      REQUIRE(ch.try_receive(m) == ReceiveStatus::ok);
      std::uint32_t got = 0;
      std::memcpy(&got, m.data().data(), 4);
      CHECK(got == i);
    }
  }
}

TEST_CASE(
    "Backpressure::drop_oldest: exact drop count, the newest capacity messages in order, dropped buffers returned") {
  TestDomain d;
  Segment seg = Segment::create("drop", opts(d, 8u << 20));
  BufferPool pool = BufferPool::create(seg, "pool", pool_config(32));
  for (ChannelKind kind : {ChannelKind::spsc, ChannelKind::mpmc}) {
    CAPTURE(static_cast<int>(kind));
    const std::string name = kind == ChannelKind::spsc ? "spsc" : "mpmc";
    Channel ch = Channel::create(seg, name, config(kind, 8, 64, Backpressure::drop_oldest), &pool);
    constexpr std::uint32_t kSent = 20;
    for (std::uint32_t i = 0; i < kSent; ++i) {
      Allocation a = pool.allocate(64);
      REQUIRE(a);
      std::memcpy(a.buffer.data(), &i, 4);
      REQUIRE(ch.send(std::move(a.buffer), bytes_of(i), 1s) == SendStatus::ok);
    }
    ChannelStats st = ch.stats();
    CHECK(st.drops == kSent - 8);
    CHECK(st.sends == kSent);
    CHECK(st.depth == 8);
    CHECK(pool_in_use(pool) == 8);  // the dropped messages' buffers went back

    // A receiver in another process gets the newest 8, in order.
    Children kids;
    pid_t receiver = kids.spawn([&, name] {
      Segment own = Segment::open("drop", {.domain = d.name()});
      BufferPool p = BufferPool::open(own, "pool");
      Channel c = Channel::open(own, name, &p);
      Message m;
      for (std::uint32_t want = kSent - 8; want < kSent; ++want) {
        if (c.try_receive(m) != ReceiveStatus::ok) return 10;
        std::uint32_t got = 0, in_buffer = 0;
        std::memcpy(&got, m.data().data(), 4);
        if (got != want || m.buffers().size() != 1) return 11;
        std::memcpy(&in_buffer, m.buffers()[0].data(), 4);
        if (in_buffer != want) return 12;
      }
      return c.try_receive(m) == ReceiveStatus::empty ? 0 : 13;
    });
    check_exit(kids.wait(receiver));
    CHECK(pool_in_use(pool) == 0);
    CHECK(ch.stats().depth == 0);
  }
}

// ---------------------------------------------------------------------------
// Receive: blocking, timed, spinning, batched

TEST_CASE(
    "a blocking receive is woken by a send from another process — a receive timeout reports timed_out after the "
    "timeout") {
  TestDomain d;
  Segment seg = Segment::create("wake", opts(d));
  Channel ch = Channel::create(seg, "ch", config(ChannelKind::mpmc, 16, 64));
  Message m;
  auto t0 = Clock::now();
  CHECK(ch.receive(m, 60ms) == ReceiveStatus::timed_out);
  CHECK(ms_since(t0) >= 60);
  CHECK(ch.receive(m, 0ns) == ReceiveStatus::empty);
  CHECK(ch.stats().data_waiters == 0);

  struct Board {
    std::atomic<std::int64_t> sent_at;
  };
  Board& b = make_board<Board>(seg);
  Children kids;
  pid_t sender = kids.spawn([&] {
    Segment own = Segment::open("wake", {.domain = d.name()});
    Channel c = Channel::open(own, "ch");
    std::this_thread::sleep_for(150ms);
    const std::uint32_t x = 77;
    b.sent_at.store(now_ns());
    return c.try_send(bytes_of(x)) == SendStatus::ok ? 0 : 10;
  });
  t0 = Clock::now();
  REQUIRE(ch.receive(m, 30s) == ReceiveStatus::ok);
  const std::int64_t got_at = now_ns();
  const double waited = ms_since(t0);
  check_exit(kids.wait(sender));
  std::uint32_t got = 0;
  std::memcpy(&got, m.data().data(), 4);
  CHECK(got == 77);
  CHECK(got_at >= b.sent_at.load());
  CHECK_PROMPT(waited, kPromptMs);
  MESSAGE("woken " << (got_at - b.sent_at.load()) / 1000 << " us after the send");
  CHECK(ch.stats().receive_blocked_ns > 0);
}

TEST_CASE(
    "receive_spin picks up a message from another process while polling — the channel's default spin is used by "
    "receive") {
  TestDomain d;
  Segment seg = Segment::create("spin", opts(d));
  Channel ch = Channel::create(seg, "ch", config(ChannelKind::spsc, 16, 64, Backpressure::block, 1000));
  Children kids;
  pid_t sender = kids.spawn([&] {
    Segment own = Segment::open("spin", {.domain = d.name()});
    Channel c = Channel::open(own, "ch");
    for (std::uint32_t i = 0; i < 1000; ++i)
      if (c.send(bytes_of(i), {}, 5s) != SendStatus::ok) return 10;
    return 0;
  });
  Message m;
  std::uint32_t bad = 0;
  for (std::uint32_t i = 0; i < 1000; ++i) {
    const ReceiveStatus st = i % 2 ? ch.receive_spin(m, 100'000, 5s) : ch.receive(m, 5s);
    if (st != ReceiveStatus::ok) {
      ++bad;
      break;
    }
    std::uint32_t got = 0;
    std::memcpy(&got, m.data().data(), 4);
    bad += got != i;
  }
  check_exit(kids.wait(sender));
  CHECK(bad == 0);
  // With nothing to receive, a spin with a zero timeout is a try_receive.
  CHECK(ch.receive_spin(m, 1000, 0ns) == ReceiveStatus::empty);
}

TEST_CASE("send_batch and receive_batch: order kept, the batch stops at a full ring under fail, waits under block") {
  TestDomain d;
  Segment seg = Segment::create("batch", opts(d));
  std::vector<std::vector<std::byte>> storage;
  for (std::uint64_t i = 0; i < 10; ++i) storage.push_back(make_message(kTagBytes + i, 3, i));
  std::vector<std::span<const std::byte>> msgs;
  for (auto& s : storage) msgs.push_back(bytes_of(s));

  Channel ch = Channel::create(seg, "block", config(ChannelKind::mpmc, 16, 64));
  SendStatus st = SendStatus::full;
  CHECK(ch.send_batch(msgs, 1s, &st) == 10);
  CHECK(st == SendStatus::ok);
  std::vector<Message> out(16);
  REQUIRE(ch.receive_batch(out, 1s) == 10);
  for (std::uint64_t i = 0; i < 10; ++i) CHECK(matches(out[i].data(), 3, i));
  CHECK(ch.receive_batch(out, 30ms) == 0);
  CHECK(ch.receive_batch(std::span<Message>(out.data(), 3), 20ms) == 0);

  // A batch bigger than the ring under fail: 4 go in, then full.
  Channel small = Channel::create(seg, "fail", config(ChannelKind::spsc, 4, 64, Backpressure::fail));
  CHECK(small.send_batch(msgs, 1s, &st) == 4);
  CHECK(st == SendStatus::full);
  REQUIRE(small.receive_batch(std::span<Message>(out.data(), 3), 1s) == 3);
  for (std::uint64_t i = 0; i < 3; ++i) CHECK(matches(out[i].data(), 3, i));

  // Under block, a receiver in another process drains a batch 10× the ring.
  Channel tiny = Channel::create(seg, "tiny", config(ChannelKind::spsc, 4, 64, Backpressure::block));
  Children kids;
  pid_t receiver = kids.spawn([&] {
    Segment own = Segment::open("batch", {.domain = d.name()});
    Channel c = Channel::open(own, "tiny");
    std::vector<Message> in(3);
    std::uint64_t next = 0;
    while (next < 40) {
      const std::size_t n = c.receive_batch(in, 5s);
      if (n == 0) return 10;
      for (std::size_t i = 0; i < n; ++i, ++next)
        if (!matches(in[i].data(), 3, next % 10)) return 11;
    }
    return 0;
  });
  std::size_t sent = 0;
  for (int round = 0; round < 4; ++round) sent += tiny.send_batch(msgs, 5s, &st);
  CHECK(sent == 40);
  check_exit(kids.wait(receiver));
}

// ---------------------------------------------------------------------------
// epoll

TEST_CASE(
    "ChannelPoller in an epoll loop: every message from another process received, no busy loop, a timeout when idle") {
  TestDomain d;
  Segment seg = Segment::create("poll", opts(d));
  Channel ch = Channel::create(seg, "ch", config(ChannelKind::mpmc, 64, 64));
  ChannelPoller poller(ch);
  int ep = ::epoll_create1(EPOLL_CLOEXEC);
  REQUIRE(ep >= 0);
  epoll_event ev{};
  ev.events = EPOLLIN;
  REQUIRE(::epoll_ctl(ep, EPOLL_CTL_ADD, poller.fd(), &ev) == 0);

  constexpr std::uint32_t kMessages = 2000;
  Children kids;
  pid_t sender = kids.spawn([&] {
    Segment own = Segment::open("poll", {.domain = d.name()});
    Channel c = Channel::open(own, "ch");
    for (std::uint32_t i = 0; i < kMessages; ++i) {
      if (c.send(bytes_of(i), {}, 5s) != SendStatus::ok) return 10;
      if (i % 50 == 49) std::this_thread::sleep_for(1ms);  // bursts and pauses
    }
    return 0;
  });
  std::uint32_t received = 0, bad = 0, wakeups = 0, idle_waits = 0;
  Message m;
  const auto deadline = Clock::now() + 8s;
  while (received < kMessages && Clock::now() < deadline) {
    poller.arm();
    while (ch.try_receive(m) == ReceiveStatus::ok) {
      std::uint32_t got = 0;
      std::memcpy(&got, m.data().data(), 4);
      bad += got != received;
      ++received;
    }
    if (received == kMessages) break;
    epoll_event out{};
    const int n = ::epoll_wait(ep, &out, 1, 1000);
    if (n == 1) {
      ++wakeups;
      poller.drain();
    } else {
      ++idle_waits;
    }
  }
  check_exit(kids.wait(sender));
  MESSAGE(received << " messages, " << wakeups << " epoll wake-ups, " << idle_waits << " idle waits");
  CHECK(received == kMessages);
  CHECK(bad == 0);
  CHECK(wakeups <= kMessages + 10);
  CHECK(wakeups > 0);
  CHECK(idle_waits == 0);

  // Nothing sent: the fd stays quiet until the timeout.
  poller.arm();
  CHECK(ch.try_receive(m) == ReceiveStatus::empty);
  poller.drain();
  epoll_event out{};
  auto t0 = Clock::now();
  CHECK(::epoll_wait(ep, &out, 1, 100) == 0);
  CHECK(ms_since(t0) >= 90);
  // A send after arm() makes it readable.
  poller.arm();
  const std::uint32_t x = 5;
  REQUIRE(ch.try_send(bytes_of(x)) == SendStatus::ok);
  CHECK(::epoll_wait(ep, &out, 1, 1000) == 1);
  ::close(ep);
}

// ---------------------------------------------------------------------------
// Stats, bad arguments

TEST_CASE("stats are readable from another process: sends, receives, depth, configuration") {
  TestDomain d;
  Segment seg = Segment::create("stats", opts(d));
  Channel ch = Channel::create(seg, "jobs", config(ChannelKind::spsc, 32, 128, Backpressure::fail));
  for (std::uint32_t i = 0; i < 5; ++i) REQUIRE(ch.try_send(bytes_of(i)) == SendStatus::ok);
  Message m;
  REQUIRE(ch.try_receive(m) == ReceiveStatus::ok);
  REQUIRE(ch.try_receive(m) == ReceiveStatus::ok);
  Children kids;
  pid_t reader = kids.spawn([&] {
    Segment own = Segment::open("stats", {.domain = d.name()});
    Channel c = Channel::open(own, "jobs");
    ChannelStats st = c.stats();
    if (st.name != "jobs") return 10;
    if (st.kind != ChannelKind::spsc || c.kind() != ChannelKind::spsc) return 11;
    if (st.backpressure != Backpressure::fail) return 12;
    if (st.capacity != 32 || st.slot_bytes != 128 || c.max_payload() != 112) return 13;
    if (st.sends != 5 || st.receives != 2 || st.depth != 3) return 14;
    if (st.drops != 0 || st.recovered != 0) return 15;
    return 0;
  });
  check_exit(kids.wait(reader));
}

TEST_CASE("bad configurations throw invalid_argument naming the channel") {
  TestDomain d;
  Segment seg = Segment::create("args", opts(d));
  struct Bad {
    std::uint32_t capacity, slot_bytes;
  };
  for (Bad bad : {Bad{0, 128}, Bad{1, 128}, Bad{3, 128}, Bad{100, 128}, Bad{1u << 17, 128}, Bad{16, 100}, Bad{16, 0},
                  Bad{16, 32}, Bad{16, 65536 + 64}}) {
    CAPTURE(bad.capacity);
    CAPTURE(bad.slot_bytes);
    auto [code, msg] =
        error_of([&] { Channel::create(seg, "jobs", config(ChannelKind::mpmc, bad.capacity, bad.slot_bytes)); });
    CHECK(code == ErrorCode::invalid_argument);
    CHECK(msg.find("jobs") != std::string::npos);
    CHECK_FALSE(seg.find_object("jobs").has_value());
  }
  // The limits themselves are fine.
  CHECK_NOTHROW(Channel::create(seg, "two", config(ChannelKind::mpmc, 2, 64)));
  CHECK(Channel::open(seg, "two").max_payload() == 48);
  auto [code, msg] = error_of([&] { Channel::create(seg, "two", config(ChannelKind::mpmc, 2, 64)); });
  CHECK(code == ErrorCode::already_exists);
  std::tie(code, msg) = error_of([&] { Channel::open(seg, "missing"); });
  CHECK(code == ErrorCode::not_found);
  CHECK(msg.find("missing") != std::string::npos);
}

TEST_CASE("open with a different pool throws invalid_argument naming the channel and the pool") {
  TestDomain d;
  Segment seg = Segment::create("pools", opts(d, 8u << 20));
  BufferPool pool = BufferPool::create(seg, "pool", pool_config(8));
  BufferPool other = BufferPool::create(seg, "other", pool_config(8));
  Channel ch = Channel::create(seg, "jobs", config(ChannelKind::mpmc, 8, 128), &pool);
  auto [code, msg] = error_of([&] { Channel::open(seg, "jobs", &other); });
  MESSAGE("open with another pool: " << msg);
  CHECK(code == ErrorCode::invalid_argument);
  CHECK(msg.find("jobs") != std::string::npos);
  CHECK(msg.find("other") != std::string::npos);
  CHECK_NOTHROW(Channel::open(seg, "jobs", &pool));
  // A channel made without a pool cannot be opened with one either.
  Channel bare = Channel::create(seg, "bare", config(ChannelKind::mpmc, 8, 128));
  std::tie(code, msg) = error_of([&] { Channel::open(seg, "bare", &pool); });
  CHECK(code == ErrorCode::invalid_argument);
  CHECK(msg.find("bare") != std::string::npos);
}

TEST_CASE(
    "open of an object of another type (pool, raw) throws type_mismatch naming the channel, as channel.hpp says") {
  TestDomain d;
  Segment seg = Segment::create("types", opts(d, 8u << 20));
  BufferPool pool = BufferPool::create(seg, "jobs", pool_config(8));
  seg.create_object("rawthing", ObjectType::raw, 4096);
  for (std::string name : {"jobs", "rawthing"}) {
    CAPTURE(name);
    auto [code, msg] = error_of([&] { Channel::open(seg, name); });
    MESSAGE("open of a non-channel: " << to_string(code) << ": " << msg);
    CHECK(code != ErrorCode::system);  // it threw
    CHECK(msg.find(name) != std::string::npos);
    CHECK(msg.find("channel") != std::string::npos);
    // channel.hpp: "Throws not_found, type_mismatch (the name is an object of another type), …"
    CHECK(code == ErrorCode::type_mismatch);
  }
  // A channel-typed object that was never initialised is refused, not used.
  seg.create_object("zeroed", ObjectType::channel, 4096);
  auto [code, msg] = error_of([&] { Channel::open(seg, "zeroed"); });
  CHECK((code == ErrorCode::bad_magic || code == ErrorCode::corrupted));
  CHECK(msg.find("zeroed") != std::string::npos);
  seg.create_object("tiny", ObjectType::channel, 64);
  std::tie(code, msg) = error_of([&] { Channel::open(seg, "tiny"); });
  CHECK((code == ErrorCode::bad_magic || code == ErrorCode::corrupted));
}

// ---------------------------------------------------------------------------
// kForever

TEST_CASE("send(kForever) on a full ring and receive(kForever) on an empty one wait for another process") {
  TestDomain d;
  Segment seg = Segment::create("forever", opts(d));
  Channel ch = Channel::create(seg, "ch", config(ChannelKind::mpmc, 2, 64, Backpressure::block));
  struct Board {
    std::atomic<int> waiting;
    std::atomic<std::int64_t> released_ns;  // set just before the other process's receive / send
  };
  Board& b = make_board<Board>(seg);
  Children kids;
  // The other process: ~200 ms after we start waiting, receives one (`receive`) or sends 77.
  auto later = [&](bool receive) {
    b.waiting.store(0);
    b.released_ns.store(0);
    return kids.spawn([&, receive] {
      Segment own = Segment::open("forever", {.domain = d.name()});
      Channel c = Channel::open(own, "ch");
      if (!eventually([&] { return b.waiting.load() != 0; })) return 1;
      std::this_thread::sleep_for(200ms);
      b.released_ns.store(now_ns());
      Message m;
      const std::uint32_t x = 77;
      return (receive ? c.try_receive(m) == ReceiveStatus::ok : c.try_send(bytes_of(x)) == SendStatus::ok) ? 0 : 2;
    });
  };

  for (std::uint32_t i = 0; i < 2; ++i) REQUIRE(ch.try_send(bytes_of(i)) == SendStatus::ok);
  pid_t receiver = later(true);
  b.waiting.store(1);
  const std::uint32_t x = 2;
  SendStatus st = ch.send(bytes_of(x), {}, ipc::kForever);
  std::int64_t returned_ns = now_ns();
  CHECK_MESSAGE(st == SendStatus::ok, "send(kForever) returned " << st);
  CHECK_RETURNED_AFTER(b.released_ns.load(), returned_ns, "send(kForever)");
  check_exit(kids.wait(receiver), "receiver");

  Message m;
  while (ch.try_receive(m) == ReceiveStatus::ok) {
  }
  pid_t sender = later(false);
  b.waiting.store(1);
  ReceiveStatus rs = ch.receive(m, ipc::kForever);
  returned_ns = now_ns();
  CHECK_MESSAGE(rs == ReceiveStatus::ok, "receive(kForever) returned " << rs);
  CHECK_RETURNED_AFTER(b.released_ns.load(), returned_ns, "receive(kForever)");
  std::uint32_t got = 0;
  if (m.size() == 4) std::memcpy(&got, m.data().data(), 4);
  CHECK(got == 77);
  check_exit(kids.wait(sender), "sender");
}

// ---------------------------------------------------------------------------
// Type mismatch

TEST_CASE("a name of one object type opened as another is type_mismatch, and the message names both types") {
  TestDomain d;
  Segment seg = Segment::create("types", opts(d));
  seg.find_or_create<Mutex>("x", ObjectType::mutex);
  auto [code, msg] = error_of([&] { Channel::open(seg, "x"); });
  CHECK(code == ErrorCode::type_mismatch);
  INFO(msg);
  CHECK(msg.find("'x'") != std::string::npos);
  CHECK(msg.find("mutex") != std::string::npos);
  CHECK(msg.find("channel") != std::string::npos);

  // The other way round, through find_or_create: a channel opened as a mutex.
  Channel ch = Channel::create(seg, "jobs", config(ChannelKind::mpmc, 4, 64));
  std::tie(code, msg) = error_of([&] { seg.find_or_create<Mutex>("jobs", ObjectType::mutex); });
  CHECK(code == ErrorCode::type_mismatch);
  INFO(msg);
  CHECK(msg.find("'jobs'") != std::string::npos);
  CHECK(msg.find("channel") != std::string::npos);
  CHECK(msg.find("mutex") != std::string::npos);
  // Both objects are untouched: each still opens as what it is.
  CHECK(seg.open<Mutex>("x", ObjectType::mutex).valid());
  CHECK_NOTHROW(Channel::open(seg, "jobs"));
}
