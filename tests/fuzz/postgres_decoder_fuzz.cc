// libFuzzer target for the PostgreSQL wire layer: arbitrary bytes through the startup and typed
// framing in both directions, every typed decoder on every frame, and Decode(Encode(m)) == m for
// whatever decodes. Built with clang when -DSLUICE_FUZZ=ON; scripts/test runs it for 60 s.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "common/wire/postgres/decoder.h"
#include "common/wire/postgres/messages.h"

namespace pg = sluice::wire::postgres;

namespace {

constexpr auto kFront = pg::Direction::kFrontend;
constexpr auto kBack = pg::Direction::kBackend;

// `startup`: the message uses startup framing; else it is framed in direction `dir`.
template <typename T, typename... EncodeArgs>
void RoundTrip(absl::string_view payload, bool startup, pg::Direction dir, EncodeArgs... args) {
  auto m = T::Decode(payload);
  if (!m.ok()) return;
  std::string wire = m->Encode(args...);
  pg::DecodeLimits limits;
  limits.max_message_bytes = 1 << 30;
  limits.max_startup_bytes = 1 << 30;
  pg::DecodeResult r =
      startup ? pg::DecodeStartupFrame(wire, limits) : pg::DecodeFrame(wire, dir, limits);
  if (r.status != pg::DecodeStatus::kMessage || r.message.wire_size != wire.size()) std::abort();
  auto again = T::Decode(r.message.payload);
  if (!again.ok() || again->Encode(args...) != wire) std::abort();
}

void Typed(absl::string_view p) {
  RoundTrip<pg::Query>(p, false, kFront);
  RoundTrip<pg::Parse>(p, false, kFront);
  RoundTrip<pg::Bind>(p, false, kFront);
  RoundTrip<pg::Execute>(p, false, kFront);
  RoundTrip<pg::PasswordMessage>(p, false, kFront);
  RoundTrip<pg::DescribeOrClose>(p, false, kFront, 'D');
  RoundTrip<pg::RowDescription>(p, false, kBack);
  RoundTrip<pg::DataRow>(p, false, kBack);
  RoundTrip<pg::CommandComplete>(p, false, kBack);
  RoundTrip<pg::ErrorOrNotice>(p, false, kBack, 'E');
  RoundTrip<pg::ReadyForQuery>(p, false, kBack);
  RoundTrip<pg::ParameterStatus>(p, false, kBack);
  RoundTrip<pg::BackendKeyData>(p, false, kBack);
  RoundTrip<pg::NegotiateProtocolVersion>(p, false, kBack);
  RoundTrip<pg::Authentication>(p, false, kBack);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::string_view in(reinterpret_cast<const char*>(data), size);
  pg::DecodeLimits limits;
  limits.max_message_bytes = 1 << 16;
  // A client connection: one startup packet, then frontend messages.
  absl::string_view rest = in;
  pg::DecodeResult s = pg::DecodeStartupFrame(rest, limits);
  if (s.status == pg::DecodeStatus::kMessage) {
    if (s.message.wire_size > rest.size()) std::abort();
    (void)pg::ClassifyStartup(s.message.payload);
    RoundTrip<pg::StartupMessage>(s.message.payload, true, kFront);
    RoundTrip<pg::CancelRequest>(s.message.payload, true, kFront);
    rest.remove_prefix(s.message.wire_size);
  }
  for (pg::Direction d : {pg::Direction::kFrontend, pg::Direction::kBackend}) {
    absl::string_view stream = d == pg::Direction::kFrontend ? rest : in;
    while (true) {
      pg::DecodeResult r = pg::DecodeFrame(stream, d, limits);
      if (r.status != pg::DecodeStatus::kMessage) break;
      if (r.message.wire_size > stream.size() || r.message.wire_size < 5) std::abort();
      Typed(r.message.payload);
      stream.remove_prefix(r.message.wire_size);
    }
  }
  return 0;
}
