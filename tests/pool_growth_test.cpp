// Pool growth through extension segments, seen from several processes, and
// shrinking with hysteresis.
#include <doctest/doctest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "ipc/pool.hpp"
#include "support.hpp"

using namespace ipc;
using namespace std::chrono_literals;
using ipc::test::opts;
using ipc::test::TestDomain;

namespace {

PoolConfig growing(std::uint32_t buffers, std::uint32_t max_ext, std::chrono::milliseconds delay) {
  PoolConfig c;
  c.class_sizes = {256, 4096};
  c.buffers_per_class = buffers;
  c.policy = ExhaustionPolicy::grow;
  c.max_extensions = max_ext;
  c.shrink_delay = delay;
  c.cache_per_class = 0;
  return c;
}

struct Board {
  std::atomic<int> stage;
  BufferHandle handle;
};

}  // namespace

TEST_CASE("a full pool grows by extension segments up to max_extensions, then reports exhausted") {
  TestDomain d;
  Segment seg = Segment::create("grow", opts(d, 4u << 20));
  BufferPool pool = BufferPool::create(seg, "p", growing(4, 2, 0ms));
  std::vector<Buffer> held;
  for (int i = 0; i < 12; ++i) {
    Allocation a = pool.allocate(200);
    REQUIRE_MESSAGE(a, "allocation " << i << ": " << to_string(a.status));
    std::memset(a.buffer.data(), i, 200);
    held.push_back(std::move(a.buffer));
  }
  CHECK(pool.extensions() == 2);
  CHECK(Segment::list(d.name()).size() == 3);
  Allocation more = pool.allocate(200);
  CHECK(more.status == AllocStatus::exhausted);
  for (int i = 0; i < 12; ++i) CHECK(static_cast<int>(held[i].data()[199]) == i);  // nothing shared
  CHECK(held[11].handle().extension == 2);
  held.clear();
  CHECK(pool.shrink() == 2);
  CHECK(pool.extensions() == 0);
  CHECK(Segment::list(d.name()) == std::vector<std::string>{"grow"});
}

