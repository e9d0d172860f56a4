#include "agent/gcs/classify.h"

#include <gtest/gtest.h>

namespace sluice::agent::gcs {
namespace {

using session::StatementClass;
using Query = std::multimap<std::string, std::string>;

GcsRequest Classify(absl::string_view method, absl::string_view path, Query query = {},
                    absl::string_view content_type = "", absl::string_view body = "") {
  return ClassifyGcs(method, path, query, content_type, body);
}

TEST(GcsClassify, ReadsWritesAndDeletesByWhatTheyDo) {
  GcsRequest r = Classify("GET", "/storage/v1/b/bkt/o/a%2Fb.txt", {{"alt", "media"}});
  EXPECT_EQ(r.kind, "objects.get");
  EXPECT_EQ(r.cls, StatementClass::kRead);
  EXPECT_EQ(r.bucket, "bkt");
  EXPECT_EQ(r.object, "a/b.txt");
  ASSERT_EQ(r.relations.size(), 1u);
  EXPECT_EQ(r.relations[0], (session::Relation{"bkt", "a/b.txt"}));
  EXPECT_TRUE(r.refusal.empty());

  EXPECT_EQ(Classify("GET", "/download/storage/v1/b/bkt/o/x", {{"alt", "media"}}).cls,
            StatementClass::kRead);
  EXPECT_EQ(Classify("GET", "/storage/v1/b/bkt/o", {{"prefix", "logs/"}}).relations[0].table,
            "logs/*");
  r = Classify("POST", "/upload/storage/v1/b/bkt/o", {{"uploadType", "media"}, {"name", "n"}});
  EXPECT_EQ(r.kind, "objects.insert");
  EXPECT_EQ(r.cls, StatementClass::kWrite);
  r = Classify("DELETE", "/storage/v1/b/bkt/o/logs%2Fx");
  EXPECT_EQ(r.cls, StatementClass::kWrite);
  EXPECT_EQ(r.guarded, std::vector<std::string>{"drop_table"});
  r = Classify("DELETE", "/storage/v1/b/bkt");
  EXPECT_EQ(r.cls, StatementClass::kDdl);
  EXPECT_EQ(r.guarded, std::vector<std::string>{"drop_database"});
  r = Classify("POST", "/storage/v1/b/bkt/o/src/copyTo/b/other/o/dst");
  EXPECT_EQ(r.kind, "objects.copy");
  EXPECT_EQ(r.relations.size(), 2u);
  EXPECT_EQ(r.relations[1], (session::Relation{"other", "dst"}));
}

TEST(GcsClassify, AccessControlIsDclWhereverItHides) {
  EXPECT_EQ(Classify("PUT", "/storage/v1/b/bkt/iam").cls, StatementClass::kDcl);
  EXPECT_EQ(Classify("GET", "/storage/v1/b/bkt/iam").cls, StatementClass::kRead);
  EXPECT_EQ(Classify("POST", "/storage/v1/b/bkt/acl").cls, StatementClass::kDcl);
  EXPECT_EQ(Classify("PATCH", "/storage/v1/b/bkt/o/x", {{"predefinedAcl", "publicRead"}}).cls,
            StatementClass::kDcl);
  EXPECT_EQ(Classify("PATCH", "/storage/v1/b/bkt/o/x", {}, "application/json",
                     R"({"metadata": {"k": "v"}})")
                .cls,
            StatementClass::kWrite);
  EXPECT_EQ(Classify("PATCH", "/storage/v1/b/bkt/o/x", {}, "application/json",
                     R"({"acl": [{"entity": "allUsers", "role": "READER"}]})")
                .cls,
            StatementClass::kDcl);
  EXPECT_EQ(Classify("PATCH", "/storage/v1/b/bkt", {}, "application/json",
                     R"({"iamConfiguration": {"publicAccessPrevention": "inherited"}})")
                .cls,
            StatementClass::kDcl);
  const std::string multipart =
      "--b1\r\nContent-Type: application/json\r\n\r\n"
      R"({"name": "x", "acl": [{"entity": "allUsers", "role": "READER"}]})"
      "\r\n--b1\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b1--\r\n";
  GcsRequest r = Classify("POST", "/upload/storage/v1/b/bkt/o", {{"uploadType", "multipart"}},
                          "multipart/related; boundary=b1", multipart);
  EXPECT_EQ(r.cls, StatementClass::kDcl) << r.refusal;
  EXPECT_EQ(r.object, "x");
  r = Classify("POST", "/upload/storage/v1/b/bkt/o", {{"uploadType", "multipart"}},
               "multipart/related; boundary=\"b1\"", multipart);
  EXPECT_EQ(r.cls, StatementClass::kDcl) << r.refusal;
  // gcloud's apitools: a single-quoted boundary, bare LF line ends.
  const std::string apitools =
      "--==b2==\nContent-Type: application/json\nMIME-Version: 1.0\n\n"
      R"({"bucket": "bkt", "name": "up/h.txt", "acl": []})"
      "\n--==b2==\nContent-Type: application/octet-stream\n\nvm\n\n--==b2==--\n";
  r = Classify("POST", "/upload/storage/v1/b/bkt/o", {{"uploadType", "multipart"}},
               "multipart/related; boundary='==b2=='", apitools);
  EXPECT_EQ(r.cls, StatementClass::kDcl) << r.refusal;
  EXPECT_EQ(r.object, "up/h.txt");
  // A preamble before the first part is not read past.
  r = Classify("POST", "/upload/storage/v1/b/bkt/o", {{"uploadType", "multipart"}},
               "multipart/related; boundary=b1", "preamble\r\n" + multipart);
  EXPECT_FALSE(r.refusal.empty());
}

TEST(GcsClassify, ALifecycleRuleThatDeletesIsADelete) {
  GcsRequest r = Classify("PATCH", "/storage/v1/b/bkt", {}, "application/json",
                          R"({"lifecycle": {"rule": [{"action": {"type": "Delete"},
                                                       "condition": {"age": 1}}]}})");
  EXPECT_EQ(r.cls, StatementClass::kDdl);
  EXPECT_EQ(r.guarded, std::vector<std::string>{"drop_table"});
  r = Classify("PATCH", "/storage/v1/b/bkt", {}, "application/json",
               R"({"lifecycle": {"rule": [{"action": {"type": "SetStorageClass"}}]}})");
  EXPECT_TRUE(r.guarded.empty());
  // Values of the wrong JSON type are not what the agent expects, and do not stop it.
  for (const char* odd : {R"({"lifecycle": {"rule": [{"action": {"type": 5}}]}})",
                          R"({"lifecycle": {"rule": [{"action": "Delete"}, 7, null]}})",
                          R"({"lifecycle": {"rule": {"action": {}}}})", R"({"lifecycle": 1})",
                          R"({"name": 5, "acl": null})"}) {
    r = Classify("PATCH", "/storage/v1/b/bkt", {}, "application/json", odd);
    EXPECT_TRUE(r.refusal.empty()) << odd;
  }
  EXPECT_EQ(Classify("POST", "/storage/v1/b", {}, "application/json", R"({"name": 5})").cls,
            StatementClass::kUnknown);
  EXPECT_EQ(Classify("POST", "/storage/v1/b/bkt/o/x/compose", {}, "application/json",
                     R"({"sourceObjects": [1, {"name": 2}, {"name": "a"}], "destination": 3})")
                .kind,
            "objects.compose");
}

