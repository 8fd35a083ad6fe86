// BufferPool: size classes and RAII, concurrent allocate/free from 4
// processes with pid+seq patterns (no buffer ever shared by accident),
// handles crossing processes (resolve/retain/release/transfer/adopt),
// exhaustion (fail, reserve, wait, allocate_for), budgets and pressure
// handlers, exact reclaim after SIGKILL (1000 held buffers, and 120 kills at
// random points in alloc/free loops), bad handles and configs, stats().
//
// Not labelled "threads": every test here uses processes only. Children open
// their own Segment and BufferPool (a BufferPool handle inherited over fork
// is never used in a child: its cache belongs to the parent's pid).
#include <doctest/doctest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <numeric>
#include <optional>
#include <ostream>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "ipc/broadcast.hpp"
#include "ipc/channel.hpp"
#include "ipc/pool.hpp"
#include "ipc/segment.hpp"
#include "support.hpp"

using namespace ipc;
using namespace std::chrono_literals;
using ipc::test::Children;
using ipc::test::kPromptMs;
using ipc::test::ms_between;
using ipc::test::ms_since;
using ipc::test::now_ns;
using ipc::test::opts;
using ipc::test::TestDomain;

using ipc::test::check_exit;
using ipc::test::eventually;
using ipc::test::make_board;

using Clock = std::chrono::steady_clock;
using HS = BufferPool::HandleStatus;

namespace {

// Pool tests need room for several pools: 8 MiB unless told otherwise.
constexpr std::size_t kPoolSegmentBytes = 8u << 20;

std::uint32_t my_pid() { return static_cast<std::uint32_t>(::getpid()); }

PoolConfig config(std::vector<std::size_t> classes, std::uint32_t buffers, std::uint32_t cache) {
  PoolConfig c;
  c.class_sizes = std::move(classes);
  c.buffers_per_class = buffers;
  c.cache_per_class = cache;
  return c;
}

// Writes `tag` into every 8-byte word of [p, p+n).
void fill(std::byte* p, std::size_t n, std::uint64_t tag) {
  for (std::size_t i = 0; i + 8 <= n; i += 8) std::memcpy(p + i, &tag, 8);
}
bool holds(const std::byte* p, std::size_t n, std::uint64_t tag) {
  for (std::size_t i = 0; i + 8 <= n; i += 8) {
    std::uint64_t w;
    std::memcpy(&w, p + i, 8);
    if (w != tag) return false;
  }
  return true;
}
std::uint64_t tag_of(std::uint32_t pid, std::uint32_t seq) { return std::uint64_t{pid} << 32 | seq; }

std::uint32_t total_in_use(const PoolStats& s) {
  std::uint32_t n = 0;
  for (const auto& c : s.classes) n += c.in_use;
  return n;
}
std::uint32_t total_cached(const PoolStats& s) {
  std::uint32_t n = 0;
  for (const auto& c : s.classes) n += c.cached;
  return n;
}
const ClientStats* client_of(const PoolStats& s, std::uint32_t pid) {
  for (const auto& c : s.clients)
    if (c.pid == pid) return &c;
  return nullptr;
}
const ClientStats* client_of(const PoolStats&& s, std::uint32_t pid) = delete;  // would dangle

bool less_handle(const BufferHandle& a, const BufferHandle& b) {
  return std::tie(a.pool_id, a.size_class, a.index, a.generation) <
         std::tie(b.pool_id, b.size_class, b.index, b.generation);
}

// Allocates every free buffer of every class (Priority::high, so reserves
// count), checks that class c yields exactly expect_free[c] distinct
// buffers and then `exhausted`, frees them all and flushes. This is the
// "nothing lost, nothing duplicated" proof.
void full_scan(BufferPool& pool, const std::vector<std::uint32_t>& expect_free) {
  REQUIRE(expect_free.size() == pool.class_count());
  for (std::size_t c = 0; c < pool.class_count(); ++c) {
    INFO("class " << c << " (" << pool.class_size(c) << " B)");
    std::vector<Buffer> got;
    std::set<std::uint32_t> indices;
    AllocStatus last = AllocStatus::ok;
    for (;;) {
      Allocation a = pool.allocate(pool.class_size(c), Priority::high);
      if (a.status != AllocStatus::ok) {
        last = a.status;
        break;
      }
      CHECK(a.buffer.handle().size_class == c);
      indices.insert(a.buffer.handle().index);
      fill(a.buffer.data(), a.buffer.capacity(), tag_of(my_pid(), static_cast<std::uint32_t>(got.size())));
      got.push_back(std::move(a.buffer));
      if (got.size() > expect_free[c] + 8) break;  // runaway: buffers appear from nowhere
    }
    CHECK(last == AllocStatus::exhausted);
    CHECK(got.size() == expect_free[c]);
    CHECK(indices.size() == got.size());
    for (std::size_t i = 0; i < got.size(); ++i)
      CHECK(holds(got[i].data(), got[i].capacity(), tag_of(my_pid(), static_cast<std::uint32_t>(i))));
  }
  pool.flush();
}

// The expected free counts when nobody holds anything.
std::vector<std::uint32_t> all_free(const BufferPool& pool) {
  std::vector<std::uint32_t> v;
  for (const auto& c : pool.stats().classes) v.push_back(c.capacity);
  return v;
}

}  // namespace

// ---------------------------------------------------------------------------
// Basics in one process

TEST_CASE("default config: sizes map to the smallest fitting class, too_large beyond, data writable, RAII frees") {
  TestDomain d;
  Segment seg = Segment::create("basic", opts(d, kPoolSegmentBytes));
  const PoolConfig def;
  CHECK(BufferPool::bytes_needed(def) <= seg.size());
  BufferPool pool = BufferPool::create(seg, "pool");
  REQUIRE(pool.class_count() == def.class_sizes.size());
  std::uint64_t capacity_bytes = 0;
  for (std::size_t c = 0; c < def.class_sizes.size(); ++c) {
    CHECK(pool.class_size(c) == def.class_sizes[c]);
    capacity_bytes += def.class_sizes[c] * def.buffers_per_class;
  }
  CHECK(BufferPool::bytes_needed(def) >= capacity_bytes);
  CHECK(pool.pool_id() != 0);
  CHECK(pool.name() == "pool");
  auto obj = seg.find_object("pool");
  REQUIRE(obj.has_value());
  CHECK(obj->info.type == ObjectType::pool);

  PoolStats st = pool.stats();
  CHECK(st.name == "pool");
  CHECK(st.pool_id == pool.pool_id());
  CHECK(st.capacity_bytes == capacity_bytes);
  CHECK(st.claimed_bytes == 0);
  CHECK(st.pressure == PressureLevel::none);
  REQUIRE(st.classes.size() == def.class_sizes.size());
  for (std::size_t c = 0; c < st.classes.size(); ++c) {
    CHECK(st.classes[c].buffer_size == def.class_sizes[c]);
    CHECK(st.classes[c].capacity == def.buffers_per_class);
    CHECK(st.classes[c].reserve == 0);
    CHECK(st.classes[c].in_use == 0);
  }

  struct Case {
    std::size_t request, cls;
  };
  const Case cases[] = {{1, 0},    {63, 0},   {64, 0},   {65, 1},   {256, 1},   {257, 2},   {1000, 2},
                        {1024, 2}, {1025, 3}, {4096, 3}, {4097, 4}, {16384, 4}, {16385, 5}, {65536, 5}};
  {
    std::vector<Buffer> held;
    std::vector<std::uint32_t> per_class(def.class_sizes.size(), 0);
    std::uint32_t seq = 0;
    for (const Case& k : cases) {
      INFO("request " << k.request);
      Allocation a = pool.allocate(k.request);
      REQUIRE(a.status == AllocStatus::ok);
      REQUIRE(static_cast<bool>(a.buffer));
      CHECK(a.buffer.capacity() >= k.request);
      CHECK(a.buffer.capacity() == def.class_sizes[k.cls]);
      const BufferHandle& h = a.buffer.handle();
      CHECK(h.valid());
      CHECK(h.pool_id == pool.pool_id());
      CHECK(h.size_class == k.cls);
      CHECK(h.index < def.buffers_per_class);
      CHECK(reinterpret_cast<std::uintptr_t>(a.buffer.data()) % 64 == 0);
      HS hs = HS::not_held;
      CHECK(pool.resolve(h, &hs) == a.buffer.data());
      CHECK(hs == HS::ok);
      CHECK(pool.holders(h) == 1);
      fill(a.buffer.data(), a.buffer.capacity(), tag_of(my_pid(), seq++));
      ++per_class[k.cls];
      held.push_back(std::move(a.buffer));
      CHECK_FALSE(a.buffer);
    }
    // All written at once: no two buffers overlap, every byte is usable.
    for (std::size_t i = 0; i < held.size(); ++i)
      CHECK(holds(held[i].data(), held[i].capacity(), tag_of(my_pid(), static_cast<std::uint32_t>(i))));
    std::vector<std::pair<std::uintptr_t, std::size_t>> ranges;
    for (const Buffer& b : held) ranges.emplace_back(reinterpret_cast<std::uintptr_t>(b.data()), b.capacity());
    std::sort(ranges.begin(), ranges.end());
    for (std::size_t i = 1; i < ranges.size(); ++i)
      CHECK(ranges[i - 1].first + ranges[i - 1].second <= ranges[i].first);

    st = pool.stats();
    std::uint64_t bytes = 0;
    for (std::size_t c = 0; c < st.classes.size(); ++c) {
      CHECK(st.classes[c].in_use - st.classes[c].cached == per_class[c]);
      bytes += std::uint64_t{per_class[c]} * def.class_sizes[c];
    }
    CHECK(st.claimed_bytes >= bytes);

    for (std::size_t big : {std::size_t{65537}, std::size_t{1} << 20, SIZE_MAX}) {
      INFO("request " << big);
      Allocation a = pool.allocate(big);
      CHECK(a.status == AllocStatus::too_large);
      CHECK_FALSE(a.buffer);
      CHECK(a.buffer.data() == nullptr);
      Allocation b = pool.allocate(big, Priority::high);
      CHECK(b.status == AllocStatus::too_large);
      Allocation t = pool.allocate_for(big, 50ms);
      CHECK(t.status == AllocStatus::too_large);
    }
  }  // every Buffer releases here
  st = pool.stats();
  for (const auto& c : st.classes) CHECK(c.in_use == c.cached);  // what is left idles in this handle's cache
  pool.flush();
  st = pool.stats();
  for (const auto& c : st.classes) {
    CHECK(c.in_use == 0);
    CHECK(c.cached == 0);
  }
  CHECK(st.claimed_bytes == 0);
  full_scan(pool, all_free(pool));
  CHECK(total_in_use(pool.stats()) == 0);
}

