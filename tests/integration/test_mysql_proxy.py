"""MySQL through the agent, with stock clients against a real MariaDB 10.11: the caller's token as
the password (caching_sha2_password full authentication over TLS), the Connection's credentials
injected upstream, read grants, guardrails, refusals with their MySQL errors, and the events
that record it all."""
import json
import os
import subprocess
import unittest

from harness import (Agent, ControlPlane, MariaDbServer, Stack, TokenIssuer, Workdir, session_events,
                     wait_for)

CLIENTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "clients")
CONNECTOR_J = "/usr/share/java/mariadb-java-client.jar"

MASKING = """---
kind: MaskingRule
name: pii-ids
connections: {names: [demo-mysql]}
columns: [customers.ssn]
strategy: redact
exempt: {groups: [dpo]}
---
kind: MaskingRule
name: pii-email
connections: {names: [demo-mysql]}
columns: [customers.email]
strategy: hash
exempt: {groups: [dpo]}
"""


class MysqlStack:
    """MariaDB (database `demo`), a control plane, one agent labelled vpc=a, an OIDC issuer the
    test controls, and the Connection `demo-mysql` (upstream user app_native)."""

    def __init__(self, name, upstream_tls="disable", upstream_user="app_native"):
        self.name, self.upstream_tls, self.upstream_user = name, upstream_tls, upstream_user
        self.db = self.cp = self.agent = None

    def __enter__(self):
        self.work = Workdir(self.name)
        try:
            self.db = MariaDbServer(self.work.path, tls=True).start()
            self.cp = ControlPlane(self.work.path).start()
            self.agent = Agent(self.work.path, "a", self.cp, self.cp.enroll("agent-a", "vpc=a")).start()
            self.idp = TokenIssuer()
            self.port = self.agent.mysql_port()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        for p in (self.agent, self.cp, self.db):
            if p:
                p.stop()
        self.work.cleanup(keep=exc[0] is not None)
        return False

    def connection_yaml(self, name="demo-mysql", tags=None):
        return (f"kind: Connection\nname: {name}\nprotocol: mysql\n"
                f"upstream: {{host: 127.0.0.1, port: {self.db.port}, database: demo, "
                f"tls: {self.upstream_tls}"
                + (f", ca_file: {self.db.ca_file}" if self.upstream_tls == "verify_full" else "")
                + "}\n"
                f"credentials: {{username: {self.upstream_user}, password: {self.db.app_password}}}\n"
                "agents: {vpc: a}\n" + (f"tags: {tags}\n" if tags else ""))

    def policy(self, extra=""):
        return (self.connection_yaml() + Stack.inline_issuer_yaml(self.idp)
                + "---\nkind: AccessRule\nname: readers\nsubjects: {groups: [ci]}\n"
                  "connections: {names: [demo-mysql]}\naccess: read\n"
                + "---\nkind: AccessRule\nname: writers\nsubjects: {groups: [writers]}\n"
                  "connections: {names: [demo-mysql]}\naccess: write\n" + extra)

    def apply_and_wait(self, yaml_text):
        out = self.cp.apply(yaml_text).stdout
        version = int(out.rsplit("policy version ", 1)[1])
        wait_for(lambda: self.agent.status()["applied_version"] == version, what="policy applied")
        return version

    def mariadb(self, sql, token, database="demo-mysql", tls=True, extra=(), user="ci"):
        """The mariadb CLI through the agent, the token as the password (MYSQL_PWD)."""
        args = ["mariadb", "--no-defaults", "--host=127.0.0.1", f"--port={self.port}",
                f"--user={user}", "--protocol=TCP", "--batch", "--skip-column-names"]
        if tls:
            args += ["--ssl", f"--ssl-ca={self.agent.tls_ca()}", "--ssl-verify-server-cert"]
        else:
            args += ["--skip-ssl"]
        args += list(extra)
        if database:
            args.append(database)
        return subprocess.run(args, input=sql, capture_output=True, text=True, timeout=60,
                              env=dict(os.environ, MYSQL_PWD=token))

    def prepared(self, sql, token, *params, user="ci"):
        """One statement through Connector/J as a server-side prepared statement (binary rows)."""
        url = (f"jdbc:mariadb://127.0.0.1:{self.port}/demo-mysql?useServerPrepStmts=true"
               f"&useSsl=true&serverSslCert={self.agent.tls_ca()}")
        return subprocess.run(["java", "-cp", CONNECTOR_J, os.path.join(CLIENTS, "MysqlPrepared.java"),
                               url, user, sql, *params], capture_output=True, text=True, timeout=120,
                              env=dict(os.environ, SLUICE_TOKEN=token))

    def events(self, identity):
        """Every stored event of `identity`'s sessions: (type, body)."""
        return session_events(self.cp, identity)


class MysqlProxyTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.stack = MysqlStack("mysql-proxy").__enter__()
        s = cls.stack
        s.apply_and_wait(s.policy(
            "---\nkind: Guardrail\nname: safety\nconnections: {names: [demo-mysql]}\nrules:\n"
            "  - {match: drop_table, action: block}\n"
            "  - {match: delete_without_where, action: block}\n" + MASKING))

    @classmethod
    def tearDownClass(cls):
        cls.stack.__exit__(None, None, None)

    def token(self, sub="ci-bot", groups=("ci",)):
        return self.stack.idp.token(sub=sub, groups=groups)

    def test_read_with_a_token_over_tls(self):
        r = self.stack.mariadb("SELECT count(*) FROM customers; SELECT @@tx_read_only, current_user()",
                               self.token())
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.strip().splitlines()
        self.assertEqual(int(lines[0]), int(self.stack.db.sql("SELECT count(*) FROM customers",
                                                              database="demo")))
        # The read grant's upstream session is read-only, as the Connection's user.
        self.assertEqual(lines[1].split("\t"), ["1", "app_native@%"])

    def test_token_failures_are_access_denied(self):
        r = self.stack.mariadb("SELECT 1", "not-a-token")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("ERROR 1045 (28000)", r.stderr)
        self.assertIn("Sluice", r.stderr)
        expired = self.stack.idp.token(sub="late-bot", groups=("ci",), lifetime=-60)
        r = self.stack.mariadb("SELECT 1", expired)
        self.assertIn("ERROR 1045 (28000)", r.stderr)
        nobody = self.stack.idp.token(sub="stranger", groups=("other",))
        r = self.stack.mariadb("SELECT 1", nobody)
        self.assertIn("ERROR 1045 (28000)", r.stderr)
        self.assertIn("no access rule", r.stderr)

    def test_plaintext_is_refused_before_any_token(self):
        r = self.stack.mariadb("SELECT 1", self.token(sub="plain-bot"), tls=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("3159", r.stderr)
        self.assertIn("TLS", r.stderr)

    def test_unknown_connection(self):
        r = self.stack.mariadb("SELECT 1", self.token(), database="nope")
        self.assertIn("ERROR 1049 (42000)", r.stderr)

    def test_writes_on_a_read_grant_are_refused(self):
        before = self.stack.db.sql("SELECT count(*) FROM customers", database="demo")
        for sql in ("INSERT INTO customers (id, name) VALUES (990001, 'x')",
                    "/*!40101 DELETE FROM customers WHERE id = 1 */",
                    "SELECT 1; UPDATE customers SET name = 'y' WHERE id = 1",
                    "SET SESSION TRANSACTION READ WRITE",
                    "SET SESSION tx_read_only = 0"):
            r = self.stack.mariadb(sql, self.token(sub="ro-bot"))
            self.assertNotEqual(r.returncode, 0, sql)
            self.assertIn("ERROR 1792 (25006)", r.stderr, sql)
        self.assertEqual(self.stack.db.sql("SELECT count(*) FROM customers", database="demo"), before)

        def refused():
            return [b for t, b in self.stack.events("ro-bot")
                    if t == "statement" and b.get("decision") == "refused"]
        found = wait_for(lambda: len(refused()) >= 5 and refused(), what="refusal events")
        self.assertTrue(all(b["refusal_kind"] == "read_only" for b in found), found)

    def test_guardrails_and_a_transaction_with_an_error(self):
        token = self.token(sub="writer-bot", groups=("writers",))
        r = self.stack.mariadb("DROP TABLE customers", token)
        self.assertIn("ERROR 1227 (42000)", r.stderr)
        self.assertIn("safety", r.stderr)
        r = self.stack.mariadb("DELETE FROM orders", token)
        self.assertIn("ERROR 1227 (42000)", r.stderr)
        # An error inside a transaction, then a rollback: nothing of it stays.
        r = self.stack.mariadb(
            "CREATE TABLE IF NOT EXISTS notes (id int primary key, body text);\n"
            "START TRANSACTION;\nINSERT INTO notes VALUES (1, 'a');\n"
            "INSERT INTO notes VALUES (1, 'dup');\n", token, extra=["--force"])
        self.assertIn("ERROR 1062 (23000)", r.stderr)
        r = self.stack.mariadb(
            "START TRANSACTION; INSERT INTO notes VALUES (2, 'b'); ROLLBACK; "
            "SELECT count(*) FROM notes WHERE id = 2", token)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), "0")

    def test_source_of_a_file(self):
        path = os.path.join(self.stack.work.path, "script.sql")
        with open(path, "w") as f:
            f.write("SELECT 'from the file';\nSELECT count(*) > 0 FROM customers;\n")
        r = self.stack.mariadb(f"SOURCE {path}\n", self.token(sub="source-bot"))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.split(), ["from", "the", "file", "1"])

    def test_pymysql_with_a_token(self):
        import pymysql
        conn = pymysql.connect(host="127.0.0.1", port=self.stack.port, user="py",
                               password=self.token(sub="py-bot"), database="demo-mysql",
                               ssl={"ca": self.stack.agent.tls_ca()}, connect_timeout=10)
        try:
            with conn.cursor() as c:
                c.execute("SELECT name FROM customers WHERE id = %s", (1,))
                row = c.fetchone()
            self.assertEqual(row[0], self.stack.db.sql("SELECT name FROM customers WHERE id = 1",
                                                       database="demo"))
        finally:
            conn.close()

    def test_events_name_the_protocol_and_the_statement(self):
        r = self.stack.mariadb("SELECT id FROM customers WHERE id = 2", self.token(sub="event-bot"))
        self.assertEqual(r.returncode, 0, r.stderr)

        def statements():
            return [b for t, b in self.stack.events("event-bot") if t == "statement"]
        found = wait_for(lambda: [b for b in statements()
                                  if "customers" in b.get("statement", "")], what="statement event")
        self.assertEqual(found[0]["classification"], "read")
        self.assertEqual(found[0]["rows"], 1)
        start = [b for t, b in self.stack.events("event-bot") if t == "session_start"]
        self.assertEqual(start[0]["connection_protocol"], "mysql", start)
        self.assertEqual(start[0]["connection"], "demo-mysql")
        self.assertTrue(start[0]["tls"])

    # ---- Masking ----

    def db_value(self, sql):
        return self.stack.db.sql(sql, database="demo")

    def test_masked_columns_in_text_rows(self):
        ssn = self.db_value("SELECT ssn FROM customers WHERE id = 1")
        email = self.db_value("SELECT email FROM customers WHERE id = 1")
        r = self.stack.mariadb("SELECT id, ssn, email, name FROM customers WHERE id = 1",
                               self.token(sub="mask-bot"))
        self.assertEqual(r.returncode, 0, r.stderr)
        cols = r.stdout.strip().split("\t")
        self.assertEqual(cols[1], "[REDACTED]")
        self.assertTrue(cols[2].startswith("tok_"), cols)
        self.assertEqual(cols[3], self.db_value("SELECT name FROM customers WHERE id = 1"))
        self.assertNotIn(ssn, r.stdout)
        self.assertNotIn(email, r.stdout)
        # An exempt caller sees the values.
        r = self.stack.mariadb("SELECT ssn FROM customers WHERE id = 1",
                               self.token(sub="dpo-bot", groups=("ci", "dpo")))
        self.assertEqual(r.stdout.strip(), ssn)

    def test_masked_values_do_not_leave_another_way(self):
        token = self.token(sub="sly-bot")
        ssns = self.db_value("SELECT group_concat(ssn) FROM customers").split(",")
        for sql in ("SELECT concat(ssn) FROM customers WHERE id = 1",
                    "SELECT ssn AS name FROM customers WHERE id = 1",
                    "WITH customers AS (SELECT ssn AS name FROM customers) SELECT name FROM customers",
                    "SELECT x FROM (SELECT ssn AS x FROM customers) t",
                    "SELECT x FROM (SELECT concat(ssn, '') AS x FROM customers LIMIT 10) AS t",
                    "SELECT json_object('s', ssn) FROM customers",
                    "SELECT (SELECT group_concat(ssn) FROM customers) AS x",
                    "SELECT id FROM customers UNION SELECT ssn FROM customers",
                    "SELECT extractvalue(1, concat(0x7e, (SELECT ssn FROM customers LIMIT 1)))",
                    "SELECT CAST(ssn AS DECIMAL) FROM customers; SHOW WARNINGS"):
            r = self.stack.mariadb(sql, token, extra=["--force"])
            for v in ssns:
                self.assertNotIn(v, r.stdout + r.stderr, sql)
        # Values kept in user variables would be read back later with no table in sight.
        for sql in ("SELECT ssn INTO @x FROM customers LIMIT 1",
                    "SET @x = (SELECT ssn FROM customers LIMIT 1)",
                    "SELECT @y := ssn FROM customers"):
            r = self.stack.mariadb(sql + "; SELECT @x, @y", token)
            self.assertIn("ERROR 1227 (42000)", r.stderr, sql)
            self.assertIn("user variables", r.stderr, sql)
            for v in ssns:
                self.assertNotIn(v, r.stdout, sql)
        r = self.stack.mariadb("PREPARE s FROM 'SELECT concat(ssn) FROM customers'; EXECUTE s", token)
        self.assertIn("ERROR 1227 (42000)", r.stderr)

    def test_masked_columns_in_binary_rows(self):
        ssn = self.db_value("SELECT ssn FROM customers WHERE id = 2")
        r = self.stack.prepared("SELECT id, ssn, name FROM customers WHERE id = ?",
                                self.token(sub="jdbc-bot"), "2")
        self.assertEqual(r.returncode, 0, r.stderr)
        rows = r.stdout.strip().splitlines()
        self.assertEqual(len(rows), 2)  # executed twice
        self.assertEqual(rows[0].split("\t"), ["2", "[REDACTED]",
                                               self.db_value("SELECT name FROM customers WHERE id = 2")])
        self.assertNotIn(ssn, r.stdout)

    def test_prepared_statements_are_decided(self):
        r = self.stack.prepared("DELETE FROM orders WHERE id = ?", self.token(sub="jdbc-ro"), "1")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("ERROR 1792 (25006)", r.stderr)
        r = self.stack.prepared("SELECT count(*) FROM orders WHERE customer_id = ?",
                                self.token(sub="jdbc-count"), "1")
        self.assertEqual(r.returncode, 0, r.stderr)


    def test_replay_renders_a_mysql_session(self):
        ssn = self.db_value("SELECT ssn FROM customers WHERE id = 3")
        r = self.stack.mariadb("SELECT id, ssn, name FROM customers WHERE id = 3; "
                               "INSERT INTO customers (id, name) VALUES (3, 'x')",
                               self.token(sub="replay-bot"), extra=["--force"])
        self.assertIn("ERROR 1792", r.stderr)
        r = self.stack.prepared("SELECT id, ssn FROM customers WHERE id = ?",
                                self.token(sub="replay-bot"), "3")
        self.assertEqual(r.returncode, 0, r.stderr)

        def sessions():
            return json.loads(self.stack.cp.ctl("sessions", "list", "--identity", "replay-bot",
                                                "-o", "json").stdout).get("sessions", [])
        listed = wait_for(lambda: len([x for x in sessions() if x.get("ended_unix_ms")]) >= 2 and sessions(),
                          what="both sessions stored")
        texts = [self.stack.cp.ctl("sessions", "replay", x["session_id"]).stdout for x in listed]
        text = "\n".join(texts)
        self.assertIn("> SELECT id, ssn, name FROM customers WHERE id = 3", text)
        self.assertIn("[REDACTED]", text)
        self.assertNotIn(ssn, text)
        self.assertIn("REFUSED", text)
        self.assertIn("> prepare: SELECT id, ssn FROM customers WHERE id = ?", text)
        self.assertIn("> execute statement", text)
        self.assertIn("masked by pii-ids", text)


    def test_evidence_counts_mysql_sessions_and_refusals(self):
        import datetime
        self.stack.mariadb("SELECT 1", self.token(sub="evidence-bot"))
        self.stack.mariadb("SELECT 1", "forged-token")
        now = datetime.datetime.now(datetime.timezone.utc)

        def ac3():
            out = self.stack.cp.ctl("evidence", "export", "--from",
                                    (now - datetime.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                                    "--to", (now + datetime.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")).stdout
            control = next(c for c in json.loads(out)["controls"] if c["id"] == "AC-3")
            counts = control["counts"]
            if (counts.get("sessions_granted_by_protocol", {}).get("mysql", 0) >= 1
                    and counts.get("sessions_refused_by_protocol", {}).get("mysql", 0) >= 1):
                return counts
            return None
        counts = wait_for(ac3, what="MySQL sessions in the evidence")
        self.assertGreaterEqual(counts["refused_by_reason"].get("token_rejected", 0), 1)


if __name__ == "__main__":
    unittest.main()
