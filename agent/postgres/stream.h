// A PostgreSQL connection: the data path's stream (agent/net/stream.h) with PostgreSQL message
// reads, and the session's recorder given everything written to the client.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "agent/net/stream.h"
#include "agent/postgres/recorder.h"
#include "common/wire/postgres/decoder.h"

namespace sluice::agent::postgres {

using net::kNoThrow;
using net::RecvBuffer;

// A whole message read from a stream (copied out of the buffer).
struct Message {
  char type = 0;  // 0 for startup-phase messages
  std::string payload;
};

class Stream : public net::Stream {
 public:
  using net::Stream::Stream;

  // Writes `data` (whole messages), given to the recorder first when there is one.
  asio::awaitable<absl::Status> Write(absl::string_view data) {
    if (recorder_ != nullptr) recorder_->ToClient(data);
    return net::Stream::Write(data);
  }
  // From now on, everything written (whole messages) is also given to `recorder` (null: stop).
  void RecordWrites(SessionRecorder* recorder) { recorder_ = recorder; }

  // Reads one whole message: startup-phase framing when `startup`, else typed framing in
  // `direction`. Protocol errors are InvalidArgument; a closed peer is Unavailable.
  asio::awaitable<absl::StatusOr<Message>> ReadMessage(bool startup,
                                                       wire::postgres::Direction direction,
                                                       const wire::postgres::DecodeLimits& limits);

 private:
  SessionRecorder* recorder_ = nullptr;
};

}  // namespace sluice::agent::postgres
