#include "agent/mysql/packet_stream.h"

namespace sluice::agent::mysql {

using wire::mysql::DecodeLimits;
using wire::mysql::DecodeResult;
using wire::mysql::DecodeStatus;

asio::awaitable<absl::Status> PacketStream::FillPacket(const DecodeLimits& limits) {
  while (true) {
    DecodeResult r = Peek(limits);
    if (r.status == DecodeStatus::kError) co_return absl::InvalidArgumentError(r.error);
    if (r.status == DecodeStatus::kPacket) co_return absl::OkStatus();
    // A payload of the limit, its packet headers (one per 16 MiB) and the next packet's header.
    const size_t headers = 4 * (limits.max_payload_bytes / wire::mysql::kMaxPayloadPerPacket + 2);
    absl::Status st = co_await ReadMore(limits.max_payload_bytes + headers);
    if (!st.ok()) co_return st;
  }
}

asio::awaitable<absl::StatusOr<OwnedPacket>> PacketStream::ReadPacket(const DecodeLimits& limits) {
  absl::Status st = co_await FillPacket(limits);
  if (!st.ok()) co_return st;
  DecodeResult r = Peek(limits);
  OwnedPacket p;
  p.sequence = r.packet.sequence;
  p.payload = r.packet.joined.empty() ? std::string(r.packet.payload) : std::move(r.packet.joined);
  Consume(r.packet.wire_size);
  co_return p;
}

asio::awaitable<absl::Status> PacketStream::WritePacket(absl::string_view payload, uint8_t sequence,
                                                        uint8_t* next) {
  // One write at a time per stream (a session's commands are serial): the framing buffer is
  // reused, so a command costs no allocation once it has grown.
  framed_.clear();
  uint8_t after = wire::mysql::EncodePacket(payload, sequence, &framed_);
  if (next != nullptr) *next = after;
  absl::Status st = co_await Write(framed_);
  if (framed_.capacity() > (256 << 10)) std::string().swap(framed_);
  co_return st;
}

}  // namespace sluice::agent::mysql
