"""Stock MySQL clients through the agent against a real MariaDB 10.11, as their users run them:
mariadb-dump, the mariadb CLI's Ctrl-C, sysbench over TLS, python3-mysqldb, npm mysql2's
execute(), Connector/J with server-side prepared statements, multiple result sets, and results
large enough that the agent must stream them in bounded memory."""
import json
import os
import pty
import re
import select
import signal
import subprocess
import tempfile
import threading
import time
import unittest

from harness import wait_for
from test_mysql_proxy import CLIENTS, MysqlStack

# Where scripts/test installs the pinned npm mysql2 (a git-ignored directory).
NPM_DIR = os.environ.get("SLUICE_NPM_DIR", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                        "..", "..", "build", "npm"))

# One masking rule, so that the clients' results show it applied (binary and text rows, dumps).
# (A statement that names a masked column has its computed columns masked whole too: the tests
# bind parameters in statements that do not.)
MASKING = """---
kind: MaskingRule
name: pii-ids
connections: {names: [demo-mysql, demo]}
columns: [customers.ssn]
strategy: redact
"""

SLEEP_SQL = "SELECT SLEEP(30)"


class MysqlClientsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.stack = MysqlStack("mysql-clients").__enter__()
        s = cls.stack
        try:
            # A second Connection, `demo`, named like its upstream database, for the dump of
            # routines (see test_mariadb_dump_with_a_read_grant).
            s.apply_and_wait(s.policy(
                MASKING + "---\n" + s.connection_yaml(name="demo")
                + "---\nkind: AccessRule\nname: dumpers\nsubjects: {groups: [ci]}\n"
                  "connections: {names: [demo]}\naccess: read\n"))
            # A procedure with two result sets (its definer the Connection's user, who may then
            # read its body), and a table the write tests fill (as root).
            s.db.sql("DELIMITER //\nCREATE DEFINER = app_native@'%' PROCEDURE two_sets(IN k INT) BEGIN "
                     "SELECT id, name FROM customers WHERE id <= k ORDER BY id; "
                     "SELECT count(*) AS n FROM orders; END//\nDELIMITER ;\n", database="demo")
            s.db.sql("CREATE TABLE client_notes (id int PRIMARY KEY, body text, "
                     "amount decimal(10,2), at datetime)", database="demo")
        except BaseException:
            s.__exit__(None, None, None)
            raise

    @classmethod
    def tearDownClass(cls):
        cls.stack.__exit__(None, None, None)

    def token(self, sub="ci-bot", groups=("ci",)):
        return self.stack.idp.token(sub=sub, groups=groups)

    def writer(self, sub="writer-bot"):
        return self.token(sub=sub, groups=("writers",))

    def db(self, sql):
        return self.stack.db.sql(sql, database="demo")

    def tls_args(self):
        return ["--ssl", f"--ssl-ca={self.stack.agent.tls_ca()}", "--ssl-verify-server-cert"]

    # ---- 1. mariadb-dump ----

    def test_mariadb_dump_with_a_read_grant(self):
        # mariadb-dump logs in without a database (it sends USE later): the user names the
        # Connection. Its default LOCK TABLES ... READ LOCAL is a write for the classifier, so a
        # read grant refuses it; --single-transaction (one consistent snapshot, no LOCK TABLES)
        # is the read-only dump.
        def dump(*options, connection="demo-mysql"):
            return subprocess.run(
                ["mariadb-dump", "--no-defaults", "--host=127.0.0.1", f"--port={self.stack.port}",
                 "--protocol=TCP", f"--user={connection}", *self.tls_args(), *options, connection],
                capture_output=True, text=True, timeout=120,
                env=dict(os.environ, MYSQL_PWD=self.token(sub="dump-bot")))
        r = dump()
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("1792", r.stderr)
        self.assertIn("LOCK TABLES", r.stderr)

        r = dump("--single-transaction")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("CREATE TABLE `customers`", r.stdout)
        self.assertIn("CREATE TABLE `orders`", r.stdout)
        # Every row is there; the masked column is masked.
        for name in self.db("SELECT name FROM customers").splitlines():
            self.assertIn(f"'{name}'", r.stdout)
        for ssn in self.db("SELECT ssn FROM customers").splitlines():
            self.assertNotIn(ssn, r.stdout)
        self.assertEqual(r.stdout.count("'[REDACTED]'"), int(self.db("SELECT count(*) FROM customers")))
        # The dump loads back (as root, into another database) to the same orders.
        self.stack.db.sql("CREATE DATABASE restored")
        self.stack.db.sql(r.stdout, database="restored")
        checksum = "SELECT count(*), sum(amount), sum(customer_id) FROM {}.orders"
        self.assertEqual(self.stack.db.sql(checksum.format("restored")),
                         self.stack.db.sql(checksum.format("demo")))
        # --routines asks `SHOW PROCEDURE STATUS WHERE Db = '<the name given>'`: the server knows
        # its database by its own name, so routines come with a Connection named like it.
        r = dump("--single-transaction", "--routines", "--triggers", connection="demo")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("PROCEDURE `two_sets`", r.stdout)
        self.assertIn("'[REDACTED]'", r.stdout)

    # ---- 2. Ctrl-C in the mariadb CLI ----

    def sleeping(self):
        """How many SLEEP(30) statements the server runs now."""
        return int(self.stack.db.sql("SELECT count(*) FROM information_schema.processlist "
                                     f"WHERE info = '{SLEEP_SQL}'"))

    def test_ctrl_c_in_the_cli_kills_the_query(self):
        # The usual login: the user is the caller's, the database names the Connection. The CLI's
        # Ctrl-C handler opens a second connection with the same user and password but no
        # database, and sends KILL QUERY <the id of the greeting>.
        cli = InteractiveCli(["mariadb", "--no-defaults", "--host=127.0.0.1",
                              f"--port={self.stack.port}", "--protocol=TCP", "--user=ci",
                              *self.tls_args(), "demo-mysql"],
                             env=dict(os.environ, MYSQL_PWD=self.token(sub="cli-bot")))
        self.addCleanup(cli.close)
        greeting = cli.read_until(re.compile(rb"\]> $"))
        agent_id = int(re.search(rb"connection id is (\d+)", greeting).group(1))

        cli.send(SLEEP_SQL + ";\n")
        wait_for(lambda: self.sleeping() == 1, what="the statement running upstream")
        # Another caller (another subject, same access) cannot stop it.
        r = self.stack.mariadb(f"KILL QUERY {agent_id}", self.token(sub="other-bot"))
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("no session of yours", r.stderr)
        self.assertEqual(self.sleeping(), 1)

        started = time.monotonic()
        cli.interrupt()
        out = cli.read_until(re.compile(rb"\]> $"), timeout=15)
        self.assertLess(time.monotonic() - started, 5, out)
        self.assertIn(b"Ctrl-C -- query killed", out)
        self.assertIn(b"ERROR 1317 (70100): Query execution was interrupted", out)
        self.assertEqual(self.sleeping(), 0)
        # The session goes on.
        cli.send("SELECT 'still here';\n")
        self.assertIn(b"still here", cli.read_until(re.compile(rb"\]> $")))

    def test_a_login_naming_no_connection_is_refused(self):
        # No database and a user that names no Connection, from a caller with no open session:
        # nothing says which Connection is meant.
        r = self.stack.mariadb("SELECT 1", self.token(sub="lost-bot"), database=None)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("ERROR 1049 (42000)", r.stderr)
        self.assertIn('connection "ci" does not exist', r.stderr)

    # ---- 3. sysbench ----

    def test_sysbench_over_tls(self):
        s = self.stack
        # The tables are made directly on MariaDB as root; the runs go through the agent.
        common = ["--db-driver=mysql", "--tables=4", "--table-size=10000"]
        r = subprocess.run(["sysbench", "oltp_read_write", *common, f"--mysql-socket={s.db.socket}",
                            "--mysql-user=root", "--mysql-db=demo", "prepare"],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        # --mysql-ssl=on reads these fixed names from the working directory: the agent's CA, and
        # any client certificate (the agent does not ask for one).
        work = tempfile.mkdtemp(dir=s.work.path, prefix="sysbench-")
        with open(s.agent.tls_ca()) as src, open(os.path.join(work, "cacert.pem"), "w") as dst:
            dst.write(src.read())
        for name in ("client-cert", "client-key"):
            with open(s.db.tls_files[name]) as src, open(os.path.join(work, f"{name}.pem"), "w") as dst:
                dst.write(src.read())
        # A uniform spread over 40,000 rows: two threads do not deadlock each other (a deadlock
        # would be the server's, counted as an ignored error).
        for test, token in (("oltp_point_select", self.token(sub="bench-ro")),
                            ("oltp_read_only", self.token(sub="bench-ro")),
                            ("oltp_read_write", self.writer(sub="bench-rw"))):
            r = subprocess.run(["sysbench", test, *common, "--mysql-host=127.0.0.1",
                                f"--mysql-port={s.port}", "--mysql-user=ci",
                                f"--mysql-password={token}", "--mysql-db=demo-mysql",
                                "--mysql-ssl=on", "--threads=2", "--time=3", "--rand-type=uniform",
                                "run"], cwd=work, capture_output=True, text=True, timeout=120)
            self.assertEqual(r.returncode, 0, f"{test}:\n{r.stdout}\n{r.stderr}")
            errors = re.search(r"^\s*ignored errors:\s+(\d+)", r.stdout, re.M)
            transactions = re.search(r"^\s*transactions:\s+(\d+)", r.stdout, re.M)
            self.assertIsNotNone(errors, r.stdout)
            self.assertEqual(int(errors.group(1)), 0, f"{test}:\n{r.stdout}")
            self.assertEqual(re.search(r"^\s*reconnects:\s+(\d+)", r.stdout, re.M).group(1), "0")
            self.assertGreater(int(transactions.group(1)), 0, r.stdout)
        self.assertGreater(int(self.db("SELECT count(*) FROM sbtest1")), 0)

    # ---- 4. python3-mysqldb ----

    def test_mysqldb_with_parameters_over_tls(self):
        import MySQLdb
        s = self.stack

        def connect(token):
            return MySQLdb.connect(host="127.0.0.1", port=s.port, user="ci", password=token,
                                   database="demo-mysql", ssl={"ca": s.agent.tls_ca()},
                                   connect_timeout=10, charset="utf8mb4")
        conn = connect(self.token(sub="mysqldb-bot"))
        try:
            c = conn.cursor()
            c.execute("SELECT id, name, %s, %s FROM customers WHERE id IN (%s, %s) AND name <> %s "
                      "AND %s IS NULL ORDER BY id", ("tag'\"\\", None, 1, 3, "O'Brien", None))
            rows = c.fetchall()
            c.execute("SELECT ssn FROM customers WHERE id = %s", (2,))
            masked = c.fetchall()
        finally:
            conn.close()
        self.assertEqual([r[0] for r in rows], [1, 3])
        self.assertEqual(rows[0][1], self.db("SELECT name FROM customers WHERE id = 1"))
        self.assertEqual(rows[0][2:], ("tag'\"\\", None))
        self.assertEqual(masked, (("[REDACTED]",),))

        conn = connect(self.writer(sub="mysqldb-writer"))
        try:
            c = conn.cursor()
            c.executemany("INSERT INTO client_notes (id, body, amount, at) VALUES (%s, %s, %s, %s)",
                          [(101, "it's", "1.50", "2024-01-02 03:04:05"), (102, None, None, None)])
            conn.commit()
        finally:
            conn.close()
        self.assertEqual(self.db("SELECT id, body, amount, at FROM client_notes WHERE id IN (101, 102) "
                                 "ORDER BY id"),
                         "101\tit's\t1.50\t2024-01-02 03:04:05\n102\tNULL\tNULL\tNULL")

    # ---- 5. npm mysql2, execute() ----

    def mysql2(self, sql, token, *params):
        if not os.path.exists(os.path.join(NPM_DIR, "node_modules", "mysql2", "package.json")):
            self.fail(f"npm mysql2 is not installed in {NPM_DIR}: scripts/test installs it")
        return subprocess.run(["node", os.path.join(CLIENTS, "mysql2_execute.js"),
                               str(self.stack.port), self.stack.agent.tls_ca(), "ci", "demo-mysql",
                               sql, *params], capture_output=True, text=True, timeout=120,
                              env=dict(os.environ, SLUICE_TOKEN=token,
                                       NODE_PATH=os.path.join(NPM_DIR, "node_modules")))

    def test_mysql2_execute(self):
        token = self.token(sub="mysql2-bot")
        r = self.mysql2("SELECT id, name, ? AS tag, ? AS nothing FROM customers "
                        "WHERE id > ? ORDER BY id", token, "x'y", "\\N", "2")
        self.assertEqual(r.returncode, 0, r.stderr)
        rows = [line.split("\t") for line in r.stdout.splitlines()]
        self.assertEqual([row[0] for row in rows], ["3", "4"])
        self.assertEqual(rows[0][1:], [self.db("SELECT name FROM customers WHERE id = 3"),
                                       "x'y", "\\N"])
        # Binary rows are masked.
        r = self.mysql2("SELECT id, ssn FROM customers WHERE id = ?", token, "3")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, "3\t[REDACTED]\n")
        # A write on a read grant is refused at the prepare, with the MySQL error.
        r = self.mysql2("DELETE FROM orders WHERE id = ?", token, "1")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("ERROR 1792 (25006)", r.stderr)
        r = self.mysql2("INSERT INTO client_notes (id, body) VALUES (?, ?)", self.writer(), "201",
                        "\\N")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), "affected 1")
        self.assertEqual(self.db("SELECT body IS NULL FROM client_notes WHERE id = 201"), "1")

    # ---- 6. Connector/J, server-side prepared statements ----

    def test_connector_j_with_several_parameters_and_nulls(self):
        r = self.stack.prepared(
            "SELECT ?, ? + 1, ?, ?, COALESCE(?, 'was null'), ? IS NULL, id, name FROM customers "
            "WHERE id = ? OR name = ?", self.token(sub="jdbc-params"),
            "a'b", "int:41", "dec:12.50", "ts:2024-02-03 04:05:06", "\\N", "\\N", "int:2", "\\N")
        self.assertEqual(r.returncode, 0, r.stderr)
        rows = r.stdout.strip().splitlines()
        self.assertEqual(len(rows), 2)  # executed twice
        self.assertEqual(rows[0].split("\t"), ["a'b", "42", "12.50", "2024-02-03 04:05:06.0",
                                               "was null", "1", "2",
                                               self.db("SELECT name FROM customers WHERE id = 2")])
        self.assertEqual(rows[0], rows[1])
        r = self.stack.prepared("INSERT INTO client_notes (id, body, amount, at) VALUES (?, ?, ?, ?)",
                                self.writer(sub="jdbc-writer"), "int:301", "\\N", "dec:7.25", "\\N")
        # The second execution of the same INSERT is the duplicate key: the first one went in.
        self.assertIn("affected 1", r.stdout)
        self.assertIn("1062", r.stderr)
        self.assertEqual(self.db("SELECT body IS NULL, amount, at IS NULL FROM client_notes "
                                 "WHERE id = 301"), "1\t7.25\t1")

    # ---- 6b. Connector/C: cursors (COM_STMT_FETCH) and bulk execution ----

    def stmt_client(self, mode, token, *args):
        binary = os.path.join(os.environ["SLUICE_BIN_DIR"], "tests", "mysql_stmt_client")
        return subprocess.run([binary, mode, "127.0.0.1", str(self.stack.port), "ci", "demo-mysql",
                               self.stack.agent.tls_ca(), *args], capture_output=True, text=True,
                              timeout=120, env=dict(os.environ, SLUICE_TOKEN=token))

    def statement_events(self, sub):
        return [b for t, b in self.stack.events(sub) if t == "statement"]

    def test_cursor_rows_come_by_fetch_and_are_masked(self):
        expected = [line.split("\t")[0:2] for line in
                    self.db("SELECT id, name FROM customers ORDER BY id").splitlines()]
        self.assertGreater(len(expected), 2)
        # Two rows per COM_STMT_FETCH: the rows come over several fetches.
        r = self.stmt_client("cursor", self.token(sub="cursor-bot"), "2",
                             "SELECT id, name, ssn FROM customers ORDER BY id")
        self.assertEqual(r.returncode, 0, r.stderr)
        first, second = r.stdout.split("--\n")
        for half in (first, second):
            rows = [line.split("\t") for line in half.splitlines()]
            self.assertEqual([row[:2] for row in rows], expected)
            # ssn is masked in the fetched binary rows.
            self.assertEqual({row[2] for row in rows}, {"[REDACTED]"})
        for ssn in self.db("SELECT ssn FROM customers").splitlines():
            self.assertNotIn(ssn, r.stdout)

        def fetches():
            return [e for e in self.statement_events("cursor-bot") if e.get("protocol") == "fetch"]
        found = wait_for(lambda: sum(e.get("rows", 0) for e in fetches()) == 2 * len(expected)
                         and fetches(), what="fetch events")
        self.assertTrue(all("ssn" in e["statement"] for e in found))
        self.assertTrue(any(e.get("masked_by") == "pii-ids" for e in found), found)
        # The executions that opened the cursors carried no rows themselves.
        opened = [e for e in self.statement_events("cursor-bot") if e.get("protocol") == "binary"]
        self.assertEqual([e.get("rows", 0) for e in opened], [0, 0])

    def test_a_cursor_over_no_rows(self):
        # The cursor opens and its first fetch ends it at once, twice.
        r = self.stmt_client("cursor", self.token(sub="cursor-nothing"), "1",
                             "SELECT id FROM customers WHERE id < 0")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, "--\n")

    def test_bulk_execute_inserts_every_row_as_one_decided_execution(self):
        r = self.stmt_client("bulk", self.writer(sub="bulk-writer"),
                             "INSERT INTO client_notes (id, body) VALUES (?, ?)",
                             "401|first", "402|\\N", "403|it's")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), "affected 3")
        self.assertEqual(self.db("SELECT id, body FROM client_notes WHERE id BETWEEN 401 AND 403 "
                                 "ORDER BY id"), "401\tfirst\n402\tNULL\n403\tit's")
        found = wait_for(lambda: [e for e in self.statement_events("bulk-writer")
                                  if e.get("protocol") == "bulk"], what="bulk event")
        self.assertEqual(found[0]["classification"], "write")
        self.assertIn("affected 3", found[0].get("command_tags", ""))
        # On a read grant the statement is refused when it is prepared, before any row runs.
        r = self.stmt_client("bulk", self.token(sub="bulk-reader"),
                             "INSERT INTO client_notes (id, body) VALUES (?, ?)", "404|no")
        self.assertEqual(r.returncode, 1)
        self.assertIn("ERROR 1792 (25006)", r.stderr)
        self.assertEqual(self.db("SELECT count(*) FROM client_notes WHERE id = 404"), "0")

    # ---- 7. Multiple result sets and large results ----

    def test_multiple_result_sets(self):
        import pymysql
        from pymysql.constants import CLIENT
        conn = pymysql.connect(host="127.0.0.1", port=self.stack.port, user="ci",
                               password=self.writer(sub="multi-bot"), database="demo-mysql",
                               ssl={"ca": self.stack.agent.tls_ca()}, connect_timeout=10,
                               client_flag=CLIENT.MULTI_STATEMENTS)
        try:
            with conn.cursor() as c:
                def all_sets(sql):
                    c.execute(sql)
                    out = [c.fetchall()]
                    while c.nextset():
                        out.append(c.fetchall())
                    return out
                self.assertEqual(all_sets("SELECT 1; SELECT 'a', 'b'; DO 1; SELECT id FROM customers "
                                          "WHERE id < 3 ORDER BY id"),
                                 [((1,),), (("a", "b"),), (), ((1,), (2,))])
                # A procedure's result sets, then the CALL's own OK.
                names = tuple((int(i), n) for i, n in (
                    line.split("\t") for line in
                    self.db("SELECT id, name FROM customers WHERE id <= 3 ORDER BY id").splitlines()))
                self.assertEqual(all_sets("CALL two_sets(3)"),
                                 [names, ((int(self.db("SELECT count(*) FROM orders")),),), ()])
                self.assertEqual(all_sets("SELECT 5"), [((5,),)])
        finally:
            conn.close()
        # The CLI prints each result of one text.
        r = self.stack.mariadb("SELECT 'one'; SELECT 'two' UNION SELECT 'three'", self.token())
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.split(), ["one", "two", "three"])

    def test_a_large_result_arrives_whole(self):
        # (A recursive CTE stops at max_recursive_iterations, 1000 by default: the Sequence
        # engine's seq_1_to_N tables make rows instead.)
        sql = "SELECT seq, concat('row-', seq) FROM seq_1_to_200000"
        r = self.stack.mariadb(sql, self.token(sub="large-bot"), extra=["--quick"])
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        self.assertEqual(len(lines), 200000)
        self.assertEqual(lines[0], "1\trow-1")
        self.assertEqual(lines[-1], "200000\trow-200000")
        # The same count in binary rows (COM_STMT_EXECUTE) through mysql2.
        r = self.mysql2("SELECT seq, repeat('x', ?) FROM seq_1_to_200000", self.token(sub="large-bin"),
                        "10")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.count("\n"), 200000)
        self.assertTrue(r.stdout.endswith("200000\txxxxxxxxxx\n"))

    def test_agent_memory_stays_bounded_relaying_300_mb(self):
        pid = self.stack.agent.process.proc.pid
        rows, width = 300000, 1000
        sampler = RssSampler(pid)
        sampler.start()
        try:
            # --quick: the CLI prints rows as they come rather than holding the whole result.
            args = ["mariadb", "--no-defaults", "--host=127.0.0.1", f"--port={self.stack.port}",
                    "--protocol=TCP", "--user=ci", *self.tls_args(), "--batch",
                    "--skip-column-names", "--quick", "demo-mysql", "-e",
                    f"SELECT seq, repeat('x', {width}) FROM seq_1_to_{rows}"]
            with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  env=dict(os.environ, MYSQL_PWD=self.token(sub="big-bot"))) as proc:
                received = lines = 0
                while True:
                    chunk = proc.stdout.read(1 << 20)
                    if not chunk:
                        break
                    received += len(chunk)
                    lines += chunk.count(b"\n")
                err = proc.stderr.read().decode()
                self.assertEqual(proc.wait(timeout=60), 0, err)
        finally:
            sampler.stop()
        self.assertEqual(lines, rows)
        self.assertEqual(received, sum(len(str(n)) for n in range(1, rows + 1)) + rows * (width + 2))
        if os.environ.get("SLUICE_SANITIZE"):
            return  # RSS means nothing under AddressSanitizer
        self.assertLess(sampler.peak_kb, 150 * 1024,
                        f"agent RSS peaked at {sampler.peak_kb} KiB relaying {received} bytes")


