// The recording of one Cloud Storage request (a session of one HTTP exchange): the session
// core's recorder (agent/session/recorder.h) fed by the listener with what it knows each piece
// is. From the client: the request's head ('R': the method and target, then the headers the
// service gets, one per line — never the caller's Authorization), its body in pieces ('b', data:
// capped like a result's rows) and its end ('e': the body's length). To the client: the answer's
// head ('H': the status, then its headers), its body as the client got it, so masked where it was
// ('d', data: capped), and its end ('f': the length sent). The cap (RecordingLimits, per body)
// is recorded as an omission entry with the count and bytes left out. cli/replay_http.cc reads it.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "agent/session/recorder.h"

namespace sluice::agent::gcs {

inline constexpr char kRecordedRequest = 'R';
inline constexpr char kRecordedRequestBody = 'b';
inline constexpr char kRecordedRequestEnd = 'e';
inline constexpr char kRecordedAnswer = 'H';
inline constexpr char kRecordedAnswerBody = 'd';
inline constexpr char kRecordedAnswerEnd = 'f';

class HttpRecorder : public session::Recorder {
 public:
  using Recorder::Recorder;
  // Bodies are recorded in pieces of this size, so that a capped body keeps its beginning.
  static constexpr size_t kPiece = 16 << 10;

  void Request(absl::string_view method, absl::string_view target,
               const std::vector<std::pair<std::string, std::string>>& headers) {
    if (!enabled()) return;
    Record(audit::kRecordedFromClient, kRecordedRequest,
           Head(absl::StrCat(method, " ", target), headers), false, Offset(absl::Now()), &client_);
  }
  void RequestBody(absl::string_view bytes) {
    Pieces(audit::kRecordedFromClient, kRecordedRequestBody, bytes, &client_);
  }
  void RequestEnd(uint64_t length) {
    if (!enabled()) return;
    Record(audit::kRecordedFromClient, kRecordedRequestEnd, absl::StrCat(length), false,
           Offset(absl::Now()), &client_);
  }
  void Answer(int status, const std::vector<std::pair<std::string, std::string>>& headers) {
    if (!enabled()) return;
    Record(audit::kRecordedToClient, kRecordedAnswer, Head(absl::StrCat("HTTP ", status), headers),
           false, Offset(absl::Now()), &server_);
  }
  void AnswerBody(absl::string_view bytes) {
    Pieces(audit::kRecordedToClient, kRecordedAnswerBody, bytes, &server_);
  }
  void AnswerEnd(uint64_t length) {
    if (!enabled()) return;
    Record(audit::kRecordedToClient, kRecordedAnswerEnd, absl::StrCat(length), false,
           Offset(absl::Now()), &server_);
  }

 private:
  static std::string Head(std::string first,
                          const std::vector<std::pair<std::string, std::string>>& headers) {
    for (const auto& [name, value] : headers) absl::StrAppend(&first, "\n", name, ": ", value);
    return first;
  }
  void Pieces(char kind, char type, absl::string_view bytes, Result* result) {
    if (!enabled()) return;
    const uint64_t at = Offset(absl::Now());
    for (size_t i = 0; i < bytes.size(); i += kPiece) {
      Record(kind, type, bytes.substr(i, kPiece), /*data=*/true, at, result);
    }
  }
};

}  // namespace sluice::agent::gcs
