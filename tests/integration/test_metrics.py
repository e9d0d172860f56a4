"""Prometheus metrics of both binaries, scraped by a real Prometheus (Debian's `prometheus`
package) and read back through its HTTP API; JSON log lines (--log-format=json); the Grafana
dashboard (deploy/grafana/sluice-dashboard.json) queries only metrics the binaries export, in
PromQL that Prometheus accepts.

A real PostgreSQL, a control plane and one agent (the harness Stack). Sessions through the agent:
allowed statements (one answered with an error), one blocked by a guardrail, one held for
approval and denied, one login with a bad token; then the counters as Prometheus scraped them."""

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import unittest
import urllib.parse
import urllib.request

from harness import PG_BIN, Process, Stack, TokenIssuer, free_port, wait_for

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
DASHBOARD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "deploy", "grafana",
                         "sluice-dashboard.json")

# With the harness Stack's demo Connection (tagged env: prod) and test Issuer.
POLICY = """---
kind: AccessRule
name: people
subjects: {groups: [ci, dba]}
connections: {names: [demo]}
access: write
---
kind: ApprovalPolicy
name: dba-on-call
approvers: {groups: [dba]}
timeout: 120s
---
kind: Guardrail
name: prod-safety
connections: {tags: {env: prod}}
rules:
  - {match: delete_without_where, action: block}
  - {match: update_without_where, action: require_approval, approval: dba-on-call}
"""

# The text format's "# TYPE name type" lines.
TYPE_LINE = re.compile(r"^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram)$", re.M)


def exported_names(text):
    """The sample names a /metrics body can have: each family's, and a histogram's series."""
    names = set()
    for name, kind in TYPE_LINE.findall(text):
        names.add(name)
        if kind == "histogram":
            names.update({name + "_bucket", name + "_sum", name + "_count"})
    return names


@unittest.skipUnless(os.access(PROMETHEUS, os.X_OK),
                     "the prometheus binary is absent: scripts/install-deps installs Debian's "
                     "prometheus package")
class MetricsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.stack = Stack("metrics", cp_args=["--log-format=json"],
                          agent_args=["--log-format=json"]).__enter__()
        try:
            cls.pg, cls.cp, cls.agent = cls.stack.pg, cls.stack.cp, cls.stack.agent
            cls.pg.sql("CREATE TABLE items (id int PRIMARY KEY, n int); "
                       "INSERT INTO items VALUES (1, 0), (2, 0); ALTER TABLE items OWNER TO app",
                       "demo")
            cls.idp = TokenIssuer()
            cls.version = cls.stack.apply_and_wait(
                cls.stack.connection_yaml(tags="{env: prod}") + Stack.inline_issuer_yaml(cls.idp) +
                POLICY)
            cls.port = cls.agent.postgres_port()
            cls.prom_dir = tempfile.mkdtemp(prefix="prometheus-", dir=cls.stack.work.path)
            cls.prometheus = None
            cls.start_prometheus()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "prometheus", None):
            cls.prometheus.stop()
        cls.stack.__exit__(None, None, None)

    # --- Prometheus --------------------------------------------------------------------------------

    @classmethod
    def start_prometheus(cls):
        config = os.path.join(cls.prom_dir, "prometheus.yml")
        with open(config, "w") as f:
            f.write("global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}\n"
                    "scrape_configs:\n"
                    "  - job_name: sluice-controlplane\n"
                    f"    static_configs: [{{targets: ['{cls.cp.http}']}}]\n"
                    "  - job_name: sluice-agent\n"
                    f"    static_configs: [{{targets: ['127.0.0.1:{cls.agent.status_port}']}}]\n")
        # Prometheus cannot listen on port 0 and say where: a free port, tried again if taken
        # meanwhile.
        for attempt in range(5):
            cls.prom_port = free_port()
            cls.prometheus = Process(
                [PROMETHEUS, f"--config.file={config}",
                 f"--storage.tsdb.path={os.path.join(cls.prom_dir, 'data')}",
                 f"--web.listen-address=127.0.0.1:{cls.prom_port}", "--log.level=warn"],
                os.path.join(cls.prom_dir, f"prometheus-{attempt}.log"))

            def ready():
                if not cls.prometheus.alive():
                    return "exited"
                with urllib.request.urlopen(f"http://127.0.0.1:{cls.prom_port}/-/ready",
                                            timeout=2) as r:
                    return "ready" if r.status == 200 else None
            if wait_for(ready, timeout=60, what="prometheus ready") == "ready":
                return
            if "address already in use" not in cls.prometheus.output():
                raise AssertionError("prometheus exited:\n" + cls.prometheus.output())
        raise AssertionError("prometheus found no free port")

    def api(self, path, **params):
        url = f"http://127.0.0.1:{self.prom_port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                doc = json.loads(r.read().decode())
        except urllib.error.HTTPError as e:  # a bad query is a 400 with the error in the body
            doc = json.loads(e.read().decode())
        return doc

    def query(self, expr):
        doc = self.api("query", query=expr)
        self.assertEqual(doc["status"], "success", f"{expr}: {doc}")
        return doc["data"]["result"]

    def value(self, expr):
        """The value of a query that gives one series (None when it gives none)."""
        result = self.query(expr)
        self.assertLessEqual(len(result), 1, f"{expr}: {result}")
        return float(result[0]["value"][1]) if result else None

    def wait_value(self, expr, expected, timeout=30):
        seen = []

        def check():
            seen.append(self.value(expr))
            return seen[-1] == expected
        try:
            wait_for(check, timeout=timeout, interval=0.25, what=f"{expr} == {expected}")
        except AssertionError:
            raise AssertionError(f"{expr}: expected {expected}, last {seen[-1:]}") from None

    def wait_targets_up(self):
        def up():
            targets = self.api("targets")["data"]["activeTargets"]
            health = {t["labels"]["job"]: t["health"] for t in targets}
            return health == {"sluice-controlplane": "up", "sluice-agent": "up"} and health
        wait_for(up, timeout=30, interval=0.25, what="both targets up in prometheus")

    # --- traffic ---------------------------------------------------------------------------------

    def dsn(self):
        return f"host=127.0.0.1 port={self.port} dbname=demo user=someone sslmode=require"

    def psql(self, sql, token=None, check=True):
        env = dict(os.environ, PGPASSWORD=token or self.idp.token(sub="carol", groups=["ci"]),
                   PGCONNECT_TIMEOUT="10")
        r = subprocess.run([f"{PG_BIN}/psql", self.dsn(), "-X", "-At", "-c", sql],
                           capture_output=True, text=True, env=env, timeout=60)
        if check and r.returncode != 0:
            raise AssertionError(f"psql {sql!r} failed: {r.stderr}")
        return r

    def pending_approval(self):
        out = json.loads(self.cp.ctl("approvals", "list", "--status", "pending", "-o",
                                     "json").stdout)
        approvals = out.get("approvals", [])
        return int(approvals[0]["id"]) if approvals else None

    # --- the test ----------------------------------------------------------------------------------

    def test_prometheus_scrapes_both_binaries_and_reads_what_happened(self):
        self.wait_targets_up()
        # Before any session: the families are there, at 0.
        self.wait_value('sum(sluice_agent_statements_total{connection="demo"}) or vector(0)', 0)
        self.wait_value(f'sluice_agent_snapshot_version{{agent="agent-a",state="applied"}}',
                        self.version)
        self.wait_value('sluice_agent_snapshot_version{agent="agent-a",state="sent"}', self.version)
        self.wait_value("sluice_policy_version", self.version)
        self.wait_value("sluice_agent_snapshot_applied_version", self.version)
        self.wait_value("sluice_agent_control_plane_connected", 1)
        self.wait_value("sluice_agents_connected", 1)

        # Two allowed statements in one session (one answered with an error), one blocked in
        # another, a login with a bad token.
        token = self.idp.token(sub="carol", groups=["ci"])
        r = self.psql("SELECT 'a-marker-of-statement-text'", token=token, check=False)
        self.assertEqual(r.stdout.strip(), "a-marker-of-statement-text", r.stderr)
        r = self.psql("SELECT 1/0", check=False)
        self.assertIn("division by zero", r.stderr)
        r = self.psql("DELETE FROM items", check=False)
        self.assertIn("blocked by guardrail", r.stderr)
        r = self.psql("SELECT 1", token="not-a-token", check=False)
        self.assertIn("token rejected", r.stderr)

        # A statement held for approval: pending at both ends, then denied.
        env = dict(os.environ, PGPASSWORD=self.idp.token(sub="carol", groups=["ci"]))
        held = subprocess.Popen([f"{PG_BIN}/psql", self.dsn(), "-X", "-At", "-c",
                                 "UPDATE items SET n = n + 1"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            approval_id = wait_for(self.pending_approval, what="the approval request")
            self.wait_value("sluice_approvals_pending", 1)
            self.wait_value("sluice_agent_approvals_pending", 1)
            self.cp.ctl("--token", self.idp.token(sub="dora", groups=["dba"]), "approvals", "deny",
                        str(approval_id))
            _, err = held.communicate(timeout=30)
            self.assertIn("denied", err)
        finally:
            if held.poll() is None:
                held.kill()
                held.wait()

        labels = 'protocol="postgres",connection="demo"'
        self.wait_value(f'sluice_agent_statements_total{{{labels},decision="allowed"}}', 2)
        self.wait_value(f'sluice_agent_statements_total{{{labels},decision="blocked"}}', 1)
        self.wait_value(f'sluice_agent_statements_total{{{labels},decision="denied"}}', 1)
        self.wait_value(f'sluice_agent_statements_total{{{labels},decision="refused"}}', 0)
        self.wait_value(f'sluice_agent_statement_errors_total{{{labels}}}', 1)
        self.wait_value(f'sluice_agent_approvals_total{{{labels},outcome="denied"}}', 1)
        self.wait_value(f'sluice_agent_approvals_total{{{labels},outcome="approved"}}', 0)
        self.wait_value("sluice_approvals_pending", 0)
        self.wait_value("sluice_agent_approvals_pending", 0)
        # Sessions: four admitted and closed, one refused after its connection was found.
        self.wait_value(f'sluice_agent_sessions_started_total{{{labels}}}', 4)
        self.wait_value(f'sluice_agent_sessions_active{{{labels}}}', 0)
        self.wait_value(f'sluice_agent_sessions_total{{{labels},outcome="closed"}}', 4)
        self.wait_value(f'sluice_agent_sessions_total{{{labels},outcome="refused"}}', 1)
        self.wait_value('sluice_agent_session_refusals_total{protocol="postgres",'
                        'kind="token_rejected"}', 1)
        self.wait_value(f'sluice_agent_upstream_errors_total{{{labels}}}', 0)
        # Latency: both allowed statements in the histogram, a quantile Prometheus can compute.
        self.wait_value(f'sluice_agent_statement_duration_seconds_count{{{labels}}}', 2)
        self.wait_value(f'sluice_agent_statement_duration_seconds_bucket{{{labels},le="+Inf"}}', 2)
        p99 = self.value('histogram_quantile(0.99, sum by (le) '
                         f'(sluice_agent_statement_duration_seconds_bucket{{{labels}}}))')
        self.assertIsNotNone(p99)
        self.assertGreater(p99, 0)
        self.assertLess(p99, 60)

        # The audit pipeline: every event delivered and stored.
        self.wait_value("sluice_agent_audit_events_unacknowledged", 0)
        self.wait_value("sluice_agent_audit_delivery_lag_seconds", 0)
        self.wait_value("sluice_agent_audit_refusing_sessions", 0)
        emitted = self.value("sluice_agent_audit_events_total")
        self.assertGreaterEqual(emitted, 11)  # 5 sessions' starts, ends, statements, approval
        stored = wait_for(lambda: self.value(
            'sluice_audit_events_stored_total{agent="agent-a"}') or None, what="events stored")
        self.assertGreaterEqual(stored, 11)
        lag = self.value('sluice_audit_ingest_lag_seconds{agent="agent-a"}')
        self.assertIsNotNone(lag)
        self.assertGreaterEqual(lag, 0)
        self.assertLess(lag, 60)
        self.assertIsNotNone(self.value("sluice_agent_audit_spool_bytes"))
        self.assertEqual(self.value('sluice_agent_audit_ok{agent="agent-a"}'), 1)
        self.assertEqual(self.value("sluice_store_refusing_writes"), 0)

        # No statement text, token, identity or password in what either binary serves.
        for target in (f"http://{self.cp.http}/metrics",
                       f"http://127.0.0.1:{self.agent.status_port}/metrics"):
            with urllib.request.urlopen(target, timeout=5) as r:
                self.assertEqual(r.headers["Content-Type"],
                                 "text/plain; version=0.0.4; charset=utf-8")
                body = r.read().decode()
            for secret in ("a-marker-of-statement-text", "items", token, "carol", "dora",
                           self.stack.app_password):
                self.assertNotIn(secret, body, target)

    def test_the_dashboard_queries_only_exported_metrics_in_valid_promql(self):
        with open(DASHBOARD) as f:
            dashboard = json.load(f)  # valid JSON, or this fails
        self.assertTrue(dashboard.get("title"))
        exprs = []

        def walk(node):
            if isinstance(node, dict):
                if isinstance(node.get("expr"), str):
                    exprs.append(node["expr"])
                if node.get("type") == "query" and isinstance(node.get("query"), (str, dict)):
                    q = node["query"]
                    exprs.append(q if isinstance(q, str) else q.get("query", ""))
                for v in node.values():
                    walk(v)
            elif isinstance(node, list):
                for v in node:
                    walk(v)
        walk(dashboard)
        self.assertGreater(len(exprs), 10)

        families = {}  # name: type, of both binaries
        for target in (f"http://{self.cp.http}/metrics",
                       f"http://127.0.0.1:{self.agent.status_port}/metrics"):
            with urllib.request.urlopen(target, timeout=5) as r:
                families.update(dict(TYPE_LINE.findall(r.read().decode())))
        exported = exported_names("".join(f"# TYPE {n} {t}\n" for n, t in families.items()))
        used = set()
        for expr in exprs:
            used |= set(re.findall(r"\b(sluice_[a-zA-Z0-9_:]+)", expr))
        self.assertEqual(used - exported, set(), "the dashboard queries metrics nobody exports")
        # And it shows every family (a new metric goes on it too).
        shown = set()
        for name in used:
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            shown.add(base if families.get(base) == "histogram" else name)
        self.assertEqual(set(families) - shown, set(), "metrics the dashboard does not show")

        # Each query is PromQL that Prometheus accepts, with the dashboard's variables filled in.
        for expr in exprs:
            if expr.startswith("label_values("):
                continue  # a Grafana templating function, not PromQL
            concrete = (expr.replace("$__rate_interval", "1m").replace("$__interval", "1m")
                        .replace("$__range", "5m").replace("${protocol}", ".*")
                        .replace("$protocol", ".*").replace("${connection}", ".*")
                        .replace("$connection", ".*").replace("${agent}", ".*")
                        .replace("$agent", ".*"))
            self.assertNotIn("$", concrete, expr)
            doc = self.api("query", query=concrete)
            self.assertEqual(doc["status"], "success", f"{expr}: {doc.get('error')}")

    def test_logs_are_json_lines(self):
        for name in ("controlplane.log", "agent-a.log"):
            with open(os.path.join(self.stack.work.path, name)) as f:
                lines = f.read().splitlines()
            ours = []
            for line in lines:
                # Our lines are JSON now; never the text format's.
                self.assertIsNone(re.match(r"^\d{4}-\d\d-\d\dT\S+Z (INFO|WARN|ERROR|DEBUG) ", line),
                                  f"{name}: {line}")
                if line.startswith("{"):
                    entry = json.loads(line)
                    self.assertEqual(set(entry), {"time", "level", "component", "message"}, line)
                    self.assertRegex(entry["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
                    self.assertIn(entry["level"], ("debug", "info", "warning", "error"))
                    ours.append(entry)
            self.assertTrue(ours, name)
            component = "controlplane" if name.startswith("controlplane") else "agent"
            self.assertTrue(all(e["component"] == component for e in ours), name)
        messages = [e["message"] for e in ours]
        self.assertTrue(any(m.startswith("sluice-agent ") and m.endswith(" running")
                            for m in messages), messages)

    def test_a_wrong_log_format_is_refused(self):
        from harness import AGENT
        r = subprocess.run([AGENT, "--log-format=xml"], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 2)
        self.assertIn("--log-format: 'xml' is not text or json", r.stderr)


if __name__ == "__main__":
    unittest.main()
