// The HTTP half of the transcript (replay.h): a Cloud Storage session's request and answer as
// the agent recorded them (agent/gcs/recorder.h): the request's head ('R': method and target,
// then the headers the service got), its body in pieces ('b') and its end ('e': its length); the
// answer's head ('H': the status, then its headers), its body as the client got it ('d') and its
// end ('f'). Bodies are shown by their beginning; the recording's cap shows as an omission line.
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "cli/replay.h"

namespace sluice::cli {
namespace {

constexpr size_t kShownBodyChars = 400;

}  // namespace

void TranscriptPrinter::HttpMessage(char kind, uint64_t offset_us, char type,
                                    const std::string& payload) {
  (void)kind;
  switch (type) {
    case 'R':
    case 'H': {
      std::vector<std::string> lines = absl::StrSplit(payload, '\n');
      Line(offset_us, absl::StrCat(type == 'R' ? "> " : "< ", Printable(lines[0], 2000)));
      for (size_t i = 1; i < lines.size() && i <= 40; ++i) {
        std::fprintf(out_, "%12s    %s\n", "", Printable(lines[i], 200).c_str());
      }
      http_body_.clear();
      return;
    }
    case 'b':
    case 'd':
      if (http_body_.size() < kShownBodyChars) {
        http_body_ += payload.substr(0, kShownBodyChars - http_body_.size());
      }
      return;
    case 'e':
    case 'f': {
      uint64_t length = 0;
      (void)absl::SimpleAtoi(payload, &length);
      if (length > 0) {
        std::fprintf(out_, "%12s    body (%llu bytes): %s\n", "",
                     static_cast<unsigned long long>(length),
                     Printable(http_body_, kShownBodyChars).c_str());
      }
      http_body_.clear();
      return;
    }
    default:
      return;
  }
}

}  // namespace sluice::cli
