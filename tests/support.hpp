// tests/support.hpp — helpers every libipc test uses.
//
// TestDomain: a domain name unique to this test (pid + counter) whose
// destructor removes every /dev/shm/ipc.<domain>.* file, also when the test
// failed. Segments of a test process that was killed outright are removed by
// the `cleanup_stale_test_segments` CTest fixture (tests/cleanup.cpp), which
// deletes ipc.t<pid>x* files whose pid no longer runs.
//
// Child processes: fork_child(fn) runs fn in a real forked process; the
// child's exit code is fn's return value (an exception → 100). Children
// never return into doctest (they _exit). wait_child(pid, timeout) reaps it,
// and SIGKILLs it on timeout so that a test fails instead of hanging.
// Children (below) kills and reaps every child a test started, also when the
// test leaves early through a failed REQUIRE; eventually() polls with a
// deadline; make_board<T>() places a zeroed struct in a segment.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include "ipc/error.hpp"
#include "ipc/pool.hpp"
#include "ipc/channel_message.hpp"
#include "ipc/segment.hpp"

// doctest prints these by name (found by argument-dependent lookup).
namespace ipc {
std::ostream& operator<<(std::ostream& os, ErrorCode c);
std::ostream& operator<<(std::ostream& os, SendStatus s);
std::ostream& operator<<(std::ostream& os, ReceiveStatus s);
std::ostream& operator<<(std::ostream& os, AllocStatus s);
std::ostream& operator<<(std::ostream& os, BufferPool::HandleStatus s);
std::ostream& operator<<(std::ostream& os, PressureLevel l);
std::ostream& operator<<(std::ostream& os, const BufferHandle& h);
}  // namespace ipc

namespace ipc::test {

class TestDomain {
 public:
  TestDomain();
  ~TestDomain();
  TestDomain(const TestDomain&) = delete;
  TestDomain& operator=(const TestDomain&) = delete;
  const std::string& name() const { return name_; }
  operator const std::string&() const { return name_; }
  // Number of /dev/shm files this domain currently has.
  int leftover_files() const;

 private:
  std::string name_;
};

// Removes every /dev/shm/ipc.<domain>.* file; returns how many.
int remove_domain_files(const std::string& domain);

pid_t fork_child(const std::function<int()>& fn);

struct ChildExit {
  bool exited = false;      // normal exit
  int code = -1;            // exit code if exited
  bool signaled = false;
  int signal = 0;
  bool timed_out = false;   // we had to SIGKILL it
};
ChildExit wait_child(pid_t pid, std::chrono::milliseconds timeout = std::chrono::seconds(30));

// Convenience: true when the child exited normally with code 0.
inline bool child_ok(const ChildExit& e) { return e.exited && e.code == 0 && !e.timed_out; }

// Kills with SIGKILL and reaps.
void kill_child(pid_t pid);

// A random number generator seeded from the test's pid and time (printed on failure by the test).
unsigned test_seed();


// ---- shared by the multi-process tests ----

// Options for a test segment in domain d (1 MiB unless told otherwise).
inline ipc::SegmentOptions opts(const TestDomain& d, std::size_t size = 1u << 20) {
  ipc::SegmentOptions o;
  o.size = size;
  o.domain = d.name();
  return o;
}

// CLOCK_MONOTONIC now, in ns (comparable across processes).
inline std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// A value-initialised (all zero) struct T in the segment.
template <typename T>
T& make_board(ipc::Segment& seg, const char* name = "board") {
  return seg.find_or_create<T>(name, ipc::ObjectType::raw);
}

// Polls `pred` until it holds or `timeout` passes; never hangs. Usable in children.
template <typename Pred>
bool eventually(Pred pred, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  return true;
}

// Forked children that are SIGKILLed and reaped when the test leaves early.
class Children {
 public:
  // `default_timeout`: how long wait() waits for a child unless told otherwise.
  explicit Children(std::chrono::milliseconds default_timeout = std::chrono::seconds(15))
      : default_timeout_(default_timeout) {}
  Children(const Children&) = delete;
  Children& operator=(const Children&) = delete;
  ~Children() {
    for (pid_t p : live_) test::kill_child(p);
  }
  pid_t spawn(const std::function<int()>& fn) {
    pid_t p = test::fork_child(fn);
    live_.push_back(p);
    return p;
  }
  test::ChildExit wait(pid_t p) { return wait(p, default_timeout_); }
  test::ChildExit wait(pid_t p, std::chrono::milliseconds timeout) {
    std::erase(live_, p);
    return test::wait_child(p, timeout);
  }
  void kill(pid_t p) {
    std::erase(live_, p);
    test::kill_child(p);
  }

 private:
  std::chrono::milliseconds default_timeout_;
  std::vector<pid_t> live_;
};

inline void check_exit(const test::ChildExit& e, const std::string& what = "child") {
  CHECK_MESSAGE(test::child_ok(e), what << ": exited=" << e.exited << " code=" << e.code << " signaled="
                                        << e.signaled << " signal=" << e.signal << " timed_out=" << e.timed_out);
}

}  // namespace ipc::test
