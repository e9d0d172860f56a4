"""Policy distribution end to end: a real control plane, two real agents and sluicectl on
loopback. Covers per-agent credentials, rollout of a change, a control-plane crash (kill -9) and
restart, an agent starting from its on-disk snapshot, and a NACK shown by `agents list`."""

import os
import socket
import sqlite3
import stat
import subprocess
import unittest

from harness import AGENT, CONTROLPLANE, SLUICECTL, Agent, ControlPlane, Workdir, wait_for

POLICY = """
kind: Connection
name: orders-a
protocol: postgres
upstream: {host: 127.0.0.1, port: 5432, database: orders}
credentials: {username: app, password: secret-for-a-only}
agents: {vpc: a}
tags: {env: prod}
---
kind: Connection
name: reports-b
protocol: postgres
upstream: {host: 127.0.0.1, port: 5433, database: reports}
credentials: {username: app, password: secret-for-b-only}
agents: {vpc: b}
tags: {env: prod}
---
kind: Issuer
name: ci
issuer: https://ci.example
audience: AUDIENCE
jwks: {inline: '{"keys": []}'}
---
kind: AccessRule
name: ci-read
subjects: {groups: [ci]}
connections: {tags: {env: prod}}
access: read
"""

MYSQL_FOR_B = """
kind: Connection
name: shop-b
protocol: mysql
upstream: {host: 127.0.0.1, port: 3306}
credentials: {username: app, password: secret-shop}
agents: {vpc: b}
"""


