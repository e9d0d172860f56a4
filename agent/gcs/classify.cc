#include "agent/gcs/classify.h"

#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace sluice::agent::gcs {

namespace {

using session::StatementClass;

constexpr size_t kMaxNameBytes = 1024;  // Cloud Storage's own cap on object names

int Rank(StatementClass c) {
  switch (c) {
    case StatementClass::kRead:
      return 1;
    case StatementClass::kWrite:
      return 2;
    case StatementClass::kDdl:
      return 3;
    case StatementClass::kDcl:
      return 4;
    default:
      return 0;
  }
}

void Raise(GcsRequest* r, StatementClass c) {
  if (Rank(c) > Rank(r->cls)) r->cls = c;
}

bool Has(const std::multimap<std::string, std::string>& query, const char* name) {
  return query.find(name) != query.end();
}

std::string First(const std::multimap<std::string, std::string>& query, const char* name) {
  auto it = query.find(name);
  return it == query.end() ? std::string() : it->second;
}

// The first part of a multipart/related upload: the object's JSON metadata. Null when the body
// is not one. Both line ends clients use (CRLF; bare LF from Google's apitools) and both quotes
// around the boundary are read; a preamble before the first delimiter is not (refused).
absl::string_view MetadataPart(absl::string_view content_type, absl::string_view body) {
  size_t at = absl::AsciiStrToLower(content_type).find("boundary=");
  if (at == std::string::npos) return {};
  absl::string_view boundary = content_type.substr(at + 9);
  boundary = boundary.substr(0, boundary.find(';'));
  boundary = absl::StripAsciiWhitespace(boundary);
  if (boundary.size() >= 2 && (boundary.front() == '"' || boundary.front() == '\'') &&
      boundary.back() == boundary.front()) {
    boundary = boundary.substr(1, boundary.size() - 2);
  }
  if (boundary.empty() || boundary.size() > 200) return {};
  const std::string delimiter = absl::StrCat("--", boundary);
  if (!absl::StartsWith(body, delimiter)) return {};
  absl::string_view rest = body.substr(delimiter.size());
  absl::string_view eol;
  if (absl::StartsWith(rest, "\r\n")) {
    eol = "\r\n";
  } else if (absl::StartsWith(rest, "\n")) {
    eol = "\n";
  } else {
    return {};
  }
  const std::string blank = absl::StrCat(eol, eol);
  size_t headers_end = rest.find(blank);
  if (headers_end == absl::string_view::npos) return {};
  // Headers start right after the delimiter's line end (an empty header block is allowed).
  size_t data = headers_end + blank.size();
  if (absl::StartsWith(rest, blank)) data = blank.size();
  size_t end = rest.find(absl::StrCat(eol, delimiter), data);
  if (end == absl::string_view::npos) return {};
  absl::string_view part = rest.substr(data, end - data);
  return part.data() == nullptr ? absl::string_view("", 0) : part;
}

// What a JSON resource (a bucket's or an object's metadata) changes: access control makes it DCL,
// a lifecycle rule that deletes makes it a delete of objects. False when it is not JSON.
bool ReadMetadata(absl::string_view json, bool bucket, GcsRequest* r) {
  if (absl::StripAsciiWhitespace(json).empty()) return true;
  nlohmann::json j = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return false;
  for (const char* acl : {"acl", "defaultObjectAcl", "iamConfiguration", "owner"}) {
    if (j.contains(acl)) Raise(r, StatementClass::kDcl);
  }
  if (bucket) {
    auto lifecycle = j.find("lifecycle");
    if (lifecycle != j.end() && lifecycle->is_object()) {
      auto rules = lifecycle->find("rule");
      if (rules != lifecycle->end() && rules->is_array()) {
        for (const auto& rule : *rules) {
          const nlohmann::json* action =
              rule.is_object() && rule.contains("action") ? &rule["action"] : nullptr;
          if (action != nullptr && action->is_object() && action->contains("type") &&
              (*action)["type"].is_string() && (*action)["type"].get<std::string>() == "Delete") {
            r->guarded.push_back("drop_table");
            r->relations.push_back({r->bucket, "*"});
          }
        }
      }
    }
  }
  if (j.contains("name") && j["name"].is_string() && !bucket && r->object.empty()) {
    r->object = j["name"].get<std::string>().substr(0, kMaxNameBytes + 1);
  }
  return true;
}

}  // namespace

