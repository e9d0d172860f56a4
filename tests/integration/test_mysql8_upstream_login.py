"""The agent's upstream login to a MySQL 8 server by caching_sha2_password, at the protocol level.

Debian 12 ships no MySQL 8 server, so this test plays one: a small server written here (Python's
ssl and cryptography, independent of the agent's code) that speaks MySQL 8's side of the
exchange — the greeting offering caching_sha2_password, the fast path (AuthMoreData 0x03), full
authentication over TLS (0x04, then the password in clear inside TLS) and without TLS (0x04, the
client asks for the RSA public key with 0x02, then sends the password encrypted with RSA-OAEP) —
and checks the password the way MySQL 8 does. After the login it answers the agent's pinning
queries and each query with one row. The caller is the real mariadb CLI through the real agent.
"""
import hashlib
import os
import socket
import ssl
import struct
import subprocess
import threading
import unittest

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from harness import make_test_ca
from test_mysql_proxy import MysqlStack

PASSWORD = "mysql8-secret"


def packet(seq, payload):
    return struct.pack("<I", len(payload))[:3] + bytes([seq & 0xFF]) + payload


def lenenc(b):
    assert len(b) < 251
    return bytes([len(b)]) + b


class FakeMysql8:
    """One listening socket; each connection logs in with `mode` ('fast' or 'full') and records the
    path it took in `self.paths`."""

    def __init__(self, workdir, mode):
        self.mode, self.paths, self.errors = mode, [], []
        tls = make_test_ca(os.path.join(workdir, "mysql8-tls"))
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(tls["server-cert"], tls["server-key"])
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.pem = self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.session, args=(conn,), daemon=True).start()

    @staticmethod
    def read(conn):
        head = b""
        while len(head) < 4:
            chunk = conn.recv(4 - len(head))
            if not chunk:
                raise EOFError
            head += chunk
        n = int.from_bytes(head[:3], "little")
        body = b""
        while len(body) < n:
            chunk = conn.recv(n - len(body))
            if not chunk:
                raise EOFError
            body += chunk
        return head[3], body

    def session(self, conn):
        try:
            self.login_and_serve(conn)
        except EOFError:
            pass
        except Exception as e:  # recorded for the test to report
            self.errors.append(repr(e))
        finally:
            conn.close()

    def login_and_serve(self, conn):
        scramble = os.urandom(20).replace(b"\0", b"\1")
        caps = (1 | 4 | 8 | 0x200 | 0x800 | 0x2000 | 0x8000 | 0x10000 | 0x20000 | 0x40000 |
                0x80000 | 0x200000 | 0x1000000)
        greeting = (b"\x0a" + b"8.0.36\0" + struct.pack("<I", 7) + scramble[:8] + b"\0" +
                    struct.pack("<H", caps & 0xFFFF) + b"\xff" + struct.pack("<H", 2) +
                    struct.pack("<H", caps >> 16) + bytes([21]) + b"\0" * 10 + scramble[8:] +
                    b"\0" + b"caching_sha2_password\0")
        conn.sendall(packet(0, greeting))
        seq, resp = self.read(conn)
        client_caps = struct.unpack("<I", resp[:4])[0]
        tls = False
        if len(resp) == 32 and client_caps & 0x800:
            conn = self.ctx.wrap_socket(conn, server_side=True)
            tls = True
            seq, resp = self.read(conn)
            client_caps = struct.unpack("<I", resp[:4])[0]
        deprecate_eof = bool(client_caps & 0x1000000)
        rest = resp[32:]
        rest = rest[rest.index(b"\0") + 1:]  # user
        n = rest[0]
        auth = rest[1:1 + n]
        m1 = hashlib.sha256(PASSWORD.encode()).digest()
        m2 = hashlib.sha256(m1).digest()
        expected = bytes(a ^ b for a, b in zip(m1, hashlib.sha256(m2 + scramble).digest()))
        seq += 1
        if self.mode == "fast":
            if auth != expected:
                return self.deny(conn, seq)
            conn.sendall(packet(seq, b"\x01\x03"))
            self.paths.append("fast")
            seq += 1
        else:
            conn.sendall(packet(seq, b"\x01\x04"))
            seq, answer = self.read(conn)
            if tls:
                password = answer.rstrip(b"\0")
                self.paths.append("full-tls")
            else:
                if answer != b"\x02":
                    return self.deny(conn, seq + 1)
                conn.sendall(packet(seq + 1, b"\x01" + self.pem))
                seq, answer = self.read(conn)
                plain = self.key.decrypt(answer, padding.OAEP(
                    mgf=padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None))
                plain = bytes(c ^ scramble[i % len(scramble)] for i, c in enumerate(plain))
                password = plain.rstrip(b"\0")
                self.paths.append("full-rsa")
            seq += 1
            if password != PASSWORD.encode():
                return self.deny(conn, seq)
        conn.sendall(packet(seq, b"\x00\x00\x00\x02\x00\x00\x00"))
        while True:
            _, command = self.read(conn)
            if command[:1] == b"\x01":
                return
            self.answer(conn, command[1:], deprecate_eof)

    def deny(self, conn, seq):
        self.paths.append("denied")
        conn.sendall(packet(seq, b"\xff" + struct.pack("<H", 1045) + b"#28000" +
                            b"Access denied for user (using password: YES)"))

    def answer(self, conn, sql, deprecate_eof):
        sql = sql.decode(errors="replace").lower()
        if sql.startswith("set "):
            conn.sendall(packet(1, b"\x00\x00\x00\x02\x00\x00\x00"))
            return
        if "@@session.sql_mode" in sql:
            values = [b"STRICT_TRANS_TABLES", b"1"]
        else:
            values = [b"mysql8"]
        out, seq = b"", 1
        out += packet(seq, bytes([len(values)]))
        for i in range(len(values)):
            seq += 1
            col = (lenenc(b"def") + lenenc(b"") + lenenc(b"") + lenenc(b"") + lenenc(b"c%d" % i) +
                   lenenc(b"") + b"\x0c" + struct.pack("<HIBHB", 45, 255, 253, 0, 0) + b"\0\0")
            out += packet(seq, col)
        if not deprecate_eof:
            seq += 1
            out += packet(seq, b"\xfe\x00\x00\x02\x00")
        seq += 1
        out += packet(seq, b"".join(lenenc(v) for v in values))
        seq += 1
        out += packet(seq, b"\xfe\x00\x00\x02\x00\x00\x00" if deprecate_eof else b"\xfe\x00\x00\x02\x00")
        conn.sendall(out)

    def stop(self):
        self.sock.close()


