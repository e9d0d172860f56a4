"""Real Sluice processes on loopback for integration tests.

Each test gets a temp dir; processes listen on port 0 and report their ports through files in
their data dirs; every wait is a poll of a condition with a deadline, never a fixed sleep.
"""

import errno
import json
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import tempfile
import time
import urllib.request
import zlib

BIN_DIR = os.environ.get("SLUICE_BIN_DIR", os.path.join(os.path.dirname(__file__), "../../build"))
CONTROLPLANE = os.path.join(BIN_DIR, "controlplane", "sluice-controlplane")
AGENT = os.path.join(BIN_DIR, "agent", "sluice-agent")
SLUICECTL = os.path.join(BIN_DIR, "cli", "sluicectl")


def wait_for(predicate, timeout=20.0, interval=0.05, what="condition"):
    """Polls predicate() until it returns a truthy value; returns it, or raises on timeout."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as e:  # the process may not be up yet
            last_error = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last_error})")


class Process:
    def __init__(self, args, log_path, env=None):
        self.args = args
        self.log_path = log_path
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=env or os.environ.copy())

    def alive(self):
        return self.proc.poll() is None

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.log.close()

    def stop(self):
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill9()
        if not self.log.closed:
            self.log.close()

    def output(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")


class ControlPlane:
    def __init__(self, workdir, grpc_port=0, extra_args=()):
        self.workdir = workdir
        self.extra_args = list(extra_args)
        self.data_dir = os.path.join(workdir, "cp-data")
        self.grpc_port = grpc_port
        self.process = None

    def start(self):
        endpoints = os.path.join(self.data_dir, "endpoints.json")
        if os.path.exists(endpoints):
            os.unlink(endpoints)
        self.process = Process(
            [CONTROLPLANE, "--data-dir", self.data_dir,
             "--grpc-listen", f"127.0.0.1:{self.grpc_port}", "--http-listen", "127.0.0.1:0",
             *self.extra_args],
            os.path.join(self.workdir, "controlplane.log"))

        def ready():
            if not self.process.alive():
                raise AssertionError("control plane exited:\n" + self.process.output())
            with open(endpoints) as f:
                return json.load(f)
        ep = wait_for(ready, what="control plane endpoints.json")
        self.address = ep["grpc"]
        self.grpc_port = int(self.address.rsplit(":", 1)[1])
        self.http = ep["http"]
        self.ca_file = ep["ca_file"]
        self.token_file = ep["admin_token_file"]
        return self

    def http_get(self, path):
        with urllib.request.urlopen(f"http://{self.http}{path}", timeout=5) as r:
            return r.status, r.read().decode()

    def ctl_env(self):
        """The environment that points sluicectl at this control plane as its admin."""
        env = os.environ.copy()
        env.update({"SLUICE_SERVER": self.address, "SLUICE_CA_FILE": self.ca_file,
                    "SLUICE_TOKEN_FILE": self.token_file, "HOME": self.workdir})
        return env

    def ctl(self, *args, check=True, stdin=None):
        r = subprocess.run([SLUICECTL, *args], capture_output=True, text=True, env=self.ctl_env(),
                           input=stdin, timeout=60)
        if check and r.returncode != 0:
            raise AssertionError(f"sluicectl {' '.join(args)} failed ({r.returncode}):\n"
                                 f"{r.stdout}\n{r.stderr}")
        return r

    def apply(self, yaml_text, name="policy.yaml"):
        path = os.path.join(self.workdir, name)
        with open(path, "w") as f:
            f.write(yaml_text)
        return self.ctl("apply", "-f", path)

    def agents(self):
        return json.loads(self.ctl("agents", "list", "-o", "json").stdout)

    def agent(self, agent_id):
        for a in self.agents().get("agents", []):
            if a["agent_id"] == agent_id:
                return a
        return None

    def enroll(self, name, labels, tls_names=None):
        extra = ["--tls-names", tls_names] if tls_names else []
        out = self.ctl("agents", "enroll", "--name", name, "--labels", labels, *extra).stdout
        for line in out.splitlines():
            if line.startswith("token:"):
                return line.split()[1]
        raise AssertionError("no token in:\n" + out)

    def stop(self):
        if self.process:
            self.process.stop()


class Agent:
    def __init__(self, workdir, name, controlplane, token, protocols="postgres,mysql,gcs",
                 env=None, labels="", extra_args=(), binary=None):
        self.name = name
        self.binary = binary or AGENT  # another build of the agent (bench/pg_proxy --agent)
        self.workdir = workdir
        self.data_dir = os.path.join(workdir, f"agent-{name}")
        self.cp = controlplane
        self.token = token
        self.protocols = protocols
        self.env = env
        self.labels = labels
        self.extra_args = list(extra_args)
        self.process = None

    def start(self):
        port_file = os.path.join(self.data_dir, "status.port")
        if os.path.exists(port_file):
            os.unlink(port_file)
        env = os.environ.copy()
        env.update(self.env or {})
        # The token goes in a 0600 file, as a careful operator would pass it.
        token_file = os.path.join(self.workdir, f"agent-{self.name}.token")
        with open(os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(self.token + "\n")
        self.process = Process(
            [self.binary, "--control-plane", self.cp.address, "--ca-file", self.cp.ca_file,
             "--enroll-token-file", token_file, "--data-dir", self.data_dir,
             "--protocols", self.protocols, "--status-listen", "127.0.0.1:0",
             "--reconnect-max-backoff", "1s", "--heartbeat-interval", "1s",
             "--labels", self.labels, "--postgres-listen", "127.0.0.1:0",
             "--mysql-listen", "127.0.0.1:0", "--gcs-listen", "127.0.0.1:0", *self.extra_args],
            os.path.join(self.workdir, f"agent-{self.name}.log"), env=env)

        def port():
            if not self.process.alive():
                raise AssertionError(f"agent {self.name} exited:\n" + self.process.output())
            with open(port_file) as f:
                return int(f.read().strip())
        self.status_port = wait_for(port, what=f"agent {self.name} status port")
        return self

    def status(self):
        url = f"http://127.0.0.1:{self.status_port}/status"
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.loads(r.read().decode())

    def postgres_port(self):
        # Written once the listener runs (on a first start, after enrollment brought its certificate).
        def read():
            if not self.process.alive():
                raise AssertionError(f"agent {self.name} exited:\n" + self.process.output())
            with open(os.path.join(self.data_dir, "postgres.port")) as f:
                return int(f.read().strip())
        return wait_for(read, what=f"agent {self.name} PostgreSQL port")

    def mysql_port(self):
        def read():
            if not self.process.alive():
                raise AssertionError(f"agent {self.name} exited:\n" + self.process.output())
            with open(os.path.join(self.data_dir, "mysql.port")) as f:
                return int(f.read().strip())
        return wait_for(read, what=f"agent {self.name} MySQL port")

    def gcs_port(self):
        def read():
            if not self.process.alive():
                raise AssertionError(f"agent {self.name} exited:\n" + self.process.output())
            with open(os.path.join(self.data_dir, "gcs.port")) as f:
                return int(f.read().strip())
        return wait_for(read, what=f"agent {self.name} Cloud Storage port")

    def tls_ca(self):
        """The CA that signed the agent's listener certificate (issued at enrollment)."""
        return os.path.join(self.cp.data_dir, "tls", "ca.crt")

    def snapshot_on_disk(self):
        with open(os.path.join(self.data_dir, "snapshot.json")) as f:
            return f.read()

    def stop(self):
        if self.process:
            self.process.stop()