bool CarriesCredential(const std::string& name) {
  const std::string n = absl::AsciiStrToLower(name);
  return n == "access_token" || n == "key" || n == "signature" || n == "googleaccessid" ||
         absl::StartsWith(n, "x-goog-") || absl::StartsWith(n, "x-amz-");
}

GcsRequest ClassifyGcs(absl::string_view method, absl::string_view path,
                       const std::multimap<std::string, std::string>& query,
                       absl::string_view content_type, absl::string_view body) {
  GcsRequest r;
  auto refuse = [&r](std::string why,
                     audit::RefusalKind kind = audit::RefusalKind::kNotSupported) -> GcsRequest {
    r.cls = StatementClass::kUnknown;
    r.refusal = std::move(why);
    r.refusal_kind = kind;
    return r;
  };
  auto unknown = [&]() {
    return refuse(absl::StrCat("the agent does not know what ", method, " ", path.substr(0, 200),
                               " does, so it is refused"));
  };
  for (const auto& [name, value] : query) {
    if (query.count(name) > 1) {
      // Which one the service takes is its business: the agent decides on one reading only.
      return refuse(absl::StrCat("the query parameter ", name.substr(0, 64), " is given twice"));
    }
    if (CarriesCredential(name)) {
      return refuse(absl::StrCat("a credential in the query string (", name.substr(0, 64),
                                 ") is refused: the caller's token goes in the Authorization "
                                 "header, and the agent signs nothing for callers"));
    }
  }
  std::vector<std::string> s;
  if (absl::StrContains(path, "//")) return refuse("an empty path segment");
  for (absl::string_view part : absl::StrSplit(path, '/')) {
    if (part.empty()) continue;
    std::string decoded;
    if (!PercentDecode(part, &decoded)) return refuse("a malformed path segment");
    // A server that resolves dot segments would run another request than the one decided.
    if (decoded == "." || decoded == "..") return refuse("a \".\" or \"..\" path segment");
    if (decoded.size() > kMaxNameBytes) return refuse("a name in the path is over 1024 bytes");
    s.push_back(std::move(decoded));
  }
  r.project = First(query, "project");
  // What the API is: storage/v1, upload/storage/v1, download/storage/v1, batch/storage/v1.
  size_t api = 0;
  std::string surface;
  if (s.size() >= 2 && s[0] == "storage" && s[1] == "v1") {
    api = 2;
  } else if (s.size() >= 3 && s[1] == "storage" && s[2] == "v1" &&
             (s[0] == "upload" || s[0] == "download" || s[0] == "batch")) {
    api = 3;
    surface = s[0];
  } else {
    return unknown();
  }
  if (surface == "batch") {
    // The listener takes POST /batch/storage/v1 apart and decides each request in it; what
    // reaches here is another batch path, or a batch inside a batch.
    return refuse("a batch other than one POST /batch/storage/v1 (nor a batch inside a batch)");
  }
  const std::vector<std::string> p(s.begin() + static_cast<long>(api), s.end());
  const bool get = method == "GET" || method == "HEAD";
  const bool change = method == "PATCH" || method == "PUT";
  const bool post = method == "POST";
  const bool del = method == "DELETE";
  if (p.size() >= 2 && p[0] == "projects") {
    if (p.size() >= 3 && p[2] == "hmacKeys") {
      return refuse(
          "HMAC keys are credentials: creating, listing or changing them through the gateway is "
          "refused");
    }
    if (p.size() == 3 && p[2] == "serviceAccount" && get) {
      r.kind = "projects.serviceAccount.get";
      r.cls = StatementClass::kRead;
      return r;
    }
    return unknown();
  }
  if (p.empty() || p[0] != "b") return unknown();
  if (p.size() >= 2) {
    r.bucket = p[1];
    r.relations.push_back({r.bucket, ""});
  }
  if (Has(query, "predefinedAcl") || Has(query, "predefinedDefaultObjectAcl") ||
      Has(query, "destinationPredefinedAcl")) {
    Raise(&r, StatementClass::kDcl);
  }

  if (surface == "upload") {
    if (p.size() != 3 || p[2] != "o") return unknown();
    r.kind = "objects.insert";
    Raise(&r, StatementClass::kWrite);
    const std::string type = First(query, "uploadType");
    if (Has(query, "upload_id")) {
      // A resumable upload's next step, on the session its start opened: what it writes was
      // decided then (the listener finds the session, its owner and its object by the id).
      if (type != "resumable" || query.size() != 2) {
        return refuse("a resumable upload's session URI with other parameters than its own");
      }
      if (method == "PUT" || post) {
        r.upload = UploadStep::kContinue;
      } else if (del) {
        r.upload = UploadStep::kCancel;
      } else {
        return unknown();
      }
      r.upload_id = First(query, "upload_id").substr(0, 256);
      return r;
    }
    if (!post) return unknown();
    r.object = First(query, "name").substr(0, kMaxNameBytes + 1);
    if (type == "multipart") {
      absl::string_view metadata = MetadataPart(content_type, body);
      if (metadata.data() == nullptr || !ReadMetadata(metadata, false, &r)) {
        return refuse("a multipart upload whose metadata part cannot be read");
      }
    } else if (type == "resumable") {
      // The start of a resumable upload: its body is the object's metadata (JSON, or none).
      if (!body.empty() && !ReadMetadata(body, false, &r)) {
        return refuse("a resumable upload's metadata that is not JSON");
      }
      r.upload = UploadStep::kStart;
    } else if (type != "media") {
      return refuse(absl::StrCat("an upload of type \"", type.substr(0, 32),
                                 "\" (media, multipart and resumable are relayed)"));
    }
    if (r.object.empty()) return refuse("an upload without an object name");
    if (r.object.size() > kMaxNameBytes) return refuse("an object name over 1024 bytes");
    r.relations = {{r.bucket, r.object}};
    return r;
  }
  if (surface == "download") {
    if (p.size() != 4 || p[2] != "o" || !get) return unknown();
    r.kind = "objects.get";
    r.cls = StatementClass::kRead;
    r.object = p[3];
    r.relations = {{r.bucket, r.object}};
    return r;
  }

  const size_t n = p.size();
  if (n == 1) {  // /b
    if (get) {
      r.kind = "buckets.list";
      r.cls = StatementClass::kRead;
      return r;
    }
    if (post) {
      r.kind = "buckets.insert";
      Raise(&r, StatementClass::kDdl);
      nlohmann::json j = nlohmann::json::parse(body, nullptr, false);
      if (!j.is_object() || !j.contains("name") || !j["name"].is_string()) {
        return refuse("a bucket insert without a bucket name in its body");
      }
      r.bucket = j["name"].get<std::string>().substr(0, kMaxNameBytes);
      r.relations = {{r.bucket, ""}};
      if (!ReadMetadata(body, true, &r)) return refuse("bucket metadata that is not JSON");
      return r;
    }
    return unknown();
  }
  if (n == 2) {  // /b/B
    if (get) {
      r.kind = "buckets.get";
      Raise(&r, StatementClass::kRead);
      return r;
    }
    if (change) {
      r.kind = method == "PATCH" ? "buckets.patch" : "buckets.update";
      Raise(&r, StatementClass::kDdl);
      if (!ReadMetadata(body, true, &r)) return refuse("bucket metadata that is not JSON");
      return r;
    }
    if (del) {
      r.kind = "buckets.delete";
      Raise(&r, StatementClass::kDdl);
      r.guarded.push_back("drop_database");
      return r;
    }
    return unknown();
  }
  const std::string& sub = p[2];
  if (sub == "iam") {
    if (n == 3 && get) {
      r.kind = "buckets.getIamPolicy";
      r.cls = StatementClass::kRead;
      return r;
    }
    if (n == 3 && method == "PUT") {
      r.kind = "buckets.setIamPolicy";
      Raise(&r, StatementClass::kDcl);
      return r;
    }
    if (n == 4 && p[3] == "testPermissions" && get) {
      r.kind = "buckets.testIamPermissions";
      r.cls = StatementClass::kRead;
      return r;
    }
    return unknown();
  }
  if ((sub == "acl" || sub == "defaultObjectAcl") && n <= 4) {
    r.kind = absl::StrCat(sub == "acl" ? "bucketAccessControls" : "defaultObjectAccessControls",
                          get ? ".get" : ".change");
    Raise(&r, get ? StatementClass::kRead : StatementClass::kDcl);
    return r;
  }
  if (sub == "lockRetentionPolicy" && n == 3 && post) {
    r.kind = "buckets.lockRetentionPolicy";
    Raise(&r, StatementClass::kDdl);
    return r;
  }
  if (sub == "notificationConfigs" && n <= 4) {
    r.kind = get ? "notifications.get" : "notifications.change";
    Raise(&r, get ? StatementClass::kRead : StatementClass::kDdl);
    return r;
  }
  if (sub != "o") return unknown();
  if (n == 3) {
    if (!get) return unknown();
    r.kind = "objects.list";
    r.cls = StatementClass::kRead;
    const std::string prefix = First(query, "prefix");
    r.relations = {{r.bucket, absl::StrCat(prefix, "*")}};
    return r;
  }
  if (p[3] == "watch" && n == 4) {
    return refuse("object change notifications (objects.watchAll) are not relayed");
  }
  r.object = p[3];
  r.relations = {{r.bucket, r.object}};
  if (n == 4) {
    if (get) {
      r.kind = "objects.get";
      Raise(&r, StatementClass::kRead);
      return r;
    }
    if (change) {
      r.kind = method == "PATCH" ? "objects.patch" : "objects.update";
      Raise(&r, StatementClass::kWrite);
      if (!ReadMetadata(body, false, &r)) return refuse("object metadata that is not JSON");
      return r;
    }
    if (del) {
      r.kind = "objects.delete";
      Raise(&r, StatementClass::kWrite);
      r.guarded.push_back("drop_table");
      return r;
    }
    return unknown();
  }
  const std::string& action = p[4];
  if (action == "acl" && n <= 6) {
    r.kind = get ? "objectAccessControls.get" : "objectAccessControls.change";
    Raise(&r, get ? StatementClass::kRead : StatementClass::kDcl);
    return r;
  }
  if (action == "compose" && n == 5 && post) {
    r.kind = "objects.compose";
    Raise(&r, StatementClass::kWrite);
    nlohmann::json j = nlohmann::json::parse(body, nullptr, false);
    if (!j.is_object()) return refuse("a compose request whose body is not JSON");
    if (j.contains("sourceObjects") && j["sourceObjects"].is_array()) {
      for (const auto& src : j["sourceObjects"]) {
        if (src.is_object() && src.contains("name") && src["name"].is_string()) {
          r.relations.push_back(
              {r.bucket, src["name"].get<std::string>().substr(0, kMaxNameBytes)});
        }
      }
    }
    if (j.contains("destination") && !ReadMetadata(j["destination"].dump(), false, &r)) {
      return refuse("compose destination metadata that is not JSON");
    }
    return r;
  }
  if ((action == "copyTo" || action == "rewriteTo") && n == 9 && post && p[5] == "b" &&
      p[7] == "o") {
    r.kind = action == "copyTo" ? "objects.copy" : "objects.rewrite";
    Raise(&r, StatementClass::kWrite);
    r.relations.push_back({p[6], p[8]});
    if (!ReadMetadata(body, false, &r)) return refuse("object metadata that is not JSON");
    return r;
  }
  return unknown();
}

}  // namespace sluice::agent::gcs
