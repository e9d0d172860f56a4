#include "common/wire/postgres/messages.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/wire/postgres/decoder.h"

namespace sluice::wire::postgres {
namespace {

using ::testing::HasSubstr;

// Decodes the framed message `wire` with `decode`, after checking the frame.
template <typename T, typename Fn>
T RoundTrip(const std::string& wire, Direction dir, Fn decode) {
  DecodeResult r = DecodeFrame(wire, dir, DecodeLimits{});
  EXPECT_EQ(r.status, DecodeStatus::kMessage);
  EXPECT_EQ(r.message.wire_size, wire.size());
  auto m = decode(r.message.payload);
  EXPECT_TRUE(m.ok()) << m.status();
  // Every strict prefix of the payload is refused (never half-decoded).
  for (size_t n = 0; n < r.message.payload.size(); ++n) {
    EXPECT_FALSE(decode(r.message.payload.substr(0, n)).ok()) << "prefix " << n;
  }
  return *m;
}

TEST(Messages, StartupRoundTrip) {
  StartupMessage s;
  s.protocol = kProtocol32;
  s.parameters = {{"user", "ci-bot"}, {"database", "orders"}, {"_pq_.command_compression", "on"}};
  std::string wire = s.Encode();
  DecodeResult r = DecodeStartupFrame(wire, DecodeLimits{});
  ASSERT_EQ(r.status, DecodeStatus::kMessage);
  auto d = StartupMessage::Decode(r.message.payload);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->protocol, kProtocol32);
  EXPECT_EQ(d->Get("database"), "orders");
  EXPECT_EQ(d->Get("replication"), std::nullopt);
  EXPECT_EQ(d->parameters.size(), 3u);
  EXPECT_FALSE(
      StartupMessage::Decode(r.message.payload.substr(0, r.message.payload.size() - 1)).ok());
}

TEST(Messages, CancelRequestKeepsLongKeys) {
  CancelRequest c{1234, std::string(32, 'k')};
  std::string wire = c.Encode();  // DecodeResult views into it
  DecodeResult r = DecodeStartupFrame(wire, DecodeLimits{});
  ASSERT_EQ(r.status, DecodeStatus::kMessage);
  EXPECT_EQ(*ClassifyStartup(r.message.payload), StartupKind::kCancelRequest);
  auto d = CancelRequest::Decode(r.message.payload);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->process_id, 1234);
  EXPECT_EQ(d->secret_key, std::string(32, 'k'));
}

TEST(Messages, FrontendRoundTrips) {
  EXPECT_EQ(
      RoundTrip<Query>(Query{"SELECT 1; SELECT 2"}.Encode(), Direction::kFrontend, Query::Decode)
          .sql,
      "SELECT 1; SELECT 2");
  EXPECT_EQ(RoundTrip<PasswordMessage>(PasswordMessage{"eyJhbGciOi.x.y"}.Encode(),
                                       Direction::kFrontend, PasswordMessage::Decode)
                .password,
            "eyJhbGciOi.x.y");
  Parse p = RoundTrip<Parse>(Parse{"s1", "SELECT $1, $2", {23, 25}}.Encode(), Direction::kFrontend,
                             Parse::Decode);
  EXPECT_EQ(p.statement, "s1");
  EXPECT_EQ(p.param_types, (std::vector<int32_t>{23, 25}));
  Bind b{"", "s1", {1, 0}, {std::string("\0\0\0\x2a", 4), std::nullopt}, {1}};
  Bind d = RoundTrip<Bind>(b.Encode(), Direction::kFrontend, Bind::Decode);
  EXPECT_EQ(d.statement, "s1");
  ASSERT_EQ(d.params.size(), 2u);
  EXPECT_EQ(*d.params[0], std::string("\0\0\0\x2a", 4));
  EXPECT_FALSE(d.params[1].has_value());
  EXPECT_EQ(d.result_formats, (std::vector<int16_t>{1}));
  Execute e =
      RoundTrip<Execute>(Execute{"p1", 100}.Encode(), Direction::kFrontend, Execute::Decode);
  EXPECT_EQ(e.max_rows, 100);
  DescribeOrClose dc = RoundTrip<DescribeOrClose>(DescribeOrClose{'P', "p1"}.Encode('D'),
                                                  Direction::kFrontend, DescribeOrClose::Decode);
  EXPECT_EQ(dc.target, 'P');
}