class Mysql8UpstreamLoginTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.stack = MysqlStack("mysql8-login").__enter__()

    @classmethod
    def tearDownClass(cls):
        cls.stack.__exit__(None, None, None)

    def login(self, mode, upstream_tls, password=PASSWORD):
        s = self.stack
        server = FakeMysql8(s.work.path, mode)
        self.addCleanup(server.stop)
        name = f"m8-{mode}-{upstream_tls}" + ("-bad" if password != PASSWORD else "")
        s.apply_and_wait(
            f"kind: Connection\nname: {name}\nprotocol: mysql\n"
            f"upstream: {{host: 127.0.0.1, port: {server.port}, database: app, tls: {upstream_tls}}}\n"
            f"credentials: {{username: app, password: {password}}}\nagents: {{vpc: a}}\n"
            + "---\n" + s.policy().replace("names: [demo-mysql]", f"names: [{name}]"))
        r = s.mariadb("SELECT 1", s.idp.token(sub="m8-bot", groups=("ci",)), database=name)
        self.assertEqual(server.errors, [])
        return r, server.paths

    def test_fast_path(self):
        r, paths = self.login("fast", "disable")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), "mysql8")
        self.assertEqual(paths, ["fast"])

    def test_full_authentication_over_tls(self):
        r, paths = self.login("full", "require")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(paths, ["full-tls"])

    def test_full_authentication_under_the_servers_rsa_key(self):
        r, paths = self.login("full", "disable")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(paths, ["full-rsa"])

    def test_a_wrong_password_is_the_servers_refusal(self):
        r, paths = self.login("full", "disable", password="not-it")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("refused the login", r.stderr)
        self.assertNotIn("not-it", r.stderr)
        self.assertEqual(paths, ["full-rsa", "denied"])


if __name__ == "__main__":
    unittest.main()