TEST_CASE("Buffer moves, detach, reset, and retain/release by this process") {
  TestDomain d;
  Segment seg = Segment::create("moves", opts(d, kPoolSegmentBytes));
  BufferPool pool = BufferPool::create(seg, "pool", config({64, 256}, 8, 0));

  Allocation a = pool.allocate(100);
  REQUIRE(a.status == AllocStatus::ok);
  const BufferHandle h = a.buffer.handle();
  std::byte* data = a.buffer.data();
  Buffer b = std::move(a.buffer);
  CHECK_FALSE(a.buffer);
  CHECK(b.data() == data);
  CHECK(b.handle() == h);
  Buffer c;
  CHECK_FALSE(c);
  c.reset();  // harmless on an empty Buffer
  CHECK(c.detach().valid() == false);
  c = std::move(b);
  CHECK_FALSE(b);
  CHECK(c.handle() == h);
  CHECK(pool.holders(h) == 1);

  // Move-assigning over a live Buffer releases the old reference.
  Allocation a2 = pool.allocate(10);
  REQUIRE(a2.status == AllocStatus::ok);
  const BufferHandle h2 = a2.buffer.handle();
  c = std::move(a2.buffer);
  CHECK(pool.holders(h) == 0);
  HS hs = HS::ok;
  CHECK(pool.resolve(h, &hs) == nullptr);
  CHECK(hs == HS::stale);
  CHECK(pool.holders(h2) == 1);
  CHECK(c.handle() == h2);

  // detach() gives up the Buffer without releasing.
  BufferHandle dh = c.detach();
  CHECK_FALSE(c);
  CHECK(dh == h2);
  CHECK(pool.holders(h2) == 1);
  CHECK(pool.stats().classes[0].in_use == 1);
  CHECK(pool.release(dh) == HS::ok);
  CHECK(pool.holders(h2) == 0);
  CHECK(pool.stats().classes[0].in_use == 0);

  // A second reference by this very process: the buffer lives until both go.
  Allocation a3 = pool.allocate(200);
  REQUIRE(a3.status == AllocStatus::ok);
  const BufferHandle h3 = a3.buffer.handle();
  fill(a3.buffer.data(), a3.buffer.capacity(), 0xabcdef);
  CHECK(pool.retain(h3) == HS::ok);
  CHECK(pool.holders(h3) == 2);
  a3.buffer.reset();
  CHECK(pool.holders(h3) == 1);
  std::byte* p3 = pool.resolve(h3, &hs);
  REQUIRE(p3 != nullptr);
  CHECK(hs == HS::ok);
  CHECK(holds(p3, 256, 0xabcdef));
  CHECK(pool.stats().classes[1].in_use == 1);
  CHECK(pool.release(h3) == HS::ok);
  CHECK(pool.holders(h3) == 0);
  CHECK(pool.stats().classes[1].in_use == 0);
  CHECK(pool.resolve(h3) == nullptr);
}

// ---------------------------------------------------------------------------
// Many processes

namespace {

struct ChurnBoard {
  std::atomic<int> go;
  std::atomic<std::uint64_t> allocs, frees, exhausted;
  std::atomic<int> corruptions;
  // First corruption seen, for the failure message.
  std::atomic<std::uint32_t> bad_class, bad_index, bad_pid;
  std::atomic<std::uint64_t> bad_expected, bad_found;
};

constexpr std::size_t kChurnClasses[] = {64, 256, 1024, 4096};

int churn(const std::string& domain, ChurnBoard& b, unsigned seed, int ops) {
  Segment s = Segment::open("many", {.domain = domain});
  BufferPool p = BufferPool::open(s, "pool");
  std::mt19937 rng(seed);
  const std::uint32_t me = my_pid();
  struct Held {
    Buffer buf;
    std::uint64_t tag;
  };
  std::vector<Held> held;
  std::uint64_t allocs = 0, frees = 0, exhausted = 0;
  auto verify = [&](const Held& h) {
    if (holds(h.buf.data(), h.buf.capacity(), h.tag)) return true;
    if (b.corruptions.fetch_add(1) == 0) {
      std::uint64_t found;
      std::memcpy(&found, h.buf.data(), 8);
      b.bad_class.store(h.buf.handle().size_class);
      b.bad_index.store(h.buf.handle().index);
      b.bad_pid.store(me);
      b.bad_expected.store(h.tag);
      b.bad_found.store(found);
    }
    return false;
  };
  if (!eventually([&] { return b.go.load() != 0; })) return 1;
  const auto deadline = Clock::now() + 20s;
  for (int op = 0; op < ops; ++op) {
    if (Clock::now() > deadline) return 2;
    const bool alloc = held.empty() || (held.size() < 16 && rng() % 2 == 0);
    if (alloc) {
      const std::size_t cls = rng() % 4;
      const std::size_t lo = cls == 0 ? 1 : kChurnClasses[cls - 1] + 1;
      const std::size_t size = lo + rng() % (kChurnClasses[cls] - lo + 1);
      Allocation a = p.allocate(size, rng() % 8 == 0 ? Priority::high : Priority::normal);
      if (a.status == AllocStatus::exhausted) {
        ++exhausted;
        continue;
      }
      if (a.status != AllocStatus::ok) return 10 + static_cast<int>(a.status);
      if (a.buffer.capacity() != kChurnClasses[cls]) return 3;
      if (a.buffer.handle().size_class != cls) return 4;
      if (p.resolve(a.buffer.handle()) != a.buffer.data()) return 5;
      ++allocs;
      Held h{std::move(a.buffer), tag_of(me, static_cast<std::uint32_t>(op))};
      fill(h.buf.data(), h.buf.capacity(), h.tag);
      held.push_back(std::move(h));
    } else {
      const std::size_t i = rng() % held.size();
      if (rng() % 8 == 0)
        for (const Held& h : held)
          if (!verify(h)) return 6;
      if (!verify(held[i])) return 6;
      if (rng() % 4 == 0) {
        BufferHandle h = held[i].buf.detach();
        if (p.release(h) != HS::ok) return 7;
      } else {
        held[i].buf.reset();
      }
      held.erase(held.begin() + static_cast<std::ptrdiff_t>(i));
      ++frees;
    }
  }
  for (const Held& h : held)
    if (!verify(h)) return 6;
  frees += held.size();
  held.clear();
  b.allocs.fetch_add(allocs);
  b.frees.fetch_add(frees);
  b.exhausted.fetch_add(exhausted);
  return 0;  // the handle's destructor returns its cache
}

}  // namespace

TEST_CASE("4 processes allocate and free concurrently: every buffer keeps its owner's pid+seq pattern") {
  TestDomain d;
  Segment seg = Segment::create("many", opts(d, kPoolSegmentBytes));
  PoolConfig cfg = config({64, 256, 1024, 4096}, 12, 8);  // 4 x up to 16 held: classes run out
  BufferPool pool = BufferPool::create(seg, "pool", cfg);
  ChurnBoard& b = make_board<ChurnBoard>(seg);
  constexpr int kProcs = 4, kOps = 20000;
  const unsigned seed = test::seed();
  INFO("seed " << seed);
  Children kids{std::chrono::seconds(20)};
  std::vector<pid_t> pids;
  for (int k = 0; k < kProcs; ++k) pids.push_back(kids.spawn([&, k] { return churn(d.name(), b, seed + k, kOps); }));
  b.go.store(1);
  for (pid_t p : pids) check_exit(kids.wait(p, 30s), "churn child");
  INFO("first corruption: class " << b.bad_class.load() << " index " << b.bad_index.load() << " seen by pid "
                                  << b.bad_pid.load() << " expected " << std::hex << b.bad_expected.load() << " found "
                                  << b.bad_found.load() << std::dec);
  CHECK(b.corruptions.load() == 0);
  MESSAGE(b.allocs.load() << " allocations, " << b.exhausted.load() << " exhausted");
  CHECK(b.allocs.load() > 0);
  WARN(b.exhausted.load() > 0);  // contention made classes run out (needs the children to overlap in time)
  CHECK(b.allocs.load() == b.frees.load());

  pool.flush();
  CHECK(pool.reclaim_dead() == 0);  // every child freed everything and closed its handle
  PoolStats st = pool.stats();
  std::uint64_t allocs = 0, frees = 0, failures = 0;
  for (std::size_t c = 0; c < st.classes.size(); ++c) {
    INFO("class " << c);
    const ClassStats& cs = st.classes[c];
    CHECK(cs.in_use == 0);
    CHECK(cs.cached == 0);
    CHECK(cs.peak > 0);
    CHECK(cs.peak <= cs.capacity);
    CHECK(cs.allocs == cs.frees);
    allocs += cs.allocs;
    frees += cs.frees;
    failures += cs.failures;
  }
  // Counters are published by handles on close: all children closed theirs.
  CHECK(allocs == b.allocs.load());
  CHECK(frees == b.frees.load());
  CHECK(failures == b.exhausted.load());
  CHECK(st.claimed_bytes == 0);
  for (const ClientStats& c : st.clients) {
    INFO("client " << c.pid);
    CHECK(c.buffers == 0);
    CHECK(c.bytes == 0);
  }
  CHECK(st.fragmentation >= 0.0);
  CHECK(st.fragmentation <= 1.0);
  full_scan(pool, all_free(pool));
}

// ---------------------------------------------------------------------------
// Handles across processes

namespace {

struct HandoffBoard {
  BufferHandle h;
  std::atomic<int> step;
  std::atomic<int> failed_at;
};

constexpr std::uint8_t byte_at(std::size_t i) { return static_cast<std::uint8_t>(i * 7 + 3); }
bool has_pattern(const std::byte* p, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i)
    if (static_cast<std::uint8_t>(p[i]) != byte_at(i)) return false;
  return true;
}
void write_pattern(std::byte* p, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) p[i] = static_cast<std::byte>(byte_at(i));
}