class InteractiveCli:
    """A program on a pseudo-terminal, as a person runs it: what it prints is read as it comes."""

    def __init__(self, args, env):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child
            try:
                os.execvpe(args[0], args, env)
            finally:
                os._exit(127)
        self.seen = b""

    def read_until(self, pattern, timeout=20):
        """Output from now on up to `pattern` (a compiled bytes regex); fails after `timeout`."""
        start, deadline = len(self.seen), time.monotonic() + timeout
        while True:
            if pattern.search(self.seen, start):
                return self.seen[start:]
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {pattern.pattern!r} within {timeout}s in:\n"
                                     f"{self.seen[start:].decode(errors='replace')}")
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    data = os.read(self.fd, 65536)
                except OSError:  # the program ended
                    data = b""
                if not data:
                    raise AssertionError("the program ended:\n" + self.seen.decode(errors="replace"))
                self.seen += data

    def send(self, text):
        os.write(self.fd, text.encode())

    def interrupt(self):
        os.kill(self.pid, signal.SIGINT)

    def close(self):
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(self.pid, 0)
        os.close(self.fd)


class RssSampler:
    """The peak resident memory of a process, sampled from /proc until stopped."""

    def __init__(self, pid, interval=0.02):
        self.pid, self.interval = pid, interval
        self.peak_kb = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def rss_kb(self):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def run(self):
        while True:
            self.peak_kb = max(self.peak_kb, self.rss_kb())
            if self.done.wait(self.interval):
                return

    def start(self):
        self.thread.start()

    def stop(self):
        self.done.set()
        self.thread.join(timeout=10)
        self.peak_kb = max(self.peak_kb, self.rss_kb())


if __name__ == "__main__":
    unittest.main()
