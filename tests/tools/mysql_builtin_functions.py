#!/usr/bin/python3
"""Generates or verifies agent/mysql/sql_builtin_functions.cc against a real MariaDB server.

The agent's statement classifier takes a call of a name MariaDB does not have built in for a call
of a stored function or UDF (which may write). This script asks the server which names are its own:

  candidates  identifiers among the strings of the server binary (the native function registry and
              the keyword table are string literals there), the names of
              INFORMATION_SCHEMA.KEYWORDS and SQL_FUNCTIONS, and the words of mysql.help_topic;
  probe       `PREPARE st FROM 'SELECT name(...)'` (prepared, never executed) in an empty database,
              with the argument forms of FORMS. Error 1305 / 1630 (FUNCTION db.name does not exist)
              means the parser took the call for a stored function's; 1064 is a syntax error;
              success or any other error (1582 wrong argument count, ...) means the server took it
              for something of its own. A name the server does not know is dropped after the plain
              forms; keywords and known names get every form.

The table keeps, for each name that no form made a stored function's call:
  whether it is a function (some form was the server's own: native functions, functions with
      keyword syntax such as CAST or TRIM, operators spelled like calls such as NOT) or a keyword
      that `(` never makes a call (every form a syntax error: reserved words, type names);
  the argument counts at which it is the server's own: all, or for a few (point, polygon, ...)
      some only, when the other plain forms reached a stored function;
  whether a space before `(` (sql_mode without IGNORE_SPACE) or backquotes around the name make the
      call a stored function's.
Names some form of which reached a stored function in another way are printed and left out (the
classifier then fails closed on them).

Usage (from the repository root):
  tests/tools/mysql_builtin_functions.py            verify the checked-in table (exit 1 if it differs)
  tests/tools/mysql_builtin_functions.py --write    regenerate it (and clang-format-14 it)
  ... --socket PATH                                 use a running server (root, no password) instead
                                                    of starting a scratch one (tests/integration/harness.py)
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "../.."))
TABLE = os.path.join(ROOT, "agent/mysql/sql_builtin_functions.cc")
STORED = (1305, 1630)
SYNTAX = 1064

# Argument forms: plain argument counts (0 to 5, and 7 for "6 or more"), then the special
# syntaxes of keyword functions.
PLAIN = ["{}()", "{}(1)", "{}(1, 1)", "{}(1, 1, 1)", "{}(1, 1, 1, 1)", "{}(1, 1, 1, 1, 1)",
         "{}(1, 1, 1, 1, 1, 1, 1)"]
FORMS = PLAIN + [
    "{}(*)", "{}(DISTINCT 1)", "{}(1 AS CHAR)", "{}(1, 1 AS CHAR)", "{}(1, CHAR)",
    "{}(1 USING utf8mb4)", "{}(DAY FROM 1)", "{}('a' IN 'b')", "{}(1 FROM 1)",
    "{}(1 FROM 1 FOR 1)", "{}(LEADING 1 FROM 1)", "{}(DAY, 1, 1)", "{}(DATE, 'USA')",
    "{}(1, INTERVAL 1 DAY)", "{}(1 ORDER BY 1)", "{}(1 SEPARATOR ',')", "{}(no_such_sequence)",
    "{}() OVER ()", "{}(1) OVER (ORDER BY 1)", "{}(1, 1) OVER (ORDER BY 1)",
    "{}(1) WITHIN GROUP (ORDER BY 1) OVER ()",
]
ALL_COUNTS = (1 << len(PLAIN)) - 1
IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def plain_index(form):
    """The PLAIN form with as many arguments as `form` passes when taken for a generic call."""
    inside = form[form.index("(") + 1:form.index(")")]
    n = inside.count(",") + 1 if inside.strip() else 0
    return min(n, 6)


def candidates(conn, binary):
    names = set()
    out = subprocess.run(["strings", "-n", "2", binary], capture_output=True, check=True).stdout
    for line in out.decode("latin1").splitlines():
        if IDENT.match(line):
            names.add(line.lower())
    with conn.cursor() as cur:
        for sql in ("SELECT word FROM information_schema.KEYWORDS",
                    "SELECT function FROM information_schema.SQL_FUNCTIONS",
                    "SELECT name FROM mysql.help_topic"):
            cur.execute(sql)
            for (text,) in cur.fetchall():
                for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text.replace("\\", "")):
                    names.add(w.lower())
    return sorted(n for n in names if IDENT.match(n))


def probe(cur, sql):
    """0 when `sql` prepares, else the server's error code."""
    import pymysql
    try:
        cur.execute("PREPARE st FROM %s", (sql,))
        return 0
    except pymysql.err.MySQLError as e:
        return e.args[0]


