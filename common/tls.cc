#include "common/tls.h"

#include <arpa/inet.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <unistd.h>

#include <memory>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/crypto.h"
#include "common/files.h"
#include "common/status_macros.h"

namespace sluice {
namespace {

struct Free {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
  void operator()(X509* p) const { X509_free(p); }
  void operator()(BIO* p) const { BIO_free(p); }
  void operator()(X509_EXTENSION* p) const { X509_EXTENSION_free(p); }
  void operator()(X509_REQ* p) const { X509_REQ_free(p); }
};
template <typename T>
using Ptr = std::unique_ptr<T, Free>;

std::string BioToString(BIO* bio) {
  char* data = nullptr;
  long len = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<size_t>(len));
}

absl::StatusOr<std::string> KeyToPem(EVP_PKEY* key) {
  Ptr<BIO> bio(BIO_new(BIO_s_mem()));
  if (!PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr)) {
    return absl::InternalError("cannot encode private key");
  }
  return BioToString(bio.get());
}

absl::StatusOr<std::string> CertToPem(X509* cert) {
  Ptr<BIO> bio(BIO_new(BIO_s_mem()));
  if (!PEM_write_bio_X509(bio.get(), cert)) return absl::InternalError("cannot encode certificate");
  return BioToString(bio.get());
}

bool AddExt(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  Ptr<X509_EXTENSION> ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str()));
  return ext && X509_add_ext(cert, ext.get(), -1) == 1;
}

absl::StatusOr<Ptr<X509>> NewCert(EVP_PKEY* key, const std::string& cn, int days) {
  Ptr<X509> cert(X509_new());
  if (!cert) return absl::InternalError("X509_new failed");
  X509_set_version(cert.get(), 2);
  std::string serial = RandomBytes(16);
  serial[0] &= 0x7f;
  BIGNUM* bn = BN_bin2bn(reinterpret_cast<const unsigned char*>(serial.data()), 16, nullptr);
  BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get()));
  BN_free(bn);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), static_cast<long>(days) * 24 * 3600);
  X509_set_pubkey(cert.get(), key);
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("Sluice"), -1, -1, 0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  return cert;
}

bool LooksLikeIp(const std::string& host) {
  return host.find_first_not_of("0123456789.") == std::string::npos ||
         host.find(':') != std::string::npos;
}

// A subjectAltName value for `hosts`: "DNS:a,IP:10.0.0.1".
std::string SubjectAltNames(const std::vector<std::string>& hosts) {
  std::vector<std::string> sans;
  for (const std::string& h : hosts)
    sans.push_back(absl::StrCat(LooksLikeIp(h) ? "IP:" : "DNS:", h));
  return absl::StrJoin(sans, ",");
}

}  // namespace

absl::StatusOr<std::string> GenerateEcPrivateKeyPem() {
  Ptr<EVP_PKEY> key(EVP_EC_gen("P-256"));
  if (!key) return absl::InternalError("cannot generate an EC key");
  return KeyToPem(key.get());
}

absl::StatusOr<PemKeyPair> GenerateCa(const std::string& common_name) {
  Ptr<EVP_PKEY> key(EVP_EC_gen("P-256"));
  if (!key) return absl::InternalError("cannot generate CA key");
  ASSIGN_OR_RETURN(Ptr<X509> cert, NewCert(key.get(), common_name, 3650));
  X509_set_issuer_name(cert.get(), X509_get_subject_name(cert.get()));
  if (!AddExt(cert.get(), cert.get(), NID_basic_constraints, "critical,CA:TRUE,pathlen:0") ||
      !AddExt(cert.get(), cert.get(), NID_key_usage, "critical,keyCertSign,cRLSign") ||
      !AddExt(cert.get(), cert.get(), NID_subject_key_identifier, "hash")) {
    return absl::InternalError("cannot add CA extensions");
  }
  if (X509_sign(cert.get(), key.get(), EVP_sha256()) == 0)
    return absl::InternalError("cannot sign CA");
  PemKeyPair out;
  ASSIGN_OR_RETURN(out.cert_pem, CertToPem(cert.get()));
  ASSIGN_OR_RETURN(out.key_pem, KeyToPem(key.get()));
  return out;
}