void handoff_scenario(std::uint32_t cache) {
  TestDomain d;
  Segment seg = Segment::create("handoff", opts(d, kPoolSegmentBytes));
  BufferPool pool = BufferPool::create(seg, "pool", config({256, 1024}, 8, cache));
  HandoffBoard& b = make_board<HandoffBoard>(seg);
  Children kids{std::chrono::seconds(20)};

  Allocation a = pool.allocate(1000);
  REQUIRE(a.status == AllocStatus::ok);
  write_pattern(a.buffer.data(), 1000);
  const BufferHandle h = a.buffer.handle();
  b.h = h;
  b.step.store(1);

  pid_t child = kids.spawn([&] {
    Segment s = Segment::open("handoff", {.domain = d.name()});  // another address
    BufferPool p = BufferPool::open(s, "pool");
    auto fail = [&](int code) {
      b.failed_at.store(code);
      return code;
    };
    if (p.pool_id() != b.h.pool_id) return fail(1);
    if (!eventually([&] { return b.step.load() == 1; })) return fail(2);
    const BufferHandle mine = b.h;
    HS st = HS::not_held;
    std::byte* data = p.resolve(mine, &st);
    if (data == nullptr || st != HS::ok) return fail(3);
    if (!has_pattern(data, 1000)) return fail(4);
    if (p.retain(mine) != HS::ok) return fail(5);
    if (p.holders(mine) != 2) return fail(6);
    b.step.store(2);
    if (!eventually([&] { return b.step.load() == 3; })) return fail(7);
    // The sender has released: the buffer is ours alone and unchanged.
    if (p.holders(mine) != 1) return fail(8);
    data = p.resolve(mine, &st);
    if (data == nullptr || st != HS::ok || !has_pattern(data, 1000)) return fail(9);
    if (p.release(mine) != HS::ok) return fail(10);
    if (p.holders(mine) != 0) return fail(11);
    if (p.resolve(mine, &st) != nullptr || st != HS::stale) return fail(12);
    st = p.release(mine);
    if (st != HS::stale && st != HS::not_held) return fail(13);
    b.step.store(4);
    return 0;
  });
  REQUIRE(eventually([&] { return b.step.load() >= 2 || b.failed_at.load() != 0; }));
  INFO("child failed at step " << b.failed_at.load());
  REQUIRE(b.step.load() == 2);
  CHECK(pool.holders(h) == 2);
  auto held = pool.held_by(static_cast<std::uint32_t>(child));
  CHECK(std::find(held.begin(), held.end(), h) != held.end());

  a.buffer.reset();  // the sender's reference goes
  CHECK(pool.holders(h) == 1);
  HS st = HS::not_held;
  std::byte* p = pool.resolve(h, &st);
  CHECK(st == HS::ok);
  REQUIRE(p != nullptr);
  CHECK(has_pattern(p, 1000));
  CHECK(pool.release(h) == HS::not_held);  // this process holds nothing any more
  CHECK(pool.holders(h) == 1);

  b.step.store(3);
  check_exit(kids.wait(child));
  CHECK(b.failed_at.load() == 0);
  CHECK(b.step.load() == 4);
  CHECK(pool.holders(h) == 0);
  CHECK(pool.resolve(h, &st) == nullptr);
  CHECK(st == HS::stale);
  CHECK(pool.retain(h) == HS::stale);
  pool.flush();
  PoolStats s = pool.stats();
  CHECK(total_in_use(s) == 0);
  CHECK(s.claimed_bytes == 0);
  CHECK(pool.reclaim_dead() == 0);
  full_scan(pool, all_free(pool));
}

}  // namespace

TEST_CASE("a handle sent to another process (cache off): resolve, retain, sender releases, receiver frees") {
  handoff_scenario(0);
}

TEST_CASE("a handle sent to another process (cache on): resolve, retain, sender releases, receiver frees") {
  handoff_scenario(8);
}

TEST_CASE("transfer() moves a reference to another pid, adopt() takes one over as a Buffer") {
  TestDomain d;
  Segment seg = Segment::create("adopt", opts(d, kPoolSegmentBytes));
  BufferPool pool = BufferPool::create(seg, "pool", config({256}, 8, 4));
  struct Board {
    BufferHandle a, b;
    std::atomic<int> step, failed_at;
  };
  Board& bd = make_board<Board>(seg);
  const std::uint32_t me = my_pid();
  Children kids{std::chrono::seconds(20)};

  Allocation aa = pool.allocate(256);
  Allocation ab = pool.allocate(256);
  REQUIRE(aa.status == AllocStatus::ok);
  REQUIRE(ab.status == AllocStatus::ok);
  write_pattern(aa.buffer.data(), 256);
  write_pattern(ab.buffer.data(), 200);
  const BufferHandle ha = aa.buffer.detach();
  const BufferHandle hb = ab.buffer.detach();
  bd.a = ha;
  bd.b = hb;

  pid_t child = kids.spawn([&] {
    Segment s = Segment::open("adopt", {.domain = d.name()});
    BufferPool p = BufferPool::open(s, "pool");
    const std::uint32_t self = my_pid();
    auto fail = [&](int code) {
      bd.failed_at.store(code);
      return code;
    };
    if (!eventually([&] { return bd.step.load() == 1; })) return fail(1);
    HS st = HS::stale;
    // a was transfer()ed to us by the parent: adopt our own reference.
    std::optional<Buffer> ba = p.adopt(bd.a, self, &st);
    if (!ba || st != HS::ok) return fail(2);
    if (ba->handle() != bd.a || ba->capacity() != 256 || !has_pattern(ba->data(), 256)) return fail(3);
    if (p.resolve(bd.a) != ba->data()) return fail(4);
    // b is still the parent's reference: adopt takes it over.
    std::optional<Buffer> bb = p.adopt(bd.b, static_cast<std::uint32_t>(::getppid()), &st);
    if (!bb || st != HS::ok) return fail(5);
    if (!has_pattern(bb->data(), 200)) return fail(6);
    if (p.holders(bd.b) != 1) return fail(7);
    // Adopting again from the parent: it holds nothing any more.
    std::optional<Buffer> again = p.adopt(bd.b, static_cast<std::uint32_t>(::getppid()), &st);
    if (again || st != HS::not_held) return fail(8);
    bd.step.store(2);
    if (!eventually([&] { return bd.step.load() == 3; })) return fail(9);
    return 0;  // both Buffers release on the way out
  });

  const std::uint32_t kid = static_cast<std::uint32_t>(child);
  CHECK(pool.transfer(ha, me, kid) == HS::ok);
  CHECK(pool.holders(ha) == 1);
  CHECK(pool.transfer(ha, me, kid) == HS::not_held);  // we no longer hold it
  CHECK(pool.release(ha, me) == HS::not_held);
  CHECK(pool.holders(ha) == 1);
  auto held = pool.held_by(kid);
  CHECK(std::find(held.begin(), held.end(), ha) != held.end());
  // transfer there and back between two foreign holder ids works too.
  CHECK(pool.transfer(ha, kid, 4000001) == HS::ok);
  CHECK(pool.transfer(ha, 4000001, kid) == HS::ok);
  CHECK(pool.holders(ha) == 1);
  bd.step.store(1);

  REQUIRE(eventually([&] { return bd.step.load() == 2 || bd.failed_at.load() != 0; }));
  INFO("child failed at step " << bd.failed_at.load());
  REQUIRE(bd.step.load() == 2);
  CHECK(pool.holders(hb) == 1);
  CHECK(pool.release(hb, me) == HS::not_held);  // adopt moved our reference to the child
  HS st = HS::ok;
  CHECK_FALSE(pool.adopt(hb, me, &st).has_value());
  CHECK(st == HS::not_held);
  held = pool.held_by(kid);
  CHECK(std::find(held.begin(), held.end(), hb) != held.end());
  CHECK(std::find(held.begin(), held.end(), ha) != held.end());

  bd.step.store(3);
  check_exit(kids.wait(child));
  CHECK(pool.holders(ha) == 0);
  CHECK(pool.holders(hb) == 0);
  CHECK(pool.resolve(ha, &st) == nullptr);
  CHECK(st == HS::stale);
  CHECK_FALSE(pool.adopt(hb, kid, &st).has_value());
  CHECK(st == HS::stale);
  CHECK(pool.transfer(ha, kid, me) == HS::stale);
  pool.flush();
  CHECK(total_in_use(pool.stats()) == 0);
  CHECK(pool.reclaim_dead() == 0);
  full_scan(pool, all_free(pool));
}

TEST_CASE(
    "a holder SIGKILLed: its references are dropped by reclaim, the buffer freed only when nobody else holds it") {
  TestDomain d;
  Segment seg = Segment::create("holderkill", opts(d, kPoolSegmentBytes));
  BufferPool pool = BufferPool::create(seg, "pool", config({512}, 8, 0));
  struct Board {
    BufferHandle h[2];
    std::atomic<int> holding;
  };
  Board& b = make_board<Board>(seg);
  Children kids{std::chrono::seconds(20)};

  Allocation keep = pool.allocate(512);  // we keep our reference to this one
  Allocation give = pool.allocate(512);  // and drop ours to this one
  REQUIRE(keep.status == AllocStatus::ok);
  REQUIRE(give.status == AllocStatus::ok);
  write_pattern(keep.buffer.data(), 512);
  b.h[0] = keep.buffer.handle();
  b.h[1] = give.buffer.handle();
  pid_t child = kids.spawn([&] {
    Segment s = Segment::open("holderkill", {.domain = d.name()});
    BufferPool p = BufferPool::open(s, "pool");
    if (p.retain(b.h[0]) != HS::ok || p.retain(b.h[1]) != HS::ok) return 1;
    b.holding.store(1);
    std::this_thread::sleep_for(30s);
    return 2;
  });
  REQUIRE(eventually([&] { return b.holding.load() != 0; }));
  const BufferHandle hk = b.h[0], hg = b.h[1];
  give.buffer.reset();
  CHECK(pool.holders(hg) == 1);
  CHECK(pool.holders(hk) == 2);
  kids.kill(child);
  const std::uint32_t kid = static_cast<std::uint32_t>(child);
  CHECK(pool.holders(hg) == 1);  // nobody noticed yet
  auto held = pool.held_by(kid);
  std::sort(held.begin(), held.end(), less_handle);
  std::vector<BufferHandle> expect{hk, hg};
  std::sort(expect.begin(), expect.end(), less_handle);
  CHECK(held == expect);

  CHECK(pool.reclaim_dead() == 1);  // hg freed; hk only loses the child's reference
  CHECK(pool.holders(hg) == 0);
  HS st = HS::ok;
  CHECK(pool.resolve(hg, &st) == nullptr);
  CHECK(st == HS::stale);
  CHECK(pool.holders(hk) == 1);
  CHECK(pool.resolve(hk) == keep.buffer.data());
  CHECK(has_pattern(keep.buffer.data(), 512));
  CHECK(pool.held_by(kid).empty());
  CHECK(pool.reclaim_dead() == 0);
  CHECK(pool.reclaim(kid) == 0);
  CHECK(pool.stats().classes[0].in_use == 1);
  keep.buffer.reset();
  CHECK(pool.holders(hk) == 0);
  CHECK(pool.stats().classes[0].in_use == 0);
  full_scan(pool, all_free(pool));
}

// ---------------------------------------------------------------------------
// Exhaustion

TEST_CASE("policy fail: exhausted once every buffer of the class is taken, other classes unaffected") {
  TestDomain d;
  Segment seg = Segment::create("exhaust", opts(d, kPoolSegmentBytes));
  BufferPool pool = BufferPool::create(seg, "pool", config({64, 256}, 10, 0));
  std::vector<Buffer> held;
  for (int i = 0; i < 10; ++i) {
    Allocation a = pool.allocate(64);
    REQUIRE(a.status == AllocStatus::ok);
    held.push_back(std::move(a.buffer));
  }
  auto t0 = Clock::now();
  Allocation none = pool.allocate(64);
  CHECK(none.status == AllocStatus::exhausted);
  CHECK_FALSE(none.buffer);
  CHECK(pool.allocate(1, Priority::high).status == AllocStatus::exhausted);  // no reserve configured
  CHECK_PROMPT(ms_since(t0), kPromptMs);                                     // fail policy: at once
  PoolStats st = pool.stats();
  CHECK(st.classes[0].in_use == 10);
  CHECK(st.classes[1].in_use == 0);  // no silent fall-back to a bigger class
  {
    Allocation other = pool.allocate(100);
    REQUIRE(other.status == AllocStatus::ok);
    CHECK(other.buffer.capacity() == 256);
  }
  held.pop_back();
  Allocation again = pool.allocate(64);
  CHECK(again.status == AllocStatus::ok);
  CHECK(pool.allocate(64).status == AllocStatus::exhausted);
  pool.flush();
  st = pool.stats();
  CHECK(st.classes[0].failures == 3);
  CHECK(st.classes[0].peak == 10);
  CHECK(st.classes[0].allocs == 11);
}

