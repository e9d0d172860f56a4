// Command-line parsing for the daemons: Abseil flags, spelled with dashes on the command line
// (--data-dir) as well as with underscores (--data_dir).
#pragma once

#include <string>
#include <vector>

namespace sluice {

// Parses the command line with absl::ParseCommandLine after rewriting "--foo-bar[=v]" into
// "--foo_bar[=v]". Exits with a usage error on unknown flags, as Abseil does.
void ParseFlags(int argc, char** argv);

}  // namespace sluice