class PolicyDistributionTest(unittest.TestCase):
    def setUp(self):
        self.work = Workdir("policy")
        self.procs = []

    def tearDown(self):
        for p in reversed(self.procs):
            p.stop()
        failed = any(e for _, e in (self._outcome.result.errors + self._outcome.result.failures)
                     if _ is self)
        self.work.cleanup(keep=failed)

    def start(self, p):
        self.procs.append(p)
        return p.start()

    def wait_applied(self, cp, agent_id, version):
        return wait_for(lambda: (a := cp.agent(agent_id)) and a["connected"]
                        and int(a["applied_version"]) == version and a,
                        what=f"{agent_id} to ACK version {version}")

    def test_rollout_crash_restart_and_nack(self):
        cp = self.start(ControlPlane(self.work.path))
        self.assertEqual(cp.http_get("/healthz"), (200, "ok\n"))
        self.assertEqual(cp.http_get("/readyz"), (200, "ready\n"))
        # The standard gRPC health service answers SERVING (grpc.health.v1 HealthCheckResponse
        # with status = 1, i.e. the bytes 08 01) over TLS.
        import grpc
        with open(cp.ca_file, "rb") as f:
            channel = grpc.secure_channel(cp.address, grpc.ssl_channel_credentials(f.read()))
        check = channel.unary_unary("/grpc.health.v1.Health/Check")
        self.assertEqual(check(b"", timeout=10), b"\x08\x01")
        channel.close()

        agent_a = self.start(Agent(self.work.path, "a", cp, cp.enroll("agent-a", "vpc=a")))
        agent_b = self.start(Agent(self.work.path, "b", cp, cp.enroll("agent-b", "vpc=b"),
                                   protocols="postgres"))
        out = cp.apply(POLICY.replace("AUDIENCE", "sluice")).stdout
        self.assertIn("4 created", out)
        self.assertIn("policy version 1", out)

        # Each agent ACKs version 1 and holds only its own connection's credentials.
        for agent_id in ("agent-a", "agent-b"):
            self.wait_applied(cp, agent_id, 1)
        snap_a, snap_b = agent_a.snapshot_on_disk(), agent_b.snapshot_on_disk()
        self.assertIn("secret-for-a-only", snap_a)
        self.assertNotIn("secret-for-b-only", snap_a)
        self.assertIn("secret-for-b-only", snap_b)
        self.assertNotIn("secret-for-a-only", snap_b)
        for agent in (agent_a, agent_b):
            mode = stat.S_IMODE(os.stat(os.path.join(agent.data_dir, "snapshot.json")).st_mode)
            self.assertEqual(mode, 0o600)
        self.assertEqual(agent_a.status()["connections"], ["orders-a"])

        # A change that concerns both agents reaches both.
        self.assertIn("policy version 2", cp.apply(POLICY.replace("AUDIENCE", "sluice-v2")).stdout)
        for agent_id in ("agent-a", "agent-b"):
            self.wait_applied(cp, agent_id, 2)
        self.assertIn("sluice-v2", agent_a.snapshot_on_disk())
        self.assertIn("sluice-v2", agent_b.snapshot_on_disk())

        # kill -9 the control plane: agents keep their snapshot and say they are reconnecting.
        cp.process.kill9()
        for agent in (agent_a, agent_b):
            st = wait_for(lambda: (s := agent.status())["state"] == "reconnecting" and s,
                          what=f"agent {agent.name} to report reconnecting")
            self.assertEqual(st["applied_version"], 2)
            self.assertTrue(st["connections"])
        # An agent restarted while the control plane is down starts from its disk snapshot.
        agent_b.stop()
        agent_b.start()
        st = wait_for(lambda: (s := agent_b.status())["applied_version"] == 2 and s,
                      what="agent b to load its snapshot from disk")
        self.assertEqual(st["snapshot_source"], "disk")
        self.assertEqual(st["connections"], ["reports-b"])
        self.assertNotEqual(st["state"], "connected")

        # Restart the control plane on the same port: both agents re-sync on their own.
        cp.start()
        for agent_id in ("agent-a", "agent-b"):
            self.wait_applied(cp, agent_id, 2)
        for agent in (agent_a, agent_b):
            wait_for(lambda: agent.status()["state"] == "connected",
                     what=f"agent {agent.name} to report connected")
        self.assertEqual(agent_b.status()["snapshot_source"], "control-plane")

        # A connection agent b cannot serve: b NACKs, keeps version 2, and agents list says why.
        self.assertIn("policy version 3", cp.apply(MYSQL_FOR_B, "mysql.yaml").stdout)
        b = wait_for(lambda: (a := cp.agent("agent-b"))["last_nack_error"] and a,
                     what="agent b to NACK version 3")
        self.assertEqual(int(b["last_nack_version"]), 3)
        self.assertIn("Connection shop-b: protocol mysql is not supported by this agent",
                      b["last_nack_error"])
        self.assertEqual(int(b["applied_version"]), 2)
        self.assertNotIn("shop-b", agent_b.snapshot_on_disk())
        table = cp.ctl("agents", "list").stdout
        self.assertIn("v3: Connection shop-b: protocol mysql is not supported", table)
        # Agent a is not concerned by shop-b: it was sent nothing new and stays at version 2.
        a = cp.agent("agent-a")
        self.assertEqual(int(a["applied_version"]), 2)
        self.assertEqual(int(a["desired_version"]), 2)

        # Removing the bad connection heals agent b: it ACKs version 4 and the NACK clears.
        self.assertIn("policy version 4", cp.ctl("delete", "connection", "shop-b").stdout)
        b = self.wait_applied(cp, "agent-b", 4)
        self.assertEqual(b["last_nack_error"], "")

        # Every admin call was audited in the control plane's store.
        db = sqlite3.connect(os.path.join(cp.data_dir, "sluice.db"))
        rows = db.execute("SELECT action, outcome FROM audit_events").fetchall()
        db.close()
        self.assertEqual(sum(1 for r in rows if r == ("AdminService.Apply", "ok")), 3)
        self.assertIn(("AdminService.Delete", "ok"), rows)
        self.assertEqual(sum(1 for r in rows if r == ("AdminService.EnrollAgent", "ok")), 2)
        self.assertEqual(sum(1 for r in rows if r == ("AgentService.Enroll", "ok")), 2)

    def test_port_in_use_is_a_clear_error(self):
        # The HTTP port is taken: the control plane says so and exits with an error, after its
        # background threads stopped (it used to abort with std::terminate).
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            r = subprocess.run(
                [CONTROLPLANE, "--data-dir", os.path.join(self.work.path, "busy"),
                 "--grpc-listen", "127.0.0.1:0", "--http-listen", f"127.0.0.1:{port}"],
                capture_output=True, text=True, timeout=60)
        self.assertGreater(r.returncode, 0, r.stderr)
        self.assertIn(str(port), r.stderr)
        self.assertNotIn("terminate called", r.stderr)

    def test_cli_errors_and_secrets(self):
        cp = self.start(ControlPlane(self.work.path))
        cp.apply(POLICY.replace("AUDIENCE", "sluice"))

        # Secrets are encrypted at rest and redacted on get.
        db = sqlite3.connect(os.path.join(cp.data_dir, "sluice.db"))
        blobs = b"".join(bytes(r[0] or b"") + bytes(r[1] or b"")
                         for r in db.execute("SELECT spec, sealed_secret FROM resources"))
        db.close()
        self.assertNotIn(b"secret-for-a-only", blobs)
        yaml_out = cp.ctl("get", "connection", "orders-a", "-o", "yaml").stdout
        self.assertIn("password: (redacted)", yaml_out)
        self.assertNotIn("secret-for-a-only", yaml_out)
        self.assertNotIn("secret-for-a-only", cp.ctl("get", "all", "-o", "json").stdout)
        # What get prints can be applied back unchanged.
        self.assertIn("1 unchanged", cp.apply(yaml_out, "roundtrip.yaml").stdout)

        # A bad document: exit 1, the file, document index and name, field and why; nothing stored.
        bad = POLICY.replace("AUDIENCE", "sluice").replace("port: 5433", "port: 99999")
        bad += "---\nkind: Guardrail\nname: g\nconnections: {tags: {env: prod}}\nrules:\n" \
               "  - {match: drop_everything, action: block}\n"
        path = os.path.join(self.work.path, "bad.yaml")
        with open(path, "w") as f:
            f.write(bad)
        r = cp.ctl("apply", "-f", path, check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn(f"{path}: document 2 (Connection reports-b): upstream.port: 99999 is not a "
                      "TCP port", r.stderr)
        self.assertIn(f"{path}: document 5 (Guardrail g): rules[0].match: 'drop_everything' is "
                      "not one of", r.stderr)
        self.assertIn("nothing was applied", r.stderr)
        # Rejected by the control plane (a reference): same shape, and still nothing stored.
        # (An empty document first: errors count documents as the file does.)
        r = cp.ctl("apply", "-f", "-", check=False, stdin=(
            "---\n# nothing here\n---\nkind: Webhook\nname: w\nurl: https://hooks.example\n---\n"
            "kind: Guardrail\nname: g\nconnections: {tags: {env: prod}}\nrules:\n"
            "  - {match: ddl, action: require_approval, approval: nobody}\n"))
        self.assertEqual(r.returncode, 1)
        self.assertIn("-: document 3 (Guardrail g): rules[0].approval: ApprovalPolicy 'nobody' "
                      "does not exist", r.stderr)
        listing = cp.ctl("get", "all").stdout
        self.assertNotIn("Webhook", listing)
        self.assertIn("orders-a", listing)
        self.assertEqual(cp.ctl("get", "connection", "orders-a", "-o", "json").stdout.count('"version": 1'), 1)

        r = cp.ctl("get", "widgets", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("unknown kind 'widgets'", r.stderr)
        r = cp.ctl("delete", "connection", "nope", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("Connection 'nope' does not exist", r.stderr)
        # A token flag beats the token file in the environment.
        r = cp.ctl("--token", "wrong-token-value", "get", "all", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("missing or wrong admin token", r.stderr)
        # A config file works in place of the environment.
        config = os.path.join(self.work.path, "sluicectl.yaml")
        with open(config, "w") as f:
            f.write(f"server: {cp.address}\nca_file: {cp.ca_file}\ntoken_file: {cp.token_file}\n")
        r = subprocess.run([SLUICECTL, "--config", config, "get", "connection", "orders-a"],
                           capture_output=True, text=True, timeout=60, env={"HOME": self.work.path})
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("orders-a", r.stdout)
        r = cp.ctl("token", "--subject", "alice", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("the dev issuer is off: start sluice-controlplane with --dev-issuer", r.stderr)
        r = cp.ctl("frobnicate", check=False)
        self.assertEqual(r.returncode, 2)

        # An agent that claims labels its enrollment did not grant is refused (and says why).
        agent = self.start(Agent(self.work.path, "x", cp, cp.enroll("agent-x", "vpc=a"),
                                 labels="vpc=b"))
        st = wait_for(lambda: "was not granted" in (s := agent.status())["last_error"] and s,
                      what="agent x to be refused")
        self.assertIn("label vpc=b was not granted at enrollment (granted: vpc=a)", st["last_error"])
        self.assertEqual(st["applied_version"], 0)
        self.assertFalse(cp.agent("agent-x")["connected"])

        # A made-up enrollment token: the agent exits non-zero and says why.
        bad_agent = subprocess.run(
            [AGENT, "--control-plane", cp.address, "--ca-file", cp.ca_file, "--enroll-token",
             "sluice-enroll-not-a-real-token", "--data-dir", os.path.join(self.work.path, "ax"),
             "--status-listen", ""], capture_output=True, text=True, timeout=60)
        self.assertEqual(bad_agent.returncode, 1)
        self.assertIn("enrollment refused: unknown enrollment token", bad_agent.stderr)

        db = sqlite3.connect(os.path.join(cp.data_dir, "sluice.db"))
        outcomes = [r[0] for r in db.execute(
            "SELECT outcome FROM audit_events WHERE action = 'AdminService.Apply'")]
        unauth = db.execute("SELECT COUNT(*) FROM audit_events WHERE outcome = 'UNAUTHENTICATED'").fetchone()[0]
        db.close()
        self.assertIn("INVALID_ARGUMENT", outcomes)
        self.assertEqual(unauth, 1)


if __name__ == "__main__":
    unittest.main()
