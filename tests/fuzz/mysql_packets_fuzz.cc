// libFuzzer target for the MySQL wire codec: arbitrary bytes through the packet framing, every
// typed decoder on every payload (AddressSanitizer and UBSan watch the reads), and the framing of
// whatever decodes framed again must give the same payload back. Built with clang when
// -DSLUICE_FUZZ=ON; scripts/test runs it after the PostgreSQL one.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "common/wire/mysql/packets.h"

namespace my = sluice::wire::mysql;

namespace {

void Typed(absl::string_view p) {
  (void)my::HandshakeV10::Decode(p);
  (void)my::HandshakeResponse41::Decode(p);
  (void)my::OkPacket::Decode(p);
  (void)my::ErrPacket::Decode(p);
  (void)my::ColumnDefinition::Decode(p);
  (void)my::IsEofPacket(p);
  my::Reader r(p);
  while (r.ok() && r.remaining() > 0) r.LenencString();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::string_view in(reinterpret_cast<const char*>(data), size);
  my::DecodeLimits limits;
  limits.max_payload_bytes = 1 << 20;
  while (!in.empty()) {
    my::DecodeResult r = my::DecodeLogical(in, limits);
    if (r.status != my::DecodeStatus::kPacket) break;
    if (r.packet.wire_size == 0 || r.packet.wire_size > in.size()) std::abort();
    Typed(r.packet.payload);
    std::string again;
    my::EncodePacket(r.packet.payload, r.packet.sequence, &again);
    my::DecodeResult back = my::DecodeLogical(again, limits);
    if (back.status != my::DecodeStatus::kPacket || back.packet.payload != r.packet.payload ||
        back.packet.wire_size != again.size()) {
      std::abort();
    }
    in.remove_prefix(r.packet.wire_size);
  }
  Typed(in);
  return 0;
}
