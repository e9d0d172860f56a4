#include "common/policy/yaml_codec.h"

#include <gmock/gmock.h>
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include "common/files.h"
#include "common/policy/resource.h"
#include "common/policy/validation.h"

namespace sluice::policy {
namespace {

using ::testing::HasSubstr;

std::vector<std::string> Errors(const ParsedDocuments& p) {
  std::vector<std::string> out;
  for (const auto& e : p.errors) out.push_back(e.ToString("policy.yaml"));
  return out;
}

TEST(YamlCodec, ParsesTheExamplePolicy) {
  auto text = ReadFile(std::string(SLUICE_SOURCE_DIR) + "/examples/policy.yaml");
  ASSERT_TRUE(text.ok());
  ParsedDocuments p = ParseYamlDocuments(*text);
  ASSERT_TRUE(p.errors.empty()) << ::testing::PrintToString(Errors(p));
  ASSERT_EQ(p.resources.size(), 7u);
  const v1::Connection& c = p.resources[0].connection();
  EXPECT_EQ(c.name(), "demo-pg");
  EXPECT_EQ(c.protocol(), v1::PROTOCOL_POSTGRES);
  EXPECT_EQ(c.upstream().port(), 55432u);
  EXPECT_EQ(c.upstream().tls(), v1::UPSTREAM_TLS_DISABLE);
  EXPECT_EQ(c.agents().at("site"), "local");
  const v1::Connection& m = p.resources[1].connection();
  EXPECT_EQ(m.name(), "demo-mysql");
  EXPECT_EQ(m.protocol(), v1::PROTOCOL_MYSQL);
  EXPECT_EQ(m.upstream().port(), 53306u);
  EXPECT_EQ(p.resources[2].access_rule().access(), v1::ACCESS_READ);
  EXPECT_EQ(p.resources[2].access_rule().connections().names_size(), 2);
  EXPECT_EQ(p.resources[3].access_rule().access(), v1::ACCESS_ADMIN);
  const v1::ApprovalPolicy& ap = p.resources[4].approval_policy();
  EXPECT_EQ(ap.timeout().seconds(), 300);
  const v1::Guardrail& g = p.resources[5].guardrail();
  ASSERT_EQ(g.rules_size(), 6);
  EXPECT_EQ(g.rules(3).action(), v1::GUARDRAIL_ACTION_REQUIRE_APPROVAL);
  EXPECT_EQ(g.rules(4).match(), "unknown");  // DO blocks wait for a DBA, like DDL
  EXPECT_EQ(g.rules(4).action(), v1::GUARDRAIL_ACTION_REQUIRE_APPROVAL);
  EXPECT_EQ(g.rules(5).match(), "dangerous_function");
  EXPECT_EQ(p.resources[6].masking_rule().strategy(), v1::MASKING_STRATEGY_PARTIAL);
}

TEST(YamlCodec, YamlRoundTripIsLossless) {
  auto text = ReadFile(std::string(SLUICE_SOURCE_DIR) + "/examples/policy.yaml");
  ASSERT_TRUE(text.ok());
  ParsedDocuments first = ParseYamlDocuments(*text);
  ASSERT_TRUE(first.errors.empty());
  for (const auto& r : first.resources) {
    ParsedDocuments again = ParseYamlDocuments(ResourceToYaml(r));
    ASSERT_TRUE(again.errors.empty()) << ResourceToYaml(r);
    ASSERT_EQ(again.resources.size(), 1u);
    EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(r, again.resources[0]))
        << ResourceToYaml(r);
    // JSON output (what `get -o json` prints) is accepted back by apply too.
    ParsedDocuments from_json = ParseYamlDocuments(ResourceToJson(r));
    ASSERT_TRUE(from_json.errors.empty()) << ResourceToJson(r);
    EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(r, from_json.resources[0]));
  }
}

TEST(YamlCodec, AServiceAccountKeysErrorNeverQuotesTheKey) {
  ParsedDocuments p = ParseYamlDocuments(
      "kind: Connection\nname: g\nprotocol: gcs\nupstream: {host: h, port: 443}\n"
      "credentials: {username: sa@p.iam.gserviceaccount.com, password: '{\"type\": "
      "\"service_account\", \"client_email\": \"sa@p.iam.gserviceaccount.com\", "
      "\"private_key\": \"-----BEGIN PRIVATE KEY-----s3cret\", \"token_uri\": "
      "\"https://oauth2.googleapis.com/token\"}'}\nagents: {vpc: a}\n");
  ASSERT_FALSE(p.errors.empty());
  for (const std::string& e : Errors(p)) {
    EXPECT_THAT(e, ::testing::Not(HasSubstr("s3cret")));
  }
  EXPECT_THAT(Errors(p), ::testing::Contains(HasSubstr("\"private_key\" is not a usable RSA key")));
}