TEST_CASE("per-handle cache: one handle gets the whole class, cached buffers are missing for others until flush()") {
  TestDomain d;
  Segment seg = Segment::create("cache", opts(d, kPoolSegmentBytes));
  BufferPool pool = BufferPool::create(seg, "pool", config({64}, 20, 8));
  struct Board {
    std::atomic<int> got;
  };
  Board& b = make_board<Board>(seg);
  Children kids{std::chrono::seconds(20)};
  auto grab_all = [&] {
    return kids.spawn([&] {
      Segment s = Segment::open("cache", {.domain = d.name()});
      BufferPool p = BufferPool::open(s, "pool");
      std::vector<Buffer> mine;
      for (int i = 0; i < 100; ++i) {
        Allocation a = p.allocate(64);
        if (a.status == AllocStatus::exhausted) break;
        if (a.status != AllocStatus::ok) return 1;
        mine.push_back(std::move(a.buffer));
      }
      b.got.store(static_cast<int>(mine.size()));
      return 0;
    });
  };

  {
    std::vector<Buffer> held;
    for (int i = 0; i < 20; ++i) {
      Allocation a = pool.allocate(64);
      REQUIRE(a.status == AllocStatus::ok);
      held.push_back(std::move(a.buffer));
    }
    CHECK(pool.allocate(64).status == AllocStatus::exhausted);
    std::set<std::uint32_t> idx;
    for (const Buffer& x : held) idx.insert(x.handle().index);
    CHECK(idx.size() == 20);
  }
  PoolStats st = pool.stats();
  const std::uint32_t cached = st.classes[0].cached;
  CHECK(cached <= 8);
  CHECK(st.classes[0].in_use == cached);
  MESSAGE(cached << " buffers idle in this handle's cache after freeing 20");

  pid_t k = grab_all();
  check_exit(kids.wait(k));
  CHECK(b.got.load() == static_cast<int>(20 - cached));

  pool.flush();
  st = pool.stats();
  CHECK(st.classes[0].cached == 0);
  CHECK(st.classes[0].in_use == 0);
  b.got.store(0);
  k = grab_all();
  check_exit(kids.wait(k));
  CHECK(b.got.load() == 20);
  CHECK(pool.stats().classes[0].in_use == 0);  // the child's handle returned its cache on close
}

TEST_CASE("reserve: normal priority is refused the last buffers, high priority still gets them") {
  TestDomain d;
  Segment seg = Segment::create("reserve", opts(d, kPoolSegmentBytes));
  PoolConfig cfg = config({128}, 10, 0);
  cfg.reserve_per_class = 3;
  BufferPool pool = BufferPool::create(seg, "pool", cfg);
  CHECK(pool.stats().classes[0].reserve == 3);
  std::vector<Buffer> held;
  for (int i = 0; i < 7; ++i) {
    Allocation a = pool.allocate(128);
    REQUIRE(a.status == AllocStatus::ok);
    held.push_back(std::move(a.buffer));
  }
  CHECK(pool.allocate(128).status == AllocStatus::exhausted);
  CHECK(pool.allocate_for(128, 20ms).status != AllocStatus::ok);
  for (int i = 0; i < 3; ++i) {
    Allocation a = pool.allocate(128, Priority::high);
    REQUIRE(a.status == AllocStatus::ok);
    held.push_back(std::move(a.buffer));
  }
  CHECK(pool.allocate(128, Priority::high).status == AllocStatus::exhausted);
  CHECK(pool.stats().classes[0].in_use == 10);
  held.erase(held.begin());  // one free buffer: it is reserve
  CHECK(pool.allocate(128).status == AllocStatus::exhausted);
  Allocation hi = pool.allocate(128, Priority::high);
  CHECK(hi.status == AllocStatus::ok);
  held.clear();
  hi.buffer.reset();
  CHECK(pool.stats().classes[0].in_use == 0);
}

TEST_CASE("policy wait and allocate_for: woken by another process's free or reclaim, timed_out otherwise") {
  TestDomain d;
  Segment seg = Segment::create("wait", opts(d, kPoolSegmentBytes));
  PoolConfig cfg = config({256}, 4, 0);
  cfg.policy = ExhaustionPolicy::wait;
  cfg.wait_timeout = 10s;
  BufferPool wpool = BufferPool::create(seg, "waitpool", cfg);
  PoolConfig short_cfg = cfg;
  short_cfg.wait_timeout = 150ms;
  BufferPool spool = BufferPool::create(seg, "shortpool", short_cfg);
  BufferPool fpool = BufferPool::create(seg, "failpool", config({256}, 4, 0));
  struct Board {
    std::atomic<int> waiting, result, holding;  // result: AllocStatus + 1
    std::atomic<std::int64_t> got_ns;
  };
  Board& b = make_board<Board>(seg);
  Children kids{std::chrono::seconds(20)};
  auto waiter = [&](const char* pool_name, bool use_for) {
    b.waiting.store(0);
    b.result.store(0);
    return kids.spawn([&, pool_name, use_for] {
      Segment s = Segment::open("wait", {.domain = d.name()});
      BufferPool p = BufferPool::open(s, pool_name);
      b.waiting.store(1);
      Allocation a = use_for ? p.allocate_for(200, 10s) : p.allocate(200);
      b.got_ns.store(now_ns());
      b.result.store(static_cast<int>(a.status) + 1);
      if (a.status != AllocStatus::ok) return 1;
      fill(a.buffer.data(), a.buffer.capacity(), 42);
      return 0;
    });
  };
  auto result = [&] {
    int r = b.result.load();
    return r == 0 ? std::string("(none)") : std::string(to_string(static_cast<AllocStatus>(r - 1)));
  };
  auto take_all = [](BufferPool& p, std::vector<Buffer>& into) {
    while (into.size() < 4) {
      Allocation a = p.allocate_for(256, 5s);
      REQUIRE(a.status == AllocStatus::ok);
      into.push_back(std::move(a.buffer));
    }
  };

  SUBCASE("policy wait: allocate() sleeps until another process frees") {
    std::vector<Buffer> held;
    take_all(wpool, held);
    pid_t w = waiter("waitpool", false);
    REQUIRE(eventually([&] { return b.waiting.load() != 0; }));
    std::this_thread::sleep_for(200ms);
    CHECK(b.result.load() == 0);  // still asleep
    std::int64_t freed_ns = now_ns();
    held.pop_back();
    check_exit(kids.wait(w));
    INFO("waiter got " << result());
    CHECK(b.result.load() == static_cast<int>(AllocStatus::ok) + 1);
    CHECK_PROMPT(ms_between(freed_ns, b.got_ns.load()), kPromptMs);
    CHECK(wpool.stats().classes[0].in_use == 3);
  }
  SUBCASE("policy fail: allocate_for() sleeps until another process frees") {
    std::vector<Buffer> held;
    take_all(fpool, held);
    auto t0 = Clock::now();
    CHECK(fpool.allocate(256).status == AllocStatus::exhausted);
    CHECK_PROMPT(ms_since(t0), kPromptMs);
    pid_t w = waiter("failpool", true);
    REQUIRE(eventually([&] { return b.waiting.load() != 0; }));
    std::this_thread::sleep_for(200ms);
    CHECK(b.result.load() == 0);
    std::int64_t freed_ns = now_ns();
    held.erase(held.begin());
    check_exit(kids.wait(w));
    INFO("waiter got " << result());
    CHECK(b.result.load() == static_cast<int>(AllocStatus::ok) + 1);
    CHECK_PROMPT(ms_between(freed_ns, b.got_ns.load()), kPromptMs);
  }
  SUBCASE("a waiter is woken when the holder is SIGKILLed and reclaimed") {
    pid_t holder = kids.spawn([&] {
      Segment s = Segment::open("wait", {.domain = d.name()});
      BufferPool p = BufferPool::open(s, "waitpool");
      std::vector<Buffer> mine;
      for (int i = 0; i < 4; ++i) {
        Allocation a = p.allocate(256);
        if (a.status != AllocStatus::ok) return 1;
        mine.push_back(std::move(a.buffer));
      }
      b.holding.store(1);
      std::this_thread::sleep_for(30s);
      return 2;
    });
    REQUIRE(eventually([&] { return b.holding.load() != 0; }));
    pid_t w = waiter("waitpool", true);
    REQUIRE(eventually([&] { return b.waiting.load() != 0; }));
    std::this_thread::sleep_for(150ms);
    CHECK(b.result.load() == 0);
    kids.kill(holder);
    std::int64_t reclaimed_ns = now_ns();
    CHECK(wpool.reclaim(static_cast<std::uint32_t>(holder)) == 4);
    check_exit(kids.wait(w));
    INFO("waiter got " << result());
    CHECK(b.result.load() == static_cast<int>(AllocStatus::ok) + 1);
    CHECK_PROMPT(ms_between(reclaimed_ns, b.got_ns.load()), kPromptMs);
    CHECK(wpool.stats().classes[0].in_use == 0);
  }
  SUBCASE("nobody frees: timed_out after the timeout, not before") {
    std::vector<Buffer> held, sheld;
    take_all(wpool, held);
    take_all(spool, sheld);
    auto t0 = Clock::now();
    Allocation a = wpool.allocate_for(200, 150ms);
    double ms = ms_since(t0);
    CHECK(a.status == AllocStatus::timed_out);
    CHECK_FALSE(a.buffer);
    CHECK(ms >= 100.0);
    CHECK_PROMPT(ms, kPromptMs);
    t0 = Clock::now();
    Allocation s = spool.allocate(200);  // the pool's wait_timeout: 150 ms
    ms = ms_since(t0);
    CHECK(s.status == AllocStatus::timed_out);
    CHECK(ms >= 100.0);
    CHECK_PROMPT(ms, kPromptMs);
    t0 = Clock::now();
    CHECK(wpool.allocate_for(200, 0ns).status != AllocStatus::ok);
    CHECK_PROMPT(ms_since(t0), kPromptMs);
  }
}

// ---------------------------------------------------------------------------
// Budgets and pressure

