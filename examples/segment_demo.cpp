// segment_demo: the newest capability working between real processes.
// A coordinator creates a segment with named objects in it (a robust mutex
// guarding a shared counter, a barrier), forks workers that find the objects
// by name in their own mappings, meet at the barrier, and update the counter
// under the lock. One participant is killed with SIGKILL while holding the
// lock: the next locker repairs the counter from its journal, and the
// barrier, instead of hanging, releases the others naming the dead pid.
// Then the buffer pool: one process fills buffers and hands them over
// zero-copy (only 16-byte handles cross), another adopts and reads them; a
// third grabs buffers and is SIGKILLed, and reclaim_dead() gives every one
// back. Prints the directory and a few live figures.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "ipc/barrier.hpp"
#include "ipc/mutex.hpp"
#include "ipc/pool.hpp"
#include "ipc/segment.hpp"

namespace {

// Guarded data with a one-entry journal, so a dead writer's half-done update
// can be undone: `pending` holds the value before the update started.
struct Counter {
  std::uint64_t value;
  std::uint64_t pending;  // 0 = no update in flight, else old value + 1
  std::uint64_t repairs;
  std::atomic<std::uint32_t> broken_seen;  // workers released by a broken barrier
  std::atomic<std::uint32_t> dead_pid;     // the pid the barrier named
};

constexpr int kWorkers = 3;
constexpr int kIncrements = 200000;

void add_one(ipc::Mutex& m, Counter& c) {
  ipc::LockResult r = m.lock();
  if (r == ipc::LockResult::owner_died) {
    if (c.pending != 0) c.value = c.pending - 1;  // roll back the dead writer's update
    c.pending = 0;
    ++c.repairs;
    m.mark_consistent();
  } else if (r != ipc::LockResult::acquired) {
    std::fprintf(stderr, "lock failed: %s\n", ipc::to_string(r));
    std::exit(1);
  }
  c.pending = c.value + 1;
  c.value = c.value + 1;
  c.pending = 0;
  m.unlock();
}

struct HandOver {
  std::atomic<std::uint32_t> count;
  std::atomic<std::uint32_t> grabbed;
  ipc::BufferHandle handles[64];
};

bool pool_demo(ipc::Segment& seg, const std::string& domain) {
  ipc::PoolConfig cfg;
  cfg.class_sizes = {256, 4096, 65536};
  cfg.buffers_per_class = 64;
  ipc::BufferPool pool = ipc::BufferPool::create(seg, "buffers", cfg);
  auto& box = seg.find_or_create<HandOver>("handover", ipc::ObjectType::raw);

  // Producer: fills 64 buffers of 4 KiB and hands them over.
  pid_t producer = ::fork();
  if (producer == 0) {
    ipc::Segment mine = ipc::Segment::open("main", {.domain = domain});
    ipc::BufferPool p = ipc::BufferPool::open(mine, "buffers");
    auto& b = mine.open<HandOver>("handover", ipc::ObjectType::raw);
    for (std::uint32_t i = 0; i < 64; ++i) {
      ipc::Allocation a = p.allocate(4000);
      if (!a) ::_exit(1);
      std::snprintf(reinterpret_cast<char*>(a.buffer.data()), 64, "message %u from pid %d", i, ::getpid());
      b.handles[i] = a.buffer.detach();  // the reference now travels with the handle
    }
    b.count.store(64);
    ::_exit(0);
  }
  ::waitpid(producer, nullptr, 0);
  // Consumer: adopts every handle, reads the bytes in place, releases.
  pid_t consumer = ::fork();
  if (consumer == 0) {
    ipc::Segment mine = ipc::Segment::open("main", {.domain = domain});
    ipc::BufferPool p = ipc::BufferPool::open(mine, "buffers");
    auto& b = mine.open<HandOver>("handover", ipc::ObjectType::raw);
    char expect[64];
    for (std::uint32_t i = 0; i < b.count.load(); ++i) {
      std::optional<ipc::Buffer> got = p.adopt(b.handles[i], static_cast<std::uint32_t>(producer));
      std::snprintf(expect, sizeof expect, "message %u from pid %d", i, producer);
      if (!got || std::strcmp(reinterpret_cast<char*>(got->data()), expect) != 0) ::_exit(1);
    }
    ::_exit(0);
  }
  int status = 0;
  ::waitpid(consumer, &status, 0);
  bool handover_ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  // A process that grabs buffers and is killed.
  pid_t victim = ::fork();
  if (victim == 0) {
    ipc::Segment mine = ipc::Segment::open("main", {.domain = domain});
    ipc::BufferPool p = ipc::BufferPool::open(mine, "buffers");
    auto& b = mine.open<HandOver>("handover", ipc::ObjectType::raw);
    std::vector<ipc::Buffer> held;
    for (int i = 0; i < 50; ++i) held.push_back(std::move(p.allocate(60000).buffer));
    b.grabbed.store(1);
    for (;;) ::pause();
  }
  while (box.grabbed.load() == 0) std::this_thread::yield();
  ipc::PoolStats before = pool.stats();
  ::kill(victim, SIGKILL);
  ::waitpid(victim, nullptr, 0);
  std::uint32_t reclaimed = pool.reclaim_dead();
  ipc::PoolStats after = pool.stats();

  // A live figure: alloc + free of 256 B from this process.
  constexpr int kOps = 200000;
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < kOps; ++i) {
    ipc::Allocation a = pool.allocate(200);
    a.buffer.data()[0] = std::byte{1};
  }
  double ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count() / kOps;
  pool.flush();