struct BadCase {
  std::string yaml;
  std::string expected;  // a substring of the error
};

void PrintTo(const BadCase& c, std::ostream* os) { *os << "expects: " << c.expected; }

class YamlCodecBad : public ::testing::TestWithParam<BadCase> {};

TEST_P(YamlCodecBad, NamesDocumentFieldAndWhy) {
  ParsedDocuments p = ParseYamlDocuments(GetParam().yaml);
  ASSERT_FALSE(p.errors.empty()) << GetParam().yaml;
  EXPECT_THAT(Errors(p), ::testing::Contains(HasSubstr(GetParam().expected)));
}

constexpr char kGoodConnection[] =
    "kind: Connection\nname: orders\nprotocol: postgres\nupstream: {host: db, port: 5432}\n"
    "credentials: {username: app, password: pw}\nagents: {vpc: a}\n";

INSTANTIATE_TEST_SUITE_P(
    Documents, YamlCodecBad,
    ::testing::Values(
        BadCase{"kind: [1]\n", "document 1: kind: required"},
        BadCase{"name: x\n", "document 1 (x): kind: required"},
        BadCase{"kind: Gadget\nname: x\n", "unknown kind 'Gadget'"},
        BadCase{"kind: Connection\nname: a\nprotocol: postgres\nupstream: {host: db, port: 5432}\n"
                "credentials: {username: u, password: p}\nagents: {vpc: a}\ncolor: red\n",
                "document 1 (Connection a): color: unknown field; fields of Connection are: name"},
        BadCase{
            std::string(kGoodConnection) + "---\nkind: Connection\nname: b\nprotocol: oracle\n",
            "document 2 (Connection b): protocol: 'oracle' is not one of: postgres, mysql, http"},
        BadCase{"kind: Connection\nname: c\nprotocol: postgres\nupstream: {host: db, port: http}\n",
                "upstream.port: expected a non-negative integer, got 'http'"},
        BadCase{"kind: Connection\nname: c\nprotocol: postgres\nupstream: {host: db, port: 5432}\n"
                "credentials: {username: u}\nagents: {vpc: a}\n",
                "credentials: set exactly one of password and password_from"},
        BadCase{"kind: Connection\nname: h\nprotocol: http\nupstream: {host: h, port: 443}\n"
                "credentials: {username: u, password: p}\nagents: {vpc: a}\n",
                "protocol: http is not a Connection's protocol: name its API (gcs, bigquery)"},
        BadCase{"kind: Connection\nname: g\nprotocol: gcs\nupstream: {host: h, port: 443}\n"
                "credentials: {username: sa@p.iam.gserviceaccount.com, password: not-a-key}\n"
                "agents: {vpc: a}\n",
                "credentials.password: not a service account's JSON key: not a JSON object"},
        BadCase{"kind: Connection\nname: g\nprotocol: gcs\nupstream: {host: h, port: 443}\n"
                "credentials: {username: sa@p.iam.gserviceaccount.com, password: "
                "'{\"type\": \"authorized_user\", \"private_key\": \"s3cret\"}'}\n"
                "agents: {vpc: a}\n",
                "credentials.password: not a service account's JSON key: \"type\" is not "
                "\"service_account\""},
        BadCase{"kind: Connection\nname: q\nprotocol: bigquery\nupstream: {host: h, port: 443}\n"
                "credentials: {username: sa@p.iam.gserviceaccount.com, password: not-a-key}\n"
                "agents: {vpc: a}\n",
                "credentials.password: not a service account's JSON key: not a JSON object"},
        BadCase{std::string(kGoodConnection) +
                    "impersonate: [{callers: {groups: [g]}, service_account: a@b.c}]\n",
                "impersonate: only a cloud Connection (protocol gcs or bigquery) runs callers as "
                "other service accounts"},
        BadCase{"kind: Connection\nname: g\nprotocol: gcs\nupstream: {host: h, port: 443}\n"
                "credentials: {username: sa@p.iam.gserviceaccount.com, password_from: env:K}\n"
                "agents: {vpc: a}\nimpersonate: [{callers: {groups: [g]}, service_account: "
                "'x/y'}]\n",
                "impersonate[0].service_account: \"x/y\" is not a service account's email"},
        BadCase{"kind: Connection\nname: g\nprotocol: gcs\nupstream: {host: h, port: 443}\n"
                "credentials: {username: sa@p.iam.gserviceaccount.com, password_from: env:K}\n"
                "agents: {vpc: a}\nimpersonate: [{service_account: a@p.iam.gserviceaccount.com}]\n",
                "impersonate[0].callers: required: list subjects or groups"},
        BadCase{"kind: Connection\nname: g\nprotocol: gcs\nupstream: {host: h, port: 443}\n"
                "credentials: {username: sa@p.iam.gserviceaccount.com, password_from: env:K}\n"
                "agents: {vpc: a}\niam_credentials_url: http://iam.local\n",
                "iam_credentials_url: must be an https:// URL"},
        BadCase{"kind: Connection\nname: c\nprotocol: postgres\nupstream: {host: db, port: 5432}\n"
                "credentials: {username: u, password_from: vault:x}\nagents: {vpc: a}\n",
                "credentials.password_from: must be env:NAME or file:/absolute/path"},
        BadCase{"kind: Connection\nname: c\nprotocol: postgres\nupstream: {host: db, port: 5432}\n"
                "credentials: {username: u, password: p}\n",
                "agents: required"},
        BadCase{std::string(kGoodConnection) +
                    "limits: {max_sessions: 10, max_sessions_per_identity: 11}\n",
                "document 1 (Connection orders): limits.max_sessions_per_identity: 11 is more than "
                "limits.max_sessions (10)"},
        BadCase{std::string(kGoodConnection) + "limits: {max_sessions_per_identity: 91}\n",
                "limits.max_sessions_per_identity: 91 is more than limits.max_sessions (90, the "
                "default)"},
        BadCase{std::string(kGoodConnection) + "limits: {max_sessions: 100001}\n",
                "limits.max_sessions: 100001 is more than the cap of 100000"},
        BadCase{std::string(kGoodConnection) + "limits: {max_sessions_per_identity: 4294967295}\n",
                "limits.max_sessions_per_identity: 4294967295 is more than the cap of 100000"},
        BadCase{std::string(kGoodConnection) + "limits: {max_sessions: -1}\n",
                "limits.max_sessions: expected a non-negative integer, got '-1'"},
        BadCase{std::string(kGoodConnection) + "limits: {max_session: 5}\n",
                "limits.max_session: unknown field; fields of ConnectionLimits are: max_sessions, "
                "max_sessions_per_identity"},
        BadCase{"kind: Connection\nname: Bad_Name\n", "name: use lower-case letters"},
        BadCase{"kind: Issuer\nname: i\nissuer: https://x\naudience: s\njwks: {inline: 'nope'}\n",
                "jwks.inline: must be a JWKS JSON document"},
        BadCase{
            "kind: AccessRule\nname: r\nsubjects: {groups: [ci]}\nconnections: {}\naccess: read\n",
            "connections: required"},
        BadCase{"kind: Guardrail\nname: g\nconnections: {names: [a]}\nrules:\n"
                "  - {match: ddl, action: require_approval}\n",
                "rules[0].approval: required with require_approval"},
        BadCase{"kind: Guardrail\nname: g\nconnections: {names: [a]}\nrules:\n"
                "  - {match: ddl, action: explode}\n",
                "rules[0].action: 'explode' is not one of: block, require_approval, allow, alert"},
        BadCase{"kind: MaskingRule\nname: m\nconnections: {names: [a]}\ncolumns: "
                "[email]\nstrategy: redact\n",
                "columns[0]: must be table.column"},
        BadCase{"kind: ApprovalPolicy\nname: p\napprovers: {groups: [dba]}\ntimeout: forever\n",
                "timeout: expected a duration"},
        BadCase{"kind: ApprovalPolicy\nname: p\napprovers: {groups: [dba]}\ntimeout: 48h\n",
                "timeout: must be between 1s and 24h"},
        BadCase{"kind: Webhook\nname: w\nurl: ftp://x\n",
                "url: must be an http:// or https:// URL"},
        BadCase{"kind: Connection\nname: a\n  bad indent: [\n", "YAML syntax error at line"},
        BadCase{"- just\n- a list\n", "document 1: expected a mapping, got a list"}),
    [](const ::testing::TestParamInfo<BadCase>& info) {
      return "case" + std::to_string(info.index);
    });