namespace {

// A server certificate for `key` (a public key), signed by `ca`.
absl::StatusOr<std::string> SignServerCert(const PemKeyPair& ca, EVP_PKEY* key,
                                           const std::string& common_name,
                                           const std::vector<std::string>& hosts, int days) {
  Ptr<BIO> ca_cert_bio(BIO_new_mem_buf(ca.cert_pem.data(), static_cast<int>(ca.cert_pem.size())));
  Ptr<X509> ca_cert(PEM_read_bio_X509(ca_cert_bio.get(), nullptr, nullptr, nullptr));
  Ptr<BIO> ca_key_bio(BIO_new_mem_buf(ca.key_pem.data(), static_cast<int>(ca.key_pem.size())));
  Ptr<EVP_PKEY> ca_key(PEM_read_bio_PrivateKey(ca_key_bio.get(), nullptr, nullptr, nullptr));
  if (!ca_cert || !ca_key)
    return absl::InvalidArgumentError("cannot read the CA certificate or key");
  ASSIGN_OR_RETURN(Ptr<X509> cert, NewCert(key, common_name, days));
  X509_set_issuer_name(cert.get(), X509_get_subject_name(ca_cert.get()));
  if (!AddExt(cert.get(), ca_cert.get(), NID_basic_constraints, "critical,CA:FALSE") ||
      !AddExt(cert.get(), ca_cert.get(), NID_key_usage,
              "critical,digitalSignature,keyEncipherment") ||
      !AddExt(cert.get(), ca_cert.get(), NID_ext_key_usage, "serverAuth,clientAuth") ||
      (!hosts.empty() &&
       !AddExt(cert.get(), ca_cert.get(), NID_subject_alt_name, SubjectAltNames(hosts)))) {
    return absl::InternalError("cannot add server certificate extensions");
  }
  if (X509_sign(cert.get(), ca_key.get(), EVP_sha256()) == 0) {
    return absl::InternalError("cannot sign server certificate");
  }
  return CertToPem(cert.get());
}

Ptr<X509_REQ> ReadCsr(const std::string& csr_pem) {
  Ptr<BIO> bio(BIO_new_mem_buf(csr_pem.data(), static_cast<int>(csr_pem.size())));
  return Ptr<X509_REQ>(PEM_read_bio_X509_REQ(bio.get(), nullptr, nullptr, nullptr));
}

}  // namespace

absl::StatusOr<PemKeyPair> IssueServerCert(const PemKeyPair& ca, const std::string& common_name,
                                           const std::vector<std::string>& hosts, int days) {
  Ptr<EVP_PKEY> key(EVP_EC_gen("P-256"));
  if (!key) return absl::InternalError("cannot generate server key");
  PemKeyPair out;
  ASSIGN_OR_RETURN(out.cert_pem, SignServerCert(ca, key.get(), common_name, hosts, days));
  ASSIGN_OR_RETURN(out.key_pem, KeyToPem(key.get()));
  return out;
}

absl::Status CheckTlsName(const std::string& name) {
  unsigned char ip[16];
  if (inet_pton(AF_INET, name.c_str(), ip) == 1 || inet_pton(AF_INET6, name.c_str(), ip) == 1) {
    return absl::OkStatus();
  }
  if (name.empty() || name.size() > 253) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", name.substr(0, 64), "' is not a host name (1 to 253 characters)"));
  }
  for (absl::string_view label : absl::StrSplit(name, '.')) {
    bool ok = !label.empty() && label.size() <= 63 && label.front() != '-' && label.back() != '-';
    for (char c : label) ok = ok && (absl::ascii_isalnum(c) || c == '-');
    if (!ok) {
      return absl::InvalidArgumentError(absl::StrCat(
          "'", name,
          "' is not a host name or IP address (labels of letters, digits and '-', no wildcards)"));
    }
  }
  return absl::OkStatus();
}

const std::vector<std::string>& LoopbackTlsNames() {
  static const auto* names = new std::vector<std::string>{"localhost", "127.0.0.1", "::1"};
  return *names;
}

absl::StatusOr<std::string> CreateCsr(const std::string& key_pem, const std::string& common_name,
                                      const std::vector<std::string>& hosts) {
  Ptr<BIO> key_bio(BIO_new_mem_buf(key_pem.data(), static_cast<int>(key_pem.size())));
  Ptr<EVP_PKEY> key(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr));
  if (!key) return absl::InvalidArgumentError("cannot read the private key");
  Ptr<X509_REQ> req(X509_REQ_new());
  if (!req) return absl::InternalError("X509_REQ_new failed");
  X509_REQ_set_version(req.get(), 0);
  X509_NAME* name = X509_REQ_get_subject_name(req.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(common_name.c_str()), -1, -1,
                             0);
  X509_REQ_set_pubkey(req.get(), key.get());
  if (!hosts.empty()) {
    STACK_OF(X509_EXTENSION)* exts = sk_X509_EXTENSION_new_null();
    X509_EXTENSION* san =
        X509V3_EXT_conf_nid(nullptr, nullptr, NID_subject_alt_name, SubjectAltNames(hosts).c_str());
    bool ok = san != nullptr && sk_X509_EXTENSION_push(exts, san) > 0 &&
              X509_REQ_add_extensions(req.get(), exts) == 1;
    if (san != nullptr && !ok) X509_EXTENSION_free(san);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    if (!ok)
      return absl::InvalidArgumentError(
          absl::StrCat("cannot encode the names ", absl::StrJoin(hosts, ", ")));
  }
  if (X509_REQ_sign(req.get(), key.get(), EVP_sha256()) == 0)
    return absl::InternalError("cannot sign the request");
  Ptr<BIO> out(BIO_new(BIO_s_mem()));
  if (!PEM_write_bio_X509_REQ(out.get(), req.get()))
    return absl::InternalError("cannot encode the request");
  return BioToString(out.get());
}