  std::printf("\nbuffer pool 'buffers' (3 classes x 64 buffers, %llu KiB):\n",
              static_cast<unsigned long long>(before.capacity_bytes >> 10));
  std::printf("  64 x 4 KiB messages handed from pid %d to pid %d zero-copy (16-byte handles): %s\n", producer,
              consumer, handover_ok ? "all read intact" : "FAILED");
  std::printf("  pid %d held 50 x 64 KiB buffers (pressure %s) and was SIGKILLed; reclaim_dead() returned %u\n", victim,
              ipc::to_string(before.pressure), reclaimed);
  std::printf("  in use after reclaim: %llu bytes; alloc+free of 256 B: %.0f ns\n",
              static_cast<unsigned long long>(after.claimed_bytes), ns);
  const bool ok = handover_ok && reclaimed == 50 && after.claimed_bytes == 0;
  std::printf("  buffer pool: %s\n", ok ? "PASS" : "FAIL");
  return ok;
}

}  // namespace

int run(const std::string& domain);

int main() {
  const std::string domain = "demo" + std::to_string(::getpid());
  int rc = 1;
  try {
    rc = run(domain);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "demo failed: %s\n", e.what());
  }
  // Whatever happened, leave nothing in /dev/shm.
  for (const std::string& name : ipc::Segment::list(domain)) ipc::Segment::unlink(name, domain);
  return rc;
}

