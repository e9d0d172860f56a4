// A private certificate authority for deployments that bring no certificates of their own.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace sluice {

struct PemKeyPair {
  std::string cert_pem;
  std::string key_pem;
};

// A new ECDSA P-256 private key, PEM (PKCS#8).
absl::StatusOr<std::string> GenerateEcPrivateKeyPem();

// A self-signed CA certificate (ECDSA P-256, 10 years).
absl::StatusOr<PemKeyPair> GenerateCa(const std::string& common_name);

// A server certificate signed by `ca` for `hosts` (DNS names or IP addresses, put in the
// subjectAltName), ECDSA P-256, valid for `days`.
absl::StatusOr<PemKeyPair> IssueServerCert(const PemKeyPair& ca, const std::string& common_name,
                                           const std::vector<std::string>& hosts, int days);

// Files a TLS server needs, created by EnsureServerTls when absent.
struct ServerTlsFiles {
  std::string ca_cert;      // path of the CA certificate clients must trust
  std::string server_cert;  // path of the server certificate chain
  std::string server_key;   // path of the server private key (0600)
  bool created = false;     // true when this call created them
};

// Uses `dir`/ca.crt, ca.key, server.crt, server.key, creating a private CA and a server
// certificate for localhost, 127.0.0.1, ::1, this host's name and `extra_hosts` on first use.
absl::StatusOr<ServerTlsFiles> EnsureServerTls(const std::string& dir,
                                               const std::vector<std::string>& extra_hosts);

}  // namespace sluice
