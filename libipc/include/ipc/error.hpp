// ipc/error.hpp — the one exception type of libipc.
//
// Setup paths (create/open/attach, object creation, bad arguments) throw
// `ipc::Error`: a machine-readable `ErrorCode` plus a message that names the
// object concerned and says what to do. Hot paths (lock, send, receive,
// allocate) never throw; they return a status or std::optional instead.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

namespace ipc {

enum class ErrorCode : std::uint32_t {
  invalid_argument = 1,  // a caller passed a bad name, size, mode, ...
  not_found,             // the named segment or object does not exist
  already_exists,        // create of a name that is taken (or taken with another size)
  permission_denied,     // the OS refused access (mode, owner, group)
  no_space,              // /dev/shm or the segment is full
  bad_magic,             // not a libipc segment / object
  version_mismatch,      // created by an incompatible libipc layout version
  truncated,             // the file is smaller than its header says
  corrupted,             // checksum or structural invariant violated
  namespace_mismatch,    // created in another PID namespace
  not_recoverable,       // a lock whose guarded data was never repaired
  owner_died,            // a participant died (barrier, ...) — message names the pid
  timeout,               // a timed setup operation ran out of time
  system,                // an unexpected errno; message carries strerror
  type_mismatch,         // the name is an object of another type; the message names both
};

std::string_view to_string(ErrorCode code) noexcept;

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message);
  ErrorCode code() const noexcept { return code_; }

 private:
  ErrorCode code_;
};

// Throws Error{ErrorCode::system, "<what>: <strerror(err)>"}, mapping the
// errno values with a code of their own (EACCES, ENOENT, EEXIST, ENOSPC).
[[noreturn]] void throw_errno(int err, const std::string& what);

// `text` with control bytes, DEL and bytes that are not well-formed UTF-8
// written as \xNN (what every Error message goes through, so a name with an
// embedded NUL or invalid UTF-8 is shown, not cut short or passed on).
std::string printable(std::string_view text);

}  // namespace ipc
