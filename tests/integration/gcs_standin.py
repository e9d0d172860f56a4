"""Stand-ins for Google's OAuth token endpoint and Cloud Storage JSON API, for integration tests.

No real Google service runs here: these are small HTTPS servers on loopback, with certificates
from a throwaway test CA, that behave like the parts of Google the agent talks to when it injects
a Connection's service account. The token endpoint verifies the RS256 JWT-bearer assertion against
the public half of a key the test made and issues opaque access tokens; the storage stand-in
accepts only those tokens. Both record every request they get, so tests can assert what the
upstream saw (and what it never saw).
"""

import base64
import hashlib
import json
import os
import re
import secrets
import socket
import sqlite3
import ssl
import sys
import threading
import time
import urllib.parse
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from harness import make_test_ca

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_JSON = "application/json; charset=UTF-8"


class ServiceAccount:
    """A Google service account the test owns: an RSA 2048 key and the key file Google would
    give out for it."""

    def __init__(self, email="sluice-test@demo-project.iam.gserviceaccount.com",
                 project_id="demo-project"):
        self.email, self.project_id = email, project_id
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.private_key_id = secrets.token_hex(20)
        self.client_id = str(10**20 + secrets.randbelow(9 * 10**20))

    def public_pem(self):
        return self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    def key_json(self, token_uri):
        """The JSON text of this account's key file, naming `token_uri` as its token endpoint;
        the private key is PKCS#8 PEM, as Google writes it."""
        pem = self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()).decode()
        return json.dumps({
            "type": "service_account", "project_id": self.project_id,
            "private_key_id": self.private_key_id, "private_key": pem,
            "client_email": self.email, "client_id": self.client_id,
            "auth_uri": "https://accounts.google.com/o/oauth2/auth", "token_uri": token_uri,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/"
                                    + urllib.parse.quote(self.email, safe=""),
            "universe_domain": "googleapis.com",
        }, indent=2) + "\n"

    def assertion(self, aud, scope="https://www.googleapis.com/auth/devstorage.read_write",
                  lifetime=3600, **overrides):
        """A JWT-bearer assertion signed with this key, as a client library makes one; a claim
        given as None in `overrides` is left out."""
        now = int(time.time())
        claims = {"iss": self.email, "scope": scope, "aud": aud, "iat": now, "exp": now + lifetime}
        claims.update(overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        return jwt.encode(claims, self.key, algorithm="RS256",
                          headers={"kid": self.private_key_id})


class _Handler(BaseHTTPRequestHandler):
    """Reads one request (Content-Length or chunked body) and hands it to the stand-in."""
    protocol_version = "HTTP/1.1"
    timeout = 30
    standin = None  # set per server by _HttpsStandin

    def setup(self):
        super().setup()
        self.standin._track(self.connection, True)

    def finish(self):
        self.standin._track(self.connection, False)
        super().finish()

    def _dispatch(self):
        self.standin._handle(self, self._read_body())

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch

    def _read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return bytes(body)
                body += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def reply(self, status, body=b"", content_type=None, headers=()):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        if status != 204:
            self.send_header("Content-Type", content_type or _JSON)
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], OSError):  # TLS and connection errors are expected
            super().handle_error(request, client_address)


class _HttpsStandin:
    """A threaded HTTPS server on 127.0.0.1 (port chosen by the kernel, listening from
    construction) whose requests go to self._handle(handler, body)."""

    def __init__(self, tls_files):
        self.tls_files = tls_files
        self.ca_file = tls_files["cacert"]
        self.requests = []
        self._lock = threading.Lock()
        self._connections = set()
        self._server = _Server(("127.0.0.1", 0), type("Handler", (_Handler,), {"standin": self}))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tls_files["server-cert"], tls_files["server-key"])
        # The handshake runs in the connection's thread, so a silent client holds up nobody.
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True,
                                                  do_handshake_on_connect=False)
        self.port = self._server.server_address[1]
        self._thread = None

    def start(self):
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self):
        """Stops listening and cuts open keep-alive connections, so a stopped upstream is down."""
        if self._thread:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()
        with self._lock:
            for conn in list(self._connections):
                try:
                    socket.socket.shutdown(conn, socket.SHUT_RDWR)
                except OSError:
                    pass

    def _track(self, conn, is_open):
        with self._lock:
            (self._connections.add if is_open else self._connections.discard)(conn)

    def _record(self, entry):
        with self._lock:
            self.requests.append(entry)
        return entry


