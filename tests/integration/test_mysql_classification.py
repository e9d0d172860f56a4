"""The agent's MySQL statement classifier against what a real MariaDB 10.11 does.

Each case of the classification corpus (tests/agent/mysql/classification_corpus.*) and of the
built-in trap list below runs as root on a fresh copy of a small fixture schema, in the case's
sql_mode, with CLIENT_MULTI_STATEMENTS (as a client sends a COM_QUERY). The test OBSERVES what
the server did, by comparing the server's state before and after:

  privileges or users changed (mysql.global_priv, mysql.db, ... checksums)        -> dcl
  schema changed (information_schema tables, columns, indexes, constraints,
    routines, views, triggers, events; mysql.plugin / servers / func)              -> ddl
  rows changed (CHECKSUM TABLE of every user table and sequence), a file written
    into secure_file_priv, an XA transaction left prepared                         -> write
  a global variable changed, the server shut down                                  -> other
  nothing of these                                                                 -> (any class)

and checks the classifier's answer (build/tests/mysql_classify, one JSON line per case) against it:
the class must be at least as privileged as the observed effect, in the order
empty < read < other < write < ddl < dcl < unknown (unknown always passes: the classifier fails
closed), and must equal the corpus's expected class where the corpus gives one.

Each case runs a second time in a session opened with `SET SESSION TRANSACTION READ ONLY` (what
the agent does for a read grant). Effects that still happen there are checked the same way and
listed as gaps of that second line; and when a write on a probe table succeeds after the case, the
case lifted READ ONLY and the classifier must say `lifts_read_only`.

Cases the server rejects (syntax errors and others) count as whatever they did before the error
(usually nothing). Statements run with COMMIT after them (an open transaction's writes count) and
max_statement_time, so a case cannot hang the test.

The classifier takes a call of a function MariaDB does not have built in for a stored function's
(a write): its table of built-ins (agent/mysql/sql_builtin_functions.cc) is checked against this
server too, by tests/tools/mysql_builtin_functions.py.

Environment: SLUICE_MYSQL_CLASSIFY (the classifier binary), SLUICE_MYSQL_CORPUS (the corpus file),
SLUICE_MYSQL_OBSERVED (write every case's observation to this JSON-lines file, e.g. to fill in a
corpus's expected classes).
"""

import glob
import json
import os
import shutil
import subprocess
import sys
import time
import unittest

from harness import BIN_DIR, MARIADB_DEMO_SQL, MariaDbServer, Workdir

HERE = os.path.dirname(os.path.abspath(__file__))
CLASSIFIER = os.environ.get("SLUICE_MYSQL_CLASSIFY", os.path.join(BIN_DIR, "tests", "mysql_classify"))
CORPUS = os.environ.get("SLUICE_MYSQL_CORPUS") or next(
    iter(sorted(glob.glob(os.path.join(HERE, "../agent/mysql/classification_corpus.*")))), None)

ORDER = ["empty", "read", "other", "write", "ddl", "dcl", "unknown"]
RANK = {c: i for i, c in enumerate(ORDER)}
MAX_STATEMENT_SECONDS = 2

# A small fixture: objects of every kind a statement can reach, and the demo tables customers and
# orders (examples/demo-mariadb.sql). `ro_probe` is only for the READ ONLY probe.
FIXTURE_DB = "fx"
FIXTURE = [
    "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20), n INT NOT NULL DEFAULT 0) ENGINE=InnoDB",
    "INSERT INTO t VALUES (1, 'a', 10), (2, 'b', 20), (3, 'c', 30)",
    "CREATE TABLE u (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(20)) ENGINE=InnoDB",
    "INSERT INTO u (v) VALUES ('x'), ('y')",
    # Non-transactional: a write here survives ROLLBACK.
    "CREATE TABLE m (id INT PRIMARY KEY, v VARCHAR(20)) ENGINE=MyISAM",
    "INSERT INTO m VALUES (1, 'm')",
    "CREATE TABLE ro_probe (id INT AUTO_INCREMENT PRIMARY KEY) ENGINE=InnoDB",
    "CREATE VIEW vt AS SELECT id, v FROM t",
    "CREATE SEQUENCE s",
    "CREATE PROCEDURE p_read() SELECT * FROM t",
    "CREATE PROCEDURE p_write() INSERT INTO u (v) VALUES ('p')",
    "CREATE FUNCTION f_read() RETURNS INT READS SQL DATA RETURN (SELECT count(*) FROM t)",
    "CREATE FUNCTION f_write() RETURNS INT MODIFIES SQL DATA "
    "BEGIN INSERT INTO u (v) VALUES ('f'); RETURN 1; END",
    "CREATE TRIGGER t_ai AFTER INSERT ON t FOR EACH ROW INSERT INTO m VALUES (NEW.id + 100, NEW.v)",
]
FIXTURE_USERS = [
    "CREATE USER victim@'%' IDENTIFIED BY 'pw'",
    "GRANT SELECT ON fx.* TO victim@'%'",
]

