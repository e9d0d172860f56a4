"""The agent gives memory back after a load of many concurrent sessions (agent/memory_trimmer.h):
glibc's malloc keeps what 400 sessions freed (measured: 29 MiB idle, 170 MiB after they closed,
for good) unless it is returned. Skipped under AddressSanitizer, whose allocator keeps freed
memory in quarantine on purpose."""

import os
import threading
import unittest

from harness import Stack, TokenIssuer, wait_for

SESSIONS = 200
POLICY = """---
kind: AccessRule
name: ci
subjects: {groups: [ci]}
connections: {names: [demo]}
access: read
"""


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@unittest.skipIf(os.environ.get("SLUICE_SANITIZE"), "RSS means nothing under AddressSanitizer")
class AgentMemoryTest(unittest.TestCase):
    def test_memory_returns_close_to_idle_after_many_sessions(self):
        import psycopg
        with Stack("memory", pg_max_connections=SESSIONS + 20) as st:
            idp = TokenIssuer()
            limits = f"limits: {{max_sessions: {SESSIONS + 10}, max_sessions_per_identity: {SESSIONS + 10}}}\n"
            st.apply_and_wait(st.connection_yaml() + limits + Stack.inline_issuer_yaml(idp) + POLICY)
            dsn = f"host=127.0.0.1 port={st.agent.postgres_port()} dbname=demo user=ci sslmode=require"
            token = idp.token(sub="load", groups=["ci"], lifetime=600)
            pid = st.agent.process.proc.pid
            with psycopg.connect(dsn, password=token) as c:
                c.execute("SELECT 1")
            idle = rss_mib(pid)

            conns, lock, errors = [], threading.Lock(), []

            def open_some(n):
                try:
                    mine = []
                    for _ in range(n):
                        c = psycopg.connect(dsn, password=token, autocommit=True)
                        c.execute("SELECT repeat('x', 20000), generate_series(1, 50)").fetchall()
                        mine.append(c)
                    with lock:
                        conns.extend(mine)
                except Exception as e:  # reported below
                    errors.append(e)
            threads = [threading.Thread(target=open_some, args=(SESSIONS // 8,)) for _ in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            self.assertEqual(errors, [])
            loaded = rss_mib(pid)
            for c in conns:
                c.close()
            grown = loaded - idle
            self.assertGreater(grown, 20, f"the load did not grow the agent ({idle:.0f} -> {loaded:.0f} MiB)")
            # Within a few of the trimmer's looks, most of what the load took is back.
            wait_for(lambda: rss_mib(pid) < idle + grown / 3, timeout=30, interval=0.5,
                     what=f"agent memory back near idle ({idle:.0f} MiB idle, {loaded:.0f} loaded)")


if __name__ == "__main__":
    unittest.main()
