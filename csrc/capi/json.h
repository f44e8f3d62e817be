// A small strict JSON reader for the artefact metadata (RFC 8259 values; no comments, no trailing commas).
// libtorch ships no JSON library, and the metadata must be read field by field, not matched by pattern: a
// hostile file may put any text anywhere.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace mdanet::capi {

struct Json {
  enum class Kind { Null, Bool, Number, String, Array, Object };
  Kind kind = Kind::Null;
  bool boolean = false;
  double number = 0.0;
  std::string text;
  std::vector<Json> items;
  std::map<std::string, Json> members;

  // Parse `text`; throws std::invalid_argument naming the offset of the first error.
  static Json parse(const std::string& text);

  bool is_object() const { return kind == Kind::Object; }
  // The member `key` of an object, or nullptr when this is not an object or has no such member.
  const Json* find(const std::string& key) const;
  // An integer in [low, high] (a number without fraction), else throws std::invalid_argument naming `what`.
  int64_t integer(const std::string& what, int64_t low, int64_t high) const;
  // A string, else throws std::invalid_argument naming `what`.
  const std::string& string(const std::string& what) const;
};

}  // namespace mdanet::capi
