#include "agent/gcs/body_masking.h"

#include <gtest/gtest.h>

namespace sluice::agent::gcs {
namespace {

masking::MaskingPolicy Detectors(v1::MaskingStrategy strategy = v1::MASKING_STRATEGY_REDACT) {
  v1::PolicySnapshot snap;
  snap.set_masking_hash_key("0123456789abcdef0123456789abcdef");
  snap.add_connections()->set_name("demo-gcs");
  auto* r = snap.add_masking_rules();
  r->set_name("pii");
  r->mutable_connections()->add_names("demo-gcs");
  r->add_detectors("email");
  r->set_strategy(strategy);
  return masking::MaskingPolicy(snap, snap.connections(0), "idp", "alice", {});
}

TEST(GcsBodyMasking, TextTypesAreSearchableAndOthersAreNot) {
  for (const char* t : {"text/plain", "text/csv; charset=utf-8", "application/json",
                        "application/x-ndjson", "application/vnd.api+json", "TEXT/HTML"}) {
    EXPECT_TRUE(SearchableContentType(t)) << t;
  }
  for (const char* t : {"application/octet-stream", "image/png", "application/gzip",
                        "application/zip", "", "application/pdf"}) {
    EXPECT_FALSE(SearchableContentType(t)) << t;
  }
}

TEST(GcsBodyMasking, LinesAreMaskedWhereverTheChunksSplitThem) {
  const masking::MaskingPolicy policy = Detectors();
  const std::string object = "id,email\n1,alice@example.com\n2,none\n3,bob@example.org";
  std::string whole;
  {
    LineMasker m(&policy, 1024);
    ASSERT_TRUE(m.Feed(object, &whole).ok());
    ASSERT_TRUE(m.Finish(&whole).ok());
    EXPECT_EQ(m.masked_lines(), 2);
  }
  EXPECT_EQ(whole.find("alice@example.com"), std::string::npos) << whole;
  EXPECT_EQ(whole.find("bob@example.org"), std::string::npos) << whole;
  EXPECT_NE(whole.find("2,none\n"), std::string::npos) << whole;
  // Every split of the object into two chunks gives the same bytes: an address cut in two by a
  // chunk's edge is still found.
  for (size_t cut = 0; cut <= object.size(); ++cut) {
    LineMasker m(&policy, 1024);
    std::string out;
    ASSERT_TRUE(m.Feed(object.substr(0, cut), &out).ok());
    ASSERT_TRUE(m.Feed(object.substr(cut), &out).ok());
    ASSERT_TRUE(m.Finish(&out).ok());
    EXPECT_EQ(out, whole) << "cut at " << cut;
  }
}

TEST(GcsBodyMasking, WhatCannotBeSearchedIsAnErrorNotTheBytes) {
  const masking::MaskingPolicy policy = Detectors();
  LineMasker m(&policy, 16);
  std::string out;
  EXPECT_TRUE(m.Feed("short\n", &out).ok());
  absl::Status st = m.Feed(std::string(40, 'x') + "@example.com\n", &out);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("over 16 bytes"), std::string::npos) << st;
  EXPECT_EQ(out, "short\n");
  // A null strategy cannot be shown in an object's bytes.
  const masking::MaskingPolicy nulls = Detectors(v1::MASKING_STRATEGY_NULL);
  LineMasker n(&nulls, 1024);
  out.clear();
  EXPECT_FALSE(n.Feed("mail alice@example.com\n", &out).ok());
  EXPECT_EQ(out, "");
}

TEST(GcsBodyMasking, JsonAnswersAreMaskedAndLoseTheHashesOfWhatWillBeMasked) {
  const masking::MaskingPolicy policy = Detectors();
  std::string body =
      R"({"kind": "storage#objects", "items": [{"name": "a.txt", "md5Hash": "x", "crc32c": "y",)"
      R"( "metadata": {"owner": "alice@example.com"}}]})";
  auto n = MaskJsonAnswer(policy, &body, /*drop_hashes=*/true);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 1);
  EXPECT_EQ(body.find("alice@example.com"), std::string::npos) << body;
  EXPECT_EQ(body.find("md5Hash"), std::string::npos) << body;
  EXPECT_EQ(body.find("crc32c"), std::string::npos) << body;
  EXPECT_NE(body.find("a.txt"), std::string::npos) << body;
  // An object's own JSON keeps its keys.
  std::string object = R"({"md5Hash": "mine", "to": "bob@example.org"})";
  n = MaskJsonAnswer(policy, &object, /*drop_hashes=*/false);
  ASSERT_TRUE(n.ok());
  EXPECT_NE(object.find("md5Hash"), std::string::npos) << object;
  EXPECT_EQ(object.find("bob@example.org"), std::string::npos) << object;
}

}  // namespace
}  // namespace sluice::agent::gcs