class Entry:
    def __init__(self, name, own, kind):
        self.name, self.own, self.kind = name, own, kind  # own: bit n of PLAIN is not stored
        self.spaced = self.quoted = False


def classify(conn, names):
    """([Entry] sorted by name, [conflict description])."""
    with conn.cursor() as cur:
        cur.execute("SELECT word FROM information_schema.KEYWORDS "
                    "UNION SELECT function FROM information_schema.SQL_FUNCTIONS")
        keywords = {w.lower() for (w,) in cur.fetchall()}
        entries, conflicts = [], []
        for name in names:
            # A plain name the server does not know goes to a stored function with any arguments;
            # only keywords have special syntaxes worth the other forms.
            if name not in keywords and all(probe(cur, "SELECT " + f.format(name)) in STORED
                                            for f in PLAIN):
                continue
            codes = {f: probe(cur, "SELECT " + f.format(name)) for f in FORMS}
            stored = [f for f in FORMS if codes[f] in STORED]
            accepted = [f for f in FORMS if codes[f] not in STORED and codes[f] != SYNTAX]
            if stored and not accepted:
                continue  # a plain name (a non-reserved keyword): a stored function's call
            if stored and not all(PLAIN[plain_index(f)] in stored for f in stored):
                conflicts.append(f"{name}: own with {accepted[0]!r}, stored with {stored[0]!r}")
                continue
            own = sum(1 << n for n, f in enumerate(PLAIN) if f not in stored)
            if not accepted and name not in keywords:
                continue
            e = Entry(name, own, "function" if accepted else "keyword")
            # Where the server's own call becomes a stored function's: with a space before `(`
            # (MariaDB's lex.h sql_functions are keywords only when `(` follows directly), or
            # with the name quoted (every keyword).
            e.spaced = any(probe(cur, "SELECT " + f.format(name).replace("(", " (", 1)) in STORED
                           for f in FORMS if f not in stored)
            e.quoted = any(probe(cur, "SELECT " + f.format(f"`{name}`")) in STORED
                           for f in FORMS if f not in stored)
            entries.append(e)
    return entries, conflicts