class TokenEndpoint(_HttpsStandin):
    """Google's OAuth 2.0 token endpoint for the JWT-bearer grant: POST /token with
    grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<RS256 JWT>.

    `workdir` gets the test CA (harness.make_test_ca) unless `tls_files` (its output) is given.
    `requests` holds {path, form, outcome, claims} per request (outcome "issued" or the reason
    for refusing); `issued` holds every access token handed out. `expires_in` may be lowered
    before a request to make tokens expire sooner."""

    def __init__(self, workdir, tls_files=None, expires_in=3599):
        super().__init__(tls_files or make_test_ca(os.path.join(workdir, "tls")))
        self.url = f"https://127.0.0.1:{self.port}/token"
        self.expires_in = expires_in
        self.issued = []
        self._accounts = {}
        self._expiry = {}
        # IAM Credentials' generateAccessToken, on the same server: who may act as whom (the
        # Service Account Token Creator role), and whose each issued token is.
        self.token_creators = {}  # target email -> set of emails allowed to mint its tokens
        self._owner = {}  # token -> the service account it acts as

    def add_account(self, sa):
        with self._lock:
            self._accounts[sa.email] = sa

    def account_of(self, token):
        """The service account `token` acts as (None: not issued here)."""
        with self._lock:
            return self._owner.get(token)

    def valid(self, token):
        """Whether `token` was issued here and has not expired."""
        with self._lock:
            return self._expiry.get(token, 0) > time.time()

    def _handle(self, h, body):
        m = re.fullmatch(r"/v1/projects/-/serviceAccounts/([^/:]+):generateAccessToken",
                         h.path.partition("?")[0])
        if m is not None and h.command == "POST":
            return self._generate_access_token(h, urllib.parse.unquote(m[1]), body)
        form = dict(urllib.parse.parse_qsl(body.decode(errors="replace"), keep_blank_values=True))
        entry = self._record({"path": h.path, "form": form, "outcome": None, "claims": None})
        if h.command != "POST" or h.path.partition("?")[0] != "/token":
            entry["outcome"] = "not found"
            return h.reply(404, {"error": "not_found", "error_description": "no such endpoint"})
        if form.get("grant_type") != JWT_BEARER:
            entry["outcome"] = "Invalid grant_type: " + form.get("grant_type", "")
            return h.reply(400, {"error": "unsupported_grant_type",
                                 "error_description": entry["outcome"]})
        try:
            claims = self._verify(form.get("assertion", ""))
        except (jwt.InvalidTokenError, ValueError) as e:
            entry["outcome"] = str(e) or type(e).__name__
            return h.reply(400, {"error": "invalid_grant", "error_description": entry["outcome"]})
        token = "ya29.test-" + secrets.token_urlsafe(24)
        with self._lock:
            self.issued.append(token)
            self._expiry[token] = time.time() + self.expires_in
            self._owner[token] = claims["iss"]
        entry.update(outcome="issued", claims=claims)
        h.reply(200, {"access_token": token, "expires_in": self.expires_in,
                      "token_type": "Bearer"}, headers=[("Cache-Control", "no-store")])

    def _generate_access_token(self, h, target, body):
        """IAM Credentials: a token of `target` for a caller whose own token's account holds
        the Token Creator role on it."""
        entry = self._record({"path": h.path, "form": {}, "outcome": None, "claims": None})
        auth = h.headers.get("Authorization", "")
        source = self.account_of(auth[7:]) if auth.startswith("Bearer ") else None
        if source is None or not self.valid(auth[7:]):
            entry["outcome"] = "unauthenticated"
            return h.reply(401, {"error": {"code": 401, "message": "Request had invalid "
                                           "authentication credentials.",
                                           "status": "UNAUTHENTICATED"}})
        with self._lock:
            allowed = source in self.token_creators.get(target, set())
        request = json.loads(body or b"{}")
        if not allowed or not request.get("scope"):
            entry["outcome"] = f"{source} may not act as {target}"
            return h.reply(403, {"error": {"code": 403, "message": "Permission "
                                           "'iam.serviceAccounts.getAccessToken' denied on "
                                           "resource (or it may not exist).",
                                           "status": "PERMISSION_DENIED"}})
        token = "ya29.test-" + secrets.token_urlsafe(24)
        with self._lock:
            self.issued.append(token)
            self._expiry[token] = time.time() + self.expires_in
            self._owner[token] = target
        entry["outcome"] = f"issued for {target} to {source}"
        h.reply(200, {"accessToken": token,
                      "expireTime": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                  time.gmtime(time.time() + self.expires_in))})

    def _verify(self, assertion):
        """The assertion's claims if it is an RS256 JWT from a registered account, for this
        endpoint, live, at most an hour long and with a scope; raises otherwise."""
        iss = jwt.decode(assertion, options={"verify_signature": False}).get("iss")
        with self._lock:
            sa = self._accounts.get(iss)
        if sa is None:
            raise ValueError(f"Invalid JWT: unknown issuer {iss!r}")
        claims = jwt.decode(assertion, sa.public_pem(), algorithms=["RS256"], audience=self.url,
                            issuer=sa.email,
                            options={"require": ["iss", "aud", "iat", "exp", "scope"]})
        if claims["exp"] - claims["iat"] > 3600:
            raise ValueError("Invalid JWT: expiration more than an hour after issue")
        return claims


