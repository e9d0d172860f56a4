#include "common/wire/postgres/decoder.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <random>

#include "common/wire/postgres/messages.h"

namespace sluice::wire::postgres {
namespace {

using ::testing::HasSubstr;

DecodeLimits Limits() { return DecodeLimits{}; }

TEST(DecodeFrame, WholeMessagesOneByOne) {
  std::string stream =
      Query{"SELECT 1"}.Encode() + Execute{"", 0}.Encode() + std::string("S\0\0\0\4", 5);
  absl::string_view rest = stream;
  std::vector<char> types;
  while (!rest.empty()) {
    DecodeResult r = DecodeFrame(rest, Direction::kFrontend, Limits());
    ASSERT_EQ(r.status, DecodeStatus::kMessage);
    types.push_back(r.message.type);
    rest.remove_prefix(r.message.wire_size);
  }
  EXPECT_EQ(types, (std::vector<char>{'Q', 'E', 'S'}));
}

TEST(DecodeFrame, EveryTruncatedPrefixNeedsMoreData) {
  std::string msg = Parse{"s1", "SELECT $1::int", {23}}.Encode();
  for (size_t n = 0; n < msg.size(); ++n) {
    DecodeResult r =
        DecodeFrame(absl::string_view(msg).substr(0, n), Direction::kFrontend, Limits());
    EXPECT_EQ(r.status, DecodeStatus::kNeedMore) << "prefix " << n;
  }
  EXPECT_EQ(DecodeFrame(msg, Direction::kFrontend, Limits()).status, DecodeStatus::kMessage);
}

TEST(DecodeFrame, LengthIsCappedBeforeAnythingIsBuffered) {
  // 'D' claiming 2 GiB - 1 arrives with only its header: refused at once.
  std::string header("D\x7f\xff\xff\xff", 5);
  DecodeResult r = DecodeFrame(header, Direction::kBackend, Limits());
  ASSERT_EQ(r.status, DecodeStatus::kError);
  EXPECT_THAT(r.error, HasSubstr("exceeds the limit"));
  std::string negative("Q\xff\xff\xff\xf0", 5);
  EXPECT_EQ(DecodeFrame(negative, Direction::kFrontend, Limits()).status, DecodeStatus::kError);
  std::string too_short("Q\0\0\0\3", 5);
  EXPECT_THAT(DecodeFrame(too_short, Direction::kFrontend, Limits()).error,
              HasSubstr("invalid length 3"));
}

TEST(DecodeFrame, TypesADirectionNeverSendsAreErrors) {
  EXPECT_THAT(DecodeFrame("Z\0\0\0\5I", Direction::kFrontend, Limits()).error,
              HasSubstr("unexpected frontend message type 'Z'"));
  EXPECT_THAT(DecodeFrame(std::string("\x01\0\0\0\4", 5), Direction::kBackend, Limits()).error,
              HasSubstr("unexpected backend message type 0x01"));
  EXPECT_EQ(DecodeFrame("Q", Direction::kBackend, Limits()).status, DecodeStatus::kError);
}

TEST(DecodeStartupFrame, SslRequestStartupAndLimits) {
  std::string ssl("\0\0\0\x08\x04\xd2\x16\x2f", 8);
  DecodeResult r = DecodeStartupFrame(ssl, Limits());
  ASSERT_EQ(r.status, DecodeStatus::kMessage);
  EXPECT_EQ(*ClassifyStartup(r.message.payload), StartupKind::kSslRequest);

  StartupMessage s;
  s.parameters = {{"user", "ci-bot"}, {"database", "orders-prod"}};
  std::string wire = s.Encode();
  for (size_t n = 0; n < wire.size(); ++n) {
    EXPECT_EQ(DecodeStartupFrame(absl::string_view(wire).substr(0, n), Limits()).status,
              DecodeStatus::kNeedMore);
  }
  r = DecodeStartupFrame(wire, Limits());
  ASSERT_EQ(r.status, DecodeStatus::kMessage);
  EXPECT_EQ(*ClassifyStartup(r.message.payload), StartupKind::kStartup);

  std::string huge("\0\x01\0\0", 4);  // 65536 bytes
  EXPECT_THAT(DecodeStartupFrame(huge, Limits()).error, HasSubstr("exceeds the limit of 10000"));
  std::string tiny("\0\0\0\x04", 4);
  EXPECT_EQ(DecodeStartupFrame(tiny, Limits()).status, DecodeStatus::kError);
  EXPECT_THAT(ClassifyStartup(std::string("\0\x02\0\0", 4)).status().message(),
              HasSubstr("unsupported frontend protocol 2.0"));
}

TEST(DecodeStartupFrame, DirectTlsIsRecognised) {
  EXPECT_TRUE(LooksLikeTlsClientHello("\x16\x03\x01"));
  EXPECT_FALSE(LooksLikeTlsClientHello(std::string("\0\0\0\x08", 4)));
}

// Seeded random input (a small, deterministic fuzz run inside the unit tests; the sanitizer
// build runs it too): no crash, and a decoded message never extends past the input.
TEST(DecodeFrame, RandomInputNeverReadsPastTheBuffer) {
  std::mt19937 rng(20261125);
  DecodeLimits limits;
  limits.max_message_bytes = 4096;
  for (int i = 0; i < 20000; ++i) {
    std::string buf(rng() % 64, '\0');
    for (char& c : buf) c = static_cast<char>(rng());
    if (!buf.empty() && (i % 2)) buf[0] = "QPBDESHXTZCKR"[rng() % 13];
    for (Direction d : {Direction::kFrontend, Direction::kBackend}) {
      DecodeResult r = DecodeFrame(buf, d, limits);
      if (r.status != DecodeStatus::kMessage) continue;
      ASSERT_LE(r.message.wire_size, buf.size());
      // Typed decoders accept or refuse the payload; they never crash.
      (void)Query::Decode(r.message.payload);
      (void)Parse::Decode(r.message.payload);
      (void)Bind::Decode(r.message.payload);
      (void)RowDescription::Decode(r.message.payload);
      (void)DataRow::Decode(r.message.payload);
      (void)ErrorOrNotice::Decode(r.message.payload);
      (void)NegotiateProtocolVersion::Decode(r.message.payload);
    }
    DecodeResult s = DecodeStartupFrame(buf, limits);
    if (s.status == DecodeStatus::kMessage) {
      ASSERT_LE(s.message.wire_size, buf.size());
      (void)StartupMessage::Decode(s.message.payload);
      (void)CancelRequest::Decode(s.message.payload);
    }
  }
}

}  // namespace
}  // namespace sluice::wire::postgres
