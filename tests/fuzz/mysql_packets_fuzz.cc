// libFuzzer target for the MySQL wire codec: arbitrary bytes through the packet framing, every
// typed decoder on every payload (AddressSanitizer and UBSan watch the reads), and the framing of
// whatever decodes framed again must give the same payload back. Built with clang when
// -DSLUICE_FUZZ=ON; scripts/test runs it after the PostgreSQL one.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "common/wire/mysql/packets.h"
#include "common/wire/mysql/rows.h"

namespace my = sluice::wire::mysql;

namespace {

void Typed(absl::string_view p) {
  (void)my::HandshakeV10::Decode(p);
  (void)my::HandshakeResponse41::Decode(p);
  (void)my::OkPacket::Decode(p);
  (void)my::ErrPacket::Decode(p);
  (void)my::ColumnDefinition::Decode(p);
  (void)my::AuthSwitchRequest::Decode(p);
  (void)my::IsEofPacket(p);
  // Result rows: as text rows of a few widths, and as binary rows whose column types are the
  // payload's first bytes (every value of a split row rendered as text).
  std::vector<my::RowValue> values;
  for (size_t columns : {1, 3, 17}) (void)my::SplitTextRow(p, columns, &values);
  std::vector<uint8_t> types(p.begin(), p.begin() + std::min<size_t>(p.size(), 12));
  if (my::SplitBinaryRow(p, types, &values).ok()) {
    for (size_t i = 0; i < values.size(); ++i) {
      if (!values[i].null) (void)my::BinaryValueText(values[i].data, types[i], i % 2 == 0);
    }
  }
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
