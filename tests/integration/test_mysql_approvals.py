"""Just-in-time approval of single MySQL statements, end to end: a real MariaDB, the mariadb CLI,
PyMySQL and Connector/J holding a statement at the agent, approvers deciding with `sluicectl
approvals` and their own OIDC tokens (and the webhook that tells them), as test_approvals.py does
on PostgreSQL. The outcomes: approved (the statement runs, its result arrives), denied (ERR
1227/42000 with the decision), no decision in time, the mariadb CLI's Ctrl-C (KILL QUERY through
a second connection), the client going away; each execution of a prepared statement is held.
Each with its audit events."""

import json
import os
import signal
import subprocess
import threading
import unittest

from harness import wait_for
from test_approvals import Hooks
from test_mysql_proxy import CLIENTS, CONNECTOR_J, MysqlStack

WEBHOOK_SECRET = "hook-secret-for-tests-0123456789"

# On the stack's Connection demo-mysql; callers are in group `writers` (write access), approvers
# in `dba`.
POLICY = """---
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
name: quick
approvers: {{groups: [dba]}}
timeout: 3s
---
kind: Guardrail
name: prod-safety
connections: {{names: [demo-mysql]}}
rules:
  - {{match: update_without_where, action: require_approval, approval: dba-on-call}}
  - {{match: dangerous_function, action: require_approval, approval: dba-on-call, functions: [md5]}}
  - {{match: drop_table, action: require_approval, approval: quick, tables: ["tmp_*"]}}
  - {{match: delete_without_where, action: block}}
"""

DENIED = "ERROR 1227 (42000)"
CANCELLED = "Sluice: canceling statement due to user request (it was waiting for approval)"


class MysqlApprovalsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.stack = MysqlStack("mysql-approvals").__enter__()
        s = cls.stack
        try:
            s.db.sql("CREATE TABLE items (id int PRIMARY KEY, n int);"
                     "INSERT INTO items VALUES (1, 0), (2, 0), (3, 0);", database="demo")
            cls.hooks = Hooks()
            s.apply_and_wait(s.policy(POLICY.format(hook_port=cls.hooks.port, secret=WEBHOOK_SECRET)))
        except BaseException:
            s.__exit__(None, None, None)
            raise

    @classmethod
    def tearDownClass(cls):
        cls.hooks.server.shutdown()
        cls.stack.__exit__(None, None, None)

    # ---- helpers ----

    def token(self, sub):
        return self.stack.idp.token(sub=sub, groups=("writers",))

    def mariadb_background(self, sql, sub, force=True):
        """The mariadb CLI through the agent running `sql` (its whole script sent at once: the
        CLI runs it statement by statement), as `sub`; `force` goes on after an error."""
        args = ["mariadb", "--no-defaults", "--host=127.0.0.1", f"--port={self.stack.port}",
                "--user=ci", "--protocol=TCP", "--batch", "--skip-column-names", "--ssl",
                f"--ssl-ca={self.stack.agent.tls_ca()}", "--ssl-verify-server-cert"]
        if force:
            args.append("--force")
        args.append("demo-mysql")
        proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                env=dict(os.environ, MYSQL_PWD=self.token(sub)))
        proc.stdin.write(sql)
        proc.stdin.close()
        return proc

    @staticmethod
    def finish(proc, timeout=30):
        """The rest of a background CLI's output: (stdout, stderr)."""
        try:
            proc.wait(timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        with proc.stdout, proc.stderr:
            return proc.stdout.read(), proc.stderr.read()

    def approvals(self, status):
        out = json.loads(self.stack.cp.ctl("approvals", "list", "--status", status, "-o", "json").stdout)
        return out.get("approvals", [])

    def pending(self, statement_part, after=0):
        """The id of the pending request (newer than `after`) for a statement containing
        `statement_part`, once the control plane lists it."""
        def listed():
            for a in self.approvals("pending"):
                if statement_part in a["statement"] and int(a["id"]) > after:
                    return int(a["id"])
            return None
        return wait_for(listed, timeout=20, what=f"a pending approval request for {statement_part!r}")

    def decide(self, approval_id, verb, sub="dora", reason=None, check=True):
        args = ["--token", self.stack.idp.token(sub=sub, groups=["dba"]), "approvals", verb,
                str(approval_id)]
        if reason:
            args += ["--reason", reason]
        return self.stack.cp.ctl(*args, check=check)

    def n(self, item_id=1):
        return self.stack.db.sql(f"SELECT n FROM items WHERE id = {item_id}", database="demo")

    def events_of(self, sub, kind, statement_part, count=1):
        """`count` events of type `kind` of `sub`'s sessions about a statement containing
        `statement_part`, once stored."""
        def found():
            hits = [b for t, b in self.stack.events(sub)
                    if t == kind and statement_part in b.get("statement", "")]
            return hits if len(hits) >= count else None
        return wait_for(found, what=f"{count} {kind} event(s) of {sub} about {statement_part!r}")

    def assert_no_run(self, sub, statement_part):
        """No statement event of `sub` says the statement ran."""
        ran = [b for t, b in self.stack.events(sub)
               if t == "statement" and statement_part in b.get("statement", "")
               and "decision" not in b]
        self.assertEqual(ran, [])

    def assert_withdrawn(self, approval_id, why):
        wait_for(lambda: "withdrawn" in self.stack.cp.ctl("approvals", "show", str(approval_id)).stdout,
                 what=f"request {approval_id} to be withdrawn")
        r = self.decide(approval_id, "approve", check=False)
        self.assertIn(f"approval request {approval_id} is already withdrawn: {why}", r.stderr)

    # ---- approved ----

    def test_approve_runs_the_held_statement_in_the_session(self):
        before = int(self.n(2))
        proc = self.mariadb_background("UPDATE items SET n = n + 10;\nSELECT ROW_COUNT();\n",
                                       sub="approve-bot", force=False)
        approval_id = self.pending("n = n + 10")
        # What approvers are told.
        _, _, doc = self.hooks.approval("n = n + 10")
        a = doc["approval"]
        self.assertEqual(a["id"], approval_id)
        self.assertEqual((a["subject"], a["connection"], a["rule"], a["guardrail"], a["approval_policy"],
                          a["statement"]),
                         ("approve-bot", "demo-mysql", "update_without_where", "prod-safety",
                          "dba-on-call", "UPDATE items SET n = n + 10"))
        # Held: the client waits, nothing reached the database.
        self.assertIsNone(proc.poll())
        self.assertEqual(int(self.n(2)), before)
        out = self.decide(approval_id, "approve", reason="looks fine").stdout
        self.assertIn(f"approval {approval_id}: approved", out)
        stdout, stderr = self.finish(proc)
        self.assertEqual(proc.returncode, 0, stderr)
        # The UPDATE ran in that session, its OK reached the client, and the session went on.
        self.assertEqual(stdout.split(), ["3"])
        self.assertEqual(int(self.n(2)), before + 10)
        shown = self.stack.cp.ctl("approvals", "show", str(approval_id)).stdout
        self.assertIn("approved by dora (test-idp): looks fine", shown)
        approval = self.events_of("approve-bot", "approval", "n = n + 10")[0]
        self.assertEqual((approval["decision"], approval["approval_id"], approval["guardrail"],
                          approval["match"], approval["approval_policy"], approval["approvers"],
                          approval["reason"], approval["classification"], approval["protocol"]),
                         ("approved", approval_id, "prod-safety", "update_without_where",
                          "dba-on-call", "dora (test-idp)", "looks fine", "write", "text"))
        self.assertNotIn("refusal_kind", approval)
        statement = self.events_of("approve-bot", "statement", "n = n + 10")[0]
        self.assertNotIn("decision", statement)
        self.assertEqual(statement.get("command_tags"), "affected 3", statement)

    def test_approved_select_returns_its_rows(self):
        import pymysql
        conn = pymysql.connect(host="127.0.0.1", port=self.stack.port, user="py",
                               password=self.token("select-bot"), database="demo-mysql",
                               ssl={"ca": self.stack.agent.tls_ca()}, connect_timeout=10)
        result = {}

        def run():
            try:
                with conn.cursor() as c:
                    c.execute("SELECT md5('held'), count(*) FROM items")
                    result["rows"] = c.fetchall()
            except Exception as e:  # checked below
                result["error"] = e
        t = threading.Thread(target=run)
        t.start()
        approval_id = self.pending("md5('held')")
        self.assertTrue(t.is_alive())
        self.decide(approval_id, "approve")
        t.join(20)
        expected = self.stack.db.sql("SELECT md5('held')")
        self.assertEqual(result.get("rows"), ((expected, 3),), result)
        with conn.cursor() as c:  # the session goes on
            c.execute("SELECT 'alive'")
            self.assertEqual(c.fetchone()[0], "alive")
        conn.close()
        approval = self.events_of("select-bot", "approval", "md5('held')")[0]
        self.assertEqual((approval["decision"], approval["match"]), ("approved", "dangerous_function"))
        statement = self.events_of("select-bot", "statement", "md5('held')")[0]
        self.assertEqual(statement["rows"], 1, statement)

    # ---- denied, timed out ----

    def test_deny_is_an_error_with_the_decision_and_the_session_goes_on(self):
        proc = self.mariadb_background("UPDATE items SET n = -1;\nSELECT 'after';\n", sub="deny-bot")
        approval_id = self.pending("n = -1")
        self.decide(approval_id, "deny", reason="not during the freeze")
        stdout, stderr = self.finish(proc)
        self.assertIn(f"{DENIED} at line 1: Sluice: statement denied (guardrail \"prod-safety\", "
                      "update_without_where): dora (test-idp): not during the freeze", stderr)
        self.assertEqual(stdout.split(), ["after"])
        self.assertNotEqual(self.n(1), "-1")
        # A decided request cannot be decided again.
        r = self.decide(approval_id, "approve", sub="erin", check=False)
        self.assertIn(f"approval request {approval_id} is already denied", r.stderr)
        approval = self.events_of("deny-bot", "approval", "n = -1")[0]
        self.assertEqual((approval["decision"], approval["refusal_kind"], approval["approval_id"],
                          approval["approvers"], approval["reason"]),
                         ("denied", "approval_denied", approval_id, "dora (test-idp)",
                          "dora (test-idp): not during the freeze"))
        self.events_of("deny-bot", "statement", "'after'")
        self.assert_no_run("deny-bot", "n = -1")

    def test_no_decision_before_the_timeout_is_a_denial(self):
        self.stack.db.sql("CREATE TABLE tmp_t (a int)", database="demo")
        proc = self.mariadb_background("DROP TABLE tmp_t;\nSELECT 'still here';\n", sub="late-bot")
        approval_id = self.pending("tmp_t")
        stdout, stderr = self.finish(proc)
        self.assertIn(f"{DENIED} at line 1: Sluice: statement denied (guardrail \"prod-safety\", "
                      "drop_table): no decision within 3 s", stderr)
        self.assertEqual(stdout.split(), ["still", "here"])
        self.assertEqual(self.stack.db.sql("SELECT count(*) FROM information_schema.tables "
                                           "WHERE table_schema = 'demo' AND table_name = 'tmp_t'"), "1")
        self.assertTrue(any(int(a["id"]) == approval_id for a in self.approvals("expired")))
        approval = self.events_of("late-bot", "approval", "tmp_t")[0]
        self.assertEqual((approval["decision"], approval["refusal_kind"], approval["approval_id"],
                          approval["reason"], approval["approval_policy"]),
                         ("denied", "approval_timed_out", approval_id, "no decision within 3 s",
                          "quick"))
        self.assert_no_run("late-bot", "tmp_t")

    # ---- withdrawn by the client ----

    def test_ctrl_c_withdraws_the_held_statement(self):
        """The mariadb CLI's Ctrl-C opens a second connection (same user and token, no database)
        and sends KILL QUERY <the agent's id of the first>: the held statement is withdrawn, the
        CLI gets ERR 1317 and goes on."""
        proc = self.mariadb_background("UPDATE items SET n = 99;\nSELECT 'alive';\n", sub="kill-bot")
        approval_id = self.pending("n = 99")
        proc.send_signal(signal.SIGINT)
        stdout, stderr = self.finish(proc)
        self.assertIn("Ctrl-C -- query killed.", stdout)
        self.assertIn(f"ERROR 1317 (70100) at line 1: {CANCELLED}", stderr)
        self.assertEqual(stdout.splitlines()[-1], "alive")
        self.assertNotEqual(self.n(1), "99")
        self.assert_withdrawn(approval_id, "cancelled by the client")
        self.assertNotEqual(self.n(1), "99")
        approval = self.events_of("kill-bot", "approval", "n = 99")[0]
        self.assertEqual((approval["decision"], approval["refusal_kind"], approval["approval_id"]),
                         ("cancelled", "cancelled", approval_id))
        self.assert_no_run("kill-bot", "n = 99")

    def test_the_client_going_away_withdraws_the_held_statement(self):
        proc = self.mariadb_background("UPDATE items SET n = 98;\n", sub="gone-bot")
        approval_id = self.pending("n = 98")
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
        self.assert_withdrawn(approval_id, "cancelled by the client")
        self.assertNotEqual(self.n(1), "98")
        approval = self.events_of("gone-bot", "approval", "n = 98")[0]
        self.assertEqual((approval["decision"], approval["refusal_kind"]), ("cancelled", "cancelled"))
        self.assert_no_run("gone-bot", "n = 98")
        wait_for(lambda: any(t == "session_end" for t, _ in self.stack.events("gone-bot")),
                 what="the session's end")

    # ---- prepared statements ----

    def test_each_execution_of_a_prepared_statement_is_held(self):
        """Connector/J with useServerPrepStmts=true prepares once and executes twice (clients/
        MysqlPrepared.java): the prepare is not held, each execution is, on its own request."""
        before = int(self.n(3))
        url = (f"jdbc:mariadb://127.0.0.1:{self.stack.port}/demo-mysql?useServerPrepStmts=true"
               f"&useSsl=true&serverSslCert={self.stack.agent.tls_ca()}")
        proc = subprocess.Popen(["java", "-cp", CONNECTOR_J, f"{CLIENTS}/MysqlPrepared.java", url, "ci",
                                 "UPDATE items SET n = n + ? + IF(? IS NULL, 0, 0) + IF(? IS NULL, 0, 0)",
                                 "int:5", "held 'value'", "\\N"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=dict(os.environ, SLUICE_TOKEN=self.token("jdbc-bot")))
        first = self.pending("UPDATE items SET n = n + ?")
        self.assertIsNone(proc.poll())
        # The approver sees the values the execution binds, not only the placeholders.
        shown = self.stack.cp.ctl("approvals", "show", str(first)).stdout
        self.assertIn("parameters  5, held 'value', NULL", shown)
        self.assertEqual(int(self.n(3)), before)
        self.decide(first, "approve")
        second = self.pending("UPDATE items SET n = n + ?", after=first)
        self.assertEqual(int(self.n(3)), before + 5)  # the first execution ran
        self.decide(second, "deny", reason="once is enough")
        stdout, stderr = self.finish(proc, timeout=120)
        self.assertEqual(proc.returncode, 1, stderr)
        self.assertEqual(stdout.split(), ["affected", "3"])
        self.assertIn(DENIED, stderr)  # Connector/J puts "(conn=N)" before the message
        self.assertIn("Sluice: statement denied (guardrail \"prod-safety\", update_without_where): "
                      "dora (test-idp): once is enough", stderr)
        self.assertEqual(int(self.n(3)), before + 5)
        approvals = self.events_of("jdbc-bot", "approval", "n = n + ?", count=2)
        self.assertEqual([(a["approval_id"], a["decision"], a["protocol"]) for a in approvals],
                         [(first, "approved", "binary"), (second, "denied", "binary")])
        statements = [b for b in self.events_of("jdbc-bot", "statement", "n = n + ?")
                      if "decision" not in b]
        self.assertEqual([(b["protocol"], b.get("command_tags")) for b in statements],
                         [("binary", "affected 3")])


if __name__ == "__main__":
    unittest.main()
