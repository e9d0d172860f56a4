#include "common/tls.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <memory>

namespace sluice {
namespace {

std::unique_ptr<X509, decltype(&X509_free)> ReadCert(const std::string& pem) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(
      BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())), BIO_free);
  return {PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr), X509_free};
}

TEST(Tls, CheckTlsName) {
  for (const char* good :
       {"db.example.com", "localhost", "agent-1", "10.0.0.5", "::1", "fe80::1"}) {
    EXPECT_TRUE(CheckTlsName(good).ok()) << good;
  }
  for (const char* bad : {"", "*.example.com", "a..b", "-a.example", "a_b.example", "a b"}) {
    EXPECT_FALSE(CheckTlsName(bad).ok()) << bad;
  }
  EXPECT_FALSE(CheckTlsName(std::string(254, 'a')).ok());
}

TEST(Tls, CertificateRequestIsSignedForTheNamesTheSignerChooses) {
  auto ca = GenerateCa("test agent CA");
  ASSERT_TRUE(ca.ok()) << ca.status();
  auto key = GenerateEcPrivateKeyPem();
  ASSERT_TRUE(key.ok());
  auto csr = CreateCsr(*key, "sluice-agent", {"localhost", "127.0.0.1", "::1", "db.example.com"});
  ASSERT_TRUE(csr.ok()) << csr.status();
  auto hosts = CsrHosts(*csr);
  ASSERT_TRUE(hosts.ok()) << hosts.status();
  EXPECT_EQ(*hosts, (std::vector<std::string>{"localhost", "127.0.0.1", "::1", "db.example.com"}));

  auto cert_pem = SignCsr(*ca, *csr, "agent-a", {"localhost", "db.example.com"}, 30);
  ASSERT_TRUE(cert_pem.ok()) << cert_pem.status();
  auto cert = ReadCert(*cert_pem);
  auto ca_cert = ReadCert(ca->cert_pem);
  ASSERT_TRUE(cert && ca_cert);
  EXPECT_EQ(X509_verify(cert.get(), X509_get0_pubkey(ca_cert.get())), 1);
  EXPECT_EQ(X509_check_host(cert.get(), "db.example.com", 0, 0, nullptr), 1);
  EXPECT_EQ(X509_check_host(cert.get(), "other.example.com", 0, 0, nullptr), 0);
  EXPECT_EQ(X509_check_ip_asc(cert.get(), "127.0.0.1", 0), 0);  // asked for, not granted
  // The certificate is for the request's key.
  std::unique_ptr<BIO, decltype(&BIO_free)> kb(
      BIO_new_mem_buf(key->data(), static_cast<int>(key->size())), BIO_free);
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> pkey(
      PEM_read_bio_PrivateKey(kb.get(), nullptr, nullptr, nullptr), EVP_PKEY_free);
  EXPECT_EQ(X509_check_private_key(cert.get(), pkey.get()), 1);
}

TEST(Tls, BadRequestsAreRefused) {
  auto ca = GenerateCa("test agent CA");
  ASSERT_TRUE(ca.ok());
  EXPECT_FALSE(SignCsr(*ca, "not a request", "a", {"localhost"}, 1).ok());
  EXPECT_FALSE(
      CsrHosts("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n")
          .ok());

  // A request whose signature does not match its content.
  auto key = GenerateEcPrivateKeyPem();
  auto csr = CreateCsr(*key, "sluice-agent", {"localhost"});
  ASSERT_TRUE(csr.ok());
  std::string tampered = *csr;
  size_t body = tampered.find('\n') + 1;
  tampered[body + 80] = tampered[body + 80] == 'A' ? 'B' : 'A';
  auto signed_tampered = SignCsr(*ca, tampered, "a", {"localhost"}, 1);
  EXPECT_FALSE(signed_tampered.ok());

  // A weak key.
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> weak(EVP_RSA_gen(1024), EVP_PKEY_free);
  ASSERT_TRUE(weak);
  std::unique_ptr<BIO, decltype(&BIO_free)> out(BIO_new(BIO_s_mem()), BIO_free);
  PEM_write_bio_PrivateKey(out.get(), weak.get(), nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  long len = BIO_get_mem_data(out.get(), &data);
  auto weak_csr =
      CreateCsr(std::string(data, static_cast<size_t>(len)), "sluice-agent", {"localhost"});
  ASSERT_TRUE(weak_csr.ok());
  auto weak_signed = SignCsr(*ca, *weak_csr, "a", {"localhost"}, 1);
  ASSERT_FALSE(weak_signed.ok());
  EXPECT_NE(weak_signed.status().message().find("EC P-256 or RSA of 2048 bits"), std::string::npos);
}

}  // namespace
}  // namespace sluice