class Workdir:
    def __init__(self, name):
        self.path = tempfile.mkdtemp(prefix=f"sluice-{name}-")

    def cleanup(self, keep):
        if keep or os.environ.get("SLUICE_KEEP_LOGS"):
            print(f"logs kept in {self.path}")
        else:
            shutil.rmtree(self.path, ignore_errors=True)


PG_BIN = "/usr/lib/postgresql/15/bin"


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """A real PostgreSQL 15 in a temp dir, run as the postgres user (initdb refuses root).

    auth: "scram-sha-256", "md5" or "trust" for TCP logins; tls: also require TLS on TCP.
    host: the address it listens on (and takes TCP logins from, with 127.0.0.1).
    """

    def __init__(self, workdir, name="pg", auth="scram-sha-256", tls=False, max_connections=100,
                 host="127.0.0.1"):
        self.host = host
        self.dir = os.path.join(workdir, name)
        self.data = os.path.join(self.dir, "data")
        self.socket_dir = os.path.join(self.dir, "sock")
        self.auth = auth
        self.tls = tls
        self.max_connections = max_connections
        self.port = free_port()
        self.process = None

    def _as_postgres(self, *args, **kw):
        return subprocess.run(["runuser", "-u", "postgres", "--", *args], check=True,
                              capture_output=True, text=True, **kw)

    def start(self):
        os.makedirs(self.socket_dir, exist_ok=True)
        # The postgres user must reach its directory through the test's temp dirs.
        path = self.dir
        while path not in ("/", ""):
            os.chmod(path, os.stat(path).st_mode | 0o711)
            path = os.path.dirname(path)
        subprocess.run(["chown", "-R", "postgres:postgres", self.dir], check=True)
        self._as_postgres(f"{PG_BIN}/initdb", "-D", self.data, "-U", "postgres", "-A", "trust",
                          "--no-sync")
        conf = [f"listen_addresses = '{self.host}'", f"port = {self.port}",
                f"unix_socket_directories = '{self.socket_dir}'", "fsync = off",
                f"max_connections = {self.max_connections}",
                f"password_encryption = '{'md5' if self.auth == 'md5' else 'scram-sha-256'}'"]
        hba = ["local all all trust"]
        clients = sorted({"127.0.0.1/32", f"{self.host}/32"})
        if self.tls:
            subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                            "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj",
                            "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                            "-keyout", os.path.join(self.data, "server.key"),
                            "-out", os.path.join(self.data, "server.crt")],
                           check=True, capture_output=True)
            subprocess.run(["chown", "postgres:postgres", os.path.join(self.data, "server.key"),
                            os.path.join(self.data, "server.crt")], check=True)
            os.chmod(os.path.join(self.data, "server.key"), 0o600)
            conf.append("ssl = on")
            hba += [f"hostssl all all {c} {self.auth}" for c in clients]
            hba += [f"hostnossl all all {c} reject" for c in clients]
        else:
            hba += [f"host all all {c} {self.auth}" for c in clients]
        with open(os.path.join(self.data, "postgresql.auto.conf"), "a") as f:
            f.write("\n".join(conf) + "\n")
        with open(os.path.join(self.data, "pg_hba.conf"), "w") as f:
            f.write("\n".join(hba) + "\n")
        self.process = subprocess.Popen(
            ["runuser", "-u", "postgres", "--", f"{PG_BIN}/postgres", "-D", self.data],
            stdout=open(os.path.join(self.dir, "postgres.log"), "ab"), stderr=subprocess.STDOUT)
        wait_for(lambda: subprocess.run([f"{PG_BIN}/pg_isready", "-h", self.socket_dir, "-p",
                                         str(self.port)], capture_output=True).returncode == 0,
                 what="postgres to accept connections")
        return self

    def sql(self, statement, database="postgres"):
        """Runs SQL as the superuser over the unix socket; returns psql's unaligned output."""
        r = subprocess.run([f"{PG_BIN}/psql", "-h", self.socket_dir, "-p", str(self.port), "-U",
                            "postgres", "-d", database, "-XAtqv", "ON_ERROR_STOP=1", "-c", statement],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise AssertionError(f"psql failed: {r.stderr}")
        return r.stdout.strip()

    def stop(self):
        if self.process and self.process.poll() is None:
            # runuser does not forward signals: ask postgres itself for a fast shutdown.
            subprocess.run(["runuser", "-u", "postgres", "--", f"{PG_BIN}/pg_ctl", "stop", "-D",
                            self.data, "-m", "fast", "-w", "-t", "30"], capture_output=True)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()



MARIADB_DEMO_SQL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples",
                                "demo-mariadb.sql")


