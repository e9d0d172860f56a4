"""BigQuery's API v2 through the agent (issue 26, second part): the caller's OIDC JWT as the bearer
token in, an access token of the Connection's service account (BigQuery's scope) out, every
request — and a query's SQL — classified and decided by the same policy documents as SQL, result
rows masked by `table.column` rules following the query's select list, jobs bound to the caller
who started them, and one audit event each.

No Google service runs here: the upstreams are stand-ins (gcs_standin.py) — the token endpoint,
and a BigQuery server that accepts only the access tokens that endpoint issued and runs queries in
SQLite. The callers are plain HTTPS (urllib) speaking the API as Google's clients do, and the real
`bq` of google-cloud-cli (on the machine image) for `bq ls` and `bq query`."""
import json
import os
import shutil
import ssl
import subprocess
import threading
import unittest
import urllib.error
import urllib.request

from gcs_standin import BQ_DISCOVERY, FakeBigQuery, ServiceAccount, TokenEndpoint
from harness import Agent, ControlPlane, Stack, TokenIssuer, Workdir, session_events, wait_for

SSNS = ["123-45-6789", "987-65-4321", "555-12-3456"]
PROJECT = "demo-project"


class BigQueryProxyTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.work = Workdir("bigquery-proxy")
        cls.tokens = cls.bq = cls.cp = cls.agent = None
        try:
            cls.tokens = TokenEndpoint(cls.work.path).start()
            cls.account = ServiceAccount()
            cls.tokens.add_account(cls.account)
            cls.bq = FakeBigQuery(cls.tokens, project=PROJECT).start()
            cls.bq.add_table("crm", "customers", [("id", "INTEGER"), ("name", "STRING"),
                                                  ("email", "STRING"), ("ssn", "STRING")],
                             [(i + 1, f"Person {i + 1}", f"p{i + 1}@example.com", ssn)
                              for i, ssn in enumerate(SSNS)])
            cls.cp = ControlPlane(cls.work.path).start()
            cls.agent = Agent(cls.work.path, "a", cls.cp, cls.cp.enroll("agent-a", "vpc=a")).start()
            cls.idp = TokenIssuer()
            cls.port = cls.agent.gcs_port()
            out = cls.cp.apply(cls.policy()).stdout
            version = int(out.rsplit("policy version ", 1)[1])
            wait_for(lambda: cls.agent.status()["applied_version"] == version, what="policy applied")
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        for p in (cls.agent, cls.cp):
            if p:
                p.stop()
        for s in (cls.bq, cls.tokens):
            if s:
                s.stop()
        cls.work.cleanup(keep=False)

    @classmethod
    def policy(cls):
        key = cls.account.key_json(cls.tokens.url)
        rules = ""
        for name, group, access in (("readers", "ci", "read"), ("writers", "writers", "write"),
                                    ("admins", "admins", "admin")):
            rules += (f"---\nkind: AccessRule\nname: {name}\nsubjects: {{groups: [{group}]}}\n"
                      f"connections: {{names: [demo-bq]}}\naccess: {access}\n")
        return ("kind: Connection\nname: demo-bq\nprotocol: bigquery\n"
                f"upstream: {{host: 127.0.0.1, port: {cls.bq.port}, tls: verify_full, "
                f"ca_file: {cls.bq.ca_file}}}\n"
                f"credentials: {{username: {cls.account.email}, password: {json.dumps(key)}}}\n"
                "agents: {vpc: a}\n"
                + Stack.inline_issuer_yaml(cls.idp) + rules
                + "---\nkind: MaskingRule\nname: pii\nconnections: {names: [demo-bq]}\n"
                  "columns: [customers.ssn]\nstrategy: redact\n"
                + "---\nkind: ApprovalPolicy\nname: bq-approvers\napprovers: {groups: [dba]}\ntimeout: 60s\n"
                + "---\nkind: Guardrail\nname: bq-safety\nconnections: {names: [demo-bq]}\n"
                  "rules:\n"
                  "  - {match: drop_database, action: block}\n"
                  "  - {match: delete_without_where, action: block}\n"
                  "  - {match: ddl, action: require_approval, approval: bq-approvers}\n")

    def token(self, sub, groups=("ci",)):
        return self.idp.token(sub=sub, groups=list(groups))

    def request(self, method, path, token=None, body=None):
        ctx = ssl.create_default_context(cafile=self.agent.tls_ca())
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"https://localhost:{self.port}{path}", data=data,
                                     headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def query(self, sub, sql, groups=("ci",)):
        status, body = self.request("POST", f"/bigquery/v2/projects/{PROJECT}/queries",
                                    self.token(sub, groups), {"query": sql, "useLegacySql": False})
        return status, json.loads(body)

    @staticmethod
    def column(answer, name):
        names = [f["name"] for f in answer["schema"]["fields"]]
        i = names.index(name)
        return [row["f"][i]["v"] for row in answer["rows"]]

    def upstream_saw(self, text):
        return [r for r in self.bq.requests if text in r["path"] or text.encode() in (r["body"] or b"")]

    def statements(self, sub):
        return [b for t, b in session_events(self.cp, sub) if t == "statement"]

    def test_a_read_goes_through_with_the_service_accounts_token_and_leaves_its_event(self):
        caller = self.token("bq-lister")
        status, body = self.request("GET", f"/bigquery/v2/projects/{PROJECT}/datasets", caller)
        self.assertEqual(status, 200, body)
        self.assertEqual([d["datasetReference"]["datasetId"] for d in json.loads(body)["datasets"]], ["crm"])
        seen = [r for r in self.bq.requests if r["path"].endswith("/datasets") and r["method"] == "GET"]
        self.assertTrue(seen)
        for r in self.bq.requests:
            self.assertNotIn(caller, r["headers"].get("authorization", ""))
            self.assertTrue(self.tokens.valid(r["headers"]["authorization"][7:]))
        # Minted for BigQuery's scope.
        self.assertIn("https://www.googleapis.com/auth/bigquery",
                      [r["claims"]["scope"] for r in self.tokens.requests if r.get("claims")])
        events = wait_for(lambda: [b for b in self.statements("bq-lister")
                                   if b.get("fingerprint") == "datasets.list"] or None,
                          what="the datasets.list event")
        self.assertEqual(events[0]["classification"], "read")
        starts = [b for t, b in session_events(self.cp, "bq-lister") if t == "session_start"]
        self.assertEqual(starts[0]["connection_protocol"], "bigquery")

    def test_token_failures_are_refused_in_the_apis_error_shape(self):
        for token in (None, "not-a-jwt", self.idp.token(sub="x", groups=["ci"], aud="another-audience")):
            status, body = self.request("GET", f"/bigquery/v2/projects/{PROJECT}/datasets", token)
            self.assertEqual(status, 401, body)
            self.assertIn("error", json.loads(body))

    def test_result_rows_are_masked_by_what_each_column_is_made_of(self):
        status, answer = self.query("bq-reader", "SELECT id, name, ssn FROM crm.customers ORDER BY id")
        self.assertEqual(status, 200, answer)
        self.assertEqual(self.column(answer, "name"), ["Person 1", "Person 2", "Person 3"])
        self.assertEqual(self.column(answer, "ssn"), ["[REDACTED]"] * 3)
        # Renamed, aggregated, or under a wildcard: still the ssn column.
        for sql, name in (("SELECT ssn AS x FROM crm.customers", "x"),
                          ("SELECT c.ssn AS x FROM `crm.customers` c", "x"),
                          ("SELECT STRING_AGG(ssn, ',') AS s FROM crm.customers", "s"),
                          ("SELECT * FROM crm.customers", "ssn")):
            status, answer = self.query("bq-reader", sql)
            self.assertEqual(status, 200, answer)
            values = self.column(answer, name)
            self.assertTrue(values, sql)
            for v in values:
                self.assertNotIn(SSNS[0], v or "", sql)
                self.assertEqual(v, "[REDACTED]", sql)
        # A wildcard table or a star's REPLACE could carry it under another name: refused / masked.
        status, answer = self.query("bq-reader", "SELECT ssn FROM crm.cust*")
        self.assertEqual(status, 403, answer)
        self.assertIn("wildcard table", answer["error"]["message"])
        # A count carries no ssn: not masked.
        status, answer = self.query("bq-reader", "SELECT COUNT(*) AS n FROM crm.customers")
        self.assertEqual(self.column(answer, "n"), ["3"])
        event = wait_for(lambda: [b for b in self.statements("bq-reader")
                                  if b.get("masked_by") == "pii"] or None, what="a masked query's event")
        self.assertGreater(event[0]["masked_rows"], 0)

    def test_a_job_is_its_creators_alone(self):
        alice, bob = self.token("bq-alice"), self.token("bq-bob")
        status, body = self.request("POST", f"/bigquery/v2/projects/{PROJECT}/jobs", alice,
                                    {"configuration": {"query": {"query": "SELECT name, ssn FROM crm.customers",
                                                                 "useLegacySql": False}},
                                     "jobReference": {"projectId": PROJECT, "jobId": "alice_job_1"}})
        self.assertEqual(status, 200, body)
        path = f"/bigquery/v2/projects/{PROJECT}/queries/alice_job_1"
        before = len(self.upstream_saw("/queries/alice_job_1"))
        status, body = self.request("GET", path, bob)
        self.assertEqual(status, 404, body)
        self.assertIn("not yours", json.loads(body)["error"]["message"])
        self.assertEqual(len(self.upstream_saw("/queries/alice_job_1")), before)
        status, body = self.request("GET", f"/bigquery/v2/projects/{PROJECT}/jobs/alice_job_1", bob)
        self.assertEqual(status, 404, body)
        # Alice reads her results, masked by her job's SQL.
        status, body = self.request("GET", path, alice)
        self.assertEqual(status, 200, body)
        self.assertEqual(self.column(json.loads(body), "ssn"), ["[REDACTED]"] * 3)
        refused = wait_for(lambda: [b for b in self.statements("bq-bob") if b.get("refusal_kind") == "not_owner"]
                           or None, what="bob's not_owner refusal")
        self.assertIn("alice_job_1", refused[0]["statement"])

    def test_writes_guardrails_and_what_cannot_be_read_never_reach_the_service(self):
        before = len(self.bq.requests)
        # A read grant cannot write, by the SQL's own class.
        status, answer = self.query("bq-reader", "DELETE FROM crm.customers WHERE id = 1")
        self.assertEqual(status, 403, answer)
        self.assertIn("read", answer["error"]["message"])
        # Guardrails: DROP SCHEMA and a DELETE without a real WHERE, whatever the grant.
        status, answer = self.query("bq-admin", "DROP SCHEMA crm CASCADE", groups=("admins",))
        self.assertEqual(status, 403, answer)
        self.assertIn("bq-safety", answer["error"]["message"])
        status, answer = self.query("bq-admin", "DELETE FROM crm.customers WHERE true", groups=("admins",))
        self.assertEqual(status, 403, answer)
        self.assertIn("bq-safety", answer["error"]["message"])
        status, body = self.request("DELETE", f"/bigquery/v2/projects/{PROJECT}/datasets/crm",
                                    self.token("bq-admin", ("admins",)))
        self.assertEqual(status, 403, body)
        # Procedural SQL, legacy SQL and another project: refused as such.
        status, answer = self.query("bq-admin", "DECLARE x INT64 DEFAULT 1; SELECT x", groups=("admins",))
        self.assertIn("procedural language", answer["error"]["message"])
        status, body = self.request("POST", f"/bigquery/v2/projects/{PROJECT}/queries", self.token("bq-reader"),
                                    {"query": "SELECT 1"})
        self.assertIn("legacy SQL", json.loads(body)["error"]["message"])
        status, body = self.request("GET", "/bigquery/v2/projects/other-project/datasets", self.token("bq-reader"))
        self.assertEqual(status, 403, body)
        self.assertIn("not the connection's project", json.loads(body)["error"]["message"])
        self.assertEqual(len(self.bq.requests), before)
        self.assertEqual(self.bq.deleted, [])
        blocked = wait_for(lambda: [b for b in self.statements("bq-admin") if b.get("decision") == "blocked"]
                           or None, what="the blocked statements' events")
        self.assertTrue(any("DROP SCHEMA" in b["statement"] for b in blocked))

    def test_masked_columns_are_not_copied_where_they_cannot_be_masked(self):
        writer = self.token("bq-writer", ("writers",))
        before = len(self.bq.requests)
        for body in ({"configuration": {"extract": {"sourceTable": {"projectId": PROJECT, "datasetId": "crm",
                                                                    "tableId": "customers"},
                                                    "destinationUris": ["gs://b/out-*.csv"]}}},
                     {"configuration": {"query": {"query": "SELECT * FROM crm.customers", "useLegacySql": False,
                                                  "destinationTable": {"projectId": PROJECT, "datasetId": "crm",
                                                                       "tableId": "plain"}}}}):
            status, answer = self.request("POST", f"/bigquery/v2/projects/{PROJECT}/jobs", writer, body)
            self.assertEqual(status, 403, answer)
            self.assertIn("where the agent cannot mask them", json.loads(answer)["error"]["message"])
        status, answer = self.query("bq-writer", "INSERT crm.plain SELECT ssn FROM crm.customers",
                                    groups=("writers",))
        self.assertEqual(status, 403, answer)
        # Query results are read through their job, not as the hidden table they land in.
        status, answer = self.request("GET", f"/bigquery/v2/projects/{PROJECT}/datasets/_anon1/tables/anon1/data",
                                      self.token("bq-reader"))
        self.assertEqual(status, 403, answer)
        self.assertIn("jobs.getQueryResults", json.loads(answer)["error"]["message"])
        status, answer = self.request("GET", f"/bigquery/v2/projects/{PROJECT}/datasets/crm/tables/customers/data",
                                      self.token("bq-reader"))
        self.assertEqual(status, 403, answer)
        self.assertEqual(len(self.bq.requests), before)

    def test_a_dataset_change_waits_for_an_approval_and_replays(self):
        admin = self.token("bq-held", ("admins",))
        results = []
        waiting = threading.Thread(target=lambda: results.append(self.request(
            "PATCH", f"/bigquery/v2/projects/{PROJECT}/datasets/crm", admin, {"description": "held"})))
        waiting.start()

        def pending():
            out = json.loads(self.cp.ctl("approvals", "list", "--status", "pending", "-o", "json").stdout)
            return next((int(a["id"]) for a in out.get("approvals", [])
                         if "datasets/crm" in a["statement"]), None)
        approval = wait_for(pending, what="the dataset change's approval request")
        self.assertTrue(waiting.is_alive())
        self.assertEqual(self.bq.patched, [])
        self.cp.ctl("--token", self.idp.token(sub="dora", groups=["dba"]), "approvals", "approve", str(approval))
        waiting.join(30)
        self.assertEqual(results[0][0], 200, results[0][1])
        self.assertEqual(self.bq.patched, [("crm", {"description": "held"})])
        # The session replays: the request, the approval, the answer.
        session = wait_for(lambda: (json.loads(self.cp.ctl("sessions", "list", "--identity", "bq-held", "-o",
                                                           "json").stdout).get("sessions") or [{}])[0]
                           .get("session_id"), what="the held request's session")
        out = wait_for(lambda: (lambda o: o if "HTTP 200" in o else None)(
            self.cp.ctl("sessions", "replay", session).stdout), what="the replayed answer")
        self.assertIn("PATCH /bigquery/v2/projects/demo-project/datasets/crm", out)
        self.assertIn("APPROVED by dora", out)

    def test_the_discovery_document_names_the_agent(self):
        status, body = self.request("GET", "/$discovery/rest?version=v2", self.token("bq-lister"))
        self.assertEqual(status, 200, body[:300])
        doc = json.loads(body)
        self.assertEqual(doc["rootUrl"], f"https://localhost:{self.port}/")
        self.assertNotIn(f"127.0.0.1:{self.bq.port}", body.decode())

    # ---- the real bq, pointed at the agent ----

    def bq_cli(self, sub, groups, *args):
        token_file = os.path.join(self.work.path, f"{sub}.jwt")
        with open(token_file, "w") as f:
            f.write(self.token(sub, groups))
        env = dict(os.environ, CLOUDSDK_AUTH_ACCESS_TOKEN_FILE=token_file,
                   CLOUDSDK_CONFIG=os.path.join(self.work.path, "gcloud"),
                   CLOUDSDK_CORE_DISABLE_PROMPTS="1",
                   CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE=self.agent.tls_ca())
        return subprocess.run(["bq", f"--api=https://localhost:{self.port}", f"--project_id={PROJECT}", *args],
                              env=env, capture_output=True, text=True, timeout=180)

    @unittest.skipUnless(shutil.which("bq") and os.path.exists(BQ_DISCOVERY),
                         "google-cloud-cli's bq is not installed (it is on the machine image, not in Debian)")
    def test_bq_ls_and_query_through_the_agent(self):
        r = self.bq_cli("bq-cli", ("ci",), "ls")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("crm", r.stdout)
        r = self.bq_cli("bq-cli", ("ci",), "query", "--nouse_legacy_sql",
                        "SELECT name, ssn FROM crm.customers ORDER BY id")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("Person 1", r.stdout)
        self.assertIn("[REDACTED]", r.stdout)
        for ssn in SSNS:
            self.assertNotIn(ssn, r.stdout)
        # A write on a read grant: bq's user sees why.
        r = self.bq_cli("bq-cli", ("ci",), "query", "--nouse_legacy_sql", "DELETE FROM crm.customers WHERE id = 2")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("read", r.stdout + r.stderr)


if __name__ == "__main__":
    unittest.main()
