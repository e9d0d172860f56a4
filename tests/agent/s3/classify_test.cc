#include "agent/s3/classify.h"

#include <gtest/gtest.h>

namespace sluice::agent::s3 {
namespace {

using session::Relation;
using session::StatementClass;
using Headers = std::vector<std::pair<std::string, std::string>>;

S3Request C(absl::string_view method, absl::string_view path, absl::string_view query = "",
            const Headers& headers = {}) {
  return ClassifyS3(method, path, query, headers);
}

bool Has(const std::vector<std::string>& v, absl::string_view s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

TEST(S3Classify, OperationsByMethodPathAndSubResource) {
  struct Case {
    const char* method;
    const char* path;
    const char* query;
    const char* kind;
    StatementClass cls;
  } cases[] = {
      {"GET", "/", "", "ListBuckets", StatementClass::kRead},
      {"GET", "/b", "list-type=2&prefix=logs%2F", "ListObjectsV2", StatementClass::kRead},
      {"GET", "/b/", "", "ListObjects", StatementClass::kRead},
      {"HEAD", "/b", "", "HeadBucket", StatementClass::kRead},
      {"GET", "/b", "acl", "GetBucketAcl", StatementClass::kRead},
      {"GET", "/b", "policy", "GetBucketPolicy", StatementClass::kRead},
      {"GET", "/b", "location", "GetBucketLocation", StatementClass::kRead},
      {"GET", "/b", "uploads", "ListMultipartUploads", StatementClass::kRead},
      {"PUT", "/b", "", "CreateBucket", StatementClass::kDdl},
      {"PUT", "/b", "versioning", "PutBucketVersioning", StatementClass::kDdl},
      {"PUT", "/b", "acl", "PutBucketAcl", StatementClass::kDcl},
      {"PUT", "/b", "policy", "PutBucketPolicy", StatementClass::kDcl},
      {"DELETE", "/b", "policy", "DeleteBucketPolicy", StatementClass::kDcl},
      {"PUT", "/b", "publicAccessBlock", "PutPublicAccessBlock", StatementClass::kDcl},
      {"DELETE", "/b", "cors", "DeleteBucketCors", StatementClass::kDdl},
      {"GET", "/b/k", "", "GetObject", StatementClass::kRead},
      {"HEAD", "/b/k", "versionId=3", "HeadObject", StatementClass::kRead},
      {"GET", "/b/k", "uploadId=u", "ListParts", StatementClass::kRead},
      {"PUT", "/b/k", "", "PutObject", StatementClass::kWrite},
      {"PUT", "/b/k", "partNumber=1&uploadId=u", "UploadPart", StatementClass::kWrite},
      {"POST", "/b/k", "uploads", "CreateMultipartUpload", StatementClass::kWrite},
      {"POST", "/b/k", "uploadId=u", "CompleteMultipartUpload", StatementClass::kWrite},
      {"DELETE", "/b/k", "uploadId=u", "AbortMultipartUpload", StatementClass::kWrite},
      {"DELETE", "/b/k", "", "DeleteObject", StatementClass::kWrite},
      {"PUT", "/b/k", "acl", "PutObjectAcl", StatementClass::kDcl},
      {"GET", "/b/k", "tagging", "GetObjectTagging", StatementClass::kRead},
      {"PUT", "/b/k", "tagging", "PutObjectTagging", StatementClass::kWrite},
      {"PUT", "/b/k", "retention", "PutObjectRetention", StatementClass::kDdl},
      {"POST", "/b/k", "restore", "RestoreObject", StatementClass::kWrite},
  };
  for (const Case& c : cases) {
    S3Request r = C(c.method, c.path, c.query);
    EXPECT_TRUE(r.refusal.empty())
        << c.method << " " << c.path << "?" << c.query << ": " << r.refusal;
    EXPECT_EQ(r.kind, c.kind) << c.method << " " << c.path << "?" << c.query;
    EXPECT_EQ(r.cls, c.cls) << c.method << " " << c.path << "?" << c.query;
  }
}

TEST(S3Classify, DeletesAndCopiesNameWhatTheyTouch) {
  S3Request r = C("DELETE", "/demo-bucket");
  EXPECT_TRUE(Has(r.guarded, "drop_database"));
  EXPECT_EQ(r.relations, (std::vector<Relation>{{"demo-bucket", ""}}));
  r = C("DELETE", "/demo-bucket/logs/a%20b.log");
  EXPECT_TRUE(Has(r.guarded, "drop_table"));
  EXPECT_EQ(r.key, "logs/a b.log");
  EXPECT_EQ(r.relations, (std::vector<Relation>{{"demo-bucket", "logs/a b.log"}}));
  // A lifecycle configuration may expire objects: a delete of the bucket's objects.
  r = C("PUT", "/demo-bucket", "lifecycle");
  EXPECT_TRUE(Has(r.guarded, "drop_table"));
  EXPECT_EQ(r.relations, (std::vector<Relation>{{"demo-bucket", "*"}}));
  // A copy reads its source.
  r = C("PUT", "/dst/k", "", {{"x-amz-copy-source", "/src/dir/o%2B1.txt?versionId=2"}});
  EXPECT_EQ(r.kind, "CopyObject");
  EXPECT_EQ(r.relations, (std::vector<Relation>{{"dst", "k"}, {"src", "dir/o+1.txt"}}));
  // A canned ACL or a grant on an upload changes access control.
  EXPECT_EQ(C("PUT", "/b/k", "", {{"x-amz-acl", "public-read"}}).cls, StatementClass::kDcl);
  EXPECT_EQ(C("POST", "/b/k", "uploads", {{"X-Amz-Grant-Read", "uri=\"all\""}}).cls,
            StatementClass::kDcl);
}

TEST(S3Classify, WhatItDoesNotReadOrMustNotRelayIsRefused) {
  for (const auto& [method, path, query] :
       std::vector<std::tuple<const char*, const char*, const char*>>{
           {"GET", "/b/k", "X-Amz-Signature=abc&X-Amz-Credential=x"},  // presigned
           {"GET", "/b/k", "AWSAccessKeyId=a&Signature=s"},            // presigned, SigV2
           {"POST", "/b", "delete"},                                   // multi-object delete
           {"POST", "/b/k", "select&select-type=2"},                   // S3 Select
           {"POST", "/b", ""},                                         // browser form upload
           {"GET", "/b", "frobnicate"},
           {"PUT", "/b", "location"},
           {"PATCH", "/b/k", ""},
           {"GET", "/b/%zz", ""},
           {"GET", "/b/k%00", ""},
           {"GET", "/b", "acl&policy"},
           {"PUT", "/b/k", "frob"},
       }) {
    S3Request r = C(method, path, query);
    EXPECT_FALSE(r.refusal.empty()) << method << " " << path << "?" << query;
    EXPECT_EQ(r.cls, StatementClass::kUnknown) << method << " " << path << "?" << query;
  }
  EXPECT_NE(C("GET", "/b/k", "X-Amz-Signature=abc").refusal.find("presigned"), std::string::npos);
  EXPECT_EQ(C("GET", "/b/" + std::string(1025, 'k')).cls, StatementClass::kUnknown);
}

}  // namespace
}  // namespace sluice::agent::s3
