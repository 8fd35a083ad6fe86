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
using ipc::test::TestDomain;

TEST_CASE("concurrent last releases of one buffer free it exactly once") {
  TestDomain d;
  SegmentOptions o;
  o.size = 4u << 20;
  o.domain = d.name();
  Segment seg = Segment::create("race", o);
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
  unsigned rr = static_cast<unsigned>(::getpid());
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
