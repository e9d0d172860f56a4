// The server side of TLS for every listener of the agent, set up in one place: TLS 1.2 or later
// only, the certificate chain and its key from PEM files.
#pragma once

#include <asio/ssl.hpp>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace sluice::agent::net {

// Loads `cert_file` (PEM chain) and `key_file` into `ctx`, with SSLv2/3, TLS 1.0 and 1.1 off.
// The error names the listener (`what`, e.g. "PostgreSQL") and the file.
absl::Status ConfigureServerTls(asio::ssl::context* ctx, const std::string& cert_file,
                                const std::string& key_file, absl::string_view what);

}  // namespace sluice::agent::net
