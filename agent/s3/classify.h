// What one S3 REST request does (https://docs.aws.amazon.com/AmazonS3/latest/API/), decided from
// what will run: the method, the bucket and key its path names (path-style addressing:
// `/<bucket>/<key>`), the sub-resource its query names (`?acl`, `?lifecycle`, `?uploads`, ...)
// and the headers that change what it does (a copy's source, canned ACLs and grants). The result
// is a statement-like record for the session core's gate, like the Cloud Storage one
// (agent/gcs/classify.h):
//
//   read    ListBuckets, ListObjects(V2), HeadBucket, HeadObject, GetObject, and the Get of every
//           bucket and object setting (ACLs and policies included: reading them changes nothing)
//   write   PutObject, CopyObject (its source is a relation too), multipart uploads (create,
//           upload a part, complete, abort), DeleteObject, object tagging, RestoreObject
//   ddl     CreateBucket, DeleteBucket, bucket settings (versioning, CORS, encryption, tagging,
//           website, logging, notifications, replication, lifecycle), object retention and holds
//   dcl     bucket and object ACLs, bucket policies, public access blocks, ownership controls,
//           and a canned ACL or grant (x-amz-acl, x-amz-grant-*) on an upload or a copy
//
// A bucket delete is `drop_database`, an object delete `drop_table` (a rule's `schemas` select
// buckets, its `tables` object keys), a lifecycle configuration that expires objects is
// `drop_table` over the bucket's objects. FAILS CLOSED: an unknown sub-resource or method, a
// presigned request (credentials in the query), S3 Select (SQL the agent does not read over an
// object's bytes), a browser POST upload, and the multi-object delete (its keys are in an XML body
// the agent does not read yet) are refused with the reason.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"
#include "agent/session/statement_facts.h"
#include "common/audit/events.h"

namespace sluice::agent::s3 {

struct S3Request : session::StatementFacts {
  // `kind` (StatementFacts) is the API operation: "GetObject", "DeleteBucket", ...
  std::string bucket;
  std::string key;  // decoded
  // Non-empty: refused before anything is sent, with this reason (and refusal_kind).
  std::string refusal;
  audit::RefusalKind refusal_kind = audit::RefusalKind::kNotSupported;
};

// `path`: as sent (percent-encoded), without the query; `query`: the raw query string without
// '?'; `headers`: the request's.
S3Request ClassifyS3(absl::string_view method, absl::string_view path, absl::string_view query,
                     const std::vector<std::pair<std::string, std::string>>& headers);

}  // namespace sluice::agent::s3
