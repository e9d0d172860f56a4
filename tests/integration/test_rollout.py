"""Staged rollout end to end: a real control plane, three real agents (vpc=a, vpc=b, vpc=c) and
sluicectl on loopback. A change applied with --canary vpc=a reaches only agent a (the others keep
the previous version, across a control-plane restart) until it is promoted; a change agent a
cannot serve (a MySQL connection on an agent without MySQL) is NACKed, which halts the rollout by
itself, b and c never see it, promote is refused, and abort puts agent a and the stored policy
back on the previous version's documents."""

import json
import os
import sqlite3
import unittest

from harness import Agent, ControlPlane, Workdir, wait_for

POLICY = """
kind: Connection
name: orders-a
protocol: postgres
upstream: {host: 127.0.0.1, port: 5432, database: orders}
credentials: {username: app, password: secret-a}
agents: {vpc: a}
tags: {env: prod}
---
kind: Connection
name: orders-b
protocol: postgres
upstream: {host: 127.0.0.1, port: 5433, database: orders}
credentials: {username: app, password: secret-b}
agents: {vpc: b}
tags: {env: prod}
---
kind: Connection
name: orders-c
protocol: postgres
upstream: {host: 127.0.0.1, port: 5434, database: orders}
credentials: {username: app, password: secret-c}
agents: {vpc: c}
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

# Agent a runs without MySQL: it NACKs a snapshot holding this.
MYSQL_FOR_A = """
---
kind: Connection
name: shop-a
protocol: mysql
upstream: {host: 127.0.0.1, port: 3306}
credentials: {username: app, password: secret-shop}
agents: {vpc: a}
tags: {env: prod}
"""

AGENTS = ("agent-a", "agent-b", "agent-c")


class RolloutTest(unittest.TestCase):
    def setUp(self):
        self.work = Workdir("rollout")
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

    def status(self):
        return json.loads(self.cp.ctl("rollout", "status", "-o", "json").stdout)

    def answers(self):
        return {a["agent_id"]: a for a in self.status()["agents"]}

    def wait_agent(self, agent, version):
        """The agent's own /status says it enforces `version`."""
        return wait_for(lambda: (s := agent.status())["applied_version"] == version and s,
                        what=f"agent {agent.name} to apply version {version}")

    def apply(self, text, name, *extra, check=True):
        path = os.path.join(self.work.path, name)
        with open(path, "w") as f:
            f.write(text)
        return self.cp.ctl("apply", "-f", path, *extra, check=check)

    def test_canary_promote_halt_and_abort(self):
        cp = self.cp = self.start(ControlPlane(self.work.path))
        agents = {
            "a": self.start(Agent(self.work.path, "a", cp, cp.enroll("agent-a", "vpc=a"),
                                  protocols="postgres")),
            "b": self.start(Agent(self.work.path, "b", cp, cp.enroll("agent-b", "vpc=b"))),
            "c": self.start(Agent(self.work.path, "c", cp, cp.enroll("agent-c", "vpc=c"))),
        }
        r = cp.ctl("rollout", "status")
        self.assertIn("no rollout was started", r.stdout)
        self.assertIn("policy version 1", self.apply(POLICY.replace("AUDIENCE", "v1"), "v1.yaml").stdout)
        for agent in agents.values():
            self.wait_agent(agent, 1)

        # Rollout 1: the new audience goes to vpc=a only.
        out = self.apply(POLICY.replace("AUDIENCE", "v2"), "v2.yaml", "--canary", "vpc=a").stdout
        self.assertIn("policy version 2", out)
        self.assertIn("rollout 1 started: version 2 goes only to the 1 canary agent(s) with vpc=a; "
                      "the others keep version 1", out)
        self.wait_agent(agents["a"], 2)
        wait_for(lambda: self.answers()["agent-a"]["answer"] == "ack", what="agent a's ACK in the status")
        st = self.status()
        self.assertEqual(st["rollout"]["state"], "canary")
        self.assertEqual(st["rollout"]["canary"], {"vpc": "a"})
        self.assertEqual(int(st["rollout"]["version"]), 2)
        self.assertEqual(int(st["rollout"]["previous_version"]), 1)
        by_id = {a["agent_id"]: a for a in st["agents"]}
        self.assertTrue(by_id["agent-a"]["canary"])
        self.assertEqual(int(by_id["agent-a"]["applied_version"]), 2)
        for other in ("agent-b", "agent-c"):
            self.assertFalse(by_id[other]["canary"])
            self.assertEqual(by_id[other]["answer"], "held")
            self.assertEqual(int(by_id[other]["desired_version"]), 1)
            self.assertEqual(int(by_id[other]["applied_version"]), 1)
        for name in ("b", "c"):
            self.assertEqual(agents[name].status()["applied_version"], 1)
            self.assertNotIn('"v2"', agents[name].snapshot_on_disk())
        self.assertIn('"v2"', agents["a"].snapshot_on_disk())
        table = cp.ctl("rollout", "status").stdout
        self.assertIn("rollout 1: policy version 2 to the canary agents vpc=a (the others kept version 1)",
                      table)
        self.assertIn("state:   canary", table)
        self.assertRegex(table, r"agent-a\s+vpc=a\s+yes\s+yes\s+2\s+2\s+2\s+ACK")
        self.assertRegex(table, r"agent-b\s+vpc=b\s+no\s+yes\s+1\s+1\s+1\s+held")

        # One rollout at a time: any other change waits for it.
        r = self.apply(POLICY.replace("AUDIENCE", "other"), "other.yaml", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("rollout 1 of policy version 2 to the canary agents vpc=a is in progress (canary)",
                      r.stderr)
        r = cp.ctl("delete", "connection", "orders-c", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("is in progress", r.stderr)
        r = self.apply(POLICY.replace("AUDIENCE", "v1"), "none.yaml", "--canary", "vpc=z", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("no enrolled agent has the labels vpc=z", r.stderr)

        # The rollout survives a control-plane restart: b and c reconnect and are sent version 1.
        cp.stop()
        cp.start()
        for agent_id in AGENTS:
            wait_for(lambda: (a := cp.agent(agent_id))["connected"] and a["desired_version"],
                     what=f"{agent_id} to reconnect")
        wait_for(lambda: self.answers()["agent-a"]["answer"] == "ack", what="agent a's ACK after the restart")
        st = self.answers()
        self.assertEqual(self.status()["rollout"]["state"], "canary")
        self.assertEqual(int(st["agent-a"]["desired_version"]), 2)
        for other in ("agent-b", "agent-c"):
            self.assertEqual(int(st[other]["desired_version"]), 1)
        self.assertEqual(agents["b"].status()["applied_version"], 1)

        # Promote: b and c get version 2.
        out = cp.ctl("rollout", "promote").stdout
        self.assertIn("rollout 1 promoted: policy version 2 goes to every agent", out)
        for agent in agents.values():
            self.wait_agent(agent, 2)
        wait_for(lambda: all(a["answer"] == "ack" for a in self.status()["agents"]),
                 what="every agent's ACK of version 2")
        self.assertEqual(self.status()["rollout"]["state"], "promoted")
        r = cp.ctl("rollout", "promote", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("no rollout is in progress: the latest, rollout 1 of version 2, is promoted", r.stderr)

        # Rollout 2: a change agent a cannot serve. Its NACK halts the rollout by itself.
        bad = POLICY.replace("AUDIENCE", "v3") + MYSQL_FOR_A
        out = self.apply(bad, "v3.yaml", "--canary", "vpc=a").stdout
        self.assertIn("rollout 2 started: version 3", out)
        st = wait_for(lambda: (s := self.status())["rollout"]["state"] == "halted" and s,
                      what="rollout 2 to halt on agent a's NACK")
        reason = st["rollout"]["reason"]
        self.assertIn("agent agent-a NACKed version 3: ", reason)
        self.assertIn("Connection shop-a: protocol mysql is not supported by this agent", reason)
        self.assertEqual(st["rollout"]["updated_by"], "agent:agent-a")
        by_id = {a["agent_id"]: a for a in st["agents"]}
        self.assertEqual(by_id["agent-a"]["answer"], "nack")
        self.assertIn("protocol mysql is not supported", by_id["agent-a"]["nack_error"])
        self.assertEqual(int(by_id["agent-a"]["applied_version"]), 2)
        a_status = agents["a"].status()
        self.assertEqual(a_status["applied_version"], 2)
        self.assertEqual(a_status["last_nack_version"], 3)
        # b and c were never sent version 3.
        for other in ("agent-b", "agent-c"):
            self.assertEqual(by_id[other]["answer"], "held")
            self.assertEqual(int(by_id[other]["desired_version"]), 2)
        for name in ("b", "c"):
            self.assertEqual(agents[name].status()["applied_version"], 2)
            self.assertNotIn("shop-a", agents[name].snapshot_on_disk())
        table = cp.ctl("rollout", "status").stdout
        self.assertIn("state:   halted", table)
        self.assertIn("reason:  agent agent-a NACKed version 3", table)
        self.assertRegex(table, r"agent-a\s+vpc=a\s+yes\s+yes\s+3\s+2\s+3\s+NACK: Connection shop-a")

        # Halted: promote is refused.
        r = cp.ctl("rollout", "promote", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("rollout 2 is halted (agent agent-a NACKed version 3", r.stderr)
        self.assertIn("--force", r.stderr)
        self.assertEqual(self.status()["rollout"]["state"], "halted")

        # Abort: version 2's documents are stored again as version 4; agent a applies it.
        out = cp.ctl("rollout", "abort", "--reason", "shop-a needs a MySQL agent").stdout
        self.assertIn("rollout 2 aborted: version 2's documents are stored again as version 4", out)
        a_status = self.wait_agent(agents["a"], 4)
        self.assertEqual(a_status["connections"], ["orders-a"])
        snap_a = agents["a"].snapshot_on_disk()
        self.assertIn('"v2"', snap_a)
        self.assertNotIn('"v3"', snap_a)
        self.assertNotIn("shop-a", snap_a)
        st = wait_for(lambda: (s := self.status())["agents"][0]["answer"] == "ack" and s,
                      what="agent a's ACK of version 4")
        self.assertEqual(st["rollout"]["state"], "aborted")
        self.assertEqual(int(st["rollout"]["restored_version"]), 4)
        self.assertEqual(st["rollout"]["reason"], "shop-a needs a MySQL agent")
        # The stored policy is version 2's again; b and c had nothing to change.
        r = cp.ctl("get", "connection", "shop-a", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("audience: v2", cp.ctl("get", "issuer", "ci", "-o", "yaml").stdout)
        for name in ("b", "c"):
            self.assertEqual(agents[name].status()["applied_version"], 2)
        # Changes go through again.
        self.assertIn("policy version 5", self.apply(POLICY.replace("AUDIENCE", "v5"), "v5.yaml").stdout)
        for agent in agents.values():
            self.wait_agent(agent, 5)

        # Each rollout action is in the control plane's audit trail.
        db = sqlite3.connect(os.path.join(cp.data_dir, "sluice.db"))
        rows = db.execute("SELECT actor, action, target, outcome FROM audit_events "
                          "WHERE action LIKE 'Rollout.%' OR action LIKE 'AdminService.%Rollout' "
                          "ORDER BY id").fetchall()
        db.close()
        rollout_rows = [(a, act, t) for a, act, t, _ in rows if act.startswith("Rollout.")]
        self.assertEqual(rollout_rows, [
            ("bootstrap-admin", "Rollout.start", "Rollout/1"),
            ("bootstrap-admin", "Rollout.promote", "Rollout/1"),
            ("bootstrap-admin", "Rollout.start", "Rollout/2"),
            ("agent:agent-a", "Rollout.halt", "Rollout/2"),
            ("bootstrap-admin", "Rollout.abort", "Rollout/2"),
        ])
        calls = [(act, outcome) for _, act, _, outcome in rows if act.startswith("AdminService.")]
        self.assertEqual(calls.count(("AdminService.PromoteRollout", "ok")), 1)
        self.assertEqual(calls.count(("AdminService.PromoteRollout", "FAILED_PRECONDITION")), 2)
        self.assertEqual(calls.count(("AdminService.AbortRollout", "ok")), 1)
        # ... and in the evidence export, with the policy changes (CM-5).
        report = json.loads(cp.ctl("evidence", "export", "--from", "1h", "--to", "now").stdout)
        cm5 = next(c for c in report["controls"] if c["id"] == "CM-5")
        self.assertEqual([(e["actor"], e["action"]) for e in cm5["evidence"]["rollouts"]],
                         [(a, act) for a, act, _ in rollout_rows])
        self.assertIn("agent agent-a NACKed version 3", cm5["evidence"]["rollouts"][3]["detail"])


if __name__ == "__main__":
    unittest.main()
