"""The control plane's master key changed, and its store backed up while it runs and restored,
with a real PostgreSQL, agent and psql: what docs/deploy.md ("Rotate keys and tokens", "Back up")
tells an operator to do, done as written.

- A rotation (`--master-key-file NEW --previous-master-key-file OLD`) seals every secret again
  under the new key at start: the Connection's password still logs in, a `hash`-masked value keeps
  its token, the old key alone no longer starts the control plane (with an error that says what to
  give), and a wrong previous key changes nothing.
- `--backup-to` copies the store while the control plane runs and agents' events are stored;
  refuses a destination that holds something; the copy, put back on a stopped control plane,
  serves the policy and the sessions recorded before it, and `audit verify` passes on it. The
  agent's records stored after the backup are gone from the restored store: its next batches are
  refused with a message that says so, and after the documented step (its spool moved aside) it
  starts a new chain, which `audit verify` names as a break.
"""
import os
import re
import shutil
import subprocess
import unittest

from harness import CONTROLPLANE, Stack, TokenIssuer, wait_for

SCHEMA = """
CREATE TABLE people (id int PRIMARY KEY, email text);
INSERT INTO people VALUES (1, 'ada@example.com'), (2, 'bob@example.org');
ALTER TABLE people OWNER TO app;
"""

POLICY = """---
kind: AccessRule
name: ci
subjects: {groups: [ci]}
connections: {names: [demo]}
access: read
---
kind: MaskingRule
name: emails
connections: {names: [demo]}
columns: [people.email]
strategy: hash
"""

TOKEN_RE = re.compile(r"^tok_[0-9a-f]{16}$")


