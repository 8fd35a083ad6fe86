// Cap'n Proto messages in pool buffers (ipc/message.hpp): every field type
// round-trips to a real forked process that reads in place; 1 MiB and
// 16 MiB messages; multi-segment growth and its limits; writes after seal
// caught by the checksum; header validation; 2000+ random mutations of a
// message in shared memory (never a crash, only errors or valid reads); and
// SIGKILL while building leaks nothing after reclaim.
//
// Not labelled "threads": processes only. Children open their own Segment
// and BufferPool (a handle inherited over fork is never used in a child).
#include <doctest/doctest.h>
#include <signal.h>
#include <unistd.h>

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

#include "events.capnp.h"
#include "ipc/message.hpp"
#include "ipc/pool.hpp"
#include "ipc/segment.hpp"
#include "support.hpp"
#include "tasks.capnp.h"
#include "test_types.capnp.h"
#include "walk_message.hpp"

using namespace ipc;
using namespace std::chrono_literals;
using ipc::test::Children;
using ipc::test::TestDomain;
using ipc::test::schema::AllTypes;
using ipc::test::schema::Color;
using ipc::test::schema::Inner;

namespace ipc {
std::ostream& operator<<(std::ostream& os, MessageStatus s) { return os << to_string(s); }
}  // namespace ipc

