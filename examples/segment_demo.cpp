// segment_demo: the newest capability working between real processes.
// A coordinator creates a segment with named objects in it (a robust mutex
// guarding a shared counter, a barrier), forks workers that find the objects
// by name in their own mappings, meet at the barrier, and update the counter
// under the lock. One participant is killed with SIGKILL while holding the
// lock: the next locker repairs the counter from its journal, and the
// barrier, instead of hanging, releases the others naming the dead pid.
// Prints the directory and a few live figures.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "ipc/barrier.hpp"
#include "ipc/mutex.hpp"
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

}  // namespace

int main() {
  const std::string domain = "demo" + std::to_string(::getpid());
  ipc::SegmentOptions options;
  options.size = 4u << 20;
  options.domain = domain;

  auto t0 = std::chrono::steady_clock::now();
  ipc::Segment seg = ipc::Segment::create("main", options);
  auto t1 = std::chrono::steady_clock::now();
  auto& lock = seg.find_or_create<ipc::Mutex>("counter.lock", ipc::ObjectType::mutex);
  auto& counter = seg.find_or_create<Counter>("counter", ipc::ObjectType::raw);
  seg.find_or_create<ipc::Barrier>("start", ipc::ObjectType::barrier, kWorkers + 1);
  seg.create_object("notes", ipc::ObjectType::raw, 1024);

  std::printf("libipc demo — segment %s (%zu KiB), created in %.1f us\n", seg.info().path.c_str(),
              seg.size() >> 10, std::chrono::duration<double, std::micro>(t1 - t0).count());

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

  std::printf("\nobjects in the segment (as any process sees them):\n");
  std::printf("  %-14s %-8s %8s %8s %6s\n", "name", "type", "offset", "size", "gen");
  for (const ipc::ObjectInfo& o : seg.objects())
    std::printf("  %-14s %-8s %8llu %8llu %6llu\n", o.name.c_str(), ipc::to_string(o.type),
                static_cast<unsigned long long>(o.offset), static_cast<unsigned long long>(o.size),
                static_cast<unsigned long long>(o.generation));

  ipc::LockInfo li = lock.info();
  std::uint64_t expected = std::uint64_t{kWorkers} * kIncrements;
  std::printf("\n%d worker processes x %d locked increments; 1 participant SIGKILLed holding the lock\n", kWorkers,
              kIncrements);
  std::printf("  counter = %llu (expected %llu) %s\n", static_cast<unsigned long long>(counter.value),
              static_cast<unsigned long long>(expected), counter.value == expected ? "OK" : "WRONG");
  std::printf("  repairs after owner death = %llu\n", static_cast<unsigned long long>(counter.repairs));
  std::printf("  barrier: %u workers released by the broken barrier, which named pid %u (killed: %d)\n",
              counter.broken_seen.load(), counter.dead_pid.load(), victim);
  std::printf("  lock acquisitions = %llu, %.2f M/s across processes, %.0f ns each\n",
              static_cast<unsigned long long>(li.acquisitions), static_cast<double>(li.acquisitions) / secs / 1e6,
              secs * 1e9 / static_cast<double>(li.acquisitions));

  ipc::Segment::unlink("main", domain);
  bool ok = counter.value == expected && counter.repairs == 1 && counter.broken_seen.load() == kWorkers &&
            counter.dead_pid.load() == static_cast<std::uint32_t>(victim);
  return ok ? 0 : 1;
}
