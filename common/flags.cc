#include "common/flags.h"

#include <algorithm>

#include "absl/flags/parse.h"

namespace sluice {

void ParseFlags(int argc, char** argv) {
  static std::vector<std::string> storage;  // argv strings must outlive parsing
  storage.assign(argv, argv + argc);
  for (size_t i = 1; i < storage.size(); ++i) {
    std::string& a = storage[i];
    if (a == "--") break;
    if (a.size() < 3 || a[0] != '-' || a[1] != '-') continue;
    size_t end = a.find('=');
    if (end == std::string::npos) end = a.size();
    std::replace(a.begin() + 2, a.begin() + static_cast<std::ptrdiff_t>(end), '-', '_');
  }
  std::vector<char*> args;
  for (auto& s : storage) args.push_back(s.data());
  absl::ParseCommandLine(static_cast<int>(args.size()), args.data());
}

}  // namespace sluice
