#include "agent/postgres/upstream_auth.h"

#include <gtest/gtest.h>

namespace sluice::agent::postgres {
namespace {

// RFC 7677 section 3 test vector.
TEST(ScramSha256, Rfc7677Exchange) {
  ScramSha256Client c("user", "pencil", "rOprNGfwEbeRWgbNEkqO");
  EXPECT_EQ(c.ClientFirst(), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
  auto final_msg = c.ClientFinal(
      "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096");
  ASSERT_TRUE(final_msg.ok()) << final_msg.status();
  EXPECT_EQ(*final_msg,
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
            "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
  EXPECT_TRUE(c.VerifyServerFinal("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=").ok());
  // A server that does not know the password cannot produce the signature.
  EXPECT_EQ(c.VerifyServerFinal("v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=").code(),
            absl::StatusCode::kPermissionDenied);
}

TEST(ScramSha256, HostileServerFirstMessages) {
  ScramSha256Client c("", "pw", "abc");
  EXPECT_EQ(c.ClientFinal("r=xyz123,s=c2FsdA==,i=4096").status().code(),
            absl::StatusCode::kPermissionDenied);  // nonce does not extend ours
  EXPECT_EQ(c.ClientFinal("r=abc123,s=c2FsdA==,i=99999999").status().code(),
            absl::StatusCode::kInvalidArgument);  // iteration bomb
  EXPECT_EQ(c.ClientFinal("r=abc123,s=!!!,i=4096").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(c.ClientFinal("garbage").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(c.ClientFinal("e=invalid-proof").status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_FALSE(c.VerifyServerFinal("v=AAAA").ok());  // no exchange happened
}

TEST(Md5Password, MatchesPostgresFormula) {
  // md5(md5("secret" + "alice") + salt), computed independently with coreutils:
  //   (printf %s "$(printf %s secretalice | md5sum | cut -c1-32)"; printf "\x01\x02\x03\x04") |
  //   md5sum
  EXPECT_EQ(Md5PasswordResponse("alice", "secret", std::string("\x01\x02\x03\x04", 4)),
            "md598a0412b9c31436fc53776e863350083");
}

}  // namespace
}  // namespace sluice::agent::postgres
