"""An agent whose spool lost its tail goes on (issue 23, item 3). A machine crash can lose what
the agent had written to its spool but not yet made durable (fdatasync), after the control plane
had already received and committed it. The agent then starts again from an older chain head, and
its next events name that head in prev_hash, not the last record the control plane holds.

Here statements run through a real agent and reach the control plane; the agent is killed (-9)
and its spool is cut back as such a crash leaves it (the newest records of its segment gone, the
journal's pages lost); it is started again and runs more statements. They must reach the control
plane: at the stream's start the agent says where its chain stands, the control plane records the
resume (signed, in its own table), and `audit verify` passes and names the resume; the agent's
trail holds an `audit_chain_resumed` event. A restart of either process afterwards records no
second resume. An agent whose head is not on the stored chain at all is still refused, and the
control plane's log says what differs and what to do."""

import json
import os
import sqlite3
import struct
import subprocess
import unittest
from contextlib import closing

from harness import PG_BIN, Stack, TokenIssuer, event_fields, stored_chunks, wait_for

POLICY = """---
kind: AccessRule
name: people
subjects: {groups: [ci]}
connections: {names: [demo]}
access: read
"""


def spool_records(path):
    """[(offset after the record, payload)] of a spool segment's framed records."""
    with open(path, "rb") as f:
        data = f.read()
    out, at = [], 0
    while at + 8 <= len(data):
        size, _ = struct.unpack_from("<II", data, at)
        if size == 0 or at + 8 + size > len(data):
            break
        out.append((at + 8 + size, data[at + 8:at + 8 + size]))
        at += 8 + size
    return out


def stored_events(cp_data_dir):
    """Every stored event of the control plane: [(sequence, type, json body bytes)]."""
    out = []
    for _, blob in stored_chunks(cp_data_dir):
        at = 0
        while at < len(blob):
            size, _ = struct.unpack_from("<II", blob, at)
            f = event_fields(blob[at + 8:at + 8 + size])
            out.append((f.get(1, 0), f.get(3, b"").decode(), f.get(5, b"")))
            at += 8 + size
    return out


