// Hash map: API coverage (BytesMap and HashMap<K, V>), update-in-place and
// compare_exchange, batches, per-shard iteration, growth while another
// process reads another shard, 4 processes of random ops against a model plus
// shared counters, SIGKILL of writers at random points (120 rounds) with a
// check for torn values and lost acknowledged writes, and bad input.
//
// Not labelled "threads": every test here uses processes only.
#include <doctest/doctest.h>
#include <signal.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "ipc/hash_map.hpp"
#include "ipc/segment.hpp"
#include "ipc/semaphore.hpp"
#include "support.hpp"

using namespace ipc;
using namespace std::chrono_literals;
using ipc::test::check_exit;
using ipc::test::Children;
using ipc::test::eventually;
using ipc::test::make_board;
using ipc::test::opts;
using ipc::test::str;
using ipc::test::TestDomain;

namespace {

// A 64-byte value whose fields derive from (key, version), with a checksum:
// a torn value (half old, half new) fails check().
struct Val {
  std::uint64_t key;
  std::uint64_t version;
  std::uint64_t payload[5];
  std::uint64_t checksum;
};
static_assert(sizeof(Val) == 64);

std::uint64_t fmix(std::uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  return x;
}
std::uint64_t payload_word(std::uint64_t key, std::uint64_t version, int i) { return fmix(key * 31 + version * 7 + i); }
std::uint64_t checksum_of(const Val& v) {
  std::uint64_t c = fmix(v.key ^ 0x1234) ^ fmix(v.version + 99);
  for (int i = 0; i < 5; ++i) c = fmix(c ^ v.payload[i]);
  return c;
}
Val make_val(std::uint64_t key, std::uint64_t version) {
  Val v{key, version, {}, 0};
  for (int i = 0; i < 5; ++i) v.payload[i] = payload_word(key, version, i);
  v.checksum = checksum_of(v);
  return v;
}
bool check(const Val& v, std::uint64_t key) {
  if (v.key != key || v.checksum != checksum_of(v)) return false;
  for (int i = 0; i < 5; ++i)
    if (v.payload[i] != payload_word(key, v.version, i)) return false;
  return true;
}

MapOptions small_map(std::uint32_t shards, std::uint32_t capacity) {
  MapOptions o;
  o.shards = shards;
  o.initial_capacity = capacity;
  return o;
}

// Names of the table objects ("<map>.s*") in the segment.
int table_objects(const Segment& seg, const std::string& map) {
  int n = 0;
  for (const ObjectInfo& o : seg.objects()) n += o.name.rfind(map + ".s", 0) == 0;
  return n;
}

}  // namespace

// ---------------------------------------------------------------------------
// Single-process API

TEST_CASE("BytesMap: insert, get, contains, insert_or_assign, erase, variable-size keys and values") {
  TestDomain d;
  Segment seg = Segment::create("api", opts(d));
  MapOptions o = small_map(4, 16);
  o.max_key_bytes = 32;
  o.max_value_bytes = 100;
  BytesMap m = BytesMap::create(seg, "m", o);
  CHECK(m.shard_count() == 4);
  CHECK(m.size() == 0);

  CHECK(str(m.insert("alpha", "one")) == "ok");
  CHECK(str(m.insert("alpha", "uno")) == "already_exists");
  std::string v;
  CHECK(str(m.get("alpha", v)) == "ok");
  CHECK(v == "one");  // the failed insert changed nothing
  CHECK(m.contains("alpha"));
  CHECK_FALSE(m.contains("beta"));
  CHECK(str(m.get("beta", v)) == "not_found");

  bool inserted = false;
  CHECK(str(m.insert_or_assign("beta", std::string(100, 'b'), &inserted)) == "ok");
  CHECK(inserted);
  CHECK(str(m.insert_or_assign("alpha", "a much longer value than before", &inserted)) == "ok");
  CHECK_FALSE(inserted);
  CHECK(str(m.get("alpha", v)) == "ok");
  CHECK(v == "a much longer value than before");
  CHECK(str(m.insert_or_assign("alpha", "", &inserted)) == "ok");  // empty values are values
  CHECK(str(m.get("alpha", v)) == "ok");
  CHECK(v.empty());
  CHECK(m.size() == 2);

  std::string binary("k\0ey", 4);  // keys are bytes, not C strings
  CHECK(str(m.insert(binary, std::string("\0\1\2", 3))) == "ok");
  CHECK(str(m.get(binary, v)) == "ok");
  CHECK(v == std::string("\0\1\2", 3));
  CHECK_FALSE(m.contains("k"));

  CHECK(str(m.erase("alpha")) == "ok");
  CHECK(str(m.erase("alpha")) == "not_found");
  CHECK_FALSE(m.contains("alpha"));
  CHECK(m.size() == 2);

  // Another handle (open) sees the same data.
  BytesMap m2 = BytesMap::open(seg, "m");
  CHECK(m2.max_key_bytes() == 32);
  CHECK(m2.max_value_bytes() == 100);
  CHECK(str(m2.get("beta", v)) == "ok");
  CHECK(v == std::string(100, 'b'));

  // Many insert/erase cycles on few live keys: tombstones are recycled, the
  // map stays small.
  for (int round = 0; round < 200; ++round) {
    for (int k = 0; k < 8; ++k) REQUIRE(str(m.insert("c" + std::to_string(round * 8 + k), "x")) == "ok");
    for (int k = 0; k < 8; ++k) REQUIRE(str(m.erase("c" + std::to_string(round * 8 + k))) == "ok");
  }
  CHECK(m.size() == 2);
  for (const ShardStats& s : m.stats().shards) CHECK(s.capacity <= 32);
}

