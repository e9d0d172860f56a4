// Reading fields of audit event bodies (JSON objects the agent wrote): a missing field, or one
// of another type, reads as empty / 0 — bodies from older agents lack newer fields.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace sluice {

inline std::string JsonStr(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

inline int64_t JsonInt(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_number_integer() ? it->get<int64_t>() : 0;
}

}  // namespace sluice
