// Large buffers from a pool's region: buddy and best-fit strategies,
// coalescing, cross-process handles, and SIGKILL at random points.
#include <doctest/doctest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "ipc/pool.hpp"
#include "support.hpp"

using namespace ipc;
using namespace std::chrono_literals;
using ipc::test::opts;
using ipc::test::TestDomain;

namespace {

PoolConfig region_config(LargeStrategy strategy, std::size_t blocks) {
  PoolConfig c;
  c.class_sizes = {256};
  c.buffers_per_class = 4;
  c.large_strategy = strategy;
  c.large_min_block = 4096;
  c.large_region_bytes = blocks * 4096;
  return c;
}

std::size_t region_blocks_in_use(const BufferPool& p) { return p.stats().classes.back().in_use; }

}  // namespace

TEST_CASE("buddy: power-of-two runs, aligned, coalescing back into one block") {
  TestDomain d;
  Segment seg = Segment::create("large", opts(d, 8u << 20));
  BufferPool pool = BufferPool::create(seg, "p", region_config(LargeStrategy::buddy, 16));
  Allocation a = pool.allocate(5000);   // 2 blocks
  Allocation b = pool.allocate(13000);  // 4 blocks
  Allocation c = pool.allocate(4096);   // 1 block
  REQUIRE(a);
  REQUIRE(b);
  REQUIRE(c);
  CHECK(a.buffer.capacity() == 8192);
  CHECK(b.buffer.capacity() == 16384);
  CHECK(c.buffer.capacity() == 4096);
  CHECK(a.buffer.handle().size_class == BufferPool::kRegionClass);
  CHECK(a.buffer.handle().index % 2 == 0);
  CHECK(b.buffer.handle().index % 4 == 0);
  std::memset(a.buffer.data(), 1, 8192);
  std::memset(b.buffer.data(), 2, 16384);
  std::memset(c.buffer.data(), 3, 4096);
  CHECK(a.buffer.data()[8191] == std::byte{1});
  CHECK(b.buffer.data()[0] == std::byte{2});
  CHECK(region_blocks_in_use(pool) == 7);
  CHECK(pool.allocate(16 * 4096).status == AllocStatus::exhausted);
  CHECK(pool.allocate(17 * 4096).status == AllocStatus::too_large);
  a.buffer.reset();
  b.buffer.reset();
  c.buffer.reset();
  CHECK(region_blocks_in_use(pool) == 0);
  Allocation whole = pool.allocate(16 * 4096);  // every buddy coalesced again
  CHECK(whole);
  CHECK(whole.buffer.capacity() == 16 * 4096);
  // Small sizes still come from the slab class.
  Allocation small = pool.allocate(100);
  CHECK(small.buffer.handle().size_class == 0);
}

TEST_CASE("best fit takes the smallest gap that holds the request") {
  TestDomain d;
  Segment seg = Segment::create("large", opts(d, 8u << 20));
  BufferPool pool = BufferPool::create(seg, "p", region_config(LargeStrategy::best_fit, 16));
  // Blocks: [a:3][b:5][c:2][e:4][rest:2]
  Allocation a = pool.allocate(3 * 4096), b = pool.allocate(5 * 4096), c = pool.allocate(2 * 4096),
             e = pool.allocate(4 * 4096);
  REQUIRE(a);
  REQUIRE(b);
  REQUIRE(c);
  REQUIRE(e);
  CHECK(b.buffer.capacity() == 5 * 4096);  // exact runs, no power-of-two rounding
  std::uint32_t b_at = b.buffer.handle().index;
  std::uint32_t c_at = c.buffer.handle().index;
  b.buffer.reset();  // gap of 5 at b_at; the tail gap is 2
  c.buffer.reset();  // gap of 5+2 = 7 (b and c are adjacent)
  Allocation two = pool.allocate(2 * 4096);
  REQUIRE(two);
  CHECK(two.buffer.handle().index == 14);  // the 2-block tail fits exactly, better than the 7-block gap
  Allocation six = pool.allocate(6 * 4096);
  REQUIRE(six);
  CHECK(six.buffer.handle().index == b_at);
  CHECK(c_at == b_at + 5);
}

