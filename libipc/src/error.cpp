#include "ipc/error.hpp"

#include <cerrno>
#include <cstring>

namespace ipc {

std::string_view to_string(ErrorCode code) noexcept {
  switch (code) {
    case ErrorCode::invalid_argument: return "invalid_argument";
    case ErrorCode::not_found: return "not_found";
    case ErrorCode::already_exists: return "already_exists";
    case ErrorCode::permission_denied: return "permission_denied";
    case ErrorCode::no_space: return "no_space";
    case ErrorCode::bad_magic: return "bad_magic";
    case ErrorCode::version_mismatch: return "version_mismatch";
    case ErrorCode::truncated: return "truncated";
    case ErrorCode::corrupted: return "corrupted";
    case ErrorCode::namespace_mismatch: return "namespace_mismatch";
    case ErrorCode::not_recoverable: return "not_recoverable";
    case ErrorCode::owner_died: return "owner_died";
    case ErrorCode::timeout: return "timeout";
    case ErrorCode::system: return "system";
    case ErrorCode::type_mismatch: return "type_mismatch";
  }
  return "unknown";
}

Error::Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}

void throw_errno(int err, const std::string& what) {
  ErrorCode code = ErrorCode::system;
  switch (err) {
    case EACCES:
    case EPERM: code = ErrorCode::permission_denied; break;
    case ENOENT: code = ErrorCode::not_found; break;
    case EEXIST: code = ErrorCode::already_exists; break;
    case ENOSPC:
    case ENOMEM: code = ErrorCode::no_space; break;
    case EINVAL:
    case ENAMETOOLONG: code = ErrorCode::invalid_argument; break;
    default: break;
  }
  throw Error(code, what + ": " + std::strerror(err));
}

}  // namespace ipc
