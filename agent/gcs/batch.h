// Cloud Storage's batch requests (POST /batch/storage/v1): a multipart/mixed body whose parts
// each hold one HTTP request (Content-Type: application/http), answered by a multipart/mixed body
// whose parts each hold one HTTP response, matched by Content-ID. The agent splits a batch into
// its requests so that each is decided on its own (listener.h); this reads and writes the
// envelope. MIME is read by GMime, each embedded request by http-parser.
// https://cloud.google.com/storage/docs/batch
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace sluice::agent::gcs {

// One request of a batch, or why it cannot be read (`error` non-empty; the rest may be partial).
struct BatchRequest {
  std::string content_id;  // without angle brackets; may be empty
  std::string method;
  std::string target;  // as sent: path and query
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::string error;
};

inline constexpr size_t kMaxBatchParts = 100;  // Cloud Storage's own limit

// The requests of a batch body sent with `content_type`; an error when the body is not a
// multipart/mixed batch of at most kMaxBatchParts parts.
absl::StatusOr<std::vector<BatchRequest>> ParseBatch(absl::string_view content_type,
                                                     absl::string_view body);

struct BatchResponse {
  std::string content_id;  // of the request it answers
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;  // without Content-Length
  std::string content_type;
  std::string body;
};

// The batch's answer: returns the body and sets `*content_type` (multipart/mixed with its
// boundary).
std::string WriteBatchResponse(const std::vector<BatchResponse>& responses,
                               std::string* content_type);

}  // namespace sluice::agent::gcs
