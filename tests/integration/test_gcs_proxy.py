"""Cloud Storage's JSON API through the agent (issue 26, first part): the caller's OIDC JWT as the
bearer token in, an access token of the Connection's service account out, every request
classified and decided by the same policy documents as SQL, and one audit event each.

No Google service runs here: the upstreams are stand-ins (gcs_standin.py) — a token endpoint that
verifies the agent's RS256 JWT-bearer assertion against the public half of a service-account key
the test made, and a Cloud Storage server that accepts only the access tokens that endpoint
issued. The caller is plain HTTPS (urllib) speaking the JSON API as Google's clients do."""

import base64
import datetime
import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
import unittest
import urllib.error
import urllib.parse
import urllib.request

from gcs_standin import FakeGcs, ServiceAccount, TokenEndpoint
from harness import (Agent, ControlPlane, Stack, TokenIssuer, Workdir, session_events,
                     wait_for)


CLIENTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "clients")


class GcsStack:
    """The stand-ins, a control plane, one agent labelled vpc=a, an OIDC issuer, and the
    Connection `demo-gcs` over the bucket `demo-bucket`."""

    def __enter__(self):
        self.work = Workdir("gcs-proxy")
        self.tokens = self.gcs = self.cp = self.agent = None
        try:
            self.tokens = TokenEndpoint(self.work.path).start()
            self.account = ServiceAccount()
            self.tokens.add_account(self.account)
            self.gcs = FakeGcs(self.tokens).start()
            self.gcs.add_bucket("demo-bucket")
            self.gcs.put("demo-bucket", "reports/q1.csv", b"id,total\n1,100\n", "text/csv")
            self.gcs.put("demo-bucket", "logs/app.log", b"started\n", "text/plain")
            self.cp = ControlPlane(self.work.path).start()
            self.agent = Agent(self.work.path, "a", self.cp, self.cp.enroll("agent-a", "vpc=a")).start()
            self.idp = TokenIssuer()
            self.port = self.agent.gcs_port()
            self.apply_and_wait(self.policy())
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        for p in (self.agent, self.cp):
            if p:
                p.stop()
        for s in (self.gcs, self.tokens):
            if s:
                s.stop()
        self.work.cleanup(keep=exc[0] is not None)
        return False

    def connection_yaml(self):
        key = self.account.key_json(self.tokens.url)
        return ("kind: Connection\nname: demo-gcs\nprotocol: gcs\n"
                f"upstream: {{host: 127.0.0.1, port: {self.gcs.port}, tls: verify_full, "
                f"ca_file: {self.gcs.ca_file}}}\n"
                f"credentials: {{username: {self.account.email}, password: {json.dumps(key)}}}\n"
                "agents: {vpc: a}\n")

    def policy(self, extra=""):
        rules = ""
        for name, group, access in (("readers", "ci", "read"), ("writers", "writers", "write"),
                                    ("admins", "admins", "admin")):
            rules += (f"---\nkind: AccessRule\nname: {name}\nsubjects: {{groups: [{group}]}}\n"
                      f"connections: {{names: [demo-gcs]}}\naccess: {access}\n")
        return (self.connection_yaml() + Stack.inline_issuer_yaml(self.idp) + rules
                + "---\nkind: ApprovalPolicy\nname: storage-approvers\n"
                  "approvers: {groups: [dba]}\ntimeout: 60s\n"
                + "---\nkind: Guardrail\nname: storage-safety\nconnections: {names: [demo-gcs]}\n"
                  "rules:\n"
                  "  - {match: drop_database, action: block}\n"
                  "  - {match: drop_table, action: block, tables: ['logs/*']}\n"
                  "  - {match: ddl, action: require_approval, approval: storage-approvers}\n"
                + extra)

    def apply_and_wait(self, yaml_text):
        out = self.cp.apply(yaml_text).stdout
        version = int(out.rsplit("policy version ", 1)[1])
        wait_for(lambda: self.agent.status()["applied_version"] == version, what="policy applied")
        return version

    def request(self, method, path, token=None, body=None, headers=None, authorization=None):
        """One request to the agent's Cloud Storage port: (status, headers, body bytes)."""
        ctx = ssl.create_default_context(cafile=self.agent.tls_ca())
        h = dict(headers or {})
        if authorization is not None:
            h["Authorization"] = authorization
        elif token is not None:
            h["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(f"https://localhost:{self.port}{path}", data=body,
                                     headers=h, method=method)
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def events(self, identity):
        return session_events(self.cp, identity)

    def ac3_counts(self):
        """The evidence export's AC-3 counts over the last hour."""
        now = datetime.datetime.now(datetime.timezone.utc)
        out = self.cp.ctl("evidence", "export", "--from",
                          (now - datetime.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                          "--to", (now + datetime.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")).stdout
        return next(c for c in json.loads(out)["controls"] if c["id"] == "AC-3")["counts"]


class GcsProxyTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.stack = GcsStack().__enter__()

    @classmethod
    def tearDownClass(cls):
        cls.stack.__exit__(None, None, None)

    def token(self, sub, groups=("ci",), **kw):
        return self.stack.idp.token(sub=sub, groups=groups, **kw)

    def upstream_requests(self, path_part):
        return [r for r in self.stack.gcs.requests if path_part in r["path"]]

    def statements(self, sub):
        return [b for t, b in self.stack.events(sub) if t == "statement"]

    def error_of(self, body):
        e = json.loads(body)["error"]
        self.assertEqual(e["errors"][0]["message"], e["message"])
        return e

    # ---- the token in, the service account's token out ----

    def test_a_byte_range_is_the_services_answer_uncut(self):
        """A Range read (resumed and sliced downloads) gets exactly the bytes the service sends for
        it: the agent's server does not apply the range a second time."""
        for first, last in ((0, 1), (3, 7), (9, 14)):
            status, headers, body = self.stack.request(
                "GET", "/storage/v1/b/demo-bucket/o/reports%2Fq1.csv?alt=media",
                self.token("ranger-bot"), headers={"Range": f"bytes={first}-{last}"})
            self.assertEqual((status, body), (206, b"id,total\n1,100\n"[first:last + 1]))
            self.assertEqual(headers["Content-Range"], f"bytes {first}-{last}/15")

    def test_list_and_read_objects_with_the_callers_token(self):
        jwt = self.token("reader-bot")
        status, _, body = self.stack.request(
            "GET", "/storage/v1/b/demo-bucket/o?prefix=reports/", jwt)
        self.assertEqual(status, 200, body)
        self.assertEqual([o["name"] for o in json.loads(body)["items"]], ["reports/q1.csv"])
        # The object's bytes as stored, also to a client that accepts compressed answers.
        status, headers, body = self.stack.request(
            "GET", "/demo-gcs/storage/v1/b/demo-bucket/o/reports%2Fq1.csv?alt=media", jwt,
            headers={"Accept-Encoding": "gzip"})
        self.assertEqual((status, body), (200, b"id,total\n1,100\n"))
        self.assertNotIn("Content-Encoding", headers)
        self.assertTrue(headers["Content-Type"].startswith("text/csv"), headers)
        # The links in metadata name the agent as the caller reached it, not the service.
        status, _, body = self.stack.request(
            "GET", "/demo-gcs/storage/v1/b/demo-bucket/o/reports%2Fq1.csv", jwt)
        self.assertEqual(status, 200, body)
        media = json.loads(body)["mediaLink"]
        self.assertTrue(media.startswith(f"https://localhost:{self.stack.port}/demo-gcs/download/"),
                        media)
        self.assertNotIn(f":{self.stack.gcs.port}", body.decode())
        status, _, body = self.stack.request("GET", media.split(f":{self.stack.port}", 1)[1], jwt)
        self.assertEqual((status, body), (200, b"id,total\n1,100\n"))
        # The upstream saw the service account's token, never the caller's JWT.
        seen = self.upstream_requests("/o/reports%2Fq1.csv")
        self.assertTrue(seen)
        for r in seen:
            bearer = r["headers"]["authorization"].split(" ", 1)[1]
            self.assertNotEqual(bearer, jwt)
            self.assertTrue(self.stack.tokens.valid(bearer))
        # One event per request: who, what, how it went.
        def gets():
            found = [s for s in self.statements("reader-bot") if s.get("fingerprint") == "objects.get"]
            return found if len(found) == 3 else None
        found = wait_for(gets, what="three objects.get events")
        self.assertEqual({(e["classification"], e["command_tags"]) for e in found}, {("read", "HTTP 200")})
        download = [e for e in found if e["statement"].startswith("GET /download/")]
        self.assertEqual(download[0]["bytes"], len(b"id,total\n1,100\n"))
        self.assertIn("GET /storage/v1/b/demo-bucket/o/reports%2Fq1.csv",
                      [e["statement"] for e in found])
        start = [b for t, b in self.stack.events("reader-bot") if t == "session_start"]
        self.assertEqual(start[0]["connection_protocol"], "gcs")
        self.assertEqual(start[0]["connection"], "demo-gcs")

    def test_the_access_token_is_minted_once_and_cached(self):
        before = len([r for r in self.stack.tokens.requests if r["outcome"] == "issued"])
        for _ in range(3):
            status, _, _ = self.stack.request("GET", "/storage/v1/b/demo-bucket", self.token("cache-bot"))
            self.assertEqual(status, 200)
        after = [r for r in self.stack.tokens.requests if r["outcome"] == "issued"]
        self.assertLessEqual(len(after) - before, 1)
        # The assertion named the service account and the token endpoint, signed with its key.
        claims = after[-1]["claims"]
        self.assertEqual((claims["iss"], claims["aud"]), (self.stack.account.email, self.stack.tokens.url))

    def test_token_failures_are_401_in_googles_error_shape_with_an_event(self):
        for auth in (None, "Basic dXNlcjpwdw==", "Bearer not-a-jwt",
                     "Bearer " + TokenIssuer().token(sub="forger"),
                     "Bearer " + self.token("late-bot", lifetime=-600),
                     "Bearer " + self.token("elsewhere-bot", aud="another-audience")):
            status, headers, body = self.stack.request("GET", "/storage/v1/b/demo-bucket/o",
                                                       authorization=auth)
            self.assertEqual(status, 401, (auth, body))
            self.assertIn("Bearer", headers.get("WWW-Authenticate", ""))
            self.assertEqual(self.error_of(body)["code"], 401)
        # The refusal says why (here: the token was made for another service).
        self.assertIn("audience 'another-audience' is not accepted", self.error_of(body)["message"])
        self.assertFalse([r for r in self.stack.gcs.requests
                          if r["headers"].get("authorization", "").endswith("not-a-jwt")])
        # On record as refused Cloud Storage sessions, for the evidence's AC-3.
        wait_for(lambda: self.stack.ac3_counts().get("sessions_refused_by_protocol", {})
                 .get("gcs", 0) >= 6, what="refused gcs sessions in the evidence")

    def test_a_caller_without_an_access_rule_is_refused(self):
        status, _, body = self.stack.request("GET", "/storage/v1/b/demo-bucket/o",
                                             self.token("stranger", groups=("nobody",)))
        self.assertEqual(status, 403, body)
        self.assertIn("demo-gcs", self.error_of(body)["message"])

    # ---- decided on what the request does ----

    def test_a_read_grant_cannot_upload_or_delete(self):
        jwt = self.token("ro-bot")
        before = len(self.stack.gcs.requests)
        status, _, body = self.stack.request(
            "POST", "/upload/storage/v1/b/demo-bucket/o?uploadType=media&name=x.txt", jwt,
            body=b"nope", headers={"Content-Type": "text/plain"})
        self.assertEqual(status, 403, body)
        self.assertIn("read-only", self.error_of(body)["message"])
        status, _, body = self.stack.request(
            "DELETE", "/storage/v1/b/demo-bucket/o/reports%2Fq1.csv", jwt)
        self.assertEqual(status, 403, body)
        self.assertEqual(len(self.stack.gcs.requests), before)  # nothing reached the upstream
        self.assertIn("reports/q1.csv", self.stack.gcs.buckets["demo-bucket"])
        # Events arrive one by one: wait for both, not for the first.
        refused = wait_for(lambda: (lambda r: r if len(r) >= 2 else None)(
            [s for s in self.statements("ro-bot") if s.get("refusal_kind") == "read_only"]),
            what="both read_only events")
        self.assertEqual({s["fingerprint"] for s in refused}, {"objects.insert", "objects.delete"})

    def test_a_writer_uploads_and_deletes(self):
        jwt = self.token("rw-bot", groups=("writers",))
        status, _, body = self.stack.request(
            "POST", "/upload/storage/v1/b/demo-bucket/o?uploadType=media&name=out%2Fa.txt", jwt,
            body=b"hello", headers={"Content-Type": "text/plain"})
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body)["name"], "out/a.txt")
        self.assertEqual(self.stack.gcs.buckets["demo-bucket"]["out/a.txt"][0], b"hello")
        boundary = "sluice-test-boundary"
        multipart = (f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n"
                     + json.dumps({"name": "out/b.json", "contentType": "application/json"})
                     + f"\r\n--{boundary}\r\nContent-Type: application/json\r\n\r\n"
                     + '{"k": 1}' + f"\r\n--{boundary}--\r\n").encode()
        status, _, body = self.stack.request(
            "POST", "/upload/storage/v1/b/demo-bucket/o?uploadType=multipart", jwt, body=multipart,
            headers={"Content-Type": f"multipart/related; boundary={boundary}"})
        self.assertEqual(status, 200, body)
        self.assertEqual(self.stack.gcs.buckets["demo-bucket"]["out/b.json"][0], b'{"k": 1}')
        status, _, body = self.stack.request("DELETE", "/storage/v1/b/demo-bucket/o/out%2Fa.txt", jwt)
        self.assertEqual(status, 204, body)
        self.assertNotIn("out/a.txt", self.stack.gcs.buckets["demo-bucket"])
        # An ACL in the upload's metadata is access control: a write grant does not reach it.
        acl = multipart.replace(b'"contentType"', b'"acl": [{"entity": "allUsers", "role": '
                                b'"READER"}], "contentType"')
        status, _, body = self.stack.request(
            "POST", "/upload/storage/v1/b/demo-bucket/o?uploadType=multipart", jwt, body=acl,
            headers={"Content-Type": f"multipart/related; boundary={boundary}"})
        self.assertEqual(status, 403, body)
        self.assertIn("needs admin access", self.error_of(body)["message"])
        status, _, body = self.stack.request(
            "PATCH", "/storage/v1/b/demo-bucket/o/out%2Fb.json?predefinedAcl=publicRead", jwt,
            body=b"{}", headers={"Content-Type": "application/json"})
        self.assertEqual(status, 403, body)
        events = wait_for(lambda: [s for s in self.statements("rw-bot")
                                   if s.get("command_tags") == "HTTP 204"], what="delete event")
        self.assertEqual(events[0]["classification"], "write")

    def test_guardrails_block_a_bucket_delete_and_deletes_under_a_prefix(self):
        jwt = self.token("admin-bot", groups=("admins",))
        status, _, body = self.stack.request("DELETE", "/storage/v1/b/demo-bucket", jwt)
        self.assertEqual(status, 403, body)
        self.assertIn('guardrail "storage-safety": drop_database', self.error_of(body)["message"])
        status, _, body = self.stack.request("DELETE", "/storage/v1/b/demo-bucket/o/logs%2Fapp.log", jwt)
        self.assertEqual(status, 403, body)
        self.assertIn("drop_table", self.error_of(body)["message"])
        self.assertIn("logs/app.log", self.stack.gcs.buckets["demo-bucket"])
        self.assertIn("demo-bucket", self.stack.gcs.buckets)
        blocked = wait_for(lambda: (lambda b: b if len(b) >= 2 else None)(
            [s for s in self.statements("admin-bot") if s.get("decision") == "blocked"]),
            what="both blocked events")
        self.assertEqual(len(blocked), 2)

    def test_credentials_never_leave_through_the_gateway(self):
        jwt = self.token("leak-bot", groups=("admins",))
        for method, path in (("POST", "/storage/v1/projects/demo-project/hmacKeys?serviceAccountEmail=x"),
                             ("GET", "/storage/v1/projects/demo-project/hmacKeys"),
                             ("GET", "/storage/v1/b/demo-bucket/o/logs%2Fapp.log?alt=media"
                                     "&X-Goog-Signature=abc&X-Goog-Credential=x"),
                             ("GET", "/storage/v1/b/demo-bucket/o?access_token=ya29.x"),
                             ("GET", "/storage/v1/b/demo-bucket/o/logs%2Fapp.log/unknownVerb"),
                             ("GET", "/compute/v1/projects/demo-project/zones")):
            status, _, body = self.stack.request(method, path, jwt, body=b"" if method == "POST" else None)
            self.assertEqual(status, 403, (path, body))
        # Bucket lists and creation are kept to the Connection's project.
        status, _, body = self.stack.request("GET", "/storage/v1/b?project=other-project", jwt)
        self.assertEqual(status, 403, body)
        status, _, body = self.stack.request("GET", "/storage/v1/b?project=demo-project", jwt)
        self.assertEqual(status, 200, body)
        # Nothing the caller gets carries the service account's access token or key.
        issued = self.stack.tokens.issued
        self.assertTrue(issued)
        for token in issued:
            self.assertNotIn(token.encode(), body)
        self.assertNotIn(b"PRIVATE KEY", body)
        for _, event in self.stack.events("leak-bot"):
            text = json.dumps(event)
            for token in issued:
                self.assertNotIn(token, text)
            self.assertNotIn("PRIVATE KEY", text)

    def test_answers_are_masked_by_the_rules_detectors(self):
        """A MaskingRule's detectors mask what a caller reads: an object's text line by line as it
        streams (a line cut by the service's chunks included), the API's JSON; what cannot be
        searched (binary types, byte ranges) is refused rather than relayed; an exempt caller
        gets the bytes as stored."""
        lines = [f"{i},user{i}@example.com,{'x' * 40}" for i in range(60000)]  # ~4 MiB
        contacts = ("id,email,note\n" + "\n".join(lines) + "\n").encode()
        self.stack.gcs.put("demo-bucket", "people/contacts.csv", contacts, "text/csv")
        self.stack.gcs.put("demo-bucket", "people/owner.json", b'{"owner": "carol@example.net"}',
                           "application/json")
        self.stack.gcs.put("demo-bucket", "people/photo.bin", b"\x89PNG alice@example.com",
                           "application/octet-stream")
        self.stack.apply_and_wait(self.stack.policy(
            "---\nkind: AccessRule\nname: analysts\nsubjects: {groups: [analysts]}\n"
            "connections: {names: [demo-gcs]}\naccess: read\n"
            "---\nkind: MaskingRule\nname: storage-pii\nconnections: {names: [demo-gcs]}\n"
            "detectors: [email]\nstrategy: redact\nexempt: {groups: [ci, writers, admins]}\n"))
        analyst = self.token("analyst-bot", groups=("analysts",))
        try:
            status, headers, body = self.stack.request(
                "GET", "/storage/v1/b/demo-bucket/o/people%2Fcontacts.csv?alt=media", analyst)
            self.assertEqual(status, 200, body[:200])
            self.assertNotIn(b"@example.com", body)
            self.assertEqual(body.count(b"\n"), contacts.count(b"\n"))
            self.assertTrue(body.startswith(b"id,email,note\n0,"), body[:100])
            self.assertTrue(all(line.endswith(b"x" * 40) for line in body.split(b"\n")[1:-1]))
            self.assertNotIn("x-goog-hash", {k.lower() for k in headers})  # it no longer matches
            status, _, body = self.stack.request(
                "GET", "/download/storage/v1/b/demo-bucket/o/people%2Fowner.json?alt=media", analyst)
            self.assertEqual(status, 200, body)
            self.assertNotIn(b"carol@example.net", body)
            self.assertIn("owner", json.loads(body))
            # The API's JSON: masked too, and without the hashes of bytes the caller gets masked.
            status, _, body = self.stack.request(
                "GET", "/storage/v1/b/demo-bucket/o?prefix=people%2F", analyst)
            self.assertEqual(status, 200, body)
            self.assertEqual(len(json.loads(body)["items"]), 3)
            self.assertNotIn(b"md5Hash", body)
            # Nothing that cannot be searched goes out.
            status, _, body = self.stack.request(
                "GET", "/storage/v1/b/demo-bucket/o/people%2Fphoto.bin?alt=media", analyst)
            self.assertEqual(status, 403, body)
            self.assertIn("cannot be searched", self.error_of(body)["message"])
            self.assertNotIn(b"alice", body)
            status, _, body = self.stack.request(
                "GET", "/storage/v1/b/demo-bucket/o/people%2Fcontacts.csv?alt=media", analyst,
                headers={"Range": "bytes=0-99"})
            self.assertEqual(status, 403, body)
            self.assertIn("byte range", self.error_of(body)["message"])
            # Google's Node client reads the masked object (no hash to disagree with).
            r = self.node_client("node-analyst", ("analysts",), "cat", "demo-bucket",
                                 "people/owner.json")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertNotIn("carol@example.net", r.stdout)
            # An exempt caller gets the bytes as stored.
            status, _, body = self.stack.request(
                "GET", "/storage/v1/b/demo-bucket/o/people%2Fcontacts.csv?alt=media",
                self.token("exempt-bot"))
            self.assertEqual((status, body == contacts), (200, True))
            events = wait_for(lambda: [s for s in self.statements("analyst-bot")
                                       if s.get("masked_by")], what="masked events")
            self.assertEqual(events[0]["masked_by"], "storage-pii")
            refused = wait_for(lambda: [s for s in self.statements("analyst-bot")
                                        if "unmaskable" in s.get("error", "")
                                        or s.get("refusal_kind") == "unmaskable"], what="refusals")
            self.assertTrue(refused)
            # A rule by table column has nothing to mask objects by: refused, not ignored.
            self.stack.apply_and_wait(
                "kind: MaskingRule\nname: storage-cols\nconnections: {names: [demo-gcs]}\n"
                "columns: [customers.email]\nstrategy: redact\n"
                "exempt: {groups: [ci, writers, admins]}\n")
            status, _, body = self.stack.request(
                "GET", "/storage/v1/b/demo-bucket/o/people%2Fcontacts.csv?alt=media", analyst)
            self.assertEqual(status, 403, body)
            self.assertIn("no columns", self.error_of(body)["message"])
        finally:
            # (apply adds and replaces; what it does not name stays)
            self.stack.cp.ctl("delete", "masking_rule", "storage-cols", check=False)
            self.stack.cp.ctl("delete", "masking_rule", "storage-pii")
            out = self.stack.cp.ctl("delete", "access_rule", "analysts").stdout
            version = int(out.rsplit("policy version ", 1)[1].split()[0])
            wait_for(lambda: self.stack.agent.status()["applied_version"] == version,
                     what="policy applied")
            for name in ("contacts.csv", "owner.json", "photo.bin"):
                del self.stack.gcs.buckets["demo-bucket"][f"people/{name}"]

    # ---- large objects ----

    def agent_peak_rss_kib(self):
        with open(f"/proc/{self.stack.agent.process.proc.pid}/status") as f:
            return int(next(l for l in f if l.startswith("VmHWM:")).split()[1])

    def test_a_large_download_streams_in_bounded_memory(self):
        """An object larger than the agent holds in memory (32 MiB) comes through whole: the agent
        streams it through a 1 MiB window; its peak memory does not grow by the object's size."""
        import hashlib
        data = bytes(range(256)) * (40 * 4096)  # 40 MiB
        self.stack.gcs.put("demo-bucket", "big/blob.bin", data)
        peak_before = self.agent_peak_rss_kib()
        ctx = ssl.create_default_context(cafile=self.stack.agent.tls_ca())
        req = urllib.request.Request(
            f"https://localhost:{self.stack.port}/storage/v1/b/demo-bucket/o/big%2Fblob.bin?alt=media",
            headers={"Authorization": f"Bearer {self.token('big-bot')}"})
        digest, size = hashlib.sha256(), 0
        with urllib.request.urlopen(req, context=ctx, timeout=120) as r:
            self.assertEqual(r.headers["Content-Length"], str(len(data)))
            while chunk := r.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
        self.assertEqual((size, digest.hexdigest()), (len(data), hashlib.sha256(data).hexdigest()))
        if not os.environ.get("SLUICE_SANITIZE"):  # RSS means nothing under AddressSanitizer
            self.assertLess(self.agent_peak_rss_kib() - peak_before, 16 * 1024)
        found = wait_for(lambda: [s for s in self.statements("big-bot")
                                  if s.get("fingerprint") == "objects.get"], what="event")
        self.assertEqual((found[0]["bytes"], found[0]["command_tags"]), (len(data), "HTTP 200"))
        self.assertNotIn("error", found[0])

        # A caller that stops reading half-way: the transfer ends, on record as cut short.
        with urllib.request.urlopen(urllib.request.Request(
                req.full_url, headers={"Authorization": f"Bearer {self.token('quitter-bot')}"}),
                context=ctx, timeout=120) as r:
            r.read(2 << 20)
        cut = wait_for(lambda: [s for s in self.statements("quitter-bot")
                                if s.get("fingerprint") == "objects.get"], timeout=60,
                       what="the cut-short event")
        self.assertLess(cut[0]["bytes"], len(data))
        self.assertIn("ended before the last byte", cut[0]["error"])
        del self.stack.gcs.buckets["demo-bucket"]["big/blob.bin"]

    # ---- approval holds ----

    def pending(self, statement_part, after=0):
        def listed():
            out = json.loads(self.stack.cp.ctl("approvals", "list", "--status", "pending", "-o",
                                               "json").stdout)
            for a in out.get("approvals", []):
                if statement_part in a["statement"] and int(a["id"]) > after:
                    return int(a["id"])
            return None
        return wait_for(listed, timeout=20, what=f"a pending approval for {statement_part!r}")

    def decide(self, approval_id, verb, reason=None):
        args = ["--token", self.stack.idp.token(sub="dora", groups=["dba"]), "approvals", verb,
                str(approval_id)]
        return self.stack.cp.ctl(*args, *(["--reason", reason] if reason else []))

    def test_a_bucket_change_waits_for_an_approval(self):
        """A require_approval guardrail (ddl) holds the request: the caller just waits; approved,
        it goes through; denied, it is a 403 with the decision, and the bucket is unchanged."""
        jwt = self.token("held-bot", groups=("admins",))
        results = []

        def patch(labels):
            results.append(self.stack.request(
                "PATCH", "/storage/v1/b/demo-bucket", jwt, body=json.dumps({"labels": labels}).encode(),
                headers={"Content-Type": "application/json"}))
        waiting = threading.Thread(target=patch, args=({"team": "data"},))
        waiting.start()
        first = self.pending("PATCH /storage/v1/b/demo-bucket")
        self.assertTrue(waiting.is_alive())
        self.assertNotIn("labels", self.stack.gcs.bucket_meta["demo-bucket"])
        self.decide(first, "approve")
        waiting.join(30)
        status, _, body = results[0]
        self.assertEqual(status, 200, body)
        self.assertEqual(self.stack.gcs.bucket_meta["demo-bucket"]["labels"], {"team": "data"})

        waiting = threading.Thread(target=patch, args=({"team": "nobody"},))
        waiting.start()
        second = self.pending("PATCH /storage/v1/b/demo-bucket", after=first)
        self.decide(second, "deny", reason="not today")
        waiting.join(30)
        status, _, body = results[1]
        self.assertEqual(status, 403, body)
        self.assertIn("not today", self.error_of(body)["message"])
        self.assertEqual(self.stack.gcs.bucket_meta["demo-bucket"]["labels"], {"team": "data"})
        approvals = wait_for(lambda: [b for t, b in self.stack.events("held-bot") if t == "approval"]
                             if len([t for t, _ in self.stack.events("held-bot") if t == "approval"]) == 2
                             else None, what="approval events")
        self.assertEqual(sorted((a["approval_id"], a["decision"]) for a in approvals),
                         [(first, "approved"), (second, "denied")])

    def test_a_caller_that_goes_away_withdraws_its_held_request(self):
        """The caller's connection closes while its request waits: the approval request is
        withdrawn (an approver can no longer run it for nobody), the service never sees the
        request, and the approval event says cancelled."""
        jwt = self.token("gone-bot", groups=("admins",))
        body = json.dumps({"labels": {"team": "gone"}}).encode()
        listed = json.loads(self.stack.cp.ctl("approvals", "list", "-o", "json").stdout)
        last = max([int(a["id"]) for a in listed.get("approvals", [])] or [0])
        patches = lambda: len([q for q in self.stack.gcs.requests if q["method"] == "PATCH"])
        sent = patches()
        ctx = ssl.create_default_context(cafile=self.stack.agent.tls_ca())
        raw = socket.create_connection(("localhost", self.stack.port), timeout=30)
        conn = ctx.wrap_socket(raw, server_hostname="localhost")
        conn.sendall(b"PATCH /storage/v1/b/demo-bucket HTTP/1.1\r\nHost: localhost\r\n"
                     + f"Authorization: Bearer {jwt}\r\nContent-Type: application/json\r\n"
                       f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        approval_id = self.pending("PATCH /storage/v1/b/demo-bucket", after=last)
        conn.close()
        wait_for(lambda: "withdrawn" in self.stack.cp.ctl("approvals", "show",
                                                          str(approval_id)).stdout,
                 what=f"request {approval_id} to be withdrawn")
        r = self.stack.cp.ctl("--token", self.stack.idp.token(sub="dora", groups=["dba"]),
                              "approvals", "approve", str(approval_id), check=False)
        self.assertIn(f"approval request {approval_id} is already withdrawn", r.stderr)
        self.assertNotEqual(self.stack.gcs.bucket_meta["demo-bucket"].get("labels"),
                            {"team": "gone"})
        self.assertEqual(patches(), sent)
        approval = wait_for(lambda: [b for t, b in self.stack.events("gone-bot") if t == "approval"],
                            what="the approval event")[0]
        self.assertEqual((approval["decision"], approval["refusal_kind"]), ("cancelled", "cancelled"))

    # ---- Google's Node.js client library ----

    def node_client(self, sub, groups, *args):
        npm = os.environ.get("SLUICE_NPM_DIR", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                            "..", "..", "build", "npm"))
        modules = os.path.join(npm, "node_modules")
        if not os.path.exists(os.path.join(modules, "@google-cloud", "storage", "package.json")):
            self.fail(f"npm @google-cloud/storage is not installed in {npm}: scripts/test installs it")
        return subprocess.run(["node", os.path.join(CLIENTS, "gcs_storage.js"),
                               f"https://localhost:{self.stack.port}", *args],
                              capture_output=True, text=True, timeout=120,
                              env=dict(os.environ, SLUICE_TOKEN=self.token(sub, groups=groups),
                                       NODE_EXTRA_CA_CERTS=self.stack.agent.tls_ca(),
                                       NODE_PATH=modules))

    def test_googles_node_client_library(self):
        r = self.node_client("node-reader", ("ci",), "ls", "demo-bucket", "reports/")
        self.assertEqual((r.returncode, r.stdout), (0, "reports/q1.csv\n"), r.stderr)
        r = self.node_client("node-reader", ("ci",), "cat", "demo-bucket", "reports/q1.csv")
        self.assertEqual((r.returncode, r.stdout), (0, "id,total\n1,100\n"), r.stderr)
        r = self.node_client("node-reader", ("ci",), "put", "demo-bucket", "node/x.txt", "no")
        self.assertEqual(r.returncode, 1)
        self.assertIn("ERROR 403: Sluice: your access to connection \"demo-gcs\" is read-only", r.stderr)
        # The upload's checksums (crc32c, md5) are the client's to check: they match.
        r = self.node_client("node-writer", ("writers",), "put", "demo-bucket", "node/x.txt", "hello")
        self.assertEqual((r.returncode, r.stdout), (0, "uploaded\n"), r.stderr)
        self.assertEqual(self.stack.gcs.buckets["demo-bucket"]["node/x.txt"][0], b"hello")
        r = self.node_client("node-writer", ("writers",), "rm", "demo-bucket", "node/x.txt")
        self.assertEqual((r.returncode, r.stdout), (0, "deleted\n"), r.stderr)

    # ---- attribution: a service account per group ----

    def test_callers_run_as_their_groups_service_account(self):
        """A Connection's `impersonate` entries run a group's callers as its own service account
        (minted through IAM Credentials by the key's account), so the service's logs name it;
        others run as the key's account; an account the key may not act as is refused."""
        auditors = "auditors@demo-project.iam.gserviceaccount.com"
        self.stack.tokens.token_creators[auditors] = {self.stack.account.email}
        connection = self.stack.connection_yaml().replace(
            "agents: {vpc: a}\n",
            "agents: {vpc: a}\n"
            f"iam_credentials_url: https://127.0.0.1:{self.stack.tokens.port}\n"
            "impersonate:\n"
            f"  - {{callers: {{groups: [auditors]}}, service_account: {auditors}}}\n"
            "  - {callers: {groups: [rogue]}, service_account: "
            "owner@demo-project.iam.gserviceaccount.com}\n")
        rules = "".join(f"---\nkind: AccessRule\nname: {g}\nsubjects: {{groups: [{g}]}}\n"
                        "connections: {names: [demo-gcs]}\naccess: read\n"
                        for g in ("auditors", "rogue"))
        self.stack.apply_and_wait(connection + rules)
        try:
            path = "/storage/v1/b/demo-bucket/o/reports%2Fq1.csv?alt=media"
            for _ in range(2):
                status, _, body = self.stack.request("GET", path, self.token("auditor-bot",
                                                                             groups=("auditors",)))
                self.assertEqual((status, body), (200, b"id,total\n1,100\n"))
            status, _, body = self.stack.request("GET", path, self.token("plain-reader"))
            self.assertEqual(status, 200, body)
            seen = [self.stack.tokens.account_of(r["headers"]["authorization"][7:])
                    for r in self.upstream_requests("/o/reports%2Fq1.csv")[-3:]]
            self.assertEqual(seen, [auditors, auditors, self.stack.account.email])
            # Minted once, then cached.
            mints = [r for r in self.stack.tokens.requests
                     if r["path"].endswith(":generateAccessToken")]
            self.assertEqual([r["outcome"] for r in mints],
                             [f"issued for {auditors} to {self.stack.account.email}"])
            status, _, body = self.stack.request("GET", path, self.token("rogue-bot",
                                                                         groups=("rogue",)))
            self.assertEqual(status, 502, body)
            self.assertIn("may not act as owner@demo-project.iam.gserviceaccount.com",
                          self.error_of(body)["message"])
            starts = wait_for(lambda: [b for t, b in self.stack.events("auditor-bot")
                                       if t == "session_start"], what="session_start")
            self.assertEqual(starts[0]["upstream_user"], auditors)
            starts = wait_for(lambda: [b for t, b in self.stack.events("plain-reader")
                                       if t == "session_start"], what="session_start")
            self.assertEqual(starts[0]["upstream_user"], self.stack.account.email)
        finally:
            for g in ("auditors", "rogue"):
                self.stack.cp.ctl("delete", "access_rule", g)
            self.stack.apply_and_wait(self.stack.connection_yaml())

    # ---- recording ----

    def replay(self, identity):
        """`sluicectl sessions replay` of each of `identity`'s sessions, joined."""
        listed = json.loads(self.stack.cp.ctl("sessions", "list", "--identity", identity, "-o",
                                              "json").stdout).get("sessions", [])
        return "\n".join(self.stack.cp.ctl("sessions", "replay", s["session_id"]).stdout
                         for s in listed)

    def test_requests_are_recorded_and_replayed(self):
        """Each request is recorded — its head (without the caller's token) and body, the answer
        as the caller got it — with bodies capped, and `sluicectl sessions replay` shows it."""
        jwt = self.token("recorded-bot", groups=("writers",))
        status, _, body = self.stack.request(
            "POST", "/upload/storage/v1/b/demo-bucket/o?uploadType=media&name=rec%2Fnote.txt", jwt,
            body=b"recorded words", headers={"Content-Type": "text/plain"})
        self.assertEqual(status, 200, body)
        big = b"0123456789abcdef" * (16 << 10)  # 256 KiB: over the recording's cap
        status, _, body = self.stack.request(
            "POST", "/upload/storage/v1/b/demo-bucket/o?uploadType=media&name=rec%2Fbig.bin", jwt,
            body=big, headers={"Content-Type": "application/octet-stream"})
        self.assertEqual(status, 200, body)
        status, _, body = self.stack.request(
            "DELETE", "/storage/v1/b/demo-bucket/o/logs%2Fapp.log", jwt)
        self.assertEqual(status, 403, body)
        wait_for(lambda: len([s for s in self.statements("recorded-bot")]) >= 3, what="events")
        text = wait_for(lambda: (lambda t: t if t.count("session ended") >= 3 else None)(
            self.replay("recorded-bot")), what="three replayable sessions")
        self.assertIn("> POST /upload/storage/v1/b/demo-bucket/o?uploadType=media&name=rec%2Fnote.txt",
                      text)
        self.assertIn("body (14 bytes): recorded words", text)
        self.assertIn("< HTTP 200", text)
        self.assertIn('"name": "rec/note.txt"', text.replace('":"', '": "'))
        self.assertIn("not recorded)", text)  # the big body's cap, counted
        self.assertIn("body (262144 bytes)", text)
        self.assertIn("BLOCKED by guardrail storage-safety", text)
        self.assertNotIn(jwt, text)
        self.assertNotIn("Bearer", text)
        for name in ("note.txt", "big.bin"):
            del self.stack.gcs.buckets["demo-bucket"][f"rec/{name}"]

    # ---- batches ----

    @staticmethod
    def batch_body(boundary, requests):
        """A multipart/mixed batch body, as Google's client libraries write one: each request an
        application/http part with a Content-ID."""
        out = b""
        for i, request in enumerate(requests):
            out += (f"--{boundary}\r\nContent-Type: application/http\r\n"
                    f"Content-Transfer-Encoding: binary\r\nContent-ID: <req-{i + 1}>\r\n\r\n"
                    ).encode() + request + b"\r\n"
        return out + f"--{boundary}--\r\n".encode()

    @staticmethod
    def batch_answers(headers, body):
        """{content id: (status, headers, body)} of a multipart/mixed batch answer."""
        import email.parser
        import http.client
        import io
        message = email.parser.BytesParser().parsebytes(
            f"Content-Type: {headers['Content-Type']}\r\n\r\n".encode() + body)
        assert message.is_multipart(), body[:200]
        out = {}

        class Sock:
            def __init__(self, data):
                self.data = data

            def makefile(self, *args, **kwargs):
                return io.BytesIO(self.data)
        for part in message.get_payload():
            raw = part.get_payload(decode=True)
            r = http.client.HTTPResponse(Sock(raw))
            r.begin()
            out[part["Content-ID"]] = (r.status, dict(r.getheaders()), r.read())
        return out

    def test_a_batch_is_many_requests_each_decided_on_its_own(self):
        self.stack.gcs.put("demo-bucket", "tmp/x.txt", b"scratch", "text/plain")
        acl = json.dumps({"acl": [{"entity": "allUsers", "role": "READER"}]}).encode()
        body = self.batch_body("batch_sluice_test", [
            b"GET /storage/v1/b/demo-bucket/o/reports%2Fq1.csv HTTP/1.1\r\nAccept: application/json\r\n",
            b"DELETE /storage/v1/b/demo-bucket/o/logs%2Fapp.log HTTP/1.1\r\n",
            b"PATCH /storage/v1/b/demo-bucket/o/reports%2Fq1.csv HTTP/1.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: " + str(len(acl)).encode()
            + b"\r\n\r\n" + acl,
            b"DELETE /storage/v1/b/demo-bucket/o/tmp%2Fx.txt HTTP/1.1\r\n",
            b"POST /batch/storage/v1 HTTP/1.1\r\n",
            b"GET /download/storage/v1/b/demo-bucket/o/reports%2Fq1.csv?alt=media HTTP/1.1\r\n",
            b"this is not an HTTP request",
        ])
        before = len(self.stack.gcs.requests)
        status, headers, answer = self.stack.request(
            "POST", "/batch/storage/v1", self.token("batch-bot", groups=("writers",)), body=body,
            headers={"Content-Type": "multipart/mixed; boundary=batch_sluice_test"})
        self.assertEqual(status, 200, answer[:300])
        self.assertTrue(headers["Content-Type"].startswith("multipart/mixed; boundary="), headers)
        parts = self.batch_answers(headers, answer)
        self.assertEqual(len(parts), 7)
        status, _, got = parts["<response-req-1>"]
        self.assertEqual((status, json.loads(got)["name"]), (200, "reports/q1.csv"))
        self.assertNotIn(f":{self.stack.gcs.port}", got.decode())  # links name the agent
        status, _, got = parts["<response-req-2>"]
        self.assertEqual(status, 403)
        self.assertIn('guardrail "storage-safety"', self.error_of(got)["message"])
        status, _, got = parts["<response-req-3>"]
        self.assertEqual(status, 403)
        self.assertIn("needs admin access", self.error_of(got)["message"])
        self.assertEqual(parts["<response-req-4>"][0], 204)
        for i in (5, 6, 7):
            status, _, got = parts[f"<response-req-{i}>"]
            self.assertEqual(status, 400, got)
        self.assertIn("JSON API calls only", self.error_of(parts["<response-req-6>"][2])["message"])
        self.assertIn("cannot be read", self.error_of(parts["<response-req-7>"][2])["message"])
        # What ran is what was decided: the service saw the two allowed requests, one by one.
        seen = [(r["method"], r["path"]) for r in self.stack.gcs.requests[before:]]
        self.assertEqual(seen, [("GET", "/storage/v1/b/demo-bucket/o/reports%2Fq1.csv"),
                                ("DELETE", "/storage/v1/b/demo-bucket/o/tmp%2Fx.txt")])
        self.assertIn("logs/app.log", self.stack.gcs.buckets["demo-bucket"])
        self.assertNotIn("tmp/x.txt", self.stack.gcs.buckets["demo-bucket"])
        events = wait_for(lambda: (lambda e: e if len(e) >= 7 else None)(
            self.statements("batch-bot")), what="an event per request of the batch")
        self.assertEqual(sorted(e.get("decision", e.get("command_tags")) for e in events),
                         sorted(["HTTP 200", "blocked", "refused", "HTTP 204", "refused",
                                 "refused", "refused"]))
        # A body that is no batch, or a batch of more than 100 requests, is refused whole.
        for bad_body, content_type in (
                (b"plain", "text/plain"),
                (self.batch_body("b", [b"GET /storage/v1/b/demo-bucket HTTP/1.1\r\n"] * 101),
                 "multipart/mixed; boundary=b")):
            status, _, got = self.stack.request(
                "POST", "/batch/storage/v1", self.token("batch-bot", groups=("writers",)),
                body=bad_body, headers={"Content-Type": content_type})
            self.assertEqual(status, 400, got)

    # ---- resumable uploads ----

    def start_resumable(self, jwt, name, metadata=None):
        status, headers, body = self.stack.request(
            "POST", "/upload/storage/v1/b/demo-bucket/o?uploadType=resumable", jwt,
            body=json.dumps(dict({"name": name}, **(metadata or {}))).encode(),
            headers={"Content-Type": "application/json; charset=UTF-8",
                     "X-Upload-Content-Type": "text/plain"})
        return status, headers, body

    def test_a_resumable_upload_is_bound_to_the_caller_who_started_it(self):
        alice, mallory = (self.token("alice-bot", groups=("writers",)),
                          self.token("mallory-bot", groups=("writers",)))
        before = set(self.stack.gcs.upload_sessions)
        status, headers, body = self.start_resumable(alice, "up/resumable.txt")
        self.assertEqual(status, 200, body)
        location = headers["Location"]
        # The caller gets the agent's session URI: the service's (a capability that writes as the
        # service account) stays at the agent, and so does its upload id header.
        service_ids = set(self.stack.gcs.upload_sessions) - before
        self.assertEqual(len(service_ids), 1)
        self.assertTrue(location.startswith(f"https://localhost:{self.stack.port}/upload/storage/v1/"
                                            "b/demo-bucket/o?uploadType=resumable&upload_id="),
                        location)
        self.assertFalse(any(i in location for i in service_ids), location)
        self.assertFalse(any(i in v for i in service_ids for v in headers.values()), headers)
        session_path = location.split(f":{self.stack.port}", 1)[1]
        # Another caller with the same grant cannot write through it (nor probe it), and the
        # service's own id is no use at the agent.
        for jwt, target in ((mallory, session_path),
                            (alice, session_path.split("upload_id=")[0] + "upload_id="
                             + next(iter(service_ids)))):
            status, _, body = self.stack.request("PUT", target, jwt, body=b"evil",
                                                 headers={"Content-Range": "bytes 0-3/4"})
            self.assertEqual(status, 404, body)
            self.assertIn("no such upload session", self.error_of(body)["message"])
        self.assertEqual(self.stack.gcs.upload_sessions[next(iter(service_ids))]["data"], b"")
        # The owner sends the bytes in two steps: 308 with what the service holds, then the object.
        status, headers, body = self.stack.request("PUT", session_path, alice, body=b"hello ",
                                                   headers={"Content-Range": "bytes 0-5/*"})
        self.assertEqual((status, headers.get("Range")), (308, "bytes=0-5"), body)
        status, _, body = self.stack.request("PUT", session_path, alice, body=b"world",
                                             headers={"Content-Range": "bytes 6-10/11"})
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body)["name"], "up/resumable.txt")
        self.assertEqual(self.stack.gcs.buckets["demo-bucket"]["up/resumable.txt"],
                         (b"hello world", "text/plain"))
        # Finished: the session is gone at the agent too.
        status, _, _ = self.stack.request("PUT", session_path, alice, body=b"",
                                          headers={"Content-Range": "bytes */11"})
        self.assertEqual(status, 404)
        refused = wait_for(lambda: [s for s in self.statements("mallory-bot")
                                    if s.get("refusal_kind") == "not_owner"], what="not_owner event")
        self.assertEqual(refused[0]["statement"], "PUT /upload/storage/v1/b/demo-bucket/o")
        steps = wait_for(lambda: (lambda e: e if len(e) >= 3 else None)(
            [s for s in self.statements("alice-bot") if s.get("fingerprint") == "objects.insert"
             and "command_tags" in s]), what="the upload's three forwarded steps")
        self.assertEqual(sorted(s["command_tags"] for s in steps), ["HTTP 200", "HTTP 200", "HTTP 308"])
        self.assertTrue(all(s["classification"] == "write" for s in steps))
        del self.stack.gcs.buckets["demo-bucket"]["up/resumable.txt"]

    def test_a_resumable_upload_is_decided_at_its_start_and_again_when_the_policy_changes(self):
        before = dict(self.stack.gcs.upload_sessions)
        reader = self.token("ro-up-bot", groups=("ci",))
        status, _, body = self.start_resumable(reader, "up/no.txt")
        self.assertEqual(status, 403, body)
        self.assertIn("read-only", self.error_of(body)["message"])
        writer = self.token("acl-up-bot", groups=("writers",))
        status, _, body = self.start_resumable(
            writer, "up/acl.txt", {"acl": [{"entity": "allUsers", "role": "READER"}]})
        self.assertEqual(status, 403, body)
        self.assertIn("needs admin access", self.error_of(body)["message"])
        self.assertEqual(self.stack.gcs.upload_sessions, before)
        # Cancelled by its owner: the service's session ends too.
        status, headers, body = self.start_resumable(writer, "up/cancel.txt")
        self.assertEqual(status, 200, body)
        session_path = headers["Location"].split(f":{self.stack.port}", 1)[1]
        status, _, _ = self.stack.request("DELETE", session_path, writer)
        self.assertEqual(status, 499)
        self.assertEqual(self.stack.gcs.upload_sessions, before)
        # A grant taken away between the start and the bytes: the step is refused.
        status, headers, body = self.start_resumable(writer, "up/late.txt")
        self.assertEqual(status, 200, body)
        session_path = headers["Location"].split(f":{self.stack.port}", 1)[1]
        rule = ("kind: AccessRule\nname: writers\nsubjects: {groups: [writers]}\n"
                "connections: {names: [demo-gcs]}\naccess: %s\n")
        self.stack.apply_and_wait(rule % "read")
        try:
            status, _, body = self.stack.request("PUT", session_path, writer, body=b"late",
                                                 headers={"Content-Range": "bytes 0-3/4"})
            self.assertEqual(status, 403, body)
            self.assertIn("read-only", self.error_of(body)["message"])
            self.assertNotIn("up/late.txt", self.stack.gcs.buckets["demo-bucket"])
        finally:
            self.stack.apply_and_wait(rule % "write")

    def test_googles_node_client_uploads_resumably_in_chunks(self):
        import hashlib
        size = 600 * 1024  # three chunks of 256 KiB at most
        r = self.node_client("node-resumer", ("writers",), "put-resumable", "demo-bucket",
                             "node/big.bin", str(size))
        self.assertEqual(r.returncode, 0, r.stderr)
        data = bytes(i % 251 for i in range(size))
        stored = self.stack.gcs.buckets["demo-bucket"]["node/big.bin"][0]
        self.assertEqual(stored, data)
        md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
        self.assertEqual(r.stdout.split(), [str(size), md5])
        puts = [q for q in self.stack.gcs.requests if q["method"] == "PUT"
                and q["path"].startswith("/upload/")]
        self.assertGreaterEqual(len(puts), 3)
        del self.stack.gcs.buckets["demo-bucket"]["node/big.bin"]

    # ---- streamed uploads ----

    def upload_stream(self, jwt, name, body, content_length=None):
        """A media upload whose body is `body` (bytes, a file object or an iterable of chunks:
        without a length, sent chunked): (status, body)."""
        headers = {"Content-Type": "application/octet-stream"}
        if content_length is not None:
            headers["Content-Length"] = str(content_length)
        return self.stack.request(
            "POST", f"/upload/storage/v1/b/demo-bucket/o?uploadType=media&name={name}", jwt,
            body=body, headers=headers)[::2]

    def test_uploads_stream_in_bounded_memory(self):
        """An object's bytes go to the service as the caller sends them: an upload larger than
        the agent holds in memory (32 MiB) arrives whole, with or without a declared length, and
        the agent's peak memory does not grow by its size."""
        import hashlib
        import io
        data = bytes(range(256)) * (40 * 4096)  # 40 MiB
        jwt = self.token("big-writer", groups=("writers",))
        peak_before = self.agent_peak_rss_kib()
        status, body = self.upload_stream(jwt, "big%2Fup.bin", io.BytesIO(data), len(data))
        self.assertEqual(status, 200, body[:300])
        stored = self.stack.gcs.buckets["demo-bucket"]["big/up.bin"][0]
        self.assertEqual(hashlib.sha256(stored).digest(), hashlib.sha256(data).digest())
        if not os.environ.get("SLUICE_SANITIZE"):  # RSS means nothing under AddressSanitizer
            self.assertLess(self.agent_peak_rss_kib() - peak_before, 16 * 1024)
        # Chunked (no Content-Length): the service gets it chunked too.
        chunks = [data[i:i + (1 << 20)] for i in range(0, 3 << 20, 1 << 20)]
        status, body = self.upload_stream(jwt, "big%2Fchunked.bin", iter(chunks))
        self.assertEqual(status, 200, body[:300])
        self.assertEqual(self.stack.gcs.buckets["demo-bucket"]["big/chunked.bin"][0], b"".join(chunks))
        seen = [r for r in self.stack.gcs.requests if r["query"].get("name") == "big/chunked.bin"]
        self.assertEqual(seen[-1]["headers"].get("transfer-encoding"), "chunked")
        # A refused upload's body never reaches the service; the caller gets the refusal.
        before = len(self.stack.gcs.requests)
        status, body = self.upload_stream(self.token("small-reader"), "big%2Fno.bin",
                                          data[:1 << 20], 1 << 20)
        self.assertEqual(status, 403, body)
        self.assertIn("read-only", self.error_of(body)["message"])
        self.assertEqual(len(self.stack.gcs.requests), before)
        # A body read whole (JSON metadata, multipart) is still capped: a clear 413.
        status, _, body = self.stack.request(
            "PATCH", "/storage/v1/b/demo-bucket/o/big%2Fup.bin", jwt, body=b" " * (33 << 20),
            headers={"Content-Type": "application/json"})
        self.assertEqual(status, 413, body[:300])
        self.assertIn("over the agent's limit", self.error_of(body)["message"])
        # And a body on a GET is refused before it is read.
        status, _, body = self.stack.request("GET", "/storage/v1/b/demo-bucket/o", jwt,
                                             body=b"x" * 10)
        self.assertEqual(status, 400, body)
        events = wait_for(lambda: [s for s in self.statements("big-writer")
                                   if s.get("command_tags") == "HTTP 200"
                                   and s.get("fingerprint") == "objects.insert"], what="events")
        self.assertTrue(events)
        for name in ("up.bin", "chunked.bin"):
            del self.stack.gcs.buckets["demo-bucket"][f"big/{name}"]

    def test_googles_node_client_streams_a_large_resumable_upload(self):
        """Node's default resumable upload sends the whole object in one request of unknown
        length; it streams through the agent."""
        import hashlib
        size = 40 << 20
        r = self.node_client("node-streamer", ("writers",), "put-resumable", "demo-bucket",
                             "node/stream.bin", str(size), "0")
        self.assertEqual(r.returncode, 0, r.stderr)
        data = bytes(i % 251 for i in range(251)) * (size // 251) + bytes(range(size % 251))
        stored = self.stack.gcs.buckets["demo-bucket"]["node/stream.bin"][0]
        self.assertEqual(len(stored), size)
        self.assertEqual(hashlib.md5(stored).digest(), hashlib.md5(data).digest())
        del self.stack.gcs.buckets["demo-bucket"]["node/stream.bin"]

    # ---- gcloud, pointed at the agent ----

    def gcloud(self, sub, groups, *args):
        """`gcloud storage ...` through the agent with the caller's JWT as its access token."""
        token_file = os.path.join(self.stack.work.path, f"{sub}.jwt")
        with open(token_file, "w") as f:
            f.write(self.token(sub, groups=groups))
        env = dict(os.environ,
                   CLOUDSDK_API_ENDPOINT_OVERRIDES_STORAGE=f"https://localhost:{self.stack.port}/storage/v1/",
                   CLOUDSDK_AUTH_ACCESS_TOKEN_FILE=token_file,
                   CLOUDSDK_CONFIG=os.path.join(self.stack.work.path, "gcloud"),
                   CLOUDSDK_CORE_PROJECT="demo-project", CLOUDSDK_CORE_DISABLE_PROMPTS="1",
                   REQUESTS_CA_BUNDLE=self.stack.agent.tls_ca())
        return subprocess.run(["gcloud", "storage", *args], env=env, capture_output=True,
                              text=True, timeout=180)

    @unittest.skipUnless(shutil.which("gcloud"),
                         "google-cloud-cli is not installed (it is on the machine image, not in "
                         "Debian's archive)")
    def test_gcloud_storage_through_the_agent(self):
        r = self.gcloud("gcloud-reader", ("ci",), "ls", "-r", "gs://demo-bucket/**")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("gs://demo-bucket/reports/q1.csv", r.stdout.split())
        r = self.gcloud("gcloud-reader", ("ci",), "cat", "gs://demo-bucket/reports/q1.csv")
        self.assertEqual((r.returncode, r.stdout), (0, "id,total\n1,100\n"), r.stderr)
        source = os.path.join(self.stack.work.path, "upload.txt")
        with open(source, "w") as f:
            f.write("from gcloud\n")
        r = self.gcloud("gcloud-reader", ("ci",), "cp", source, "gs://demo-bucket/up/g.txt")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("read-only", r.stderr)
        r = self.gcloud("gcloud-writer", ("writers",), "cp", source, "gs://demo-bucket/up/g.txt")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.stack.gcs.buckets["demo-bucket"]["up/g.txt"][0], b"from gcloud\n")
        r = self.gcloud("gcloud-writer", ("writers",), "rm", "gs://demo-bucket/up/g.txt")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotIn("up/g.txt", self.stack.gcs.buckets["demo-bucket"])
        # A guardrail's refusal reaches gcloud's user with its reason.
        r = self.gcloud("gcloud-admin", ("admins",), "rm", "gs://demo-bucket/logs/app.log")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn('blocked by guardrail "storage-safety"', r.stderr)
        self.assertIn("logs/app.log", self.stack.gcs.buckets["demo-bucket"])

    def test_a_bad_service_account_key_is_refused_at_apply(self):
        bad = self.stack.connection_yaml().replace("service_account", "user_account", 1)
        r = self.stack.cp.ctl("apply", "-f", "-", stdin=bad, check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("credentials.password: not a service account's JSON key", r.stdout + r.stderr)
        self.assertNotIn("PRIVATE KEY", r.stdout + r.stderr)


if __name__ == "__main__":
    unittest.main()
