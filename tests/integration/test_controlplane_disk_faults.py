"""Disk faults of the control plane's data directory, on small tmpfs volumes: a control plane whose
volume is too small (or too full) says so and exits non-zero; one whose disk fills up while
statements run through an agent stays up, refuses writes with an error naming the file and the
fault (sluicectl, /readyz, /metrics, one log line), does not acknowledge the agents' batches (the
agent keeps them and its sessions go on), and takes writes again by itself once room returns —
with every statement stored exactly once and `audit verify` passing. The same for a read-only
mount over the data directory, where new files (session recordings) cannot be written; and for an
ext4 volume shut down under it (every read and write fails with EIO, on open files too), which
comes back only once it is mounted again under a restarted control plane — with nothing lost.
(SLUICE_KEEP_LOGS=1 keeps the logs.)"""

import collections
import fcntl
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import threading
import time
import unittest

import psycopg

from harness import (CONTROLPLANE, fill, mount_for_test, mount_tmpfs, PG_BIN, Agent, ControlPlane, PostgresServer, Process, Stack, TokenIssuer,
                     Workdir, wait_for)

REFUSES = "the control plane's store refuses writes"
RESUMED = "the control plane's store takes writes again"
EXT4_IOC_SHUTDOWN = 0x8004587D  # _IOR('X', 125, __u32); flags 0: flush, then fail every I/O
POLICY = """---
kind: AccessRule
name: people
subjects: {groups: [ci]}
connections: {names: [demo]}
access: write
---
kind: ApprovalPolicy
name: dba
approvers: {groups: [dba]}
timeout: 30s
---
kind: Guardrail
name: hold-updates
connections: {names: [demo]}
rules: [{match: update_without_where, action: require_approval, approval: dba}]
"""


class Runner(threading.Thread):
    """Statements, one after the other on one session through the agent, until stopped: each text
    is unique, and `ran` lists those whose answer came back. Paced (at most one per 5 ms), so
    that the backlog a fault leaves stays a few thousand statements on any machine."""

    def __init__(self, port, token, sub):
        super().__init__(daemon=True)
        self.conn = psycopg.connect(host="127.0.0.1", port=port, dbname="demo", user=sub, password=token,
                                    sslmode="require", autocommit=True)
        self.stop, self.ran, self.error = threading.Event(), [], None

    def run(self):
        try:
            with self.conn.cursor() as cur:
                while not self.stop.wait(0.005):
                    text = f"SELECT {len(self.ran)} AS n, repeat('r', 300) AS pad"
                    cur.execute(text)
                    cur.fetchall()
                    self.ran.append(text)
        except Exception as e:  # the test asserts that none happened
            self.error = e
        finally:
            self.conn.close()

    def finish(self):
        self.stop.set()
        self.join(timeout=30)
        return self.ran


class ControlPlaneDiskFaultsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.work = Workdir("cp-disk-faults")
        cls.addClassCleanup(lambda: cls.work.cleanup(keep=False))
        cls.pg = PostgresServer(cls.work.path).start()
        cls.addClassCleanup(cls.pg.stop)
        cls.pg.sql("CREATE USER app PASSWORD 'pw'")
        cls.pg.sql("CREATE DATABASE demo OWNER app")
        cls.pg.sql("CREATE TABLE items (n int); ALTER TABLE items OWNER TO app", database="demo")
        cls.idp = TokenIssuer()

    def mount(self, path, *args):
        return mount_for_test(self, path, *args)

    def volume(self, name, size):
        """A directory `name` whose cp-data is a tmpfs of `size` (unmounted at the end)."""
        home = os.path.join(self.work.path, name)
        mount_tmpfs(self, os.path.join(home, "cp-data"), size)
        return home

    def ext4_volume(self, name):
        """A directory `name` whose cp-data is a 64 MiB ext4 file system on a loop device:
        (home, image file)."""
        home = os.path.join(self.work.path, name)
        image = os.path.join(self.work.path, f"{name}.img")
        subprocess.run(["truncate", "-s", "64M", image], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-F", image], check=True)
        try:
            self.mount(os.path.join(home, "cp-data"), "-o", "loop", image)
        except subprocess.CalledProcessError:
            self.skipTest("no loop device for an ext4 volume on this machine")
        return home, image

    def stack(self, name, home=None):
        """A control plane (on a 32 MiB tmpfs unless `home` holds its cp-data), the demo policy, and
        an agent (on the ordinary disk)."""
        home = home or self.volume(name, "32m")
        cp = ControlPlane(home).start()
        self.addCleanup(cp.stop)
        s = Stack.__new__(Stack)  # for its policy helpers only
        s.pg, s.app_password = self.pg, "pw"
        cp.apply(s.connection_yaml() + Stack.inline_issuer_yaml(self.idp) + POLICY)
        agent = Agent(home, "a", cp, cp.enroll("agent-a", "vpc=a")).start()
        self.addCleanup(agent.stop)  # before the volume's unmount
        wait_for(lambda: agent.status()["applied_version"] >= 1, what="the policy applied")
        return cp, agent

    def runner(self, agent, sub):
        r = Runner(agent.postgres_port(), self.idp.token(sub=sub), sub)
        r.start()
        self.addCleanup(r.finish)
        return r

    def psql(self, agent, sql, sub):
        return subprocess.run([f"{PG_BIN}/psql", f"host=127.0.0.1 port={agent.postgres_port()} dbname=demo "
                               f"user={sub} sslmode=require", "-XAtc", sql], capture_output=True, text=True,
                              timeout=60, env=dict(os.environ, PGPASSWORD=self.idp.token(sub=sub)))

    @staticmethod
    def statements(cp, sub):
        """The texts of the statement events the control plane holds for caller `sub`."""
        out = []
        for s in json.loads(cp.ctl("sessions", "list", "--identity", sub, "-o", "json").stdout).get("sessions", []):
            d = json.loads(cp.ctl("sessions", "show", s["session_id"], "-o", "json").stdout)
            out += [json.loads(e["json"])["statement"] for e in d.get("events", []) if e["type"] == "statement"]
        return out

    @staticmethod
    def readyz(cp):
        try:
            return cp.http_get("/readyz")
        except Exception as e:  # urllib raises on 503
            return e.code, e.read().decode()

    @staticmethod
    def metric(cp, name):
        m = re.search(rf"^{name} (\d+)$", cp.http_get("/metrics")[1], re.M)
        return int(m.group(1))

    def changed_policy(self):
        s = Stack.__new__(Stack)
        s.pg, s.app_password = self.pg, "pw"
        return (s.connection_yaml(tags="{env: test}") + Stack.inline_issuer_yaml(self.idp) + POLICY)

    def assert_refusing(self, cp, agent, runner, fault, named, reads=True):
        """While the store refuses writes: the control plane is up and says why everywhere (the
        file and what precedes the fault, matching the regex `named`, and the fault); the agent
        keeps its events (not acknowledged) and serves sessions. Without `reads` (the disk may fail
        reads as well), what sluicectl's calls read may fail too, naming the file and the fault."""
        self.assertTrue(cp.process.alive(), cp.process.output())
        status, body = self.readyz(cp)
        self.assertEqual(status, 503)
        self.assertIn(f"not ready: {REFUSES}: ", body)
        self.assertIn(fault, body)
        self.assertEqual(self.metric(cp, "sluice_store_refusing_writes"), 1)
        # A change from sluicectl gets the error, naming the file and the fault.
        r = cp.ctl("apply", "-f", self.write_policy(cp), check=False)
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertNotIn("unreachable", r.stderr)
        if reads:
            self.assertIn(f"error: {REFUSES} since ", r.stderr)
            self.assertRegex(r.stderr, f"{named}{fault}")
            self.assert_reads_go_on(cp, fault)
        else:  # apply reads the resources it changes first, which may fail too: it says why as well
            self.assertRegex(r.stderr, f"error: .*{REFUSES} since .*{named}{fault}")
        # The agent serves running and new sessions; what it sent waits unacknowledged.
        n = len(runner.ran)
        wait_for(lambda: len(runner.ran) > n + 5 or runner.error, what="the running session to go on")
        self.assertIsNone(runner.error)
        self.assertEqual(self.psql(agent, "SELECT 7", "newcomer").stdout.strip(), "7")
        # A statement held for approval cannot be: the request cannot be stored.
        r = self.psql(agent, "UPDATE items SET n = 1", "holder")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("the control plane refused the request: cannot store the request: ", r.stderr)
        self.assertIn(fault, r.stderr)
        wait_for(lambda: agent.status()["audit"]["in_flight"] > 0, what="unacknowledged events at the agent")

    def assert_reads_go_on(self, cp, fault):
        r = cp.ctl("agents", "enroll", "--name", "late", "--labels", "vpc=b", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn(REFUSES, r.stderr)
        listed = cp.ctl("agents", "list").stdout
        self.assertIn("control plane: REFUSING WRITES: ", listed)
        self.assertIn(fault, listed)
        self.assertEqual(cp.agent("agent-a")["connected"], True)

    def write_policy(self, cp):
        path = os.path.join(cp.workdir, "changed.yaml")
        with open(path, "w") as f:
            f.write(self.changed_policy())
        return path

    def assert_recovered(self, cp, agent, runner, began):
        """Writes resume by themselves; every statement is stored once and the trail verifies."""
        wait_for(lambda: self.readyz(cp)[0] == 200, timeout=15, what="the control plane ready again")
        self.assertLess(time.monotonic() - began, 15)
        self.assertEqual(self.metric(cp, "sluice_store_refusing_writes"), 0)
        self.assertEqual(self.metric(cp, "sluice_store_write_faults_total"), 1)
        self.assertNotIn("REFUSING WRITES", cp.ctl("agents", "list").stdout)
        ran = runner.finish()
        self.assertIsNone(runner.error)
        self.assertEqual(self.psql(agent, "SELECT 8", "after").stdout.strip(), "8")
        wait_for(lambda: len(self.statements(cp, "runner")) >= len(ran), timeout=30,
                 what=f"the {len(ran)} statements of the running session stored")
        stored = collections.Counter(self.statements(cp, "runner"))
        self.assertEqual(stored, collections.Counter(ran))  # each exactly once
        wait_for(lambda: self.statements(cp, "after") == ["SELECT 8"], what="the statement after")
        self.assertEqual(self.statements(cp, "newcomer"), ["SELECT 7"])
        wait_for(lambda: agent.status()["audit"]["in_flight"] == 0, what="everything acknowledged")
        r = cp.ctl("audit", "verify")
        self.assertIn("every checksum and chain link intact", r.stdout)
        # The change refused during the fault goes through now.
        self.assertIn("1 updated", cp.ctl("apply", "-f", self.write_policy(cp)).stdout)
        log = cp.process.output()
        self.assertEqual(log.count(REFUSES + ":"), 1, log)  # one warning per transition, not per batch
        self.assertEqual(log.count(RESUMED), 1, log)
        self.assertNotIn("prev_hash does not match", log)
        self.assertTrue(cp.process.alive())

    def start_failing(self, home):
        """Starts a control plane on `home`/cp-data, expected to exit: (exit code, log)."""
        p = Process([CONTROLPLANE, "--data-dir", os.path.join(home, "cp-data"), "--grpc-listen", "127.0.0.1:0",
                     "--http-listen", "127.0.0.1:0"], os.path.join(home, "controlplane.log"))
        self.addCleanup(p.stop)
        return p.proc.wait(timeout=20), p.output()

    def test_a_volume_too_small_or_too_full_at_start_is_named_and_it_exits(self):
        home = self.volume("small", "16m")
        code, log = self.start_failing(home)
        self.assertEqual(code, 1, log)
        self.assertIn(f"the volume holding {home}/cp-data is 16.0 MiB; the control plane needs at least 32.0 MiB", log)
        self.assertIn("give --data-dir a larger volume", log)

        home = self.volume("crowded", "48m")
        with open(os.path.join(home, "cp-data", "other"), "wb") as f:
            f.write(b"\0" * (40 << 20))
        code, log = self.start_failing(home)
        self.assertEqual(code, 1, log)
        self.assertRegex(log, rf"the volume holding {home}/cp-data has [\d.]+ MiB free of 48.0 MiB; the control "
                              r"plane needs at least 16.0 MiB free to start")

        home = os.path.join(self.work.path, "read-only")
        self.mount(os.path.join(home, "cp-data"), "-t", "tmpfs", "-o", "ro,size=64m", "tmpfs")
        code, log = self.start_failing(home)
        self.assertEqual(code, 1, log)
        self.assertIn(f"the volume holding {home}/cp-data is mounted read-only", log)

    def test_a_full_disk_refuses_writes_and_the_control_plane_recovers_by_itself(self):
        cp, agent = self.stack("full")
        runner = self.runner(agent, "runner")
        wait_for(lambda: len(self.statements(cp, "runner")) >= 3, what="the first statements stored")

        filler = os.path.join(cp.data_dir, "filler")
        fill(filler)
        wait_for(lambda: self.metric(cp, "sluice_store_refusing_writes") == 1, what="the store to refuse writes")
        # The first write that fails names its file: the database's write-ahead log or a recording.
        d = re.escape(cp.data_dir)
        named = (rf"cannot write (the store {d}/sluice\.db \(or its -wal or -shm file\): database or disk is full \("
                 rf"|recording file {d}/recordings/\d+\.rec: )")
        self.assert_refusing(cp, agent, runner, "No space left on device", named)
        self.assertRegex(cp.process.output(), f"{REFUSES}: {named}No space left on device")

        # Some room, but not enough (4 MiB freed at once): still refusing, and the log says why.
        os.truncate(filler, os.path.getsize(filler) - (4 << 20))
        wait_for(lambda: "writes resume with at least 8.0 MiB free" in cp.process.output(),
                 what="the reason it does not resume yet")
        self.assertEqual(self.metric(cp, "sluice_store_refusing_writes"), 1)

        os.unlink(filler)
        self.assert_recovered(cp, agent, runner, time.monotonic())

    def test_a_read_only_data_directory_refuses_writes_and_recovers_when_writable(self):
        cp, agent = self.stack("ro")
        runner = self.runner(agent, "runner")
        wait_for(lambda: len(self.statements(cp, "runner")) >= 3, what="the first statements stored")
        # `mount -o remount,ro` of the tmpfs is refused by the kernel while SQLite holds its files
        # open for writing ("mount point is busy"); a read-only bind mount over the directory makes
        # it read-only for every file opened from now on: each batch's session recordings, which
        # the control plane appends to files it opens for each batch.
        subprocess.run(["mount", "--bind", cp.data_dir, cp.data_dir], check=True)
        bound = [True]

        def unbind():
            if bound[0]:
                subprocess.run(["umount", cp.data_dir], check=True)
                bound[0] = False
        self.addCleanup(unbind)
        subprocess.run(["mount", "-o", "remount,bind,ro", cp.data_dir], check=True)
        wait_for(lambda: self.metric(cp, "sluice_store_refusing_writes") == 1, what="the store to refuse writes")
        named = rf"cannot open recording file {re.escape(cp.data_dir)}/recordings/\d+\.rec: "
        self.assert_refusing(cp, agent, runner, "Read-only file system", named)
        self.assertRegex(cp.process.output(), f"{REFUSES}: {named}Read-only file system")
        wait_for(lambda: f"the volume holding {cp.data_dir} is mounted read-only" in cp.process.output(),
                 what="the reason it does not resume yet")

        began = time.monotonic()
        unbind()
        self.assert_recovered(cp, agent, runner, began)

    def test_io_errors_on_every_file_are_survived_and_nothing_is_lost(self):
        home, image = self.ext4_volume("ext4")
        cp, agent = self.stack("ext4", home)
        runner = self.runner(agent, "runner")
        wait_for(lambda: len(self.statements(cp, "runner")) >= 3, what="the first statements stored")
        # ext4 shut down (EXT4_IOC_SHUTDOWN, as for a failing disk; what was written is flushed
        # first): from now on every read and write fails with EIO, on the files SQLite holds open
        # too. sluicectl reads the admin token and CA from the data directory: copies elsewhere.
        for attr in ("token_file", "ca_file"):
            copy = os.path.join(home, os.path.basename(getattr(cp, attr)))
            shutil.copy(getattr(cp, attr), copy)
            setattr(cp, attr, copy)
        fd = os.open(cp.data_dir, os.O_RDONLY)
        try:
            fcntl.ioctl(fd, EXT4_IOC_SHUTDOWN, struct.pack("I", 0))
        except OSError as e:
            self.skipTest(f"this kernel cannot shut an ext4 file system down: {e}")
        finally:
            os.close(fd)
        wait_for(lambda: self.metric(cp, "sluice_store_refusing_writes") == 1, what="the store to refuse writes")
        d = re.escape(cp.data_dir)
        named = (rf"cannot (write the store {d}/sluice\.db \([^)]*\): disk I/O error \("
                 rf"|(write|open) recording file {d}/recordings/\d+\.rec: )")
        self.assert_refusing(cp, agent, runner, "Input/output error", named, reads=False)
        wait_for(lambda: "still refuses writes: " in cp.process.output(), what="the reason it does not resume")

        # A shut-down file system stays so while it is mounted (as one that an error turned
        # read-only): the operator stops the control plane, checks the file system and mounts it
        # again. Meanwhile the agent keeps everything that was not acknowledged.
        cp.process.proc.send_signal(signal.SIGTERM)
        self.assertEqual(cp.process.proc.wait(timeout=20), 0, cp.process.output())
        log = cp.process.output()
        subprocess.run(["umount", cp.data_dir], check=True)
        self.assertIn(subprocess.run(["e2fsck", "-fy", image], capture_output=True).returncode, (0, 1))
        subprocess.run(["mount", "-o", "loop", image, cp.data_dir], check=True)
        cp.start()
        began = time.monotonic()
        wait_for(lambda: cp.agent("agent-a")["connected"], what="the agent connected again")
        ran = runner.finish()
        self.assertIsNone(runner.error)
        wait_for(lambda: len(self.statements(cp, "runner")) >= len(ran), timeout=30,
                 what=f"the {len(ran)} statements stored")
        self.assertEqual(collections.Counter(self.statements(cp, "runner")), collections.Counter(ran))
        self.assertEqual(self.statements(cp, "newcomer"), ["SELECT 7"])
        self.assertLess(time.monotonic() - began, 30)
        self.assertIn("every checksum and chain link intact", cp.ctl("audit", "verify").stdout)
        self.assertEqual(log.count(REFUSES + ":"), 1, log)


if __name__ == "__main__":
    unittest.main()
