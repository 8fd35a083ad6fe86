# test_types.capnp — one struct with every Cap'n Proto field type, for the
# message layer's round-trip, mutation and fuzz tests (tests/message_test.cpp,
# fuzz/message_reader_fuzz.cpp).
@0xadc7fa98290b9a5b;

$import "/capnp/c++.capnp".namespace("ipc::test::schema");

enum Color {
  red @0;
  green @1;
  blue @2;
}

struct Inner {
  id @0 :UInt32;
  label @1 :Text;
  child @2 :Inner;          # recursion: nested structs of any depth
}

struct AllTypes {
  boolField @0 :Bool;
  int8Field @1 :Int8;
  int16Field @2 :Int16;
  int32Field @3 :Int32;
  int64Field @4 :Int64;
  uint8Field @5 :UInt8;
  uint16Field @6 :UInt16;
  uint32Field @7 :UInt32;
  uint64Field @8 :UInt64;
  float32Field @9 :Float32;
  float64Field @10 :Float64;
  textField @11 :Text;
  dataField @12 :Data;
  enumField @13 :Color;
  structField @14 :Inner;

  boolList @15 :List(Bool);
  int8List @16 :List(Int8);
  int16List @17 :List(Int16);
  int32List @18 :List(Int32);
  int64List @19 :List(Int64);
  uint8List @20 :List(UInt8);
  uint16List @21 :List(UInt16);
  uint32List @22 :List(UInt32);
  uint64List @23 :List(UInt64);
  float32List @24 :List(Float32);
  float64List @25 :List(Float64);
  textList @26 :List(Text);
  dataList @27 :List(Data);
  enumList @28 :List(Color);
  structList @29 :List(Inner);
  listList @30 :List(List(Int32));

  union {
    none @31 :Void;
    number @32 :Int64;
    word @33 :Text;
    nested @34 :Inner;
  }

  position :group {
    x @35 :Float64;
    y @36 :Float64;
    tag @37 :Text;
  }

  defaulted @38 :Int32 = 42;   # default values XOR-encode on the wire
}