int run(const std::string& domain) {
  ipc::SegmentOptions options;
  options.size = 16u << 20;
  options.domain = domain;

  auto t0 = std::chrono::steady_clock::now();
  ipc::Segment seg = ipc::Segment::create("main", options);
  auto t1 = std::chrono::steady_clock::now();
  auto& lock = seg.find_or_create<ipc::Mutex>("counter.lock", ipc::ObjectType::mutex);
  auto& counter = seg.find_or_create<Counter>("counter", ipc::ObjectType::raw);
  seg.find_or_create<ipc::Barrier>("start", ipc::ObjectType::barrier, kWorkers + 1);
  seg.create_object("notes", ipc::ObjectType::raw, 1024);

  std::printf("libipc demo — segment %s (%zu KiB), created in %.1f us\n", seg.info().path.c_str(), seg.size() >> 10,
              std::chrono::duration<double, std::micro>(t1 - t0).count());

  std::printf("\nobjects in the segment (as any process sees them):\n");
  std::printf("  %-14s %-8s %8s %8s %6s\n", "name", "type", "offset", "size", "gen");
  for (const ipc::ObjectInfo& o : seg.objects())
    std::printf("  %-14s %-8s %8llu %8llu %6llu\n", o.name.c_str(), ipc::to_string(o.type),
                static_cast<unsigned long long>(o.offset), static_cast<unsigned long long>(o.size),
                static_cast<unsigned long long>(o.generation));

  std::printf("\n%d worker processes x %d locked increments; 1 participant SIGKILLed holding the lock\n", kWorkers,
              kIncrements);
  std::printf("  (libipc logs two warnings about this on stderr: expected, the kill is on purpose)\n");
  std::fflush(stdout);  // before the children's log lines

  // Workers: separate processes, each maps the segment and finds objects by name.
  std::vector<pid_t> workers;
  auto w0 = std::chrono::steady_clock::now();
  for (int w = 0; w < kWorkers; ++w) {
    pid_t pid = ::fork();
    if (pid == 0) {
      ipc::Segment mine = ipc::Segment::open("main", {.domain = domain});
      auto& m = mine.open<ipc::Mutex>("counter.lock", ipc::ObjectType::mutex);
      auto& c = mine.open<Counter>("counter", ipc::ObjectType::raw);
      auto& b = mine.open<ipc::Barrier>("start", ipc::ObjectType::barrier);
      b.join();
      if (b.arrive_and_wait_for(std::chrono::seconds(10)).status != ipc::BarrierResult::ok) ::_exit(2);
      for (int i = 0; i < kIncrements; ++i) add_one(m, c);
      // Phase 2 needs every participant; one of them is dead by now.
      ipc::BarrierResult r = b.arrive_and_wait_for(std::chrono::seconds(10));
      if (r.status == ipc::BarrierResult::broken) {
        c.dead_pid.store(r.dead_pid);
        c.broken_seen.fetch_add(1);
      }
      ::_exit(0);
    }
    workers.push_back(pid);
  }
  // A victim: takes the lock, starts an update, and is killed mid-way.
  pid_t victim = ::fork();
  if (victim == 0) {
    ipc::Segment mine = ipc::Segment::open("main", {.domain = domain});
    auto& m = mine.open<ipc::Mutex>("counter.lock", ipc::ObjectType::mutex);
    auto& c = mine.open<Counter>("counter", ipc::ObjectType::raw);
    auto& b = mine.open<ipc::Barrier>("start", ipc::ObjectType::barrier);
    b.join();
    if (b.arrive_and_wait_for(std::chrono::seconds(10)).status != ipc::BarrierResult::ok) ::_exit(2);
    if (!ipc::owns(m.lock())) ::_exit(1);
    c.pending = c.value + 1;
    c.value += 1000000;  // half-done, wrong update
    for (;;) ::pause();
  }
  while (lock.info().owner_pid != static_cast<std::uint32_t>(victim)) std::this_thread::yield();
  ::kill(victim, SIGKILL);
  ::waitpid(victim, nullptr, 0);
  for (pid_t pid : workers) ::waitpid(pid, nullptr, 0);
  auto w1 = std::chrono::steady_clock::now();
  double secs = std::chrono::duration<double>(w1 - w0).count();

  ipc::LockInfo li = lock.info();
  std::uint64_t expected = std::uint64_t{kWorkers} * kIncrements;
  std::printf("\nafter the kill:\n");
  std::printf("  counter = %llu (expected %llu) %s\n", static_cast<unsigned long long>(counter.value),
              static_cast<unsigned long long>(expected), counter.value == expected ? "OK" : "WRONG");
  std::printf("  repairs after owner death = %llu\n", static_cast<unsigned long long>(counter.repairs));
  std::printf("  barrier: %u workers released by the broken barrier, which named pid %u (killed: %d)\n",
              counter.broken_seen.load(), counter.dead_pid.load(), victim);
  std::printf("  lock acquisitions = %llu, %.2f M/s across processes, %.0f ns each\n",
              static_cast<unsigned long long>(li.acquisitions), static_cast<double>(li.acquisitions) / secs / 1e6,
              secs * 1e9 / static_cast<double>(li.acquisitions));

  const bool sync_ok = counter.value == expected && counter.repairs == 1 && counter.broken_seen.load() == kWorkers &&
                       counter.dead_pid.load() == static_cast<std::uint32_t>(victim);
  std::printf("  robust mutex and barrier: %s\n", sync_ok ? "PASS" : "FAIL");

  bool pool_ok = pool_demo(seg, domain);

  ipc::Segment::unlink("main", domain);
  const bool ok = pool_ok && sync_ok;
  std::printf("\n%s\n", ok ? "segment demo: all checks passed" : "segment demo: CHECKS FAILED");
  return ok ? 0 : 1;
}
