// ObjectPool<T>: factory / reset / validate hooks across processes, and a
// process killed in the middle of reset never hands out a half-reset object.
#include <doctest/doctest.h>
#include <signal.h>
#include <unistd.h>

#include "ipc/object_pool.hpp"
#include "support.hpp"

using namespace ipc;
using ipc::test::opts;
using ipc::test::TestDomain;

namespace {

struct Session {
  std::uint32_t magic;  // 0xC0FFEE when built by the factory
  std::uint32_t uses;
  std::uint64_t payload[4];
};

PoolConfig object_config(std::uint32_t n) {
  PoolConfig c;
  c.class_sizes = {ObjectPool<Session>::kBufferBytes};
  c.buffers_per_class = n;
  c.cache_per_class = 0;
  return c;
}

}  // namespace

TEST_CASE("acquire builds with the factory, release resets, reuse is validated") {
  TestDomain d;
  Segment seg = Segment::create("objects", opts(d, 4u << 20));
  BufferPool pool = BufferPool::create(seg, "sessions", object_config(1));
  int built = 0, resets = 0, validations = 0;
  bool accept = true;
  ObjectPool<Session>::Hooks hooks;
  hooks.factory = [&](void* m) {
    new (m) Session{0xC0FFEE, 0, {}};
    ++built;
  };
  hooks.reset = [&](Session& s) {
    s.payload[0] = 0;
    ++resets;
  };
  hooks.validate = [&](const Session& s) {
    ++validations;
    return accept && s.magic == 0xC0FFEE;
  };
  ObjectPool<Session> objects(pool, hooks);
  {
    auto r = objects.acquire();
    REQUIRE(r);
    CHECK(r->magic == 0xC0FFEE);
    r->uses += 1;
    r->payload[0] = 42;
    AllocStatus st;
    CHECK_FALSE(objects.acquire(&st));  // one buffer only
    CHECK(st == AllocStatus::exhausted);
  }
  CHECK(resets == 1);
  {
    auto r = objects.acquire();
    REQUIRE(r);
    CHECK(r->uses == 1);  // reused, not rebuilt
    CHECK(r->payload[0] == 0);
    CHECK(built == 1);
    CHECK(validations == 1);
  }
  accept = false;
  {
    auto r = objects.acquire();
    CHECK(built == 2);  // validate refused: rebuilt
    CHECK(r->uses == 0);
  }
}

TEST_CASE("a process killed inside reset leaves an object the next acquirer rebuilds") {
  TestDomain d;
  Segment seg = Segment::create("objects", opts(d, 4u << 20));
  BufferPool pool = BufferPool::create(seg, "sessions", object_config(1));
  pid_t child = test::fork_child([&]() -> int {
    Segment s = Segment::open("objects", {.domain = d.name()});
    BufferPool p = BufferPool::open(s, "sessions");
    ObjectPool<Session>::Hooks hooks;
    hooks.factory = [](void* m) { new (m) Session{0xC0FFEE, 0, {}}; };
    hooks.reset = [](Session& s) {
      s.payload[0] = 0xBAD;  // half-way through a reset...
      ::raise(SIGKILL);
    };
    ObjectPool<Session> objects(p, hooks);
    auto r = objects.acquire();
    if (!r) return 1;
    r->uses = 99;
    return 0;  // the Ref's destructor runs reset and dies there
  });
  test::ChildExit e = test::wait_child(child);
  CHECK(e.signaled);
  CHECK(e.signal == SIGKILL);
  CHECK(pool.reclaim(static_cast<std::uint32_t>(child)) == 1);

  int built = 0;
  ObjectPool<Session>::Hooks hooks;
  hooks.factory = [&](void* m) {
    new (m) Session{0xC0FFEE, 0, {}};
    ++built;
  };
  ObjectPool<Session> objects(pool, hooks);
  auto r = objects.acquire();
  REQUIRE(r);
  CHECK(built == 1);  // not reused: the dead process never finished its reset
  CHECK(r->uses == 0);
  CHECK(r->payload[0] == 0);
}

TEST_CASE("an ObjectPool over a pool whose classes are too small is refused") {
  TestDomain d;
  Segment seg = Segment::create("objects", opts(d, 4u << 20));
  PoolConfig c;
  c.class_sizes = {8};
  BufferPool pool = BufferPool::create(seg, "tiny", c);
  CHECK_THROWS_AS(ObjectPool<Session>{pool}, Error);
}