TEST_CASE("update-in-place, compare_exchange, cancelled and throwing callbacks roll back") {
  TestDomain d;
  Segment seg = Segment::create("upd", opts(d));
  auto m = HashMap<std::uint64_t, std::uint64_t>::create(seg, "m", small_map(2, 8));
  CHECK(str(m.insert(7, 100)) == "ok");
  CHECK(str(m.update(7, [](std::uint64_t& v) { v += 5; })) == "ok");
  CHECK(m.get(7) == 105u);
  CHECK(str(m.update(8, [](std::uint64_t& v) { v += 5; })) == "not_found");
  CHECK_FALSE(m.contains(8));

  CHECK(str(m.compare_exchange(7, 100, 1)) == "mismatch");
  CHECK(m.get(7) == 105u);
  CHECK(str(m.compare_exchange(7, 105, 1)) == "ok");
  CHECK(m.get(7) == 1u);
  CHECK(str(m.compare_exchange(9, 0, 1)) == "not_found");

  BytesMap& b = m.bytes_map();
  std::uint64_t key = 7;
  std::string_view k(reinterpret_cast<const char*>(&key), 8);
  // Returning false undoes whatever the callback wrote.
  CHECK(str(b.update(k, [](std::span<std::byte> v, std::uint32_t&) {
          std::memset(v.data(), 0xff, v.size());
          return false;
        })) == "cancelled");
  CHECK(m.get(7) == 1u);
  // A throwing callback: rolled back, lock released, exception propagates.
  CHECK_THROWS_AS(b.update(k,
                           [](std::span<std::byte> v, std::uint32_t&) -> bool {
                             std::memset(v.data(), 0xee, v.size());
                             throw std::runtime_error("boom");
                           }),
                  std::runtime_error);
  CHECK(m.get(7) == 1u);
  CHECK(str(m.insert_or_assign(7, 2)) == "ok");  // the lock is free again
  // A callback that sets a length above max_value_bytes is rolled back.
  CHECK(str(b.update(k, [](std::span<std::byte>, std::uint32_t& len) {
          len = 9;
          return true;
        })) == "too_large");
  CHECK(m.get(7) == 2u);
  CHECK(BytesMap::last_error().find("max_value_bytes") != std::string::npos);
}

