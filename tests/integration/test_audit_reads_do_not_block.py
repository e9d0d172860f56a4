"""`sluicectl audit verify` and `sluicectl evidence export` read the whole store: they run on their
own read-only connection and thread, so that agents' audit events go on being stored and
acknowledged meanwhile. A store of many events is filled through the agent with pgbench; while an
export and a verify of it run (each for seconds), pgbench goes on, and the agent's acknowledged
count (emitted - queued - in_flight on its /status) keeps advancing: no pause of 1.5 s (or half the read) or more. Before,
both ran on the store worker, and every agent's acknowledgements stopped until they ended."""

import os
import subprocess
import threading
import time
import unittest

from harness import PG_BIN, Stack, TokenIssuer, wait_for

POLICY = """---
kind: AccessRule
name: bench
subjects: {groups: [ci]}
connections: {names: [demo]}
access: write
"""

# The longest an agent may go without an acknowledgement while its statements run: 1.5 s, or half
# the read on a machine so loaded that the read takes longer than 3 s (a 2-core machine at load 15
# showed pauses of 2 s in a 5 s read). A read on the store worker stopped acknowledgements for all
# of it (at least MIN_READ_S).
MAX_ACK_PAUSE_S = 1.5
# An audit read must last at least this long for the test to say anything (with statements
# running beside it, a read takes about twice as long as on an idle store filled until an export
# takes FILL_READ_S).
MIN_READ_S = 2.0
FILL_READ_S = 2.0


class AuditReadsDoNotBlockTest(unittest.TestCase):
    def test_export_and_verify_of_a_large_store_leave_ingest_running(self):
        with Stack("audit-reads") as stack:
            cp, agent = stack.cp, stack.agent
            idp = TokenIssuer()
            stack.apply_and_wait(stack.connection_yaml() + Stack.inline_issuer_yaml(idp) + POLICY)
            script = os.path.join(stack.work.path, "select.sql")
            with open(script, "w") as f:
                f.write("SELECT 1;\n")

            def pgbench(seconds, clients=4):
                env = dict(os.environ, PGPASSWORD=idp.token(sub="bench", groups=["ci"]), PGSSLMODE="require")
                return subprocess.Popen([f"{PG_BIN}/pgbench", "-n", "-f", script, "-c", str(clients), "-j", "2", "-T",
                                         str(seconds), "--protocol=simple", "-h", "127.0.0.1", "-p",
                                         str(agent.postgres_port()), "-U", "bench", "demo"],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

            def acked():
                a = agent.status()["audit"]
                return a["emitted"] - a["queued"] - a["in_flight"], a["emitted"]

            def settled():
                done, emitted = acked()
                return done == emitted

            def timed(*args):
                start = time.monotonic()
                r = cp.ctl(*args, check=False)
                return r, time.monotonic() - start

            # Fill: statements until an export takes long enough to measure against.
            start = time.monotonic()
            while True:
                bench = pgbench(8)
                out, err = bench.communicate(timeout=60)
                self.assertEqual(bench.returncode, 0, err)
                wait_for(settled, timeout=60, what="every event acknowledged")
                r, took = timed("evidence", "export", "--from", "1h", "--to", "now")
                self.assertEqual(r.returncode, 0, r.stderr)
                print(f"\n  store: {acked()[1]} events; an export takes {took:.1f} s", flush=True)
                if took >= FILL_READ_S or time.monotonic() - start > 35:
                    break
            self.assertGreaterEqual(took, FILL_READ_S / 2, "the store is too small to measure a long read against")

            def measure(read):
                """Runs `read` while pgbench runs: how long it took, the acknowledgements meanwhile, and
                the longest time without one."""
                bench = pgbench(60)  # stopped once the read ends
                time.sleep(1.5)
                samples = []  # (time, acknowledged)
                stop = threading.Event()

                def sample():
                    while not stop.is_set():
                        samples.append((time.monotonic(), acked()[0]))
                        time.sleep(0.05)
                sampler = threading.Thread(target=sample)
                sampler.start()
                time.sleep(0.5)
                r, read_s = timed(*read)
                read_end = time.monotonic()
                read_start = read_end - read_s
                time.sleep(0.3)
                stop.set()
                sampler.join()
                self.assertIsNone(bench.poll(), "pgbench ended before the read did")
                bench.terminate()
                bench.communicate(timeout=60)
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
                pause, last_change, last = 0.0, read_start, None
                during = [(t, n) for t, n in samples if read_start <= t <= read_end]
                for t, n in during:
                    if last is not None and n != last:
                        last_change = t
                    last = n
                    pause = max(pause, t - last_change)
                progress = during[-1][1] - during[0][1] if during else 0
                print(f"  {' '.join(read[:2])}: {read_s:.1f} s; meanwhile {progress} events acknowledged, "
                      f"longest pause {pause:.2f} s", flush=True)
                return read_s, progress, pause

            for read in (("evidence", "export", "--from", "1h", "--to", "now"), ("audit", "verify")):
                with self.subTest(read=read[0]):
                    # On a machine whose load changes, a read may end sooner than calibrated: the
                    # store grew meanwhile (pgbench ran), so it is measured again.
                    for _ in range(3):
                        read_s, progress, pause = measure(read)
                        if read_s >= MIN_READ_S:
                            break
                    self.assertGreaterEqual(read_s, MIN_READ_S, "the read ended too soon to measure")
                    self.assertGreater(progress, 0, "no acknowledgement while the read ran")
                    self.assertLess(pause, max(MAX_ACK_PAUSE_S, read_s / 2),
                                    "acknowledgements stopped while the read ran")
            wait_for(settled, timeout=60, what="every event acknowledged")
            # And what was stored meanwhile verifies.
            self.assertIn("every checksum and chain link intact", cp.ctl("audit", "verify").stdout)


if __name__ == "__main__":
    unittest.main()
