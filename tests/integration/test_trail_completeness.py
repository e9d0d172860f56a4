"""`sluicectl audit verify` proves the stored audit trail complete, not only intact: sessions run
through a real agent with psql, retention purges one (the trail still verifies: a signed
tombstone), then, with the control plane stopped, someone who can write its SQLite file removes
the trail's end (the last three chunks; the last 20 events), its start (the oldest chunks up to
and including the first checkpoint), the end together with the agent's trail head, or one row of
the session index. Each time, after a restart, `audit verify` fails (exit status 1) naming the
agent or the session and what is missing; with the file put back it passes again."""

import json
import os
import sqlite3
import struct
import subprocess
import unittest
import zlib
from contextlib import closing

from harness import PG_BIN, Stack, TokenIssuer, event_fields, stored_chunks, wait_for

POLICY = """---
kind: Connection
name: books
protocol: postgres
upstream: {{host: 127.0.0.1, port: {port}, database: demo, tls: disable}}
credentials: {{username: app, password: pw}}
agents: {{vpc: a}}
tags: {{env: prod}}
---
kind: AccessRule
name: people
subjects: {{groups: [ci]}}
connections: {{names: [demo, books]}}
access: read
---
kind: RetentionPolicy
name: scratch-short
connections: {{tags: {{env: scratch}}}}
keep: 1s
---
kind: RetentionPolicy
name: prod-long
connections: {{tags: {{env: prod}}}}
keep: 30d
"""


def records(blob):
    """The record payloads of a chunk's framed records."""
    out, at = [], 0
    while at < len(blob):
        size, _ = struct.unpack_from("<II", blob, at)
        out.append(blob[at + 8:at + 8 + size])
        at += 8 + size
    return out


def frame(payloads):
    return b"".join(struct.pack("<II", len(p), zlib.crc32(p)) + p for p in payloads)


