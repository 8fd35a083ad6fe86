#include "support.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <map>
#include <optional>
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

// fork(), after flushing stdio (so that the child does not write the
// parent's buffered output again); aborts if fork fails.
static pid_t fork_or_abort() {
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) {
    std::perror("fork");
    std::abort();
  }
  return pid;
}

pid_t fork_child(const std::function<int()>& fn) {
  pid_t pid = fork_or_abort();
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

namespace {
std::map<std::string, RoleFn>& roles() {
  static std::map<std::string, RoleFn> r;  // filled by static Role objects, before main()
  return r;
}
}  // namespace

Role::Role(const char* name, RoleFn fn) { roles()[name] = fn; }

ChildExit run_role(const std::string& name, const std::vector<std::string>& env, const std::string& output_path,
                   std::chrono::milliseconds timeout) {
  pid_t pid = fork_or_abort();
  if (pid == 0) {
    int fd = ::open(output_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) ::_exit(101);
    ::dup2(fd, STDOUT_FILENO);
    ::dup2(fd, STDERR_FILENO);
    ::setenv("IPC_TEST_ROLE", name.c_str(), 1);
    for (const std::string& e : env) {
      const std::size_t eq = e.find('=');
      if (eq == std::string::npos)
        ::unsetenv(e.c_str());
      else
        ::setenv(e.substr(0, eq).c_str(), e.substr(eq + 1).c_str(), 1);
    }
    char self[] = "/proc/self/exe";
    char* argv[] = {self, nullptr};
    ::execv(self, argv);
    ::_exit(102);
  }
  return wait_child(pid, timeout);
}

bool play_role(int& exit_code) {
  const char* name = std::getenv("IPC_TEST_ROLE");
  if (!name) return false;
  auto it = roles().find(name);
  if (it == roles().end()) {
    std::fprintf(stderr, "no test role '%s'\n", name);
    exit_code = 103;
    return true;
  }
  exit_code = 100;
  try {
    exit_code = it->second();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "role %s: exception: %s\n", name, e.what());
  }
  std::fflush(nullptr);
  return true;
}

std::string read_file(const std::string& path) {
  std::string out;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return out;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return out;
}

namespace {
// A positive number from the environment variable `name`, or nullopt.
std::optional<unsigned long> env_number(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  unsigned long n = std::strtoul(v, &end, 0);
  if (errno != 0 || *end != '\0') {
    MESSAGE(name << "='" << v << "' is not a number: ignored");
    return std::nullopt;
  }
  return n;
}
}  // namespace

unsigned seed() {
  unsigned s = 0;
  if (auto env = env_number("IPC_TEST_SEED")) {
    s = static_cast<unsigned>(*env);
    MESSAGE("seed " << s << " (from IPC_TEST_SEED)");
  } else {
    s = static_cast<unsigned>(::getpid()) * 2654435761u ^
        static_cast<unsigned>(std::chrono::steady_clock::now().time_since_epoch().count());
    MESSAGE("seed " << s << " (replay with IPC_TEST_SEED=" << s << ")");
  }
  return s;
}

int iterations(int default_count) {
  int n = default_count;
  if (auto env = env_number("IPC_TEST_ITERATIONS"); env && *env > 0 && *env <= 100'000'000ul) {
    n = static_cast<int>(*env);
    MESSAGE(n << " iterations (from IPC_TEST_ITERATIONS; default " << default_count << ")");
  } else {
    MESSAGE(n << " iterations (set IPC_TEST_ITERATIONS to change)");
  }
  return n;
}

}  // namespace ipc::test