TEST_CASE("budgets: the pool budget and the per-client budget give over_budget") {
  TestDomain d;
  Segment seg = Segment::create("budget", opts(d, kPoolSegmentBytes));
  Children kids{std::chrono::seconds(20)};

  SUBCASE("pool budget_bytes") {
    PoolConfig cfg = config({64, 1024}, 20, 0);
    cfg.budget_bytes = 3000;
    BufferPool pool = BufferPool::create(seg, "pool", cfg);
    Allocation a1 = pool.allocate(1024), a2 = pool.allocate(1024);
    REQUIRE(a1.status == AllocStatus::ok);
    REQUIRE(a2.status == AllocStatus::ok);
    Allocation a3 = pool.allocate(1024);  // 3072 > 3000
    CHECK(a3.status == AllocStatus::over_budget);
    CHECK_FALSE(a3.buffer);
    Allocation small = pool.allocate(64);  // 2112 fits
    CHECK(small.status == AllocStatus::ok);
    CHECK(pool.allocate(1000).status == AllocStatus::over_budget);
    CHECK(pool.stats().claimed_bytes == 2112);
    // The budget is pool-wide: another process is refused as well.
    pid_t k = kids.spawn([&] {
      Segment s = Segment::open("budget", {.domain = d.name()});
      BufferPool p = BufferPool::open(s, "pool");
      return p.allocate(1024).status == AllocStatus::over_budget ? 0 : 1;
    });
    check_exit(kids.wait(k));
    a1.buffer.reset();
    Allocation a4 = pool.allocate(1024);
    CHECK(a4.status == AllocStatus::ok);
    CHECK(pool.stats().claimed_bytes == 2112);
  }
  SUBCASE("client_budget_bytes: per process") {
    PoolConfig cfg = config({64, 1024}, 20, 0);
    cfg.client_budget_bytes = 4096;
    BufferPool pool = BufferPool::create(seg, "pool", cfg);
    std::vector<Buffer> held;
    for (int i = 0; i < 4; ++i) {
      Allocation a = pool.allocate(1024);
      REQUIRE(a.status == AllocStatus::ok);
      held.push_back(std::move(a.buffer));
    }
    CHECK(pool.allocate(1024).status == AllocStatus::over_budget);
    CHECK(pool.allocate(64).status == AllocStatus::over_budget);
    pid_t k = kids.spawn([&] {
      Segment s = Segment::open("budget", {.domain = d.name()});
      BufferPool p = BufferPool::open(s, "pool");
      std::vector<Buffer> mine;
      for (int i = 0; i < 4; ++i) {
        Allocation a = p.allocate(1024);
        if (a.status != AllocStatus::ok) return 1;
        mine.push_back(std::move(a.buffer));
      }
      if (p.allocate(1).status != AllocStatus::over_budget) return 2;
      mine.pop_back();
      if (p.allocate(64).status != AllocStatus::ok) return 3;
      return 0;
    });
    check_exit(kids.wait(k));
    const PoolStats st = pool.stats();
    const ClientStats* me = client_of(st, my_pid());
    REQUIRE(me != nullptr);
    CHECK(me->buffers == 4);
    CHECK(me->bytes == 4096);
    held.pop_back();
    Allocation a = pool.allocate(1024);
    CHECK(a.status == AllocStatus::ok);
    CHECK(pool.allocate(64).status == AllocStatus::over_budget);
  }
}

namespace {

PressureLevel expected_level(double fraction) {
  PressureLevel l = PressureLevel::none;
  for (int i = 0; i < 4; ++i)
    if (fraction >= kPressureThresholds[i]) l = static_cast<PressureLevel>(i + 1);
  return l;
}
bool on_threshold(double fraction) {
  for (double t : kPressureThresholds)
    if (std::abs(fraction - t) < 1e-9) return true;
  return false;
}

}  // namespace

TEST_CASE("pressure handlers fire highest priority first on every level change, with (now, before)") {
  TestDomain d;
  Segment seg = Segment::create("pressure", opts(d, kPoolSegmentBytes));
  using PL = PressureLevel;
  struct Call {
    int priority;
    PressureLevel now, before;
    int count;  // buffers held once the operation that fired it completes
  };
  std::vector<Call> calls;  // declared before the pools: handlers may run until they close
  std::vector<std::pair<PL, PL>> seen;
  int count = 0;
  BufferPool pool = BufferPool::create(seg, "pool", config({1024}, 100, 0));
  for (int prio : {1, 10, 5})
    pool.on_pressure(prio, [&, prio](PressureLevel now, PressureLevel before) {
      calls.push_back({prio, now, before, count});
    });
  CHECK(pool.pressure() == PressureLevel::none);

  std::vector<Buffer> held;
  auto check_level = [&] {
    const double f = count / 100.0;
    INFO(count << " of 100 buffers held");
    if (on_threshold(f))
      CHECK((pool.pressure() == expected_level(f) || pool.pressure() == expected_level(f - 0.001)));
    else
      CHECK(pool.pressure() == expected_level(f));
    CHECK(pool.stats().pressure == pool.pressure());
  };
  for (int i = 0; i < 100; ++i) {
    ++count;
    Allocation a = pool.allocate(1024);
    REQUIRE(a.status == AllocStatus::ok);
    held.push_back(std::move(a.buffer));
    check_level();
  }
  CHECK(pool.pressure() == PressureLevel::critical);
  while (!held.empty()) {
    --count;
    held.pop_back();
    check_level();
  }
  CHECK(pool.pressure() == PressureLevel::none);

  const std::pair<PL, PL> changes[] = {{PL::low, PL::none},      {PL::medium, PL::low},    {PL::high, PL::medium},
                                       {PL::critical, PL::high}, {PL::high, PL::critical}, {PL::medium, PL::high},
                                       {PL::low, PL::medium},    {PL::none, PL::low}};
  // Where each change must fire (the threshold crossing, either side of it).
  const std::pair<int, int> at[] = {{60, 61}, {80, 81}, {90, 91}, {95, 96}, {94, 95}, {89, 90}, {79, 80}, {59, 60}};
  REQUIRE(calls.size() == 3 * std::size(changes));
  for (std::size_t i = 0; i < std::size(changes); ++i) {
    INFO("change " << i << ": " << changes[i].first << " from " << changes[i].second);
    for (int j = 0; j < 3; ++j) {
      const Call& c = calls[3 * i + j];
      CHECK(c.priority == (j == 0 ? 10 : j == 1 ? 5 : 1));
      CHECK(c.now == changes[i].first);
      CHECK(c.before == changes[i].second);
      CHECK(c.count >= at[i].first);
      CHECK(c.count <= at[i].second);
    }
  }

  // With a budget, utilisation is bytes claimed / budget.
  PoolConfig bcfg = config({1024}, 100, 0);
  bcfg.budget_bytes = 20 * 1024;
  BufferPool bpool = BufferPool::create(seg, "budgeted", bcfg);
  bpool.on_pressure(0, [&](PL now, PL before) { seen.emplace_back(now, before); });
  std::vector<Buffer> bheld;
  const std::pair<int, PL> marks[] = {{11, PL::none}, {13, PL::low}, {17, PL::medium}, {20, PL::critical}};
  for (const auto& [n, level] : marks) {
    while (static_cast<int>(bheld.size()) < n) {
      Allocation a = bpool.allocate(1024);
      REQUIRE(a.status == AllocStatus::ok);
      bheld.push_back(std::move(a.buffer));
    }
    INFO(n << " of a 20-buffer budget");
    CHECK(bpool.pressure() == level);
  }
  CHECK(bpool.allocate(1024).status == AllocStatus::over_budget);
  REQUIRE(seen.size() == 4);
  CHECK(seen.back() == std::pair{PL::critical, PL::high});
  bheld.clear();
  CHECK(bpool.pressure() == PL::none);
  CHECK(seen.size() == 8);
}

// ---------------------------------------------------------------------------
// Crash: SIGKILL and exact reclaim

namespace {

struct HoldBoard {
  std::atomic<int> holding;
  std::atomic<int> count;
  BufferHandle handles[1000];
};

void killed_holder_scenario(std::uint32_t cache) {
  TestDomain d;
  Segment seg = Segment::create("hold1000", opts(d, 16u << 20));
  // With the cache on, classes must stay under half used for freed buffers to be cached.
  const std::uint32_t per_class = cache == 0 ? 700 : 2400;
  BufferPool pool = BufferPool::create(seg, "pool", config({64, 1024}, per_class, cache));
  HoldBoard& b = make_board<HoldBoard>(seg);
  Children kids{std::chrono::seconds(20)};
  pid_t child = kids.spawn([&] {
    Segment s = Segment::open("hold1000", {.domain = d.name()});
    BufferPool p = BufferPool::open(s, "pool");
    std::vector<Buffer> mine;
    const std::uint32_t me = my_pid();
    for (int i = 0; i < 1000; ++i) {
      Allocation a = p.allocate(i % 2 == 0 ? 64 : 1000);
      if (a.status != AllocStatus::ok) return 1;
      fill(a.buffer.data(), a.buffer.capacity(), tag_of(me, static_cast<std::uint32_t>(i)));
      b.handles[i] = a.buffer.handle();
      mine.push_back(std::move(a.buffer));
    }
    // 10 more per class, freed again: a cache (if any) keeps some of them idle.
    std::vector<Buffer> extra;
    for (int i = 0; i < 20; ++i) {
      Allocation a = p.allocate(i % 2 == 0 ? 64 : 1000);
      if (a.status != AllocStatus::ok) return 2;
      extra.push_back(std::move(a.buffer));
    }
    extra.clear();
    b.count.store(static_cast<int>(mine.size()));
    b.holding.store(1);
    std::this_thread::sleep_for(30s);
    return 3;
  });
  REQUIRE(eventually([&] { return b.holding.load() != 0; }, 20s));
  const std::uint32_t kid = static_cast<std::uint32_t>(child);
  REQUIRE(b.count.load() == 1000);
  std::vector<BufferHandle> expect(b.handles, b.handles + 1000);
  std::sort(expect.begin(), expect.end(), less_handle);
  CHECK(std::adjacent_find(expect.begin(), expect.end()) == expect.end());

  PoolStats st = pool.stats();
  const std::uint32_t cached = total_cached(st);
  if (cache == 0)
    CHECK(cached == 0);
  else
    CHECK(cached > 0);  // the scenario really has idle cached buffers to reclaim
  CHECK(cached <= 2 * cache);
  CHECK(st.classes[0].in_use == 500 + st.classes[0].cached);
  CHECK(st.classes[1].in_use == 500 + st.classes[1].cached);
  const ClientStats* cs = client_of(st, kid);
  REQUIRE(cs != nullptr);
  CHECK(cs->alive);
  CHECK(cs->buffers == 1000 + cached);
  CHECK(cs->bytes ==
        500 * 64 + 500 * 1024 + std::uint64_t{st.classes[0].cached} * 64 + std::uint64_t{st.classes[1].cached} * 1024);
  MESSAGE(cached << " buffers idle in the child's cache");

  kids.kill(child);
  st = pool.stats();
  cs = client_of(st, kid);
  if (cs) CHECK_FALSE(cs->alive);
  std::vector<BufferHandle> held = pool.held_by(kid);
  CHECK(held.size() == 1000 + cached);
  std::sort(held.begin(), held.end(), less_handle);
  if (cache == 0) {
    CHECK(held == expect);
  } else {
    CHECK(std::includes(held.begin(), held.end(), expect.begin(), expect.end(), less_handle));
  }
  CHECK(pool.held_by(my_pid()).empty());

  auto t0 = Clock::now();
  CHECK(pool.reclaim(kid) == 1000 + cached);
  MESSAGE("reclaim of 1000 buffers took " << ms_since(t0) << " ms");
  CHECK(pool.held_by(kid).empty());
  CHECK(pool.reclaim(kid) == 0);
  CHECK(pool.reclaim_dead() == 0);
  st = pool.stats();
  for (const auto& c : st.classes) {
    CHECK(c.in_use == 0);
    CHECK(c.cached == 0);
  }
  CHECK(st.claimed_bytes == 0);
  cs = client_of(st, kid);
  if (cs) {
    CHECK(cs->buffers == 0);
    CHECK(cs->bytes == 0);
  }
  HS hs = HS::ok;
  CHECK(pool.resolve(expect.front(), &hs) == nullptr);
  CHECK(hs == HS::stale);
  full_scan(pool, all_free(pool));  // every buffer comes back, distinct
}

}  // namespace