TEST(YamlCodec, ConnectionLimitsRoundTrip) {
  ParsedDocuments p =
      ParseYamlDocuments(std::string(kGoodConnection) +
                         "limits: {max_sessions: 200, max_sessions_per_identity: 200}\n");
  ASSERT_TRUE(p.errors.empty()) << ::testing::PrintToString(Errors(p));
  const v1::Connection& c = p.resources[0].connection();
  EXPECT_EQ(c.limits().max_sessions(), 200u);
  EXPECT_EQ(c.limits().max_sessions_per_identity(), 200u);
  std::string yaml = ResourceToYaml(p.resources[0]);
  EXPECT_THAT(yaml, HasSubstr("limits: {max_sessions: 200, max_sessions_per_identity: 200}"));
  ParsedDocuments again = ParseYamlDocuments(yaml);
  ASSERT_TRUE(again.errors.empty()) << yaml;
  EXPECT_TRUE(
      google::protobuf::util::MessageDifferencer::Equals(p.resources[0], again.resources[0]))
      << yaml;
  // One limit alone: the other keeps its default (0), and a per-caller limit under the default
  // total is fine.
  ParsedDocuments one =
      ParseYamlDocuments(std::string(kGoodConnection) + "limits: {max_sessions_per_identity: 5}\n");
  ASSERT_TRUE(one.errors.empty()) << ::testing::PrintToString(Errors(one));
  EXPECT_EQ(one.resources[0].connection().limits().max_sessions(), 0u);
  // Without a limits block nothing is shown.
  ParsedDocuments none = ParseYamlDocuments(kGoodConnection);
  ASSERT_TRUE(none.errors.empty());
  EXPECT_FALSE(none.resources[0].connection().has_limits());
  EXPECT_THAT(ResourceToYaml(none.resources[0]), ::testing::Not(HasSubstr("limits")));
}

