#include "agent/gcs/batch.h"

#include <gmime/gmime.h>
#include <http_parser.h>

#include <memory>

#include "absl/base/call_once.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/crypto.h"

namespace sluice::agent::gcs {

namespace {

constexpr size_t kMaxTarget = 8192;
constexpr size_t kMaxHeaders = 100;
constexpr size_t kMaxHeaderBytes = 8192;

struct GObjectUnref {
  void operator()(void* p) const {
    if (p != nullptr) g_object_unref(p);
  }
};
template <typename T>
using GPtr = std::unique_ptr<T, GObjectUnref>;

// What http-parser hands over while it reads one embedded request.
struct Reading {
  BatchRequest* out = nullptr;
  bool in_value = false;
  bool complete = false;
  std::string problem;
};

int OnUrl(http_parser* p, const char* at, size_t n) {
  auto* r = static_cast<Reading*>(p->data);
  if (r->out->target.size() + n > kMaxTarget) {
    r->problem = "its target is over 8 KiB";
    return 1;
  }
  r->out->target.append(at, n);
  return 0;
}

int OnHeaderField(http_parser* p, const char* at, size_t n) {
  auto* r = static_cast<Reading*>(p->data);
  if (r->in_value || r->out->headers.empty()) {
    if (r->out->headers.size() >= kMaxHeaders) {
      r->problem = "it has over 100 headers";
      return 1;
    }
    r->out->headers.emplace_back();
    r->in_value = false;
  }
  std::string& name = r->out->headers.back().first;
  if (name.size() + n > kMaxHeaderBytes) {
    r->problem = "a header is over 8 KiB";
    return 1;
  }
  name.append(at, n);
  return 0;
}

int OnHeaderValue(http_parser* p, const char* at, size_t n) {
  auto* r = static_cast<Reading*>(p->data);
  r->in_value = true;
  std::string& value = r->out->headers.back().second;
  if (value.size() + n > kMaxHeaderBytes) {
    r->problem = "a header is over 8 KiB";
    return 1;
  }
  value.append(at, n);
  return 0;
}

int OnBody(http_parser* p, const char* at, size_t n) {
  static_cast<Reading*>(p->data)->out->body.append(at, n);
  return 0;
}

int OnMessageComplete(http_parser* p) {
  static_cast<Reading*>(p->data)->complete = true;
  http_parser_pause(p, 1);  // one request per part: what follows is not read as another
  return 0;
}

// Reads the HTTP request a part holds into `*out` (its `error` says why it could not).
void ReadRequest(absl::string_view bytes, BatchRequest* out) {
  http_parser_settings settings;
  http_parser_settings_init(&settings);
  settings.on_url = OnUrl;
  settings.on_header_field = OnHeaderField;
  settings.on_header_value = OnHeaderValue;
  settings.on_body = OnBody;
  settings.on_message_complete = OnMessageComplete;
  http_parser parser;
  http_parser_init(&parser, HTTP_REQUEST);
  Reading reading;
  reading.out = out;
  parser.data = &reading;
  // A request without a body may end at its headers' blank line, or without it.
  std::string text(bytes);
  if (!absl::StrContains(text, "\r\n\r\n") && !absl::StrContains(text, "\n\n")) {
    text += absl::EndsWith(text, "\n") ? "\r\n" : "\r\n\r\n";
  }
  const size_t used = http_parser_execute(&parser, &settings, text.data(), text.size());
  if (!reading.problem.empty()) {
    out->error = reading.problem;
  } else if (HTTP_PARSER_ERRNO(&parser) != HPE_OK && HTTP_PARSER_ERRNO(&parser) != HPE_PAUSED) {
    out->error = absl::StrCat("it is not an HTTP request (",
                              http_errno_description(HTTP_PARSER_ERRNO(&parser)), ")");
  } else if (!reading.complete) {
    out->error = "it ends before its body does";
  } else if (!absl::StripAsciiWhitespace(absl::string_view(text).substr(used)).empty()) {
    out->error = "bytes follow its request (a body needs a Content-Length)";
  } else {
    out->method = http_method_str(static_cast<http_method>(parser.method));
  }
}

const char* Reason(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 204:
      return "No Content";
    case 304:
      return "Not Modified";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 409:
      return "Conflict";
    case 412:
      return "Precondition Failed";
    case 429:
      return "Too Many Requests";
    case 500:
      return "Internal Server Error";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    default:
      return "Status";
  }
}

}  // namespace