TEST_CASE("a child holding 1000 buffers (cache off) is SIGKILLed: held_by lists exactly those, reclaim returns 1000") {
  killed_holder_scenario(0);
}

TEST_CASE("a child holding 1000 buffers (cache on) is SIGKILLed: reclaim returns them and its cache") {
  killed_holder_scenario(8);
}

TEST_CASE("reclaim_dead() returns buffers of dead owners (killed or exited) and only theirs") {
  TestDomain d;
  Segment seg = Segment::create("dead", opts(d, kPoolSegmentBytes));
  BufferPool pool = BufferPool::create(seg, "pool", config({64, 256}, 16, 0));
  struct Board {
    std::atomic<int> killed_holding, live_holding, release;
  };
  Board& b = make_board<Board>(seg);
  Children kids{std::chrono::seconds(20)};
  auto take = [&](BufferPool& p, int n, std::vector<Buffer>& into) {
    for (int i = 0; i < n; ++i) {
      Allocation a = p.allocate(i % 2 ? 64 : 256);
      if (a.status != AllocStatus::ok) return false;
      into.push_back(std::move(a.buffer));
    }
    return true;
  };
  CHECK(pool.reclaim_dead() == 0);
  pid_t killed = kids.spawn([&] {
    Segment s = Segment::open("dead", {.domain = d.name()});
    BufferPool p = BufferPool::open(s, "pool");
    std::vector<Buffer> mine;
    if (!take(p, 3, mine)) return 1;
    b.killed_holding.store(1);
    std::this_thread::sleep_for(30s);
    return 2;
  });
  pid_t exited = kids.spawn([&] {  // exits normally with 2 buffers it never released
    Segment s = Segment::open("dead", {.domain = d.name()});
    BufferPool p = BufferPool::open(s, "pool");
    std::vector<Buffer> mine;
    if (!take(p, 2, mine)) return 1;
    for (Buffer& x : mine) x.detach();
    return 0;
  });
  pid_t live = kids.spawn([&] {
    Segment s = Segment::open("dead", {.domain = d.name()});
    BufferPool p = BufferPool::open(s, "pool");
    std::vector<Buffer> mine;
    if (!take(p, 4, mine)) return 1;
    b.live_holding.store(1);
    if (!eventually([&] { return b.release.load() != 0; }, 30s)) return 2;
    return 0;
  });
  check_exit(kids.wait(exited), "exited owner");
  REQUIRE(eventually([&] { return b.killed_holding.load() != 0 && b.live_holding.load() != 0; }));
  CHECK(total_in_use(pool.stats()) == 9);
  kids.kill(killed);
  CHECK(total_in_use(pool.stats()) == 9);  // nobody noticed yet
  CHECK(pool.reclaim_dead() == 5);
  CHECK(pool.reclaim_dead() == 0);
  PoolStats st = pool.stats();
  CHECK(total_in_use(st) == 4);
  CHECK(pool.held_by(static_cast<std::uint32_t>(live)).size() == 4);
  const ClientStats* lc = client_of(st, static_cast<std::uint32_t>(live));
  REQUIRE(lc != nullptr);
  CHECK(lc->alive);
  CHECK(lc->buffers == 4);
  b.release.store(1);
  check_exit(kids.wait(live), "live owner");
  CHECK(total_in_use(pool.stats()) == 0);
  CHECK(pool.reclaim_dead() == 0);
  full_scan(pool, all_free(pool));
}

namespace {

struct RandomBoard {
  std::atomic<int> started;
  std::atomic<int> errors, first_error;
  std::atomic<std::uint64_t> ops;
};

constexpr std::size_t kRandomClasses[] = {64, 512, 4096};

// Allocates, writes, verifies and frees (with retain/release and detach
// variants) until killed. Never returns normally within a test.
int random_worker(const std::string& domain, RandomBoard& b, unsigned seed) {
  Segment s = Segment::open("random", {.domain = domain});
  BufferPool p = BufferPool::open(s, "pool");
  std::mt19937 rng(seed);
  const std::uint32_t me = my_pid();
  struct Held {
    Buffer buf;
    std::uint64_t tag;
  };
  std::vector<Held> held;
  held.reserve(16);
  auto fail = [&](int code) {
    b.errors.fetch_add(1);
    int zero = 0;
    b.first_error.compare_exchange_strong(zero, code);
    return code;
  };
  b.started.fetch_add(1);
  const auto deadline = Clock::now() + 20s;
  for (std::uint32_t seq = 1;; ++seq) {
    if ((seq & 255) == 0 && Clock::now() > deadline) return 0;
    const unsigned r = rng() % 16;
    if (held.size() < 12 && (held.empty() || r < 8)) {
      const std::size_t size = kRandomClasses[rng() % 3] - rng() % 32;
      Allocation a = r < 2 ? p.allocate_for(size, 2ms) : p.allocate(size, r == 2 ? Priority::high : Priority::normal);
      if (a.status == AllocStatus::exhausted || a.status == AllocStatus::timed_out) continue;
      if (a.status != AllocStatus::ok) return fail(10 + static_cast<int>(a.status));
      if (a.buffer.capacity() < size) return fail(2);
      Held h{std::move(a.buffer), tag_of(me, seq)};
      fill(h.buf.data(), h.buf.capacity(), h.tag);
      held.push_back(std::move(h));
    } else {
      const std::size_t i = rng() % held.size();
      if (!holds(held[i].buf.data(), held[i].buf.capacity(), held[i].tag)) return fail(3);
      switch (r % 4) {
        case 0: {  // a second reference by this process, dropped again
          const BufferHandle h = held[i].buf.handle();
          if (p.retain(h) != HS::ok) return fail(4);
          if (p.release(h) != HS::ok) return fail(5);
          held[i].buf.reset();
          break;
        }
        case 1: {
          const BufferHandle h = held[i].buf.detach();
          if (p.release(h) != HS::ok) return fail(6);
          break;
        }
        default: held[i].buf.reset();
      }
      held.erase(held.begin() + static_cast<std::ptrdiff_t>(i));
    }
    b.ops.fetch_add(1, std::memory_order_relaxed);
  }
}

}  // namespace

TEST_CASE("processes SIGKILLed at random points in alloc/free loops: reclaim restores every buffer") {
  TestDomain d;
  Segment seg = Segment::create("random", opts(d, kPoolSegmentBytes));
  BufferPool pool = BufferPool::create(seg, "pool", config({64, 512, 4096}, 16, 4));
  RandomBoard& b = make_board<RandomBoard>(seg);
  const unsigned seed = test::seed();
  INFO("seed " << seed);
  std::mt19937 rng(seed);

  // The parent holds 2 buffers per class throughout: no reclaim may touch them.
  std::vector<Buffer> mine;
  for (std::size_t c = 0; c < 3; ++c)
    for (int i = 0; i < 2; ++i) {
      Allocation a = pool.allocate(kRandomClasses[c]);
      REQUIRE(a.status == AllocStatus::ok);
      fill(a.buffer.data(), a.buffer.capacity(), tag_of(my_pid(), static_cast<std::uint32_t>(mine.size())));
      mine.push_back(std::move(a.buffer));
    }
  pool.flush();
  std::uint64_t parent_bytes = 0;
  for (const Buffer& x : mine) parent_bytes += x.capacity();

  const int kIterations = test::iterations(120);
  std::uint64_t reclaimed_total = 0;
  int early_kills = 0, done = 0;
  Children kids{std::chrono::seconds(20)};
  for (int it = 0; it < kIterations; ++it, ++done) {
    INFO("iteration " << it);
    b.started.store(0);
    const int n = rng() % 3 == 0 ? 2 : 1;
    std::vector<pid_t> pids;
    for (int k = 0; k < n; ++k)
      pids.push_back(kids.spawn([&, s = static_cast<unsigned>(rng())] { return random_worker(d.name(), b, s); }));
    if (rng() % 8 == 0) {
      ++early_kills;  // anywhere in open() or the first operations
      std::this_thread::sleep_for(std::chrono::microseconds(rng() % 2000));
    } else {
      REQUIRE(eventually([&] { return b.started.load() == n; }));
      std::this_thread::sleep_for(std::chrono::microseconds(rng() % 4000));
    }
    for (pid_t p : pids) {
      kids.kill(p);
      if (rng() % 2) std::this_thread::sleep_for(std::chrono::microseconds(rng() % 500));
    }

    std::uint32_t reclaimed = 0;
    std::size_t still_held = 0;
    for (pid_t p : pids) {
      reclaimed += pool.reclaim(static_cast<std::uint32_t>(p));
      still_held += pool.held_by(static_cast<std::uint32_t>(p)).size();
    }
    reclaimed_total += reclaimed;
    PoolStats st = pool.stats();
    bool ok = still_held == 0 && reclaimed <= 3u * 16u && st.claimed_bytes == parent_bytes && b.errors.load() == 0;
    std::string in_use;
    for (const auto& c : st.classes) {
      ok = ok && c.in_use == 2 && c.cached == 0;
      in_use += " " + std::to_string(c.in_use) + "/" + std::to_string(c.cached);
    }
    for (std::size_t i = 0; i < mine.size(); ++i)
      ok = ok && pool.holders(mine[i].handle()) == 1 &&
           holds(mine[i].data(), mine[i].capacity(), tag_of(my_pid(), static_cast<std::uint32_t>(i)));
    CHECK_MESSAGE(ok, "after killing " << n << " child(ren) and reclaiming " << reclaimed << " buffers: held_by left "
                                       << still_held << ", claimed_bytes " << st.claimed_bytes << " (the parent's "
                                       << parent_bytes << "), in_use/cached per class:" << in_use << ", child errors "
                                       << b.errors.load());
    if (!ok) break;
    if (it % 10 == 9 || it == kIterations - 1) {
      CHECK(pool.reclaim_dead() == 0);
      full_scan(pool, {14, 14, 14});
    }
  }
  MESSAGE(done << " iterations (" << early_kills << " early kills): " << reclaimed_total << " buffers reclaimed, "
               << b.ops.load() << " child operations");
  INFO("first child error code " << b.first_error.load());
  CHECK(b.errors.load() == 0);
  CHECK(b.ops.load() > 0);
  mine.clear();
  pool.flush();
  CHECK(total_in_use(pool.stats()) == 0);
  full_scan(pool, all_free(pool));
}

