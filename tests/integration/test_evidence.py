"""`sluicectl evidence export`: the NIST SP 800-53 evidence report, end to end. A known mix of
sessions runs through a real agent and PostgreSQL inside a window (two identities allowed, a
caller with no access rule, a bad token, a write on a read grant, a guardrail block, a masked
read, a DDL statement approved, an update denied, a self-approval refused and then approved by
someone else, an Issuer added, a session put under legal hold); a session before the window and
one after it. The test counts
what it ran and checks the exact counts per control in the JSON export, the markdown and HTML
renderings, who may export, and the CLI's errors."""

import datetime
import json
import os
import stat
import subprocess
import sys
import time
import unittest

from harness import PG_BIN, Stack, TokenIssuer, wait_for

POLICY = """---
kind: AccessRule
name: writers
subjects: {groups: [dev, dba]}
connections: {names: [demo]}
access: write
---
kind: AccessRule
name: readers
subjects: {groups: [reader]}
connections: {names: [demo]}
access: read
---
kind: ApprovalPolicy
name: dba-on-call
approvers: {groups: [dba]}
timeout: 60s
---
kind: Guardrail
name: prod-safety
connections: {tags: {env: prod}}
rules:
  - {match: delete_without_where, action: block}
  - {match: update_without_where, action: require_approval, approval: dba-on-call}
  - {match: drop_table, action: require_approval, approval: dba-on-call}
---
kind: RetentionPolicy
name: prod-long
connections: {tags: {env: prod}}
keep: 30d
---
kind: MaskingRule
name: pii
connections: {names: [demo]}
columns: [customers.email]
strategy: redact
"""

SCHEMA = """
CREATE TABLE customers (id int PRIMARY KEY, email text);
INSERT INTO customers VALUES (1, 'ada@example.com'), (2, 'bob@example.org');
CREATE TABLE items (id int PRIMARY KEY, n int);
INSERT INTO items VALUES (1, 0), (2, 0);
CREATE TABLE tmp_a (a int);
ALTER TABLE customers OWNER TO app; ALTER TABLE items OWNER TO app; ALTER TABLE tmp_a OWNER TO app;
"""

# The statement refused on the read grant: its "<" must come out escaped in markdown and HTML.
READ_GRANT_WRITE = "INSERT INTO items SELECT 9, 9 WHERE 1 < 2"


def rfc3339(ms):
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).isoformat(timespec="milliseconds")


def now_ms():
    return int(time.time() * 1000)


class EvidenceTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.stack = Stack("evidence", cp_args=["--auditor-groups", "auditors"]).__enter__()
        try:
            cls.setUpWindow()
        except BaseException:
            cls.stack.__exit__(*sys.exc_info())
            raise

    @classmethod
    def tearDownClass(cls):
        cls.stack.__exit__(None, None, None)

    # --- the mix ---------------------------------------------------------------------------------

    @classmethod
    def setUpWindow(cls):
        s = cls.stack
        cls.pg, cls.cp, cls.agent = s.pg, s.cp, s.agent
        cls.pg.sql(SCHEMA, "demo")
        cls.idp = TokenIssuer()
        s.apply_and_wait(s.connection_yaml(tags="{env: prod}") + Stack.inline_issuer_yaml(cls.idp) + POLICY)

        # Before the window: one session, stored, then the window opens.
        cls.run_ok("SELECT 1", "early-bird", ["dev"])
        cls.wait_sessions(1)
        time.sleep(0.01)
        cls.from_ms = now_ms()

        # An Issuer added inside the window (AC-2: issuers configured and changed).
        other = TokenIssuer(iss="https://other.test", kid="other-1")
        s.apply_and_wait(f"kind: Issuer\nname: other-idp\nissuer: {other.iss}\naudience: sluice\n"
                         f"jwks: {{inline: '{other.jwks()}'}}\n")

        cls.run_ok("SELECT email FROM customers ORDER BY id", "alice", ["dev"])  # masked read
        r = cls.psql("DELETE FROM items", "alice", ["dev"])  # blocked by the guardrail
        assert "blocked by guardrail" in r.stderr, r.stderr
        cls.run_ok("SELECT 1", "bob", ["reader"])
        # Bob's session goes under a legal hold (AU-11).
        bob = wait_for(lambda: json.loads(cls.cp.ctl("sessions", "list", "--identity", "bob", "-o", "json").stdout)
                       .get("sessions"), what="bob's session in the store")
        cls.cp.ctl("sessions", "hold", bob[0]["session_id"], "--reason", "case 7")
        r = cls.psql(READ_GRANT_WRITE, "bob", ["reader"])  # a write on a read grant
        assert "is read-only" in r.stderr, r.stderr
        r = cls.psql("SELECT 1", "carol", ["nobody"])  # no access rule
        assert "no access rule" in r.stderr, r.stderr
        forger = TokenIssuer()  # the same issuer and key id, another key: a bad signature
        r = s.psql("SELECT 1", forger.token(sub="mallory", groups=["dev"]))
        assert "signature does not verify" in r.stderr, r.stderr
        # The admin API with a token that is nobody's.
        r = cls.cp.ctl("--token", "not-a-token", "agents", "list", check=False)
        assert r.returncode == 1, r.stderr

        # Approvals: a DDL statement approved by dora, an update denied by dora, and dora's own
        # update, which she may not approve, approved by erin.
        cls.held_and_decided("DROP TABLE tmp_a", "alice", [("dora", "approve")])
        cls.held_and_decided("UPDATE items SET n = 2", "alice", [("dora", "deny")])
        cls.held_and_decided("UPDATE items SET n = 3", "dora", [("dora", "approve-self"), ("erin", "approve")],
                             groups=["dba"])

        sessions = cls.wait_sessions(1 + 9)
        # The agent signs its chain's head at least every second while events come: the window
        # ends once a checkpoint covers its last event.
        last = max(int(e["sequence"]) for x in sessions
                   for e in json.loads(cls.cp.ctl("sessions", "show", x["session_id"], "-o", "json").stdout)["events"])
        wait_for(lambda: cls.signed_through() >= last, what="a signed checkpoint of the window's last event")
        time.sleep(0.01)
        cls.to_ms = now_ms()

        # After the window.
        cls.run_ok("SELECT 1", "late-bird", ["dev"])
        cls.wait_sessions(1 + 9 + 1)

    @classmethod
    def psql(cls, sql, sub, groups):
        return cls.stack.psql(sql, cls.idp.token(sub=sub, groups=groups))

    @classmethod
    def run_ok(cls, sql, sub, groups):
        r = cls.psql(sql, sub, groups)
        assert r.returncode == 0, r.stderr
        return r

    @classmethod
    def signed_through(cls):
        return int(json.loads(cls.cp.ctl("audit", "verify", "-o", "json").stdout)["signed_through"])

    @classmethod
    def wait_sessions(cls, n):
        """Waits until the control plane holds n sessions, each refused or closed; returns them."""
        def done():
            out = json.loads(cls.cp.ctl("sessions", "list", "--limit", "1000", "-o", "json").stdout)
            sessions = out.get("sessions", [])
            finished = len(sessions) == n and all(x["outcome"] in ("closed", "refused") for x in sessions)
            return sessions if finished else None
        return wait_for(done, timeout=30, what=f"{n} finished sessions in the store")

    @classmethod
    def decide(cls, approval_id, sub, verb):
        return cls.cp.ctl("--token", cls.idp.token(sub=sub, groups=["dba"]), "approvals", verb, str(approval_id),
                          check=False)

    @classmethod
    def held_and_decided(cls, sql, sub, decisions, groups=("dev",)):
        env = dict(os.environ, PGPASSWORD=cls.idp.token(sub=sub, groups=list(groups)))
        dsn = f"host=127.0.0.1 port={cls.agent.postgres_port()} dbname=demo user=x sslmode=require"
        proc = subprocess.Popen([f"{PG_BIN}/psql", dsn, "-X", "-At", "-c", sql], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)

        def pending():
            out = json.loads(cls.cp.ctl("approvals", "list", "--status", "pending", "-o", "json").stdout)
            for a in out.get("approvals", []):
                if a["statement"] == sql:
                    return int(a["id"])
            return None
        approval_id = wait_for(pending, timeout=20, what=f"the approval request for {sql!r}")
        for who, verb in decisions:
            if verb == "approve-self":
                r = cls.decide(approval_id, who, "approve")
                assert "a requester cannot approve their own statement" in r.stderr, r.stderr
            else:
                r = cls.decide(approval_id, who, verb)
                assert r.returncode == 0, r.stderr
        proc.communicate(timeout=30)

    # --- helpers ---------------------------------------------------------------------------------

    def export(self, *extra, frm=None, to=None, check=True, token=None):
        args = ["evidence", "export", "--from", rfc3339(frm or self.from_ms), "--to", rfc3339(to or self.to_ms),
                *extra]
        if token:
            args = ["--token", token, *args]
        return self.cp.ctl(*args, check=check)

    def report(self):
        return json.loads(self.export().stdout)

    @staticmethod
    def control(report, cid):
        for c in report["controls"]:
            if c["id"] == cid:
                return c
        raise AssertionError(f"no control {cid}")

    # --- the JSON export -------------------------------------------------------------------------

    def test_every_control_is_there_with_exact_counts(self):
        r = self.report()
        self.assertEqual([c["id"] for c in r["controls"]],
                         ["AC-2", "AC-3", "AC-5", "AC-6", "AC-17", "AU-2/AU-3", "AU-6", "AU-9", "AU-10", "AU-11",
                          "AU-12", "CM-5", "IA-2/IA-5", "IR-4/IR-5", "SC-8/SC-13", "SC-28", "SI-4"])
        self.assertEqual(r["window"]["from_ms"], self.from_ms)
        self.assertEqual(r["window"]["to_ms"], self.to_ms)
        self.assertTrue(r["verify"]["ok"], r["verify"])
        self.assertEqual(r["verify"]["problems"], 0)
        for c in r["controls"]:
            for key in ("title", "what_the_gateway_does", "summary", "counts", "evidence", "not_recorded",
                        "event_ids", "event_ids_truncated"):
                self.assertIn(key, c, c["id"])

        # What ran in the window: 7 sessions granted (alice 4, bob 2, dora 1), 2 refused (carol: no
        # access rule; a forged token); 6 statements ran or were refused (masked read, blocked
        # delete, bob's select, bob's insert, the approved DROP TABLE, dora's approved update);
        # 3 approval holds (2 approved, 1 denied).
        granted, refused = 7, 2

        c = self.control(r, "AC-2")["counts"]
        self.assertEqual(c["identities"], 4)  # alice, bob, carol, dora
        self.assertEqual(c["issuers_configured"], 2)
        self.assertEqual(c["issuer_changes"], 1)
        ev = self.control(r, "AC-2")["evidence"]
        self.assertEqual(sorted(i["subject"] for i in ev["identities"]), ["alice", "bob", "carol", "dora"])
        self.assertEqual([x["target"] for x in ev["issuer_changes"]], ["Issuer/other-idp"])
        alice = next(i for i in ev["identities"] if i["subject"] == "alice")
        self.assertEqual((alice["issuer"], alice["groups"], alice["sessions"]), ("test-idp", ["dev"], 4))

        c = self.control(r, "AC-3")["counts"]
        self.assertEqual((c["sessions"], c["sessions_granted"], c["sessions_refused"]), (granted + refused, granted, refused))
        self.assertEqual(c["refused_by_reason"], {"no_access_rule": 1, "token_rejected": 1})
        self.assertEqual(c["statements_refused"], 2)
        self.assertEqual(c["statements_refused_by_decision"], {"blocked": 1, "denied": 0, "refused": 1})
        self.assertEqual(len(self.control(r, "AC-3")["evidence"]["session_decisions"]), granted + refused)

        c = self.control(r, "AC-5")["counts"]
        self.assertEqual(c["approval_requests"], 3)
        self.assertEqual(c["by_status"], {"approved": 2, "denied": 1})
        self.assertEqual(c["decided_by_others_than_requester"], 3)
        self.assertEqual(c["approved_by_requester"], 0)
        self.assertEqual(c["self_approvals_refused"], 1)
        ev = self.control(r, "AC-5")["evidence"]
        dora = next(a for a in ev["approvals"] if a["requester"] == "dora (test-idp)")
        self.assertEqual([(v["approver"], v["vote"]) for v in dora["votes"]], [("erin (test-idp)", "approve")])
        self.assertEqual(ev["self_approvals_refused"][0]["actor"], "dora (test-idp)")

        c = self.control(r, "AC-6")["counts"]
        self.assertEqual(c["sessions_by_access"], {"read": 2, "write": 5})
        self.assertEqual(c["writes_on_read_grants"], 1)
        w = self.control(r, "AC-6")["evidence"]["writes_on_read_grants"][0]
        self.assertEqual((w["subject"], w["statement"], w["sqlstate"]), ("bob", READ_GRANT_WRITE, "25006"))
        self.assertEqual(self.control(r, "AC-6")["evidence"]["credentials_per_agent_now"],
                         [{"agent_id": "agent-a", "labels": {"vpc": "a"}, "connections": ["demo"]}])

        c = self.control(r, "AC-17")["counts"]
        self.assertEqual((c["sessions"], c["tls"], c["plaintext"], c["client_addresses"]), (granted, granted, 0, 1))

        c = self.control(r, "AU-2/AU-3")["counts"]
        by_type = {k: v for k, v in c["by_type"].items() if k != "checkpoint"}
        self.assertEqual(by_type, {"approval": 3, "session_end": granted, "session_refused": refused,
                                   "session_start": granted, "statement": 6})
        self.assertEqual(c["events"], sum(c["by_type"].values()))
        samples = self.control(r, "AU-2/AU-3")["evidence"]["samples"]
        self.assertEqual(samples["session_start"]["body"]["subject"], "alice")
        self.assertEqual(len(self.control(r, "AU-2/AU-3")["event_ids"]), c["events"])

        c = self.control(r, "AU-6")["counts"]
        self.assertEqual(c["rule_hits"]["guardrails"], {"prod-safety": {"approved": 2, "blocked": 1, "denied": 1}})
        self.assertEqual(c["rule_hits"]["masking_rules"], {"pii": {"statements": 1, "masked_rows": 2}})
        self.assertEqual(c["rule_hits"]["approval_policies"], {"dba-on-call": {"approved": 2, "denied": 1}})
        self.assertEqual(c["rule_hits"]["access_rules"], {"readers": 2, "writers": 5})
        self.assertEqual(c["anomalies"]["statements_blocked"], 1)
        self.assertEqual(c["anomalies"]["held_not_approved"], 1)
        self.assertEqual(c["anomalies"]["authentication_failures"], 1)
        self.assertEqual(self.control(r, "AU-6")["evidence"]["top_identities"][0]["subject"], "alice")

        c = self.control(r, "AU-9")["counts"]
        self.assertEqual(c["problems"], 0)
        self.assertGreaterEqual(c["checkpoints_in_window"], 1)
        self.assertTrue(self.control(r, "AU-9")["evidence"]["verify_ok"])

        c = self.control(r, "AU-10")["counts"]
        self.assertEqual((c["approval_votes"], c["approvers"]), (3, 2))  # dora twice, erin once
        self.assertEqual(c["checkpoints_in_window"], self.control(r, "AU-9")["counts"]["checkpoints_in_window"])

        au11 = self.control(r, "AU-11")
        self.assertLess(au11["counts"]["oldest_event"][:23], rfc3339(self.from_ms)[:23])
        c = au11["counts"]
        self.assertEqual((c["retention_policies"], c["sessions_on_legal_hold"], c["legal_hold_changes"], c["purges"],
                          c["purged_records_in_window"]), (1, 1, 1, 0, 0))
        self.assertEqual(au11["evidence"]["retention_per_connection_now"], [{"connection": "demo", "keep_s": 30 * 86400}])
        self.assertEqual(au11["evidence"]["legal_hold_changes"][0]["action"], "AdminService.HoldSession")
        self.assertEqual(au11["not_recorded"], [])

        c = self.control(r, "AU-12")["counts"]
        self.assertEqual((c["agents_enrolled"], c["agents_reporting"], c["sequence_gaps"]), (1, 1, 0))
        self.assertEqual(c["events"], self.control(r, "AU-2/AU-3")["counts"]["events"])

        cm5 = self.control(r, "CM-5")
        self.assertEqual(cm5["counts"], {"ddl_ran": 1, "ddl_ran_with_approval": 1, "ddl_ran_without_approval": 0,
                                         "ddl_stopped": 0, "policy_changes": 1})
        ddl = cm5["evidence"]["ddl"][0]
        self.assertEqual((ddl["statement"], ddl["subject"], ddl["outcome"]), ("DROP TABLE tmp_a", "alice", "ran"))
        drop = next(a for a in self.control(r, "AC-5")["evidence"]["approvals"] if a["statement"] == "DROP TABLE tmp_a")
        self.assertEqual(ddl["approval_id"], drop["approval_id"])

        c = self.control(r, "IA-2/IA-5")["counts"]
        self.assertEqual(c["authentication_failures"], 1)
        self.assertEqual(c["failures_by_reason"], {"signature does not verify": 1})
        self.assertEqual(c["admin_api_authentication_failures"], 1)
        self.assertEqual(c["token_lifetimes"]["tokens"], granted)
        self.assertEqual((c["token_lifetimes"]["min_s"], c["token_lifetimes"]["max_s"]), (300, 300))
        self.assertEqual(c["token_algorithms"], {"ES256": granted})

        ir = self.control(r, "IR-4/IR-5")
        self.assertEqual((ir["counts"]["blocked"], ir["counts"]["held_not_approved"], ir["counts"]["alerts"]), (1, 1, 0))
        b = ir["evidence"]["blocked"][0]
        self.assertEqual((b["subject"], b["issuer"], b["guardrail"], b["match"], b["statement"]),
                         ("alice", "test-idp", "prod-safety", "delete_without_where", "DELETE FROM items"))
        self.assertIn(b["event_id"], ir["event_ids"])
        self.assertTrue(b["event_id"].startswith("agent-a/"))

        c = self.control(r, "SC-8/SC-13")["counts"]
        self.assertEqual((c["client_tls"], c["client_plaintext"]), (granted, 0))
        self.assertEqual(list(c["client_tls_versions"].values()), [granted])
        self.assertIn(list(c["client_tls_versions"])[0], ("TLSv1.2", "TLSv1.3"))
        self.assertEqual((c["upstream_tls"], c["upstream_plaintext"]), (0, granted))
        self.assertEqual(c["connections_by_upstream_tls_setting"], {"disable": 1})
        self.assertEqual(self.control(r, "SC-8/SC-13")["not_recorded"], [])

        c = self.control(r, "SC-28")["counts"]
        self.assertEqual((c["connections"], c["connection_secrets_encrypted"], c["masked_statements"], c["masked_rows"]),
                         (1, 1, 1, 2))
        self.assertEqual(c["sessions_recorded"], granted)  # the agent records every session it lets in
        self.assertEqual(self.control(r, "SC-28")["not_recorded"], [])
        self.assertGreater(self.control(r, "AU-9")["counts"]["recording_slices_verified"], 0)

        c = self.control(r, "SI-4")["counts"]
        self.assertEqual((c["sessions_started"], c["sessions_refused"], c["sessions_ended"]), (granted, refused, granted))
        self.assertEqual((c["statements"], c["statement_errors"], c["statements_blocked"], c["statements_refused"]),
                         (6, 0, 1, 1))
        self.assertEqual((c["approvals_requested"], c["approvals_expired"], c["authentication_failures"]), (3, 0, 1))
        self.assertEqual(c["admin_calls_refused"], 2)  # the made-up token, dora approving her own request

    def test_the_window_bounds_what_is_counted(self):
        r = self.report()
        subjects = {i["subject"] for i in self.control(r, "AC-2")["evidence"]["identities"]}
        self.assertNotIn("early-bird", subjects)
        self.assertNotIn("late-bird", subjects)
        # A window around everything holds the sessions before and after too.
        wide = json.loads(self.export(frm=self.from_ms - 3600_000, to=now_ms() + 1000).stdout)
        subjects = {i["subject"] for i in self.control(wide, "AC-2")["evidence"]["identities"]}
        self.assertTrue({"early-bird", "late-bird"} <= subjects, subjects)
        self.assertEqual(self.control(wide, "AC-3")["counts"]["sessions_granted"], 7 + 2)

    # --- readable reports ------------------------------------------------------------------------

    def test_markdown_and_html(self):
        md = self.export("--format", "markdown").stdout
        self.assertIn("**Audit chain: VERIFIED.**", md)
        self.assertLess(md.index("Audit chain"), md.index("## Controls"))
        for cid in ("AC-2", "AC-3", "AC-5", "AU-9", "CM-5", "SI-4"):
            self.assertIn(f"## {cid} ", md)
        self.assertIn("INSERT INTO items SELECT 9, 9 WHERE 1 \\< 2", md)  # escaped, not raw
        self.assertNotIn(READ_GRANT_WRITE, md)

        out = os.path.join(self.stack.work.path, "evidence.html")
        r = self.export("--format", "html", "--output", out)
        self.assertIn(f"written to {out}", r.stderr)
        self.assertEqual(stat.S_IMODE(os.stat(out).st_mode), 0o600)
        with open(out) as f:
            html = f.read()
        self.assertTrue(html.startswith("<!DOCTYPE html>"))
        self.assertIn("<strong>Audit chain: VERIFIED.</strong>", html)
        for cid in ("AC-2", "AC-6", "AU-10", "IA-2/IA-5", "SC-28"):
            self.assertIn(f'<h2 id="{cid}">', html)
        self.assertIn("INSERT INTO items SELECT 9, 9 WHERE 1 &lt; 2", html)
        self.assertNotIn(READ_GRANT_WRITE, html)

    # --- who may export, and bad flags -----------------------------------------------------------

    def test_auditors_may_export_and_others_may_not(self):
        auditor = self.idp.token(sub="audrey", groups=["auditors"])
        r = json.loads(self.export(token=auditor).stdout)
        self.assertTrue(r["verify"]["ok"])
        r = self.export(token=self.idp.token(sub="mallory", groups=["dev"]), check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("mallory (test-idp) (roles: none) may not call AdminService.ExportEvidence: it needs the "
                      "admin or auditor role", r.stderr)

    def test_bad_flags_say_what_is_wrong(self):
        r = self.cp.ctl("evidence", "export", "--from", "1h", "--to", "2h", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("--to (", r.stderr)
        self.assertIn("must be after --from", r.stderr)
        r = self.cp.ctl("evidence", "export", "--from", "yesterday", "--to", "now", check=False)
        self.assertIn("error: --from: 'yesterday' is neither a duration", r.stderr)
        r = self.cp.ctl("evidence", "export", "--from", "1h", "--to", "now", "--format", "pdf", check=False)
        self.assertEqual(r.returncode, 2)
        self.assertIn("--format must be json, markdown or html, not 'pdf'", r.stderr)
        r = self.cp.ctl("evidence", "export", "--to", "now", check=False)
        self.assertEqual(r.returncode, 2)
        self.assertIn("--from is required", r.stderr)


if __name__ == "__main__":
    unittest.main()
