#include "ipc/error.hpp"

#include <cerrno>
#include <cstdio>
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

namespace {

// Length of the well-formed UTF-8 sequence at s[i] (1–4), or 0 if it is not one.
std::size_t utf8_length(std::string_view s, std::size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  std::size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
  if (n == 0 || i + n > s.size()) return 0;
  for (std::size_t k = 1; k < n; ++k)
    if ((static_cast<unsigned char>(s[i + k]) & 0xc0) != 0x80) return 0;
  if (n == 2 && c < 0xc2) return 0;  // overlong
  return n;
}

}  // namespace

std::string printable(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size();) {
    const auto c = static_cast<unsigned char>(text[i]);
    const std::size_t n = utf8_length(text, i);
    if (n > 1 || (n == 1 && c >= 0x20 && c != 0x7f) || c == '\n') {
      out.append(text.substr(i, n));
      i += n;
      continue;
    }
    char hex[8];
    std::snprintf(hex, sizeof hex, "\\x%02x", c);
    out += hex;
    ++i;
  }
  return out;
}

// Messages often quote what a caller passed (a name with a NUL or invalid
// UTF-8 in it): what() shows such bytes as \xNN instead of ending at the NUL.
Error::Error(ErrorCode code, const std::string& message) : std::runtime_error(printable(message)), code_(code) {}

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