# Traps from docs (design/mysql.md), without expected classes: each is checked against what the
# server does. The corpus adds its own cases (with expected classes).
BUILTIN_CASES = [
    "SELECT * FROM t",
    "SELECT 1",
    "SELECT c.name, sum(o.amount) FROM customers c JOIN orders o ON o.customer_id = c.id "
    "GROUP BY c.name",
    "UPDATE customers SET email = 'x@example.com' WHERE id = 1",
    "DELETE FROM orders WHERE id > 0 AND customer_id = 999",
    "",
    "  ; ",
    "-- just a comment\n",
    "SELECT * FROM t; SELECT * FROM u",
    "INSERT INTO t VALUES (9, 'z', 0)",
    "UPDATE t SET n = n + 1",
    "DELETE FROM u",
    "REPLACE INTO t VALUES (1, 'r', 1)",
    "INSERT INTO m VALUES (5, 'n')",
    "TRUNCATE TABLE u",
    "CREATE TABLE nt (a INT)",
    "DROP TABLE t",
    "ALTER TABLE t ADD COLUMN w INT",
    "CREATE TEMPORARY TABLE tt (a INT)",
    "CREATE INDEX iv ON t (v)",
    "RENAME TABLE u TO u2",
    "CREATE DATABASE other_db",
    "DROP VIEW vt",
    "CREATE OR REPLACE VIEW vt AS SELECT 1 AS x",
    "DROP PROCEDURE p_read",
    "CREATE USER intruder@'%'",
    "GRANT ALL ON *.* TO victim@'%'",
    "REVOKE SELECT ON fx.* FROM victim@'%'",
    "SET PASSWORD FOR victim@'%' = PASSWORD('x')",
    "DROP USER victim@'%'",
    "CREATE ROLE r1",
    "SELECT * FROM t; DROP TABLE u",
    "SELECT 1; INSERT INTO t VALUES (8, 'x', 0)",
    # Executable comments.
    "/*! DROP TABLE t */",
    "SELECT 1 /*!50000 ; DROP TABLE t */",
    "/*M! DROP TABLE t */",
    "/*!M100000 DELETE FROM t */",
    "/*M!100000 DELETE FROM t */",
    "/*!40101 SET @x = 1 */; /*!DELETE FROM u*/",
    "/*!99999 DROP TABLE t */",
    "SELECT 1 /* DROP TABLE t */",
    "SELECT 1 # ; DROP TABLE t\n",
    "SELECT 1 -- ; DROP TABLE t\n",
    "SELECT 1--1; DELETE FROM t",
    "SELECT 1 /*! , 2 */ FROM t",
    "/*!INSERT*/ INTO t VALUES (7, 'c', 0)",
    # Strings and quoting.
    "SELECT 'a\\'; DELETE FROM t; -- '",
    "SELECT \"x\"; DELETE FROM t",
    "SELECT `a;b` FROM (SELECT 1 AS `a;b`) d",
    "SELECT _utf8mb4'x', N'y', X'41', B'1'",
    # Procedures and functions with side effects.
    "CALL p_read()",
    "CALL p_write()",
    "SELECT f_read()",
    "SELECT f_write()",
    "DO f_write()",
    "SELECT NEXTVAL(s)",
    "SELECT NEXT VALUE FOR s",
    "SELECT SETVAL(s, 100)",
    "SELECT * FROM t FOR UPDATE",
    "SELECT * FROM t LOCK IN SHARE MODE",
    "SELECT * FROM t INTO OUTFILE 'out.txt'",  # relative: refused by secure_file_priv
    "SELECT * FROM t INTO OUTFILE '@FILES@/out.txt'",
    "SELECT * FROM t INTO DUMPFILE '@FILES@/dump.bin'",
    "SELECT 1 INTO @x",
    "SELECT GET_LOCK('k', 0)",
    "WITH c AS (SELECT 1 AS a) SELECT * FROM c",
    "WITH c AS (SELECT 1 AS a) INSERT INTO t SELECT 50, 'w', a FROM c",
    "INSERT INTO t SELECT id + 10, v, n FROM t",
    "CREATE TABLE ct AS SELECT * FROM t",
    "EXPLAIN SELECT * FROM t",
    "EXPLAIN DELETE FROM t",
    "ANALYZE TABLE t",
    "ANALYZE DELETE FROM t",
    "DESCRIBE t",
    "SHOW TABLES",
    "SHOW GRANTS",
    "SHOW CREATE TABLE t",
    "HELP 'SELECT'",
    "USE fx",
    # Transactions and session state.
    "BEGIN; INSERT INTO t VALUES (6, 'b', 0); ROLLBACK",
    "START TRANSACTION; DELETE FROM u; COMMIT",
    "START TRANSACTION; INSERT INTO m VALUES (6, 'nt'); ROLLBACK",
    "SET autocommit = 0; INSERT INTO t VALUES (12, 'q', 0)",
    "XA START 'x1'; INSERT INTO t VALUES (13, 'xa', 0); XA END 'x1'; XA PREPARE 'x1'",
    "SET SESSION TRANSACTION READ WRITE",
    "SET SESSION tx_read_only = 0",
    "SET @@session.tx_read_only = OFF",
    "SET tx_read_only = 0",
    "SET SESSION transaction_read_only = 0",
    "START TRANSACTION READ WRITE",
    "START TRANSACTION READ WRITE; INSERT INTO t VALUES (14, 'rw', 0); COMMIT",
    "COMMIT; SET SESSION TRANSACTION READ WRITE",
    "SET STATEMENT tx_read_only = 0 FOR INSERT INTO t VALUES (15, 'ss', 0)",
    "SET STATEMENT max_statement_time = 1 FOR SELECT 1",
    "SET sql_mode = 'ANSI_QUOTES'",
    "SET NAMES gbk",
    "SET @a = 1",
    "SET GLOBAL max_connections = 77",
    "SET GLOBAL read_only = 1",
    "SET @@global.sql_mode = ''",
    "SET PERSIST max_connections = 78",
    "PREPARE st FROM 'DELETE FROM t'; EXECUTE st",
    "SET @q = 'DROP TABLE t'; PREPARE st FROM @q; EXECUTE st",
    "EXECUTE IMMEDIATE 'DELETE FROM u'",
    "LOCK TABLES t WRITE; UNLOCK TABLES",
    "FLUSH TABLES",
    "FLUSH PRIVILEGES",
    "HANDLER t OPEN; HANDLER t READ FIRST; HANDLER t CLOSE",
    "LOAD DATA INFILE '@FILES@/data.txt' INTO TABLE t",
    "LOAD DATA LOCAL INFILE '/etc/hostname' INTO TABLE t",
    "SELECT LOAD_FILE('/etc/hostname')",
    "INSTALL SONAME 'auth_ed25519'",
    "CREATE EVENT e ON SCHEDULE EVERY 1 DAY DO DELETE FROM t",
    "CREATE TRIGGER t_bd BEFORE DELETE ON t FOR EACH ROW SET @x = 1",
    "BEGIN NOT ATOMIC INSERT INTO t VALUES (16, 'c', 0); END",
    "IF 1 THEN DELETE FROM u; END IF",
    "DELIMITER //\nSELECT 1 //",
    "SELEC 1; DELETE FROM t",
    "DELETE FROM t WHERE 1 = 0",
    "VALUES (1), (2)",
    "TABLE t",
    "KILL QUERY 999999",
    "KILL CONNECTION_ID()",
    "SELECT X'FF' AS raw, CONVERT(X'FF' USING latin1) AS l1",
    "CHECKSUM TABLE t",
    "OPTIMIZE TABLE m",
    "REPAIR TABLE m",
    "CREATE OR REPLACE SEQUENCE s2",
    "ALTER SEQUENCE s RESTART 50",
    "ALTER USER root@localhost IDENTIFIED BY 'changed'",
    "KILL 1; KILL 2; KILL 3; KILL 4; KILL 5",
    "SHUTDOWN",
]