TEST_CASE("batch get/put grouped by shard, per-shard iteration, size, clear, stats") {
  TestDomain d;
  Segment seg = Segment::create("batch", opts(d, 4u << 20));
  auto m = HashMap<std::uint64_t, Val>::create(seg, "m", small_map(8, 16));
  std::vector<std::pair<std::uint64_t, Val>> entries;
  for (std::uint64_t k = 0; k < 500; ++k) entries.push_back({k, make_val(k, 1)});
  std::vector<MapStatus> st(entries.size(), MapStatus::corrupted);
  m.put_many(entries, st);
  for (MapStatus s : st) REQUIRE(str(s) == "ok");
  CHECK(m.size() == 500);

  std::vector<std::uint64_t> keys;
  for (std::uint64_t k = 0; k < 600; k += 3) keys.push_back(k);  // some absent (>= 500)
  std::vector<std::optional<Val>> out(keys.size());
  m.get_many(keys, out);
  for (std::size_t i = 0; i < keys.size(); ++i) {
    if (keys[i] < 500) {
      REQUIRE(out[i].has_value());
      CHECK(check(*out[i], keys[i]));
    } else {
      CHECK_FALSE(out[i].has_value());
    }
  }
  // Bytes-level get_many reports per-key statuses, too large keys included.
  std::vector<std::string_view> bk = {std::string_view("\0\0\0\0\0\0\0\0", 8), std::string_view("123456789")};
  std::vector<MapStatus> bs(2);
  int found = 0;
  m.bytes_map().get_many(bk, bs, [&](std::size_t i, std::string_view) { found += i == 0; });
  CHECK(str(bs[0]) == "ok");
  CHECK(found == 1);
  CHECK(str(bs[1]) == "too_large");

  // Iteration: each key exactly once, in the shard shard_of() names.
  std::vector<int> seen(500, 0);
  int wrong_shard = 0, torn = 0;
  for (std::uint32_t s = 0; s < m.shard_count(); ++s)
    CHECK(str(m.for_each_in_shard(s, [&](std::uint64_t k, const Val& v) {
            ++seen.at(k);
            wrong_shard += m.shard_of(k) != s;
            torn += !check(v, k);
          })) == "ok");
  CHECK(wrong_shard == 0);
  CHECK(torn == 0);
  CHECK(std::count(seen.begin(), seen.end(), 1) == 500);
  CHECK(str(m.for_each_in_shard(8, [](std::uint64_t, const Val&) {})) == "not_found");

  MapStats stats = m.stats();
  CHECK(stats.size == 500);
  CHECK(stats.shards.size() == 8);
  std::uint64_t sum = 0;
  for (const ShardStats& s : stats.shards) {
    sum += s.size;
    CHECK(s.load_factor <= 0.75);
    CHECK(s.probe_avg >= 1.0);
    CHECK(s.probe_max >= 1);
    CHECK(s.rehashes >= 1);  // 16 slots could not hold ~62 entries
  }
  CHECK(sum == 500);

  CHECK(str(m.clear()) == "ok");
  CHECK(m.size() == 0);
  CHECK_FALSE(m.contains(3));
  int after = 0;
  m.for_each([&](std::uint64_t, const Val&) { ++after; });
  CHECK(after == 0);
  CHECK(str(m.insert(3, make_val(3, 2))) == "ok");
  CHECK(m.get(3)->version == 2u);
}

// ---------------------------------------------------------------------------
// Growth

