// Races between holders of one buffer (threads with their own handles, as
// the header prescribes): the last release must be decided exactly once.
// Regression test for a review finding: two last holders both freeing (or
// freeing and caching) one buffer handed it to two owners.
#include <doctest/doctest.h>
#include <unistd.h>

#include <atomic>
#include <thread>
#include <vector>

#include "ipc/pool.hpp"
#include "support.hpp"

using namespace ipc;
using ipc::test::opts;
using ipc::test::TestDomain;

TEST_CASE("concurrent last releases of one buffer free it exactly once") {
  TestDomain d;
  const unsigned seed = ipc::test::seed();  // the random spin before each release
  INFO("seed " << seed);
  Segment seg = Segment::create("race", opts(d, 4u << 20));
  PoolConfig cfg;
  cfg.class_sizes = {64};
  cfg.buffers_per_class = 128;
  cfg.cache_per_class = 8;
  BufferPool owner = BufferPool::create(seg, "p", cfg);
  BufferPool other = BufferPool::open(seg, "p");
  BufferPool scanner = BufferPool::open(seg, "p");
  constexpr std::uint32_t kHolder = 4242;  // a second holder id
  std::atomic<int> go{0}, done{0};
  BufferHandle h{};
  std::thread releaser([&] {
    for (int it = 1;; ++it) {
      int g;
      while ((g = go.load()) != it)
        if (g < 0) return;
      other.release(h, kHolder);
      done.fetch_add(1);
    }
  });
  int double_owned = 0, failures = 0;
  unsigned rr = seed;
  for (int it = 1; it <= 3000 && double_owned == 0 && failures == 0; ++it) {
    Allocation a = owner.allocate(64);
    if (!a) {
      ++failures;
      break;
    }
    Buffer buf = std::move(a.buffer);
    h = buf.handle();
    if (owner.retain(h, kHolder) != BufferPool::HandleStatus::ok) ++failures;
    done = 0;
    go = it;
    rr = rr * 1103515245 + 12345;
    for (unsigned i = 0; i < (rr >> 16) % 300; ++i) asm volatile("");
    buf.reset();  // races with other.release(h, kHolder)
    while (done.load() != 1) std::this_thread::yield();
    if (owner.holders(h) != 0) ++failures;  // stale now: 0
    // Everything the scanner can get from the shared pool, then one from the owner's cache:
    // no buffer may be in both.
    std::vector<Buffer> all;
    for (;;) {
      Allocation x = scanner.allocate(64);
      if (!x) break;
      all.push_back(std::move(x.buffer));
    }
    Allocation y = owner.allocate(64);
    for (const Buffer& x : all)
      if (y.buffer && x.data() == y.buffer.data()) ++double_owned;
  }
  go = -1;
  releaser.join();
  CHECK(failures == 0);
  CHECK(double_owned == 0);
}

TEST_CASE("transfer racing the last release never hands out a freed buffer") {
  // Regression (review): transfer() could move a reference out of a slot
  // whose bit the releaser had just cleared, adopting freed memory.
  TestDomain d;
  Segment seg = Segment::create("race2", opts(d, 4u << 20));
  PoolConfig cfg;
  cfg.class_sizes = {64};
  cfg.buffers_per_class = 64;
  cfg.cache_per_class = 0;
  BufferPool owner = BufferPool::create(seg, "p", cfg);
  BufferPool mover = BufferPool::open(seg, "p");
  BufferPool scanner = BufferPool::open(seg, "p");
  constexpr std::uint32_t kFrom = 5001, kTo = 5002;
  std::atomic<int> go{0}, done{0};
  BufferHandle h{};
  std::atomic<int> moved{0};
  std::thread t([&] {
    for (int it = 1;; ++it) {
      int g;
      while ((g = go.load()) != it)
        if (g < 0) return;
      if (mover.transfer(h, kFrom, kTo) == BufferPool::HandleStatus::ok) moved.fetch_add(1);
      done.fetch_add(1);
    }
  });
  int errors = 0;
  for (int it = 1; it <= 3000 && errors == 0; ++it) {
    Allocation a = owner.allocate(64);
    if (!a) {
      ++errors;
      break;
    }
    h = a.buffer.handle();
    if (owner.retain(h, kFrom) != BufferPool::HandleStatus::ok) ++errors;
    a.buffer.reset();  // the owner's reference goes; kFrom's remains
    const int before = moved.load();
    done = 0;
    go = it;
    owner.release(h, kFrom);  // races with transfer(kFrom → kTo)
    while (done.load() != 1) std::this_thread::yield();
    const bool transferred = moved.load() != before;
    // Exactly one of the two got the reference: if the transfer won, kTo
    // holds the buffer alive; else it is free.
    if (transferred) {
      if (owner.holders(h) != 1) ++errors;
      if (owner.release(h, kTo) != BufferPool::HandleStatus::ok) ++errors;
    }
    if (owner.holders(h) != 0) ++errors;
    // The pool is whole: every buffer can be taken once.
    std::vector<Buffer> all;
    for (;;) {
      Allocation x = scanner.allocate(64);
      if (!x) break;
      all.push_back(std::move(x.buffer));
    }
    if (all.size() != 64) ++errors;
  }
  go = -1;
  t.join();
  CHECK(errors == 0);
}

TEST_CASE("retain with a stale handle never counts a reference on the next incarnation") {
  TestDomain d;
  Segment seg = Segment::create("race3", opts(d, 4u << 20));
  PoolConfig cfg;
  cfg.class_sizes = {64};
  cfg.buffers_per_class = 1;
  cfg.cache_per_class = 0;
  BufferPool pool = BufferPool::create(seg, "p", cfg);
  Allocation first = pool.allocate(64);
  REQUIRE(first);
  BufferHandle old = first.buffer.handle();
  first.buffer.reset();
  Allocation second = pool.allocate(64);  // same buffer, next generation
  REQUIRE(second);
  CHECK(second.buffer.handle().index == old.index);
  CHECK(pool.retain(old, 6001) == BufferPool::HandleStatus::stale);
  CHECK(pool.holders(second.buffer.handle()) == 1);
  second.buffer.reset();
  CHECK(pool.allocate(64));  // nothing keeps it alive
}
