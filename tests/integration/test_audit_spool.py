"""The audit trail's durability and tamper evidence, end to end: statements run while the control
plane is down are on the agent's disk; the agent is then killed (-9) and restarted, the control
plane comes back, and it holds exactly one event per statement, none missing, none twice. Then
`sluicectl audit verify` checks the stored hash chains, and names the record when one byte of a
stored event is changed or an event is removed."""

import hashlib
import json
import os
import re
import sqlite3
import struct
import subprocess
import time
import zlib
import unittest

import psycopg

from harness import PG_BIN, Stack, TokenIssuer, chained_payload, stored_chunks, stored_recordings, wait_for

# With the harness Stack's demo Connection and test Issuer.
POLICY = """---
kind: AccessRule
name: people
subjects: {groups: [ci]}
connections: {names: [demo]}
access: write
"""


class AuditSpoolTest(unittest.TestCase):
    def test_events_survive_control_plane_and_agent_crashes(self):
        with Stack("spool") as stack:
            cp, agent = stack.cp, stack.agent
            idp = TokenIssuer()
            stack.apply_and_wait(stack.connection_yaml() + Stack.inline_issuer_yaml(idp) + POLICY)
            ports = [agent.postgres_port()]

            def run(sub, n):
                script = "".join(f"SELECT {i} AS n;\n" for i in range(n))
                env = dict(os.environ, PGPASSWORD=idp.token(sub=sub))
                r = subprocess.run([f"{PG_BIN}/psql", f"host=127.0.0.1 port={ports[-1]} dbname=demo user={sub} "
                                    "sslmode=require", "-XAtq", "-v", "ON_ERROR_STOP=1"], input=script,
                                   capture_output=True, text=True, env=env, timeout=60)
                self.assertEqual(r.returncode, 0, r.stderr)

            def statements(sub):
                out = []
                for s in json.loads(cp.ctl("sessions", "list", "--identity", sub, "-o", "json").stdout
                                    ).get("sessions", []):
                    d = json.loads(cp.ctl("sessions", "show", s["session_id"], "-o", "json").stdout)
                    out += [json.loads(e["json"])["statement"] for e in d.get("events", [])
                            if e["type"] == "statement"]
                return out

            run("before", 10)
            wait_for(lambda: len(statements("before")) == 10, what="the first statements stored")

            # The control plane dies; statements go on and their events reach the spool.
            cp.process.kill9()
            run("while-down", 25)
            # 25 statements and the session's start and end, all on disk (the open chunk is
            # spooled at most 150 ms after its first event).
            wait_for(lambda: (a := agent.status()["audit"])["queued"] >= 27 and a["unspooled"] == 0,
                     what="the events to be spooled")
            # Then the agent dies too, and comes back from its spool.
            agent.process.kill9()
            os.unlink(os.path.join(agent.data_dir, "postgres.port"))  # the listener gets a new port
            agent.start()
            cp.start()
            wait_for(lambda: len(statements("while-down")) >= 25, timeout=60,
                     what="the spooled events to reach the control plane")
            got = statements("while-down")
            self.assertEqual(sorted(got), sorted(f"SELECT {i} AS n;" for i in range(25)))  # once each
            self.assertEqual(len(statements("before")), 10)  # nothing sent twice is stored twice
            wait_for(lambda: agent.status()["audit"]["spool_bytes"] == 0, timeout=30,
                     what="the acknowledged spool to be emptied")

            # The stored chain verifies: across the restart of the agent, the chain went on.
            r = cp.ctl("audit", "verify")
            self.assertIn("every checksum and chain link intact", r.stdout)
            ports.append(agent.postgres_port())
            run("after", 3)  # and new events still link to it
            wait_for(lambda: len(statements("after")) == 3, what="events after the restart")
            # The agent signs checkpoints of its chain with its own key, at least every second.
            last = max(e["sequence"] for s in json.loads(cp.ctl("sessions", "list", "--identity", "after", "-o",
                                                                 "json").stdout)["sessions"]
                       for e in json.loads(cp.ctl("sessions", "show", s["session_id"], "-o", "json").stdout)["events"])

            def verified():
                v = json.loads(cp.ctl("audit", "verify", "-o", "json", check=False).stdout)
                return v["ok"] and int(v["signed_through"]) >= int(last) and v
            v = wait_for(verified, what="a signed checkpoint covering the last statements")
            self.assertGreaterEqual(v["checkpoints"], 1)

            db = os.path.join(cp.data_dir, "sluice.db")

            def chunks():
                return stored_chunks(cp.data_dir)

            def records(blob):
                out, at = [], 0
                while at < len(blob):
                    size, _ = struct.unpack_from("<II", blob, at)
                    out.append(blob[at + 8:at + 8 + size])
                    at += 8 + size
                return out

            def frame(payloads):
                return b"".join(struct.pack("<II", len(p), zlib.crc32(p)) + p for p in payloads)

            def store(chunk_id, blob):
                with sqlite3.connect(db) as c:
                    c.execute("UPDATE event_chunks SET records = ? WHERE id = ?", (blob, chunk_id))

            chunk_id, blob = next((i, b) for i, b in chunks() if b"SELECT 7 AS n" in b)
            # One byte of a stored event changed: its checksum no longer matches.
            at = blob.index(b"SELECT 7 AS n") + 7
            store(chunk_id, blob[:at] + b"8" + blob[at + 1:])
            r = cp.ctl("audit", "verify", check=False)
            self.assertEqual(r.returncode, 1)
            self.assertIn("audit verification FAILED", r.stdout)
            self.assertRegex(r.stdout, rf"agent agent-a: the record after sequence \d+ \(chunk {chunk_id}, byte \d+\) is "
                                       r"damaged: .*checksum")
            # The same change with a matching checksum: the chain names the record after it.
            payloads = records(blob)
            changed = [p.replace(b"SELECT 7 AS n", b"SELECT 8 AS n") for p in payloads]
            store(chunk_id, frame(changed))
            r = cp.ctl("audit", "verify", check=False)
            self.assertRegex(r.stdout, r"the chain breaks at sequence \d+ \(chunk \d+\): its prev_hash does not match")
            # An event removed: the gap is named the same way.
            victim = next(i for i, p in enumerate(payloads) if b"SELECT 7 AS n" in p)
            store(chunk_id, frame(payloads[:victim] + payloads[victim + 1:]))
            r = cp.ctl("audit", "verify", check=False)
            self.assertRegex(r.stdout, r"the chain breaks at sequence \d+ \(chunk \d+\): its prev_hash does not match "
                                       r"the record before it .*records between them are missing")
            store(chunk_id, blob)
            self.assertEqual(cp.ctl("audit", "verify", check=False).returncode, 0)

            # Someone who rewrites the database can recompute every later hash and checksum too:
            # the chain then links, but the agent's signed checkpoints no longer match.
            # (The hash of an event covers its recording slice, kept in the recording files.)
            recordings = stored_recordings(cp.data_dir)
            originals = chunks()
            prev_old = prev_new = None
            changed = False
            for cid, b in originals:
                out = []
                for p in records(b):
                    old_hash = hashlib.sha256(chained_payload(p, recordings)).digest()
                    if prev_old is not None and prev_old != prev_new:
                        p = p.replace(b"\x32\x20" + prev_old, b"\x32\x20" + prev_new)
                    if not changed and b"SELECT 7 AS n" in p:
                        p = p.replace(b"SELECT 7 AS n", b"SELECT 8 AS n")
                        changed = True
                    prev_old, prev_new = old_hash, hashlib.sha256(chained_payload(p, recordings)).digest()
                    out.append(p)
                store(cid, frame(out))
            r = cp.ctl("audit", "verify", check=False)
            self.assertEqual(r.returncode, 1)
            self.assertNotIn("the chain breaks", r.stdout)  # the links were recomputed
            self.assertRegex(r.stdout, r"the checkpoint at sequence \d+ signed the hash of sequence \d+, and the stored "
                                       r"record no longer has that hash")
            for cid, b in originals:
                store(cid, b)
            self.assertEqual(cp.ctl("audit", "verify", check=False).returncode, 0)


    def test_a_pgbench_workload_loses_no_event_when_processes_are_killed(self):
        """pgbench inserts rows through the agent while the control plane, then the agent, is
        killed with SIGKILL and restarted. Every row in the table is a statement that ran; the
        index must hold exactly one event for each. A statement the agent had forwarded when it
        died, whose answer it never saw, has an event with outcome "unknown" (it may or may not
        have run): at most one per client connection."""
        with Stack("spool-pgbench") as stack:
            cp, agent, pg = stack.cp, stack.agent, stack.pg
            idp = TokenIssuer()
            pg.sql("CREATE TABLE loss_log (client int, r bigint PRIMARY KEY); ALTER TABLE loss_log OWNER TO app", "demo")
            stack.apply_and_wait(stack.connection_yaml() + Stack.inline_issuer_yaml(idp) + POLICY)
            script = os.path.join(stack.work.path, "insert.sql")
            with open(script, "w") as f:
                f.write("\\set r random(1, 9000000000000000)\nINSERT INTO loss_log(client, r) VALUES (:client_id, :r);\n")
            clients = 4

            def pgbench(seconds):
                env = dict(os.environ, PGPASSWORD=idp.token(sub="loss-bot", groups=["ci"]), PGSSLMODE="require")
                return subprocess.Popen([f"{PG_BIN}/pgbench", "-n", "-f", script, "-c", str(clients), "-j", "2", "-T",
                                         str(seconds), "--protocol=simple", "-h", "127.0.0.1", "-p",
                                         str(agent.postgres_port()), "-U", "loss-bot", "demo"],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

            def stored(outcome="ok"):
                """The r values of the stored INSERT events: answered ("ok") or "unknown"."""
                values = []
                for sess in json.loads(cp.ctl("sessions", "list", "--identity", "loss-bot", "--limit", "1000", "-o",
                                              "json").stdout).get("sessions", []):
                    d = json.loads(cp.ctl("sessions", "show", sess["session_id"], "-o", "json").stdout)
                    for e in d.get("events", []):
                        body = json.loads(e["json"])
                        m = re.match(r"INSERT INTO loss_log\(client, r\) VALUES \(\d+, (\d+)\);", body.get("statement", ""))
                        if e["type"] != "statement" or not m or "sqlstate" in body:
                            continue
                        if body.get("outcome", "ok") == outcome:
                            values.append(int(m.group(1)))
                return values

            def rows():
                return {int(v) for v in pg.sql("SELECT r FROM loss_log", "demo").split()}

            # The control plane is killed in the middle of the run and comes back.
            bench = pgbench(6)
            wait_for(lambda: len(rows()) >= 100, timeout=30, what="the first run under way")
            cp.process.kill9()
            time.sleep(2)  # the control plane stays down while the run goes on (the fault itself)
            cp.start()
            out, err = bench.communicate(timeout=60)
            self.assertEqual(bench.returncode, 0, err)
            self.assertIn("number of failed transactions: 0", out)
            ran = rows()
            self.assertGreater(len(ran), 200)
            wait_for(lambda: len(stored()) >= len(ran), timeout=60, what="every event of the first run")
            events = stored()
            self.assertEqual(len(events), len(set(events)))  # none twice
            self.assertEqual(set(events), ran)                 # none missing

            # Now the agent is killed in the middle of a run (its clients lose their connections).
            before = len(rows())
            bench = pgbench(8)
            wait_for(lambda: len(rows()) >= before + 100, timeout=30, what="the second run under way")
            agent.process.kill9()
            bench.communicate(timeout=60)
            os.unlink(os.path.join(agent.data_dir, "postgres.port"))
            agent.start()
            ran = rows()
            wait_for(lambda: len(stored()) + len(stored("unknown")) >= len(ran) and
                     agent.status()["audit"]["queued"] == 0, timeout=60,
                     what="the spooled events after the agent's restart")
            time.sleep(1)  # a window for a late duplicate to show (what is asserted is that none does)
            answered, unknown = stored(), stored("unknown")
            self.assertEqual(len(answered + unknown), len(set(answered + unknown)))  # none twice
            self.assertTrue(set(answered) <= ran, set(answered) - ran)
            self.assertEqual(ran - set(answered) - set(unknown), set())          # none missing
            self.assertLessEqual(len(unknown), clients)  # only what was in flight at the kill
            # The sessions the kill cut short are closed, saying why.
            sessions = json.loads(cp.ctl("sessions", "list", "--identity", "loss-bot", "--limit", "1000", "-o",
                                         "json").stdout)["sessions"]
            self.assertEqual([s for s in sessions if s["outcome"] != "closed"], [])
            self.assertEqual(sum("the agent stopped" in s.get("reason", "") for s in sessions), clients)
            # The stored chain verifies across both kills.
            self.assertEqual(cp.ctl("audit", "verify", check=False).returncode, 0)

    def test_a_statement_whose_answer_was_written_is_recorded_answered_after_a_kill(self):
        """A statement's event is journaled before its answer is written to the client: an agent
        killed (SIGKILL) right after it wrote the answer of its third statement — its own test
        fault (--test-kill-after-answers), at that exact point, which no outside kill can hit
        reliably — has that statement recorded with its answer once it is back, not as of unknown
        outcome (the client saw the answer)."""
        with Stack("spool-answered", agent_args=["--test-kill-after-answers", "3"]) as stack:
            cp, agent = stack.cp, stack.agent
            idp = TokenIssuer()
            stack.apply_and_wait(stack.connection_yaml() + Stack.inline_issuer_yaml(idp) + POLICY)
            conn = psycopg.connect(host="127.0.0.1", port=agent.postgres_port(), dbname="demo", user="answered",
                                   password=idp.token(sub="answered", groups=["ci"]), sslmode="require",
                                   autocommit=True)
            cur = conn.cursor()
            for n in (1, 2, 3):
                cur.execute(f"SELECT {n} AS answered_{n}")
                self.assertEqual(cur.fetchall(), [(n,)])  # the third answer reached the client
            wait_for(lambda: not agent.process.alive(), what="the agent to kill itself after three answers")
            conn.close()
            agent.extra_args = []
            os.unlink(os.path.join(agent.data_dir, "postgres.port"))
            agent.start()

            def outcomes():
                got = {}
                for sess in json.loads(cp.ctl("sessions", "list", "--identity", "answered", "-o",
                                              "json").stdout).get("sessions", []):
                    d = json.loads(cp.ctl("sessions", "show", sess["session_id"], "-o", "json").stdout)
                    for e in d.get("events", []):
                        body = json.loads(e["json"])
                        m = re.match(r"SELECT (\d) AS answered_", body.get("statement", ""))
                        if e["type"] == "statement" and m:
                            got[int(m.group(1))] = body.get("outcome", "ok")
                return got
            got = wait_for(lambda: len(o := outcomes()) == 3 and o, what="the three statements in the trail")
            self.assertEqual(got, {1: "ok", 2: "ok", 3: "ok"})
            self.assertEqual(cp.ctl("audit", "verify", check=False).returncode, 0)

if __name__ == "__main__":
    unittest.main()