TEST_CASE("growth: 20000 inserts into 8-slot shards while another process reads another shard") {
  TestDomain d;
  Segment seg = Segment::create("grow", opts(d, 16u << 20));
  auto m = HashMap<std::uint64_t, Val>::create(seg, "m", small_map(4, 8));
  // 4 keys that live in shard 0 for the reader; the writer avoids shard 0.
  std::vector<std::uint64_t> reader_keys;
  for (std::uint64_t k = 1ull << 40; reader_keys.size() < 4; ++k)
    if (m.shard_of(k) == 0) reader_keys.push_back(k);
  for (std::uint64_t k : reader_keys) REQUIRE(str(m.insert(k, make_val(k, 1))) == "ok");
  struct Board {
    std::atomic<int> stop;
    std::atomic<std::uint64_t> reads;
    std::atomic<std::uint64_t> bad;
  };
  Board& b = make_board<Board>(seg);
  Children kids;
  pid_t reader = kids.spawn([&] {
    Segment own = Segment::open("grow", {.domain = d.name()});
    auto rm = HashMap<std::uint64_t, Val>::open(own, "m");
    while (!b.stop.load()) {
      for (std::uint64_t k : reader_keys) {
        std::optional<Val> v = rm.get(k);
        if (!v || !check(*v, k)) b.bad.fetch_add(1);
        b.reads.fetch_add(1);
      }
    }
    return 0;
  });
  REQUIRE(eventually([&] { return b.reads.load() > 0; }));
  std::uint64_t inserted = 0;
  std::vector<std::uint64_t> reads_during;
  for (std::uint64_t k = 0; inserted < 20000; ++k) {
    if (m.shard_of(k) == 0) continue;
    REQUIRE(str(m.insert(k, make_val(k, 1))) == "ok");
    if (++inserted % 5000 == 0) reads_during.push_back(b.reads.load());
  }
  // The reader made progress while the other shards grew.
  REQUIRE(eventually([&] { return b.reads.load() > reads_during.back() + 100; }));
  b.stop.store(1);
  check_exit(kids.wait(reader));
  CHECK(b.bad.load() == 0);
  CHECK(reads_during.front() < reads_during.back());
  MESSAGE("reader did " << b.reads.load() << " reads during the growth");

  CHECK(m.size() == 20004);
  int missing = 0;
  for (std::uint64_t k = 0, n = 0; n < 20000; ++k) {
    if (m.shard_of(k) == 0) continue;
    ++n;
    std::optional<Val> v = m.get(k);
    missing += !v || !check(*v, k);
  }
  CHECK(missing == 0);
  MapStats s = m.stats();
  CHECK(s.shards[0].capacity == 8);  // untouched shard did not grow
  for (int i = 1; i < 4; ++i) {
    CHECK(s.shards[i].capacity >= 8192);
    CHECK(s.shards[i].rehashes >= 10);
    CHECK(s.shards[i].load_factor <= 0.75);
  }
  CHECK(table_objects(seg, "m") == 4);  // every old table was removed
}

// ---------------------------------------------------------------------------
// Multi-process