TEST(Messages, BackendRoundTrips) {
  RowDescription rd;
  rd.fields.push_back({"email", 16384, 2, 25, -1, -1, 0});
  rd.fields.push_back({"id", 16384, 1, 23, 4, -1, 1});
  RowDescription rd2 =
      RoundTrip<RowDescription>(rd.Encode(), Direction::kBackend, RowDescription::Decode);
  ASSERT_EQ(rd2.fields.size(), 2u);
  EXPECT_EQ(rd2.fields[0].name, "email");
  EXPECT_EQ(rd2.fields[0].table_oid, 16384);
  EXPECT_EQ(rd2.fields[1].format, 1);

  DataRow row{{std::string("a@example.com"), std::nullopt, std::string()}};
  DataRow row2 = RoundTrip<DataRow>(row.Encode(), Direction::kBackend, DataRow::Decode);
  EXPECT_EQ(row2.values, row.values);

  auto err = ErrorOrNotice::Make("ERROR", "42501", "blocked by guardrail production-safety");
  ErrorOrNotice e2 =
      RoundTrip<ErrorOrNotice>(err.Encode('E'), Direction::kBackend, ErrorOrNotice::Decode);
  EXPECT_EQ(e2.Get('C'), "42501");
  EXPECT_EQ(e2.Get('M'), "blocked by guardrail production-safety");

  EXPECT_EQ(RoundTrip<ReadyForQuery>(ReadyForQuery{'T'}.Encode(), Direction::kBackend,
                                     ReadyForQuery::Decode)
                .status,
            'T');
  BackendKeyData k = RoundTrip<BackendKeyData>(BackendKeyData{42, "abcd"}.Encode(),
                                               Direction::kBackend, BackendKeyData::Decode);
  EXPECT_EQ(k.process_id, 42);
  ParameterStatus ps =
      RoundTrip<ParameterStatus>(ParameterStatus{"server_version", "15.8"}.Encode(),
                                 Direction::kBackend, ParameterStatus::Decode);
  EXPECT_EQ(ps.value, "15.8");
  EXPECT_EQ(RoundTrip<CommandComplete>(CommandComplete{"SELECT 3"}.Encode(), Direction::kBackend,
                                       CommandComplete::Decode)
                .tag,
            "SELECT 3");
  NegotiateProtocolVersion n = RoundTrip<NegotiateProtocolVersion>(
      NegotiateProtocolVersion{2, {"_pq_.command_compression"}}.Encode(), Direction::kBackend,
      NegotiateProtocolVersion::Decode);
  EXPECT_EQ(n.unrecognized_options, std::vector<std::string>{"_pq_.command_compression"});
  Authentication a{Authentication::kSasl, std::string("SCRAM-SHA-256\0\0", 15)};
  std::string wire = a.Encode();
  DecodeResult r = DecodeFrame(wire, Direction::kBackend, DecodeLimits{});
  ASSERT_EQ(r.status, DecodeStatus::kMessage);
  EXPECT_EQ(Authentication::Decode(r.message.payload)->code, Authentication::kSasl);
}

TEST(Messages, HostileCountsAreRefusedWithoutAllocating) {
  // DataRow claiming 32767 columns in a 6-byte payload.
  std::string payload("\x7f\xff\0\0\0\0", 6);
  EXPECT_THAT(DataRow::Decode(payload).status().message(), HasSubstr("malformed DataRow"));
  // A column length larger than what is left.
  std::string lie("\0\x01\0\0\x10\0abc", 9);
  EXPECT_FALSE(DataRow::Decode(lie).ok());
  // Trailing bytes after a complete Query.
  EXPECT_THAT(Query::Decode(std::string("SELECT 1\0junk", 13)).status().message(),
              HasSubstr("trailing bytes"));
  EXPECT_FALSE(ReadyForQuery::Decode("X").ok());
  EXPECT_FALSE(DescribeOrClose::Decode(std::string("Xname\0", 6)).ok());
}

}  // namespace
}  // namespace sluice::wire::postgres