// ---------------------------------------------------------------------------
// Bad input

TEST_CASE("bad handles: foreign pool, class and index out of range, stale generation, double free, use after free") {
  TestDomain d;
  Segment seg = Segment::create("bad", opts(d, kPoolSegmentBytes));
  BufferPool pa = BufferPool::create(seg, "a", config({64, 256}, 8, 0));
  BufferPool pb = BufferPool::create(seg, "b", config({64, 256}, 8, 0));
  REQUIRE(pa.pool_id() != 0);
  REQUIRE(pb.pool_id() != 0);
  CHECK(pa.pool_id() != pb.pool_id());
  const std::uint32_t me = my_pid();

  Allocation a = pa.allocate(10);
  REQUIRE(a.status == AllocStatus::ok);
  fill(a.buffer.data(), a.buffer.capacity(), 77);
  const BufferHandle h = a.buffer.handle();

  // Every entry point refuses a bad handle with the right status and changes nothing.
  auto refused = [&](BufferPool& pool, BufferHandle bad, std::initializer_list<HS> expect, bool live_intact = true) {
    auto one_of = [&](HS s) { return std::find(expect.begin(), expect.end(), s) != expect.end(); };
    HS st = HS::ok;
    CHECK(pool.resolve(bad, &st) == nullptr);
    CHECK(one_of(st));
    CHECK(pool.resolve(bad) == nullptr);
    st = pool.retain(bad);
    CHECK(one_of(st));
    st = pool.release(bad);
    CHECK(one_of(st));
    st = pool.transfer(bad, me, 4000002);
    CHECK(one_of(st));
    st = HS::ok;
    CHECK_FALSE(pool.adopt(bad, me, &st).has_value());
    CHECK(one_of(st));
    CHECK(pool.holders(bad) == 0);
    if (live_intact) {
      CHECK(pa.holders(h) == 1);
      CHECK(holds(a.buffer.data(), 64, 77));
    }
  };
  {
    INFO("a's handle given to pool b");
    refused(pb, h, {HS::foreign_pool});
  }
  BufferHandle x = h;
  x.pool_id ^= 0x5a5a5a5au;
  {
    INFO("wrong pool id");
    refused(pa, x, {HS::foreign_pool});
  }
  x = h;
  x.pool_id = 0;
  {
    INFO("pool id 0");
    CHECK_FALSE(x.valid());
    refused(pa, x, {HS::foreign_pool});
  }
  for (std::uint16_t cls : {std::uint16_t{2}, std::uint16_t{31}, std::uint16_t{0xffff}}) {
    INFO("class " << cls);
    x = h;
    x.size_class = cls;
    refused(pa, x, {HS::bad_class});
  }
  for (std::uint32_t idx : {8u, 9u, 0x7fffffffu, 0xffffffffu}) {
    INFO("index " << idx);
    x = h;
    x.index = idx;
    refused(pa, x, {HS::bad_index});
  }
  for (std::uint32_t gen : {h.generation + 1, h.generation + 1000, h.generation - 1}) {
    INFO("generation " << gen << " (live one is " << h.generation << ")");
    x = h;
    x.generation = gen;
    refused(pa, x, {HS::stale});
  }
  // A holder that holds nothing.
  CHECK(pa.release(h, 4000003) == HS::not_held);
  CHECK(pa.transfer(h, 4000003, me) == HS::not_held);
  CHECK(pa.holders(h) == 1);
  // Too many holders.
  for (int i = 1; i < BufferPool::kMaxHolders; ++i) CHECK(pa.retain(h, 4100000 + i) == HS::ok);
  CHECK(pa.holders(h) == BufferPool::kMaxHolders);
  CHECK(pa.retain(h, 4200000) == HS::too_many_holders);
  CHECK(pa.holders(h) == BufferPool::kMaxHolders);
  for (int i = 1; i < BufferPool::kMaxHolders; ++i) CHECK(pa.release(h, 4100000 + i) == HS::ok);
  CHECK(pa.holders(h) == 1);

  // Freed twice, then used after free.
  const BufferHandle g = a.buffer.detach();
  CHECK(pa.release(g) == HS::ok);
  PoolStats before = pa.stats();
  CHECK(before.classes[0].in_use == 0);
  const HS twice = pa.release(g);
  CHECK((twice == HS::stale || twice == HS::not_held));
  {
    INFO("freed handle");
    refused(pa, g, {HS::stale, HS::not_held}, false);
  }
  PoolStats after = pa.stats();
  CHECK(after.classes[0].in_use == 0);
  CHECK(after.claimed_bytes == before.claimed_bytes);

  // The index is re-allocated: the old handle stays stale and cannot touch the new owner's buffer.
  std::vector<Buffer> all;
  for (int i = 0; i < 8; ++i) {
    Allocation n = pa.allocate(64);
    REQUIRE(n.status == AllocStatus::ok);
    fill(n.buffer.data(), n.buffer.capacity(), 99);
    all.push_back(std::move(n.buffer));
  }
  auto reused = std::find_if(all.begin(), all.end(), [&](const Buffer& bf) { return bf.handle().index == g.index; });
  REQUIRE(reused != all.end());
  CHECK(reused->handle().generation != g.generation);
  CHECK(pa.release(g) != HS::ok);
  CHECK(pa.retain(g) != HS::ok);
  HS st = HS::ok;
  CHECK(pa.resolve(g, &st) == nullptr);
  CHECK(st == HS::stale);
  CHECK(pa.holders(reused->handle()) == 1);
  CHECK(holds(reused->data(), 64, 99));
  CHECK(pa.stats().classes[0].in_use == 8);
}

TEST_CASE("a buffer freed into the per-handle cache is stale for its old handle") {
  TestDomain d;
  Segment seg = Segment::create("cachestale", opts(d, kPoolSegmentBytes));
  BufferPool pool = BufferPool::create(seg, "pool", config({64}, 8, 8));
  Allocation a = pool.allocate(64);
  REQUIRE(a.status == AllocStatus::ok);
  const BufferHandle h = a.buffer.handle();
  a.buffer.reset();
  PoolStats st = pool.stats();
  MESSAGE(st.classes[0].cached << " cached after one free");
  HS hs = HS::ok;
  CHECK(pool.resolve(h, &hs) == nullptr);
  CHECK(hs == HS::stale);
  // A retain would resurrect a buffer that sits in the cache and is handed
  // out again by the next allocate: it must be refused.
  hs = pool.retain(h);
  CHECK(hs == HS::stale);
  hs = pool.release(h);
  CHECK((hs == HS::stale || hs == HS::not_held));
  CHECK(pool.holders(h) == 0);
  Allocation b = pool.allocate(64);
  REQUIRE(b.status == AllocStatus::ok);
  CHECK(b.buffer.handle() != h);
  CHECK(pool.holders(b.buffer.handle()) == 1);
  CHECK(pool.resolve(h) == nullptr);
}

TEST_CASE("invalid PoolConfig is refused with invalid_argument naming the problem, nothing is created") {
  TestDomain d;
  Segment seg = Segment::create("config", opts(d, kPoolSegmentBytes));
  int n = 0;
  auto refused = [&](const PoolConfig& cfg, const char* what, std::initializer_list<const char*> words) {
    INFO(std::string(what));
    const std::string name = "pool" + std::to_string(n++);
    std::string msg;
    try {
      BufferPool::create(seg, name, cfg);
      FAIL_CHECK("create succeeded");
      return;
    } catch (const Error& e) {
      msg = e.what();
      CHECK(e.code() == ErrorCode::invalid_argument);
    }
    MESSAGE(std::string(what) << ": \"" << msg << "\"");
    bool named = false;
    for (const char* w : words) named = named || msg.find(w) != std::string::npos;
    CHECK_MESSAGE(named, "message does not name the problem: " << msg);
    CHECK_FALSE(seg.find_object(name).has_value());
  };
  PoolConfig c;
  c.class_sizes.clear();
  refused(c, "no classes", {"class_sizes", "class size", "size class", "classes"});
  c = {};
  c.class_sizes = {256, 64, 1024};
  refused(c, "unsorted classes", {"ascending", "sorted", "order", "increasing"});
  c = {};
  c.class_sizes = {64, 64};
  refused(c, "duplicate class", {"ascending", "sorted", "order", "increasing", "duplicate"});
  c = {};
  c.class_sizes = {0, 64};
  refused(c, "zero-byte class", {"class_sizes", "class size", "size class", "zero", " 0"});
  c = {};
  c.class_sizes.clear();
  for (std::size_t i = 0; i <= static_cast<std::size_t>(BufferPool::kMaxClasses); ++i)
    c.class_sizes.push_back(64 * (i + 1));
  refused(c, "too many classes", {"class", "32"});
  c = {};
  c.buffers_per_class = 0;
  refused(c, "zero buffers", {"buffers_per_class", "buffers per class", "buffers"});
  c = {};
  c.reserve_per_class = c.buffers_per_class;
  refused(c, "reserve == buffers", {"reserve"});
  c = {};
  c.reserve_per_class = c.buffers_per_class + 5;
  refused(c, "reserve > buffers", {"reserve"});
  // Still usable afterwards.
  BufferPool ok = BufferPool::create(seg, "pool", config({64}, 2, 0));
  CHECK(ok.class_count() == 1);
}

