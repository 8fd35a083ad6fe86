// tests/schemas/walk_message.hpp — reads every field of a capnp struct
// through the dynamic (schema-driven) API: every scalar, every byte of Text
// and Data, every list element, recursively. The message tests and the fuzz
// target use it to "traverse the root fully" whatever the schema. A corrupt
// message makes some accessor throw kj::Exception; callers catch it (e.g.
// through MessageReader::visit).
#pragma once

#include <capnp/dynamic.h>
#include <capnp/schema.h>

#include <cstdint>
#include <cstring>

namespace ipc::test {

// Returns a digest of everything read, so the reads cannot be optimised away.
inline std::uint64_t walk_value(const capnp::DynamicValue::Reader& v, int depth = 0);

inline std::uint64_t walk_struct(const capnp::DynamicStruct::Reader& s, int depth = 0) {
  std::uint64_t h = 0;
  if (depth > 100) return h;  // capnp's nesting limit (64) throws first
  auto schema = s.getSchema();
  KJ_IF_MAYBE (active, s.which()) {
    h += walk_value(s.get(*active), depth + 1);
  }
  for (auto field : schema.getNonUnionFields()) {
    if (field.getType().isStruct() || field.getType().isList() || field.getType().isText() ||
        field.getType().isData()) {
      if (!s.has(field)) continue;
    }
    h = h * 31 + walk_value(s.get(field), depth + 1);
  }
  return h;
}

inline std::uint64_t walk_value(const capnp::DynamicValue::Reader& v, int depth) {
  switch (v.getType()) {
    case capnp::DynamicValue::VOID: return 1;
    case capnp::DynamicValue::BOOL: return v.as<bool>() ? 3 : 2;
    case capnp::DynamicValue::INT: return static_cast<std::uint64_t>(v.as<std::int64_t>());
    case capnp::DynamicValue::UINT: return v.as<std::uint64_t>();
    case capnp::DynamicValue::FLOAT: {  // the bits: a hostile double may not convert to an integer
      const double d = v.as<double>();
      std::uint64_t bits;
      std::memcpy(&bits, &d, sizeof bits);
      return bits;
    }
      return static_cast<std::uint64_t>(v.as<double>() * 7);
    case capnp::DynamicValue::ENUM: return v.as<capnp::DynamicEnum>().getRaw();
    case capnp::DynamicValue::TEXT: {
      std::uint64_t h = 0;
      for (char c : v.as<capnp::Text>()) h = h * 131 + static_cast<unsigned char>(c);
      return h;
    }
    case capnp::DynamicValue::DATA: {
      std::uint64_t h = 0;
      for (auto b : v.as<capnp::Data>()) h = h * 131 + b;
      return h;
    }
    case capnp::DynamicValue::LIST: {
      std::uint64_t h = 0;
      for (auto e : v.as<capnp::DynamicList>()) h = h * 17 + walk_value(e, depth + 1);
      return h;
    }
    case capnp::DynamicValue::STRUCT: return walk_struct(v.as<capnp::DynamicStruct>(), depth + 1);
    default: return 0;  // interfaces, AnyPointer: not in our schemas
  }
}

}  // namespace ipc::test
