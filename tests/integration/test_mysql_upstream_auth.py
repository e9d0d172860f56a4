"""The agent's upstream login as a MariaDB ed25519 user (client_ed25519): a real MariaDB 10.11
switches the agent to ed25519 for the Connection's user app_ed25519, and the agent signs the
server's scramble with a key derived from the Connection's password. The caller logs in to the
agent with the mariadb CLI and a token, never with the database password; with the upstream link
in plaintext, TLS required and TLS verified against the server's CA. A wrong password in the
Connection is the database's refusal, told to the caller in words."""
import unittest

from harness import Stack, wait_for
from test_mysql_proxy import MysqlStack

CONNECTIONS = ("ed25519-plain", "ed25519-wrong", "ed25519-require", "ed25519-verify",
               "ed25519-wrong-ca")


class MysqlUpstreamEd25519Test(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.stack = MysqlStack("mysql-upstream-auth").__enter__()
        s = cls.stack
        try:
            # The server's own view: app_ed25519 has no other way in than ed25519.
            plugin = s.db.sql("SELECT plugin FROM mysql.user WHERE user = 'app_ed25519'")
            assert plugin == "ed25519", plugin
            s.apply_and_wait(
                cls.connection("ed25519-plain", "disable")
                + cls.connection("ed25519-wrong", "disable", password="not-the-password")
                + cls.connection("ed25519-require", "require")
                + cls.connection("ed25519-verify", "verify_full", ca_file=s.db.ca_file)
                # The agent's own CA did not sign the database's certificate.
                + cls.connection("ed25519-wrong-ca", "verify_full", ca_file=s.agent.tls_ca())
                + Stack.inline_issuer_yaml(s.idp)
                + "---\nkind: AccessRule\nname: readers\nsubjects: {groups: [ci]}\n"
                  f"connections: {{names: [{', '.join(CONNECTIONS)}]}}\naccess: read\n")
        except BaseException:
            cls.stack.__exit__(None, None, None)
            raise

    @classmethod
    def tearDownClass(cls):
        cls.stack.__exit__(None, None, None)

    @classmethod
    def connection(cls, name, tls, password=None, ca_file=None):
        s = cls.stack
        return (f"---\nkind: Connection\nname: {name}\nprotocol: mysql\n"
                f"upstream: {{host: 127.0.0.1, port: {s.db.port}, database: demo, tls: {tls}"
                + (f", ca_file: {ca_file}" if ca_file else "") + "}\n"
                f"credentials: {{username: app_ed25519, "
                f"password: {s.db.app_password if password is None else password}}}\n"
                "agents: {vpc: a}\n")

    def query(self, connection, sql, sub):
        return self.stack.mariadb(sql, self.stack.idp.token(sub=sub, groups=("ci",)),
                                  database=connection)

    def assert_logged_in_as_ed25519(self, connection, upstream_tls):
        r = self.query(connection,
                       "SELECT current_user(), count(*) FROM customers;\n"
                       "SELECT concat('tls:', variable_value) FROM information_schema.session_status "
                       "WHERE variable_name = 'Ssl_version'", sub=f"{connection}-bot")
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.strip().splitlines()
        expected = self.stack.db.sql("SELECT count(*) FROM customers", database="demo")
        self.assertEqual(lines[0].split("\t"), ["app_ed25519@%", expected])
        # The agent's upstream session, as the server sees it: TLS or not, as the Connection says.
        self.assertEqual(len(lines), 2, r.stdout)
        if upstream_tls:
            self.assertRegex(lines[1], r"^tls:TLSv1\.[23]$")
        else:
            self.assertEqual(lines[1], "tls:")

    def test_ed25519_login_without_tls(self):
        self.assert_logged_in_as_ed25519("ed25519-plain", upstream_tls=False)

    def test_ed25519_login_with_tls_required(self):
        self.assert_logged_in_as_ed25519("ed25519-require", upstream_tls=True)

    def test_ed25519_login_with_tls_verified_against_the_servers_ca(self):
        self.assert_logged_in_as_ed25519("ed25519-verify", upstream_tls=True)

    def test_wrong_password_is_the_databases_refusal(self):
        r = self.query("ed25519-wrong", "SELECT 1", sub="wrong-pw-bot")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn('cannot open connection "ed25519-wrong"', r.stderr)
        self.assertIn("the database refused the login", r.stderr)
        self.assertIn("Access denied for user 'app_ed25519'", r.stderr)
        self.assertNotIn("not-the-password", r.stderr)

        # On record: the session refused because the upstream login failed, with the reason.
        def refused():
            return [b for t, b in self.stack.events("wrong-pw-bot") if t == "session_refused"]
        body = wait_for(refused, what="the refused session's event")[0]
        self.assertEqual(body["refusal_kind"], "upstream_unavailable")
        self.assertIn("the database refused the login", body["reason"] + body.get("detail", ""))

    def test_verify_full_with_another_ca_never_logs_in(self):
        before = self.failed_logins()
        r = self.query("ed25519-wrong-ca", "SELECT 1", sub="wrong-ca-bot")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn('cannot open connection "ed25519-wrong-ca"', r.stderr)
        self.assertIn("certificate verify failed", r.stderr)
        self.assertNotIn("refused the login", r.stderr)
        # The TLS handshake failed before any login was tried: the server counted no failure.
        self.assertEqual(self.failed_logins(), before)

    def failed_logins(self):
        return self.stack.db.sql("SELECT variable_value FROM information_schema.global_status "
                                 "WHERE variable_name = 'Access_denied_errors'")


if __name__ == "__main__":
    unittest.main()
