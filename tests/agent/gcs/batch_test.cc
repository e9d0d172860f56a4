#include "agent/gcs/batch.h"

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"

namespace sluice::agent::gcs {
namespace {

std::string Part(const std::string& id, const std::string& request, const char* eol = "\r\n") {
  return absl::StrCat("--b1", eol, "Content-Type: application/http", eol, "Content-ID: <", id, ">",
                      eol, eol, request, eol);
}

TEST(GcsBatch, EachPartIsOneRequestWithItsIdHeadersAndBody) {
  const std::string body =
      Part("a", "GET /storage/v1/b/bkt/o?prefix=x HTTP/1.1\r\nAccept: application/json\r\n") +
      Part("b",
           "PATCH /storage/v1/b/bkt/o/n HTTP/1.1\r\nContent-Type: application/json\r\n"
           "Content-Length: 2\r\n\r\n{}") +
      "--b1--\r\n";
  auto parts = ParseBatch("multipart/mixed; boundary=\"b1\"", body);
  ASSERT_TRUE(parts.ok()) << parts.status();
  ASSERT_EQ(parts->size(), 2u);
  EXPECT_EQ((*parts)[0].content_id, "a");
  EXPECT_EQ((*parts)[0].method, "GET");
  EXPECT_EQ((*parts)[0].target, "/storage/v1/b/bkt/o?prefix=x");
  ASSERT_EQ((*parts)[0].headers.size(), 1u);
  EXPECT_EQ((*parts)[0].headers[0].first, "Accept");
  EXPECT_EQ((*parts)[1].method, "PATCH");
  EXPECT_EQ((*parts)[1].body, "{}");
  EXPECT_TRUE((*parts)[1].error.empty());
  // Bare line ends too.
  parts = ParseBatch("multipart/mixed; boundary=b1",
                     Part("c", "DELETE /storage/v1/b/bkt/o/n HTTP/1.1\n", "\n") + "--b1--\n");
  ASSERT_TRUE(parts.ok()) << parts.status();
  ASSERT_EQ(parts->size(), 1u);
  EXPECT_EQ((*parts)[0].method, "DELETE");
}

TEST(GcsBatch, WhatCannotBeReadSaysSoPerPartOrWhole) {
  auto parts =
      ParseBatch("multipart/mixed; boundary=b1",
                 Part("a", "not http at all") +
                     Part("b", "POST /x HTTP/1.1\r\n\r\nbody without a length") + "--b1--\r\n");
  ASSERT_TRUE(parts.ok()) << parts.status();
  ASSERT_EQ(parts->size(), 2u);
  EXPECT_FALSE((*parts)[0].error.empty());
  EXPECT_NE((*parts)[1].error.find("Content-Length"), std::string::npos) << (*parts)[1].error;
  EXPECT_FALSE(ParseBatch("text/plain", "x").ok());
  EXPECT_FALSE(ParseBatch("multipart/mixed; boundary=b1", "no parts").ok());
  EXPECT_FALSE(ParseBatch("multipart/mixed; boundary=b1\r\nX-Injected: 1", "").ok());
  std::string many;
  for (int i = 0; i < 101; ++i) many += Part(absl::StrCat(i), "GET /storage/v1/b HTTP/1.1\r\n");
  auto too_many = ParseBatch("multipart/mixed; boundary=b1", many + "--b1--\r\n");
  ASSERT_FALSE(too_many.ok());
  EXPECT_NE(too_many.status().message().find("at most 100"), std::string::npos);
}

TEST(GcsBatch, TheAnswerReadsBackAsOnePartPerResponse) {
  std::string content_type;
  const std::string body = WriteBatchResponse(
      {{"a", 200, {{"ETag", "x"}}, "application/json", "{\"k\":1}"}, {"b", 204, {}, "", ""}},
      &content_type);
  ASSERT_EQ(content_type.rfind("multipart/mixed; boundary=batch_", 0), 0u) << content_type;
  const std::string boundary = content_type.substr(content_type.find('=') + 1);
  EXPECT_NE(body.find("Content-ID: <response-a>\r\n\r\nHTTP/1.1 200 OK\r\nETag: x\r\n"
                      "Content-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"k\":1}\r\n"),
            std::string::npos)
      << body;
  EXPECT_NE(body.find("HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n"), std::string::npos);
  EXPECT_EQ(body.substr(body.size() - boundary.size() - 6), absl::StrCat("--", boundary, "--\r\n"));
}

}  // namespace
}  // namespace sluice::agent::gcs
