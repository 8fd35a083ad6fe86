# bench_message.capnp — the message of bench/message_bench: a sequence number
# and a list of 64-bit words (8 elements = the 64 B message, 131072 = 1 MiB).
# The receiver reads `seq` and the last element of `payload`.
@0xcbe89de3b5198958;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("ipc::bench::schema");

struct BenchMessage {
  seq @0 :UInt64;
  payload @1 :List(UInt64);
}