TEST_CASE("4 processes: random ops on disjoint key ranges match a model, shared counters add up") {
  TestDomain d;
  Segment seg = Segment::create("multi", opts(d, 8u << 20));
  MapOptions o = small_map(8, 16);
  o.max_key_bytes = 24;
  o.max_value_bytes = 48;
  BytesMap m = BytesMap::create(seg, "m", o);
  constexpr int kProcs = 4, kOps = 3000, kCounters = 6, kIncrements = 400;
  for (int c = 0; c < kCounters; ++c) {
    std::uint64_t zero = 0;
    REQUIRE(str(m.insert("ctr" + std::to_string(c), std::string_view(reinterpret_cast<const char*>(&zero), 8))) ==
            "ok");
  }
  struct Board {
    std::atomic<int> go;
    std::atomic<std::uint64_t> increments[kCounters];
  };
  Board& b = make_board<Board>(seg);
  const unsigned seed = ipc::test::seed();
  INFO("seed " << seed);
  Children kids;
  std::vector<pid_t> pids;
  for (int p = 0; p < kProcs; ++p)
    pids.push_back(kids.spawn([&, p]() -> int {
      Segment own = Segment::open("multi", {.domain = d.name()});
      BytesMap pm = BytesMap::open(own, "m");
      std::mt19937 rng(seed + p);
      std::map<std::string, std::string> model;
      if (!eventually([&] { return b.go.load() != 0; })) return 1;
      auto rand_value = [&] { return std::string(rng() % 49, static_cast<char>('a' + rng() % 26)); };
      for (int i = 0; i < kOps; ++i) {
        std::string key = "p" + std::to_string(p) + "-" + std::to_string(rng() % 300);
        auto it = model.find(key);
        std::string v, got;
        switch (rng() % 7) {
          case 0:
            v = rand_value();
            if (pm.insert(key, v) != (it == model.end() ? MapStatus::ok : MapStatus::already_exists)) return 10;
            model.emplace(key, v);
            break;
          case 1:
            v = rand_value();
            if (pm.insert_or_assign(key, v) != MapStatus::ok) return 11;
            model[key] = v;
            break;
          case 2:
            if (pm.erase(key) != (it == model.end() ? MapStatus::not_found : MapStatus::ok)) return 12;
            model.erase(key);
            break;
          case 3:
            if (pm.get(key, got) != (it == model.end() ? MapStatus::not_found : MapStatus::ok)) return 13;
            if (it != model.end() && got != it->second) return 14;
            break;
          case 4: {
            v = rand_value();
            MapStatus want = it == model.end() ? MapStatus::not_found : MapStatus::ok;
            if (pm.compare_exchange(key, it == model.end() ? "" : it->second, v) != want) return 15;
            if (it != model.end() && pm.compare_exchange(key, it->second + "!", "zz") != MapStatus::mismatch) return 16;
            if (it != model.end()) it->second = v;
            break;
          }
          case 5: {
            MapStatus st = pm.update(key, [](std::span<std::byte> val, std::uint32_t& len) {
              if (len >= val.size()) return false;
              val[len++] = std::byte{'+'};
              return true;
            });
            if (it == model.end() ? st != MapStatus::not_found
                                  : st != (it->second.size() < 48 ? MapStatus::ok : MapStatus::cancelled))
              return 17;
            if (it != model.end() && it->second.size() < 48) it->second += '+';
            break;
          }
          default: {
            int c = static_cast<int>(rng() % kCounters);
            MapStatus st = pm.update("ctr" + std::to_string(c), [](std::span<std::byte> val, std::uint32_t&) {
              std::uint64_t n;
              std::memcpy(&n, val.data(), 8);
              ++n;
              std::memcpy(val.data(), &n, 8);
              return true;
            });
            if (st != MapStatus::ok) return 18;
            b.increments[c].fetch_add(1);
          }
        }
      }
      for (int j = 0; j < kIncrements; ++j) {  // a burst of contended counter updates
        int c = j % kCounters;
        if (pm.update("ctr" + std::to_string(c), [](std::span<std::byte> val, std::uint32_t&) {
              std::uint64_t n;
              std::memcpy(&n, val.data(), 8);
              ++n;
              std::memcpy(val.data(), &n, 8);
              return true;
            }) != MapStatus::ok)
          return 19;
        b.increments[c].fetch_add(1);
      }
      // Final check of the whole range against the model, two ways.
      for (const auto& [k, v] : model) {
        std::string got;
        if (pm.get(k, got) != MapStatus::ok || got != v) return 20;
      }
      std::size_t mine = 0;
      const std::string prefix = "p" + std::to_string(p) + "-";
      bool mismatch = false;
      pm.for_each([&](std::string_view k, std::string_view v) {
        if (k.substr(0, prefix.size()) != prefix) return;
        ++mine;
        auto f = model.find(std::string(k));
        mismatch |= f == model.end() || f->second != v;
      });
      return mismatch ? 21 : mine == model.size() ? 0 : 22;
    }));
  b.go.store(1);
  for (pid_t p : pids) check_exit(kids.wait(p, 60s));
  std::uint64_t total = 0;
  for (int c = 0; c < kCounters; ++c) {
    std::string v;
    REQUIRE(str(m.get("ctr" + std::to_string(c), v)) == "ok");
    std::uint64_t n;
    std::memcpy(&n, v.data(), 8);
    CHECK(n == b.increments[c].load());
    total += n;
  }
  CHECK(total >= kProcs * kIncrements);
  std::uint64_t counted = 0;
  for (int c = 0; c < kCounters; ++c) counted += b.increments[c].load();
  CHECK(total == counted);
  MapStats s = m.stats();
  std::uint64_t waits = 0;
  for (const ShardStats& sh : s.shards) waits += sh.lock_waits;
  MESSAGE("lock waits across shards: " << waits);
  CHECK(s.size == m.size());
}

// ---------------------------------------------------------------------------
// Crashes

