"""Retention and legal hold, end to end: RetentionPolicy resources by connection tag, sessions
through the agent with real psql, `sluicectl sessions hold/release`, `sluicectl retention purge`
(dry run and real), and the background purge. Purged sessions lose their rows, events and
recording files; their events stay in the hash chain as purged records, so `audit verify` still
passes; held sessions and sessions of longer-kept connections stay."""

import json
import os
import sqlite3
import subprocess
import time
import unittest

from harness import PG_BIN, Stack, TokenIssuer, stored_chunks, wait_for

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
keep: 2s
---
kind: RetentionPolicy
name: prod-long
connections: {{tags: {{env: prod}}}}
keep: 30d
"""


class RetentionTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # The background purge is off at first (interval 0): the test drives it, then turns it on.
        cls.stack = Stack("retention", cp_args=["--retention-interval", "0s"]).__enter__()
        cls.pg, cls.cp, cls.agent = cls.stack.pg, cls.stack.cp, cls.stack.agent
        cls.idp = TokenIssuer()
        cls.stack.apply_and_wait(cls.stack.connection_yaml(tags="{env: scratch}") + Stack.inline_issuer_yaml(cls.idp) +
                                 POLICY.format(port=cls.pg.port))

    @classmethod
    def tearDownClass(cls):
        cls.stack.__exit__(None, None, None)

    def run_session(self, subject, database="demo"):
        env = dict(os.environ, PGPASSWORD=self.idp.token(sub=subject, groups=["ci"]))
        r = subprocess.run([f"{PG_BIN}/psql", f"host=127.0.0.1 port={self.agent.postgres_port()} dbname={database} "
                            "user=x sslmode=require", "-XAtc", f"SELECT 'marker-{subject}'"],
                           capture_output=True, text=True, timeout=30, env=env)
        self.assertEqual(r.returncode, 0, r.stderr)

        def closed():
            out = json.loads(self.cp.ctl("sessions", "list", "--identity", subject, "-o", "json").stdout)
            s = out.get("sessions", [])
            return s and s[0]["outcome"] == "closed" and s[0]["session_id"]
        return wait_for(closed, what=f"the session of {subject} to be stored")

    def recording_blocks(self, session):
        """The bytes of a session's recording blocks, read from the files the index names."""
        with sqlite3.connect(os.path.join(self.cp.data_dir, "sluice.db")) as c:
            rows = c.execute("SELECT file, offset, length FROM recording_blocks WHERE session_id = ?",
                             (session,)).fetchall()
        return rows

    def chunks_blob(self):
        return b"".join(records for _, records in stored_chunks(self.cp.data_dir))

    def test_purge_respects_tags_and_legal_holds_and_keeps_the_chain(self):
        gone1, held, gone2 = (self.run_session(s) for s in ("scratch-1", "scratch-held", "scratch-2"))
        kept = self.run_session("prod-1", "books")
        blocks = self.recording_blocks(gone1) + self.recording_blocks(gone2)
        self.assertTrue(blocks)

        out = self.cp.ctl("sessions", "hold", held, "--reason", "case 42").stdout
        self.assertIn(f"session {held}: under legal hold (case 42)", out)
        self.assertIn("legal hold  case 42", self.cp.ctl("sessions", "show", held).stdout)
        r = self.cp.ctl("sessions", "hold", held, check=False)  # a hold needs a reason
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("--reason", r.stderr)
        r = self.cp.ctl("sessions", "hold", "no-such-session", "--reason", "x", check=False)
        self.assertIn("session 'no-such-session' does not exist", r.stderr)

        time.sleep(2.5)  # the scratch sessions are now older than 2 s
        dry = json.loads(self.cp.ctl("retention", "purge", "--dry-run", "-o", "json").stdout)
        self.assertEqual((dry["sessions"], dry["held"]), (2, 1))
        self.assertEqual(set(dry["session_ids"]), {gone1, gone2})
        self.cp.ctl("sessions", "show", gone1)  # a dry run changes nothing

        done = json.loads(self.cp.ctl("retention", "purge", "-o", "json").stdout)
        self.assertEqual((done["sessions"], done["held"]), (2, 1))
        self.assertEqual(set(done["session_ids"]), {gone1, gone2})
        self.assertGreaterEqual(int(done["events"]), 6)  # start, statement, end of each
        self.assertGreater(int(done["recording_bytes"]), 0)
        # Gone: the sessions, their recordings, their statements' text in the event store.
        for s in (gone1, gone2):
            r = self.cp.ctl("sessions", "show", s, check=False)
            self.assertIn(f"session '{s}' does not exist", r.stderr)
        self.assertEqual(self.recording_blocks(gone1) + self.recording_blocks(gone2), [])
        for name, offset, length in blocks:  # erased in the files
            with open(os.path.join(self.cp.data_dir, "recordings", name), "rb") as f:
                f.seek(offset)
                self.assertEqual(f.read(length), bytes(length))
        blob = self.chunks_blob()
        self.assertNotIn(b"marker-scratch-1", blob)
        self.assertNotIn(b"marker-scratch-2", blob)
        self.assertIn(b"marker-scratch-held", blob)
        # Kept: the held session (it still replays) and the long-kept connection's session.
        self.assertIn("marker-scratch-held", self.cp.ctl("sessions", "replay", held).stdout)
        self.assertIn("marker-prod-1", self.cp.ctl("sessions", "replay", kept).stdout)
        # The chain still verifies, across the purged records.
        v = json.loads(self.cp.ctl("audit", "verify", "-o", "json").stdout)
        self.assertTrue(v["ok"], v)
        self.assertEqual(int(v["purged"]), int(done["events"]))
        # The purge is itself on record.
        with sqlite3.connect(os.path.join(self.cp.data_dir, "sluice.db")) as c:
            actor, action, target, detail = c.execute(
                "SELECT actor, action, target, detail FROM audit_events WHERE id = ?", (int(done["audit_id"]),)).fetchone()
        self.assertEqual((actor, action, target), ("bootstrap-admin", "Retention.purge", "2 sessions"))
        self.assertIn(gone1, detail)
        self.assertIn("1 due sessions under legal hold kept", detail)

        # Released, the held session goes with the background purge (here every second).
        self.assertIn("legal hold released", self.cp.ctl("sessions", "release", held).stdout)
        self.cp.process.stop()
        self.cp.extra_args = ["--retention-interval", "1s"]
        self.cp.start()

        def purged():
            return self.cp.ctl("sessions", "show", held, check=False).returncode != 0
        wait_for(purged, timeout=20, what="the background purge of the released session")
        self.assertIn("marker-prod-1", self.cp.ctl("sessions", "replay", kept).stdout)
        self.assertTrue(json.loads(self.cp.ctl("audit", "verify", "-o", "json").stdout)["ok"])

    def apply_file(self, text):
        path = os.path.join(self.stack.work.path, "bad.yaml")
        with open(path, "w") as f:
            f.write(text)
        return self.cp.ctl("apply", "-f", path, check=False)

    def test_bad_retention_policies_are_refused(self):
        r = self.apply_file("kind: RetentionPolicy\nname: broken\nconnections: {names: [demo]}\n")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("keep: required", r.stdout + r.stderr)
        r = self.apply_file("kind: RetentionPolicy\nname: broken\nconnections: {names: [demo]}\nkeep: soon\n")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("expected a duration such as 30s, 5m, 1h or 90d", r.stdout + r.stderr)


if __name__ == "__main__":
    unittest.main()
