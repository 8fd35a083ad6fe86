// consumer_core: libipc::core only. Creates a segment in a domain of its
// own, places an ipc::Mutex in it, has a forked child lock it (the parent
// sees it held by the child), then has a child die holding it (the parent
// gets owner_died and repairs), and unlinks the segment. Exit 0 = all good.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <exception>
#include <string>

#include "ipc/mutex.hpp"
#include "ipc/segment.hpp"

namespace {

int failures = 0;

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "consumer_core: FAILED: %s\n", what);
    ++failures;
  }
}

struct Shared {
  std::uint64_t value;
};

// Runs fn in a child process; returns its exit status (or -1).
template <typename Fn>
int in_child(Fn fn) {
  pid_t pid = ::fork();
  if (pid < 0) return -1;
  if (pid == 0) ::_exit(fn());
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) return -1;
  return WEXITSTATUS(status);
}

int run(const std::string& domain) {
  // Designated initialisers that skip fields, under -Wall -Wextra -Werror
  // (GCC 12's -Wmissing-field-initializers): the option structs allow them.
  // A domain of our own: /dev/shm/ipc.<domain>.mutex.
  ipc::Segment seg = ipc::Segment::create("mutex", {.size = 1u << 20, .domain = domain});
  auto& mutex = seg.find_or_create<ipc::Mutex>("lock", ipc::ObjectType::mutex);
  auto& shared = seg.find_or_create<Shared>("shared", ipc::ObjectType::raw);
  check(mutex.valid(), "mutex valid after creation");

  // 1. A child (with its own mapping) holds the lock: the parent sees it busy
  //    and owned by the child's pid; the child unlocks when told.
  int to_child[2], to_parent[2];
  if (::pipe(to_child) != 0 || ::pipe(to_parent) != 0) return 1;
  pid_t child = ::fork();
  if (child < 0) return 1;
  if (child == 0) {
    ipc::Segment mine = ipc::Segment::open("mutex", {.domain = domain});
    auto& m = mine.open<ipc::Mutex>("lock", ipc::ObjectType::mutex);
    if (m.lock() != ipc::LockResult::acquired) ::_exit(2);
    mine.open<Shared>("shared", ipc::ObjectType::raw).value = 42;
    char c = 'L';
    if (::write(to_parent[1], &c, 1) != 1 || ::read(to_child[0], &c, 1) != 1) ::_exit(3);
    m.unlock();
    ::_exit(0);
  }
  char c = 0;
  check(::read(to_parent[0], &c, 1) == 1 && c == 'L', "child reports it holds the lock");
  check(mutex.try_lock() == ipc::LockResult::timed_out, "try_lock fails while the child holds the lock");
  check(mutex.info().owner_pid == static_cast<std::uint32_t>(child), "owner is the child");
  c = 'U';
  check(::write(to_child[1], &c, 1) == 1, "tell the child to unlock");
  int status = 0;
  check(::waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0, "child exit 0");
  ipc::LockResult r = mutex.lock();
  check(r == ipc::LockResult::acquired, "parent locks after the child unlocked");
  check(shared.value == 42, "parent sees the child's write made under the lock");
  if (ipc::owns(r)) mutex.unlock();

  // 2. A child dies holding the lock: the parent gets owner_died and repairs.
  int rc = in_child([&] {
    ipc::Segment mine = ipc::Segment::open("mutex", {.domain = domain});
    auto& m = mine.open<ipc::Mutex>("lock", ipc::ObjectType::mutex);
    return m.lock() == ipc::LockResult::acquired ? 0 : 2;  // exits holding it
  });
  check(rc == 0, "second child locked");
  r = mutex.lock();
  check(r == ipc::LockResult::owner_died, "owner_died after the holder died");
  if (ipc::owns(r)) {
    check(mutex.mark_consistent(), "mark_consistent");
    mutex.unlock();
  }
  r = mutex.lock();
  check(r == ipc::LockResult::acquired, "acquired after repair");
  if (ipc::owns(r)) mutex.unlock();
  check(mutex.info().acquisitions >= 3, "acquisitions counted");
  return 0;
}

}  // namespace

int main() {
  const std::string domain = "consumer-core-" + std::to_string(::getpid());
  int rc = 1;
  try {
    rc = run(domain);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "consumer_core: %s\n", e.what());
  }
  bool removed = false;
  try {
    removed = ipc::Segment::unlink("mutex", domain);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "consumer_core: unlink: %s\n", e.what());
  }
  check(removed, "segment unlinked");
  check(ipc::Segment::list(domain).empty(), "no segment left in the domain");
  if (rc != 0 || failures != 0) return 1;
  std::printf("consumer_core: ok\n");
  return 0;
}