namespace {
constexpr int kWriters = 2, kKeysPerWriter = 48;
struct KeyRecord {
  std::atomic<std::uint64_t> acked_version;  // state after the last op that returned
  std::atomic<std::uint32_t> acked_present;
  std::atomic<std::uint64_t> intent_version;  // state the op in flight would leave
  std::atomic<std::uint32_t> intent_present;
};
struct CrashBoard {
  KeyRecord keys[kWriters][kKeysPerWriter];
  std::atomic<int> error;  // a writer's failure code (it does not exit: it waits to be killed)
  std::atomic<std::uint64_t> ops;
};
std::uint64_t crash_key(int w, int i) { return 1000u * (w + 1) + i; }

// One writer: sequential ops on its own keys, intent written before each op,
// ack after it returned.
int crash_writer(const TestDomain& d, int w, unsigned seed) {
  Segment own = Segment::open("crash", {.domain = d.name()});
  auto m = HashMap<std::uint64_t, Val>::open(own, "m");
  CrashBoard& b = own.open<CrashBoard>("board", ObjectType::raw);
  std::mt19937 rng(seed);
  auto fail = [&](int code) {
    b.error.store(code);
    for (;;) ::pause();
  };
  for (;;) {
    int i = static_cast<int>(rng() % kKeysPerWriter);
    std::uint64_t key = crash_key(w, i);
    KeyRecord& r = b.keys[w][i];
    const bool present = r.acked_present.load() != 0;
    const std::uint64_t cur = r.acked_version.load();
    const std::uint64_t next = std::max(cur, r.intent_version.load()) + 1;
    int op = static_cast<int>(rng() % 8);
    bool after_present = op == 7 ? false : (op == 5 || op == 6) ? present : true;
    r.intent_version.store(after_present ? (present || op < 5 ? next : cur) : cur);
    r.intent_present.store(after_present);
    MapStatus st;
    if (op < 4) {
      st = m.insert_or_assign(key, make_val(key, next));
    } else if (op == 4) {
      st = present ? m.insert_or_assign(key, make_val(key, next)) : m.insert(key, make_val(key, next));
    } else if (op == 5) {  // in-place update, field by field: a torn value is detectable
      std::uint64_t k = key;
      st = m.bytes_map().update(std::string_view(reinterpret_cast<const char*>(&k), 8),
                                [&](std::span<std::byte> val, std::uint32_t&) {
                                  auto* v = reinterpret_cast<volatile std::uint64_t*>(val.data());
                                  v[1] = next;
                                  for (int j = 0; j < 5; ++j) v[2 + j] = payload_word(key, next, j);
                                  Val full = make_val(key, next);
                                  v[7] = full.checksum;
                                  return true;
                                });
      if (!present && st == MapStatus::not_found) st = MapStatus::ok;
    } else if (op == 6) {
      st = present ? m.compare_exchange(key, make_val(key, cur), make_val(key, next)) : MapStatus::ok;
    } else {
      st = m.erase(key);
      if (!present && st == MapStatus::not_found) st = MapStatus::ok;
    }
    if (st != MapStatus::ok) fail(100 + op * 10 + static_cast<int>(st));
    r.acked_version.store(r.intent_version.load());
    r.acked_present.store(r.intent_present.load());
    b.ops.fetch_add(1);
  }
}
}  // namespace

TEST_CASE("crash: rounds of SIGKILLed writers, no torn value, no lost acknowledged write, no hang") {
  TestDomain d;
  Segment seg = Segment::create("crash", opts(d, 8u << 20));
  MapOptions o = small_map(4, 8);  // small tables: growth and tombstone rehashes happen under fire
  auto m = HashMap<std::uint64_t, Val>::create(seg, "m", o);
  CrashBoard& b = make_board<CrashBoard>(seg);
  const unsigned seed = ipc::test::seed();
  INFO("seed " << seed);
  std::mt19937 rng(seed);
  const int kRounds = ipc::test::iterations(120);
  int bad_rounds = 0;
  for (int round = 0; round < kRounds && bad_rounds == 0; ++round) {
    Children kids;
    std::vector<pid_t> pids;
    for (int w = 0; w < kWriters; ++w) {
      unsigned s = rng();
      pids.push_back(kids.spawn([&, w, s] { return crash_writer(d, w, s); }));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(500 + rng() % 4000));
    for (pid_t p : pids) kids.kill(p);
    REQUIRE(b.error.load() == 0);
    // Verify every key (the lookups repair the shards the writers died in),
    // then make the board match the map for the next round.
    for (int w = 0; w < kWriters; ++w)
      for (int i = 0; i < kKeysPerWriter; ++i) {
        std::uint64_t key = crash_key(w, i);
        KeyRecord& r = b.keys[w][i];
        std::optional<Val> v = m.get(key);
        bool torn = v && !check(*v, key);
        bool present = v.has_value();
        std::uint64_t version = v ? v->version : 0;
        bool as_acked = present == (r.acked_present.load() != 0) && (!present || version == r.acked_version.load());
        bool as_intent = present == (r.intent_present.load() != 0) && (!present || version == r.intent_version.load());
        if (torn || !(as_acked || as_intent)) {
          ++bad_rounds;
          FAIL_CHECK("round " << round << " key " << key << ": torn=" << torn << " present=" << present << " version="
                              << version << " acked=(" << r.acked_present.load() << "," << r.acked_version.load()
                              << ") intent=(" << r.intent_present.load() << "," << r.intent_version.load() << ")");
        }
        r.acked_present.store(present);
        r.intent_present.store(present);
        if (present) {
          r.acked_version.store(version);
          r.intent_version.store(version);
        }
      }
    // A full scan: only known keys, none torn, size consistent.
    std::size_t n = 0;
    int foreign = 0, torn = 0;
    m.for_each([&](std::uint64_t k, const Val& v) {
      ++n;
      foreign += k < 1000 || k >= 1000u * (kWriters + 1);
      torn += !check(v, k);
    });
    CHECK(foreign == 0);
    CHECK(torn == 0);
    CHECK(n == m.size());
  }
  MapStats s = m.stats();
  std::uint64_t repairs = 0, rehashes = 0;
  for (const ShardStats& sh : s.shards) {
    repairs += sh.repairs;
    rehashes += sh.rehashes;
  }
  MESSAGE(b.ops.load() << " acknowledged ops, " << repairs << " shard repairs, " << rehashes << " rehashes");
  CHECK(b.ops.load() > 0);
  CHECK(repairs > 0);
  CHECK(table_objects(seg, "m") == 4);  // no half-built or stale table left behind
}