# Observed effects and the least class that admits each.
EFFECT_CLASS = {"dcl": "dcl", "ddl": "ddl", "write": "write", "other": "other"}
# Global variables that move by themselves.
VOLATILE_GLOBALS = ("GTID_", "TIMESTAMP")


def load_corpus(path):
    """[{sql, sql_mode?, expected {key: value}, name}] from a JSON-lines (.jsonl/.ndjson) or JSON
    (a list, or {"cases": [...]}) corpus. Expected values: the classifier's output keys, given at
    the top level of a case or under "expected"/"expect" ("expected_class" is also read)."""
    with open(path) as f:
        text = f.read()
    if path.endswith((".jsonl", ".ndjson")):
        raw = [json.loads(line) for line in text.splitlines()
               if line.strip() and not line.lstrip().startswith(("//", "#"))]
    elif path.endswith(".json"):
        raw = json.loads(text)
        raw = raw.get("cases", raw) if isinstance(raw, dict) else raw
    else:
        raise AssertionError(f"corpus {path}: unknown format (expected .jsonl or .json)")
    keys = ("class", "kind", "unsafe", "lifts_read_only", "guarded", "statements", "parse_error")
    cases = []
    for i, c in enumerate(raw):
        expected = {}
        for src in (c, c.get("expected") or {}, c.get("expect") or {}):
            if isinstance(src, dict):
                expected.update({k: src[k] for k in keys if k in src})
        if "expected_class" in c:
            expected["class"] = c["expected_class"]
        cases.append({"sql": c["sql"], "sql_mode": c.get("sql_mode"), "expected": expected,
                      "mariadb_version": c.get("mariadb_version"),
                      "name": c.get("name") or c.get("id") or f"{os.path.basename(path)}:{i + 1}"})
    return cases


