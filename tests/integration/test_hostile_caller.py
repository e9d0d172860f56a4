"""A caller with a valid token tries to switch off the agent's controls, with psql, psycopg and a
raw protocol client against a real PostgreSQL 15 (docs/postgres.md, "Threat model"). Each class of
the attack pass is a test: settings that change how the server reads a statement, a read grant
that lifts its own read-only session, decisions reused across sessions and identities,
FunctionCall, masked values leaving through expressions and side channels, guardrails that must
see what runs.

Identities: group `reader` has read access to `demo`; `writer` write access; `dpo` is exempt from
masking. The Guardrail blocks delete/update without WHERE, dangerous functions and DROP TABLE."""

import json
import os
import struct
import subprocess
import unittest

from harness import PG_BIN, Stack, TokenIssuer, pg_raw_login, pg_send, pg_until_ready, wait_for

POLICY = """---
kind: AccessRule
name: readers
subjects: {groups: [reader]}
connections: {names: [demo]}
access: read
---
kind: AccessRule
name: writers
subjects: {groups: [writer, dpo]}
connections: {names: [demo]}
access: write
---
kind: Guardrail
name: safety
connections: {names: [demo]}
rules:
  - {match: delete_without_where, action: block}
  - {match: update_without_where, action: block}
  - {match: drop_table, action: block}
  - {match: dangerous_function, action: block}
---
kind: MaskingRule
name: pii
connections: {names: [demo]}
columns: [customers.ssn, customers.email]
strategy: redact
exempt: {groups: [dpo]}
---
kind: MaskingRule
name: detect
connections: {names: [demo]}
detectors: [email]
strategy: redact
exempt: {groups: [dpo]}
---
kind: MaskingRule
name: cards
connections: {names: [demo]}
columns: ["*.card"]
strategy: partial
exempt: {groups: [dpo]}
"""

# SSNs in a range the us_ssn detector rightly never matches (area 9xx): only the column rule
# stands between the caller and them.
SCHEMA = """
CREATE TABLE customers (id int PRIMARY KEY, name text, email text, ssn text, card text);
INSERT INTO customers VALUES
  (1, 'Ada', 'ada@example.com', '900-11-2222', '4111 1111 1111 1111'),
  (2, 'Bob', 'bob@example.org', '901-22-3333', '5500 0000 0000 0004');
CREATE TABLE orders (id int, customer_id int, amount numeric);
INSERT INTO orders VALUES (10, 1, 9.5), (11, 1, 20), (12, 2, 3);
CREATE SEQUENCE order_ids;
ALTER TABLE customers OWNER TO app; ALTER TABLE orders OWNER TO app; ALTER SEQUENCE order_ids OWNER TO app;
"""

RAW_SSNS = ("900-11-2222", "901-22-3333")


class HostileCallerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.stack = Stack("hostile").__enter__()
        cls.pg, cls.cp, cls.agent = cls.stack.pg, cls.stack.cp, cls.stack.agent
        cls.pg.sql(SCHEMA, "demo")
        cls.idp = TokenIssuer()
        cls.stack.apply_and_wait(cls.stack.connection_yaml() + Stack.inline_issuer_yaml(cls.idp) + POLICY)
        cls.port = cls.agent.postgres_port()

    @classmethod
    def tearDownClass(cls):
        cls.stack.__exit__(None, None, None)

    # --- clients -------------------------------------------------------------------------------

    def dsn(self, user="caller"):
        return f"host=127.0.0.1 port={self.port} dbname=demo user={user} sslmode=require"

    def token(self, group, sub=None):
        return self.idp.token(sub=sub or f"{group}-1", groups=[group])

    def psql(self, sql, group="reader", sub=None, env=None):
        e = dict(os.environ, PGPASSWORD=self.token(group, sub), **(env or {}))
        return subprocess.run([f"{PG_BIN}/psql", self.dsn(), "-XAt", "-v", "ON_ERROR_STOP=0", "-c", sql],
                              capture_output=True, text=True, env=e, timeout=60)

    def psql_script(self, script, group="reader", sub=None):
        e = dict(os.environ, PGPASSWORD=self.token(group, sub))
        return subprocess.run([f"{PG_BIN}/psql", self.dsn(), "-XAtq"], input=script, capture_output=True,
                              text=True, env=e, timeout=60)

    def connect(self, group="reader", sub=None, **kw):
        import psycopg
        return psycopg.connect(self.dsn(), password=self.token(group, sub), autocommit=True, **kw)

    def orders(self):
        return int(self.pg.sql("SELECT count(*) FROM orders", "demo").strip())

    def raw(self, group, sub=None):
        """A raw protocol session, logged in: (socket, ParameterStatus dict)."""
        return pg_raw_login(self.port, self.token(group, sub))

    until_ready = staticmethod(pg_until_ready)

    @staticmethod
    def error_text(msgs):
        return b" ".join(b for t, b in msgs if t == b"E").decode(errors="replace")

    def statement_events(self, sub):
        out = []
        for s in json.loads(self.cp.ctl("sessions", "list", "--identity", sub, "-o", "json").stdout
                            ).get("sessions", []):
            d = json.loads(self.cp.ctl("sessions", "show", s["session_id"], "-o", "json").stdout)
            out += [json.loads(e["json"]) for e in d.get("events", []) if e["type"] == "statement"]
        return out

    # --- 1. the agent and the server read a text the same way ---------------------------------

    def test_standard_conforming_strings_cannot_be_switched_off(self):
        injected = "SELECT 'a\\' , ' ; DELETE FROM orders; -- '"
        before = self.orders()
        # By the startup packet's options: the login is refused and says why.
        r = self.psql("SELECT 1", "writer", env={"PGOPTIONS": "-c standard_conforming_strings=off"})
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("standard_conforming_strings", r.stderr)
        r = self.psql("SELECT 1", "writer", env={"PGOPTIONS": "--standard-conforming-strings=off"})
        self.assertIn("standard_conforming_strings", r.stderr)
        # By SET, SET LOCAL, set_config with a constant or a computed name: refused, the session goes on
        # with the setting on, and the text is one SELECT to the server too.
        for attempt in ("SET standard_conforming_strings = off",
                        "BEGIN; SET LOCAL standard_conforming_strings = off",
                        "SELECT set_config('standard_conforming_strings', 'off', false)",
                        "SELECT set_config(lower('STANDARD_CONFORMING_STRINGS'), 'off', false)",
                        "SELECT set_config(name, 'off', false) FROM pg_settings WHERE name LIKE 'standard%'"):
            r = self.psql_script(f"{attempt};\nSHOW standard_conforming_strings;\n{injected};\n", "writer")
            self.assertIn("Sluice: statement refused", r.stderr, attempt)
            self.assertIn("\non\n", "\n" + r.stdout, attempt)
            self.assertEqual(self.orders(), before, attempt)
        # psycopg, extended protocol.
        import psycopg
        with self.connect("writer") as conn:
            with self.assertRaises(psycopg.Error) as e:
                conn.execute("SELECT set_config(%s, 'off', false)", ("standard_conforming_strings",))
            self.assertIn("computed at run time", str(e.exception))
            self.assertEqual(conn.execute("SHOW standard_conforming_strings").fetchone()[0], "on")
        self.assertEqual(self.orders(), before)

    def test_code_the_agent_cannot_see_into_ends_the_session_when_it_changes_a_pinned_setting(self):
        before = self.orders()
        # A DO block runs on a write grant (no rule holds unknown statements here); the server
        # reports the changed setting, and the agent ends the session before anything else runs.
        # (dpo: exempt from masking, where DO is refused, since it could read masked values.)
        r = self.psql_script("DO $$ BEGIN PERFORM set_config('standard_conforming_strings', 'off', false); END $$;\n"
                             "SELECT 'a\\' , ' ; DELETE FROM orders; -- ';\n", "dpo")
        self.assertIn("settings changed", r.stderr)
        self.assertEqual(self.orders(), before)
        # In a pipeline, a text whose meaning depends on the setting is refused while code sent
        # before it has not finished.
        sock, _ = self.raw("dpo")
        try:
            do = b"DO $$ BEGIN PERFORM pg_sleep(0); END $$\0"
            pg_send(sock, b"P", b"\0" + do + b"\0\0")
            pg_send(sock, b"B", b"\0\0" + b"\0\0\0\0\0\0")
            pg_send(sock, b"E", b"\0\0\0\0\0")
            pg_send(sock, b"P", b"\0SELECT 'a\\' , ' ; DELETE FROM orders; -- '\0\0\0")
            pg_send(sock, b"B", b"\0\0" + b"\0\0\0\0\0\0")
            pg_send(sock, b"E", b"\0\0\0\0\0")
            pg_send(sock, b"S", b"")
            msgs = self.until_ready(sock)
            self.assertIn("pipeline", self.error_text(msgs))
        finally:
            sock.close()
        self.assertEqual(self.orders(), before)

    def test_client_encodings_that_hide_quotes_and_backslashes_are_refused(self):
        r = self.psql("SELECT 1", "writer", env={"PGCLIENTENCODING": "SJIS"})
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("client_encoding", r.stderr)
        r = self.psql_script("SET client_encoding TO 'SJIS';\nSHOW client_encoding;\n", "writer")
        self.assertIn("client_encoding", r.stderr)
        self.assertIn("UTF8", r.stdout)
        r = self.psql("SET client_encoding TO 'LATIN1'; SELECT 1", "writer")
        self.assertEqual(r.returncode, 0, r.stderr)

    # --- 2. a read grant stays read-only ---------------------------------------------------------

    def test_a_read_grant_cannot_lift_its_read_only_session(self):
        lifts = ["SET default_transaction_read_only = off",
                 "SET SESSION default_transaction_read_only TO false",
                 "SELECT set_config('default_transaction_read_only', 'off', false)",
                 "SELECT set_config('transaction_read_only', 'off', true)",
                 "BEGIN READ WRITE", "START TRANSACTION READ WRITE",
                 "BEGIN ISOLATION LEVEL READ COMMITTED, READ WRITE",
                 "BEGIN; SET TRANSACTION READ WRITE",
                 "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE"]
        writes = ["SELECT nextval('order_ids')", "SELECT setval('order_ids', 42)",
                  "SELECT lo_from_bytea(0, 'x')", "INSERT INTO orders VALUES (99, 1, 1)"]
        for lift in lifts:
            for write in writes:
                r = self.psql_script(f"{lift};\n{write};\n", "reader")
                # Refused at the agent, and the write fails: at the agent (INSERT) or in the
                # database, whose read-only session is the second line.
                self.assertGreaterEqual(r.stderr.count("read-only"), 2, (lift, write, r.stderr))
                self.assertEqual(r.stdout.strip(), "", (lift, write))
        r = self.psql("SHOW default_transaction_read_only", "reader")
        self.assertEqual(r.stdout.strip(), "on")
        # RESET ALL and DISCARD ALL go back to the session's start values: read-only still.
        r = self.psql_script("RESET ALL;\nDISCARD ALL;\nSHOW default_transaction_read_only;\n"
                             "SELECT nextval('order_ids');\n", "reader")
        self.assertEqual(r.stdout.strip(), "on")
        self.assertIn("read-only transaction", r.stderr)
        # A startup option cannot lift it either.
        r = self.psql("SELECT 1", "reader", env={"PGOPTIONS": "-c default_transaction_read_only=off"})
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("default_transaction_read_only", r.stderr)
        # psycopg (extended protocol), and its read_only attribute (BEGIN READ WRITE).
        import psycopg
        with self.connect("reader") as conn:
            for lift in ("SELECT set_config('default_transaction_read_only', %s, false)",):
                with self.assertRaises(psycopg.Error):
                    conn.execute(lift, ("off",))
            with self.assertRaises(psycopg.Error) as e:
                conn.execute("SELECT nextval(%s)", ("order_ids",))
            self.assertIn("read-only", str(e.exception))
        conn = self.connect("reader")
        try:
            conn.autocommit = False
            conn.read_only = False
            with self.assertRaises(psycopg.Error) as e:
                conn.execute("SELECT setval('order_ids', 7)")
            self.assertIn("read-only", str(e.exception))
        finally:
            conn.close()
        self.assertEqual(self.pg.sql("SELECT last_value FROM order_ids", "demo").strip(), "1")
        self.assertEqual(self.pg.sql("SELECT count(*) FROM pg_largeobject_metadata", "demo").strip(), "0")

    # --- 3. a decision is made for the text being run -------------------------------------------

    def test_one_callers_statement_never_decides_anothers(self):
        before = self.orders()
        # Many sessions on both workers: the reader's refused statement first, then the writer's of
        # the same shape with other literals.
        for round_ in range(4):
            r = self.psql("DELETE FROM orders WHERE 1 = 2", "reader", sub=f"poison-r{round_}")
            self.assertIn("read-only", r.stderr)
            r = self.psql("DELETE FROM orders WHERE 1 = 2", "writer", sub=f"poison-w{round_}")
            self.assertEqual(r.returncode, 0, r.stderr)
            r = self.psql("DELETE FROM orders WHERE 1 = 1", "writer", sub=f"poison-w{round_}")
            self.assertIn("delete_without_where", r.stderr)
            r = self.psql("DELETE FROM orders WHERE 3 > 1", "writer", sub=f"poison-w{round_}")
            self.assertIn("delete_without_where", r.stderr)
            r = self.psql("EXPLAIN (ANALYZE 0) INSERT INTO orders VALUES (1, 1, 1)", "reader")
            self.assertEqual(r.returncode, 0, r.stderr)
            r = self.psql("EXPLAIN (ANALYZE 1) INSERT INTO orders VALUES (1, 1, 1)", "reader")
            self.assertIn("read-only", r.stderr)
        # The same in one session, through the extended protocol.
        import psycopg
        with self.connect("writer", sub="poison-ext") as conn:
            conn.execute("DELETE FROM orders WHERE 1 = 2", prepare=True)
            with self.assertRaises(psycopg.Error) as e:
                conn.execute("DELETE FROM orders WHERE 1 = 1", prepare=True)
            self.assertIn("delete_without_where", str(e.exception))
        # A text longer than the lexer reads, made of a comment and a DELETE.
        hidden = "/*" + " " * (70 << 10) + "*/ DELETE FROM orders"
        r = self.psql_script(hidden + ";\n", "writer")
        self.assertIn("delete_without_where", r.stderr)
        self.assertEqual(self.orders(), before)

    # --- 4. FunctionCall is decided and audited -------------------------------------------------

    def function_call(self, sock, oid, args):
        body = struct.pack("!I", oid) + struct.pack("!H", 0) + struct.pack("!H", len(args))
        for a in args:
            body += struct.pack("!i", len(a)) + a
        body += struct.pack("!H", 0)
        pg_send(sock, b"F", body)
        return self.until_ready(sock)

    def test_function_call_is_gated_audited_and_answered(self):
        victim = self.connect("writer", sub="fc-victim")
        try:
            pid = victim.execute("SELECT pg_backend_pid()").fetchone()[0]
            # (dpo: exempt from masking, where a FunctionCall is refused: its result is not masked.)
            sock, _ = self.raw("dpo", sub="fc-caller")
            try:
                oid = int(self.pg.sql("SELECT 'pg_terminate_backend(int4,int8)'::regprocedure::oid", "demo").strip())
                msgs = self.function_call(sock, oid, [str(pid).encode(), b"0"])
                self.assertIn("dangerous_function", self.error_text(msgs))
                self.assertNotIn(b"V", [t for t, _ in msgs])
                # set_config by OID is not accepted.
                oid = int(self.pg.sql("SELECT 'set_config(text,text,bool)'::regprocedure::oid", "demo").strip())
                msgs = self.function_call(sock, oid, [b"standard_conforming_strings", b"off", b"false"])
                self.assertIn("set_config", self.error_text(msgs))
                # An ordinary function runs, and its answer is relayed: the session goes on.
                oid = int(self.pg.sql("SELECT 'int4pl(int4,int4)'::regprocedure::oid", "demo").strip())
                msgs = self.function_call(sock, oid, [b"2", b"3"])
                v = [b for t, b in msgs if t == b"V"]
                self.assertEqual(len(v), 1, msgs)
                self.assertEqual(v[0][4:], b"5")
                pg_send(sock, b"Q", b"SELECT 1\0")
                self.assertIn(b"D", [t for t, _ in self.until_ready(sock)])
            finally:
                sock.close()
            # On a read grant, a volatile function by OID (lo_creat writes a large object) is refused.
            sock, _ = self.raw("reader", sub="fc-reader")
            try:
                oid = int(self.pg.sql("SELECT 'lo_creat(int4)'::regprocedure::oid", "demo").strip())
                msgs = self.function_call(sock, oid, [b"-1"])
                self.assertIn("Sluice:", self.error_text(msgs))
            finally:
                sock.close()
            self.assertEqual(self.pg.sql("SELECT count(*) FROM pg_largeobject_metadata", "demo").strip(), "0")
            self.assertEqual(victim.execute("SELECT 2").fetchone()[0], 2)  # still alive
        finally:
            victim.close()

        def recorded():
            texts = [e.get("statement", "") for e in self.statement_events("fc-caller")]
            return [t for t in texts if t.startswith("FunctionCall")]
        got = wait_for(lambda: len(recorded()) >= 3 and recorded(), what="FunctionCall events")
        self.assertTrue(any("pg_terminate_backend" in t for t in got), got)
        self.assertTrue(any("int4pl" in t for t in got), got)

    # --- 5. masked values do not leave through expressions -------------------------------------

    def assert_no_raw(self, text, what):
        raw = list(RAW_SSNS) + [s.replace("-", "") for s in RAW_SSNS] + [s[::-1] for s in RAW_SSNS]
        raw += ["2222", "3333", "ada@example.com", "bob@example.org", "4111 1111", "5500 0000", "1111 1114"]
        for r in raw:
            self.assertNotIn(r, text, what)

    def test_values_derived_from_masked_columns_are_masked_whole(self):
        for sql in ("SELECT c FROM customers c", "SELECT row_to_json(c) FROM customers c",
                    "SELECT to_jsonb(c.*)::text FROM customers c", "SELECT ssn || '' FROM customers",
                    "SELECT format('%s', ssn) FROM customers", "SELECT array_agg(ssn) FROM customers",
                    "SELECT string_agg(ssn, ',') FROM customers", "SELECT reverse(card) FROM customers",
                    "SELECT split_part(ssn, '-', 3) FROM customers", "SELECT upper(email) FROM customers",
                    "SELECT x FROM (SELECT ssn || '' AS x FROM customers) s",
                    "WITH t AS (SELECT ssn AS x FROM customers) SELECT lower(x) FROM t",
                    "SELECT ssn FROM customers UNION SELECT 'x'", "SELECT (SELECT ssn FROM customers LIMIT 1)",
                    "SELECT id, ssn || '-' AS s, * FROM customers", "SELECT ARRAY[ssn, name] FROM customers",
                    "SELECT coalesce(ssn, 'none') FROM customers", "SELECT encode(convert_to(ssn, 'UTF8'), 'base64') FROM customers"):
            r = self.psql(sql, "reader")
            self.assertEqual(r.returncode, 0, (sql, r.stderr))
            self.assertEqual(r.stderr, "", sql)
            self.assert_no_raw(r.stdout + r.stderr, sql)
        # The exempt see the values (the checks above are not vacuous).
        r = self.psql("SELECT ssn || '' FROM customers ORDER BY id", "dpo")
        self.assertIn(RAW_SSNS[0], r.stdout)
        # Plain columns keep their own strategy; other columns are untouched.
        r = self.psql("SELECT name, card, ssn FROM customers ORDER BY id", "reader")
        self.assertEqual(r.stdout.splitlines()[0], "Ada|***************1111|[REDACTED]")
        # psycopg, extended protocol, text and binary.
        with self.connect("reader") as conn:
            for binary in (False, True):
                rows = conn.cursor(binary=binary).execute("SELECT ssn || %s, id FROM customers ORDER BY id",
                                                          ("",)).fetchall()
                self.assertEqual(rows[0][1], 1)
                self.assert_no_raw(repr(rows), f"psycopg binary={binary}")

    def test_masked_values_cannot_leave_by_other_roads(self):
        for sql in ("SELECT query_to_xml('select ssn from customers', true, true, '')",
                    "SELECT table_to_xml('customers', true, true, '')",
                    "SELECT pg_notify('leak', ssn) FROM customers",
                    "SELECT set_config('application_name', ssn, false) FROM customers LIMIT 1",
                    "DO $$ BEGIN RAISE NOTICE '%', (SELECT ssn FROM customers LIMIT 1); END $$",
                    "DECLARE c CURSOR FOR SELECT ssn || '' FROM customers",
                    "PREPARE p AS SELECT ssn || '' FROM customers",
                    "SELECT ssn || '', * , * FROM customers"):
            r = self.psql(sql, "reader")
            self.assertIn("ERROR:  Sluice: ", r.stderr, sql)
            self.assert_no_raw(r.stdout + r.stderr, sql)
        r = self.psql("INSERT INTO orders SELECT id, id, length(ssn) FROM customers", "writer")
        self.assertIn("Sluice: statement refused", r.stderr)
        # An error that would quote a masked value has its text withheld; its SQLSTATE stays.
        r = self.psql("SELECT ssn::int FROM customers", "reader")
        self.assertIn("withheld", r.stderr)
        self.assert_no_raw(r.stderr, "cast error")
        r = self.psql("SELECT id FROM customers WHERE ssn::int > 0", "reader")
        self.assertIn("withheld", r.stderr)
        self.assert_no_raw(r.stderr, "cast error in WHERE")

    # --- 6. side channels -------------------------------------------------------------------------

    def test_notifications_and_reported_settings_are_masked(self):
        with self.connect("reader") as listener:
            got = []
            listener.add_notify_handler(lambda n: got.append(n.payload))
            listener.execute("LISTEN news")
            with self.connect("dpo") as sender:
                sender.execute("NOTIFY news, 'write to ada@example.com'")
            wait_for(lambda: listener.execute("SELECT 1") and got, what="the notification")
            self.assertEqual(got, ["write to [REDACTED]"])
            listener.execute("SELECT set_config('application_name', 'ada@example.com', false)")
            self.assertEqual(listener.info.parameter_status("application_name"), "[REDACTED]")

    # --- 7. guardrails see what runs -------------------------------------------------------------

    def test_guardrails_see_merge_constant_wheres_and_sql_from_strings(self):
        before = self.orders()
        for sql, want in (("MERGE INTO orders o USING (SELECT 1) s ON true WHEN MATCHED THEN DELETE",
                           "delete_without_where"),
                          ("MERGE INTO orders o USING (SELECT 1 AS x) s ON 1 = 1 WHEN MATCHED THEN UPDATE SET amount = 0",
                           "update_without_where"),
                          ("DELETE FROM orders WHERE 2 > 1", "delete_without_where"),
                          ("DELETE FROM orders WHERE NOT false", "delete_without_where"),
                          ("SELECT query_to_xml('DELETE FROM orders RETURNING 1', true, true, '')",
                           "dangerous_function"),
                          ("SELECT * FROM ts_stat('SELECT to_tsvector(name) FROM customers')", "dangerous_function")):
            r = self.psql(sql, "dpo")  # exempt from masking, which refuses SQL from strings first
            self.assertIn(want, r.stderr, sql)
        r = self.psql("MERGE INTO orders o USING (SELECT 10 AS id) s ON o.id = s.id WHEN MATCHED THEN UPDATE SET amount = 1",
                      "writer")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.orders(), before)


if __name__ == "__main__":
    unittest.main()