def render(version, entries):
    def line(e):
        flags = ["kAnyCount" if e.own == ALL_COUNTS else f"{e.own:#04x}"]
        flags += ["kStoredSpaced"] if e.spaced else []
        flags += ["kStoredQuoted"] if e.quoted else []
        flags += ["kKeyword"] if e.kind == "keyword" else []
        counts = "" if e.own == ALL_COUNTS else "  // own with " + ", ".join(
            ("6+" if n == 6 else str(n)) for n in range(len(PLAIN)) if e.own >> n & 1)
        return f'    {{"{e.name}", {" | ".join(flags)}}},{counts}\n'

    body = "".join(line(e) for e in entries)
    return f"""\
// GENERATED by tests/tools/mysql_builtin_functions.py --write: do not edit by hand (run the script
// without --write to check this file against a server). Made from MariaDB {version}: it probed
// every identifier among the strings of the server binary and every name of
// INFORMATION_SCHEMA.KEYWORDS / SQL_FUNCTIONS and mysql.help_topic with prepared (never executed)
// `SELECT name(...)` in many argument forms, and sorted the names by the server's answers.
#include <algorithm>
#include <cstdint>
#include <iterator>

#include "agent/mysql/sql_builtin_functions.h"

namespace sluice::agent::mysql {{
namespace {{

// Bits 0 to 6: with that many arguments (6: six or more) the bare call `name(...)` is the
// server's own, never a stored function's.
constexpr uint16_t kAnyCount = 0x7f;
// Written `name (...)` (whitespace or a comment before the parenthesis, sql_mode without
// IGNORE_SPACE), the call is a stored function's.
constexpr uint16_t kStoredSpaced = 1 << 7;
// Written `` `name`(...) ``, the call is a stored function's.
constexpr uint16_t kStoredQuoted = 1 << 8;
// Not a function: a keyword that `(` never makes a call (every form was a syntax error: reserved
// words, type names). The others are functions: names whose call the server takes for its own (a
// native function, a function with keyword syntax, an operator spelled like a call).
constexpr uint16_t kKeyword = 1 << 9;

struct Name {{
  absl::string_view name;
  uint16_t flags;
}};

// Sorted by name.
constexpr Name kNames[] = {{
{body}}};

}}  // namespace

bool MayCallStoredFunction(absl::string_view name, size_t arguments, CallSpelling spelling) {{
  auto it = std::lower_bound(std::begin(kNames), std::end(kNames), name,
                             [](const Name& n, absl::string_view want) {{ return n.name < want; }});
  if (it == std::end(kNames) || it->name != name) return true;
  if (spelling == CallSpelling::kSpaced && (it->flags & kStoredSpaced) != 0) return true;
  if (spelling == CallSpelling::kQuoted && (it->flags & kStoredQuoted) != 0) return true;
  return (it->flags & (1u << std::min<size_t>(arguments, 6))) == 0;
}}

}}  // namespace sluice::agent::mysql
"""


def tables_of(text):
    """The generated entries of a file (to compare without the version line)."""
    return set(re.findall(r'^    \{"([^"]*)", ([^}]*)\},', text, re.M))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help="regenerate " + TABLE)
    ap.add_argument("--socket", help="a running server's unix socket (root, no password)")
    ap.add_argument("--binary", default="/usr/sbin/mariadbd", help="the server binary")
    args = ap.parse_args()
    import pymysql

    server = work = None
    socket = args.socket
    if not socket:
        sys.path.insert(0, os.path.join(ROOT, "tests/integration"))
        from harness import MariaDbServer
        work = tempfile.TemporaryDirectory(prefix="sluice-builtins-")
        server = MariaDbServer(work.name, demo=False).start()
        socket = server.socket
    try:
        conn = pymysql.connect(unix_socket=socket, user="root", autocommit=True)
        with conn.cursor() as cur:
            cur.execute("CREATE DATABASE IF NOT EXISTS sluice_builtin_probe")
            cur.execute("USE sluice_builtin_probe")
            cur.execute("SELECT version()")
            version = cur.fetchone()[0]
        names = candidates(conn, args.binary)
        entries, conflicts = classify(conn, names)
        with conn.cursor() as cur:
            cur.execute("DROP DATABASE sluice_builtin_probe")
    finally:
        if server:
            server.stop()
            work.cleanup()
    functions = [e for e in entries if e.kind == "function"]
    print(f"MariaDB {version}: {len(names)} candidates, {len(functions)} functions "
          f"({sum(e.own != ALL_COUNTS for e in functions)} by argument count), "
          f"{len(entries) - len(functions)} keywords never called; stored when spaced "
          f"{sum(e.spaced for e in entries)}, when quoted {sum(e.quoted for e in entries)}",
          file=sys.stderr)
    for c in conflicts:  # taken for stored functions too: left out (the classifier fails closed)
        print(f"  both: {c}", file=sys.stderr)
    text = render(version, entries)
    if args.write:
        with open(TABLE, "w") as f:
            f.write(text)
        if shutil.which("clang-format-14"):
            subprocess.run(["clang-format-14", "-i", TABLE], check=True)
        print(f"wrote {TABLE}", file=sys.stderr)
        return 0
    with open(TABLE) as f:
        have = tables_of(f.read())
    want = tables_of(text)
    differ = have != want
    for entry in sorted(want - have):
        print(f"the server has {entry}", file=sys.stderr)
    for entry in sorted(have - want):
        print(f"the file has {entry}", file=sys.stderr)
    print("differs from the server" if differ else "matches the server", file=sys.stderr)
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
