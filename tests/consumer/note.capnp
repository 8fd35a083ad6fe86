# note.capnp — the consumer's own schema, compiled by ipc_capnp_schemas().
@0xd3b1c6f0a2e4f517;

$import "/capnp/c++.capnp".namespace("consumer");

struct Note {
  id @0 :UInt64;
  text @1 :Text;
  tags @2 :List(Text);
}
