"""The MariaDB test server of the harness (harness.MariaDbServer): a real MariaDB 10.11 in a temp
dir with TLS from a throwaway CA, the demo data, and the two application users the MySQL path of
the agent injects (mysql_native_password and ed25519)."""

import time
import unittest

from harness import MariaDbServer, Workdir

# The rows of examples/demo.sql (PostgreSQL), which examples/demo-mariadb.sql must repeat.
DEMO_CUSTOMERS = [
    ("1", "Ada Example", "ada@example.com", "900-12-3456", "4111111111111111"),
    ("2", "Brook Sample", "brook@example.org", "900-23-4567", "5555555555554444"),
    ("3", "Casey Placeholder", "casey@example.net", "900-34-5678", "378282246310005"),
    ("4", "Drew Testcase", "drew@example.com", "900-45-6789", "6011111111111117"),
]


class MariaDbHarnessTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.work = Workdir("mariadb-harness")
        started = time.monotonic()
        try:
            cls.db = MariaDbServer(cls.work.path, tls=True, max_connections=20).start()
        except BaseException:
            cls.work.cleanup(keep=True)
            raise
        cls.startup_seconds = time.monotonic() - started

    @classmethod
    def tearDownClass(cls):
        cls.db.stop()
        cls.work.cleanup(keep=False)

    def login(self, user, *extra, password="pw", tls=True, verify=True, sql="SELECT current_user()"):
        return self.db.cli(*self.db.tcp_args(user, password, tls=tls, verify=verify),
                           "--batch", "--skip-column-names", *extra, "-e", sql, "demo")

    def test_starts_quickly_and_small(self):
        print(f"\nmariadbd ready with demo data in {self.startup_seconds:.2f}s, "
              f"RSS {self.db.rss_kb() // 1024} MiB")
        self.assertLess(self.startup_seconds, 15)  # ~1 s when the machine is idle
        self.assertEqual(self.db.sql("SELECT @@max_connections"), "20")
        self.assertEqual(self.db.sql("SELECT @@version").split("-")[0].rsplit(".", 1)[0], "10.11")

    def test_users_log_in_over_tls_verified_against_the_ca(self):
        for user, plugin in (("app_native", "mysql_native_password"), ("app_ed25519", "ed25519")):
            with self.subTest(user=user):
                r = self.login(user, sql="SELECT current_user(); SHOW SESSION STATUS LIKE 'Ssl_version'")
                self.assertEqual(r.returncode, 0, r.stderr)
                lines = r.stdout.splitlines()
                self.assertEqual(lines[0], f"{user}@%")
                self.assertRegex(lines[1], r"^Ssl_version\tTLSv1\.[23]$")
                self.assertEqual(self.db.sql(
                    f"SELECT plugin FROM mysql.user WHERE user = '{user}'"), plugin)

    def test_users_log_in_over_plain_tcp(self):
        for user in MariaDbServer.APP_USERS:
            with self.subTest(user=user):
                r = self.login(user, tls=False, sql="SHOW SESSION STATUS LIKE 'Ssl_version'")
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertEqual(r.stdout.strip(), "Ssl_version")

    def test_wrong_password_is_refused(self):
        for user in MariaDbServer.APP_USERS:
            with self.subTest(user=user):
                r = self.login(user, password="not-the-password")
                self.assertNotEqual(r.returncode, 0)
                self.assertIn("Access denied", r.stderr)

    def test_server_certificate_is_checked(self):
        # A CA that did not sign the server's certificate: verification must fail.
        from harness import make_test_ca
        import os
        other = make_test_ca(os.path.join(self.work.path, "other-ca"))
        r = self.db.cli(f"--host={self.db.host}", f"--port={self.db.port}", "--protocol=TCP",
                        "--user=app_native", "--password=pw", "--ssl", f"--ssl-ca={other['cacert']}",
                        "--ssl-verify-server-cert", "-e", "SELECT 1")
        self.assertNotEqual(r.returncode, 0, r.stdout)

    def test_root_only_over_the_unix_socket(self):
        r = self.db.cli(*self.db.tcp_args("root", tls=False), "-e", "SELECT 1")
        self.assertNotEqual(r.returncode, 0, r.stdout)
        self.assertEqual(self.db.sql("SELECT current_user()"), "root@localhost")

    def test_demo_rows(self):
        rows = [tuple(line.split("\t")) for line in
                self.db.sql("SELECT id, name, email, ssn, card_number FROM customers ORDER BY id",
                            database="demo").splitlines()]
        self.assertEqual(rows, DEMO_CUSTOMERS)
        count, customers, low, high = self.db.sql(
            "SELECT count(*), count(DISTINCT customer_id), min(amount) >= 0, max(amount) <= 200 "
            "FROM orders", database="demo").split("\t")
        self.assertEqual((count, customers, low, high), ("40", "4", "1", "1"))
        r = self.login("app_ed25519", sql="SELECT ssn FROM customers WHERE id = 1")
        self.assertEqual(r.stdout.strip(), "900-12-3456", r.stderr)

    def test_pymysql_connects_as_app_native(self):
        for tls in (False, True):
            with self.subTest(tls=tls):
                kw = {"ssl_ca": self.db.ca_file, "ssl_verify_cert": True,
                      "ssl_verify_identity": True} if tls else {}
                c = self.db.connect("app_native", **kw)
                try:
                    with c.cursor() as cur:
                        cur.execute("SELECT name, email FROM customers WHERE id = %s", (2,))
                        self.assertEqual(cur.fetchone(), ("Brook Sample", "brook@example.org"))
                        cur.execute("SHOW SESSION STATUS LIKE 'Ssl_version'")
                        version = cur.fetchone()[1]
                        self.assertTrue(version.startswith("TLSv1") if tls else version == "", version)
                        cur.execute("INSERT INTO orders (customer_id, amount) VALUES (1, 1.5)")
                        c.rollback()
                finally:
                    c.close()

    def test_mysqldb_connects_as_app_ed25519(self):
        # python3-mysqldb uses libmariadb, which has the client_ed25519 plugin. (PyMySQL 1.0.2
        # needs PyNaCl for ed25519, and python3-nacl is not installed.)
        import MySQLdb
        c = MySQLdb.connect(host=self.db.host, port=self.db.port, user="app_ed25519", password="pw",
                            database="demo", ssl={"ca": self.db.ca_file}, connect_timeout=10)
        try:
            cur = c.cursor()
            cur.execute("SELECT current_user(), count(*) FROM customers")
            self.assertEqual(cur.fetchone(), ("app_ed25519@%", 4))
        finally:
            c.close()

if __name__ == "__main__":
    unittest.main()