class TrailCompletenessTest(unittest.TestCase):
    def test_removed_records_and_index_rows_are_named(self):
        with Stack("trail", cp_args=["--retention-interval", "0s"]) as stack:
            cp, agent = stack.cp, stack.agent
            idp = TokenIssuer()
            stack.apply_and_wait(stack.connection_yaml(tags="{env: scratch}") + Stack.inline_issuer_yaml(idp) +
                                 POLICY.format(port=stack.pg.port))

            def run_session(subject, database, statements):
                env = dict(os.environ, PGPASSWORD=idp.token(sub=subject, groups=["ci"]))
                script = "".join(f"SELECT 'marker-{subject}-{i}';\n" for i in range(statements))
                r = subprocess.run([f"{PG_BIN}/psql", f"host=127.0.0.1 port={agent.postgres_port()} dbname={database} "
                                    "user=x sslmode=require", "-XAtq", "-v", "ON_ERROR_STOP=1"], input=script,
                                   capture_output=True, text=True, timeout=30, env=env)
                self.assertEqual(r.returncode, 0, r.stderr)

                def closed():
                    out = json.loads(cp.ctl("sessions", "list", "--identity", subject, "-o", "json").stdout)
                    s = out.get("sessions", [])
                    return s and s[0]["outcome"] == "closed" and s[0]["session_id"]
                return wait_for(closed, what=f"the session of {subject} to be stored")

            def verify():
                r = cp.ctl("audit", "verify", check=False)
                j = json.loads(cp.ctl("audit", "verify", "-o", "json", check=False).stdout)
                return r, j

            # Sessions: one on the scratch connection (retention purges it), five kept.
            scratch = run_session("scratch-1", "demo", 3)
            kept = [run_session(f"kept-{n}", "books", 30 if n == 4 else 5) for n in range(5)]

            # Retention purges the scratch session: the trail still verifies, under a signed tombstone.
            wait_for(lambda: json.loads(cp.ctl("retention", "purge", "--dry-run", "-o", "json").stdout).get("sessions")
                     == 1, what="the scratch session to be due")
            done = json.loads(cp.ctl("retention", "purge", "-o", "json").stdout)
            self.assertEqual(done["session_ids"], [scratch])
            r, v = verify()
            self.assertEqual(r.returncode, 0, r.stdout)
            self.assertIn("every checksum and chain link intact; complete: 1 trail(s) run from their signed genesis "
                          "to their signed head", r.stdout)
            self.assertIn("under 1 signed tombstone(s)", r.stdout)
            self.assertEqual((v["tombstones"], int(v["purged"])), (1, int(done["events"])))
            self.assertEqual(int(v["sessions_checked"]), 5)  # the kept ones; the purged one has no row

            # The trail at rest: the agent stopped once everything it sent is stored, then the
            # control plane; the database file is kept to be put back between tamperings.
            wait_for(lambda: agent.status()["audit"]["queued"] == 0, what="every event sent")
            agent.stop()
            records_before = int(json.loads(cp.ctl("audit", "verify", "-o", "json").stdout)["records"])
            cp.stop()
            db = os.path.join(cp.data_dir, "sluice.db")
            kept_copy = os.path.join(stack.work.path, "sluice.db.kept")
            with closing(sqlite3.connect(db)) as src, closing(sqlite3.connect(kept_copy)) as dst:
                src.backup(dst)

            def put_back():
                with closing(sqlite3.connect(kept_copy)) as src, closing(sqlite3.connect(db)) as dst:
                    src.backup(dst)

            def change(statements):
                with closing(sqlite3.connect(db)) as c:
                    for sql, p in statements:
                        c.execute(sql, p)
                    c.commit()
            chunks = stored_chunks(cp.data_dir)  # [(id, framed records)], oldest first
            self.assertGreaterEqual(len(chunks), 6)

            def tampered(*statements):
                """Puts the kept file back, changes it, starts the control plane and verifies."""
                put_back()
                change(statements)
                cp.start()
                try:
                    r, v = verify()
                finally:
                    cp.stop()
                self.assertEqual(r.returncode, 1, r.stdout)
                self.assertIn("audit verification FAILED", r.stdout)
                self.assertFalse(v["ok"])
                return r.stdout, v

            def seq(payload):
                return event_fields(payload)[1]

            # The last three chunks removed.
            last3 = [i for i, _ in chunks[-3:]]
            out, v = tampered(*[("DELETE FROM event_chunks WHERE id = ?", (i,)) for i in last3])
            newest = seq(records(chunks[-4][1])[-1])
            last = seq(records(chunks[-1][1])[-1])
            self.assertRegex(out, rf"first: agent agent-a: the end of its trail is missing: its signed head \(\S+\) ends "
                                  rf"at sequence {last} with {records_before} record\(s\), and the newest stored record "
                                  rf"is sequence {newest} with \d+ record\(s\) stored: the records after sequence "
                                  rf"{newest} through {last} were removed")

            # The last 20 events removed (whole chunks, and part of one, written back as it was framed).
            changes, left = [], 20
            for cid, blob in reversed(chunks):
                recs = records(blob)
                if len(recs) <= left:
                    changes.append(("DELETE FROM event_chunks WHERE id = ?", (cid,)))
                    left -= len(recs)
                    continue
                changes.append(("UPDATE event_chunks SET records = ? WHERE id = ?", (frame(recs[:len(recs) - left]), cid)))
                newest = seq(recs[len(recs) - left - 1])
                break
            out, v = tampered(*changes)
            self.assertRegex(out, rf"first: agent agent-a: the end of its trail is missing: .* the newest stored record "
                                  rf"is sequence {newest} with {records_before - 20} record\(s\) stored: the records "
                                  rf"after sequence {newest} through {last} were removed")

            # The oldest chunks removed, up to and including the first checkpoint.
            first_checkpoint = next(i for i, (cid, blob) in enumerate(chunks)
                                    if any(event_fields(p).get(3) == b"checkpoint" for p in records(blob)))
            gone = chunks[:first_checkpoint + 1]
            genesis = seq(records(chunks[0][1])[0])
            oldest = seq(records(chunks[first_checkpoint + 1][1])[0])
            out, v = tampered(*[("DELETE FROM event_chunks WHERE id = ?", (i,)) for i, _ in gone])
            self.assertIn(f"first: agent agent-a: the start of its trail is missing: its signed genesis is sequence "
                          f"{genesis}, and the oldest stored record is sequence {oldest}: the records from sequence "
                          f"{genesis} up to it were removed", out)

            # The end removed together with the agent's trail head.
            out, v = tampered(("DELETE FROM event_chunks WHERE id = ?", (chunks[-1][0],)),
                              ("DELETE FROM trail_heads WHERE agent_id = 'agent-a'", ()))
            self.assertRegex(out, r"first: agent agent-a: \d+ record\(s\) are stored \(sequences \d+ to \d+\) and its "
                                  r"signed trail head is missing \(it was removed\)")

            # One session's index row removed: `sessions show` no longer finds it; verify names it.
            hidden = kept[2]
            put_back()
            change([("DELETE FROM sessions WHERE session_id = ?", (hidden,))])
            cp.start()
            try:
                self.assertIn(f"session '{hidden}' does not exist", cp.ctl("sessions", "show", hidden, check=False).stderr)
                self.assertNotIn(hidden, cp.ctl("sessions", "list").stdout)
                r, v = verify()
            finally:
                cp.stop()
            self.assertEqual(r.returncode, 1, r.stdout)
            self.assertRegex(r.stdout, rf"first: session {hidden} \(agent agent-a, connection books, identity kept-2, "
                                       r"started \S+\): its row in the session index is missing \(`sessions list` and "
                                       r"`sessions show` do not show it\)")
            self.assertEqual(v["problems"], 1)

            # Put back as it was, it verifies again.
            put_back()
            cp.start()
            r, v = verify()
            self.assertEqual(r.returncode, 0, r.stdout)
            self.assertEqual(int(v["records"]), records_before)


if __name__ == "__main__":
    unittest.main()