class ChainResumeTest(unittest.TestCase):
    def test_an_agent_whose_spool_lost_its_tail_goes_on(self):
        with Stack("chain-resume") as stack:
            cp, agent = stack.cp, stack.agent
            idp = TokenIssuer()
            stack.apply_and_wait(stack.connection_yaml() + Stack.inline_issuer_yaml(idp) + POLICY)
            db = os.path.join(cp.data_dir, "sluice.db")
            spool = os.path.join(agent.data_dir, "spool")

            def run(sub, n):
                env = dict(os.environ, PGPASSWORD=idp.token(sub=sub))
                script = "".join(f"SELECT '{sub}-{i}';\n" for i in range(n))
                r = subprocess.run([f"{PG_BIN}/psql", f"host=127.0.0.1 port={agent.postgres_port()} dbname=demo "
                                    f"user={sub} sslmode=require", "-XAtq", "-v", "ON_ERROR_STOP=1"], input=script,
                                   capture_output=True, text=True, env=env, timeout=60)
                self.assertEqual(r.returncode, 0, r.stderr)

            def sessions(sub):
                return json.loads(cp.ctl("sessions", "list", "--identity", sub, "-o", "json").stdout).get("sessions", [])

            def stored(sub, n):
                s = sessions(sub)
                return len(s) == 1 and s[0]["outcome"] == "closed" and s[0]["statements"] == n and s[0]

            def committed():
                with closing(sqlite3.connect(db)) as c:
                    return c.execute("SELECT events_committed FROM agents WHERE id = 'agent-a'").fetchone()[0]

            def restart_agent():
                os.unlink(os.path.join(agent.data_dir, "postgres.port"))  # the listener gets a new port
                agent.start()

            run("kept", 3)
            kept = wait_for(lambda: stored("kept", 3), what="the first session stored")
            run("lost", 4)
            wait_for(lambda: stored("lost", 4), what="the second session stored")
            # Everything acknowledged: the control plane holds all of it.
            wait_for(lambda: (a := agent.status()["audit"])["queued"] == 0 and a["in_flight"] == 0,
                     what="every event acknowledged")

            # A machine crash: the agent dies, and what its spool had not made durable is gone. Its
            # segment ends after the first session (the second session's records were written but
            # never synced), and the journal's mapped pages were lost.
            agent.process.kill9()
            # A batch the control plane was storing when the agent died is committed: its committed
            # sequence reads the same twice running.
            last = [None]

            def settled():
                now, before = committed(), last[0]
                last[0] = now
                return now == before and now
            held_through = wait_for(settled, interval=0.3, what="the control plane's last commit")
            segments = sorted(n for n in os.listdir(spool) if n.endswith(".seg"))
            self.assertTrue(segments, os.listdir(spool))
            cut = None  # (segment index, offset, sequence, payload) after the first session's end
            for i, name in enumerate(segments):
                for end, payload in spool_records(os.path.join(spool, name)):
                    f = event_fields(payload)
                    if f.get(4, b"").decode() == kept["session_id"] and f.get(3) == b"session_end":
                        cut = (i, end, f[1], payload)
            self.assertIsNotNone(cut, "the first session's end is not in the spool")
            index, offset, resumed_after, _ = cut
            self.assertLess(resumed_after, held_through)
            os.truncate(os.path.join(spool, segments[index]), offset)
            for name in segments[index + 1:]:
                os.unlink(os.path.join(spool, name))
            os.unlink(os.path.join(spool, "journal"))
            if os.path.exists(os.path.join(spool, "chain.head")):
                os.unlink(os.path.join(spool, "chain.head"))

            # The agent starts from the older head, and its new events go on from it.
            restart_agent()
            run("after", 2)
            try:
                wait_for(lambda: stored("after", 2), timeout=30, what="the statements after the restart stored")
            except AssertionError:
                log = cp.process.output()
                self.fail("the control plane refuses the agent's chain after its spool lost its tail"
                          + (" (prev_hash does not match)" if "prev_hash does not match" in log else "")
                          + ":\n" + "\n".join(log.splitlines()[-15:]))
            self.assertTrue(stored("lost", 4))  # what the agent lost, the control plane still holds

            # The resume is on record: the control plane's log and audit trail, `audit verify`
            # (explicitly, as a note: the chain is not broken), and the agent's own trail.
            self.assertIn("resumed", cp.process.output())
            r = cp.ctl("audit", "verify", check=False)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertIn("audit verified", r.stdout)
            self.assertIn("1 chain resume(s)", r.stdout)
            self.assertRegex(r.stdout, rf"note: agent agent-a: its chain resumed after sequence {resumed_after}: "
                                       rf".*the control plane holds the records after it through sequence {held_through}")
            v = json.loads(cp.ctl("audit", "verify", "-o", "json").stdout)
            self.assertTrue(v["ok"])
            self.assertEqual(v["chain_resumes"], 1)
            self.assertEqual(sum(f"resumed after sequence {resumed_after}" in n for n in v["notes"]), 1)
            self.assertEqual(v["anchored_agents"], 1)  # the trail is complete from genesis to head

            events = wait_for(lambda: [e for e in stored_events(cp.data_dir) if e[1] == "audit_chain_resumed"],
                              what="the agent's audit_chain_resumed event stored")
            self.assertEqual(len(events), 1)
            body = json.loads(events[0][2])
            self.assertEqual(body["resumed_after_sequence"], resumed_after)
            self.assertEqual(body["held_through_sequence"], held_through)
            self.assertGreater(events[0][0], held_through)  # numbered after what the control plane holds
            with closing(sqlite3.connect(db)) as c:
                actions = [a for (a,) in c.execute("SELECT action FROM audit_events WHERE action LIKE 'Audit.%'")]
            self.assertEqual(actions.count("Audit.chain_resumed"), 1)  # the control plane's own trail

            # Nothing more to resume: a control plane restart, then an agent restart (killed,
            # nothing cut), record no second resume, and new events go on.
            cp.stop()
            cp.start()
            run("later", 1)
            wait_for(lambda: stored("later", 1), timeout=30, what="statements after the control plane's restart")
            agent.process.kill9()
            restart_agent()
            run("again", 1)
            wait_for(lambda: stored("again", 1), timeout=30, what="statements after the agent's second restart")
            v = json.loads(cp.ctl("audit", "verify", "-o", "json").stdout)
            self.assertTrue(v["ok"], v.get("problem_list"))
            self.assertEqual(v["chain_resumes"], 1)
            self.assertEqual(len([e for e in stored_events(cp.data_dir) if e[1] == "audit_chain_resumed"]), 1)

            # An agent whose head is not on the stored chain (here: a head no stored record has)
            # is still refused, and the control plane says what differs and what to do.
            wait_for(lambda: (a := agent.status()["audit"])["queued"] == 0 and a["in_flight"] == 0,
                     what="every event acknowledged")
            agent.process.kill9()
            for name in os.listdir(spool):
                if name.endswith(".seg") or name in ("journal", "chain.head"):
                    os.unlink(os.path.join(spool, name))
            with open(os.path.join(spool, "chain.head"), "w") as f:
                f.write(f"{resumed_after} {'ab' * 32}\n")
            restart_agent()
            run("forked", 1)
            wait_for(lambda: "is not on the chain the control plane holds" in cp.process.output(),
                     what="the control plane to name the fork")
            self.assertEqual(sessions("forked"), [])  # refused, not stored
            log = cp.process.output()
            self.assertIn(f"its spool ended at sequence {resumed_after} with chain hash abababab", log)
            self.assertIn("<data-dir>/spool", log)  # what an operator can do


if __name__ == "__main__":
    unittest.main()
