#include "common/wire/postgres/decoder.h"

#include "absl/strings/str_cat.h"
#include "common/wire/postgres/wire.h"

namespace sluice::wire::postgres {
namespace {

// https://www.postgresql.org/docs/current/protocol-message-formats.html
constexpr absl::string_view kFrontendTypes = "BCDEFHPQSXcdfp";
constexpr absl::string_view kBackendTypes = "123ACDEGHIKNRSTVWZcdnstv";

DecodeResult Error(std::string why) {
  DecodeResult r;
  r.status = DecodeStatus::kError;
  r.error = std::move(why);
  return r;
}

std::string Printable(char c) {
  unsigned char u = static_cast<unsigned char>(c);
  if (u >= 0x20 && u < 0x7f) return absl::StrCat("'", std::string(1, c), "'");
  return absl::StrCat("0x", absl::Hex(u, absl::kZeroPad2));
}

}  // namespace

DecodeResult DecodeStartupFrame(absl::string_view buffered, const DecodeLimits& limits) {
  if (buffered.size() < 4) return {};
  WireReader r(buffered);
  int32_t len = r.Int32();
  if (len < 8) return Error(absl::StrCat("startup packet length ", len, " is too short"));
  if (static_cast<size_t>(len) > limits.max_startup_bytes) {
    return Error(absl::StrCat("startup packet of ", len, " bytes exceeds the limit of ",
                              limits.max_startup_bytes));
  }
  if (buffered.size() < static_cast<size_t>(len)) return {};
  DecodeResult out;
  out.status = DecodeStatus::kMessage;
  out.message.type = 0;
  out.message.payload = buffered.substr(4, static_cast<size_t>(len) - 4);
  out.message.wire_size = static_cast<size_t>(len);
  return out;
}

DecodeResult DecodeFrame(absl::string_view buffered, Direction direction,
                         const DecodeLimits& limits) {
  if (buffered.empty()) return {};
  char type = buffered[0];
  absl::string_view allowed = direction == Direction::kFrontend ? kFrontendTypes : kBackendTypes;
  if (type == '\0' || allowed.find(type) == absl::string_view::npos) {
    return Error(absl::StrCat("unexpected ",
                              direction == Direction::kFrontend ? "frontend" : "backend",
                              " message type ", Printable(type)));
  }
  if (buffered.size() < 5) return {};
  WireReader r(buffered.substr(1));
  int32_t len = r.Int32();
  if (len < 4) return Error(absl::StrCat("message ", Printable(type), " has invalid length ", len));
  if (static_cast<size_t>(len) > limits.max_message_bytes) {
    return Error(absl::StrCat("message ", Printable(type), " of ", len,
                              " bytes exceeds the limit of ", limits.max_message_bytes));
  }
  size_t total = 1 + static_cast<size_t>(len);
  if (buffered.size() < total) return {};
  DecodeResult out;
  out.status = DecodeStatus::kMessage;
  out.message.type = type;
  out.message.payload = buffered.substr(5, static_cast<size_t>(len) - 4);
  out.message.wire_size = total;
  return out;
}

bool LooksLikeTlsClientHello(absl::string_view buffered) {
  return !buffered.empty() && static_cast<unsigned char>(buffered[0]) == 0x16;
}

}  // namespace sluice::wire::postgres