TEST_CASE("create and open errors: already_exists, no_space, not_found, not a pool, corrupted header") {
  TestDomain d;
  Segment seg = Segment::create("errors", opts(d, 2u << 20));
  auto code_of = [](auto&& fn, std::string* msg = nullptr) {
    try {
      fn();
    } catch (const Error& e) {
      if (msg) *msg = e.what();
      return e.code();
    }
    return ErrorCode::system;  // "nothing thrown"
  };
  BufferPool pool = BufferPool::create(seg, "pool", config({64}, 4, 0));
  CHECK(code_of([&] { BufferPool::create(seg, "pool", config({64}, 4, 0)); }) == ErrorCode::already_exists);

  PoolConfig huge = config({65536}, 64, 0);  // 4 MiB of data in a 2 MiB segment
  CHECK(BufferPool::bytes_needed(huge) > seg.size());
  std::string msg;
  CHECK(code_of([&] { BufferPool::create(seg, "huge", huge); }, &msg) == ErrorCode::no_space);
  MESSAGE("no_space: \"" << msg << "\"");
  CHECK(msg.find("huge") != std::string::npos);
  CHECK_FALSE(seg.find_object("huge").has_value());

  CHECK(code_of([&] { BufferPool::open(seg, "missing"); }, &msg) == ErrorCode::not_found);
  seg.create_object("raw", ObjectType::raw, 4096);
  const ErrorCode raw = code_of([&] { BufferPool::open(seg, "raw"); }, &msg);
  MESSAGE("open of a raw object: " << to_string(raw) << ": \"" << msg << "\"");
  CHECK(raw != ErrorCode::system);
  CHECK(msg.find("raw") != std::string::npos);
  // A pool-typed object with a zeroed or tiny header. (The header comment
  // says "corrupted for a bad header"; a wrong magic is reported as
  // bad_magic, which ErrorCode documents as "not a libipc object": both are
  // accepted.)
  auto bad_header = [](ErrorCode c) { return c == ErrorCode::corrupted || c == ErrorCode::bad_magic; };
  seg.create_object("zeroed", ObjectType::pool, 64 << 10);
  ErrorCode code = code_of([&] { BufferPool::open(seg, "zeroed"); }, &msg);
  MESSAGE("zeroed pool object: " << to_string(code) << ": \"" << msg << "\"");
  CHECK(bad_header(code));
  seg.create_object("tiny", ObjectType::pool, 64);
  CHECK(bad_header(code_of([&] { BufferPool::open(seg, "tiny"); })));
  // A pool whose header was overwritten: the magic, then (magic intact) the
  // class count (header order: 8-byte magic, layout version, pool id, class count).
  BufferPool victim = BufferPool::create(seg, "victim", config({64}, 4, 0));
  auto obj = seg.find_object("victim");
  REQUIRE(obj.has_value());
  auto* raw_header = static_cast<unsigned char*>(obj->data);
  unsigned char saved[20];
  std::memcpy(saved, raw_header, sizeof saved);
  std::memset(raw_header, 0xa5, 8);
  CHECK(bad_header(code_of([&] { BufferPool::open(seg, "victim"); })));
  std::memcpy(raw_header, saved, sizeof saved);
  const std::uint32_t classes = 1000;
  std::memcpy(raw_header + 16, &classes, 4);
  code = code_of([&] { BufferPool::open(seg, "victim"); }, &msg);
  MESSAGE("class count 1000: " << to_string(code) << ": \"" << msg << "\"");
  CHECK(code == ErrorCode::corrupted);
  std::memcpy(raw_header, saved, sizeof saved);  // the open handle `victim` closes normally
  CHECK(code_of([&] { BufferPool::open(seg, "victim"); }) == ErrorCode::system);  // opens again

  // The good pool is untouched by all of that.
  BufferPool again = BufferPool::open(seg, "pool");
  CHECK(again.pool_id() == pool.pool_id());
  Allocation a = again.allocate(64);
  CHECK(a.status == AllocStatus::ok);
  CHECK(pool.holders(a.buffer.handle()) == 1);  // handles of one pool work through either handle
}

// ---------------------------------------------------------------------------
// stats()

TEST_CASE("stats(): per class in_use/peak/allocs/frees/failures, per client bytes, fragmentation in [0,1]") {
  TestDomain d;
  Segment seg = Segment::create("stats", opts(d, kPoolSegmentBytes));
  BufferPool pool = BufferPool::create(seg, "pool", config({64, 256, 1024}, 10, 0));
  PoolStats st = pool.stats();
  CHECK(st.capacity_bytes == 10u * (64 + 256 + 1024));
  CHECK(st.fragmentation >= 0.0);
  CHECK(st.fragmentation <= 1.0);
  CHECK_FALSE(std::isnan(st.fragmentation));

  std::vector<Buffer> c0, c1, c2;
  for (int i = 0; i < 2; ++i) {
    Allocation a = pool.allocate(64);
    REQUIRE(a.status == AllocStatus::ok);
    c0.push_back(std::move(a.buffer));
  }
  for (int i = 0; i < 3; ++i) {
    Allocation a = pool.allocate(100);
    REQUIRE(a.status == AllocStatus::ok);
    c1.push_back(std::move(a.buffer));
  }
  pool.flush();
  st = pool.stats();
  CHECK(st.classes[0].in_use == 2);
  CHECK(st.classes[0].peak == 2);
  CHECK(st.classes[0].allocs == 2);
  CHECK(st.classes[1].in_use == 3);
  CHECK(st.classes[1].peak == 3);
  CHECK(st.classes[1].allocs == 3);
  CHECK(st.classes[2].in_use == 0);
  CHECK(st.claimed_bytes == 2 * 64 + 3 * 256);
  const ClientStats* me = client_of(st, my_pid());
  REQUIRE(me != nullptr);
  CHECK(me->alive);
  CHECK(me->buffers == 5);
  CHECK(me->bytes == 2 * 64 + 3 * 256);
  // Requested 2*64 + 3*100 of 896 claimed.
  const double frag = 1.0 - (2.0 * 64 + 3.0 * 100) / (2.0 * 64 + 3.0 * 256);
  CHECK(st.fragmentation >= 0.0);
  CHECK(st.fragmentation <= 1.0);
  CHECK(st.fragmentation == doctest::Approx(frag).epsilon(0.02));

  c1.pop_back();
  c1.pop_back();
  pool.flush();
  st = pool.stats();
  CHECK(st.classes[1].in_use == 1);
  CHECK(st.classes[1].peak == 3);
  CHECK(st.classes[1].frees == 2);
  for (int i = 0; i < 10; ++i) {
    Allocation a = pool.allocate(1024);
    REQUIRE(a.status == AllocStatus::ok);
    c2.push_back(std::move(a.buffer));
  }
  CHECK(pool.allocate(1024).status == AllocStatus::exhausted);
  CHECK(pool.allocate(1000).status == AllocStatus::exhausted);
  pool.flush();
  st = pool.stats();
  CHECK(st.classes[2].failures == 2);
  CHECK(st.classes[2].peak == 10);
  CHECK(st.classes[0].failures == 0);
  CHECK(st.classes[1].failures == 0);
  CHECK(st.fragmentation >= 0.0);
  CHECK(st.fragmentation <= 1.0);

  // Another process shows up as its own client while it holds buffers.
  struct Board {
    std::atomic<int> holding, release;
  };
  Board& b = make_board<Board>(seg);
  Children kids{std::chrono::seconds(20)};
  pid_t k = kids.spawn([&] {
    Segment s = Segment::open("stats", {.domain = d.name()});
    BufferPool p = BufferPool::open(s, "pool");
    Allocation x = p.allocate(64), y = p.allocate(200);
    if (x.status != AllocStatus::ok || y.status != AllocStatus::ok) return 1;
    b.holding.store(1);
    return eventually([&] { return b.release.load() != 0; }, 20s) ? 0 : 2;
  });
  REQUIRE(eventually([&] { return b.holding.load() != 0; }));
  st = pool.stats();
  const ClientStats* other = client_of(st, static_cast<std::uint32_t>(k));
  REQUIRE(other != nullptr);
  CHECK(other->alive);
  CHECK(other->buffers == 2);
  CHECK(other->bytes == 64 + 256);
  me = client_of(st, my_pid());
  REQUIRE(me != nullptr);
  CHECK(me->buffers == 2 + 1 + 10);
  b.release.store(1);
  check_exit(kids.wait(k));
  c0.clear();
  c1.clear();
  c2.clear();
  pool.flush();
  st = pool.stats();
  CHECK(total_in_use(st) == 0);
  CHECK(st.claimed_bytes == 0);
  std::uint64_t allocs = 0, frees = 0;
  for (const auto& c : st.classes) {
    allocs += c.allocs;
    frees += c.frees;
  }
  CHECK(allocs == frees);
  CHECK(allocs == 2 + 3 + 10 + 2);
  CHECK(st.fragmentation >= 0.0);
  CHECK(st.fragmentation <= 1.0);
  CHECK_FALSE(std::isnan(st.fragmentation));
}

// ---------------------------------------------------------------------------
// kForever

TEST_CASE("allocate_for(kForever) on an exhausted pool blocks until another process frees a buffer") {
  TestDomain d;
  Segment seg = Segment::create("forever", opts(d, kPoolSegmentBytes));
  BufferPool pool = BufferPool::create(seg, "pool", config({256}, 4, 0));  // policy fail
  struct Board {
    std::atomic<int> holding, waiting;
    std::atomic<std::int64_t> freed_ns;  // set just before the free
  };
  Board& b = make_board<Board>(seg);
  Children kids;
  pid_t holder = kids.spawn([&] {
    Segment s = Segment::open("forever", {.domain = d.name()});
    BufferPool p = BufferPool::open(s, "pool");
    std::vector<Buffer> all;
    for (int i = 0; i < 4; ++i) {
      Allocation a = p.allocate(256);
      if (a.status != AllocStatus::ok) return 1;
      all.push_back(std::move(a.buffer));
    }
    b.holding.store(1);
    if (!eventually([&] { return b.waiting.load() != 0; })) return 2;
    std::this_thread::sleep_for(200ms);
    b.freed_ns.store(now_ns());
    all.pop_back();
    // Keep the other three until the parent is done.
    return eventually([&] { return b.waiting.load() == 2; }) ? 0 : 3;
  });
  REQUIRE(eventually([&] { return b.holding.load() != 0; }));
  REQUIRE(pool.allocate(256).status == AllocStatus::exhausted);
  b.waiting.store(1);
  Allocation a = pool.allocate_for(256, ipc::kForever);
  const std::int64_t returned_ns = now_ns();
  b.waiting.store(2);
  CHECK_MESSAGE(a.status == AllocStatus::ok, "allocate_for(kForever) returned " << a.status);
  CHECK(static_cast<bool>(a.buffer));
  CHECK_RETURNED_AFTER(b.freed_ns.load(), returned_ns, "allocate_for(kForever)");
  check_exit(kids.wait(holder), "holder");
}

TEST_CASE(
    "holder tags: next_holder_tag() is distinct across processes for 16384 calls, and channels take theirs there") {
  ipc::test::TestDomain d;
  Segment seg = Segment::create("tags", ipc::test::opts(d, 4u << 20));
  BufferPool pool = BufferPool::create(seg, "pool", PoolConfig{});
  struct Board {
    std::atomic<std::uint32_t> tags[4096];
    std::atomic<int> go;
  };
  auto& b = ipc::test::make_board<Board>(seg);
  const std::string domain = d.name();
  Children kids;
  // Two processes take 2048 tags each at the same time: all 4096 distinct.
  pid_t child = kids.spawn([&] {
    Segment mine = Segment::open("tags", {.domain = domain});
    BufferPool p = BufferPool::open(mine, "pool");
    while (b.go.load() == 0) std::this_thread::yield();
    for (int i = 0; i < 2048; ++i) b.tags[2048 + i].store(p.next_holder_tag());
    return 0;
  });
  b.go.store(1);
  for (int i = 0; i < 2048; ++i) b.tags[i].store(pool.next_holder_tag());
  ipc::test::check_exit(kids.wait(child));
  std::set<std::uint32_t> seen;
  for (auto& t : b.tags) {
    CHECK(t.load() < (1u << 14));
    seen.insert(t.load());
  }
  CHECK(seen.size() == 4096);
  // Rings created with the pool use the counter: the next tag has moved on by one per ring.
  const std::uint32_t before = pool.next_holder_tag();
  ChannelConfig cc;
  (void)Channel::create(seg, "c1", cc, &pool);
  (void)Broadcast::create(seg, "b1", BroadcastConfig{}, &pool);
  CHECK(pool.next_holder_tag() == ((before + 3) & 0x3fff));
}