TEST(YamlCodec, EveryDocumentIsReported) {
  ParsedDocuments p = ParseYamlDocuments(
      "kind: Webhook\nname: w1\nurl: ftp://x\n---\nkind: Webhook\nname: ok\nurl: https://x\n---\n"
      "kind: Webhook\nname: w3\n");
  ASSERT_EQ(p.errors.size(), 2u);
  EXPECT_EQ(p.errors[0].index, 0);
  EXPECT_EQ(p.errors[1].index, 2);
  EXPECT_EQ(p.errors[1].field, "url");
}

TEST(Validation, DuplicatesInOneBatchAreRejected) {
  ParsedDocuments p = ParseYamlDocuments(
      "kind: Webhook\nname: w\nurl: https://a\n---\n"
      "kind: Webhook\nname: w\nurl: https://b\n");
  ASSERT_TRUE(p.errors.empty());
  auto errors = ValidateBatch(p.resources);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].index, 1);
  EXPECT_THAT(errors[0].message, HasSubstr("more than once"));
}

TEST(Validation, SnapshotWithUnsupportedProtocolIsRejected) {
  v1::PolicySnapshot snap;
  snap.set_version(3);
  ParsedDocuments p = ParseYamlDocuments(
      "kind: Connection\nname: shop\nprotocol: mysql\nupstream: {host: db, port: 3306}\n"
      "credentials: {username: u, password: p}\nagents: {vpc: a}\n");
  ASSERT_TRUE(p.errors.empty());
  *snap.add_connections() = p.resources[0].connection();
  EXPECT_TRUE(ValidateSnapshot(snap, {"postgres", "mysql"}).ok());
  EXPECT_THAT(ValidateSnapshot(snap, {"postgres"}).message(),
              HasSubstr("Connection shop: protocol mysql is not supported by this agent"));
}

TEST(Validation, SnapshotWithHashMaskingNeedsTheKey) {
  v1::PolicySnapshot snap;
  ParsedDocuments p = ParseYamlDocuments(
      "kind: MaskingRule\nname: pii\nconnections: {names: [shop]}\ncolumns: "
      "[\"*.email\"]\nstrategy: hash\n");
  ASSERT_TRUE(p.errors.empty());
  *snap.add_masking_rules() = p.resources[0].masking_rule();
  EXPECT_THAT(ValidateSnapshot(snap, {"postgres"}).message(),
              HasSubstr("MaskingRule pii: strategy hash needs the snapshot's masking_hash_key"));
  snap.set_masking_hash_key(std::string(32, 'k'));
  EXPECT_TRUE(ValidateSnapshot(snap, {"postgres"}).ok());
}

TEST(Validation, SnapshotPasswordReferencesMustResolveOnTheAgent) {
  v1::PolicySnapshot snap;
  ParsedDocuments p = ParseYamlDocuments(
      "kind: Connection\nname: c\nprotocol: postgres\nupstream: {host: db, port: 5432}\n"
      "credentials: {username: u, password_from: env:SLUICE_TEST_UNSET_VARIABLE}\nagents: {vpc: "
      "a}\n");
  ASSERT_TRUE(p.errors.empty());
  *snap.add_connections() = p.resources[0].connection();
  EXPECT_THAT(
      ValidateSnapshot(snap, {"postgres"}).message(),
      HasSubstr("environment variable SLUICE_TEST_UNSET_VARIABLE is not set on this agent"));
}

TEST(Resource, KindsAreAcceptedInEverySpelling) {
  EXPECT_EQ(*CanonicalKind("access_rules"), "AccessRule");
  EXPECT_EQ(*CanonicalKind("AccessRule"), "AccessRule");
  EXPECT_EQ(*CanonicalKind("approval-policy"), "ApprovalPolicy");
  EXPECT_EQ(*CanonicalKind("connections"), "Connection");
  EXPECT_FALSE(CanonicalKind("tables").ok());
}

}  // namespace
}  // namespace sluice::policy