class ControlPlaneKeysAndBackupTest(unittest.TestCase):
    def setUp(self):
        self.stack = Stack("cp-keys").__enter__()
        self.addCleanup(self.stack.__exit__, None, None, None)
        self.cp, self.agent = self.stack.cp, self.stack.agent
        self.stack.pg.sql(SCHEMA, "demo")
        self.idp = TokenIssuer()
        self.stack.apply_and_wait(self.stack.connection_yaml()
                                  + Stack.inline_issuer_yaml(self.idp) + POLICY)
        self.work = self.stack.work.path
        self.old_key = os.path.join(self.cp.data_dir, "master.key")

    def emails(self):
        """The masked emails as a caller sees them through the agent (psql's exit checked)."""
        r = self.stack.psql("SELECT email FROM people ORDER BY id",
                            self.idp.token(sub="ci-bot", groups=["ci"]))
        self.assertEqual(r.returncode, 0, r.stderr)
        tokens = r.stdout.split()
        self.assertEqual(len(tokens), 2, r.stdout)
        for t in tokens:
            self.assertRegex(t, TOKEN_RE)
        return tokens

    def restart_cp(self, *args):
        self.cp.stop()
        self.cp.extra_args = list(args)
        self.cp.start()

    def start_fails(self, *args):
        """Runs the control plane with `args` on its data dir; it must exit non-zero: its output."""
        r = subprocess.run([CONTROLPLANE, "--data-dir", self.cp.data_dir, "--grpc-listen",
                            "127.0.0.1:0", "--http-listen", "127.0.0.1:0", *args],
                           capture_output=True, text=True, timeout=60)
        self.assertNotEqual(r.returncode, 0, r.stdout + r.stderr)
        return r.stdout + r.stderr

    def new_key_file(self, name):
        path = os.path.join(self.work, name)
        with open(path, "w") as f:
            f.write(os.urandom(32).hex() + "\n")
        os.chmod(path, 0o600)
        return path

    def test_rotating_the_master_key_keeps_secrets_and_tokens(self):
        before = self.emails()
        new_key = self.new_key_file("new-master.key")

        # A wrong previous key: the start stops, names the secret, and changes nothing.
        out = self.start_fails("--master-key-file", new_key,
                               "--previous-master-key-file", self.new_key_file("wrong.key"))
        self.assertIn("Connection 'demo'", out)
        self.assertIn("nothing was changed", out)
        # The same key twice is refused too.
        out = self.start_fails("--master-key-file", self.old_key,
                               "--previous-master-key-file", self.old_key)
        self.assertIn("same key", out)
        # A previous key file that is not there is named.
        out = self.start_fails("--master-key-file", new_key,
                               "--previous-master-key-file", os.path.join(self.work, "nope.key"))
        self.assertIn("nope.key does not exist", out)

        self.restart_cp("--master-key-file", new_key, "--previous-master-key-file", self.old_key)
        log = self.cp.process.output()
        self.assertRegex(log, r"sealed \d+ value\(s\) again under the new master key")
        # A new version cut under the new key: the agent gets the password from it.
        self.stack.apply_and_wait(self.stack.connection_yaml(tags="{env: rotated}")
                                  + Stack.inline_issuer_yaml(self.idp) + POLICY)
        self.assertEqual(self.emails(), before)

        # From now on the new key alone starts it; the old key alone does not, and says why.
        self.restart_cp("--master-key-file", new_key)
        self.assertEqual(len(re.findall(r"sealed \d+ value", self.cp.process.output())), 1)
        self.assertEqual(self.emails(), before)
        self.cp.stop()
        out = self.start_fails("--master-key-file", self.old_key)
        self.assertIn("cannot decrypt", out)
        self.assertIn("--previous-master-key-file", out)

    def test_online_backup_and_restore(self):
        before = self.emails()
        self.drained()
        backup = os.path.join(self.work, "backup")
        # Taken while the control plane runs and stores the agent's events.
        r = subprocess.run([CONTROLPLANE, "--data-dir", self.cp.data_dir, "--backup-to", backup],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"policy version 1\) and \d+ recording file")
        self.assertIn("keys are not in it", r.stdout)
        self.assertEqual(sorted(os.listdir(backup)), ["recordings", "sluice.db"])
        for name in ("master.key", "trail-key.pem", "admin.token"):
            self.assertFalse(os.path.exists(os.path.join(backup, name)))
        # A destination that holds something is refused, and left as it was.
        again = subprocess.run([CONTROLPLANE, "--data-dir", self.cp.data_dir,
                                "--backup-to", backup], capture_output=True, text=True, timeout=60)
        self.assertNotEqual(again.returncode, 0)
        self.assertIn("is not an empty directory", again.stderr)
        self.assertTrue(os.path.exists(os.path.join(backup, "sluice.db")))
        sessions = self.cp.ctl("sessions", "list").stdout
        self.assertIn("ci-bot", sessions)

        # Changes after the backup, lost with a restore: a policy version, and a session whose
        # events the control plane stored (the agent's spool no longer holds them).
        self.stack.apply_and_wait(self.stack.connection_yaml(tags="{env: after-backup}")
                                  + Stack.inline_issuer_yaml(self.idp) + POLICY)
        self.emails()
        self.drained()

        # Restore as docs/deploy.md says: the control plane stopped, the database's files (its
        # write-ahead log too) and the recordings replaced by the backup's, the keys kept.
        self.cp.stop()
        data = self.cp.data_dir
        for name in ("sluice.db", "sluice.db-wal", "sluice.db-shm"):
            if os.path.exists(os.path.join(data, name)):
                os.unlink(os.path.join(data, name))
        shutil.rmtree(os.path.join(data, "recordings"))
        shutil.copy2(os.path.join(backup, "sluice.db"), os.path.join(data, "sluice.db"))
        shutil.copytree(os.path.join(backup, "recordings"), os.path.join(data, "recordings"))
        self.cp.start()

        # The policy as it was at the backup (version 1, without the later tag).
        got = self.cp.ctl("get", "connection", "demo", "-o", "yaml").stdout
        self.assertNotIn("after-backup", got)
        # The sessions recorded before the backup, their recordings, and the stored trail intact.
        self.assertIn("ci-bot", self.cp.ctl("sessions", "list").stdout)
        verify = self.cp.ctl("audit", "verify").stdout
        self.assertIn("every checksum and chain link intact", verify)
        # The agent is served by the restored control plane, whose store lacks records the agent
        # no longer has: its batches are refused, with a message that says so and where to read
        # on (nothing is stored out of chain).
        self.assertEqual(self.emails(), before)
        wait_for(lambda: "holds this agent's trail only through sequence" in self.cp.process.output(),
                 timeout=30, what="the refusal of the agent's batches")
        self.assertIn('docs/deploy.md, "Restore"', self.cp.process.output())

        # What docs/deploy.md says to do: the agent's spool moved aside (kept), the agent started
        # again; it starts a new chain, and verify names the break.
        self.agent.stop()
        spool = os.path.join(self.agent.data_dir, "spool")
        os.rename(spool, spool + ".before-restore")
        self.agent.start()
        self.emails()
        self.drained()
        self.assertIn("ci-bot", self.cp.ctl("sessions", "list").stdout)
        verify = self.cp.ctl("audit", "verify", check=False)
        self.assertNotEqual(verify.returncode, 0)
        self.assertRegex(verify.stdout + verify.stderr,
                         r"agent agent-a: the chain breaks at sequence \d+ .*starts a new chain")

    def drained(self):
        """Waits until the control plane acknowledged every event the agent emitted."""
        wait_for(lambda: (a := self.agent.status()["audit"])["queued"] == 0
                 and a["in_flight"] == 0, timeout=30, what="the agent's events stored")


if __name__ == "__main__":
    unittest.main()