absl::StatusOr<std::vector<std::string>> CsrHosts(const std::string& csr_pem) {
  Ptr<X509_REQ> req = ReadCsr(csr_pem);
  if (!req) return absl::InvalidArgumentError("not a PEM certificate request");
  std::vector<std::string> out;
  STACK_OF(X509_EXTENSION)* exts = X509_REQ_get_extensions(req.get());
  if (exts == nullptr) return out;
  int at = X509v3_get_ext_by_NID(exts, NID_subject_alt_name, -1);
  GENERAL_NAMES* names =
      at < 0 ? nullptr
             : static_cast<GENERAL_NAMES*>(X509V3_EXT_d2i(sk_X509_EXTENSION_value(exts, at)));
  sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
  if (names == nullptr) return out;
  absl::Status bad;
  for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* n = sk_GENERAL_NAME_value(names, i);
    if (n->type == GEN_DNS) {
      const ASN1_IA5STRING* s = n->d.dNSName;
      out.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                       static_cast<size_t>(ASN1_STRING_length(s)));
    } else if (n->type == GEN_IPADD) {
      const ASN1_OCTET_STRING* ip = n->d.iPAddress;
      int len = ASN1_STRING_length(ip);
      char text[INET6_ADDRSTRLEN] = {0};
      if ((len != 4 && len != 16) ||
          inet_ntop(len == 4 ? AF_INET : AF_INET6, ASN1_STRING_get0_data(ip), text, sizeof(text)) ==
              nullptr) {
        bad = absl::InvalidArgumentError("the request holds a malformed IP address");
      } else {
        out.emplace_back(text);
      }
    } else {
      bad = absl::InvalidArgumentError(
          "the request names something other than DNS names and IP addresses");
    }
  }
  GENERAL_NAMES_free(names);
  if (!bad.ok()) return bad;
  return out;
}

absl::StatusOr<std::string> SignCsr(const PemKeyPair& ca, const std::string& csr_pem,
                                    const std::string& common_name,
                                    const std::vector<std::string>& hosts, int days) {
  Ptr<X509_REQ> req = ReadCsr(csr_pem);
  if (!req) return absl::InvalidArgumentError("not a PEM certificate request");
  EVP_PKEY* key = X509_REQ_get0_pubkey(req.get());
  if (key == nullptr)
    return absl::InvalidArgumentError("the certificate request holds no public key");
  if (X509_REQ_verify(req.get(), key) != 1) {
    return absl::InvalidArgumentError("the certificate request's signature does not verify");
  }
  bool ec_p256 = EVP_PKEY_is_a(key, "EC") && EVP_PKEY_get_bits(key) == 256;
  bool rsa = EVP_PKEY_is_a(key, "RSA") && EVP_PKEY_get_bits(key) >= 2048;
  if (!ec_p256 && !rsa) {
    return absl::InvalidArgumentError(
        "the certificate request's key must be EC P-256 or RSA of 2048 bits or more");
  }
  return SignServerCert(ca, key, common_name, hosts, days);
}

absl::StatusOr<ServerTlsFiles> EnsureServerTls(const std::string& dir,
                                               const std::vector<std::string>& extra_hosts) {
  ServerTlsFiles files;
  files.ca_cert = dir + "/ca.crt";
  files.server_cert = dir + "/server.crt";
  files.server_key = dir + "/server.key";
  std::string ca_key_path = dir + "/ca.key";
  if (FileExists(files.ca_cert) && FileExists(files.server_cert) && FileExists(files.server_key)) {
    return files;
  }
  RETURN_IF_ERROR(EnsureDir(dir, 0700));
  PemKeyPair ca;
  if (FileExists(files.ca_cert) && FileExists(ca_key_path)) {
    ASSIGN_OR_RETURN(ca.cert_pem, ReadFile(files.ca_cert));
    ASSIGN_OR_RETURN(ca.key_pem, ReadFile(ca_key_path));
  } else {
    ASSIGN_OR_RETURN(ca, GenerateCa("Sluice private CA"));
    RETURN_IF_ERROR(WriteFileAtomic(ca_key_path, ca.key_pem, 0600));
    RETURN_IF_ERROR(WriteFileAtomic(files.ca_cert, ca.cert_pem, 0644));
  }
  std::vector<std::string> hosts = {"localhost", "127.0.0.1", "::1"};
  char hostname[256] = {0};
  if (gethostname(hostname, sizeof(hostname) - 1) == 0 && hostname[0] != '\0')
    hosts.push_back(hostname);
  for (const auto& h : extra_hosts) hosts.push_back(h);
  ASSIGN_OR_RETURN(PemKeyPair server, IssueServerCert(ca, "sluice-controlplane", hosts, 825));
  RETURN_IF_ERROR(WriteFileAtomic(files.server_key, server.key_pem, 0600));
  RETURN_IF_ERROR(WriteFileAtomic(files.server_cert, server.cert_pem, 0644));
  files.created = true;
  return files;
}

}  // namespace sluice
