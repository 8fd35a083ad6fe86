# events.capnp — system events published on the broadcast bus (issue #8).
#
# One Event per occurrence: when (CLOCK_MONOTONIC ns, comparable across
# processes on this host), who (source pid), how bad (severity), and what (a
# union of concrete events). New event kinds are added as new union members
# with new ordinals; never renumber or retype an existing field.
@0x9880b97a600c432e;

$import "/capnp/c++.capnp".namespace("ipc::schema");

enum Severity {
  debug @0;
  info @1;
  warning @2;
  error @3;
  critical @4;
}

# Pool utilisation bands, as ipc::PressureLevel (pool.hpp).
enum PressureLevel {
  none @0;
  low @1;
  medium @2;
  high @3;
  critical @4;
}

struct Event {
  timestampNs @0 :Int64;    # CLOCK_MONOTONIC, ns
  sourcePid @1 :UInt32;
  severity @2 :Severity;

  union {
    processDied :group {
      pid @3 :UInt32;
      signal @4 :Int32;      # 0 if it exited without a signal
    }
    segmentCreated :group {
      name @5 :Text;
      size @6 :UInt64;       # bytes
    }
    poolPressure :group {
      pool @7 :Text;
      level @8 :PressureLevel;
    }
    custom :group {
      topic @9 :Text;
      body @10 :Data;
    }
  }
}
