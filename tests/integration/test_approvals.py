"""Just-in-time approval of single statements, end to end: a real PostgreSQL, psql and psycopg
holding a statement at the agent, a webhook receiver (a small HTTP server here) that checks the
X-Sluice-Signature, and approvers deciding with `sluicectl approvals` and their own OIDC tokens,
or with the signed callback link. The control plane is killed during a hold last."""

import hashlib
import hmac
import http.server
import json
import os
import re
import signal
import subprocess
import threading
import time
import unittest
import urllib.parse
import urllib.request

from harness import PG_BIN, Stack, TokenIssuer, free_port, wait_for

WEBHOOK_SECRET = "hook-secret-for-tests-0123456789"

# With the harness Stack's demo Connection (tagged env: prod) and test Issuer (attribution run_id).
POLICY = """---
kind: AccessRule
name: people
subjects: {{groups: [ci, dba]}}
connections: {{names: [demo]}}
access: admin
---
kind: Webhook
name: approvers-hook
url: http://127.0.0.1:{hook_port}/hook
secret: {secret}
---
kind: ApprovalPolicy
name: dba-on-call
approvers: {{groups: [dba]}}
timeout: 60s
webhooks: [approvers-hook]
---
kind: ApprovalPolicy
name: two-person
approvers: {{groups: [dba]}}
min_approvals: 2
timeout: 60s
---
kind: ApprovalPolicy
name: quick
approvers: {{groups: [dba]}}
timeout: 3s
---
kind: Guardrail
name: prod-safety
connections: {{tags: {{env: prod}}}}
rules:
  - {{match: update_without_where, action: require_approval, approval: dba-on-call}}
  - {{match: truncate, action: require_approval, approval: two-person}}
  - {{match: drop_table, action: require_approval, approval: quick, tables: ["tmp_*"]}}
  - {{match: delete_without_where, action: block}}
"""


