#include "common/wire/mysql/packets.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace sluice::wire::mysql {
namespace {

using ::testing::HasSubstr;

std::string Hex(absl::string_view s) {
  std::string out;
  for (unsigned char c : s) out += "0123456789abcdef"[c >> 4], out += "0123456789abcdef"[c & 15];
  return out;
}

TEST(MysqlPackets, OnePacketNeedsItsWholePayload) {
  std::string wire;
  EXPECT_EQ(EncodePacket("\x03SELECT 1", 0, &wire), 1);
  EXPECT_EQ(Hex(wire.substr(0, 4)), "09000000");
  for (size_t n = 0; n < wire.size(); ++n) {
    EXPECT_EQ(DecodeLogical(wire.substr(0, n), {}).status, DecodeStatus::kNeedMore) << n;
  }
  const std::string buffered = wire + "next";  // a view into it comes back
  DecodeResult r = DecodeLogical(buffered, {});
  ASSERT_EQ(r.status, DecodeStatus::kPacket);
  EXPECT_EQ(r.packet.payload, "\x03SELECT 1");
  EXPECT_EQ(r.packet.sequence, 0);
  EXPECT_EQ(r.packet.wire_size, wire.size());
}

TEST(MysqlPackets, PayloadsOf16MiBAreSplitAndJoined) {
  // Exactly 0xFFFFFF bytes: one full packet and an empty one after it.
  std::string payload(kMaxPayloadPerPacket, 'x');
  std::string wire;
  EXPECT_EQ(EncodePacket(payload, 7, &wire), 9);
  EXPECT_EQ(wire.size(), payload.size() + 8);
  DecodeResult r = DecodeLogical(wire, {});
  ASSERT_EQ(r.status, DecodeStatus::kPacket);
  EXPECT_EQ(r.packet.payload.size(), payload.size());
  EXPECT_EQ(r.packet.sequence, 7);
  EXPECT_EQ(r.packet.wire_size, wire.size());
  EXPECT_EQ(DecodeLogical(absl::string_view(wire).substr(0, wire.size() - 4), {}).status,
            DecodeStatus::kNeedMore);

  // Longer: 0xFFFFFF + 10 bytes, sequence ids wrapping past 255.
  payload += "0123456789";
  wire.clear();
  EXPECT_EQ(EncodePacket(payload, 255, &wire), 1);
  r = DecodeLogical(wire, {});
  ASSERT_EQ(r.status, DecodeStatus::kPacket);
  EXPECT_EQ(r.packet.payload, payload);
}

TEST(MysqlPackets, OversizedAndOutOfSequencePacketsAreErrors) {
  std::string wire;
  EncodePacket(std::string(100, 'x'), 0, &wire);
  DecodeLimits small;
  small.max_payload_bytes = 99;
  DecodeResult r = DecodeLogical(wire.substr(0, 4), small);  // refused from the header alone
  EXPECT_EQ(r.status, DecodeStatus::kError);
  EXPECT_THAT(r.error, HasSubstr("over 99 bytes"));

  std::string split;
  EncodePacket(std::string(kMaxPayloadPerPacket + 1, 'x'), 3, &split);
  split[kMaxPayloadPerPacket + 4 + 3] = 9;  // the continuation's sequence id
  r = DecodeLogical(split, {});
  EXPECT_EQ(r.status, DecodeStatus::kError);
  EXPECT_THAT(r.error, HasSubstr("sequence id 9, expected 4"));
}

TEST(MysqlPackets, LengthEncodedIntegersRoundTrip) {
  for (uint64_t v : {uint64_t{0}, uint64_t{250}, uint64_t{251}, uint64_t{0xFFFF}, uint64_t{0x10000},
                     uint64_t{0xFFFFFF}, uint64_t{0x1000000}, uint64_t{0xFFFFFFFFFFFFFFFF}}) {
    std::string out;
    PutLenencInt(&out, v);
    Reader r(out);
    EXPECT_EQ(r.LenencInt(), v);
    EXPECT_TRUE(r.ok());
    EXPECT_EQ(r.remaining(), 0u);
  }
  Reader null_value("\xFB");
  EXPECT_EQ(null_value.LenencInt(), std::nullopt);
  Reader short_value("\xFD\x01");
  short_value.LenencInt();
  EXPECT_FALSE(short_value.ok());
  Reader long_string(
      "\x05"
      "abc");
  long_string.LenencString();
  EXPECT_FALSE(long_string.ok());
}

TEST(MysqlPackets, GreetingRoundTripsWithMariaDbCapabilities) {
  HandshakeV10 h;
  h.server_version = "5.5.5-10.11.6-MariaDB-0+deb12u1";
  h.connection_id = 42;
  h.auth_data = "abcdefghijklmnopqrst";
  h.capabilities = kClientProtocol41 | kClientSecureConnection | kClientPluginAuth | kClientSsl |
                   kClientPluginAuthLenencClientData | kClientDeprecateEof;
  h.charset = 45;
  h.status = 2;
  h.mariadb_capabilities = 0x1d;
  h.auth_plugin = "caching_sha2_password";
  auto back = HandshakeV10::Decode(h.Encode());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->server_version, h.server_version);
  EXPECT_EQ(back->connection_id, 42u);
  EXPECT_EQ(back->auth_data, h.auth_data);
  EXPECT_EQ(back->capabilities, h.capabilities);
  EXPECT_EQ(back->charset, 45);
  EXPECT_EQ(back->mariadb_capabilities, 0x1du);
  EXPECT_EQ(back->auth_plugin, "caching_sha2_password");

