// doctest's main, unless this process was started to play a test role
// (support.hpp: Role, run_role).
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include "support.hpp"

int main(int argc, char** argv) {
  int code = 0;
  if (ipc::test::play_role(code)) return code;
  doctest::Context context(argc, argv);
  return context.run();
}