absl::StatusOr<std::vector<BatchRequest>> ParseBatch(absl::string_view content_type,
                                                     absl::string_view body) {
  static absl::once_flag init;
  absl::call_once(init, [] { g_mime_init(); });
  if (!absl::StartsWithIgnoreCase(absl::StripLeadingAsciiWhitespace(content_type),
                                  "multipart/mixed") ||
      content_type.size() > 1024 || absl::StrContains(content_type, "\n") ||
      absl::StrContains(content_type, "\r")) {
    return absl::InvalidArgumentError("a batch's Content-Type must be multipart/mixed");
  }
  const std::string entity = absl::StrCat("Content-Type: ", content_type, "\r\n\r\n", body);
  GPtr<GMimeStream> stream(g_mime_stream_mem_new_with_buffer(entity.data(), entity.size()));
  GPtr<GMimeParser> parser(g_mime_parser_new_with_stream(stream.get()));
  GPtr<GMimeObject> top(g_mime_parser_construct_part(parser.get(), nullptr));
  if (top == nullptr || !GMIME_IS_MULTIPART(top.get())) {
    return absl::InvalidArgumentError("the batch's body is not multipart/mixed with a boundary");
  }
  GMimeMultipart* multipart = GMIME_MULTIPART(top.get());
  const int count = g_mime_multipart_get_count(multipart);
  if (count <= 0) return absl::InvalidArgumentError("the batch holds no requests");
  if (static_cast<size_t>(count) > kMaxBatchParts) {
    return absl::InvalidArgumentError(
        absl::StrCat("the batch holds ", count, " requests; at most ", kMaxBatchParts));
  }
  std::vector<BatchRequest> out(static_cast<size_t>(count));
  for (int i = 0; i < count; ++i) {
    BatchRequest& r = out[static_cast<size_t>(i)];
    GMimeObject* part = g_mime_multipart_get_part(multipart, i);
    if (const char* id = g_mime_object_get_content_id(part))
      r.content_id = std::string(id).substr(0, 256);
    if (!GMIME_IS_PART(part)) {
      r.error = "the part is not a single request";
      continue;
    }
    GMimeContentType* type = g_mime_object_get_content_type(part);
    if (type == nullptr || !g_mime_content_type_is_type(type, "application", "http")) {
      r.error = "the part's Content-Type is not application/http";
      continue;
    }
    GMimeDataWrapper* content = g_mime_part_get_content(GMIME_PART(part));
    if (content == nullptr) {
      r.error = "the part is empty";
      continue;
    }
    GPtr<GMimeStream> mem(g_mime_stream_mem_new());
    if (g_mime_data_wrapper_write_to_stream(content, mem.get()) < 0) {
      r.error = "the part's content could not be read";
      continue;
    }
    GByteArray* bytes = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(mem.get()));
    ReadRequest(absl::string_view(reinterpret_cast<const char*>(bytes->data), bytes->len), &r);
  }
  return out;
}

std::string WriteBatchResponse(const std::vector<BatchResponse>& responses,
                               std::string* content_type) {
  const std::string boundary = absl::StrCat("batch_", RandomHex(16));
  *content_type = absl::StrCat("multipart/mixed; boundary=", boundary);
  std::string out;
  for (const BatchResponse& r : responses) {
    absl::StrAppend(&out, "--", boundary, "\r\nContent-Type: application/http\r\n");
    if (!r.content_id.empty())
      absl::StrAppend(&out, "Content-ID: <response-", r.content_id, ">\r\n");
    absl::StrAppend(&out, "\r\nHTTP/1.1 ", r.status, " ", Reason(r.status), "\r\n");
    for (const auto& [name, value] : r.headers) absl::StrAppend(&out, name, ": ", value, "\r\n");
    if (!r.body.empty() || (r.status != 204 && r.status != 304)) {
      absl::StrAppend(&out, "Content-Type: ", r.content_type, "\r\n");
    }
    absl::StrAppend(&out, "Content-Length: ", r.body.size(), "\r\n\r\n", r.body, "\r\n");
  }
  absl::StrAppend(&out, "--", boundary, "--\r\n");
  return out;
}

}  // namespace sluice::agent::gcs
