"""Session recordings, end to end: a real PostgreSQL and psql through the agent; the recording
travels with the audit events, lands in the control plane's recording files, and `sluicectl
sessions replay` prints the transcript: a masked result (values masked, rows past the limit
counted), a blocked statement, an approved one. `--follow` tails a live session. A changed byte
in a recording file, or a consistently rewritten one, fails `audit verify`."""

import json
import os
import re
import sqlite3
import struct
import subprocess
import time
import unittest
import zlib

from harness import (PG_BIN, SLUICECTL, ZSTD_MAGIC, Stack, TokenIssuer, inflate_recording_block, slice_entries,
                     stored_recordings, wait_for)

POLICY = """---
kind: AccessRule
name: people
subjects: {groups: [ci, dba]}
connections: {names: [demo]}
access: admin
---
kind: ApprovalPolicy
name: dba-on-call
approvers: {groups: [dba]}
timeout: 60s
---
kind: Guardrail
name: prod-safety
connections: {names: [demo]}
rules:
  - {match: update_without_where, action: require_approval, approval: dba-on-call}
  - {match: delete_without_where, action: block}
---
kind: MaskingRule
name: pii-ids
connections: {names: [demo]}
columns: [customers.ssn]
strategy: redact
"""

SSNS = ["123-45-6789", "234-56-7890", "345-67-8901", "456-78-9012", "567-89-0123"]


class RecordingTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.stack = Stack("recording", agent_args=["--record-max-rows", "3"]).__enter__()
        cls.pg, cls.cp, cls.agent = cls.stack.pg, cls.stack.cp, cls.stack.agent
        values = ", ".join(f"({i + 1}, 'Person {i + 1}', '{ssn}')" for i, ssn in enumerate(SSNS))
        cls.pg.sql("CREATE TABLE customers (id int PRIMARY KEY, name text, ssn text);"
                   f"INSERT INTO customers VALUES {values};"
                   "CREATE TABLE items (id int PRIMARY KEY, n int); INSERT INTO items VALUES (1, 0), (2, 0);"
                   "ALTER TABLE customers OWNER TO app; ALTER TABLE items OWNER TO app", "demo")
        cls.idp = TokenIssuer()
        cls.stack.apply_and_wait(cls.stack.connection_yaml() + Stack.inline_issuer_yaml(cls.idp) + POLICY)
        cls.port = cls.agent.postgres_port()

    @classmethod
    def tearDownClass(cls):
        cls.stack.__exit__(None, None, None)

    def psql(self, sub):
        env = dict(os.environ, PGPASSWORD=self.idp.token(sub=sub, groups=["ci"]))
        return subprocess.Popen([f"{PG_BIN}/psql", f"host=127.0.0.1 port={self.port} dbname=demo user=x sslmode=require",
                                 "-X", "-At", "-v", "ON_ERROR_STOP=0"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)

    def send(self, proc, sql):
        proc.stdin.write(sql + "\n")
        proc.stdin.flush()

    def session_of(self, subject, ended=True):
        def find():
            out = json.loads(self.cp.ctl("sessions", "list", "--identity", subject, "-o", "json").stdout)
            s = out.get("sessions", [])
            return s and (not ended or s[0]["outcome"] == "closed") and s[0]["session_id"]
        return wait_for(find, timeout=20, what=f"the session of {subject}")

    def verify(self):
        return self.cp.ctl("audit", "verify", check=False)

    def test_replay_shows_masked_blocked_and_approved_statements(self):
        proc = self.psql("replay-bot")
        self.send(proc, "SELECT id, name, ssn FROM customers ORDER BY id;")
        self.send(proc, "SELECT repeat('wide-', 200) || g AS t FROM generate_series(1, 3) g;")
        self.send(proc, "DELETE FROM items;")
        self.send(proc, "UPDATE items SET n = 7;")

        def pending():
            out = json.loads(self.cp.ctl("approvals", "list", "--status", "pending", "-o", "json").stdout)
            return next((int(a["id"]) for a in out.get("approvals", []) if "n = 7" in a["statement"]), None)
        approval_id = wait_for(pending, timeout=20, what="the approval request")
        self.cp.ctl("--token", self.idp.token(sub="dora", groups=["dba"]), "approvals", "approve", str(approval_id))
        stdout, stderr = proc.communicate("SELECT 'done';\n", timeout=30)
        self.assertIn("done", stdout)
        session = self.session_of("replay-bot")

        out = self.cp.ctl("sessions", "replay", session).stdout
        # The masked result as the client saw it: masked values only, rows past the limit counted.
        self.assertIn("> SELECT id, name, ssn FROM customers ORDER BY id;", out)
        self.assertRegex(out, r"id \| name +\| ssn")
        self.assertRegex(out, r"1 +\| Person 1 +\| \[REDACTED\]")
        self.assertIn("(2 more rows", out)
        self.assertIn("< SELECT 5", out)
        self.assertRegex(out, r"= read \"SELECT id, name, ssn FROM customers ORDER BY id;\": 5 rows, [\d.]+ ms, "
                              r"masked by pii-ids \(5 rows\)")
        for ssn in SSNS:
            self.assertNotIn(ssn, out)
        # The blocked statement: the decision and the error the client got.
        self.assertRegex(out, r"> DELETE FROM items;\n.*= BLOCKED by guardrail prod-safety: \"DELETE FROM items;\" did "
                              r"not run")
        self.assertRegex(out, r"< ERROR 42501: .*prod-safety")
        # The approved one: held (the notice), approved by dora, then run.
        self.assertRegex(out, rf"< NOTICE .*approval required: request {approval_id}")
        self.assertRegex(out, rf"= approval request {approval_id} for \"UPDATE items SET n = 7;\": APPROVED by dora")
        self.assertIn("< UPDATE 2", out)
        self.assertIn("session ended (closed)", out)
        order = [out.index(s) for s in ("> SELECT id", "> DELETE", "> UPDATE", "APPROVED", "< UPDATE 2", "> SELECT 'done'")]
        self.assertEqual(order, sorted(order))
        # Times: offsets from the session start, increasing.
        offsets = [float(m) for m in re.findall(r"^ *\+(\d+\.\d+)s", out, re.M)]
        self.assertGreater(len(offsets), 5)
        self.assertEqual(offsets, sorted(offsets))
        # The stored recording holds no raw value either.
        stored = [v for (s, _), v in stored_recordings(self.cp.data_dir).items() if s == session]
        # The wide rows' slice travelled and is stored compressed (common/audit/recording.h); the
        # replay above read it.
        self.assertTrue(any(v[:4] == ZSTD_MAGIC for v in stored))
        self.assertIn("wide-wide-", out)
        self.assertIn("< SELECT 3", out)
        slices = b"".join(slice_entries(v) for v in stored)
        self.assertIn(b"wide-3", slices)
        self.assertIn(b"[REDACTED]", slices)
        for ssn in SSNS:
            self.assertNotIn(ssn.encode(), slices)

    def test_follow_tails_a_live_session(self):
        proc = self.psql("follow-bot")
        self.send(proc, "SELECT 'first' AS step;")
        session = self.session_of("follow-bot", ended=False)
        follow = subprocess.Popen([SLUICECTL, "sessions", "replay", session, "--follow"], env=self.cp.ctl_env(),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            lines = []

            def seen(text):
                def check():
                    while text not in "".join(lines):
                        line = follow.stdout.readline()
                        if not line:
                            return False
                        lines.append(line)
                    return True
                return check
            wait_for(seen("first"), timeout=20, what="the first statement in the followed transcript")
            self.send(proc, "SELECT 'second' AS step;")
            wait_for(seen("second"), timeout=20, what="a statement run after --follow started")
            self.assertIsNone(follow.poll())  # still following
            proc.communicate("", timeout=20)
            rest, _ = follow.communicate(timeout=20)  # ends by itself with the session
            self.assertIn("session ended (closed)", rest)
            self.assertEqual(follow.returncode, 0)
        finally:
            if follow.poll() is None:
                follow.kill()

    def test_a_changed_recording_file_fails_verify(self):
        proc = self.psql("tamper-bot")
        stdout, _ = proc.communicate("SELECT 'tamper-me' AS x;\nSELECT 1;\n", timeout=30)
        session = self.session_of("tamper-bot")
        wait_for(lambda: self.verify().returncode == 0, what="a verifying store")
        db = os.path.join(self.cp.data_dir, "sluice.db")
        with sqlite3.connect(db) as c:
            name, offset, length, first = c.execute(
                "SELECT file, offset, length, first_sequence FROM recording_blocks WHERE session_id = ? "
                "ORDER BY first_sequence LIMIT 1", (session,)).fetchone()
        path = os.path.join(self.cp.data_dir, "recordings", name)
        with open(path, "rb") as f:
            original = f.read()
        try:
            # One byte changed: the block's checksum names the file, the session and the sequence.
            damaged = bytearray(original)
            damaged[offset + length - 2] ^= 0x01
            with open(path, "wb") as f:
                f.write(damaged)
            r = self.verify()
            self.assertEqual(r.returncode, 1)
            self.assertRegex(r.stdout, rf"the recording of session {session} \(sequence \d+\) cannot be read: "
                                       rf"recording file {re.escape(name)} at byte {offset}: the block's checksum does not "
                                       r"match")
            # Rewritten by someone who knows the format (checksum and index fixed): the hash chain
            # no longer links at the record after it.
            block = original[offset:offset + length]
            raw = inflate_recording_block(block[8:])
            self.assertIn(b"tamper-me", raw)
            # (written as a zlib block, the format before zstd, which is still read)
            forged = zlib.compress(raw.replace(b"tamper-me", b"tamper-ME"))
            with open(path, "wb") as f:
                f.write(original + struct.pack("<II", len(forged), zlib.crc32(forged)) + forged)
            with sqlite3.connect(db) as c:
                c.execute("UPDATE recording_blocks SET offset = ?, length = ? WHERE session_id = ? AND first_sequence = ?",
                          (len(original), len(forged) + 8, session, first))
            r = self.verify()
            self.assertEqual(r.returncode, 1)
            self.assertRegex(r.stdout, r"the chain breaks at sequence \d+ \(chunk \d+\): its prev_hash does not match")
        finally:
            with open(path, "wb") as f:
                f.write(original)
            with sqlite3.connect(db) as c:
                c.execute("UPDATE recording_blocks SET offset = ?, length = ? WHERE session_id = ? AND first_sequence = ?",
                          (offset, length, session, first))
        self.assertEqual(self.verify().returncode, 0)


if __name__ == "__main__":
    unittest.main()