def session_events(cp, identity):
    """Every stored event of `identity`'s sessions on control plane `cp`: (type, body)."""
    out = []
    listed = json.loads(cp.ctl("sessions", "list", "--identity", identity, "-o",
                               "json").stdout).get("sessions", [])
    for s in listed:
        d = json.loads(cp.ctl("sessions", "show", s["session_id"], "-o", "json").stdout)
        out += [(e["type"], json.loads(e["json"])) for e in d.get("events", [])]
    return out


def make_test_ca(directory, server_names=("IP:127.0.0.1", "DNS:localhost")):
    """A throwaway CA and, signed by it, a server certificate for `server_names` and a client
    certificate, written with openssl into `directory` under the names sysbench expects in its
    working directory: cacert.pem, server-cert.pem, server-key.pem, client-cert.pem,
    client-key.pem. Returns {name: path}."""
    os.makedirs(directory, exist_ok=True)
    path = {n: os.path.join(directory, f"{n}.pem") for n in
            ("cacert", "ca-key", "server-cert", "server-key", "client-cert", "client-key")}
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def openssl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True)
    openssl("req", "-x509", *ec, "-days", "2", "-subj", "/CN=Sluice test CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout", path["ca-key"], "-out", path["cacert"])
    for who, cn, ext in (("server", "127.0.0.1", f"subjectAltName={','.join(server_names)}"),
                         ("client", "sluice-test-client", "extendedKeyUsage=clientAuth")):
        csr = os.path.join(directory, f"{who}.csr")
        openssl("req", "-new", *ec, "-subj", f"/CN={cn}", "-keyout", path[f"{who}-key"],
                "-out", csr)
        extfile = os.path.join(directory, f"{who}.ext")
        with open(extfile, "w") as f:
            f.write(ext + "\n")
        openssl("x509", "-req", "-in", csr, "-CA", path["cacert"], "-CAkey", path["ca-key"],
                "-CAcreateserial", "-days", "2", "-extfile", extfile, "-out", path[f"{who}-cert"])
    for key in ("ca-key", "server-key", "client-key"):
        os.chmod(path[key], 0o600)
    return path