TEST(GcsClassify, AResumableUploadIsDecidedAtItsStartAndItsStepsNameTheSession) {
  GcsRequest r = Classify("POST", "/upload/storage/v1/b/bkt/o", {{"uploadType", "resumable"}},
                          "application/json", R"({"name": "logs/a.txt"})");
  EXPECT_EQ(r.upload, UploadStep::kStart);
  EXPECT_EQ(r.kind, "objects.insert");
  EXPECT_EQ(r.cls, StatementClass::kWrite);
  EXPECT_EQ(r.object, "logs/a.txt");
  ASSERT_EQ(r.relations.size(), 1u);
  EXPECT_EQ(r.relations[0], (session::Relation{"bkt", "logs/a.txt"}));
  // An ACL in the start's metadata is access control.
  r = Classify("POST", "/upload/storage/v1/b/bkt/o", {{"uploadType", "resumable"}, {"name", "n"}},
               "application/json", R"({"acl": [{"entity": "allUsers", "role": "READER"}]})");
  EXPECT_EQ(r.cls, StatementClass::kDcl);
  EXPECT_FALSE(Classify("POST", "/upload/storage/v1/b/bkt/o",
                        {{"uploadType", "resumable"}, {"name", "n"}}, "application/json", "[")
                   .refusal.empty());
  r = Classify("PUT", "/upload/storage/v1/b/bkt/o",
               {{"uploadType", "resumable"}, {"upload_id", "u1"}});
  EXPECT_EQ(r.upload, UploadStep::kContinue);
  EXPECT_EQ(r.upload_id, "u1");
  EXPECT_EQ(r.cls, StatementClass::kWrite);
  EXPECT_TRUE(r.refusal.empty());
  EXPECT_EQ(Classify("DELETE", "/upload/storage/v1/b/bkt/o",
                     {{"uploadType", "resumable"}, {"upload_id", "u1"}})
                .upload,
            UploadStep::kCancel);
}

