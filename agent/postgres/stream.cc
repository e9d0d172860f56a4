#include "agent/postgres/stream.h"

namespace sluice::agent::postgres {

using wire::postgres::DecodeFrame;
using wire::postgres::DecodeLimits;
using wire::postgres::DecodeResult;
using wire::postgres::DecodeStartupFrame;
using wire::postgres::DecodeStatus;
using wire::postgres::Direction;

asio::awaitable<absl::StatusOr<Message>> Stream::ReadMessage(bool startup, Direction direction,
                                                             const DecodeLimits& limits) {
  while (true) {
    absl::string_view data = buffer().data();
    DecodeResult r =
        startup ? DecodeStartupFrame(data, limits) : DecodeFrame(data, direction, limits);
    if (r.status == DecodeStatus::kError) co_return absl::InvalidArgumentError(r.error);
    if (r.status == DecodeStatus::kMessage) {
      Message m{r.message.type, std::string(r.message.payload)};
      Consume(r.message.wire_size);
      co_return m;
    }
    absl::Status st = co_await ReadMore(limits.max_message_bytes + 5);
    if (!st.ok()) co_return st;
  }
}

}  // namespace sluice::agent::postgres