  // A server that claims CLIENT_LONG_PASSWORD (MySQL) has no extended capabilities there.
  h.capabilities |= kClientLongPassword;
  back = HandshakeV10::Decode(h.Encode());
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->mariadb_capabilities, 0u);

  EXPECT_THAT(std::string(HandshakeV10::Decode("\x09rest").status().message()),
              HasSubstr("protocol version 9"));
  EXPECT_FALSE(HandshakeV10::Decode("\x0a"
                                    "5.5")
                   .ok());
}

TEST(MysqlPackets, ClientResponseCarriesALongTokenOnlyLengthEncoded) {
  HandshakeResponse41 h;
  h.capabilities = kClientProtocol41 | kClientSecureConnection | kClientPluginAuth |
                   kClientPluginAuthLenencClientData | kClientConnectWithDb | kClientConnectAttrs |
                   kClientSsl;
  h.max_packet_size = 1 << 24;
  h.charset = 45;
  h.user = "ci-bot";
  h.auth_response = std::string(1300, 't');  // a JWT's size
  h.database = "demo-mysql";
  h.auth_plugin = "mysql_clear_password";
  h.attributes = {{"_client_name", "libmariadb"}, {"program_name", "mariadb"}};
  auto back = HandshakeResponse41::Decode(h.Encode());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_FALSE(back->ssl_request);
  EXPECT_EQ(back->user, "ci-bot");
  EXPECT_EQ(back->auth_response, h.auth_response);
  EXPECT_EQ(back->database, "demo-mysql");
  EXPECT_EQ(back->auth_plugin, "mysql_clear_password");
  EXPECT_EQ(back->attributes, h.attributes);

  HandshakeResponse41 ssl = h;
  ssl.ssl_request = true;
  std::string ssl_payload = ssl.Encode();
  EXPECT_EQ(ssl_payload.size(), 32u);
  back = HandshakeResponse41::Decode(ssl_payload);
  ASSERT_TRUE(back.ok());
  EXPECT_TRUE(back->ssl_request);

  HandshakeResponse41 old_style = h;
  old_style.capabilities &= ~kClientPluginAuthLenencClientData;
  old_style.auth_response = "short";
  EXPECT_THAT(std::string(HandshakeResponse41::Decode(old_style.Encode()).status().message()),
              HasSubstr("CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA"));

  HandshakeResponse41 pre41 = h;
  pre41.capabilities &= ~kClientProtocol41;
  EXPECT_THAT(std::string(HandshakeResponse41::Decode(pre41.Encode()).status().message()),
              HasSubstr("protocol 4.1"));
}