class Hooks:
    """A webhook receiver: records every POST (headers, raw body)."""

    def __init__(self):
        self.received = []
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with outer.lock:
                    outer.received.append((dict(self.headers), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass
        self.port = free_port()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def approval(self, statement_part, timeout=20):
        """The JSON body of the webhook about a statement containing `statement_part`."""
        def find():
            with self.lock:
                for headers, body in self.received:
                    doc = json.loads(body)
                    if statement_part in doc["approval"]["statement"]:
                        return headers, body, doc
            return None
        return wait_for(find, timeout=timeout, what=f"the webhook for {statement_part!r}")


class ApprovalsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.stack = Stack("approvals").__enter__()
        cls.pg, cls.cp, cls.agent = cls.stack.pg, cls.stack.cp, cls.stack.agent
        cls.pg.sql("CREATE TABLE items (id int PRIMARY KEY, n int); INSERT INTO items VALUES (1, 0), (2, 0), (3, 0);"
                   "ALTER TABLE items OWNER TO app", "demo")
        cls.hooks = Hooks()
        cls.idp = TokenIssuer()
        cls.stack.apply_and_wait(cls.stack.connection_yaml(tags="{env: prod}") +
                                 Stack.inline_issuer_yaml(cls.idp, attribution=["run_id"]) +
                                 POLICY.format(hook_port=cls.hooks.port, secret=WEBHOOK_SECRET))
        cls.port = cls.agent.postgres_port()

    @classmethod
    def tearDownClass(cls):
        cls.hooks.server.shutdown()
        cls.stack.__exit__(None, None, None)

    def dsn(self):
        return f"host=127.0.0.1 port={self.port} dbname=demo user=someone sslmode=require"

    def psql_background(self, sql, sub="ci-bot", groups=("ci",), stop_on_error=True):
        env = dict(os.environ, PGPASSWORD=self.idp.token(sub=sub, groups=list(groups), run_id="run-7"))
        return subprocess.Popen([f"{PG_BIN}/psql", self.dsn(), "-X", "-At", "-v",
                                 f"ON_ERROR_STOP={1 if stop_on_error else 0}"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env)

    def decide(self, approval_id, verb, sub="dora", groups=("dba",), reason=None, check=True):
        args = ["--token", self.idp.token(sub=sub, groups=list(groups)), "approvals", verb, str(approval_id)]
        if reason:
            args += ["--reason", reason]
        return self.cp.ctl(*args, check=check)

    def n(self, item_id=1):
        return self.pg.sql(f"SELECT n FROM items WHERE id = {item_id}", "demo").strip()

    def held(self, statement_part, proc, sql):
        """Sends `sql` to the psql process; returns the approval id once the webhook arrived (or,
        for policies without a webhook, once the request is listed)."""
        proc.stdin.write(sql + "\n")
        proc.stdin.flush()

        def listed():
            out = json.loads(self.cp.ctl("approvals", "list", "--status", "pending", "-o", "json").stdout)
            for a in out.get("approvals", []):
                if statement_part in a["statement"]:
                    return int(a["id"])
            return None
        return wait_for(listed, timeout=20, what=f"approval request for {statement_part!r}")

    # --- the whole way ---------------------------------------------------------------------------

    def test_approve_releases_the_held_statement_with_a_signed_webhook(self):
        before = int(self.n(2))
        proc = self.psql_background("")
        approval_id = self.held("n = n + 10", proc, "UPDATE items SET n = n + 10;")
        headers, body, doc = self.hooks.approval("n = n + 10")
        # The signature: HMAC-SHA256(secret, timestamp + "." + raw body).
        ts = headers["X-Sluice-Timestamp"]
        want = "v1=" + hmac.new(WEBHOOK_SECRET.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
        self.assertEqual(headers["X-Sluice-Signature"], want)
        self.assertLess(abs(int(ts) - time.time()), 60)
        a = doc["approval"]
        self.assertEqual(a["id"], approval_id)
        self.assertEqual((a["subject"], a["connection"], a["rule"], a["guardrail"], a["approval_policy"]),
                         ("ci-bot", "demo", "update_without_where", "prod-safety", "dba-on-call"))
        self.assertEqual(a["attribution"], {"run_id": "run-7"})
        self.assertTrue(doc["links"]["approve"].startswith(f"http://{self.cp.http}/approvals/{approval_id}/approve?"))
        # Held: psql waits, nothing ran.
        time.sleep(0.5)
        self.assertIsNone(proc.poll())
        self.assertEqual(int(self.n(2)), before)
        out = self.decide(approval_id, "approve", reason="looks fine").stdout
        self.assertIn(f"approval {approval_id}: approved", out)
        stdout, stderr = proc.communicate("SELECT 'next';\n", timeout=20)
        self.assertEqual(proc.returncode, 0, stderr)
        self.assertIn(f"approval required: request {approval_id}, waiting up to 60 s", stderr)
        self.assertEqual(stdout.split(), ["UPDATE", "3", "next"])
        self.assertEqual(int(self.n(2)), before + 10)
        shown = self.cp.ctl("approvals", "show", str(approval_id)).stdout
        self.assertIn("approved by dora (test-idp): looks fine", shown)
        self.assertIn("approvers-hook", shown)  # the delivery attempt is on record
        self.assertRegex(shown, r"webhook .* approvers-hook attempt 1: HTTP 204")

    def test_deny_prints_the_reason_and_the_session_goes_on(self):
        proc = self.psql_background("", stop_on_error=False)
        approval_id = self.held("n = -1", proc, "UPDATE items SET n = -1;")
        self.decide(approval_id, "deny", reason="not during the freeze")
        stdout, stderr = proc.communicate("SELECT 'after';\n", timeout=20)
        self.assertIn("statement denied (guardrail \"prod-safety\", update_without_where): dora (test-idp): "
                      "not during the freeze", stderr)
        self.assertEqual(stdout.split(), ["after"])
        self.assertNotEqual(self.n(1), "-1")
        # A decided request cannot be decided again.
        r = self.decide(approval_id, "approve", sub="erin", check=False)
        self.assertIn(f"approval request {approval_id} is already denied", r.stderr)

    def test_sessions_are_found_by_decision_rule_and_attribution(self):
        proc = self.psql_background("", sub="filter-bot", stop_on_error=False)
        approval_id = self.held("n = 555", proc, "UPDATE items SET n = 555;")
        self.decide(approval_id, "deny", reason="filter test")
        proc.communicate("", timeout=20)

        def found(*args):
            out = json.loads(self.cp.ctl("sessions", "list", "--identity", "filter-bot", *args, "-o", "json").stdout)
            return len(out.get("sessions", []))
        wait_for(lambda: found("--decision", "denied") == 1, what="the session by decision")
        self.assertEqual(found("--rule", "dba-on-call"), 1)
        self.assertEqual(found("--rule", "prod-safety"), 1)
        self.assertEqual(found("--attribution", "run_id=run-7"), 1)
        self.assertEqual(found("--attribution", "run_id=other"), 0)
        self.assertEqual(found("--decision", "approved"), 0)
        r = self.cp.ctl("sessions", "list", "--attribution", "no equals sign", check=False)
        self.assertIn("attribution: a filter is claim=value", r.stderr)

    def test_self_approval_and_non_approvers_are_refused(self):
        proc = self.psql_background("", sub="dora", groups=("dba",))
        approval_id = self.held("n = 7", proc, "UPDATE items SET n = 7;")
        r = self.decide(approval_id, "approve", sub="dora", check=False)
        self.assertIn("a requester cannot approve their own statement", r.stderr)
        r = self.decide(approval_id, "approve", sub="mallory", groups=("ci",), check=False)
        self.assertIn("mallory (test-idp) (roles: none) may not call AdminService.DecideApproval", r.stderr)
        r = self.cp.ctl("approvals", "approve", str(approval_id), check=False)  # the bootstrap token
        self.assertIn("bootstrap-admin (roles: admin) may not call AdminService.DecideApproval", r.stderr)
        self.assertIsNone(proc.poll())  # still held
        self.decide(approval_id, "deny", sub="erin", reason="cleanup")
        stdout, stderr = proc.communicate("", timeout=20)
        self.assertIn("erin (test-idp): cleanup", stderr)

    def test_min_approvals_needs_two_different_approvers(self):
        proc = self.psql_background("")
        approval_id = self.held("TRUNCATE", proc, "TRUNCATE items;")
        out = self.decide(approval_id, "approve", sub="dora").stdout
        self.assertIn("your approval is recorded (1 of 2); still pending", out)
        r = self.decide(approval_id, "approve", sub="dora", check=False)
        self.assertIn("has already decided on request", r.stderr)
        self.assertIsNone(proc.poll())
        # Denied by the second approver after all (the table keeps its rows for the other tests).
        self.decide(approval_id, "deny", sub="erin", reason="keep the rows")
        proc.communicate("", timeout=20)
        self.assertEqual(self.pg.sql("SELECT count(*) FROM items", "demo").strip(), "3")

    def test_two_approvals_release(self):
        self.pg.sql("CREATE TABLE tmp_two (a int); ALTER TABLE tmp_two OWNER TO app", "demo")
        self.pg.sql("INSERT INTO tmp_two VALUES (1)", "demo")
        proc = self.psql_background("")
        approval_id = self.held("TRUNCATE tmp_two", proc, "TRUNCATE tmp_two;")
        self.decide(approval_id, "approve", sub="dora")
        self.decide(approval_id, "approve", sub="erin")
        stdout, stderr = proc.communicate("", timeout=20)
        self.assertEqual(proc.returncode, 0, stderr)
        self.assertEqual(self.pg.sql("SELECT count(*) FROM tmp_two", "demo").strip(), "0")

    def test_no_decision_before_the_timeout_is_a_denial(self):
        self.pg.sql("CREATE TABLE tmp_t (a int); ALTER TABLE tmp_t OWNER TO app", "demo")
        start = time.monotonic()
        proc = self.psql_background("", stop_on_error=False)
        stdout, stderr = proc.communicate("DROP TABLE tmp_t;\nSELECT 'still here';\n", timeout=30)
        self.assertIn("waiting up to 3 s", stderr)
        self.assertIn("no decision within 3 s", stderr)
        self.assertEqual(stdout.splitlines(), ["still here"])
        self.assertLess(time.monotonic() - start, 15)
        self.assertEqual(self.pg.sql("SELECT to_regclass('tmp_t') IS NOT NULL", "demo").strip(), "t")
        listed = json.loads(self.cp.ctl("approvals", "list", "--status", "expired", "-o", "json").stdout)
        self.assertTrue(any("tmp_t" in a["statement"] for a in listed["approvals"]))

    def test_callback_link_decides_once(self):
        proc = self.psql_background("")
        approval_id = self.held("n = 42", proc, "UPDATE items SET n = 42;")
        _, _, doc = self.hooks.approval("n = 42")
        link = doc["links"]["approve"]
        # GET shows the request and a button; it never decides (link previewers fetch GETs).
        with urllib.request.urlopen(link, timeout=10) as r:
            page = r.read().decode()
        self.assertIn("UPDATE items SET n = 42", page)
        self.assertIn("<form method=\"post\"", page)
        self.assertIsNone(proc.poll())
        # A tampered link is refused.
        bad = link.replace("/approve?", "/deny?")
        with self.assertRaises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(urllib.request.Request(bad, data=b"", method="POST"), timeout=10)
        self.assertEqual(caught.exception.code, 403)
        with urllib.request.urlopen(urllib.request.Request(link, data=b"reason=ok+from+chat", method="POST"),
                                    timeout=10) as r:
            self.assertIn("approved", r.read().decode())
        stdout, stderr = proc.communicate("", timeout=20)
        self.assertEqual(stdout.split(), ["UPDATE", "3"])
        # Used: the same link does nothing more.
        with self.assertRaises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(urllib.request.Request(link, data=b"", method="POST"), timeout=10)
        self.assertEqual(caught.exception.code, 409)
        shown = self.cp.ctl("approvals", "show", str(approval_id)).stdout
        self.assertIn("approved by link:approvers-hook: ok from chat", shown)

    def test_extended_protocol_hold_via_psycopg(self):
        import psycopg
        conn = psycopg.connect(self.dsn(), password=self.idp.token(), autocommit=True)
        result = {}

        def run():
            try:
                result["rows"] = conn.execute("UPDATE items SET n = %s", (5,)).rowcount
            except Exception as e:  # reported below
                result["error"] = e
        t = threading.Thread(target=run)
        t.start()
        _, _, doc = self.hooks.approval("UPDATE items SET n = $1")
        self.decide(doc["approval"]["id"], "approve")
        t.join(20)
        self.assertEqual(result.get("rows"), 3, result)
        self.assertEqual(conn.execute("SELECT n FROM items WHERE id = 3").fetchone()[0], 5)
        conn.close()

    def test_cancel_request_withdraws_the_held_statement(self):
        """psql's Ctrl-C and psycopg's cancel() send a CancelRequest with the agent's key: a held
        statement is withdrawn (nothing reached the database) and the session goes on."""
        import psycopg
        conn = psycopg.connect(self.dsn(), password=self.idp.token(), autocommit=True)
        result = {}

        def run():
            try:
                conn.execute("UPDATE items SET n = 99")
            except Exception as e:  # checked below
                result["error"] = e
        t = threading.Thread(target=run)
        t.start()
        _, _, doc = self.hooks.approval("n = 99")
        conn.cancel()
        t.join(20)
        self.assertIsInstance(result.get("error"), psycopg.errors.QueryCanceled, result)
        self.assertIn("canceling statement due to user request", str(result["error"]))
        self.assertEqual(conn.execute("SELECT 'alive'").fetchone()[0], "alive")
        conn.close()
        self.assertNotEqual(self.n(1), "99")
        # The request is withdrawn: nobody can approve it any more.
        approval_id = doc["approval"]["id"]
        wait_for(lambda: "withdrawn" in self.cp.ctl("approvals", "show", str(approval_id)).stdout,
                 what="the request to be withdrawn")
        r = self.decide(approval_id, "approve", check=False)
        self.assertIn(f"approval request {approval_id} is already withdrawn: cancelled by the client", r.stderr)
        self.assertNotEqual(self.n(1), "99")

    def test_zz_control_plane_killed_during_a_hold_denies(self):
        proc = self.psql_background("", stop_on_error=False)
        self.held("n = 1000", proc, "UPDATE items SET n = 1000;")
        start = time.monotonic()
        self.cp.process.kill9()
        stdout, stderr = proc.communicate("SELECT 'next';\n", timeout=30)
        self.assertIn("connection to the control plane was lost while the statement was held", stderr)
        self.assertEqual(stdout.split(), ["next"])
        self.assertLess(time.monotonic() - start, 20)
        self.assertNotEqual(self.n(1), "1000")
        # While the control plane is down, a statement that needs approval is denied at once.
        proc = self.psql_background("", stop_on_error=False)
        stdout, stderr = proc.communicate("UPDATE items SET n = 2000;\n", timeout=30)
        self.assertIn("the control plane is unreachable", stderr)
        self.cp.start()
        wait_for(lambda: self.agent.status()["state"] == "connected", timeout=60,
                 what="the agent to reconnect")


if __name__ == "__main__":
    unittest.main()
