// Removes /dev/shm/ipc.t<pid>x* files left by test processes that were killed
// (e.g. by a CTest timeout) before their TestDomain destructor ran. Files of
// test processes that still run are left alone. Runs as a CTest fixture.
#include <dirent.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <string>

int main() {
  DIR* dir = ::opendir("/dev/shm");
  if (!dir) return 0;
  int removed = 0;
  while (dirent* e = ::readdir(dir)) {
    std::string name = e->d_name;
    if (name.rfind("ipc.t", 0) != 0) continue;
    char* end = nullptr;
    long pid = std::strtol(name.c_str() + 5, &end, 10);
    if (pid <= 0 || *end != 'x') continue;
    if (::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM) continue;
    if (::unlink(("/dev/shm/" + name).c_str()) == 0) ++removed;
  }
  ::closedir(dir);
  std::printf("removed %d stale test segment(s)\n", removed);
  return 0;
}
