"""Disk faults of the agent's data directory, on small tmpfs volumes: an agent whose volume is too
small (or too full) for its preallocated audit files says so and exits non-zero; an agent whose
disk fills up stays alive, refuses new sessions with the documented error (running sessions go on
while their events can be recorded), shows the problem in its /status, in `sluicectl agents list`
and in the control plane's /metrics, and recovers by itself when room returns — with every event
of before, during and after in the control plane, one hash chain, and the failure and recovery
in the trail. With the control plane down, an agent killed while its disk is full starts again
on the full disk (refusing new sessions), and what only its journal held is written to the spool
once it can: a kill -9 right after loses nothing. (SLUICE_KEEP_LOGS=1 keeps the logs.)"""

import json
import os
import re
import subprocess
import time
import unittest

import psycopg

from harness import (AGENT, fill, mount_tmpfs, PG_BIN, Agent, ControlPlane, PostgresServer, Process, Stack, TokenIssuer,
                     Workdir, event_fields, stored_chunks, wait_for)

REFUSAL = "Sluice: the agent cannot record audit events now"
# A statement whose event (with its recording) takes ~40 KB: the spool's writes outgrow the slack
# of the last page of a segment after a few.
WIDE = "SELECT repeat('x', 2000) FROM generate_series(1, 20)"


class DiskFaultsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.work = Workdir("disk-faults")
        cls.addClassCleanup(lambda: cls.work.cleanup(keep=False))
        cls.pg = PostgresServer(cls.work.path).start()
        cls.addClassCleanup(cls.pg.stop)
        cls.pg.sql("CREATE USER app PASSWORD 'pw'")
        cls.pg.sql("CREATE DATABASE demo OWNER app")
        cls.cp = ControlPlane(cls.work.path).start()
        cls.addClassCleanup(lambda: cls.cp.stop())
        cls.idp = TokenIssuer()
        stack = Stack.__new__(Stack)  # for its policy helpers only
        stack.pg, stack.app_password = cls.pg, "pw"
        cls.cp.apply(stack.connection_yaml() + Stack.inline_issuer_yaml(cls.idp) +
                     "---\nkind: AccessRule\nname: people\nsubjects: {groups: [ci]}\n"
                     "connections: {names: [demo]}\naccess: write\n")

    def volume(self, name, size):
        """A tmpfs of `size` as the data dir of agent `name` (unmounted at the end of the test)."""
        return mount_tmpfs(self, os.path.join(self.work.path, f"agent-{name}"), size)

    def agent(self, name):
        a = Agent(self.work.path, name, self.cp, self.cp.enroll(f"agent-{name}", "vpc=a"))
        self.addCleanup(a.stop)  # before the volume's unmount
        return a

    def psql(self, agent, sql, sub):
        return subprocess.run([f"{PG_BIN}/psql", f"host=127.0.0.1 port={agent.postgres_port()} dbname=demo "
                               f"user={sub} sslmode=require", "-XAtc", sql], capture_output=True, text=True,
                              timeout=60, env=dict(os.environ, PGPASSWORD=self.idp.token(sub=sub)))

    def connect(self, agent, sub):
        conn = psycopg.connect(host="127.0.0.1", port=agent.postgres_port(), dbname="demo", user=sub,
                               password=self.idp.token(sub=sub), sslmode="require", autocommit=True)
        self.addCleanup(conn.close)
        return conn

    def statements(self, sub):
        """The statement events the control plane holds for caller `sub`."""
        n = 0
        for s in json.loads(self.cp.ctl("sessions", "list", "--identity", sub, "-o", "json").stdout
                            ).get("sessions", []):
            d = json.loads(self.cp.ctl("sessions", "show", s["session_id"], "-o", "json").stdout)
            n += sum(1 for e in d.get("events", []) if e["type"] == "statement")
        return n

    def stored_types(self):
        types = []
        for _, blob in stored_chunks(self.cp.data_dir):
            at = 0
            while at < len(blob):
                size = int.from_bytes(blob[at:at + 4], "little")
                types.append(event_fields(blob[at + 8:at + 8 + size]).get(3, b"").decode())
                at += 8 + size
        return types

    def run_until_refusing(self, agent, cur):
        """Runs WIDE on `cur` until the agent's spool cannot write; returns how many ran."""
        n, deadline = 0, time.monotonic() + 30
        while agent.status()["audit"]["accepting_sessions"]:
            self.assertLess(time.monotonic(), deadline, "the spool never failed on a full disk")
            cur.execute(WIDE)
            self.assertEqual(len(cur.fetchall()), 20)
            n += 1
        return n

    def start_failing(self, name, path):
        """Starts an agent on data dir `path` that is expected to exit; returns its exit code and log."""
        token_file = os.path.join(self.work.path, f"agent-{name}.token")
        with open(os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(self.cp.enroll(f"agent-{name}", "vpc=a") + "\n")
        p = Process([AGENT, "--control-plane", self.cp.address, "--ca-file", self.cp.ca_file,
                     "--enroll-token-file", token_file, "--data-dir", path, "--status-listen", "127.0.0.1:0",
                     "--postgres-listen", "127.0.0.1:0", "--mysql-listen", "127.0.0.1:0"], os.path.join(self.work.path, f"agent-{name}.log"))
        self.addCleanup(p.stop)
        code = p.proc.wait(timeout=20)
        return code, p.output()

    def test_a_volume_too_small_or_too_full_at_start_is_named_and_the_agent_exits(self):
        code, log = self.start_failing("small", self.volume("small", "4m"))
        self.assertEqual(code, 1, log)
        self.assertIn("the volume holding", log)
        self.assertIn("is 4.0 MiB; the audit spool needs at least 44.0 MiB", log)
        self.assertIn("give the agent's --data-dir a larger volume", log)

        # Large enough, but other files leave too little room for the journal.
        path = self.volume("crowded", "64m")
        with open(os.path.join(path, "other"), "wb") as f:
            f.write(b"\0" * (40 << 20))
        code, log = self.start_failing("crowded", path)
        self.assertEqual(code, 1, log)
        self.assertIn(f"cannot preallocate {path}/spool/journal (32.0 MiB): No space left on device", log)
        self.assertIn("free of 64.0 MiB", log)

    def test_a_full_disk_refuses_new_sessions_and_the_agent_recovers_by_itself(self):
        path = self.volume("a", "64m")
        agent = self.agent("a").start()
        wait_for(lambda: agent.status()["applied_version"] >= 1, what="the policy applied")
        steady = self.connect(agent, "steady").cursor()
        steady.execute("SELECT 1")
        ran = 1
        self.assertEqual(self.psql(agent, "SELECT 1", "before").stdout.strip(), "1")

        filler = os.path.join(path, "filler")
        fill(filler)
        ran += self.run_until_refusing(agent, steady)
        self.assertTrue(agent.process.alive(), agent.process.output())
        audit = agent.status()["audit"]
        self.assertIn("No space left on device", audit["refusing"])
        self.assertIn("write to the audit spool", audit["spool_error"])

        r = self.psql(agent, "SELECT 1", "refused")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(REFUSAL, r.stderr)
        # The session that was running goes on: its events are recorded (sent from memory).
        for _ in range(5):
            steady.execute("SELECT 2")
            self.assertEqual(steady.fetchall(), [(2,)])
            ran += 1

        def shown(state):
            a = self.cp.agent("agent-a")
            return a and a["audit_state"] == state and a
        a = wait_for(lambda: shown("refusing"), what="agents list to show the audit problem")
        self.assertIn("No space left on device", a["audit_error"])
        self.assertGreater(int(a["audit_error_since_unix_ms"]), 0)
        table = self.cp.ctl("agents", "list").stdout
        self.assertIn("AUDIT", table)
        self.assertIn("REFUSING: write to the audit spool", table)
        wait_for(lambda: "sluice_agents_audit_refusing 1\n" in self.cp.http_get("/metrics")[1],
                 what="the metric")
        self.assertIn('sluice_agent_audit_ok{agent="agent-a"} 0', self.cp.http_get("/metrics")[1])

        # A new policy arrives while the disk is full: it cannot be saved, and it is enforced all
        # the same (the running session meets the new guardrail at its next statement).
        stack = Stack.__new__(Stack)
        stack.pg, stack.app_password = self.pg, "pw"
        out = self.cp.apply(stack.connection_yaml() + Stack.inline_issuer_yaml(self.idp) +
                            "---\nkind: AccessRule\nname: people\nsubjects: {groups: [ci]}\n"
                            "connections: {names: [demo]}\naccess: write\n"
                            "---\nkind: Guardrail\nname: no-drops\nconnections: {names: [demo]}\n"
                            "rules: [{match: drop_database, action: block}]\n").stdout
        version = int(out.rsplit("policy version ", 1)[1])
        wait_for(lambda: agent.status()["applied_version"] == version, what="the new policy enforced")
        self.assertIn("could not be saved", agent.status()["snapshot_persist_error"])
        with self.assertRaises(psycopg.Error) as blocked:
            steady.execute("DROP DATABASE nothing_here")
        self.assertIn('guardrail "no-drops"', str(blocked.exception))
        ran += 1

        # Room returns: new sessions are accepted again, with nobody restarting anything.
        os.unlink(filler)
        freed = time.monotonic()
        wait_for(lambda: self.psql(agent, "SELECT 3", "after").returncode == 0, what="a new session accepted")
        self.assertLess(time.monotonic() - freed, 10)
        self.assertTrue(agent.status()["audit"]["accepting_sessions"])
        self.assertEqual(agent.status()["audit"]["unwritten"], 0)
        wait_for(lambda: shown("ok"), what="agents list to show the agent recovered")
        self.assertIn("sluice_agents_audit_refusing 0\n", self.cp.http_get("/metrics")[1])
        steady.execute("SELECT 4")
        ran += 1
        steady.connection.close()

        # Every event of before, during and after reached the control plane, in one chain.
        wait_for(lambda: self.statements("steady") == ran, what=f"the {ran} statements of the running session")
        self.assertEqual(self.statements("before"), 1)
        self.assertEqual(self.statements("after"), 1)
        # The refusal comes before the token is read: the session has no identity, only its reason.
        refused = [s for s in json.loads(self.cp.ctl("sessions", "list", "-o", "json").stdout)["sessions"]
                   if s["outcome"] == "refused" and REFUSAL in s.get("reason", "")]
        self.assertTrue(refused, "the refused session is in the trail")
        types = wait_for(lambda: (t := self.stored_types()) and "audit_spool_recovered" in t and t,
                         what="the spool's failure and recovery in the trail")
        self.assertLess(types.index("audit_spool_failed"), types.index("audit_spool_recovered"))
        r = self.cp.ctl("audit", "verify")
        self.assertIn("every checksum and chain link intact", r.stdout)
        self.assertTrue(agent.process.alive())
        self.assertNotIn("SIGBUS", agent.process.output())

    def test_an_io_error_on_the_mapped_journal_and_inflight_table_is_caught_not_a_crash(self):
        """The journal and the in-flight table are memory-mapped: a page the kernel cannot read or
        keep is a SIGBUS. Cut short under the agent (every page past the new end faults, as pages
        of a failing disk do), with the volume too full to allocate them again: the agent stays
        up, refuses new sessions, the running session goes on, and once room returns the files
        are mapped anew with nobody restarting anything."""
        path = self.volume("mapped", "64m")
        agent = self.agent("mapped").start()
        wait_for(lambda: agent.status()["applied_version"] >= 1, what="the policy applied")
        steady = self.connect(agent, "mapped-steady").cursor()
        steady.execute("SELECT 1")
        ran = 1
        # Cut short (the room they took is freed), then the volume full but for 2 MiB: segments can
        # still be written, the 32 MiB journal cannot be allocated again.
        for name in ("journal", "inflight"):
            os.truncate(os.path.join(agent.data_dir, "spool", name), 0)
        pad = os.path.join(path, "pad")
        with open(pad, "wb") as f:
            f.write(b"\0" * (2 << 20))
        filler = os.path.join(path, "filler")
        fill(filler)
        os.unlink(pad)
        steady.execute("SELECT 2")
        self.assertEqual(steady.fetchall(), [(2,)])
        ran += 1
        wait_for(lambda: not agent.status()["audit"]["accepting_sessions"], what="the agent to refuse new sessions")
        self.assertTrue(agent.process.alive(), agent.process.output())
        self.assertIn("I/O error on the memory-mapped pages of", agent.status()["audit"]["refusing"])
        # Tried again every second: the volume cannot hold the file whole again.
        refusing = wait_for(lambda: (r := agent.status()["audit"]["refusing"]) and "cannot map it anew" in r and r,
                            what="a failed attempt to map the files anew")
        self.assertIn("No space left on device", refusing)
        r = self.psql(agent, "SELECT 1", "mapped-refused")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(REFUSAL, r.stderr)
        for _ in range(3):
            steady.execute("SELECT 3")
            self.assertEqual(steady.fetchall(), [(3,)])
            ran += 1

        os.unlink(filler)
        wait_for(lambda: self.psql(agent, "SELECT 4", "mapped-after").returncode == 0, what="a new session accepted")
        self.assertTrue(agent.status()["audit"]["accepting_sessions"])
        self.assertIn("mapped anew", agent.process.output())
        for name in ("journal", "inflight"):
            self.assertGreater(os.path.getsize(os.path.join(agent.data_dir, "spool", name)), 0)
        steady.execute("SELECT 5")
        ran += 1
        steady.connection.close()
        wait_for(lambda: self.statements("mapped-steady") == ran, what=f"the {ran} statements of the running session")
        types = wait_for(lambda: (t := self.stored_types()) and "audit_spool_recovered" in t and t,
                         what="the failure and recovery in the trail")
        self.assertIn("audit_spool_failed", types)
        self.assertIn("every checksum and chain link intact", self.cp.ctl("audit", "verify").stdout)
        self.assertTrue(agent.process.alive())

    def restart(self, agent):
        """Starts `agent` again (after a kill), also on a full disk, where it cannot write its port
        files: the ports are read from its log. Returns (status port, PostgreSQL port)."""
        for f in ("status.port", "postgres.port"):
            if os.path.exists(os.path.join(agent.data_dir, f)):
                os.unlink(os.path.join(agent.data_dir, f))
        log = os.path.join(self.work.path, f"agent-{agent.name}.log")
        skip = os.path.getsize(log)
        agent.process = Process(
            [AGENT, "--control-plane", self.cp.address, "--ca-file", self.cp.ca_file, "--data-dir", agent.data_dir,
             "--status-listen", "127.0.0.1:0", "--reconnect-max-backoff", "1s", "--heartbeat-interval", "1s",
             "--postgres-listen", "127.0.0.1:0", "--mysql-listen", "127.0.0.1:0"], log)

        def ports():
            self.assertTrue(agent.process.alive(), agent.process.output()[skip:])
            out = agent.process.output()[skip:]
            status = re.search(r"status on http://[^:]+:(\d+)/status", out)
            pg = re.search(r"PostgreSQL port (\d+)", out)
            return status and pg and (int(status.group(1)), int(pg.group(1)))
        agent.status_port, port = wait_for(ports, what=f"agent {agent.name} to listen again")
        agent.postgres_port = lambda: port
        return port

    def test_with_the_control_plane_down_a_full_disk_loses_nothing_across_kills(self):
        path = self.volume("b", "64m")
        agent = self.agent("b").start()
        wait_for(lambda: agent.status()["applied_version"] >= 1, what="the policy applied")
        steady = self.connect(agent, "steady-b").cursor()
        steady.execute("SELECT 1")
        ran = 1
        self.cp.process.kill9()
        self.addCleanup(lambda: self.cp.process.alive() or self.cp.start())
        try:
            filler = os.path.join(path, "filler")
            fill(filler)
            ran += self.run_until_refusing(agent, steady)
            self.assertIn(REFUSAL, self.psql(agent, "SELECT 1", "refused-b").stderr)
            for _ in range(5):
                steady.execute("SELECT 2")
                ran += 1
            self.assertGreater(agent.status()["audit"]["unwritten"], 0)

            # Killed while its disk is full, the agent has what its spool could not take in its
            # journal only; it starts again on the full disk, refusing new sessions.
            agent.process.kill9()
            # The port files' room (freed by the restart) could take what the journal holds: the
            # disk is filled again without them, so the restart meets a full disk.
            for f in ("status.port", "postgres.port"):
                if os.path.exists(os.path.join(agent.data_dir, f)):
                    os.unlink(os.path.join(agent.data_dir, f))
            fill(filler + "-2")
            self.restart(agent)
            audit = agent.status()["audit"]
            self.assertFalse(audit["accepting_sessions"])
            self.assertIn("No space left on device", audit["refusing"])
            self.assertIn(REFUSAL, self.psql(agent, "SELECT 1", "refused-b").stderr)

            # Room returns: what the journal held is written to the spool, sessions are accepted.
            os.unlink(filler)
            os.unlink(filler + "-2")
            wait_for(lambda: (a := agent.status()["audit"])["accepting_sessions"] and a["unwritten"] == 0,
                     what="what the disk could not take written to the spool")
            self.assertEqual(self.psql(agent, "SELECT 5", "after-b").stdout.strip(), "5")
            # Killed again, the agent loses nothing: every event is on its disk.
            wait_for(lambda: agent.status()["audit"]["unspooled"] == 0, what="the last events spooled")
            agent.process.kill9()
            self.restart(agent)
        finally:
            self.cp.start()
        wait_for(lambda: self.statements("steady-b") == ran, timeout=30,
                 what=f"the {ran} statements of the running session")
        wait_for(lambda: self.statements("after-b") == 1, what="the statement after the recovery")
        r = self.cp.ctl("audit", "verify")
        self.assertIn("every checksum and chain link intact", r.stdout)


if __name__ == "__main__":
    unittest.main()
