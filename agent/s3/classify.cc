#include "agent/s3/classify.h"

#include <algorithm>
#include <map>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/url_encoding.h"

namespace sluice::agent::s3 {
namespace {

using session::StatementClass;

constexpr size_t kMaxKeyBytes = 1024;  // S3's own cap on object keys

std::string Header(const std::vector<std::pair<std::string, std::string>>& headers,
                   absl::string_view name) {
  for (const auto& [n, v] : headers) {
    if (absl::EqualsIgnoreCase(n, name)) return v;
  }
  return "";
}

// Bucket sub-resources by what their Get / Put / Delete are.
struct SubResource {
  const char* name;
  const char* operation;  // the API's name without its verb ("BucketAcl")
  StatementClass change;  // what a Put or Delete of it is
};

constexpr SubResource kBucketSubResources[] = {
    {"acl", "BucketAcl", StatementClass::kDcl},
    {"policy", "BucketPolicy", StatementClass::kDcl},
    {"publicAccessBlock", "PublicAccessBlock", StatementClass::kDcl},
    {"ownershipControls", "BucketOwnershipControls", StatementClass::kDcl},
    {"versioning", "BucketVersioning", StatementClass::kDdl},
    {"cors", "BucketCors", StatementClass::kDdl},
    {"encryption", "BucketEncryption", StatementClass::kDdl},
    {"tagging", "BucketTagging", StatementClass::kDdl},
    {"website", "BucketWebsite", StatementClass::kDdl},
    {"logging", "BucketLogging", StatementClass::kDdl},
    {"notification", "BucketNotificationConfiguration", StatementClass::kDdl},
    {"replication", "BucketReplication", StatementClass::kDdl},
    {"lifecycle", "BucketLifecycleConfiguration", StatementClass::kDdl},
    {"object-lock", "ObjectLockConfiguration", StatementClass::kDdl},
    {"accelerate", "BucketAccelerateConfiguration", StatementClass::kDdl},
    {"requestPayment", "BucketRequestPayment", StatementClass::kDdl},
    {"location", "BucketLocation", StatementClass::kUnknown},  // Get only
};

// Query parameters that are options of an operation, not a sub-resource.
bool Option(const std::string& name) {
  static const char* const kOptions[] = {"list-type",
                                         "prefix",
                                         "delimiter",
                                         "encoding-type",
                                         "max-keys",
                                         "continuation-token",
                                         "start-after",
                                         "fetch-owner",
                                         "marker",
                                         "key-marker",
                                         "version-id-marker",
                                         "upload-id-marker",
                                         "max-uploads",
                                         "max-parts",
                                         "part-number-marker",
                                         "versionId",
                                         "partNumber",
                                         "uploadId",
                                         "response-content-type",
                                         "response-content-language",
                                         "response-expires",
                                         "response-cache-control",
                                         "response-content-disposition",
                                         "response-content-encoding",
                                         "x-id",
                                         "expected-bucket-owner"};
  for (const char* o : kOptions) {
    if (name == o) return true;
  }
  return false;
}

bool CarriesCredential(const std::string& name) {
  const std::string n = absl::AsciiStrToLower(name);
  return absl::StartsWith(n, "x-amz-") || n == "awsaccesskeyid" || n == "signature";
}

}  // namespace

S3Request ClassifyS3(absl::string_view method, absl::string_view path, absl::string_view query,
                     const std::vector<std::pair<std::string, std::string>>& headers) {
  S3Request r;
  auto refuse = [&](std::string why) {
    r.refusal = absl::StrCat("Sluice: ", why);
    r.cls = StatementClass::kUnknown;
    return r;
  };
  std::map<std::string, std::string> params;
  for (absl::string_view pair : absl::StrSplit(query, '&', absl::SkipEmpty())) {
    std::string name, value;
    const size_t eq = pair.find('=');
    if (!PercentDecode(pair.substr(0, eq), &name) ||
        (eq != absl::string_view::npos && !PercentDecode(pair.substr(eq + 1), &value))) {
      return refuse("a malformed query");
    }
    if (CarriesCredential(name)) {
      return refuse(absl::StrCat("a presigned request (", name.substr(0, 64),
                                 " in the query) is not let through: sign it with the agent's "
                                 "published key and your token"));
    }
    params[name] = value;
  }
  if (path.empty() || path[0] != '/') return refuse("a path that does not begin with '/'");
  absl::string_view rest = path.substr(1);
  const size_t slash = rest.find('/');
  if (!PercentDecode(rest.substr(0, slash), &r.bucket)) return refuse("a malformed bucket name");
  if (slash != absl::string_view::npos && !PercentDecode(rest.substr(slash + 1), &r.key))
    return refuse("a malformed object key");
  if (r.key.size() > kMaxKeyBytes) return refuse("an object key over 1024 bytes");
  const std::string m(method);
  const bool read = m == "GET" || m == "HEAD";
  if (m != "GET" && m != "HEAD" && m != "PUT" && m != "POST" && m != "DELETE")
    return refuse(absl::StrCat("the method ", m.substr(0, 16), " is not an S3 operation"));
  // The one sub-resource the request names, if any.
  std::string sub;
  for (const auto& [name, value] : params) {
    if (Option(name)) continue;
    if (!sub.empty()) return refuse("a request naming two sub-resources");
    sub = name;
  }
  auto set = [&](std::string kind, StatementClass cls) {
    r.kind = std::move(kind);
    r.cls = cls;
  };
  if (r.bucket.empty()) {
    if (m != "GET" || !sub.empty()) return refuse("an unknown S3 operation");
    set("ListBuckets", StatementClass::kRead);
    return r;
  }
  r.relations.push_back({r.bucket, r.key.empty() ? "*" : r.key});
  const bool dcl_headers = !Header(headers, "x-amz-acl").empty() ||
                           std::any_of(headers.begin(), headers.end(), [](const auto& h) {
                             return absl::StartsWithIgnoreCase(h.first, "x-amz-grant-");
                           });
  if (r.key.empty()) {
    // The bucket.
    if (sub.empty()) {
      if (m == "GET") {
        set(params.count("list-type") ? "ListObjectsV2" : "ListObjects", StatementClass::kRead);
      } else if (m == "HEAD") {
        set("HeadBucket", StatementClass::kRead);
      } else if (m == "PUT") {
        set("CreateBucket", dcl_headers ? StatementClass::kDcl : StatementClass::kDdl);
      } else if (m == "DELETE") {
        set("DeleteBucket", StatementClass::kDdl);
        r.guarded.push_back("drop_database");
        r.relations = {{r.bucket, ""}};
      } else {
        return refuse("a POST to a bucket (a browser form upload) is not let through");
      }
      return r;
    }
    if (sub == "uploads" && m == "GET") {
      set("ListMultipartUploads", StatementClass::kRead);
      return r;
    }
    if (sub == "versions" && m == "GET") {
      set("ListObjectVersions", StatementClass::kRead);
      return r;
    }
    if (sub == "delete" && m == "POST") {
      return refuse(
          "a multi-object delete (DeleteObjects) is not let through yet: delete the objects one "
          "by one");
    }
    for (const SubResource& s : kBucketSubResources) {
      if (sub != s.name) continue;
      if (read) {
        set(absl::StrCat(m == "HEAD" ? "Head" : "Get", s.operation), StatementClass::kRead);
        return r;
      }
      if (s.change == StatementClass::kUnknown || m == "POST") break;
      set(absl::StrCat(m == "PUT" ? "Put" : "Delete", s.operation), s.change);
      if (sub == "lifecycle" && m == "PUT") {
        // A rule that expires objects deletes them; the agent does not read the XML yet, so any
        // lifecycle configuration counts as one (fail closed).
        r.guarded.push_back("drop_table");
        r.relations = {{r.bucket, "*"}};
      }
      return r;
    }
    return refuse(absl::StrCat("an unknown S3 operation (", m, " ?", sub.substr(0, 64), ")"));
  }
  // An object.
  const std::string copy_source = Header(headers, "x-amz-copy-source");
  if (!copy_source.empty()) {
    std::string source;
    absl::string_view s = copy_source;
    s = s.substr(0, s.find('?'));  // ?versionId=
    absl::ConsumePrefix(&s, "/");
    if (!PercentDecode(s, &source) || source.find('/') == std::string::npos || m != "PUT")
      return refuse("a malformed x-amz-copy-source");
    const size_t at = source.find('/');
    r.relations.push_back({source.substr(0, at), source.substr(at + 1)});
  }
  if (sub.empty()) {
    if (m == "GET" || m == "HEAD") {
      if (params.count("uploadId")) {
        set("ListParts", StatementClass::kRead);
      } else {
        set(m == "GET" ? "GetObject" : "HeadObject", StatementClass::kRead);
      }
    } else if (m == "PUT") {
      const bool part = params.count("uploadId") && params.count("partNumber");
      set(part ? (copy_source.empty() ? "UploadPart" : "UploadPartCopy")
               : (copy_source.empty() ? "PutObject" : "CopyObject"),
          dcl_headers ? StatementClass::kDcl : StatementClass::kWrite);
    } else if (m == "POST") {
      if (!params.count("uploadId")) return refuse("an unknown S3 operation (POST to an object)");
      set("CompleteMultipartUpload", StatementClass::kWrite);
    } else {
      if (params.count("uploadId")) {
        set("AbortMultipartUpload", StatementClass::kWrite);
      } else {
        set("DeleteObject", StatementClass::kWrite);
        r.guarded.push_back("drop_table");
      }
    }
    return r;
  }
  if (sub == "uploads" && m == "POST") {
    set("CreateMultipartUpload", dcl_headers ? StatementClass::kDcl : StatementClass::kWrite);
    return r;
  }
  if (sub == "select") return refuse("S3 Select runs SQL the agent does not read over an object");
  struct ObjectSub {
    const char* name;
    const char* operation;
    StatementClass change;
  };
  static constexpr ObjectSub kObjectSubResources[] = {
      {"acl", "ObjectAcl", StatementClass::kDcl},
      {"tagging", "ObjectTagging", StatementClass::kWrite},
      {"retention", "ObjectRetention", StatementClass::kDdl},
      {"legal-hold", "ObjectLegalHold", StatementClass::kDdl},
      {"attributes", "ObjectAttributes", StatementClass::kUnknown},  // Get only
      {"restore", "RestoreObject", StatementClass::kWrite},          // POST only
  };
  for (const ObjectSub& s : kObjectSubResources) {
    if (sub != s.name) continue;
    if (sub == "restore") {
      if (m != "POST") break;
      set("RestoreObject", StatementClass::kWrite);
      return r;
    }
    if (read) {
      set(absl::StrCat("Get", s.operation), StatementClass::kRead);
      return r;
    }
    if (s.change == StatementClass::kUnknown || m == "POST") break;
    set(absl::StrCat(m == "PUT" ? "Put" : "Delete", s.operation), s.change);
    return r;
  }
  return refuse(absl::StrCat("an unknown S3 operation (", m, " ?", sub.substr(0, 64), ")"));
}

}  // namespace sluice::agent::s3
