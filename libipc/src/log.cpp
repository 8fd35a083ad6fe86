#include "log.hpp"

#include <spdlog/sinks/stdout_color_sinks.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <string>

namespace ipc::log {
namespace {

// IPC_LOG_LEVEL → a level; nullopt for a value spdlog does not name
// (spdlog's own from_str maps every unknown name to "off", which silently
// switched all logging off).
std::optional<spdlog::level::level_enum> parse_level(std::string value) {
  std::transform(value.begin(), value.end(), value.begin(), [](unsigned char c) { return std::tolower(c); });
  if (value == "warn") value = "warning";  // spdlog's names are "warning" and "error"
  if (value == "err") value = "error";
  for (int l = spdlog::level::trace; l < spdlog::level::n_levels; ++l) {
    const auto level = static_cast<spdlog::level::level_enum>(l);
    if (value == spdlog::level::to_string_view(level)) return level;
  }
  return std::nullopt;
}

}  // namespace

spdlog::logger& logger() {
  // Created once per process; spdlog's registry is not used so that a user's
  // own spdlog setup (set_default_logger, drop_all) cannot remove ours.
  static std::shared_ptr<spdlog::logger> instance = [] {
    auto sink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
    auto made = std::make_shared<spdlog::logger>("ipc", sink);
    made->set_pattern("[%H:%M:%S.%e] [ipc] [%l] [pid %P] %v");
    made->set_level(spdlog::level::warn);
    if (const char* value = std::getenv("IPC_LOG_LEVEL")) {
      if (auto level = parse_level(value)) {
        made->set_level(*level);
      } else {
        made->warn(
            "IPC_LOG_LEVEL='{}' is not a log level; using 'warn' (one of: trace, debug, info, warn, error, "
            "critical, off)",
            value);
      }
    }
    return made;
  }();
  return *instance;
}

}  // namespace ipc::log