TEST(MysqlPackets, OkErrAndEofPackets) {
  OkPacket ok;
  ok.affected_rows = 300;
  ok.last_insert_id = 7;
  ok.status = 0x0002;
  ok.warnings = 1;
  std::string payload = ok.Encode();
  EXPECT_TRUE(IsOkPacket(payload));
  auto back = OkPacket::Decode(payload);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->affected_rows, 300u);
  EXPECT_EQ(back->last_insert_id, 7u);
  EXPECT_EQ(back->warnings, 1);

  ErrPacket err;
  err.code = 1045;
  err.sql_state = "28000";
  err.message = "Sluice: the token was not accepted";
  payload = err.Encode();
  EXPECT_TRUE(IsErrPacket(payload));
  auto e = ErrPacket::Decode(payload);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->code, 1045);
  EXPECT_EQ(e->sql_state, "28000");
  EXPECT_EQ(e->message, err.message);
  // During the handshake an ERR may come without a SQLSTATE.
  e = ErrPacket::Decode(std::string("\xFF\x15\x04Too many connections", 23));
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->code, 1045);
  EXPECT_EQ(e->sql_state, "HY000");
  EXPECT_EQ(e->message, "Too many connections");

  EXPECT_TRUE(IsEofPacket(std::string("\xFE\x00\x00\x02\x00", 5)));
  EXPECT_FALSE(IsEofPacket(std::string(9, '\xFE')));  // a row starting with a long lenenc
}

TEST(MysqlPackets, AuthSwitchRequestRoundTripsAndEveryPrefixIsRefused) {
  AuthSwitchRequest a;
  a.plugin = "caching_sha2_password";
  a.data = std::string("0123456789abcdefghij\0", 21);
  std::string payload = a.Encode();
  auto back = AuthSwitchRequest::Decode(payload);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->plugin, a.plugin);
  EXPECT_EQ(back->data, a.data);
  // Up to the plugin name's NUL, a prefix is malformed (no name, or no end to it).
  for (size_t n = 0; n <= a.plugin.size() + 1; ++n) {
    EXPECT_FALSE(AuthSwitchRequest::Decode(payload.substr(0, n)).ok()) << n;
  }
  EXPECT_FALSE(AuthSwitchRequest::Decode(std::string("\x00x\0", 3)).ok());
}

TEST(MysqlPackets, ColumnDefinitionsNameTheirBaseColumn) {
  ColumnDefinition c;
  c.schema = "demo";
  c.table = "c";
  c.org_table = "customers";
  c.name = "mail";
  c.org_name = "email";
  c.charset = 45;
  c.length = 1020;
  c.type = 0xFD;  // VAR_STRING
  auto back = ColumnDefinition::Decode(c.Encode());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->org_table, "customers");
  EXPECT_EQ(back->org_name, "email");
  EXPECT_EQ(back->name, "mail");
  EXPECT_EQ(back->type, 0xFD);
  EXPECT_EQ(back->length, 1020u);
  std::string cut = c.Encode();
  cut.resize(cut.size() - 6);
  EXPECT_FALSE(ColumnDefinition::Decode(cut).ok());
}

TEST(MysqlPackets, CommandNames) {
  EXPECT_EQ(CommandName(0x03), "COM_QUERY");
  EXPECT_EQ(CommandName(0x1F), "COM_RESET_CONNECTION");
  EXPECT_EQ(CommandName(0xFA), "COM_STMT_BULK_EXECUTE");
  EXPECT_EQ(CommandName(0x40), "COM_0x40");
}

}  // namespace
}  // namespace sluice::wire::mysql
