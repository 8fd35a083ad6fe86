// log.hpp (private to libipc/src) — the small logging facade every part of
// libipc uses. Not installed: spdlog stays a private dependency.
//
// One spdlog logger named "ipc", created on first use, writing to stderr.
// The level comes from the environment variable IPC_LOG_LEVEL (trace, debug,
// info, warn or warning, error or err, critical, off; any case; default warn)
// so that a library never chats on a user's terminal unless asked. An
// unknown or empty value keeps the default and says so once, on stderr.
// Hot paths do not log.
#pragma once

#include <spdlog/spdlog.h>

namespace ipc::log {

// The shared logger; thread-safe; never null.
spdlog::logger& logger();

template <typename... Args>
void debug(spdlog::format_string_t<Args...> fmt, Args&&... args) {
  logger().debug(fmt, std::forward<Args>(args)...);
}
template <typename... Args>
void info(spdlog::format_string_t<Args...> fmt, Args&&... args) {
  logger().info(fmt, std::forward<Args>(args)...);
}
template <typename... Args>
void warn(spdlog::format_string_t<Args...> fmt, Args&&... args) {
  logger().warn(fmt, std::forward<Args>(args)...);
}
template <typename... Args>
void error(spdlog::format_string_t<Args...> fmt, Args&&... args) {
  logger().error(fmt, std::forward<Args>(args)...);
}

}  // namespace ipc::log