class MariaDbServer:
    """A real MariaDB 10.11 in a temp dir on a free port of 127.0.0.1, run as root
    (`--user=root`), small buffers, no performance schema.

    On start, unless demo=False: database `demo` with examples/demo-mariadb.sql loaded (the
    PostgreSQL demo's tables and rows), and users `app_native` (mysql_native_password) and
    `app_ed25519` (ed25519), both with password `app_password` and all privileges on `demo`.
    root logs in over the unix socket without a password (`sql()`).

    tls: also serve TLS with a server certificate for 127.0.0.1 from a throwaway CA (`ca_file`;
    a client certificate too, `tls_files`); require_tls: refuse TCP logins without TLS.
    """

    APP_USERS = ("app_native", "app_ed25519")

    def __init__(self, workdir, name="mariadb", tls=False, require_tls=False, max_connections=100,
                 demo=True, app_password="pw", extra_args=()):
        self.dir = os.path.join(workdir, name)
        self.data = os.path.join(self.dir, "data")
        self.socket = os.path.join(self.dir, "mariadb.sock")
        self.log_path = os.path.join(self.dir, "mariadbd.log")
        self.host = "127.0.0.1"
        self.port = free_port()
        self.tls, self.require_tls = tls or require_tls, require_tls
        self.max_connections = max_connections
        self.demo, self.app_password = demo, app_password
        self.extra_args = list(extra_args)
        self.tls_files = {}
        self.ca_file = None
        self.process = None

    def _server_options(self):
        return ["--no-defaults", f"--datadir={self.data}", "--user=root",
                "--skip-name-resolve", "--performance-schema=off",
                "--innodb-buffer-pool-size=32M", "--innodb-log-file-size=8M",
                "--innodb-log-buffer-size=2M", "--key-buffer-size=1M", "--aria-pagecache-buffer-size=8M",
                "--innodb-flush-log-at-trx-commit=2", "--lc-messages=en_US",
                "--debug-no-sync"]  # no fsync (a test's data need not survive a crash): ~4x faster

    def start(self):
        os.makedirs(self.dir, exist_ok=True)
        r = subprocess.run(["mariadb-install-db", *self._server_options(),
                            "--auth-root-authentication-method=normal", "--skip-test-db"],
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise AssertionError(f"mariadb-install-db failed:\n{r.stdout}\n{r.stderr}")
        args = ["mariadbd", *self._server_options(), f"--socket={self.socket}",
                f"--port={self.port}", f"--bind-address={self.host}",
                f"--pid-file={os.path.join(self.dir, 'mariadbd.pid')}",
                f"--log-error={self.log_path}", f"--max-connections={self.max_connections}",
                "--skip-log-bin", "--character-set-server=utf8mb4",
                "--collation-server=utf8mb4_general_ci"]
        if self.tls:
            self.tls_files = make_test_ca(os.path.join(self.dir, "tls"))
            self.ca_file = self.tls_files["cacert"]
            args += [f"--ssl-ca={self.ca_file}", f"--ssl-cert={self.tls_files['server-cert']}",
                     f"--ssl-key={self.tls_files['server-key']}"]
            if self.require_tls:
                args.append("--require-secure-transport=ON")
        with open(os.path.join(self.dir, "mariadbd.out"), "ab") as out:
            self.process = subprocess.Popen([*args, *self.extra_args], stdout=out,
                                            stderr=subprocess.STDOUT)

        def ready():
            if self.process.poll() is not None:
                return "exited"
            return subprocess.run(["mariadb-admin", "--no-defaults", f"--socket={self.socket}",
                                   "-uroot", "--connect-timeout=2", "ping"],
                                  capture_output=True).returncode == 0
        try:
            if wait_for(ready, timeout=60, what="mariadbd to accept connections") == "exited":
                raise AssertionError("mariadbd exited:\n" + self.log())
            # root only over the unix socket: drop the password-less TCP root accounts
            # (127.0.0.1, ::1, the host name) that mariadb-install-db creates.
            for host in self.sql("SELECT host FROM mysql.global_priv WHERE user = 'root' "
                                 "AND host <> 'localhost'").splitlines():
                self.sql(f"DROP USER 'root'@'{host}'")
        except AssertionError:
            self.stop()
            raise
        if self.demo:
            self.create_demo()
        return self

    def create_demo(self):
        """Database `demo` with the demo data, and the users APP_USERS with all privileges on it."""
        pw = self.app_password.replace("\\", "\\\\").replace("'", "\\'")
        self.sql("INSTALL SONAME 'auth_ed25519'")
        self.sql("CREATE DATABASE demo CHARACTER SET utf8mb4;\n"
                 "CREATE USER app_native@'%' IDENTIFIED VIA mysql_native_password "
                 f"USING PASSWORD('{pw}');\n"
                 f"CREATE USER app_ed25519@'%' IDENTIFIED VIA ed25519 USING PASSWORD('{pw}');\n"
                 "GRANT ALL PRIVILEGES ON demo.* TO app_native@'%';\n"
                 "GRANT ALL PRIVILEGES ON demo.* TO app_ed25519@'%';")
        with open(MARIADB_DEMO_SQL) as f:
            self.sql(f.read(), database="demo")

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def sql(self, statement, database=None, check=True):
        """Runs SQL (one or more `;`-terminated statements) as root over the unix socket with the
        mariadb CLI in batch mode; returns its tab-separated output without column names."""
        r = self.cli("--socket=" + self.socket, "-uroot", "--batch", "--skip-column-names",
                     *([database] if database else []), stdin=statement)
        if check and r.returncode != 0:
            raise AssertionError(f"mariadb failed ({r.returncode}): {r.stderr}")
        return r.stdout.strip() if check else r

    @staticmethod
    def cli(*args, stdin=None, env=None, timeout=60):
        """The mariadb CLI without option files (Debian's /etc/mysql ones do not apply)."""
        return subprocess.run(["mariadb", "--no-defaults", *args], input=stdin,
                              capture_output=True, text=True, timeout=timeout, env=env)

    def tcp_args(self, user, password=None, tls=None, verify=True):
        """mariadb CLI arguments for a TCP login as `user` (tls: None = as the server offers,
        True = TLS verified against ca_file (or only required, verify=False), False = no TLS)."""
        args = [f"--host={self.host}", f"--port={self.port}", f"--user={user}", "--protocol=TCP"]
        if password is not None:
            args.append(f"--password={password}")
        if tls is True:
            args += ["--ssl", f"--ssl-ca={self.ca_file}"]
            if verify:
                args.append("--ssl-verify-server-cert")
        elif tls is False:
            args.append("--skip-ssl")
        return args

    def connect(self, user="app_native", password=None, database="demo", **kw):
        """A pymysql connection over TCP (python3-pymysql), as `user` (default: the app password)."""
        import pymysql
        return pymysql.connect(host=self.host, port=self.port, user=user,
                               password=self.app_password if password is None else password,
                               database=database, connect_timeout=10, **kw)

    def rss_kb(self):
        """mariadbd's resident memory, in KiB."""
        with open(f"/proc/{self.process.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # a normal shutdown
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


class TokenIssuer:
    """An OIDC-style issuer the test controls: an ES256 key pair, its JWKS, and signed tokens.

    Signing uses PyJWT and cryptography (Debian's python3-jwt, python3-cryptography), an
    implementation independent of the agent's verifier."""

    def __init__(self, iss="https://idp.test", audience="sluice", kid="test-key-1"):
        from cryptography.hazmat.primitives.asymmetric import ec
        self.iss, self.audience, self.kid = iss, audience, kid
        self.key = ec.generate_private_key(ec.SECP256R1())

    def jwks(self):
        import jwt
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.key.public_key()))
        jwk.update({"kid": self.kid, "use": "sig", "alg": "ES256"})
        return json.dumps({"keys": [jwk]})

    def token(self, sub="ci-bot", groups=("ci",), lifetime=300, **overrides):
        import jwt
        now = int(time.time())
        claims = {"iss": self.iss, "aud": self.audience, "sub": sub, "groups": list(groups),
                  "iat": now, "exp": now + lifetime}
        claims.update(overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        return jwt.encode(claims, self.key, algorithm="ES256", headers={"kid": self.kid})


class Stack:
    """A whole gateway for one test: PostgreSQL (database `demo` owned by `app`), a control plane
    and one agent labelled vpc=a. Use as a context manager; everything stops at the end.

        with Stack("name", cp_args=["--dev-issuer"]) as s:
            s.cp.apply(s.connection_yaml() + "---\\n" + more)
    """

    def __init__(self, name, auth="scram-sha-256", pg_tls=False, cp_args=(), app_password="pw",
                 agent_args=(), pg_max_connections=100):
        self.name, self.auth, self.pg_tls = name, auth, pg_tls
        self.pg_max_connections = pg_max_connections
        self.cp_args, self.app_password = list(cp_args), app_password
        self.agent_args = list(agent_args)
        self.pg = self.cp = self.agent = None

    def __enter__(self):
        self.work = Workdir(self.name)
        try:
            self.pg = PostgresServer(self.work.path, auth=self.auth, tls=self.pg_tls,
                                     max_connections=self.pg_max_connections).start()
            self.pg.sql(f"CREATE USER app PASSWORD '{self.app_password}'")
            self.pg.sql("CREATE DATABASE demo OWNER app")
            self.cp = ControlPlane(self.work.path, extra_args=self.cp_args).start()
            self.agent = Agent(self.work.path, "a", self.cp, self.cp.enroll("agent-a", "vpc=a"),
                               extra_args=self.agent_args).start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        for p in (self.agent, self.cp, self.pg):
            if p:
                p.stop()
        self.work.cleanup(keep=exc[0] is not None)
        return False

    def connection_yaml(self, upstream_tls="disable", credentials=None, tags=None):
        """The `demo` Connection served by this stack's agent (`tags` a YAML flow mapping)."""
        credentials = credentials or f"password: {self.app_password}"
        return (f"kind: Connection\nname: demo\nprotocol: postgres\n"
                f"upstream: {{host: 127.0.0.1, port: {self.pg.port}, database: demo, "
                f"tls: {upstream_tls}}}\n"
                f"credentials: {{username: app, {credentials}}}\nagents: {{vpc: a}}\n"
                + (f"tags: {tags}\n" if tags else ""))

    @staticmethod
    def issuer_yaml(iss, jwks, attribution=()):
        """An Issuer `test-idp` (its `jwks` given as a YAML flow mapping), with `attribution`
        claims."""
        claims = f"claims: {{attribution: [{', '.join(attribution)}]}}\n" if attribution else ""
        return (f"---\nkind: Issuer\nname: test-idp\nissuer: {iss}\naudience: sluice\n"
                f"jwks: {jwks}\n{claims}")

    @staticmethod
    def inline_issuer_yaml(idp, attribution=()):
        """The Issuer `test-idp` of a TokenIssuer, its keys inline."""
        return Stack.issuer_yaml(idp.iss, f"{{inline: '{idp.jwks()}'}}", attribution)

    @staticmethod
    def issuer_and_read_rule(iss, jwks):
        """An Issuer `test-idp` (its `jwks` given as a YAML flow mapping) and read access to
        `demo` for group ci."""
        return (Stack.issuer_yaml(iss, jwks) + "---\nkind: AccessRule\nname: ci\nsubjects: {groups: [ci]}\n"
                "connections: {names: [demo]}\naccess: read\n")

    def apply_and_wait(self, yaml_text):
        """Applies policy and waits until the agent runs the new version; returns the version."""
        out = self.cp.apply(yaml_text).stdout
        version = int(out.rsplit("policy version ", 1)[1])
        wait_for(lambda: self.agent.status()["applied_version"] == version, what="policy applied")
        return version

    def psql(self, sql, token, user="ci"):
        return subprocess.run([f"{PG_BIN}/psql", f"host=127.0.0.1 port={self.agent.postgres_port()} "
                               f"dbname=demo user={user} sslmode=require", "-XAtc", sql],
                              capture_output=True, text=True, timeout=60,
                              env=dict(os.environ, PGPASSWORD=token))


# PostgreSQL wire messages, for tests that speak the protocol byte by byte.

def pg_send(sock, t, body):
    """Sends one typed message: type byte, length, body."""
    sock.sendall(t + struct.pack("!I", len(body) + 4) + body)


def pg_send_startup(sock, version, params):
    """Sends a StartupMessage of `version` with (name, value) parameters."""
    body = struct.pack("!I", version) + b"".join(
        k.encode() + b"\0" + v.encode() + b"\0" for k, v in params) + b"\0"
    sock.sendall(struct.pack("!I", len(body) + 4) + body)


def pg_read_msg(sock):
    """Reads one typed message: (type byte, body)."""
    def exact(n):
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise EOFError("connection closed")
            buf += chunk
        return buf
    header = exact(5)
    (length,) = struct.unpack("!I", header[1:])
    return header[:1], exact(length - 4)


def pg_raw_login(port, token, user="raw", database="demo"):
    """A raw protocol session through an agent on `port`, over TLS (not verified), logged in with
    `token`: (socket, {ParameterStatus name: value}). Raises on a refused login."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    sock.sendall(struct.pack("!II", 8, 80877103))  # SSLRequest
    if sock.recv(1) != b"S":
        raise AssertionError("the agent did not accept SSLRequest")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    sock = ctx.wrap_socket(sock)
    pg_send_startup(sock, 3 << 16, [("user", user), ("database", database)])
    t, _ = pg_read_msg(sock)
    if t != b"R":
        raise AssertionError(f"expected an authentication request, got {t!r}")
    pg_send(sock, b"p", token.encode() + b"\0")
    params = {}
    while True:
        t, body = pg_read_msg(sock)
        if t == b"E":
            raise AssertionError(f"login refused: {body!r}")
        if t == b"S":
            k, v = body.split(b"\0")[:2]
            params[k.decode()] = v.decode()
        if t == b"Z":
            return sock, params


def pg_until_ready(sock):
    """Messages up to and including ReadyForQuery: [(type, body)]."""
    out = []
    while True:
        t, body = pg_read_msg(sock)
        out.append((t, body))
        if t == b"Z":
            return out


ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _unzstd(frame):
    """A zstd frame's content, decoded with the zstd command (independently of the code under test)."""
    return subprocess.run(["zstd", "-d", "-c", "-q"], input=frame, capture_output=True, check=True).stdout


# Session recordings as the control plane stores them (controlplane/store/recording_files.h),
# read independently of the code under test.
def inflate_recording_block(compressed):
    """The entries of a recording block's compressed bytes: a zstd frame, the entries as they are
    after "SLRW" (slices the agent compressed), or a zlib stream (blocks written before zstd)."""
    if compressed[:4] == ZSTD_MAGIC:
        return _unzstd(compressed)
    if compressed[:4] == b"SLRW":
        return compressed[4:]
    return zlib.decompress(compressed)


def slice_entries(data):
    """A recording slice's entries (common/audit/recording.h): the slice, or its zstd frame's
    content when the agent compressed it."""
    return _unzstd(data) if data[:4] == ZSTD_MAGIC else data


def stored_chunks(cp_data_dir):
    """[(chunk id, framed records)] of the control plane's stored event chunks, oldest first: each
    is a zstd frame (chunks stored before compression: the records as they are). A chunk written
    back with its records as they are is read as such."""
    import sqlite3
    with sqlite3.connect(os.path.join(cp_data_dir, "sluice.db")) as c:
        rows = c.execute("SELECT id, records FROM event_chunks ORDER BY id").fetchall()
    return [(i, _unzstd(b) if b[:4] == ZSTD_MAGIC else b) for i, b in rows]


def stored_recordings(cp_data_dir):
    """{(session_id, sequence): slice bytes} from the recording index and files."""
    import sqlite3
    with sqlite3.connect(os.path.join(cp_data_dir, "sluice.db")) as c:
        rows = c.execute("SELECT session_id, file, offset, length FROM recording_blocks").fetchall()
    out = {}
    for session, name, offset, length in rows:
        with open(os.path.join(cp_data_dir, "recordings", name), "rb") as f:
            f.seek(offset)
            block = f.read(length)
        size, crc = struct.unpack_from("<II", block, 0)
        assert size == length - 8 and zlib.crc32(block[8:]) == crc, "recording block damaged"
        raw, at = inflate_recording_block(block[8:]), 0
        while at < len(raw):
            seq, n = struct.unpack_from("<QI", raw, at)
            out[(session, seq)] = raw[at + 12:at + 12 + n]
            at += 12 + n
    return out


def _varint(data, at):
    value, shift = 0, 0
    while True:
        b = data[at]
        value |= (b & 0x7F) << shift
        at += 1
        if b < 0x80:
            return value, at
        shift += 7


def _put_varint(n):
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def event_fields(payload):
    """The top-level fields of a serialized AuditEvent: {field number: value (int or bytes)}."""
    fields, at = {}, 0
    while at < len(payload):
        key, at = _varint(payload, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            fields[number], at = _varint(payload, at)
        elif wire == 2:
            n, at = _varint(payload, at)
            fields[number] = payload[at:at + n]
            at += n
        else:
            raise ValueError(f"unexpected wire type {wire}")
    return fields


def chained_payload(stored, recordings):
    """The payload the agent hashed: a stored event with its recording slice (field 15) put back."""
    f = event_fields(stored)
    if not f.get(14):
        return stored
    data = recordings[(f[4].decode(), f[1])]
    return stored + b"\x7a" + _put_varint(len(data)) + data


def fill(path):
    """Writes zeros to `path` until its volume is full; returns the bytes written."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    written = 0
    try:
        for block in (1 << 20, 4096):
            try:
                while True:
                    written += os.write(fd, b"\0" * block)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
    finally:
        os.close(fd)
    return written


def mount_for_test(test, path, *args):
    """Mounts (`mount *args path`) for the length of a unittest test: lazily unmounted at its end,
    after the cleanups registered later (processes using it stop first)."""
    os.makedirs(path, exist_ok=True)
    subprocess.run(["mount", *args, path], check=True)
    test.addCleanup(lambda: subprocess.run(["umount", "-l", path], check=False))
    return path


def mount_tmpfs(test, path, size):
    """A tmpfs of `size` at `path` (mode 0700) for the length of a test."""
    return mount_for_test(test, path, "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs")
