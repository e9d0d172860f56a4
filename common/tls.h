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

// OK when `name` can be a certificate's subjectAltName here: a DNS host name (letters, digits,
// '-', '.', at most 253 characters, no wildcard) or an IPv4/IPv6 address.
absl::Status CheckTlsName(const std::string& name);

// Names a certificate for an agent may always carry: localhost, 127.0.0.1, ::1.
const std::vector<std::string>& LoopbackTlsNames();

// A PKCS#10 certificate request (PEM) for the public half of `key_pem`, with `common_name` and
// `hosts` (DNS names or IP addresses) as subjectAltNames.
absl::StatusOr<std::string> CreateCsr(const std::string& key_pem, const std::string& common_name,
                                      const std::vector<std::string>& hosts);

// The subjectAltNames a certificate request asks for (DNS names and IP addresses as text); an
// error for anything else, or for what is not a request.
absl::StatusOr<std::vector<std::string>> CsrHosts(const std::string& csr_pem);

// A server certificate signed by `ca` for the request's public key, after checking the request's
// own signature and key (EC P-256, or RSA of 2048 bits or more). The certificate's names are
// `common_name` and `hosts`, chosen by the signer, not taken from the request.
absl::StatusOr<std::string> SignCsr(const PemKeyPair& ca, const std::string& csr_pem,
                                    const std::string& common_name,
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