TEST_CASE("crash during growth: writers SIGKILLed while tables double, repair finishes or undoes the switch") {
  TestDomain d;
  Segment seg = Segment::create("gcrash", opts(d, 16u << 20));
  struct Board {
    std::atomic<std::uint64_t> acked;  // keys 0..acked-1 were inserted and acknowledged
    std::atomic<int> error;
  };
  Board& b = make_board<Board>(seg);
  const unsigned seed = ipc::test::seed();
  INFO("seed " << seed);
  std::mt19937 rng(seed);
  const int rounds = ipc::test::iterations(40);
  int repaired_growths = 0;
  for (int round = 0; round < rounds; ++round) {
    const std::string name = "g" + std::to_string(round);
    b.acked.store(0);
    Children kids;
    pid_t p = kids.spawn([&] {
      auto m = HashMap<std::uint64_t, Val>::create(seg, name, small_map(1, 8));
      for (std::uint64_t k = 0;; ++k) {
        if (k == 20000)
          for (;;) ::pause();  // the segment holds this much, growth included
        if (m.insert(k, make_val(k, 1)) != MapStatus::ok) {
          b.error.store(1);
          for (;;) ::pause();
        }
        b.acked.store(k + 1);
      }
      return 0;
    });
    std::this_thread::sleep_for(std::chrono::microseconds(1000 + rng() % 6000));
    kids.kill(p);
    REQUIRE(b.error.load() == 0);
    std::optional<HashMap<std::uint64_t, Val>> m;
    try {
      m.emplace(HashMap<std::uint64_t, Val>::open(seg, name));
    } catch (const Error&) {  // killed while creating the map: nothing was acknowledged
      CHECK(b.acked.load() == 0);
      BytesMap::remove(seg, name);
      continue;
    }
    const std::uint64_t acked = b.acked.load();
    int lost = 0;
    for (std::uint64_t k = 0; k < acked; ++k) {
      std::optional<Val> v = m->get(k);  // the first lookup repairs
      lost += !v || !check(*v, k);
    }
    CHECK(lost == 0);
    CHECK(m->size() >= acked);
    CHECK(m->size() <= acked + 1);  // at most the insert in flight
    repaired_growths += m->stats().shards[0].repairs > 0;
    CHECK(table_objects(seg, name) == 1);  // the half-built or the old table is gone
    // Growth still works after the repair.
    for (std::uint64_t k = 0; k < acked + 64; ++k) REQUIRE(str(m->insert_or_assign(k, make_val(k, 2))) == "ok");
    CHECK(table_objects(seg, name) == 1);
    CHECK(BytesMap::remove(seg, name));
  }
  MESSAGE(repaired_growths << " of " << rounds << " rounds needed a repair");
  CHECK(seg.objects().size() == 1);  // only the board
}

// ---------------------------------------------------------------------------
// Bad input

