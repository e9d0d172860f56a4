"""The agent's durable audit spool: statements run while the control plane is down are on the
agent's disk; the agent is then killed (-9) and restarted, the control plane comes back, and it
holds exactly one event per statement, none missing, none twice."""

import json
import os
import subprocess
import unittest

from harness import PG_BIN, Agent, ControlPlane, PostgresServer, TokenIssuer, Workdir, wait_for

POLICY = """
kind: Connection
name: demo
protocol: postgres
upstream: {{host: 127.0.0.1, port: {pg_port}, database: demo, tls: disable}}
credentials: {{username: app, password: app-Secret-PW-1}}
agents: {{vpc: a}}
---
kind: Issuer
name: test-idp
issuer: {iss}
audience: sluice
jwks: {{inline: '{jwks}'}}
---
kind: AccessRule
name: people
subjects: {{groups: [ci]}}
connections: {{names: [demo]}}
access: write
"""


class AuditSpoolTest(unittest.TestCase):
    def test_events_survive_control_plane_and_agent_crashes(self):
        work = Workdir("spool")
        pg = PostgresServer(work.path).start()
        cp = agent = None
        try:
            pg.sql("CREATE USER app PASSWORD 'app-Secret-PW-1'")
            pg.sql("CREATE DATABASE demo OWNER app")
            cp = ControlPlane(work.path).start()
            idp = TokenIssuer()
            agent = Agent(work.path, "a", cp, cp.enroll("agent-a", "vpc=a")).start()
            cp.apply(POLICY.format(pg_port=pg.port, iss=idp.iss, jwks=idp.jwks()))
            wait_for(lambda: agent.status()["applied_version"] == 1, what="agent to apply policy")
            port = agent.postgres_port()

            def run(sub, n):
                script = "".join(f"SELECT {i} AS n;\n" for i in range(n))
                env = dict(os.environ, PGPASSWORD=idp.token(sub=sub))
                r = subprocess.run([f"{PG_BIN}/psql", f"host=127.0.0.1 port={port} dbname=demo user={sub} "
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
            wait_for(lambda: agent.status()["audit"]["spool_bytes"] > 0 and
                     agent.status()["audit"]["queued"] >= 27, what="the events to be spooled")
            # Then the agent dies too, and comes back from its spool.
            agent.process.kill9()
            agent.start()
            cp.start()
            wait_for(lambda: len(statements("while-down")) >= 25, timeout=60,
                     what="the spooled events to reach the control plane")
            got = statements("while-down")
            self.assertEqual(sorted(got), sorted(f"SELECT {i} AS n;" for i in range(25)))  # once each
            self.assertEqual(len(statements("before")), 10)  # nothing sent twice is stored twice
            wait_for(lambda: agent.status()["audit"]["spool_bytes"] == 0, timeout=30,
                     what="the acknowledged spool to be emptied")
        finally:
            for p in (agent, cp):
                if p is not None and p.process is not None and p.process.alive():
                    p.stop()
            pg.stop()
            work.cleanup(keep=False)


if __name__ == "__main__":
    unittest.main()