namespace {

std::uint32_t my_pid() { return static_cast<std::uint32_t>(::getpid()); }

PoolConfig small_config() {
  PoolConfig c;
  c.class_sizes = {256, 4096, 65536};
  c.buffers_per_class = 16;
  c.cache_per_class = 0;
  c.large_strategy = LargeStrategy::best_fit;
  c.large_min_block = 64 * 1024;
  c.large_region_bytes = 4u << 20;
  return c;
}

// A pool with a large best-fit region for the 16 MiB message.
PoolConfig big_config() {
  PoolConfig c = small_config();
  c.large_region_bytes = 56u << 20;
  return c;
}

std::uint32_t in_use(const BufferPool& p) {
  std::uint32_t n = 0;
  for (const auto& c : p.stats().classes) n += c.in_use;
  return n;
}

// The board children and parents share: the handles of one message.
struct Board {
  std::atomic<std::uint32_t> count;
  std::atomic<std::uint32_t> progress;  // crash test: segments the child has allocated
  std::uint32_t sender;
  BufferHandle handles[MessageHeader::kMaxSegments];
};

void publish(Board& board, SealedMessage& m) {
  std::vector<BufferHandle> hs = m.release_buffers();  // our references now belong to the board
  for (std::size_t i = 0; i < hs.size(); ++i) board.handles[i] = hs[i];
  board.sender = my_pid();
  board.count.store(static_cast<std::uint32_t>(hs.size()), std::memory_order_release);
}

// Child side: adopt the sender's references as our Buffers.
std::vector<Buffer> adopt_all(BufferPool& pool, const Board& board) {
  std::vector<Buffer> out;
  const std::uint32_t n = board.count.load(std::memory_order_acquire);
  for (std::uint32_t i = 0; i < n; ++i) {
    BufferPool::HandleStatus st{};
    std::optional<Buffer> b = pool.adopt(board.handles[i], board.sender, &st);
    if (!b) return {};
    out.push_back(std::move(*b));
  }
  return out;
}

// ---- every field type: fill and check (the check returns "" or the first mismatch) ----

std::string label(const char* prefix, std::size_t i) { return prefix + std::to_string(i); }

void fill_inner(Inner::Builder b, std::uint32_t id, const std::string& text) {
  b.setId(id);
  b.setLabel(text);
}

void fill_all(AllTypes::Builder r, std::size_t n) {
  r.setBoolField(true);
  r.setInt8Field(-123);
  r.setInt16Field(-12345);
  r.setInt32Field(-1234567890);
  r.setInt64Field(INT64_MIN + 1);
  r.setUint8Field(250);
  r.setUint16Field(65000);
  r.setUint32Field(4000000000u);
  r.setUint64Field(UINT64_MAX - 1);
  r.setFloat32Field(3.5f);
  r.setFloat64Field(-2.25e100);
  r.setTextField("h\xc3\xa9llo w\xc3\xb6rld");
  auto data = r.initDataField(256);
  for (std::size_t i = 0; i < 256; ++i) data[i] = static_cast<kj::byte>(i);
  r.setEnumField(Color::BLUE);
  auto inner = r.initStructField();
  fill_inner(inner, 7, "inner");
  fill_inner(inner.initChild(), 8, "grandchild");

  const auto un = static_cast<unsigned>(n);
  auto bools = r.initBoolList(un);
  auto i8 = r.initInt8List(un);
  auto i16 = r.initInt16List(un);
  auto i32 = r.initInt32List(un);
  auto i64 = r.initInt64List(un);
  auto u8 = r.initUint8List(un);
  auto u16 = r.initUint16List(un);
  auto u32 = r.initUint32List(un);
  auto u64 = r.initUint64List(un);
  auto f32 = r.initFloat32List(un);
  auto f64 = r.initFloat64List(un);
  auto texts = r.initTextList(un);
  auto datas = r.initDataList(un);
  auto enums = r.initEnumList(un);
  auto structs = r.initStructList(un);
  auto lists = r.initListList(un);
  for (unsigned i = 0; i < un; ++i) {
    bools.set(i, i % 3 == 0);
    i8.set(i, static_cast<std::int8_t>(i * 7));
    i16.set(i, static_cast<std::int16_t>(-static_cast<int>(i) * 300));
    i32.set(i, static_cast<std::int32_t>(i) * -100000);
    i64.set(i, static_cast<std::int64_t>(i) << 40);
    u8.set(i, static_cast<std::uint8_t>(i));
    u16.set(i, static_cast<std::uint16_t>(i * 601));
    u32.set(i, i * 3000001u);
    u64.set(i, std::uint64_t{i} * 0x9e3779b97f4a7c15ull);
    f32.set(i, static_cast<float>(i) * 0.5f);
    f64.set(i, static_cast<double>(i) * -0.25);
    texts.set(i, label("t", i));
    auto d = datas.init(i, i % 17);
    for (unsigned k = 0; k < i % 17; ++k) d[k] = static_cast<kj::byte>(i + k);
    enums.set(i, static_cast<Color>(i % 3));
    fill_inner(structs[i], i, label("s", i));
    auto l = lists.init(i, i % 5);
    for (unsigned k = 0; k < i % 5; ++k) l.set(k, static_cast<std::int32_t>(i * 10 + k));
  }
  fill_inner(r.initNested(), 99, "union");
  auto pos = r.initPosition();
  pos.setX(1.5);
  pos.setY(-2.5);
  pos.setTag("pos");
}

#define EXPECT(cond)                                     \
  do {                                                   \
    if (!(cond)) return std::string("mismatch: " #cond); \
  } while (0)

std::string check_all_types(AllTypes::Reader r, std::size_t n) {
  EXPECT(r.getBoolField());
  EXPECT(r.getInt8Field() == -123);
  EXPECT(r.getInt16Field() == -12345);
  EXPECT(r.getInt32Field() == -1234567890);
  EXPECT(r.getInt64Field() == INT64_MIN + 1);
  EXPECT(r.getUint8Field() == 250);
  EXPECT(r.getUint16Field() == 65000);
  EXPECT(r.getUint32Field() == 4000000000u);
  EXPECT(r.getUint64Field() == UINT64_MAX - 1);
  EXPECT(r.getFloat32Field() == 3.5f);
  EXPECT(r.getFloat64Field() == -2.25e100);
  EXPECT(r.getTextField() == "h\xc3\xa9llo w\xc3\xb6rld");
  auto data = r.getDataField();
  EXPECT(data.size() == 256);
  for (std::size_t i = 0; i < 256; ++i) EXPECT(data[i] == i);
  EXPECT(r.getEnumField() == Color::BLUE);
  EXPECT(r.getStructField().getId() == 7 && r.getStructField().getLabel() == "inner");
  EXPECT(r.getStructField().getChild().getId() == 8 && r.getStructField().getChild().getLabel() == "grandchild");
  EXPECT(!r.getStructField().getChild().hasChild());
  EXPECT(r.getBoolList().size() == n && r.getInt8List().size() == n && r.getInt16List().size() == n);
  EXPECT(r.getInt32List().size() == n && r.getInt64List().size() == n && r.getUint8List().size() == n);
  EXPECT(r.getUint16List().size() == n && r.getUint32List().size() == n && r.getUint64List().size() == n);
  EXPECT(r.getFloat32List().size() == n && r.getFloat64List().size() == n && r.getTextList().size() == n);
  EXPECT(r.getDataList().size() == n && r.getEnumList().size() == n && r.getStructList().size() == n);
  EXPECT(r.getListList().size() == n);
  // Lists are fetched once: every getter call counts the whole list against
  // the traversal limit again (capnp's amplification guard).
  auto bools = r.getBoolList();
  auto i8 = r.getInt8List();
  auto i16 = r.getInt16List();
  auto i32 = r.getInt32List();
  auto i64 = r.getInt64List();
  auto u8 = r.getUint8List();
  auto u16 = r.getUint16List();
  auto u32 = r.getUint32List();
  auto u64 = r.getUint64List();
  auto f32 = r.getFloat32List();
  auto f64 = r.getFloat64List();
  auto texts = r.getTextList();
  auto datas = r.getDataList();
  auto enums = r.getEnumList();
  auto structs = r.getStructList();
  auto lists = r.getListList();
  const auto un = static_cast<unsigned>(n);
  for (unsigned i = 0; i < un; ++i) {
    EXPECT(bools[i] == (i % 3 == 0));
    EXPECT(i8[i] == static_cast<std::int8_t>(i * 7));
    EXPECT(i16[i] == static_cast<std::int16_t>(-static_cast<int>(i) * 300));
    EXPECT(i32[i] == static_cast<std::int32_t>(i) * -100000);
    EXPECT(i64[i] == static_cast<std::int64_t>(i) << 40);
    EXPECT(u8[i] == static_cast<std::uint8_t>(i));
    EXPECT(u16[i] == static_cast<std::uint16_t>(i * 601));
    EXPECT(u32[i] == i * 3000001u);
    EXPECT(u64[i] == std::uint64_t{i} * 0x9e3779b97f4a7c15ull);
    EXPECT(f32[i] == static_cast<float>(i) * 0.5f);
    EXPECT(f64[i] == static_cast<double>(i) * -0.25);
    EXPECT(texts[i] == label("t", i).c_str());
    auto d = datas[i];
    EXPECT(d.size() == i % 17);
    for (unsigned k = 0; k < i % 17; ++k) EXPECT(d[k] == static_cast<kj::byte>(i + k));
    EXPECT(enums[i] == static_cast<Color>(i % 3));
    EXPECT(structs[i].getId() == i && structs[i].getLabel() == label("s", i).c_str());
    auto l = lists[i];
    EXPECT(l.size() == i % 5);
    for (unsigned k = 0; k < i % 5; ++k) EXPECT(l[k] == static_cast<std::int32_t>(i * 10 + k));
  }
  EXPECT(r.isNested());
  EXPECT(r.getNested().getId() == 99 && r.getNested().getLabel() == "union");
  EXPECT(r.getPosition().getX() == 1.5 && r.getPosition().getY() == -2.5 && r.getPosition().getTag() == "pos");
  EXPECT(r.getDefaulted() == 42);
  return {};
}

// Child body: open the pool, adopt the message, read it in place, check it.
// Exit codes name the failing step.
int read_all_types_in_child(const std::string& domain, std::size_t n, std::size_t expect_segments) {
  Segment seg = Segment::open("msg", {.domain = domain});
  BufferPool pool = BufferPool::open(seg, "pool");
  Board& board = test::make_board<Board>(seg);
  std::vector<Buffer> bufs = adopt_all(pool, board);
  if (bufs.size() != expect_segments) return 2;
  const std::byte* lo = bufs[0].data();
  const std::byte* hi = bufs[0].data() + bufs[0].capacity();
  std::string error;
  std::optional<MessageReader> r = MessageReader::parse(std::move(bufs), {.checksum = ChecksumCheck::always}, &error);
  if (!r) {
    std::fprintf(stderr, "child: %s\n", error.c_str());
    return 3;
  }
  if (r->check_all(&error) != MessageStatus::ok) return 4;
  std::string mismatch;
  MessageStatus st = r->visit<AllTypes>([&](AllTypes::Reader root) {
    mismatch = check_all_types(root, n);
    // In place: the text lives in buffer 0 of the shared pool, not in a copy.
    const auto* t = reinterpret_cast<const std::byte*>(root.getTextField().begin());
    if (mismatch.empty() && (t < lo || t >= hi)) mismatch = "text is not in buffer 0 (copied?)";
  });
  if (st != MessageStatus::ok) return 5;
  if (!mismatch.empty()) {
    std::fprintf(stderr, "child: %s\n", mismatch.c_str());
    return 6;
  }
  return 0;
}

}  // namespace

// ---------------------------------------------------------------------------

TEST_CASE("every field type round-trips to another process that reads it in place") {
  TestDomain d;
  Segment seg = Segment::create("msg", test::opts(d, 16u << 20));
  BufferPool pool = BufferPool::create(seg, "pool", small_config());
  Board& board = test::make_board<Board>(seg);
  const std::size_t n = 200;
  std::size_t segments = 0;
  {
    MessageBuilder b(pool, 1024);
    fill_all(b.initRoot<AllTypes>(), n);
    SealedMessage m = std::move(b).seal();
    segments = m.segment_count();
    CHECK(segments >= 1);
    CHECK(m.total_bytes() > 4000);
    publish(board, m);
  }
  CHECK(in_use(pool) == segments);  // the board's references keep the buffers
  Children kids;
  pid_t kid = kids.spawn([&] { return read_all_types_in_child(d.name(), n, segments); });
  test::check_exit(kids.wait(kid));
  CHECK(in_use(pool) == 0);  // the child's reader dropped the last references
}

TEST_CASE("events and tasks schemas: every union member round-trips") {
  TestDomain d;
  Segment seg = Segment::create("msg", test::opts(d, 16u << 20));
  BufferPool pool = BufferPool::create(seg, "pool", small_config());
  for (int kind = 0; kind < 4; ++kind) {
    CAPTURE(kind);
    MessageBuilder b(pool);
    auto e = b.initRoot<ipc::schema::Event>();
    e.setTimestampNs(123456789);
    e.setSourcePid(42);
    e.setSeverity(ipc::schema::Severity::WARNING);
    if (kind == 0) {
      auto p = e.initProcessDied();
      p.setPid(77);
      p.setSignal(SIGKILL);
    } else if (kind == 1) {
      auto s = e.initSegmentCreated();
      s.setName("ipc.x.seg");
      s.setSize(1u << 20);
    } else if (kind == 2) {
      auto p = e.initPoolPressure();
      p.setPool("pool");
      p.setLevel(ipc::schema::PressureLevel::HIGH);
    } else {
      auto c = e.initCustom();
      c.setTopic("topic");
      c.initBody(3)[2] = 9;
    }
    MessageReader r(std::move(b).seal().take_buffers());
    auto ev = r.root<ipc::schema::Event>();
    CHECK(ev.getTimestampNs() == 123456789);
    CHECK(ev.getSourcePid() == 42);
    CHECK(ev.getSeverity() == ipc::schema::Severity::WARNING);
    switch (kind) {
      case 0:
        CHECK((ev.isProcessDied() && ev.getProcessDied().getPid() == 77 && ev.getProcessDied().getSignal() == SIGKILL));
        break;
      case 1:
        CHECK((ev.isSegmentCreated() && ev.getSegmentCreated().getName() == "ipc.x.seg" &&
               ev.getSegmentCreated().getSize() == (1u << 20)));
        break;
      case 2:
        CHECK((ev.isPoolPressure() && ev.getPoolPressure().getLevel() == ipc::schema::PressureLevel::HIGH));
        break;
      default:
        CHECK((ev.isCustom() && ev.getCustom().getTopic() == "topic" && ev.getCustom().getBody()[2] == 9));
        break;
    }
  }
  for (bool ok : {true, false}) {
    MessageBuilder tb(pool);
    auto t = tb.initRoot<ipc::schema::Task>();
    t.setId(5);
    t.setKind("resize");
    t.initPayload(4)[0] = 1;
    t.setDeadlineNs(1000);
    t.setAttempt(2);
    MessageReader tr(std::move(tb).seal().take_buffers());
    auto task = tr.root<ipc::schema::Task>();
    CHECK((task.getId() == 5 && task.getKind() == "resize" && task.getPayload().size() == 4 &&
           task.getDeadlineNs() == 1000 && task.getAttempt() == 2));

    MessageBuilder rb(pool);
    auto res = rb.initRoot<ipc::schema::Result>();
    res.setTaskId(5);
    if (ok) {
      res.initOk(2)[1] = 8;
    } else {
      auto e = res.initError();
      e.setCode(13);
      e.setMessage("no such kind");
    }
    MessageReader rr(std::move(rb).seal().take_buffers());
    auto result = rr.root<ipc::schema::Result>();
    CHECK(result.getTaskId() == 5);
    if (ok)
      CHECK((result.isOk() && result.getOk()[1] == 8));
    else
      CHECK(
          (result.isError() && result.getError().getCode() == 13 && result.getError().getMessage() == "no such kind"));
  }
  CHECK(in_use(pool) == 0);
}

TEST_CASE("1 MiB and 16 MiB messages cross processes intact") {
  TestDomain d;
  Segment seg = Segment::create("msg", test::opts(d, 64u << 20));
  BufferPool pool = BufferPool::create(seg, "pool", big_config());
  Board& board = test::make_board<Board>(seg);
  for (std::size_t mib : {1u, 16u}) {
    CAPTURE(mib);
    const std::size_t bytes = mib << 20;
    // Half in one Data blob, half in a list of small structs (growth).
    const std::size_t items = bytes / 2 / 24;  // Inner: 8 B data + 2 pointers
    {
      MessageBuilder b(pool);
      auto root = b.initRoot<AllTypes>();
      auto blob = root.initDataField(static_cast<unsigned>(bytes / 2));
      for (std::size_t i = 0; i < blob.size(); ++i) blob[i] = static_cast<kj::byte>(i * 131 >> 3);
      auto list = root.initStructList(static_cast<unsigned>(items));
      for (unsigned i = 0; i < items; ++i) list[i].setId(i * 3);
      SealedMessage m = std::move(b).seal();
      CHECK(m.total_bytes() >= bytes);
      CHECK(m.segment_count() >= 2);
      CHECK(m.segment_count() <= MessageBuilder::kMaxSegments);
      publish(board, m);
    }
    Children kids;
    pid_t kid = kids.spawn([&]() -> int {
      Segment s = Segment::open("msg", {.domain = d.name()});
      BufferPool p = BufferPool::open(s, "pool");
      std::optional<MessageReader> r = MessageReader::parse(adopt_all(p, test::make_board<Board>(s)));
      if (!r) return 2;
      int bad = 0;
      MessageStatus st = r->visit<AllTypes>([&](AllTypes::Reader root) {
        auto blob = root.getDataField();
        if (blob.size() != bytes / 2) bad = 3;
        for (std::size_t i = 0; i < blob.size() && !bad; ++i)
          if (blob[i] != static_cast<kj::byte>(i * 131 >> 3)) bad = 4;
        auto list = root.getStructList();
        if (list.size() != items) bad = 5;
        for (unsigned i = 0; i < list.size() && !bad; ++i)
          if (list[i].getId() != i * 3) bad = 6;
      });
      return st != MessageStatus::ok ? 7 : bad;
    });
    test::check_exit(kids.wait(kid, 60s));
    CHECK(in_use(pool) == 0);
  }
}

TEST_CASE("multi-segment growth from a small hint, and its limits give clear errors") {
  TestDomain d;
  Segment seg = Segment::create("msg", test::opts(d, 16u << 20));
  BufferPool pool = BufferPool::create(seg, "pool", small_config());
  SUBCASE("growth round-trips and grows geometrically") {
    MessageBuilder b(pool, 128);
    REQUIRE(b.reserve() == AllocStatus::ok);
    CHECK(b.segment_count() == 1);
    fill_all(b.initRoot<AllTypes>(), 2000);
    SealedMessage m = std::move(b).seal();
    CHECK(m.segment_count() > 1);
    std::vector<Buffer> bufs = m.take_buffers();
    REQUIRE(bufs.size() > 2);
    CHECK(bufs[0].capacity() == 256);  // the hint's class
    for (std::size_t i = 2; i < bufs.size(); ++i) CHECK(bufs[i].capacity() >= bufs[i - 1].capacity());
    MessageReader r(std::move(bufs));
    CHECK(r.segment_count() > 2);
    std::string mismatch;
    CHECK(r.visit<AllTypes>([&](AllTypes::Reader root) { mismatch = check_all_types(root, 2000); }) ==
          MessageStatus::ok);
    CHECK(mismatch == "");
  }
  SUBCASE("more than kMaxSegments segments: ipc::Error naming the pool, nothing leaks") {
    PoolConfig c;
    c.class_sizes = {256};  // every segment is at most 256 B
    c.buffers_per_class = 64;
    c.cache_per_class = 0;
    BufferPool tiny = BufferPool::create(seg, "tiny", c);
    {
      MessageBuilder b(tiny, 256);
      auto list = b.initRoot<AllTypes>().initStructList(4);
      bool threw = false;
      try {
        for (unsigned i = 0; i < 4; ++i) list[i].setLabel(std::string(200, 'x'));
        list = b.getRoot<AllTypes>().initStructList(1);
        for (int i = 0; i < 20; ++i) b.getRoot<AllTypes>().initTextList(1).set(0, std::string(200, 'y'));
      } catch (const ipc::Error& e) {
        threw = true;
        CHECK(e.code() == ErrorCode::no_space);
        CHECK(std::string(e.what()).find("tiny") != std::string::npos);
        CHECK(std::string(e.what()).find("8 segments") != std::string::npos);
      }
      CHECK(threw);
      CHECK(b.segment_count() == MessageBuilder::kMaxSegments);
    }
    CHECK(in_use(tiny) == 0);
  }
  SUBCASE("pool exhausted: ipc::Error with the status, reserve() reports it without throwing") {
    PoolConfig c;
    c.class_sizes = {4096};
    c.buffers_per_class = 2;
    c.cache_per_class = 0;
    BufferPool two = BufferPool::create(seg, "two", c);
    Allocation hog = two.allocate(4096);
    REQUIRE(hog);
    {
      MessageBuilder b(two);
      REQUIRE(b.reserve() == AllocStatus::ok);
      auto root = b.initRoot<AllTypes>();
      try {
        root.initDataField(3900);  // fits a 4 KiB buffer, not the rest of buffer 0: none left
        FAIL("no exception");
      } catch (const ipc::Error& e) {
        CHECK(e.code() == ErrorCode::no_space);
        CHECK(std::string(e.what()).find("'two'") != std::string::npos);
        INFO(std::string(e.what()));
        CHECK(std::string(e.what()).find("exhausted") != std::string::npos);
      }
      MessageBuilder b2(two);
      CHECK(b2.reserve() == AllocStatus::exhausted);
      CHECK_THROWS_AS(b2.initRoot<AllTypes>(), ipc::Error);
    }
    hog.buffer.reset();
    CHECK(in_use(two) == 0);
  }
  SUBCASE("bad hint and empty seal are refused") {
    CHECK_THROWS_AS(MessageBuilder(pool, 16), ipc::Error);
    MessageBuilder b(pool);
    CHECK_THROWS_AS(std::move(b).seal(), ipc::Error);
  }
  CHECK(in_use(pool) == 0);
}

TEST_CASE("writes after seal are detected by the checksum when verification is on") {
  TestDomain d;
  Segment seg = Segment::create("msg", test::opts(d, 16u << 20));
  BufferPool pool = BufferPool::create(seg, "pool", small_config());
  MessageBuilder b(pool);
  AllTypes::Builder root = b.initRoot<AllTypes>();
  fill_all(root, 10);
  SealedMessage m = std::move(b).seal();
  CHECK_THROWS_AS(std::move(b).seal(), ipc::Error);  // one builder, one message
  std::vector<Buffer> bufs = m.take_buffers();
  std::vector<std::span<const std::byte>> spans;
  for (const Buffer& x : bufs) spans.emplace_back(x.data(), x.capacity());

  MessageStatus st{};
  std::string error;
  CHECK(MessageReader::parse(spans, {.checksum = ChecksumCheck::always}, &error, &st).has_value());
  CHECK(st == MessageStatus::ok);

  root.setInt32Field(7);  // a sender that kept its Builder writes into the frozen message
  CHECK_FALSE(MessageReader::parse(spans, {.checksum = ChecksumCheck::always}, &error, &st).has_value());
  CHECK(st == MessageStatus::checksum_mismatch);
  CHECK(error.find("after seal") != std::string::npos);
  // Unverified, the change is read as-is.
  std::optional<MessageReader> r = MessageReader::parse(spans, {.checksum = ChecksumCheck::never});
  REQUIRE(r.has_value());
  CHECK(r->root<AllTypes>().getInt32Field() == 7);
  // build_default follows the library's build type.
  CHECK(MessageReader::parse(spans, {}, nullptr, &st).has_value() == !checksum_verified_by_default());
  // Growing the frozen message is refused outright.
  CHECK_THROWS_AS(root.initDataField(100000), ipc::Error);
}

TEST_CASE("header validation: each defect has its own status and message") {
  TestDomain d;
  Segment seg = Segment::create("msg", test::opts(d, 16u << 20));
  BufferPool pool = BufferPool::create(seg, "pool", small_config());
  MessageBuilder b(pool, 256);
  fill_all(b.initRoot<AllTypes>(), 50);
  std::vector<Buffer> bufs = std::move(b).seal().take_buffers();
  REQUIRE(bufs.size() >= 2);
  const std::size_t n = bufs.size();
  std::vector<std::span<const std::byte>> spans;
  for (const Buffer& x : bufs) spans.emplace_back(x.data(), x.capacity());
  MessageHeader good;
  std::memcpy(&good, bufs[0].data(), sizeof good);
  CHECK(good.segment_count == n);

  auto parse_with = [&](auto mutate, std::vector<std::span<const std::byte>> use) {
    MessageHeader h = good;
    mutate(h);
    std::memcpy(bufs[0].data(), &h, sizeof h);
    MessageStatus st{};
    std::string error;
    bool ok = MessageReader::parse(use, {.checksum = ChecksumCheck::always}, &error, &st).has_value();
    std::memcpy(bufs[0].data(), &good, sizeof good);
    CHECK(ok == (st == MessageStatus::ok));
    if (!ok) CHECK(error.rfind("message: ", 0) == 0);
    return st;
  };
  auto same = [](MessageHeader&) {};
  CHECK(parse_with(same, spans) == MessageStatus::ok);
  CHECK(parse_with([](MessageHeader& h) { h.magic ^= 1; }, spans) == MessageStatus::bad_magic);
  CHECK(parse_with([](MessageHeader& h) { h.version = 9; }, spans) == MessageStatus::bad_version);
  CHECK(parse_with([](MessageHeader& h) { h.segment_count = 0; }, spans) == MessageStatus::bad_header);
  CHECK(parse_with([](MessageHeader& h) { h.segment_count = 200; }, spans) == MessageStatus::bad_header);
  CHECK(parse_with([](MessageHeader& h) { h.flags = 1; }, spans) == MessageStatus::bad_header);
  CHECK(parse_with([](MessageHeader& h) { h.total_bytes += 8; }, spans) == MessageStatus::bad_header);
  CHECK(parse_with([](MessageHeader& h) { h.segment_words[0] = 0; }, spans) == MessageStatus::bad_header);
  CHECK(parse_with([&](MessageHeader& h) { h.segment_words[n] = 1; }, spans) == MessageStatus::bad_header);
  CHECK(parse_with([](MessageHeader& h) { h.segment_words[1] = 0xffffffffu; }, spans) ==
        MessageStatus::segment_out_of_range);
  CHECK(parse_with([](MessageHeader& h) { h.checksum ^= 1; }, spans) == MessageStatus::checksum_mismatch);
  // Buffers that do not match the header.
  CHECK(parse_with(same, {spans.begin(), spans.end() - 1}) == MessageStatus::bad_header);
  CHECK(parse_with(same, {}) == MessageStatus::no_buffers);
  std::vector<std::span<const std::byte>> nine(9, spans[0]);
  CHECK(parse_with(same, nine) == MessageStatus::too_many_segments);
  auto shrunk = spans;
  shrunk[1] = shrunk[1].first(8);  // a buffer smaller than its segment
  CHECK(parse_with(same, shrunk) == MessageStatus::segment_out_of_range);
  auto tiny = spans;
  tiny[0] = tiny[0].first(40);
  CHECK(parse_with(same, tiny) == MessageStatus::buffer_too_small);
  auto odd = spans;
  odd[1] = odd[1].subspan(4);
  CHECK(parse_with(same, odd) == MessageStatus::misaligned);
  // The throwing form says what to do.
  std::memset(bufs[0].data(), 0, 64);
  try {
    MessageReader r(std::move(bufs));
    FAIL("no exception");
  } catch (const ipc::Error& e) {
    CHECK(e.code() == ErrorCode::corrupted);
    CHECK(std::string(e.what()).find("bad magic") != std::string::npos);
  }
  CHECK(in_use(pool) == 0);  // the refused reader released the buffers
}

TEST_CASE("2000+ random mutations of a message in shared memory: errors or valid reads, never a crash") {
  TestDomain d;
  Segment seg = Segment::create("msg", test::opts(d, 16u << 20));
  BufferPool pool = BufferPool::create(seg, "pool", small_config());
  MessageBuilder b(pool, 256);
  fill_all(b.initRoot<AllTypes>(), 40);
  std::vector<Buffer> bufs = std::move(b).seal().take_buffers();
  REQUIRE(bufs.size() >= 3);
  MessageHeader good;
  std::memcpy(&good, bufs[0].data(), sizeof good);
  // Pristine copy of every buffer's used bytes.
  std::vector<std::vector<std::byte>> original;
  for (std::size_t i = 0; i < bufs.size(); ++i) {
    std::size_t used = good.segment_words[i] * 8 + (i == 0 ? 64 : 0);
    original.emplace_back(bufs[i].data(), bufs[i].data() + used);
  }
  const unsigned seed = test::seed();
  CAPTURE(seed);
  std::mt19937_64 rng(seed);
  auto pick = [&](std::uint64_t n) { return n == 0 ? 0 : rng() % n; };

  int parsed = 0, refused = 0, malformed = 0, read_ok = 0;
  const int kIterations = 2500;
  for (int it = 0; it < kIterations; ++it) {
    for (std::size_t i = 0; i < bufs.size(); ++i) std::memcpy(bufs[i].data(), original[i].data(), original[i].size());
    MessageHeader h = good;
    const int kind = it == 0 ? -1 : static_cast<int>(pick(6));
    const std::size_t seg_i = pick(bufs.size());
    const std::size_t base = seg_i == 0 ? 64 : 0;
    const std::size_t words = good.segment_words[seg_i];
    std::byte* seg_data = bufs[seg_i].data() + base;
    switch (kind) {
      case 0:  // byte flips anywhere in the used bytes
        for (int k = 0, flips = 1 + static_cast<int>(pick(4)); k < flips; ++k)
          bufs[seg_i].data()[pick(original[seg_i].size())] ^= static_cast<std::byte>(1 + pick(255));
        std::memcpy(&h, bufs[0].data(), sizeof h);
        break;
      case 1:  // truncated (or extended) word counts
        h.segment_words[seg_i] = static_cast<std::uint32_t>(pick(words + 2));
        break;
      case 2:  // bogus segment counts
        h.segment_count = static_cast<std::uint16_t>(pick(12));
        break;
      case 3: {  // a random word where a pointer may be
        std::uint64_t w = rng();
        std::memcpy(seg_data + pick(words) * 8, &w, 8);
        break;
      }
      case 4: {  // a plausible pointer: random kind, small offset, random sizes / far segment
        std::uint64_t kindbits = pick(4);
        std::uint64_t offset = (pick(64) - 32) & 0x3fffffff;
        std::uint64_t upper = kindbits == 2 ? pick(12) : rng() & 0xffffffff;  // far: segment id
        std::uint64_t w = (upper << 32) | (offset << 2) | kindbits;
        std::memcpy(seg_data + pick(words) * 8, &w, 8);
        break;
      }
      case 5: {  // zero a run of words
        std::size_t at = pick(words), len = 1 + pick(8);
        std::memset(seg_data + at * 8, 0, std::min(len, words - at) * 8);
        break;
      }
      default: break;
    }
    // Half the time re-sign the header (total, checksum) as a hostile peer
    // would, so capnp itself sees the damage; otherwise the checks catch it.
    if (it % 2 == 1) {
      std::uint64_t total = 64;
      std::array<kj::ArrayPtr<const capnp::word>, 8> segs{};
      for (std::size_t i = 0; i < bufs.size() && i < 8; ++i) {
        std::uint64_t room = (bufs[i].capacity() - (i == 0 ? 64 : 0)) / 8;
        std::uint64_t wc = std::min<std::uint64_t>(h.segment_words[i], room);
        segs[i] = kj::arrayPtr(reinterpret_cast<const capnp::word*>(bufs[i].data() + (i == 0 ? 64 : 0)), wc);
        total += h.segment_words[i] * 8ull;
      }
      h.total_bytes = total;
      h.checksum = message_checksum(std::span(segs.data(), std::min<std::size_t>(bufs.size(), 8)));
    }
    std::memcpy(bufs[0].data(), &h, sizeof h);

    // Two readers: over the shared memory itself, and over exact-size heap
    // copies so that ASan would see any read past a segment.
    std::vector<std::span<const std::byte>> shm;
    for (const Buffer& x : bufs) shm.emplace_back(x.data(), x.capacity());
    std::vector<std::vector<capnp::word>> heap;
    std::vector<std::span<const std::byte>> exact;
    for (std::size_t i = 0; i < bufs.size(); ++i) {
      std::size_t bytes = original[i].size();
      if (i == 0 && h.segment_count >= 1)
        bytes = std::min<std::size_t>(64 + std::uint64_t{h.segment_words[0]} * 8, bufs[0].capacity());
      else if (i < 8)
        bytes = std::min<std::size_t>(std::uint64_t{h.segment_words[i]} * 8, bufs[i].capacity());
      heap.emplace_back(std::max<std::size_t>(1, (bytes + 7) / 8));  // never null: an empty segment is legal
      std::memcpy(heap.back().data(), bufs[i].data(), bytes);
      exact.emplace_back(reinterpret_cast<const std::byte*>(heap.back().data()), bytes);
    }
    for (auto* view : {&shm, &exact}) {
      std::string error;
      MessageStatus st{};
      std::optional<MessageReader> r = MessageReader::parse(*view, {.checksum = ChecksumCheck::always}, &error, &st);
      if (!r) {
        ++refused;
        CHECK(st != MessageStatus::ok);
        CHECK_FALSE(error.empty());
        continue;
      }
      ++parsed;
      MessageStatus walked =
          r->visit<AllTypes>([](AllTypes::Reader root) { (void)test::walk_struct(capnp::toDynamic(root)); }, &error);
      if (walked == MessageStatus::malformed) {
        ++malformed;
        CHECK(error.find("malformed") != std::string::npos);
      } else {
        ++read_ok;
      }
      if (kind == -1) {
        std::string mismatch = "not read";
        CHECK(r->check_all() == MessageStatus::ok);
        r->visit<AllTypes>([&](AllTypes::Reader root) { mismatch = check_all_types(root, 40); });
        CHECK(mismatch == "");
      }
    }
  }
  INFO("parsed " << parsed << " refused " << refused << " malformed " << malformed << " read " << read_ok);
  CHECK(parsed + refused == 2 * kIterations);
  CHECK(refused > 0);
  CHECK(malformed > 0);  // capnp saw damage and said so
  CHECK(read_ok > 0);
}

TEST_CASE("SIGKILL while building a message leaks nothing after reclaim") {
  TestDomain d;
  Segment seg = Segment::create("msg", test::opts(d, 16u << 20));
  BufferPool pool = BufferPool::create(seg, "pool", small_config());
  Board& board = test::make_board<Board>(seg);
  const unsigned seed = test::seed();
  CAPTURE(seed);
  std::mt19937 rng(seed);
  const int iterations = test::iterations(40);
  for (int it = 0; it < iterations; ++it) {
    CAPTURE(it);
    board.progress.store(0, std::memory_order_relaxed);
    const bool seal_first = it % 5 == 4;  // also: sealed, handles published, never consumed
    const std::uint32_t target = seal_first ? 100 : 1 + rng() % 4;
    Children kids;
    pid_t kid = kids.spawn([&]() -> int {
      Segment s = Segment::open("msg", {.domain = d.name()});
      BufferPool p = BufferPool::open(s, "pool");
      Board& bd = test::make_board<Board>(s);
      MessageBuilder b(p, 256);
      auto list = b.initRoot<AllTypes>().initTextList(20000);
      for (unsigned i = 0; i < list.size(); ++i) {
        list.set(i, "element number " + std::to_string(i));
        bd.progress.store(static_cast<std::uint32_t>(b.segment_count()), std::memory_order_release);
      }
      if (seal_first) {
        SealedMessage m = std::move(b).seal();
        publish(bd, m);
        bd.progress.store(100, std::memory_order_release);
      }
      for (;;) ::pause();  // wait for the SIGKILL
    });
    CHECK(test::eventually([&] { return board.progress.load(std::memory_order_acquire) >= target; }));
    if (rng() % 2) std::this_thread::sleep_for(std::chrono::microseconds(rng() % 500));
    kids.kill(kid);
    CHECK(in_use(pool) > 0);  // the dead child's buffers are still claimed
    pool.reclaim(static_cast<std::uint32_t>(kid));
    CHECK(in_use(pool) == 0);
  }
  // And the pool still serves a full message.
  MessageBuilder b(pool, 256);
  fill_all(b.initRoot<AllTypes>(), 100);
  MessageReader r(std::move(b).seal().take_buffers());
  std::string mismatch;
  r.visit<AllTypes>([&](AllTypes::Reader root) { mismatch = check_all_types(root, 100); });
  CHECK(mismatch == "");
}
