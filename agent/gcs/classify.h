// What one Cloud Storage JSON API request does, decided from what will run rather than from the
// URL alone: its method and path (the bucket and object it names), the query parameters that
// change what it does (predefined ACLs, a project), and for the requests that carry metadata, its
// JSON body (ACLs, IAM, lifecycle rules that delete). The result is a statement-like record that
// goes through the session core's gate like a SQL statement:
//
//   read    GET of buckets, objects (metadata or media), lists, ACLs and IAM policies
//   write   uploads (media, multipart), object metadata changes, compose, copy, rewrite
//   ddl     bucket create and change (settings, retention, notifications), lifecycle rules
//   dcl     ACLs, IAM policies, predefined ACLs, an `acl` in an upload's or a change's metadata
//
// Deleting a bucket is `drop_database` to guardrails, deleting an object (or a lifecycle rule
// that deletes objects) is `drop_table`: a rule's `schemas` patterns select buckets, its `tables`
// patterns object names ("logs/*"). Anything the agent does not know is refused (fail closed),
// and so are requests that would carry a credential out of the gateway or bring one in (HMAC
// keys; signed-URL and access-token query parameters). A batch is taken apart by the listener
// (batch.h), and each of its requests classified here on its own.
//
// A resumable upload is decided at its start (the POST that names the object and carries its
// metadata); its later steps (PUT of bytes, DELETE to cancel) name only the session's id, and the
// listener binds them to the caller and the object of the start.
// https://cloud.google.com/storage/docs/json_api/v1
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "agent/session/statement_facts.h"
#include "common/audit/events.h"
#include "common/url_encoding.h"

namespace sluice::agent::gcs {

// Where a request stands in a resumable upload.
enum class UploadStep { kNone, kStart, kContinue, kCancel };

struct GcsRequest : session::StatementFacts {
  // `kind` (StatementFacts) is the API method: "objects.get", "buckets.delete", ...
  std::string bucket;
  std::string object;   // decoded
  std::string project;  // a `project` parameter (bucket list and create)
  UploadStep upload = UploadStep::kNone;
  std::string upload_id;  // kContinue, kCancel: the session's id as the caller sent it
  // Non-empty: refused before anything is sent, with this reason (and refusal_kind).
  std::string refusal;
  audit::RefusalKind refusal_kind = audit::RefusalKind::kNotSupported;
};

// `path`: the request's path as sent (percent-encoded), without the query; `query`: its decoded
// parameters; `content_type` and `body`: the request's.
GcsRequest ClassifyGcs(absl::string_view method, absl::string_view path,
                       const std::multimap<std::string, std::string>& query,
                       absl::string_view content_type, absl::string_view body);

// Whether a query parameter named `name` carries a credential: a signed URL's, an API key, an
// OAuth token (refused, never relayed or re-signed).
bool CarriesCredential(const std::string& name);

using ::sluice::PercentDecode;  // (common/url_encoding.h)

}  // namespace sluice::agent::gcs