TEST_CASE("another process resolves handles in extensions, allocates from them, and they shrink after the delay") {
  TestDomain d;
  Segment seg = Segment::create("grow", opts(d, 4u << 20));
  BufferPool pool = BufferPool::create(seg, "p", growing(2, 3, 300ms));
  auto* board = static_cast<Board*>(seg.create_object("board", ObjectType::raw, sizeof(Board)).data);
  std::vector<Buffer> held;
  for (int i = 0; i < 3; ++i) held.push_back(std::move(pool.allocate(100).buffer));
  REQUIRE(held[2]);
  REQUIRE(held[2].handle().extension == 1);
  std::strcpy(reinterpret_cast<char*>(held[2].data()), "in extension 1");
  board->handle = held[2].handle();

  pid_t child = test::fork_child([&] {
    Segment s = Segment::open("grow", {.domain = d.name()});
    BufferPool p = BufferPool::open(s, "p");
    BufferPool::HandleStatus st;
    std::byte* data = p.resolve(board->handle, &st);
    if (!data || std::strcmp(reinterpret_cast<char*>(data), "in extension 1") != 0) return 1;
    // Fill extension 1 and make the pool grow again from this process.
    std::vector<Buffer> mine;
    for (int i = 0; i < 3; ++i) {
      Allocation a = p.allocate(100);
      if (!a) return 2;
      mine.push_back(std::move(a.buffer));
    }
    if (p.extensions() != 2) return 3;
    board->stage.store(1);
    while (board->stage.load() != 2) std::this_thread::sleep_for(1ms);
    return 0;  // `mine` released on exit
  });
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (board->stage.load() != 1 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(1ms);
  REQUIRE(board->stage.load() == 1);
  CHECK(pool.extensions() == 2);  // this process sees the child's growth
  board->stage.store(2);
  CHECK(test::child_ok(test::wait_child(child)));

  held.clear();
  CHECK(pool.shrink() == 0);  // empty, but not for long enough yet (hysteresis)
  CHECK(pool.extensions() == 2);
  std::this_thread::sleep_for(400ms);
  CHECK(pool.shrink() == 2);
  CHECK(pool.extensions() == 0);
  CHECK(pool.stats().claimed_bytes == 0);
}

TEST_CASE("allocations racing with shrink never get a buffer from a released extension") {
  TestDomain d;
  Segment seg = Segment::create("grow", opts(d, 4u << 20));
  BufferPool pool = BufferPool::create(seg, "p", growing(2, 2, 0ms));
  auto* board = static_cast<Board*>(seg.create_object("board", ObjectType::raw, sizeof(Board)).data);
  pid_t child = test::fork_child([&] {
    Segment s = Segment::open("grow", {.domain = d.name()});
    BufferPool p = BufferPool::open(s, "p");
    for (int round = 0; round < 1500; ++round) {
      std::vector<Buffer> mine;
      for (int i = 0; i < 4; ++i) {
        Allocation a = p.allocate(64);
        if (!a) continue;  // exhausted while another round shrinks: allowed
        BufferPool::HandleStatus st;
        if (!p.resolve(a.buffer.handle(), &st)) return 1;
        std::memset(a.buffer.data(), 0x5a, 64);
        mine.push_back(std::move(a.buffer));
      }
      for (auto& b : mine)
        for (int k = 0; k < 64; ++k)
          if (b.data()[k] != std::byte{0x5a}) return 2;
      mine.clear();
      std::this_thread::sleep_for(100us);  // a window in which the other process shrinks
    }
    board->stage.store(1);
    return 0;
  });
  int shrinks = 0;
  auto deadline = std::chrono::steady_clock::now() + 20s;
  while (board->stage.load() == 0 && std::chrono::steady_clock::now() < deadline) shrinks += pool.shrink();
  test::ChildExit e = test::wait_child(child);
  CHECK_MESSAGE(test::child_ok(e), "child exit code " << e.code << ", signal " << e.signal);
  MESSAGE("extensions released while the other process allocated: " << shrinks);
  CHECK(shrinks > 0);
  pool.shrink();
  CHECK(pool.stats().claimed_bytes == 0);
}

TEST_CASE("grow needs max_extensions") {
  TestDomain d;
  Segment seg = Segment::create("grow", opts(d, 4u << 20));
  PoolConfig c = growing(2, 0, 0ms);
  CHECK_THROWS_AS(BufferPool::create(seg, "p", c), Error);
  c.max_extensions = BufferPool::kMaxExtensions + 1;
  CHECK_THROWS_AS(BufferPool::create(seg, "p", c), Error);
}

TEST_CASE("a growing pool with a reserve reports exhausted instead of looping") {
  // Regression: grow() used to count the reserve as room, so allocate()
  // grew, found no room for normal priority, and tried again forever.
  TestDomain d;
  Segment seg = Segment::create("grow", opts(d, 4u << 20));
  PoolConfig c = growing(4, 1, 0ms);
  c.class_sizes = {64};
  c.reserve_per_class = 1;
  BufferPool pool = BufferPool::create(seg, "p", c);
  pid_t child = test::fork_child([&] {
    Segment s = Segment::open("grow", {.domain = d.name()});
    BufferPool p = BufferPool::open(s, "p");
    std::vector<Buffer> held;
    for (int k = 0; k < 6; ++k) {
      Allocation a = p.allocate(64);
      if (!a) return 10 + k;
      held.push_back(std::move(a.buffer));
    }
    if (p.allocate(64).status != AllocStatus::exhausted) return 2;  // only reserves are left
    if (!p.allocate(64, Priority::high)) return 3;                  // which high priority may take
    return 0;
  });
  test::ChildExit e = test::wait_child(child, std::chrono::seconds(20));
  CHECK_FALSE(e.timed_out);
  CHECK_MESSAGE(test::child_ok(e), "child exit code " << e.code);
}
