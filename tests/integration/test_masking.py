"""Masking inside the relay, with a real PostgreSQL and real clients (psql, psycopg, a raw
extended-protocol client): the masking corpus of docs/masking.md, case by case.

Rules under test (connection demo):
  - customers.email -> hash, customers.ssn -> redact, *.card -> partial, customers.phone -> null
    (by column name, whatever the result calls the column);
  - detectors email, us_ssn, credit_card, phone, secret -> redact, on every text value;
  - group dpo is exempt from both rules."""

import json
import os
import re
import struct
import subprocess
import unittest

from harness import PG_BIN, Stack, TokenIssuer, pg_raw_login, pg_read_msg, pg_send, wait_for

# The demo Connection and the test Issuer come from the harness's Stack.
POLICY = """---
kind: AccessRule
name: analysts
subjects: {groups: [analyst, dpo]}
connections: {names: [demo]}
access: write
---
kind: MaskingRule
name: pii-email
connections: {names: [demo]}
columns: [customers.email]
strategy: hash
exempt: {groups: [dpo]}
---
kind: MaskingRule
name: pii-ids
connections: {names: [demo]}
columns: [customers.ssn]
strategy: redact
exempt: {groups: [dpo]}
---
kind: MaskingRule
name: cards
connections: {names: [demo]}
columns: ["*.card"]
strategy: partial
exempt: {groups: [dpo]}
---
kind: MaskingRule
name: phones
connections: {names: [demo]}
columns: [customers.phone]
strategy: "null"
exempt: {groups: [dpo]}
---
kind: MaskingRule
name: detect
connections: {names: [demo]}
detectors: [email, us_ssn, credit_card, phone, secret]
strategy: redact
exempt: {groups: [dpo]}
"""

SCHEMA = """
CREATE TABLE customers (id int PRIMARY KEY, name text, email text, ssn text, card text,
                        phone varchar(20), notes text, card_number bigint);
INSERT INTO customers VALUES
  (1, 'Ada Example', 'ada@example.com', '123-45-6789', '4111 1111 1111 1111', '(555) 123-4567',
   'call ada@example.com or (555) 123-4567', 4111111111111111),
  (2, 'Bob Example', 'bob@example.org', '234-56-7890', '5500 0000 0000 0004', '555.987.6543',
   'nothing to see', 5500000000000004),
  (3, 'Cy Example', 'ada@example.com', '345-67-8901', '3400 0000 0000 009', '555-222-3333',
   'token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJjeSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ', 340000000000009);
CREATE TABLE orders (id int, customer_id int, total numeric);
INSERT INTO orders VALUES (10, 1, 9.5), (11, 1, 20), (12, 2, 3);
ALTER TABLE customers OWNER TO app; ALTER TABLE orders OWNER TO app;
"""

TOKEN_RE = re.compile(r"^tok_[0-9a-f]{16}$")


class MaskingTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.stack = Stack("masking").__enter__()
        cls.pg, cls.cp, cls.agent = cls.stack.pg, cls.stack.cp, cls.stack.agent
        cls.pg.sql(SCHEMA, "demo")
        cls.idp = TokenIssuer()
        cls.stack.apply_and_wait(cls.stack.connection_yaml() + Stack.inline_issuer_yaml(cls.idp) + POLICY)
        cls.port = cls.agent.postgres_port()

    @classmethod
    def tearDownClass(cls):
        cls.stack.__exit__(None, None, None)

    def dsn(self):
        return f"host=127.0.0.1 port={self.port} dbname=demo user=analyst sslmode=require"

    def connect(self, groups=("analyst",), sub="analyst-1"):
        import psycopg
        return psycopg.connect(self.dsn(), password=self.idp.token(sub=sub, groups=list(groups)),
                               autocommit=True)

    def rows(self, sql, params=None, binary=False, groups=("analyst",), prepare=None):
        with self.connect(groups) as conn:
            cur = conn.cursor(binary=binary)
            cur.execute(sql, params, prepare=prepare)
            return cur.fetchall()

    def psql(self, *args, groups=("analyst",), check=True):
        env = dict(os.environ, PGPASSWORD=self.idp.token(sub="analyst-1", groups=list(groups)))
        r = subprocess.run([f"{PG_BIN}/psql", self.dsn(), "-X", "-At", *args], capture_output=True,
                           text=True, env=env, timeout=60)
        if check and r.returncode != 0:
            raise AssertionError(f"psql {args} failed: {r.stderr}")
        return r

    # --- by column name ------------------------------------------------------------------------

    def test_select_star_masks_every_selected_column(self):
        got = self.rows("SELECT id, name, email, ssn, card, phone, notes, card_number FROM customers ORDER BY id")
        ada, bob, cy = got
        self.assertEqual(ada[1], "Ada Example")           # not selected, no finding: untouched
        self.assertRegex(ada[2], TOKEN_RE)                # hash
        self.assertEqual(ada[2], cy[2])                   # equal inputs, equal tokens
        self.assertNotEqual(ada[2], bob[2])
        self.assertEqual(ada[3], "[REDACTED]")            # redact
        self.assertEqual(ada[4], "***************1111")  # partial: the last 4 characters kept
        self.assertIsNone(ada[5])                         # null
        self.assertEqual(ada[6], "call [REDACTED] or [REDACTED]")  # detectors, in place
        self.assertEqual(bob[6], "nothing to see")
        self.assertEqual(cy[6], "token [REDACTED]")       # a JWT
        self.assertIsNone(ada[7])  # card_number is not *.card, but a bigint holding a card number -> NULL
        # The same through SELECT *.
        star = self.rows("SELECT * FROM customers ORDER BY id")
        self.assertEqual(star, got)

    def test_aliases_and_joins_are_masked_by_the_table_column(self):
        got = self.rows("SELECT c.email AS e, c.ssn AS x, o.total FROM customers c JOIN orders o "
                        "ON o.customer_id = c.id ORDER BY o.id")
        self.assertEqual(len(got), 3)
        for e, x, total in got:
            self.assertRegex(e, TOKEN_RE)
            self.assertEqual(x, "[REDACTED]")
        self.assertEqual([str(t) for _, _, t in got], ["9.5", "20", "3"])  # numbers untouched
        # Tokens still join and count: two distinct emails among three customers.
        tokens = self.rows("SELECT email FROM customers")
        self.assertEqual(len({t for (t,) in tokens}), 2)

    def test_values_computed_from_masked_columns_are_masked_whole(self):
        # The agent follows column lineage in the parse tree: a value computed from a masked
        # column is masked whole by that column's rule (partial becomes redact: the last four
        # characters of a computed value could be any four of the original).
        cases = {
            "SELECT lower(email) FROM customers WHERE id = 1": TOKEN_RE,
            "SELECT email || '' FROM customers WHERE id = 1": TOKEN_RE,
            "SELECT 'ssn: ' || ssn FROM customers WHERE id = 1": "[REDACTED]",
            "SELECT substr(ssn, 1, 3) FROM customers WHERE id = 1": "[REDACTED]",
            "SELECT string_agg(email, ',' ORDER BY id) FROM customers": TOKEN_RE,
            "SELECT encode(convert_to(email, 'UTF8'), 'base64') FROM customers WHERE id = 2": TOKEN_RE,
            "SELECT replace(card, ' ', '') FROM customers WHERE id = 2": "[REDACTED]",
            "SELECT upper(card) AS card FROM customers WHERE id = 1": "[REDACTED]",
        }
        for sql, want in cases.items():
            with self.subTest(sql=sql):
                (got,), = self.rows(sql)
                if isinstance(want, str):
                    self.assertEqual(got, want)
                else:
                    self.assertRegex(got, want)
        # A whole row of customers holds every masked column: the strictest rule (phone: null).
        self.assertEqual(self.rows("SELECT row_to_json(c)::text FROM customers c WHERE id = 1"), [(None,)])
        self.assertEqual(self.rows("SELECT row_to_json(c) FROM customers c WHERE id = 2"), [(None,)])
        # UNION: the result's column comes from no single table; lineage says it holds emails.
        got = self.rows("SELECT email FROM customers UNION SELECT 'x@example.net' ORDER BY 1")
        self.assertEqual(len(got), 3)
        for (v,) in got:
            self.assertRegex(v, TOKEN_RE)
        # Values computed from unmasked columns are searched by the detectors, in place.
        self.assertEqual(self.rows("SELECT 'note: ' || notes FROM customers WHERE id = 1"),
                         [("note: call [REDACTED] or [REDACTED]",)])

    def test_not_caught_cases_are_as_documented(self):
        # A table column named by an alias that a `*.card` pattern matches is masked by its own
        # name, card_number, which no rule selects; in binary, detectors do not read numbers
        # (docs/masking.md).
        self.assertEqual(self.rows("SELECT card_number AS card FROM customers WHERE id = 1", binary=True),
                         [(4111111111111111,)])

    def test_binary_results_via_psycopg(self):
        got = self.rows("SELECT email, ssn, phone, notes, card_number, id FROM customers WHERE id = %s",
                        (1,), binary=True)
        email, ssn, phone, notes, card_number, ident = got[0]
        self.assertRegex(email, TOKEN_RE)
        self.assertEqual(ssn, "[REDACTED]")
        self.assertIsNone(phone)
        self.assertEqual(notes, "call [REDACTED] or [REDACTED]")
        self.assertEqual(card_number, 4111111111111111)  # binary bigint: detectors do not read it
        self.assertEqual(ident, 1)
        # A masked column of a non-text type becomes NULL in binary too.
        self.assertEqual(self.rows("SELECT (card_number + 0) AS card FROM customers WHERE id = 1",
                                   binary=True), [(None,)])
        # jsonb in binary, computed from a masked column: masked whole (NULL, not a marker, for
        # a non-text type); computed from unmasked columns, the findings inside are masked.
        (doc,) = self.rows("SELECT jsonb_build_object('e', email) FROM customers WHERE id = 2", binary=True)[0]
        self.assertIsNone(doc)
        (doc,) = self.rows("SELECT jsonb_build_object('n', notes) FROM customers WHERE id = 1", binary=True)[0]
        self.assertEqual(doc, {"n": "call [REDACTED] or [REDACTED]"})

    def test_prepared_statements_and_pipelines(self):
        with self.connect() as conn:
            for i in range(1, 8):  # server-side prepared from the 3rd use
                cur = conn.execute("SELECT email, ssn FROM customers WHERE id = %s", (1 + i % 3,),
                                   prepare=i > 2)
                email, ssn = cur.fetchone()
                self.assertRegex(email, TOKEN_RE)
                self.assertEqual(ssn, "[REDACTED]")
            with conn.pipeline():
                cursors = [conn.execute("SELECT ssn FROM customers WHERE id = %s", (i,)) for i in (1, 2, 3)]
                cursors.append(conn.execute("SELECT name FROM customers WHERE id = 1"))
            self.assertEqual([c.fetchone()[0] for c in cursors], ["[REDACTED]"] * 3 + ["Ada Example"])

    def test_execute_without_describe(self):
        """A client that never asks for a description (Parse/Bind/Execute/Sync): the agent asks
        itself, and the client sees only the answers to what it sent."""
        sock = self.raw_session()
        self.send(sock, b"P", b"s1\0SELECT ssn, name FROM customers WHERE id = $1\0\0\0")
        self.send(sock, b"B", b"\0s1\0" + struct.pack("!hh", 0, 1) + struct.pack("!i", 1) + b"2" +
                  struct.pack("!hh", 1, 0))
        self.send(sock, b"E", b"\0" + struct.pack("!i", 0))
        self.send(sock, b"S", b"")
        seen = self.read_until_ready(sock)
        self.assertEqual([t for t, _ in seen], [b"1", b"2", b"D", b"C", b"Z"])
        values = self.data_row(seen[2][1])
        self.assertEqual(values, [b"[REDACTED]", b"Bob Example"])
        # The same statement again in binary, executed twice in one pipeline.
        for _ in range(2):
            self.send(sock, b"B", b"\0s1\0" + struct.pack("!hh", 0, 1) + struct.pack("!i", 1) + b"3" +
                      struct.pack("!hh", 1, 1))
            self.send(sock, b"E", b"\0" + struct.pack("!i", 0))
        self.send(sock, b"S", b"")
        seen = self.read_until_ready(sock)
        self.assertEqual([t for t, _ in seen], [b"2", b"D", b"C", b"2", b"D", b"C", b"Z"])
        self.assertEqual(self.data_row(seen[1][1]), [b"[REDACTED]", b"Cy Example"])
        # An error in the pipeline: the server skips to Sync; the next request is masked again.
        self.send(sock, b"P", b"\0SELECT 1/(id-id) FROM customers\0\0\0")
        self.send(sock, b"B", b"\0\0\0\0\0\0\0\0")
        self.send(sock, b"E", b"\0" + struct.pack("!i", 0))
        self.send(sock, b"B", b"\0s1\0" + struct.pack("!hh", 0, 1) + struct.pack("!i", 1) + b"1" +
                  struct.pack("!hh", 1, 0))
        self.send(sock, b"E", b"\0" + struct.pack("!i", 0))
        self.send(sock, b"S", b"")
        seen = self.read_until_ready(sock)
        self.assertEqual([t for t, _ in seen], [b"1", b"2", b"E", b"Z"])
        self.assertIn(b"division by zero", seen[2][1])
        self.send(sock, b"B", b"\0s1\0" + struct.pack("!hh", 0, 1) + struct.pack("!i", 1) + b"1" +
                  struct.pack("!hh", 1, 0))
        self.send(sock, b"E", b"\0" + struct.pack("!i", 0))
        self.send(sock, b"S", b"")
        seen = self.read_until_ready(sock)
        self.assertEqual(self.data_row(seen[1][1]), [b"[REDACTED]", b"Ada Example"])
        sock.close()

    def test_errors_and_notices_are_searched_by_detectors(self):
        import psycopg
        with self.connect() as conn:
            conn.execute("CREATE TEMP TABLE seen (e text UNIQUE)")
            with self.assertRaises(psycopg.errors.UniqueViolation) as caught:
                conn.execute("INSERT INTO seen VALUES ('z@example.com'), ('z@example.com')")
            self.assertEqual(caught.exception.diag.message_detail, "Key (e)=([REDACTED]) already exists.")
            # A statement that reads a masked column: its error's texts are withheld, the
            # SQLSTATE stays.
            with self.assertRaises(psycopg.errors.InvalidTextRepresentation) as caught:
                conn.execute("SELECT email::int FROM customers WHERE id = 2")
            self.assertIn("withheld", caught.exception.diag.message_primary)
            self.assertNotIn("bob@", str(caught.exception))
            notices = []
            conn.add_notice_handler(lambda d: notices.append(d.message_primary))
            conn.execute('DROP TABLE IF EXISTS "mail bob@example.org"')
            self.assertEqual(notices, ['table "mail [REDACTED]" does not exist, skipping'])
            # A DO block could read masked values where the agent cannot follow them: refused.
            with self.assertRaises(psycopg.errors.InsufficientPrivilege) as caught:
                conn.execute("DO $$ BEGIN RAISE NOTICE 'mail %', (SELECT email FROM customers WHERE id = 2); END $$")
            self.assertIn("DO block", str(caught.exception))
            # The session goes on.
            self.assertEqual(conn.execute("SELECT ssn FROM customers WHERE id = 1").fetchone(), ("[REDACTED]",))

    # --- COPY ----------------------------------------------------------------------------------

    def test_copy_to_stdout_text_and_csv(self):
        out = self.psql("-c", "COPY customers (id, email, ssn, notes) TO STDOUT").stdout.splitlines()
        first = out[0].split("\t")
        self.assertEqual(first[0], "1")
        self.assertRegex(first[1], TOKEN_RE)
        self.assertEqual(first[2:], ["[REDACTED]", "call [REDACTED] or [REDACTED]"])
        out = self.psql("-c", r"\copy customers to stdout with (format csv, header)").stdout.splitlines()
        self.assertEqual(out[0], "id,name,email,ssn,card,phone,notes,card_number")  # header as is
        fields = next(iter(__import__("csv").reader([out[1]])))
        self.assertEqual(fields[1], "Ada Example")
        self.assertRegex(fields[2], TOKEN_RE)
        self.assertEqual(fields[3:6], ["[REDACTED]", "***************1111", ""])  # phone: NULL
        self.assertEqual(fields[6], "call [REDACTED] or [REDACTED]")
        self.assertEqual(fields[7], "[REDACTED]")  # COPY writes numbers as text: the card is caught

    def test_copy_that_cannot_be_masked_is_refused(self):
        r = self.psql("-c", "COPY (SELECT email FROM customers) TO STDOUT", check=False)
        self.assertIn("statement refused", r.stderr)
        self.assertIn("COPY (query) TO STDOUT", r.stderr)
        r = self.psql("-c", "COPY customers TO STDOUT (FORMAT binary)", check=False)
        self.assertIn("binary COPY output cannot be masked", r.stderr)
        # The session goes on, and the exempt see raw values through the same statements.
        self.assertEqual(self.psql("-c", "COPY (SELECT email FROM customers WHERE id = 2) TO STDOUT",
                                   groups=("dpo",)).stdout.strip(), "bob@example.org")

    # --- who sees what -------------------------------------------------------------------------

    def test_exempt_group_sees_raw_values(self):
        got = self.rows("SELECT email, ssn, phone, notes FROM customers WHERE id = 1", groups=("dpo",))
        self.assertEqual(got, [("ada@example.com", "123-45-6789", "(555) 123-4567",
                                "call ada@example.com or (555) 123-4567")])

    def test_statement_events_name_the_masking_rules(self):
        sub = "masked-audit"
        with self.connect(sub=sub) as conn:
            conn.execute("SELECT ssn FROM customers").fetchall()
            conn.execute("SELECT id FROM orders").fetchall()

        def statements():
            out = []
            for s in json.loads(self.cp.ctl("sessions", "list", "--identity", sub, "-o", "json").stdout
                                ).get("sessions", []):
                d = json.loads(self.cp.ctl("sessions", "show", s["session_id"], "-o", "json").stdout)
                out += [json.loads(e["json"]) for e in d.get("events", []) if e["type"] == "statement"]
            return out
        found = wait_for(lambda: (s := statements()) and len(s) >= 2 and s, what="statement events")
        masked = [s for s in found if "ssn" in s["statement"]][0]
        self.assertEqual(masked["masked_rows"], 3)
        self.assertIn("pii-ids", masked["masked_by"].split(","))
        plain = [s for s in found if "orders" in s["statement"]][0]
        self.assertNotIn("masked_by", plain)
        listed = json.loads(self.cp.ctl("sessions", "list", "--identity", sub, "--rule", "pii-ids", "-o",
                                        "json").stdout).get("sessions", [])
        self.assertEqual(len(listed), 1)

    # --- raw protocol helpers ------------------------------------------------------------------

    def raw_session(self):
        sock, _ = pg_raw_login(self.port, self.idp.token(sub="raw-client", groups=["analyst"]), user="analyst")
        return sock

    send = staticmethod(pg_send)

    def read_until_ready(self, sock):
        seen = []
        while True:
            t, body = pg_read_msg(sock)
            if t in (b"S", b"N", b"K"):
                continue  # ParameterStatus, notices, key data
            seen.append((t, body))
            if t == b"Z":
                return seen

    @staticmethod
    def data_row(body):
        (n,) = struct.unpack("!h", body[:2])
        at, values = 2, []
        for _ in range(n):
            (length,) = struct.unpack("!i", body[at:at + 4])
            at += 4
            if length < 0:
                values.append(None)
            else:
                values.append(body[at:at + length])
                at += length
        return values


if __name__ == "__main__":
    unittest.main()
