// `sluicectl sessions replay`: a session's recording and events as a readable transcript —
// each statement as the client sent it, the policy's decision on it, its result as a table
// (the values the client saw, so masked ones masked), notices, errors and timing. The session's
// protocol (its start event) says how its recorded messages read: PostgreSQL messages
// (replay.cc), MySQL packets typed by the agent (replay_mysql.cc, agent/mysql/recorder.h), or an
// HTTP request and its answer (replay_http.cc, agent/gcs/recorder.h).
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "common/audit/events.h"
#include "sluice/v1/admin.pb.h"

namespace sluice::cli {

// `v` printable on one line: control characters escaped, cut after `max` bytes ("...").
std::string Printable(absl::string_view v, size_t max);

class TranscriptPrinter {
 public:
  explicit TranscriptPrinter(std::FILE* out) : out_(out) {}

  void Header(const v1::SessionSummary& s);
  // One stored event with its recording slice, in sequence order: the slice's messages, then
  // what the event says (a decision, a statement's outcome, the session's end).
  void Event(const v1::StoredEvent& e);
  // Prints what is still pending (a result whose end is not recorded yet).
  void Flush();

 private:
  void Message(char kind, uint64_t offset_us, char type, const std::string& payload);
  void MysqlMessage(char kind, uint64_t offset_us, char type, const std::string& payload);
  void HttpMessage(char kind, uint64_t offset_us, char type, const std::string& payload);
  void Omitted(uint64_t offset_us, uint64_t messages, uint64_t bytes);
  void FlushTable();
  void Line(uint64_t offset_us, const std::string& text);
  void Note(const std::string& text);

  std::FILE* out_;
  std::string protocol_ = "postgres";  // the session's (from its start event)
  // A cloud API's session: one HTTP request and its answer.
  bool HttpProtocol() const {
    return protocol_ == audit::kProtocolGcs || protocol_ == audit::kProtocolBigquery;
  }
  // The result being collected: column names, formats and types, and its rows.
  struct Column {
    std::string name;
    int32_t type_oid = 0;  // MySQL: the column type
    int16_t format = 0;
    bool is_unsigned = false;  // MySQL
  };
  std::vector<Column> columns_;
  std::vector<std::vector<std::string>> rows_;
  uint64_t omitted_rows_ = 0;
  uint64_t omitted_bytes_ = 0;
  bool table_open_ = false;
  std::string http_body_;  // the beginning of the HTTP body being recorded
  uint64_t table_offset_ = 0;
};

}  // namespace sluice::cli
