#include "support.hpp"

#include <dirent.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <exception>
#include <thread>

namespace ipc {
std::ostream& operator<<(std::ostream& os, ErrorCode c) { return os << to_string(c); }
std::ostream& operator<<(std::ostream& os, SendStatus s) { return os << to_string(s); }
std::ostream& operator<<(std::ostream& os, ReceiveStatus s) { return os << to_string(s); }
std::ostream& operator<<(std::ostream& os, AllocStatus s) { return os << to_string(s); }
std::ostream& operator<<(std::ostream& os, BufferPool::HandleStatus s) { return os << BufferPool::to_string(s); }
std::ostream& operator<<(std::ostream& os, PressureLevel l) { return os << to_string(l); }
std::ostream& operator<<(std::ostream& os, const BufferHandle& h) {
  return os << "{pool " << h.pool_id << " class " << h.size_class << " index " << h.index << " gen " << h.generation
            << "}";
}
}  // namespace ipc

namespace ipc::test {
namespace {
std::atomic<int> g_counter{0};
}

TestDomain::TestDomain() {
  name_ = "t" + std::to_string(::getpid()) + "x" + std::to_string(g_counter.fetch_add(1));
  remove_domain_files(name_);
}

TestDomain::~TestDomain() { remove_domain_files(name_); }

static int scan_domain(const std::string& domain, bool remove) {
  std::string prefix = "ipc." + domain + ".";
  int n = 0;
  DIR* dir = ::opendir("/dev/shm");
  if (!dir) return 0;
  while (dirent* e = ::readdir(dir)) {
    std::string name = e->d_name;
    if (name.compare(0, prefix.size(), prefix) != 0) continue;
    ++n;
    if (remove) ::unlink(("/dev/shm/" + name).c_str());
  }
  ::closedir(dir);
  return n;
}

int TestDomain::leftover_files() const { return scan_domain(name_, false); }
int remove_domain_files(const std::string& domain) { return scan_domain(domain, true); }

pid_t fork_child(const std::function<int()>& fn) {
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) {
    std::perror("fork");
    std::abort();
  }
  if (pid == 0) {
    int code = 100;
    try {
      code = fn();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "child %d: exception: %s\n", ::getpid(), e.what());
    } catch (...) {
      std::fprintf(stderr, "child %d: unknown exception\n", ::getpid());
    }
    std::fflush(nullptr);
    ::_exit(code);
  }
  return pid;
}

ChildExit wait_child(pid_t pid, std::chrono::milliseconds timeout) {
  ChildExit out;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  int status = 0;
  for (;;) {
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (r < 0) return out;
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      out.timed_out = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (WIFEXITED(status)) {
    out.exited = true;
    out.code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    out.signaled = true;
    out.signal = WTERMSIG(status);
  }
  return out;
}

void kill_child(pid_t pid) {
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
}

unsigned test_seed() {
  return static_cast<unsigned>(::getpid()) * 2654435761u ^
         static_cast<unsigned>(std::chrono::steady_clock::now().time_since_epoch().count());
}

}  // namespace ipc::test
