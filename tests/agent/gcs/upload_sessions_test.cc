#include "agent/gcs/upload_sessions.h"

#include <gtest/gtest.h>

namespace sluice::agent::gcs {
namespace {

UploadSession Of(const std::string& subject, const std::string& object = "a.txt") {
  UploadSession s;
  s.upstream_target = "/upload/storage/v1/b/bkt/o?uploadType=resumable&upload_id=service-id";
  s.connection = "demo-gcs";
  s.issuer = "https://issuer";
  s.subject = subject;
  s.bucket = "bkt";
  s.object = object;
  return s;
}

TEST(UploadSessions, ASessionIsFoundOnlyByItsOwnerOnItsConnectionAndBucket) {
  UploadSessions table;
  const absl::Time now = absl::Now();
  auto id = table.Open(Of("alice"), now);
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(id->size(), 32u);
  auto found = table.Find(*id, "demo-gcs", "bkt", "https://issuer", "alice", now);
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->object, "a.txt");
  EXPECT_EQ(found->upstream_target,
            "/upload/storage/v1/b/bkt/o?uploadType=resumable&upload_id=service-id");
  EXPECT_FALSE(table.Find(*id, "demo-gcs", "bkt", "https://issuer", "mallory", now));
  EXPECT_FALSE(table.Find(*id, "demo-gcs", "bkt", "https://other-issuer", "alice", now));
  EXPECT_FALSE(table.Find(*id, "other-gcs", "bkt", "https://issuer", "alice", now));
  EXPECT_FALSE(table.Find(*id, "demo-gcs", "other", "https://issuer", "alice", now));
  EXPECT_FALSE(table.Find("service-id", "demo-gcs", "bkt", "https://issuer", "alice", now));
  EXPECT_TRUE(table.OwnedByAnother(*id, "https://issuer", "mallory", now));
  EXPECT_FALSE(table.OwnedByAnother(*id, "https://issuer", "alice", now));
  table.Close(*id);
  EXPECT_FALSE(table.Find(*id, "demo-gcs", "bkt", "https://issuer", "alice", now));
}

TEST(UploadSessions, SessionsExpireAndTheTableIsBoundedInAllAndPerCaller) {
  UploadSessions table(/*max_sessions=*/3, /*max_per_caller=*/2, absl::Hours(1));
  const absl::Time now = absl::Now();
  auto a1 = table.Open(Of("alice"), now);
  ASSERT_TRUE(table.Open(Of("alice"), now).ok());
  auto a3 = table.Open(Of("alice"), now);
  ASSERT_FALSE(a3.ok());
  EXPECT_NE(a3.status().message().find("limit per caller"), std::string::npos);
  ASSERT_TRUE(table.Open(Of("bob"), now).ok());
  auto c = table.Open(Of("carol"), now);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("open resumable uploads"), std::string::npos);
  EXPECT_FALSE(table.Find(*a1, "demo-gcs", "bkt", "https://issuer", "alice", now + absl::Hours(2)));
  // Expired sessions make room.
  EXPECT_TRUE(table.Open(Of("carol"), now + absl::Hours(2)).ok());
  EXPECT_EQ(table.size(), 1u);
}

}  // namespace
}  // namespace sluice::agent::gcs
