// Process setup shared by sluice-controlplane and sluice-agent.
#pragma once

#include <functional>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace sluice {

// Call first in main(), before any thread starts: blocks SIGINT and SIGTERM (so that only
// WaitForShutdownSignal receives them), ignores SIGPIPE, sets umask 077 (keys, tokens and
// databases are private to this user), raises the open-file limit to the hard limit, parses the
// flags, names the log component and sets the log format (--log-format=text|json; exits with
// status 2 on another value).
void InitDaemon(int argc, char** argv, absl::string_view component, absl::string_view usage);

// Blocks until SIGINT or SIGTERM arrives (returns the signal), or until `keep_waiting` returns
// false (checked every 200 ms; returns 0).
int WaitForShutdownSignal(const std::function<bool()>& keep_waiting = nullptr);

// Logs a failed status and returns main()'s exit code.
int ExitCode(const absl::Status& status);

}  // namespace sluice