TEST_CASE("bad input: sizes, full map without growth, no room to grow, wrong type, bad options") {
  TestDomain d;
  Segment seg = Segment::create("bad", opts(d));
  MapOptions o = small_map(2, 8);
  o.max_key_bytes = 8;
  o.max_value_bytes = 16;
  o.allow_growth = false;
  BytesMap m = BytesMap::create(seg, "m", o);

  CHECK(str(m.insert("123456789", "v")) == "too_large");
  CHECK(BytesMap::last_error().find("max_key_bytes") != std::string::npos);
  CHECK(BytesMap::last_error().find("'m'") != std::string::npos);
  CHECK(str(m.insert("k", std::string(17, 'x'))) == "too_large");
  CHECK(BytesMap::last_error().find("max_value_bytes") != std::string::npos);
  CHECK(str(m.insert("", "v")) == "too_large");
  CHECK(m.size() == 0);

  // 2 shards × 8 slots × 0.75: at most 6 per shard; then `full`.
  int ok = 0, full = 0;
  for (int k = 0; k < 40; ++k) {
    MapStatus s = m.insert("k" + std::to_string(k), "v");
    ok += s == MapStatus::ok;
    full += s == MapStatus::full;
  }
  CHECK(ok == 12);
  CHECK(full == 28);
  CHECK(BytesMap::last_error().find("growth is disabled") != std::string::npos);
  CHECK(m.size() == 12);

  // Growth that does not fit the segment: no_space, naming the shard; data intact.
  Segment tiny = Segment::create("tiny", opts(d, 64u << 10));
  MapOptions g = small_map(1, 64);
  g.max_value_bytes = 256;
  BytesMap tm = BytesMap::create(tiny, "t", g);
  MapStatus last = MapStatus::ok;
  int stored = 0;
  for (int k = 0; k < 1000 && last == MapStatus::ok; ++k) {
    last = tm.insert("k" + std::to_string(k), std::string(200, 'v'));
    stored += last == MapStatus::ok;
  }
  CHECK(str(last) == "no_space");
  CHECK(BytesMap::last_error().find("shard 0") != std::string::npos);
  CHECK(BytesMap::last_error().find("create the segment larger") != std::string::npos);
  CHECK(tm.size() == static_cast<std::size_t>(stored));
  std::string v;
  CHECK(str(tm.get("k0", v)) == "ok");
  CHECK(table_objects(tiny, "t") == 1);

  // Options and types.
  MapOptions zero = small_map(0, 8);
  CHECK_THROWS_WITH_AS(BytesMap::create(seg, "z", zero), doctest::Contains("shards = 0"), Error);
  MapOptions lf = small_map(1, 8);
  lf.max_load_factor = 1.0;
  CHECK_THROWS_WITH_AS(BytesMap::create(seg, "z", lf), doctest::Contains("max_load_factor"), Error);
  CHECK_THROWS_WITH_AS(BytesMap::create(seg, std::string(60, 'n'), small_map(1, 8)), doctest::Contains("name"), Error);
  CHECK_THROWS_WITH_AS(BytesMap::create(tiny, "huge", small_map(4, 1u << 16)), doctest::Contains("segment larger"),
                       Error);
  CHECK(table_objects(tiny, "huge") == 0);  // a failed create leaves nothing
  CHECK_FALSE(tiny.find_object("huge").has_value());
  seg.find_or_create<Semaphore>("sem", ObjectType::semaphore, 1u);
  try {
    BytesMap::open(seg, "sem");
    FAIL("opening a semaphore as a map must throw");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::type_mismatch);
    CHECK(std::string(e.what()).find("sem") != std::string::npos);
  }
  CHECK_THROWS_WITH_AS(BytesMap::open(seg, "absent"), doctest::Contains("absent"), Error);
  CHECK_THROWS_AS(BytesMap::create(seg, "m", o), Error);  // exists
  try {
    (void)HashMap<std::uint64_t, std::uint64_t>::open(seg, "m");  // 8-byte keys but 16-byte values
    FAIL("a typed open with the wrong value size must throw");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::invalid_argument);
    CHECK(std::string(e.what()).find("sizeof(V) = 8") != std::string::npos);
  }
  // remove() takes the header and every table.
  CHECK(BytesMap::remove(seg, "m"));
  CHECK(table_objects(seg, "m") == 0);
  CHECK_FALSE(BytesMap::remove(seg, "m"));
}
