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
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <string>

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

}  // namespace ipc::test