TEST(GcsClassify, RefusesWhatItCannotDecideOrWouldCarryACredential) {
  for (const auto& [method, path, query] : std::vector<std::tuple<std::string, std::string, Query>>{
           {"POST", "/storage/v1/projects/p/hmacKeys", {}},
           {"GET", "/storage/v1/projects/p/hmacKeys/id", {}},
           {"GET", "/storage/v1/b/bkt/o/x", {{"X-Goog-Signature", "s"}}},
           {"GET", "/storage/v1/b/bkt/o/x", {{"access_token", "t"}}},
           {"GET", "/storage/v1/b/bkt/o/x", {{"key", "api-key"}}},
           {"POST", "/batch/storage/v1", {}},
           {"PUT", "/upload/storage/v1/b/bkt/o", {{"upload_id", "u"}}},  // no uploadType
           {"PUT",
            "/upload/storage/v1/b/bkt/o",
            {{"uploadType", "resumable"}, {"upload_id", "u"}, {"predefinedAcl", "publicRead"}}},
           {"GET", "/upload/storage/v1/b/bkt/o", {{"uploadType", "resumable"}, {"upload_id", "u"}}},
           {"POST", "/upload/storage/v1/b/bkt/o", {{"uploadType", "resumable"}}},  // no name
           {"POST", "/upload/storage/v1/b/bkt/o", {{"uploadType", "chunked"}, {"name", "n"}}},
           {"POST", "/upload/storage/v1/b/bkt/o", {{"uploadType", "media"}}},  // no name
           {"GET", "/storage/v1/b/bkt/o/x/unknown", {}},
           {"POST", "/storage/v1/b/bkt/o/watch", {}},
           {"GET", "/storage/v2/b", {}},
           {"GET", "/storage/v1/b/bkt/o/%ZZ", {}},
           {"GET", "/storage/v1/b/bkt/o/a%00b", {}},
           {"GET", "/", {}},
           {"GET", "/storage/v1/b/bkt/o/x/..", {}},
           {"GET", "/storage/v1/b/bkt/o/%2E%2E", {}},
           {"DELETE", "/storage/v1/b/other/../bkt/o/x", {}},
           {"GET", "/storage/v1/b/bkt/o//x", {}},
           {"POST",
            "/upload/storage/v1/b/bkt/o",
            {{"uploadType", "media"}, {"uploadType", "resumable"}, {"name", "n"}}},
       }) {
    GcsRequest r = Classify(method, path, query);
    EXPECT_FALSE(r.refusal.empty()) << method << " " << path;
    EXPECT_EQ(r.cls, StatementClass::kUnknown) << method << " " << path;
  }
  // A multipart upload whose metadata cannot be read is not guessed at.
  EXPECT_FALSE(Classify("POST", "/upload/storage/v1/b/bkt/o", {{"uploadType", "multipart"}},
                        "multipart/related; boundary=b1", "no parts here")
                   .refusal.empty());
  EXPECT_FALSE(
      Classify("PATCH", "/storage/v1/b/bkt/o/x", {}, "application/json", "[1, 2]").refusal.empty());
}

}  // namespace
}  // namespace sluice::agent::gcs