def classify(cases, default_sql_mode):
    """The classifier's answers, one dict per case, in order."""
    # A case's mariadb_version is the server version its expected class assumes (versioned
    # comments); without one the classifier is told none, as for a server it cannot identify.
    lines = "".join(json.dumps({"sql": c["sql"], "sql_mode": c["sql_mode"] if c["sql_mode"]
                                is not None else default_sql_mode,
                                **({"mariadb_version": c["mariadb_version"]}
                                   if c.get("mariadb_version") else {})}) + "\n" for c in cases)
    r = subprocess.run([CLASSIFIER], input=lines, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise AssertionError(f"{CLASSIFIER} exited {r.returncode}:\n{r.stderr[-2000:]}")
    out = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    if len(out) != len(cases):
        raise AssertionError(f"{CLASSIFIER}: {len(out)} answers for {len(cases)} cases")
    return out


class Observer:
    """Runs SQL as root on a MariaDB server and reports what it changed (see the module doc)."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.files_dir = os.path.join(workdir, "files")
        self.db = None
        self.restarts = 0
        self.restart_reasons = []
        self._start()

    # -- server --------------------------------------------------------------------------------

    def _start(self):
        if self.db:
            self.db.stop()
            shutil.rmtree(self.db.dir, ignore_errors=True)
            self.restarts += 1
        os.makedirs(self.files_dir, exist_ok=True)
        self.db = MariaDbServer(self.workdir, name=f"mariadb{self.restarts}", demo=False,
                                extra_args=[f"--secure-file-priv={self.files_dir}",
                                            "--event-scheduler=OFF"]).start()
        self.conn = None
        self.default_sql_mode = self._query("SELECT @@GLOBAL.sql_mode")[0][0]
        self._query("INSTALL SONAME 'auth_ed25519'")  # as on the demo server
        self._build_fixture()
        for s in FIXTURE_USERS:  # restored with the privilege tables by reset()
            self._query(s)
        self.saved_privileges = {t: self._query(f"SELECT * FROM mysql.{t}")
                                 for t in self.PRIVILEGE_TABLES}
        self.saved_globals = self._globals()
        self.baseline = self.state()

    def stop(self):
        if self.db:
            self.db.stop()

    def _connect(self, autocommit=True, observer=True):
        import pymysql
        from pymysql.constants import CLIENT
        return pymysql.connect(unix_socket=self.db.socket, user="root", autocommit=autocommit,
                               client_flag=CLIENT.MULTI_STATEMENTS, connect_timeout=10,
                               read_timeout=30, write_timeout=30, charset="utf8mb4",
                               init_command="SET SESSION group_concat_max_len = 1073741824"
                               if observer else None)

    def _query(self, sql, args=None):
        if self.conn is None or not self.conn.open:
            self.conn = self._connect()
        with self.conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall()

    def alive(self):
        return self.db.process.poll() is None

    # -- state ---------------------------------------------------------------------------------

    PRIVILEGE_TABLES = ("global_priv", "db", "tables_priv", "columns_priv", "procs_priv",
                        "proxies_priv", "roles_mapping")
    NOT_USER = "('information_schema', 'performance_schema', 'mysql', 'sys')"
    NOT_SYS = "('information_schema', 'performance_schema')"
    # The sys schema's ~100 views cost ~20 ms to open: their columns and definitions are left out.
    NOT_USER_SYS = "('information_schema', 'performance_schema', 'sys')"

    def _globals(self):
        rows = self._query("SELECT variable_name, variable_value "
                           "FROM information_schema.GLOBAL_VARIABLES")
        return {k: v for k, v in rows if not k.startswith(VOLATILE_GLOBALS)}

    # What a schema change can touch: {name: (information_schema table, columns, condition)}.
    SCHEMA_PARTS = {
        "schemata": ("SCHEMATA", "schema_name, default_character_set_name, default_collation_name", "1"),
        "tables": ("TABLES", "table_schema, table_name, table_type, engine, row_format, "
                   "table_collation, create_options, table_comment",
                   f"table_schema NOT IN {NOT_USER_SYS} AND table_schema <> 'mysql'"),
        # Names only in the system schemas (cheap: no table is opened).
        "system tables": ("TABLES", "table_schema, table_name",
                          "table_schema IN ('mysql', 'sys')"),
        "columns": ("COLUMNS", "table_schema, table_name, column_name, ordinal_position, "
                    "column_default, is_nullable, column_type, collation_name, extra, "
                    "column_comment, generation_expression", f"table_schema NOT IN {NOT_USER_SYS}"),
        "indexes": ("STATISTICS", "table_schema, table_name, index_name, seq_in_index, column_name, "
                    "non_unique, index_type", f"table_schema NOT IN {NOT_SYS}"),
        "constraints": ("TABLE_CONSTRAINTS", "constraint_schema, table_name, constraint_name, "
                        "constraint_type", f"constraint_schema NOT IN {NOT_USER}"),
        "checks": ("CHECK_CONSTRAINTS", "constraint_schema, table_name, constraint_name, check_clause",
                   f"constraint_schema NOT IN {NOT_USER}"),
        "routines": ("ROUTINES", "routine_schema, routine_name, routine_type, routine_definition, "
                     "security_type, sql_data_access, sql_mode, definer", "1"),
        "views": ("VIEWS", "table_schema, table_name, view_definition, security_type, definer",
                  f"table_schema NOT IN {NOT_USER_SYS}"),
        "triggers": ("TRIGGERS", "trigger_schema, trigger_name, event_manipulation, "
                     "event_object_table, action_statement, action_timing", "1"),
        "events": ("EVENTS", "event_schema, event_name, event_definition, status", "1"),
    }
    GLOBALS = ("GLOBAL_VARIABLES", "variable_name, variable_value",
               " AND ".join(f"variable_name NOT LIKE '{p}%'" for p in VOLATILE_GLOBALS))

    @staticmethod
    def _digest(table, columns, where):
        """A scalar subquery: the MD5 of the rows, computed by the server (one value to fetch)."""
        cols = [c.strip() for c in columns.split(",")]
        row = "CONCAT_WS(0x1f, " + ", ".join(f"IFNULL({c}, 0x00)" for c in cols) + ")"
        return (f"(SELECT MD5(GROUP_CONCAT({row} ORDER BY {columns} SEPARATOR 0x1e)) "
                f"FROM information_schema.{table} WHERE {where})")

    def state(self):
        """The server's state, in two round trips: digests of the catalog, checksums of tables."""
        parts = dict(self.SCHEMA_PARTS, globals=self.GLOBALS)
        names = list(parts)
        row = self._query(
            "SELECT " + ", ".join(self._digest(*parts[n]) for n in names) + ", "
            "(SELECT GROUP_CONCAT(CONCAT('`', table_schema, '`.`', table_name, '`')) "
            f"FROM information_schema.TABLES WHERE table_schema NOT IN {self.NOT_USER} "
            "AND table_type IN ('BASE TABLE', 'SEQUENCE'))")[0]
        digests, user_tables = dict(zip(names, row)), row[-1]
        statements = ["CHECKSUM TABLE " + ", ".join(f"mysql.{t}" for t in self.PRIVILEGE_TABLES),
                      "CHECKSUM TABLE mysql.plugin, mysql.servers, mysql.func", "XA RECOVER"]
        if user_tables:
            statements.append(f"CHECKSUM TABLE {user_tables}")
        if self.conn is None or not self.conn.open:
            self.conn = self._connect()
        results = []
        with self.conn.cursor() as cur:
            cur.execute("; ".join(statements))
            results.append(cur.fetchall())
            while cur.nextset():
                results.append(cur.fetchall())
        privileges, system, xa = results[:3]
        # {table: checksum}; diff() compares the tables there before and after (a table
        # created or dropped is a schema change).
        rows = dict(results[3]) if user_tables else {}
        files = sorted((n, os.path.getsize(os.path.join(self.files_dir, n)))
                       for n in os.listdir(self.files_dir))
        schema = {n: digests[n] for n in self.SCHEMA_PARTS}
        schema["plugins, servers, functions"] = system
        return {"ddl": schema, "dcl": {"privilege tables": privileges},
                "write": {"rows": rows, "files": files, "xa": xa},
                "other": {"globals": digests["globals"]}}

    def diff(self, before, after):
        """[(effect, detail)] between two states, the most privileged effect first."""
        out = []
        for effect in ("dcl", "ddl", "write", "other"):
            b, a = before[effect], after[effect]
            if effect == "write":  # rows: only the tables there before and after count
                changed = sorted(t for t in set(a["rows"]) & set(b["rows"])
                                 if a["rows"][t] != b["rows"][t])
                b, a = dict(b, rows=[]), dict(a, rows=changed)
            parts = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
            if not parts:
                continue
            if effect == "other":  # name the variables (before is the baseline)
                now = self._globals()
                parts = [f"{k}={self.saved_globals.get(k)!r}->{now.get(k)!r}"
                         for k in sorted(set(now) | set(self.saved_globals))
                         if now.get(k) != self.saved_globals.get(k)] or parts
            elif effect == "write" and a["rows"]:
                parts = [p if p != "rows" else "rows of " + ", ".join(a["rows"]) for p in parts]
            out.append((effect, ", ".join(parts)))
        return out

    # -- fixture and reset ---------------------------------------------------------------------

    def _build_fixture(self):
        self._query(f"CREATE DATABASE {FIXTURE_DB}")
        self._query(f"USE {FIXTURE_DB}")
        for s in FIXTURE:
            self._query(s)
        # The demo tables (customers, orders), with fixed order amounts and times.
        with open(MARIADB_DEMO_SQL) as f:
            demo = f.read()
        with self.conn.cursor() as cur:
            cur.execute(demo)
            while cur.nextset():
                pass
        self._query("UPDATE orders SET amount = id * 1.25, placed_at = '2026-01-01 00:00:00'")
        with open(os.path.join(self.files_dir, "data.txt"), "w") as f:
            f.write("20\tfile\t0\n")

    def reset(self):
        """Back to the baseline; restarts the server from scratch when that does not work."""
        try:
            # The observer's own session (opened before the case: root as it was, the globals
            # as they were) puts back the globals and the privilege tables first.
            now = self._globals()
            for k, v in self.saved_globals.items():
                if now.get(k) != v and v is not None:
                    value = int(v) if v.lstrip("-").isdigit() else v
                    self._query(f"SET GLOBAL {k} = %s", (value,))
            for t, rows in self.saved_privileges.items():
                self._query(f"DELETE FROM mysql.{t}")
                for row in rows:
                    self._query(f"INSERT INTO mysql.{t} VALUES ({', '.join(['%s'] * len(row))})", row)
            self._query("FLUSH PRIVILEGES")
            self.conn = None  # a new session with the restored globals
            self._query("SET SESSION sql_mode = %s", (self.default_sql_mode,))
            for (xid,) in [(r[3],) for r in self._query("XA RECOVER")]:
                self._query("XA ROLLBACK %s", (xid,))
            for (name,) in self._query("SELECT schema_name FROM information_schema.SCHEMATA "
                                       f"WHERE schema_name NOT IN {self.NOT_USER}"):
                self._query(f"DROP DATABASE `{name}`")
            for n in os.listdir(self.files_dir):
                os.unlink(os.path.join(self.files_dir, n))
            self._build_fixture()
            left = self.diff(self.baseline, self.state())
            if not left:
                return
            self.restart_reasons.append(f"reset left {left}")
        except Exception as e:
            self.restart_reasons.append(f"reset failed: {e!r}")
        self._start()

    # -- running a case ------------------------------------------------------------------------

    def run(self, sql, sql_mode, read_only=False):
        """Runs `sql` in a new session; returns {"error", "effects" [(effect, detail)], "lifted"}.
        Leaves the server at the baseline."""
        import pymysql
        error, lifted = None, None
        conn = self._connect(autocommit=True, observer=False)
        with conn.cursor() as cur:  # the session as the agent would open it (errors: the test's)
            cur.execute(f"USE {FIXTURE_DB}")
            cur.execute("SET SESSION sql_mode = %s", (sql_mode,))
            cur.execute(f"SET SESSION max_statement_time = {MAX_STATEMENT_SECONDS}, "
                        "lock_wait_timeout = 2, innodb_lock_wait_timeout = 2")
            if read_only:
                cur.execute("SET SESSION TRANSACTION READ ONLY")
        try:
            cur = conn.cursor()
            try:
                cur.execute(sql)
                while cur.nextset():
                    pass
            except pymysql.err.MySQLError as e:
                error = f"{e.args[0]}: {e.args[1] if len(e.args) > 1 else ''}"
            except Exception as e:  # e.g. a result pymysql cannot decode
                error = f"client: {e!r}"
            if read_only:
                lifted = self._probe_writable(conn)
            for tail in ("COMMIT", "UNLOCK TABLES"):
                try:
                    cur.execute(tail)
                except pymysql.err.MySQLError:
                    pass
        except Exception as e:  # the connection broke (KILL, SHUTDOWN, an undecodable result)
            error = error or f"connection: {e!r}"
        finally:
            try:
                conn.close()
            except Exception:
                pass
        try:
            try:
                after = self.state()
            except Exception:  # the observer's session was killed: once more in a new one
                self.conn = None
                after = self.state()
            effects = self.diff(self.baseline, after)
        except Exception as e:
            try:  # SHUTDOWN returns before the server has gone
                self.db.process.wait(timeout=5)
                effects = [("other", "the server shut down")]
                self.restart_reasons.append("the case shut the server down")
                self._start()
                return {"error": error, "effects": effects, "lifted": lifted}
            except subprocess.TimeoutExpired:  # e.g. the case dropped the mysql schema
                effects = [("dcl", f"the server's own state is broken: {e}")]
        if effects:
            self.reset()
        return {"error": error, "effects": effects, "lifted": lifted}

    @staticmethod
    def _probe_writable(conn):
        import pymysql
        try:
            with conn.cursor() as cur:
                cur.execute(f"INSERT INTO `{FIXTURE_DB}`.ro_probe VALUES ()")
                cur.execute(f"DELETE FROM `{FIXTURE_DB}`.ro_probe")
            return True
        except pymysql.err.MySQLError:
            return False


def least_class(effects):
    return max((EFFECT_CLASS[e] for e, _ in effects), key=RANK.get, default="empty")


def check(case, answer, normal, read_only):
    """Problems with the classifier's answer for a case, as strings."""
    problems = []
    got = answer.get("class")
    if got not in RANK:
        return [f"class {got!r} is not one of {ORDER}"]
    for run, label in ((normal, "as root"), (read_only, "in a READ ONLY session")):
        need = least_class(run["effects"])
        if RANK[got] < RANK[need]:
            problems.append(f"class {got} below the observed effect {need} {label}: "
                            f"{run['effects']}")
    if read_only["lifted"] and not answer.get("lifts_read_only") and got != "unknown":
        problems.append("the case lifted READ ONLY (a write succeeded after it) "
                        "but lifts_read_only is not set")
    for key, want in case["expected"].items():
        got_value = answer.get(key)
        if key == "unsafe" and isinstance(want, bool) and isinstance(got_value, str):
            # The corpus says whether it is unsafe; the classifier says why ("" when it is not).
            got_value = bool(got_value)
        if got_value != want:
            problems.append(f"{key}: expected {want!r}, got {answer.get(key)!r}")
    return problems


class MysqlClassificationTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.work = Workdir("mysql-classification")
        try:
            cls.obs = Observer(cls.work.path)
        except BaseException:
            cls.work.cleanup(keep=True)
            raise
        cls.failed = False

    @classmethod
    def tearDownClass(cls):
        cls.obs.stop()
        cls.work.cleanup(keep=cls.failed)

    def run_case(self, sql, sql_mode=None, read_only=False):
        return self.obs.run(sql, sql_mode if sql_mode is not None else self.obs.default_sql_mode,
                            read_only=read_only)

    def test_observer_sees_each_kind_of_effect(self):
        """The observation itself, on cases whose effect is beyond doubt (no classifier needed)."""
        want = {
            "SELECT * FROM t": [],
            "SELEC 1; DROP TABLE t": [],
            "INSERT INTO t VALUES (9, 'z', 0)": ["write"],
            "START TRANSACTION; DELETE FROM u": ["write"],
            "CALL p_write()": ["write"],
            f"SELECT * FROM t INTO OUTFILE '{self.obs.files_dir}/o.txt'": ["write"],
            "CREATE TABLE n (a INT)": ["ddl"],
            "/*! DROP VIEW vt */": ["ddl"],
            "GRANT ALL ON *.* TO victim@'%'": ["dcl"],
            "SET GLOBAL max_connections = 77": ["other"],
            "CREATE TEMPORARY TABLE tt (a INT)": [],
            "DROP TABLE t; CREATE USER x@'%'": ["dcl", "ddl"],
        }
        for sql, effects in want.items():
            with self.subTest(sql=sql):
                self.assertEqual([e for e, _ in self.run_case(sql)["effects"]], effects)
        self.assertEqual(self.obs.diff(self.obs.baseline, self.obs.state()), [])
        # READ ONLY stops a plain write; SET SESSION TRANSACTION READ WRITE lifts it.
        r = self.run_case("INSERT INTO t VALUES (9, 'z', 0)", read_only=True)
        self.assertEqual((r["effects"], r["lifted"]), ([], False))
        self.assertIn("1792", r["error"] or "")
        r = self.run_case("SET SESSION TRANSACTION READ WRITE", read_only=True)
        self.assertEqual((r["effects"], r["lifted"]), ([], True))

    def test_builtin_function_table_matches_the_server(self):
        """agent/mysql/sql_builtin_functions.cc (which calls are the server's own, not a stored
        function's) is what this server says (tests/tools/mysql_builtin_functions.py)."""
        if not shutil.which("strings"):
            self.skipTest("no `strings` (binutils) to list the server binary's names")
        script = os.path.join(HERE, "../tools/mysql_builtin_functions.py")
        r = subprocess.run([sys.executable, script, "--socket", self.obs.db.socket,
                            "--binary", shutil.which("mariadbd") or "/usr/sbin/mariadbd"],
                           capture_output=True, text=True, timeout=600)
        self.assertEqual(r.returncode, 0, f"regenerate with {script} --write:\n{r.stderr[-4000:]}")

    def test_classifier_agrees_with_the_server(self):
        if not os.access(CLASSIFIER, os.X_OK):
            self.skipTest(f"no classifier at {CLASSIFIER} (build the mysql_classify target)")
        cases = [{"sql": s.replace("@FILES@", self.obs.files_dir), "sql_mode": None,
                  "expected": {}, "name": f"builtin:{i + 1}"} for i, s in enumerate(BUILTIN_CASES)]
        if CORPUS:
            cases = load_corpus(CORPUS) + cases
        answers = classify(cases, self.obs.default_sql_mode)
        started = time.monotonic()
        failures, observed_log, gaps = [], [], []
        for case, answer in zip(cases, answers):
            mode = case["sql_mode"] if case["sql_mode"] is not None else self.obs.default_sql_mode
            normal = self.obs.run(case["sql"], mode)
            read_only = self.obs.run(case["sql"], mode, read_only=True)
            if read_only["effects"]:
                gaps.append(f"{case['sql']!r}: {read_only['effects']}")
            observed_log.append({"name": case["name"], "sql": case["sql"], "sql_mode": case["sql_mode"],
                                 "observed": least_class(normal["effects"]),
                                 "effects": normal["effects"], "error": normal["error"],
                                 "read_only_effects": read_only["effects"],
                                 "read_only_error": read_only["error"],
                                 "lifts_read_only": read_only["lifted"], "classifier": answer})
            problems = check(case, answer, normal, read_only)
            if problems:
                in_mode = f" (sql_mode {mode!r})" if case["sql_mode"] is not None else ""
                failures.append(f"- {case['name']}: {case['sql']!r}{in_mode}\n"
                                f"    server: effects {normal['effects']}, error {normal['error']!r}; "
                                f"READ ONLY: effects {read_only['effects']}, "
                                f"lifted {read_only['lifted']}\n"
                                f"    classifier: {json.dumps(answer)}\n"
                                + "".join(f"    {p}\n" for p in problems))
        elapsed = time.monotonic() - started
        if os.environ.get("SLUICE_MYSQL_OBSERVED"):
            with open(os.environ["SLUICE_MYSQL_OBSERVED"], "w") as f:
                for entry in observed_log:
                    f.write(json.dumps(entry) + "\n")
        print(f"\n{len(cases)} cases ({CORPUS or 'no corpus file'}), {elapsed:.1f}s, "
              f"{self.obs.restarts} server restarts {self.obs.restart_reasons}; "
              f"effects that READ ONLY did not stop: {len(gaps)}" + "".join(f"\n  {g}" for g in gaps))
        if failures:
            type(self).failed = True
            self.fail(f"{len(failures)} of {len(cases)} cases disagree with the server:\n"
                      + "".join(failures))


if __name__ == "__main__":
    unittest.main()