def _error(status, reason, message, headers=()):
    """A reply (the arguments of _Handler.reply) in Google's JSON API error shape."""
    return (status, {"error": {"code": status, "message": message, "errors": [
        {"message": message, "domain": "global", "reason": reason}]}}, _JSON, headers)


# Objects over this size get no crc32c (computed in Python, it would take seconds per MiB);
# clients then check the md5 alone.
_CRC32C_MAX = 1 << 20


def _crc32c(data):
    """CRC-32C (Castagnoli), as Cloud Storage reports it in `crc32c` and `x-goog-hash`."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def _rfc3339(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


_ROUTE = re.compile(r"/(upload/|download/)?storage/v1/b(?:/([^/]+)(/o(?:/(.+))?)?)?")


class FakeGcs(_HttpsStandin):
    """The Cloud Storage JSON API v1 (buckets and simple object reads, media/multipart/resumable
    uploads, listing and deletes), answering only `Authorization: Bearer` tokens that `token_endpoint`
    issued. Serves with the token endpoint's test CA unless `tls_files` is given.

    `buckets` is {bucket: {object name: (bytes, content_type)}}; `requests` holds, per request,
    {method, path (raw), query, headers (lower-case names), body_length, status}."""

    def __init__(self, token_endpoint, tls_files=None):
        super().__init__(tls_files or token_endpoint.tls_files)
        self.url = f"https://127.0.0.1:{self.port}"
        self.token_endpoint = token_endpoint
        self.buckets = {}
        self.bucket_meta = {}
        self._stamps = {}  # (bucket, object name) -> (generation, time written)
        self._last_generation = 0
        # Resumable upload sessions: upload_id -> {bucket, name, content_type, data (bytearray)}.
        self.upload_sessions = {}

    def add_bucket(self, name, project="demo-project"):
        with self._lock:
            self._create_bucket(name, project)

    def put(self, bucket, name, data, content_type="application/octet-stream"):
        with self._lock:
            return self._put(bucket, name, data, content_type)

    def _create_bucket(self, name, project):
        now = _rfc3339(time.time())
        self.buckets[name] = {}
        self.bucket_meta[name] = {
            "kind": "storage#bucket", "id": name, "selfLink": f"{self.url}/storage/v1/b/{name}",
            "projectNumber": "123456789012", "project": project, "name": name,
            "timeCreated": now, "updated": now, "metageneration": "1", "location": "US",
            "locationType": "multi-region", "storageClass": "STANDARD", "etag": "CAE="}
        return self.bucket_meta[name]

    def _put(self, bucket, name, data, content_type):
        self._last_generation = max(time.time_ns() // 1000, self._last_generation + 1)
        self.buckets[bucket][name] = (bytes(data), content_type)
        self._stamps[(bucket, name)] = (self._last_generation, time.time())
        return self._resource(bucket, name)

    def _resource(self, bucket, name):
        data, content_type = self.buckets[bucket][name]
        generation, written = self._stamps[(bucket, name)]
        quoted = urllib.parse.quote(name, safe="")
        md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
        return {
            "kind": "storage#object", "id": f"{bucket}/{name}/{generation}",
            "selfLink": f"{self.url}/storage/v1/b/{bucket}/o/{quoted}",
            "mediaLink": f"{self.url}/download/storage/v1/b/{bucket}/o/{quoted}"
                         f"?generation={generation}&alt=media",
            "name": name, "bucket": bucket, "generation": str(generation), "metageneration": "1",
            "contentType": content_type, "storageClass": "STANDARD", "size": str(len(data)),
            "md5Hash": md5,
            "etag": base64.b64encode(str(generation).encode()).decode(),
            "timeCreated": _rfc3339(written), "updated": _rfc3339(written),
            "timeStorageClassUpdated": _rfc3339(written),
            **({"crc32c": base64.b64encode(_crc32c(data).to_bytes(4, "big")).decode()}
               if len(data) <= _CRC32C_MAX else {})}

    def _handle(self, h, body):
        raw_path, _, raw_query = h.path.partition("?")
        query = dict(urllib.parse.parse_qsl(raw_query, keep_blank_values=True))
        entry = self._record({"method": h.command, "path": raw_path, "query": query,
                              "headers": {k.lower(): v for k, v in h.headers.items()},
                              "body_length": len(body), "status": None})
        try:
            response = self._route(h, raw_path, query, body)
        except ValueError as e:  # a malformed JSON body, page token, number or multipart body
            response = _error(400, "invalid", f"Invalid argument: {e}")
        entry["status"] = response[0]
        h.reply(*response)

    def _route(self, h, raw_path, query, body):
        auth = h.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or not self.token_endpoint.valid(auth[7:]):
            reason, message = (("authError", "Invalid Credentials") if auth else
                               ("required", "Anonymous caller does not have storage access."))
            return _error(401, reason, message,
                          [("WWW-Authenticate", 'Bearer realm="https://accounts.google.com/"')])
        m = _ROUTE.fullmatch(raw_path)
        if m is None:
            return _error(404, "notFound", "Not Found")
        kind, bucket, o, obj = m.groups()
        bucket = bucket and urllib.parse.unquote(bucket)
        obj = obj and urllib.parse.unquote(obj)
        with self._lock:
            if bucket is None and not kind:
                return self._buckets_op(h, query, body)
            if bucket not in self.buckets:
                return _error(404, "notFound", "The specified bucket does not exist.")
            if kind == "upload/" and o and obj is None and "upload_id" in query:
                return self._resumable_step(h, bucket, query, body)
            if kind == "upload/" and o and obj is None and h.command == "POST":
                return self._upload(h, bucket, query, body)
            if kind == "download/" and obj and h.command == "GET":
                return self._object_op(h, bucket, obj, dict(query, alt="media"))
            if kind:
                return _error(404, "notFound", "Not Found")
            if o is None:
                return self._bucket_op(h, bucket, body)
            if obj is None and h.command == "GET":
                return self._list(bucket, query)
            if obj is not None:
                return self._object_op(h, bucket, obj, query)
            return _error(404, "notFound", "Not Found")

    def _buckets_op(self, h, query, body):
        if "project" not in query:
            return _error(400, "required", "Required parameter: project")
        if h.command == "GET":
            items = [dict(m) for m in self.bucket_meta.values() if m["project"] == query["project"]]
            return (200, {"kind": "storage#buckets", **({"items": items} if items else {})})
        if h.command == "POST":
            name = json.loads(body or b"{}").get("name")
            if not name:
                return _error(400, "required", "Required")
            if name in self.buckets:
                return _error(409, "conflict", "Your previous request to create the named bucket "
                                           "succeeded and you already own it.")
            return (200, dict(self._create_bucket(name, query["project"])))
        return _error(404, "notFound", "Not Found")

    def _bucket_op(self, h, bucket, body):
        if h.command == "GET":
            return (200, dict(self.bucket_meta[bucket]))
        if h.command == "PATCH":
            self.bucket_meta[bucket].update(json.loads(body or b"{}"))
            return (200, dict(self.bucket_meta[bucket]))
        if h.command == "DELETE":
            if self.buckets[bucket]:
                return _error(409, "conflict", "The bucket you tried to delete is not empty.")
            del self.buckets[bucket], self.bucket_meta[bucket]
            return (204,)
        return _error(404, "notFound", "Not Found")

    def _list(self, bucket, query):
        prefix, delimiter = query.get("prefix", ""), query.get("delimiter", "")
        entries = {}  # name or prefix -> is a prefix
        for name in self.buckets[bucket]:
            if not name.startswith(prefix):
                continue
            cut = name.find(delimiter, len(prefix)) if delimiter else -1
            if cut >= 0:
                entries[name[:cut + len(delimiter)]] = True
            else:
                entries[name] = False
        names = sorted(entries)
        if "pageToken" in query:
            start = base64.urlsafe_b64decode(query["pageToken"]).decode()
            names = [n for n in names if n >= start]
        page_size = int(query.get("maxResults") or 1000)
        page, rest = names[:page_size], names[page_size:]
        result = {"kind": "storage#objects"}
        prefixes = [n for n in page if entries[n]]
        items = [self._resource(bucket, n) for n in page if not entries[n]]
        if prefixes:
            result["prefixes"] = prefixes
        if items:
            result["items"] = items
        if rest:
            result["nextPageToken"] = base64.urlsafe_b64encode(rest[0].encode()).decode()
        return (200, result)

    def _object_op(self, h, bucket, name, query):
        if name not in self.buckets[bucket]:
            return _error(404, "notFound", f"No such object: {bucket}/{name}")
        if h.command == "DELETE":
            del self.buckets[bucket][name], self._stamps[(bucket, name)]
            return (204,)
        if h.command != "GET":
            return _error(404, "notFound", "Not Found")
        resource = self._resource(bucket, name)
        if query.get("alt") != "media":
            return (200, resource)
        data, content_type = self.buckets[bucket][name]
        headers = [("x-goog-generation", resource["generation"]),
                   ("x-goog-hash", "md5=" + resource["md5Hash"]),
                   *([("x-goog-hash", "crc32c=" + resource["crc32c"])] if "crc32c" in resource
                     else []),
                   ("x-goog-stored-content-length", resource["size"])]
        r = re.fullmatch(r"bytes=(\d+)-(\d*)", h.headers.get("Range", ""))
        if r and int(r[1]) < len(data):
            end = min(int(r[2]) if r[2] else len(data) - 1, len(data) - 1)
            headers.append(("Content-Range", f"bytes {r[1]}-{end}/{len(data)}"))
            return (206, data[int(r[1]):end + 1], content_type, headers)
        return (200, data, content_type, headers)

    def _upload(self, h, bucket, query, body):
        kind = query.get("uploadType")
        name, content_type = query.get("name"), h.headers.get("Content-Type")
        if kind == "multipart":
            metadata, body, media_type = _split_multipart(content_type, body)
            name = metadata.get("name") or name
            content_type = metadata.get("contentType") or media_type
        elif kind == "resumable":
            # The start: metadata in the body; the answer's Location is the session URI (a
            # capability: it names the service's session id, and anyone holding it may write).
            metadata = json.loads(body or b"{}")
            name = metadata.get("name") or name
            if not name:
                return _error(400, "required", "Required")
            upload_id = secrets.token_urlsafe(24)
            self.upload_sessions[upload_id] = {
                "bucket": bucket, "name": name, "data": bytearray(),
                "content_type": (metadata.get("contentType") or h.headers.get("X-Upload-Content-Type")
                                 or "application/octet-stream")}
            location = (f"{self.url}/upload/storage/v1/b/{urllib.parse.quote(bucket, safe='')}/o"
                        f"?uploadType=resumable&name={urllib.parse.quote(name, safe='')}"
                        f"&upload_id={upload_id}")
            return (200, b"", "text/plain; charset=utf-8",
                    [("Location", location), ("X-GUploader-UploadID", upload_id)])
        elif kind != "media":
            return _error(400, "invalid", f"Unsupported uploadType: {kind}")
        if not name:
            return _error(400, "required", "Required")
        return (200, self._put(bucket, name, body, content_type or "application/octet-stream"))

    def _resumable_step(self, h, bucket, query, body):
        """A PUT of bytes (Content-Range `bytes a-b/total`, `bytes a-b/*`, `bytes a-*/*`,
        `bytes */total`; none: the whole object) or a DELETE (cancel) on a resumable session."""
        upload_id = query["upload_id"]
        session = self.upload_sessions.get(upload_id)
        if session is None or session["bucket"] != bucket:
            return _error(404, "notFound", "No such upload session")
        if h.command == "DELETE":
            del self.upload_sessions[upload_id]
            return (499, b"", "text/plain; charset=utf-8")
        if h.command not in ("PUT", "POST"):
            return _error(405, "invalid", "Method not allowed")
        data = session["data"]
        content_range = h.headers.get("Content-Range")
        total = None
        if content_range is None:
            start, total = 0, len(body)
        else:
            m = re.fullmatch(r"bytes (?:(\d+)-(\d+|\*)|\*)/(\d+|\*)", content_range.strip())
            if m is None:
                raise ValueError(f"Content-Range {content_range!r}")
            start = int(m[1]) if m[1] is not None else len(data)
            if m[1] is not None and m[2] != "*" and int(m[2]) - start + 1 != len(body):
                raise ValueError("Content-Range does not match the body's length")
            total = int(m[3]) if m[3] != "*" else None
            if m[2] == "*":
                # A step of a length its sender did not know: its request's end is the object's
                # end, as Cloud Storage takes Node's one-request streamed upload.
                total = start + len(body)
        if start > len(data):
            return _error(400, "invalid", "Bytes are missing before this range")
        del data[start:]
        data += body
        if total is not None and len(data) == total:
            del self.upload_sessions[upload_id]
            return (200, self._put(bucket, session["name"], bytes(data), session["content_type"]))
        headers = [("Range", f"bytes=0-{len(data) - 1}")] if data else []
        return (308, b"", "text/plain; charset=utf-8", headers)


def _split_multipart(content_type, body):
    """(JSON metadata, media bytes, media content type) of a multipart/related upload body."""
    header = Message()
    header["Content-Type"] = content_type or ""
    boundary = header.get_param("boundary")
    if header.get_content_type() != "multipart/related" or not boundary:
        raise ValueError("not multipart/related with a boundary")
    boundary = boundary.strip("'")  # gcloud's apitools quotes it so
    # Each delimiter is CRLF "--" boundary (RFC 2046 5.1.1); the CRLF belongs to it, not the part.
    # apitools ends its lines with a bare LF, which Cloud Storage takes too.
    eol = b"\r\n" if body.startswith(b"--" + boundary.encode() + b"\r\n") else b"\n"
    parts = (eol + body).split(eol + b"--" + boundary.encode())
    if len(parts) < 4 or not parts[3].startswith(b"--"):
        raise ValueError("expected a metadata part and a media part")
    split = []
    for part in parts[1:3]:
        head, sep, content = part.partition(eol + eol)
        if not sep:
            raise ValueError("a part without a blank line after its headers")
        fields = dict(line.split(b":", 1) for line in head.split(eol) if b":" in line)
        fields = {k.strip().lower().decode(): v.strip().decode() for k, v in fields.items()}
        split.append((fields.get("content-type"), content))
    return json.loads(split[0][1] or b"{}"), split[1][1], split[1][0]


# BigQuery's discovery document as google-cloud-cli ships it (bq reads it from the API's host first).
BQ_DISCOVERY = "/usr/lib/google-cloud-sdk/platform/bq/discovery_next/bigquery.json"


class FakeBigQuery(_HttpsStandin):
    """The BigQuery API v2 subset `bq ls`, `bq query` and plain clients use — datasets, tables,
    jobs (query jobs only), jobs.query, jobs.getQueryResults, tabledata.list and the discovery
    document — answering only `Authorization: Bearer` tokens that `token_endpoint` issued (the
    discovery document too, as bq sends its token with it). Queries run in SQLite over the tables
    added with add_table: a GoogleSQL `dataset.table` becomes the SQLite table `dataset__table`,
    STRING_AGG becomes group_concat; enough for the tests' queries, not a SQL engine.

    `requests` holds, per request, {method, path, query, headers (lower-case names), body,
    status}; `deleted` the datasets deleted, `patched` the dataset changes (name, body)."""

    def __init__(self, token_endpoint, project="demo-project", tls_files=None):
        super().__init__(tls_files or token_endpoint.tls_files)
        self.url = f"https://127.0.0.1:{self.port}"
        self.token_endpoint = token_endpoint
        self.project = project
        self.tables = {}  # (dataset, table) -> [(column, type)]
        self.jobs = {}
        self.deleted = []
        self.patched = []
        self._db = sqlite3.connect(":memory:", check_same_thread=False)

    def add_table(self, dataset, table, columns, rows):
        """columns: [(name, "STRING" | "INTEGER")]; rows: tuples."""
        with self._lock:
            self.tables[(dataset, table)] = columns
            names = ", ".join(c for c, _ in columns)
            self._db.execute(f"CREATE TABLE {dataset}__{table} ({names})")
            self._db.executemany(f"INSERT INTO {dataset}__{table} VALUES ({', '.join('?' * len(columns))})", rows)

    def _run(self, sql):
        text = re.sub(r"`?\b([a-z_][a-z0-9_]*)\.([a-z_][a-z0-9_]*)\b`?", lambda m: f"{m.group(1)}__{m.group(2)}"
                      if (m.group(1), m.group(2)) in self.tables else m.group(0), sql, flags=re.I)
        text = re.sub(r"\bSTRING_AGG\b", "group_concat", text, flags=re.I)
        cur = self._db.execute(text)
        fields = [{"name": d[0], "type": "STRING", "mode": "NULLABLE"} for d in cur.description]
        rows = cur.fetchall()
        for i, f in enumerate(fields):
            if rows and all(isinstance(r[i], int) for r in rows):
                f["type"] = "INTEGER"
        return ({"fields": fields},
                [{"f": [{"v": None if v is None else str(v)} for v in r]} for r in rows])

    def _handle(self, h, body):
        raw_path, _, raw_query = h.path.partition("?")
        query = dict(urllib.parse.parse_qsl(raw_query, keep_blank_values=True))
        entry = self._record({"method": h.command, "path": raw_path, "query": query,
                              "headers": {k.lower(): v for k, v in h.headers.items()},
                              "body": body, "status": None})
        auth = h.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or not self.token_endpoint.valid(auth[7:]):
            response = _error(401, "authError", "Invalid Credentials")
        else:
            try:
                with self._lock:
                    response = self._route(h.command, raw_path, body)
            except (ValueError, KeyError, sqlite3.Error) as e:
                response = _error(400, "invalidQuery", f"Invalid: {e}")
        entry["status"] = response[0]
        h.reply(*response)

    def _job(self, job_id, configuration, sql):
        schema, rows = self._run(sql)
        job = {"kind": "bigquery#job", "id": f"{self.project}:US.{job_id}",
               "selfLink": f"{self.url}/bigquery/v2/projects/{self.project}/jobs/{job_id}?location=US",
               "jobReference": {"projectId": self.project, "jobId": job_id, "location": "US"},
               "configuration": configuration, "status": {"state": "DONE"},
               "statistics": {"query": {"schema": schema, "statementType": "SELECT",
                                        "totalBytesProcessed": "0"}}}
        self.jobs[job_id] = (job, schema, rows)
        return job

    def _route(self, method, path, body):
        if path in ("/$discovery/rest", "/discovery/v1/apis/bigquery/v2/rest"):
            with open(BQ_DISCOVERY) as f:
                doc = json.load(f)
            doc["rootUrl"] = f"{self.url}/"
            doc["baseUrl"] = f"{self.url}/bigquery/v2/"
            doc.pop("mtlsRootUrl", None)
            return 200, doc
        parts = path.strip("/").split("/")
        if parts[:3] != ["bigquery", "v2", "projects"] or len(parts) < 4:
            return _error(404, "notFound", f"Not found: {path}")
        if parts[3] != self.project:
            return _error(403, "accessDenied", f"Access Denied: Project {parts[3]}")
        rest = parts[4:]
        if rest == ["datasets"] and method == "GET":
            names = sorted({d for d, _ in self.tables})
            return 200, {"kind": "bigquery#datasetList", "datasets": [
                {"kind": "bigquery#dataset", "id": f"{self.project}:{d}",
                 "datasetReference": {"projectId": self.project, "datasetId": d}} for d in names]}
        if len(rest) == 2 and rest[0] == "datasets" and method == "PATCH":
            self.patched.append((rest[1], json.loads(body)))
            return 200, {"kind": "bigquery#dataset", "id": f"{self.project}:{rest[1]}",
                         "datasetReference": {"projectId": self.project, "datasetId": rest[1]},
                         **json.loads(body)}
        if len(rest) == 2 and rest[0] == "datasets" and method == "DELETE":
            self.deleted.append(rest[1])
            return 204, b""
        if len(rest) == 4 and rest[0] == "datasets" and rest[2] == "tables" and method == "GET":
            columns = self.tables[(rest[1], rest[3])]
            return 200, {"kind": "bigquery#table", "id": f"{self.project}:{rest[1]}.{rest[3]}",
                         "tableReference": {"projectId": self.project, "datasetId": rest[1], "tableId": rest[3]},
                         "schema": {"fields": [{"name": c, "type": t} for c, t in columns]}}
        if len(rest) == 5 and rest[0] == "datasets" and rest[4] == "data" and method == "GET":
            _, rows = self._run(f"SELECT * FROM {rest[1]}.{rest[3]}")
            return 200, {"kind": "bigquery#tableDataList", "totalRows": str(len(rows)), "rows": rows}
        if rest == ["jobs"] and method == "POST":
            j = json.loads(body)
            job_id = j.get("jobReference", {}).get("jobId") or f"job_{len(self.jobs) + 1}"
            return 200, self._job(job_id, j["configuration"], j["configuration"]["query"]["query"])
        if rest == ["queries"] and method == "POST":
            j = json.loads(body)
            job = self._job(f"job_q{len(self.jobs) + 1}", {"query": j}, j["query"])
            _, schema, rows = self.jobs[job["jobReference"]["jobId"]]
            return 200, {"kind": "bigquery#queryResponse", "jobReference": job["jobReference"],
                         "schema": schema, "rows": rows, "totalRows": str(len(rows)), "jobComplete": True}
        if len(rest) == 2 and rest[0] == "jobs" and method == "GET" and rest[1] in self.jobs:
            return 200, self.jobs[rest[1]][0]
        if len(rest) == 2 and rest[0] == "queries" and method == "GET" and rest[1] in self.jobs:
            job, schema, rows = self.jobs[rest[1]]
            return 200, {"kind": "bigquery#getQueryResultsResponse", "jobReference": job["jobReference"],
                         "schema": schema, "rows": rows, "totalRows": str(len(rows)), "jobComplete": True}
        return _error(404, "notFound", f"Not found: {method} {path}")
