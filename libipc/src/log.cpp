#include "ipc/log.hpp"

#include <spdlog/sinks/stdout_color_sinks.h>

#include <cstdlib>
#include <mutex>

namespace ipc::log {

spdlog::logger& logger() {
  // Created once per process; spdlog's registry is not used so that a user's
  // own spdlog setup (set_default_logger, drop_all) cannot remove ours.
  static std::shared_ptr<spdlog::logger> instance = [] {
    auto sink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
    auto made = std::make_shared<spdlog::logger>("ipc", sink);
    made->set_pattern("[%H:%M:%S.%e] [ipc] [%l] [pid %P] %v");
    const char* level = std::getenv("IPC_LOG_LEVEL");
    made->set_level(level ? spdlog::level::from_str(level) : spdlog::level::warn);
    return made;
  }();
  return *instance;
}

}  // namespace ipc::log
