#include "ipc/endpoint.hpp"

namespace ipc {

const char* to_string(TypedStatus s) noexcept {
  switch (s) {
    case TypedStatus::ok: return "ok";
    case TypedStatus::empty: return "empty";
    case TypedStatus::timed_out: return "timed_out";
    case TypedStatus::full: return "full";
    case TypedStatus::too_large: return "too_large";
    case TypedStatus::no_buffers: return "no_buffers";
    case TypedStatus::malformed: return "malformed";
    case TypedStatus::failed: return "failed";
  }
  return "unknown";
}

namespace detail {

TypedStatus typed_status(SendStatus s) noexcept {
  switch (s) {
    case SendStatus::ok: return TypedStatus::ok;
    case SendStatus::full: return TypedStatus::full;
    case SendStatus::timed_out: return TypedStatus::timed_out;
    case SendStatus::too_large: return TypedStatus::too_large;
    case SendStatus::no_pool:
    case SendStatus::bad_buffer: return TypedStatus::failed;
  }
  return TypedStatus::failed;
}

}  // namespace detail
}  // namespace ipc