TEST_CASE("region handles cross processes and SIGKILLed holders are reclaimed") {
  TestDomain d;
  Segment seg = Segment::create("large", opts(d, 8u << 20));
  BufferPool pool = BufferPool::create(seg, "p", region_config(LargeStrategy::buddy, 64));
  struct Board {
    std::atomic<int> ready;
    BufferHandle h;
  };
  auto* board = static_cast<Board*>(seg.create_object("board", ObjectType::raw, sizeof(Board)).data);
  Allocation a = pool.allocate(40000);
  REQUIRE(a);
  std::strcpy(reinterpret_cast<char*>(a.buffer.data()), "large and shared");
  board->h = a.buffer.detach();  // the child takes the reference over

  pid_t child = test::fork_child([&]() -> int {
    Segment s = Segment::open("large", {.domain = d.name()});
    BufferPool p = BufferPool::open(s, "p");
    BufferPool::HandleStatus st;
    std::optional<Buffer> mine = p.adopt(board->h, static_cast<std::uint32_t>(::getppid()), &st);
    if (!mine || std::strcmp(reinterpret_cast<char*>(mine->data()), "large and shared") != 0) return 1;
    std::vector<Buffer> more;
    for (int i = 0; i < 3; ++i) more.push_back(std::move(p.allocate(30000).buffer));
    board->ready.store(1);
    for (;;) ::pause();
  });
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (board->ready.load() == 0 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(1ms);
  REQUIRE(board->ready.load() == 1);
  CHECK(region_blocks_in_use(pool) == 40);  // 40000 B → 10 → 16 blocks, 3 × (30000 B → 8 blocks)
  CHECK(pool.held_by(static_cast<std::uint32_t>(child)).size() == 4);
  test::kill_child(child);
  CHECK(pool.reclaim_dead() == 4);
  CHECK(region_blocks_in_use(pool) == 0);
  CHECK(pool.allocate(64 * 4096));
}

TEST_CASE("SIGKILL at random points of region alloc/free loops loses no block") {
  TestDomain d;
  Segment seg = Segment::create("large", opts(d, 8u << 20));
  BufferPool pool = BufferPool::create(seg, "p", region_config(LargeStrategy::buddy, 32));
  const unsigned seed = test::seed();
  INFO("seed " << seed);
  std::mt19937 rng(seed);
  const int iterations = test::iterations(60);
  for (int iter = 0; iter < iterations; ++iter) {
    pid_t child = test::fork_child([&]() -> int {
      Segment s = Segment::open("large", {.domain = d.name()});
      BufferPool p = BufferPool::open(s, "p");
      std::mt19937 r(seed + static_cast<unsigned>(iter));
      std::vector<Buffer> held;
      for (;;) {
        if (held.size() < 4) {
          Allocation a = p.allocate(4096 * (1 + r() % 6));
          if (a) held.push_back(std::move(a.buffer));
        } else {
          held.erase(held.begin() + static_cast<long>(r() % held.size()));
        }
      }
    });
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 3000));
    test::kill_child(child);
    pool.reclaim(static_cast<std::uint32_t>(child));
    REQUIRE(region_blocks_in_use(pool) == 0);
  }
  Allocation whole = pool.allocate(32 * 4096);
  CHECK(whole);
  CHECK(pool.stats().claimed_bytes == whole.buffer.capacity());
}

TEST_CASE("bad region configs are refused") {
  TestDomain d;
  Segment seg = Segment::create("large", opts(d, 8u << 20));
  PoolConfig c = region_config(LargeStrategy::buddy, 16);
  c.large_min_block = 3000;
  CHECK_THROWS_AS(BufferPool::create(seg, "a", c), Error);
  c = region_config(LargeStrategy::best_fit, 16);
  c.large_region_bytes = 4096 * 16 + 5;
  CHECK_THROWS_AS(BufferPool::create(seg, "b", c), Error);
  c = region_config(LargeStrategy::buddy, 16);
  c.class_sizes.clear();  // a pure region pool is fine
  BufferPool only = BufferPool::create(seg, "c", c);
  CHECK(only.allocate(10).buffer.capacity() == 4096);
}
