"""Session limits (Connection.limits) through a real agent, with a real PostgreSQL and psycopg:
one caller cannot take every upstream connection slot.

Connection `demo` has `limits: {max_sessions_per_identity: 3, max_sessions: 5}`; connection
`free` (the same database) has no `limits`, so the defaults apply (20 per caller, 90 in all).
Callers are told apart by issuer + subject; everyone here is in group ci, which may read both."""

import json
import socket
import ssl
import struct
import unittest

from harness import Stack, TokenIssuer, pg_read_msg, pg_send, pg_send_startup, wait_for

DEFAULT_PER_CALLER = 20  # common/policy/validation.h kDefaultMaxSessionsPerIdentity

POLICY = """---
kind: AccessRule
name: ci
subjects: {groups: [ci]}
connections: {names: [demo, free]}
access: read
"""


class SessionLimitsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.stack = Stack("session-limits").__enter__()
        try:
            cls.pg, cls.cp, cls.agent = cls.stack.pg, cls.stack.cp, cls.stack.agent
            cls.idp = TokenIssuer()
            free = cls.stack.connection_yaml().replace("name: demo\n", "name: free\n")
            limited = cls.stack.connection_yaml() + "limits: {max_sessions_per_identity: 3, max_sessions: 5}\n"
            cls.stack.apply_and_wait(limited + "---\n" + free + Stack.inline_issuer_yaml(cls.idp) + POLICY)
            cls.port = cls.agent.postgres_port()
        except BaseException:
            cls.stack.__exit__(None, None, None)
            raise

    @classmethod
    def tearDownClass(cls):
        cls.stack.__exit__(None, None, None)

    def setUp(self):
        self.open = []  # sessions to close whatever happens

    def tearDown(self):
        for conn in self.open:
            conn.close()

    # --- helpers -------------------------------------------------------------------------------

    def dsn(self, dbname):
        return f"host=127.0.0.1 port={self.port} dbname={dbname} user=ci sslmode=require"

    def connect(self, sub, dbname="demo"):
        """A session of `sub`, open until the test ends (or it is closed); it runs a statement."""
        import psycopg
        conn = psycopg.connect(self.dsn(dbname), password=self.idp.token(sub=sub), autocommit=True)
        self.open.append(conn)
        self.assertEqual(conn.execute("SELECT 1").fetchone(), (1,))
        return conn

    def refused(self, sub, dbname="demo"):
        """The error psycopg (libpq) reports when `sub`'s login is refused."""
        import psycopg
        with self.assertRaises(psycopg.OperationalError) as caught:
            self.connect(sub, dbname)
        return str(caught.exception)

    def close(self, conn):
        conn.close()
        self.open.remove(conn)

    def login_error(self, sub, dbname="demo"):
        """The ErrorResponse fields ({code: text}) of a login of `sub`, spoken byte by byte (libpq
        does not give the SQLSTATE of a failed login); None when the login succeeds."""
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        try:
            sock.sendall(struct.pack("!II", 8, 80877103))  # SSLRequest
            self.assertEqual(sock.recv(1), b"S")
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            sock = ctx.wrap_socket(sock)
            pg_send_startup(sock, 3 << 16, [("user", "ci"), ("database", dbname)])
            t, _ = pg_read_msg(sock)
            self.assertEqual(t, b"R")  # the password (token) is asked for
            pg_send(sock, b"p", self.idp.token(sub=sub).encode() + b"\0")
            while True:
                t, body = pg_read_msg(sock)
                if t == b"E":
                    return {f[:1].decode(): f[1:].decode() for f in body.split(b"\0") if f}
                if t == b"Z":
                    return None
        finally:
            sock.close()

    def upstream_sessions(self):
        """Sessions of the connection's database user on the real server."""
        out = self.pg.sql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND datname = 'demo'")
        return int(out.strip())

    def sessions(self, *args):
        return json.loads(self.cp.ctl("sessions", "list", "-o", "json", *args).stdout).get("sessions", [])

    # --- tests ---------------------------------------------------------------------------------

    def test_per_caller_and_total_limits(self):
        alice = [self.connect("alice") for _ in range(3)]
        # The 4th session of one caller is refused before anything is opened upstream.
        message = self.refused("alice")
        self.assertIn('FATAL:  Sluice: too many sessions for "alice" on connection "demo" (limit 3 per caller '
                      'on this agent); close one and try again', message)
        fields = self.login_error("alice")
        self.assertEqual(fields["S"], "FATAL")
        self.assertEqual(fields["C"], "53300")  # too_many_connections
        self.assertEqual(fields["M"], 'Sluice: too many sessions for "alice" on connection "demo" (limit 3 per '
                                      'caller on this agent); close one and try again')
        # (The other test's sessions, on the same database, may take a moment to end.)
        wait_for(lambda: self.upstream_sessions() == 3, what="3 upstream sessions")

        # Another caller still gets in.
        self.connect("bob")
        # Closing one of alice's sessions lets her in again (once the agent has seen it end).
        self.close(alice.pop())
        wait_for(lambda: self.try_connect("alice"), what="alice to be let in again")

        # alice 3 + bob 1 + carol 1 = 5: the connection's total. dave has none, and is refused.
        self.connect("carol")
        message = self.refused("dave")
        self.assertIn('FATAL:  Sluice: too many sessions on connection "demo" (limit 5 for all callers together '
                      'on this agent); try again later', message)
        self.assertEqual(self.login_error("dave")["C"], "53300")
        wait_for(lambda: self.upstream_sessions() == 5, what="5 upstream sessions")
        # The other connection is counted apart.
        self.connect("dave", dbname="free")

        # The refusals are on record: session_refused events with the SQLSTATE and the kind.
        def limit_refusals():
            got = [x for x in self.sessions("--connection", "demo")
                   if x.get("outcome") == "refused" and "too many sessions" in x.get("reason", "")]
            # alice twice, dave twice (events reach the control plane in batches: wait for all)
            return got if len(got) >= 4 and {x["subject"] for x in got} >= {"alice", "dave"} else None
        refused = wait_for(limit_refusals, what="the four session-limit refusals to be recorded")
        shown = json.loads(self.cp.ctl("sessions", "show", refused[0]["session_id"], "-o", "json").stdout)
        events = [e for e in shown["events"] if e["type"] == "session_refused"]
        self.assertEqual(len(events), 1)
        body = json.loads(events[0]["json"])
        self.assertEqual(body["sqlstate"], "53300")
        self.assertEqual(body["refusal"], "session_limit")
        self.assertIn("too many sessions", body["reason"])
        self.assertEqual(body["connection"], "demo")

    def try_connect(self, sub, dbname="demo"):
        """A session of `sub`, or None when its login is refused."""
        import psycopg
        try:
            return self.connect(sub, dbname)
        except psycopg.OperationalError:
            return None

    def test_default_per_caller_limit_without_a_limits_block(self):
        # Connection `free` has no limits: one caller gets the default number of sessions, no more.
        for _ in range(DEFAULT_PER_CALLER):
            self.connect("erin", dbname="free")
        message = self.refused("erin", dbname="free")
        self.assertIn(f'Sluice: too many sessions for "erin" on connection "free" (limit {DEFAULT_PER_CALLER} '
                      'per caller on this agent); close one and try again', message)
        self.assertEqual(self.login_error("erin", dbname="free")["C"], "53300")
        # Everyone else still logs in.
        self.connect("frank", dbname="free")
        self.connect("frank", dbname="demo")


if __name__ == "__main__":
    unittest.main()
