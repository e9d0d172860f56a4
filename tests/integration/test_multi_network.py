"""Several networks on one machine: three "VPCs" and a hub, as Linux network namespaces.

The test makes, as root, one network namespace for the control plane (the hub) and one per VPC
(a, b, c), each VPC joined to the hub by a veth pair. Addresses are set only inside these
namespaces (198.18.0.0/15, the benchmark range); the root namespace is not touched:

    hub   lo 198.18.0.1 (the control plane's gRPC port 7443)
          to-a 198.18.1.1/24    to-b 198.18.2.1/24    to-c 198.18.3.1/24
    vpc-X uplink 198.18.N.2/24, a route to 198.18.0.1 only (no default route, no route to the
          other VPCs; the hub has none to the VPCs' private addresses)
          lo 198.19.N.10 PostgreSQL :5432 (database demo, its own password)
             198.19.N.11 MariaDB :3306 (VPC b only)
             198.19.N.20 the agent, labelled vpc=X: PostgreSQL :6432, MySQL :3307

Each agent dials the control plane; callers run in a VPC with `ip netns exec` (psql, the mariadb
CLI). What it proves, in the order of the tests: each agent receives only its network's
Connections; a caller in A reaches A's database through A's agent, and B's database neither
directly (no route) nor through A's agent (refused, named); agents only dial out (the sockets of
every agent and of the control plane, by `ss`); a policy change reaches all three agents; an agent
cut off from the control plane (its veth down) keeps serving with its last good policy while a
newer one is applied, and catches up when the link returns.

The servers the harness starts (ControlPlane, Agent, PostgresServer, MariaDbServer) are started
from a thread switched into the namespace with setns(2), which is what `ip netns exec` does: they
are the harness's own processes (no wrapper in between), stopped as in every other test. One-shot
commands run under `ip netns exec` in a process group of their own, killed whole on a timeout.
The namespaces are deleted at the end whatever happens, and namespaces left by a run that was
killed (`slmn-<pid>-*` of a pid that no longer runs) are deleted at the start of the next.
"""

import atexit
import contextlib
import ctypes
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import unittest

from harness import (PG_BIN, Agent, ControlPlane, MariaDbServer, PostgresServer, Stack,
                     TokenIssuer, Workdir, wait_for)

PREFIX = "slmn"
RUN = f"{PREFIX}-{os.getpid()}"
VPCS = {"a": 1, "b": 2, "c": 3}
HUB_ADDR = "198.18.0.1"
GRPC_PORT = 7443
PG_PORT, MARIADB_PORT = 5432, 3306
AGENT_PG_PORT, AGENT_MYSQL_PORT = 6432, 3307
NS = {"hub": f"{RUN}-hub", **{x: f"{RUN}-{x}" for x in VPCS}}


def hub_side(i):
    return f"198.18.{i}.1"


def uplink_addr(i):
    return f"198.18.{i}.2"


def db_addr(i):
    return f"198.19.{i}.10"


def mariadb_addr(i):
    return f"198.19.{i}.11"


def agent_addr(i):
    return f"198.19.{i}.20"


# --- network namespaces -------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


def _setns(fd):
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def inside(ns):
    """This thread in network namespace `ns` (as `ip netns exec` puts a command there), then back:
    the processes it starts and the sockets it opens are in `ns`."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/run/netns/{ns}", os.O_RDONLY)
        try:
            _setns(target)
            try:
                yield
            finally:
                _setns(own)
        finally:
            os.close(target)
    finally:
        os.close(own)


def ip(*args, check=True):
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise AssertionError(f"ip {' '.join(args)} failed ({r.returncode}): {r.stderr}")
    return r


def ns_run(ns, *cmd, env=None, stdin=None, timeout=30):
    """`ip netns exec ns cmd...` in a process group of its own, the whole group killed on a
    timeout. Returns the CompletedProcess (text), with .elapsed in seconds."""
    start = time.monotonic()
    p = subprocess.Popen(["ip", "netns", "exec", ns, *cmd], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                         start_new_session=True)
    try:
        out, err = p.communicate(input=stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        raise AssertionError(f"{' '.join(cmd)} in {ns} did not finish within {timeout}s")
    r = subprocess.CompletedProcess(p.args, p.returncode, out, err)
    r.elapsed = time.monotonic() - start
    return r


def our_namespaces():
    r = ip("netns", "list", check=False)
    return [line.split()[0] for line in r.stdout.splitlines()
            if line.split() and line.split()[0].startswith(PREFIX + "-")]


def delete_namespace(name):
    """Kills whatever still runs in namespace `name`, then deletes it (its veths go with it)."""
    for pid in ip("netns", "pids", name, check=False).stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    ip("netns", "del", name, check=False)


def sweep_stale_namespaces():
    """Deletes the namespaces of earlier runs that were killed before they could."""
    for name in our_namespaces():
        m = re.fullmatch(rf"{PREFIX}-(\d+)-\w+", name)
        if not m or int(m.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(m.group(1)), 0)
        except ProcessLookupError:
            delete_namespace(name)
        except PermissionError:
            pass


def delete_namespaces():
    """Deletes this run's namespaces. Idempotent."""
    for name in our_namespaces():
        if name.startswith(RUN + "-"):
            delete_namespace(name)


_pending = []  # cleanups not run yet, newest last: run at exit if the test run is cut short


def _run_pending(fn):
    if fn in _pending:
        _pending.remove(fn)
        fn()


@atexit.register
def _at_exit():
    while _pending:
        try:
            _pending.pop()()
        except Exception as e:  # go on: the namespaces must go
            print(f"cleanup: {e}", file=sys.stderr)
    try:
        delete_namespaces()
    except OSError:  # no `ip` at all: nothing was made
        pass


def _on_sigterm(*_):
    raise KeyboardInterrupt("SIGTERM")  # unittest lets it through; atexit cleans up


def build_networks():
    """The hub, the three VPCs and their links (the module's docstring draws them)."""
    for ns in NS.values():
        ip("netns", "add", ns)
        ip("-n", ns, "link", "set", "lo", "up")
    hub = NS["hub"]
    ip("-n", hub, "addr", "add", f"{HUB_ADDR}/32", "dev", "lo")
    # The hub routes nothing between the VPCs (a new namespace starts with forwarding off:
    # make sure).
    ip("netns", "exec", hub, "sysctl", "-qw", "net.ipv4.ip_forward=0")
    for x, i in VPCS.items():
        vpc = NS[x]
        # Both ends made directly in their namespaces: nothing appears in the root namespace.
        ip("-n", hub, "link", "add", f"to-{x}", "type", "veth", "peer", "name", "uplink",
           "netns", vpc)
        ip("-n", hub, "addr", "add", f"{hub_side(i)}/24", "dev", f"to-{x}")
        ip("-n", hub, "link", "set", f"to-{x}", "up")
        ip("-n", vpc, "addr", "add", f"{uplink_addr(i)}/24", "dev", "uplink")
        ip("-n", vpc, "link", "set", "uplink", "up")
        for addr in (db_addr(i), mariadb_addr(i), agent_addr(i)):
            ip("-n", vpc, "addr", "add", f"{addr}/32", "dev", "lo")
        ip("-n", vpc, "route", "add", f"{HUB_ADDR}/32", "via", hub_side(i), "dev", "uplink")


def setUpModule():
    if os.geteuid() != 0:
        raise unittest.SkipTest("needs root (ip netns add, veth pairs)")
    probe = f"{RUN}-probe"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if r.returncode != 0:
        raise unittest.SkipTest(f"ip netns is unavailable here: {r.stderr.strip()}")
    ip("netns", "del", probe)
    sweep_stale_namespaces()
    # Whatever ends this process short of SIGKILL stops its processes and deletes the
    # namespaces (_at_exit); after a SIGKILL, the next run does (sweep_stale_namespaces).
    _previous_sigterm[0] = signal.signal(signal.SIGTERM, _on_sigterm)


_previous_sigterm = [signal.SIG_DFL]


def tearDownModule():
    delete_namespaces()
    signal.signal(signal.SIGTERM, _previous_sigterm[0])


# --- the harness's processes, in a namespace ---------------------------------------------------

class HubControlPlane(ControlPlane):
    """The harness's control plane in the hub; sluicectl runs there too."""

    def __init__(self, ns, workdir, extra_args=()):
        super().__init__(workdir, extra_args=extra_args)
        self.ns = ns

    def start(self):
        with inside(self.ns):
            return super().start()

    def ctl(self, *args, **kw):
        with inside(self.ns):
            return super().ctl(*args, **kw)

    def http_get(self, path):
        with inside(self.ns):
            return super().http_get(path)


class VpcAgent(Agent):
    def __init__(self, ns, *args, **kw):
        super().__init__(*args, **kw)
        self.ns = ns

    def start(self):
        with inside(self.ns):
            return super().start()

    def status(self):
        with inside(self.ns):
            return super().status()


def sockets(ns, listening, pid):
    """[(local "addr:port", peer "addr:port")] of the TCP sockets of process `pid` in `ns`,
    listening or established (`ss`)."""
    state = ["-l"] if listening else ["state", "established"]
    r = ns_run(ns, "ss", "-tnpH", *state)
    if r.returncode != 0:
        raise AssertionError(f"ss failed: {r.stderr}")
    out = []
    for line in r.stdout.splitlines():
        if f"pid={pid}," not in line:
            continue
        fields = line.split()
        # (-l: State Recv-Q Send-Q Local Peer; a state filter drops the State column.)
        local, peer = (fields[3], fields[4]) if listening else (fields[2], fields[3])
        out.append((unmapped(local), unmapped(peer)))
    return out


def unmapped(addr):
    """An IPv4 address of a dual-stack socket ("[::ffff:198.18.0.1]:7443") as "198.18.0.1:7443"."""
    return re.sub(r"^\[::ffff:(\d+\.\d+\.\d+\.\d+)\]:", r"\1:", addr)


def port_of(addr):
    return int(addr.rsplit(":", 1)[1])


def host_of(addr):
    return addr.rsplit(":", 1)[0].strip("[]")


def tcp_connect_error(ns, host, port, timeout=5.0):
    """The errno name of a TCP connect from `ns` to host:port, or "connected"."""
    with inside(ns):
        s = socket.socket()
    try:
        s.settimeout(timeout)
        s.connect((host, port))
        return "connected"
    except socket.timeout:
        return "timeout"
    except OSError as e:
        return os.strerror(e.errno)
    finally:
        s.close()


# --- policy ---------------------------------------------------------------------------------------

def connection_yaml(x, i, password):
    return (f"kind: Connection\nname: db-{x}\nprotocol: postgres\n"
            f"upstream: {{host: {db_addr(i)}, port: {PG_PORT}, database: demo, tls: disable}}\n"
            f"credentials: {{username: app, password: {password}}}\n"
            f"agents: {{vpc: {x}}}\ntags: {{env: prod, vpc: {x}}}\n")


def mariadb_connection_yaml(x, i, password):
    return (f"---\nkind: Connection\nname: shop-{x}\nprotocol: mysql\n"
            f"upstream: {{host: {mariadb_addr(i)}, port: {MARIADB_PORT}, database: demo, "
            f"tls: disable}}\n"
            f"credentials: {{username: app_native, password: {password}}}\n"
            f"agents: {{vpc: {x}}}\ntags: {{env: prod, vpc: {x}}}\n")


def guardrail_yaml(blocked_functions):
    rules = "".join(f"  - {{match: dangerous_function, action: block, functions: [{f}]}}\n"
                    for f in blocked_functions)
    return ("---\nkind: Guardrail\nname: probes\nconnections: {tags: {env: prod}}\nrules:\n"
            + rules)


class MultiNetworkTest(unittest.TestCase):
    """One topology and one set of processes for the class; the tests run in name order and the
    later ones change the policy."""

    failed = False

    @classmethod
    def cleanup(cls, fn):
        """fn() at the end of the class (last registered, first run), or at exit if the run is
        cut short."""
        _pending.append(fn)
        cls.addClassCleanup(_run_pending, fn)

    @classmethod
    def setUpClass(cls):
        cls.work = Workdir("multi-network")
        cls.cleanup(lambda: cls.work.cleanup(keep=cls.failed))
        cls.cleanup(delete_namespaces)  # after every process below has stopped
        try:
            cls._start_everything()
        except BaseException:
            cls.failed = True
            raise

    @classmethod
    def _start_everything(cls):
        build_networks()
        cls.idp = TokenIssuer()
        cls.cp = HubControlPlane(NS["hub"], cls.work.path, extra_args=[
            "--grpc-listen", f"{HUB_ADDR}:{GRPC_PORT}", "--tls-hosts", HUB_ADDR])
        cls.cleanup(cls.cp.stop)
        cls.cp.start()
        assert cls.cp.address == f"{HUB_ADDR}:{GRPC_PORT}", cls.cp.address

        # A PostgreSQL in each VPC, on that VPC's address; the same schema, different contents
        # and passwords.
        cls.passwords = {x: f"pw-{x}-{secrets.token_hex(8)}" for x in VPCS}
        cls.pg = {}
        for x, i in VPCS.items():
            pg = PostgresServer(cls.work.path, name=f"pg-{x}", host=db_addr(i))
            pg.port = PG_PORT  # the namespace's own port space
            cls.cleanup(pg.stop)
            with inside(NS[x]):
                pg.start()
            pg.sql(f"CREATE USER app PASSWORD '{cls.passwords[x]}'")
            pg.sql("CREATE DATABASE demo OWNER app")
            pg.sql(f"CREATE TABLE whereami (vpc text); INSERT INTO whereami VALUES ('{x}');"
                   "ALTER TABLE whereami OWNER TO app;"
                   "CREATE FUNCTION vpc_name() RETURNS text LANGUAGE sql STABLE "
                   "AS $$ SELECT vpc FROM whereami $$;"
                   "CREATE FUNCTION vpc_probe() RETURNS int LANGUAGE sql IMMUTABLE AS $$ SELECT 1 $$",
                   "demo")
            cls.pg[x] = pg
        # And a MariaDB in VPC b.
        cls.mariadb_password = f"pw-shop-{secrets.token_hex(8)}"
        cls.mariadb = MariaDbServer(cls.work.path, name="mariadb-b",
                                    app_password=cls.mariadb_password)
        cls.mariadb.host, cls.mariadb.port = mariadb_addr(VPCS["b"]), MARIADB_PORT
        cls.cleanup(cls.mariadb.stop)
        with inside(NS["b"]):
            cls.mariadb.start()

        # One agent per VPC, labelled for it, its listeners on its VPC address (in the
        # certificate the control plane issues at enrollment), dialing the hub.
        cls.agents = {}
        for x, i in VPCS.items():
            token = cls.cp.enroll(f"agent-{x}", f"vpc={x}", tls_names=agent_addr(i))
            agent = VpcAgent(NS[x], cls.work.path, x, cls.cp, token, protocols="postgres,mysql",
                             labels=f"vpc={x}", extra_args=[
                                 "--postgres-listen", f"{agent_addr(i)}:{AGENT_PG_PORT}",
                                 "--mysql-listen", f"{agent_addr(i)}:{AGENT_MYSQL_PORT}",
                                 "--gcs-listen=", "--tls-names", agent_addr(i)])
            cls.cleanup(agent.stop)
            agent.start()
            cls.agents[x] = agent

        cls.base_policy = "---\n".join(connection_yaml(x, i, cls.passwords[x])
                                       for x, i in VPCS.items())
        cls.base_policy += mariadb_connection_yaml("b", VPCS["b"], cls.mariadb_password)
        cls.base_policy += Stack.inline_issuer_yaml(cls.idp)
        cls.base_policy += ("---\nkind: AccessRule\nname: ci-read\nsubjects: {groups: [ci]}\n"
                            "connections: {tags: {env: prod}}\naccess: read\n")
        cls.version = cls.apply_and_wait(cls.base_policy)
        # A first start opens its listeners once enrollment brought their certificate, which can
        # be after the first snapshot is applied: the tests begin when they are open.
        for agent in cls.agents.values():
            agent.postgres_port()
            agent.mysql_port()

    def tearDown(self):
        result = self._outcome.result
        if any(t is self for t, _ in result.errors + result.failures):
            type(self).failed = True

    # --- helpers ------------------------------------------------------------------------------

    @classmethod
    def apply(cls, text):
        out = cls.cp.apply(text).stdout
        return int(out.rsplit("policy version ", 1)[1])

    @classmethod
    def wait_applied(cls, version, vpcs=tuple(VPCS), timeout=30):
        """Each agent in `vpcs` runs `version` (its /status) and the control plane has its ACK."""
        for x in vpcs:
            wait_for(lambda: cls.agents[x].status()["applied_version"] == version
                     and int((cls.cp.agent(f"agent-{x}") or {}).get("applied_version", 0)) == version,
                     timeout=timeout, what=f"agent-{x} to apply and ACK version {version}")

    @classmethod
    def apply_and_wait(cls, text):
        version = cls.apply(text)
        cls.wait_applied(version)
        return version

    def psql(self, x, sql, dbname=None, host=None, port=AGENT_PG_PORT, user="ci-bot",
             password=None, sslmode="verify-full", timeout=30):
        """psql run in VPC x (`ip netns exec`), by default through x's agent, the token as the
        password, the agent's certificate verified against the control plane's CA."""
        i = VPCS[x]
        dsn = (f"host={host or agent_addr(i)} port={port} dbname={dbname or f'db-{x}'} "
               f"user={user} sslmode={sslmode}")
        if sslmode == "verify-full":
            dsn += f" sslrootcert={self.agents[x].tls_ca()}"
        env = dict(os.environ, PGPASSWORD=password or self.idp.token(), PGCONNECT_TIMEOUT="5")
        return ns_run(NS[x], f"{PG_BIN}/psql", dsn, "-XAtc", sql, env=env, timeout=timeout)

    def mariadb_cli(self, x, sql, database, timeout=30):
        """The mariadb CLI in VPC x, through x's agent (TLS verified, the token as password)."""
        i = VPCS[x]
        args = ["mariadb", "--no-defaults", f"--host={agent_addr(i)}", f"--port={AGENT_MYSQL_PORT}",
                "--user=ci-bot", "--protocol=TCP", "--batch", "--skip-column-names", "--ssl",
                f"--ssl-ca={self.agents[x].tls_ca()}", "--ssl-verify-server-cert", database]
        return ns_run(NS[x], *args, stdin=sql, timeout=timeout,
                      env=dict(os.environ, MYSQL_PWD=self.idp.token()))

    def assert_answers(self, r, expected):
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), expected)

    def assert_blocked(self, r, function):
        self.assertNotEqual(r.returncode, 0, r.stdout)
        self.assertIn('Sluice: statement blocked by guardrail "probes": dangerous_function', r.stderr)
        self.assertIn(function, r.stderr)

    # --- 1 ------------------------------------------------------------------------------------

    def test_1_each_agent_receives_only_its_networks_connections(self):
        expected = {"a": ["db-a"], "b": ["db-b", "shop-b"], "c": ["db-c"]}
        for x in VPCS:
            with self.subTest(agent=x):
                st = self.agents[x].status()
                self.assertEqual(sorted(st["connections"]), expected[x])
                # Only its own network's database passwords are on its disk.
                snapshot = self.agents[x].snapshot_on_disk()
                for y in VPCS:
                    (self.assertIn if y == x else self.assertNotIn)(self.passwords[y], snapshot)
                (self.assertIn if x == "b" else self.assertNotIn)(self.mariadb_password, snapshot)
        # What an operator sees: three agents, connected, each with its own labels.
        listed = {a["agent_id"]: a for a in self.cp.agents()["agents"]}
        self.assertEqual(sorted(listed), ["agent-a", "agent-b", "agent-c"])
        for x in VPCS:
            self.assertTrue(listed[f"agent-{x}"]["connected"])
            self.assertEqual(listed[f"agent-{x}"]["labels"], {"vpc": x})
        table = self.cp.ctl("agents", "list").stdout
        for x in VPCS:
            self.assertRegex(table, rf"(?m)^agent-{x}\s+yes\s.*vpc={x}")

    # --- 2 ------------------------------------------------------------------------------------

    def test_2_a_caller_reaches_its_database_only_through_its_agent(self):
        # Each VPC's caller reads its own database through its own agent: the row and the
        # server address are that VPC's.
        for x, i in VPCS.items():
            with self.subTest(vpc=x):
                r = self.psql(x, "SELECT vpc, host(inet_server_addr()), current_user FROM whereami")
                self.assert_answers(r, f"{x}|{db_addr(i)}|app")
        r = self.mariadb_cli("b", "SELECT count(*) FROM customers", "shop-b")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(),
                         self.mariadb.sql("SELECT count(*) FROM customers", database="demo"))

        # From A, B's database is not reachable at all: no route, at once, even with its
        # real password.
        b = VPCS["b"]
        r = self.psql("a", "SELECT 1", host=db_addr(b), port=PG_PORT, dbname="demo", user="app",
                      password=self.passwords["b"], sslmode="disable")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(f'connection to server at "{db_addr(b)}", port {PG_PORT} failed: '
                      "Network is unreachable", r.stderr)
        self.assertLess(r.elapsed, 5)
        for host, port in ((mariadb_addr(b), MARIADB_PORT), (agent_addr(b), AGENT_PG_PORT),
                           (agent_addr(b), AGENT_MYSQL_PORT)):
            self.assertEqual(tcp_connect_error(NS["a"], host, port), "Network is unreachable",
                             f"{host}:{port} from vpc a")
        # Nor through A's agent: B's Connections are not there, and it says so.
        r = self.psql("a", "SELECT vpc FROM whereami", dbname="db-b")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn('Sluice: connection "db-b" does not exist on this agent', r.stderr)
        r = self.mariadb_cli("a", "SELECT count(*) FROM customers", "shop-b")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("ERROR 1049 (42000)", r.stderr)
        self.assertIn("shop-b", r.stderr)

    # --- 3 ------------------------------------------------------------------------------------

    def test_3_agents_only_dial_out(self):
        cp_pid = self.cp.process.proc.pid
        cp_http_port = port_of(self.cp.http)
        # The control plane listens on the hub only, and every one of its connections was
        # accepted on its own ports: it opened none (one that it opened would have an ephemeral
        # local port).
        listening = sockets(NS["hub"], True, cp_pid)
        self.assertEqual(sorted(local for local, _ in listening),
                         sorted([f"{HUB_ADDR}:{GRPC_PORT}", f"127.0.0.1:{cp_http_port}"]))
        established = sockets(NS["hub"], False, cp_pid)
        for local, peer in established:
            self.assertIn(port_of(local), (GRPC_PORT, cp_http_port),
                          f"the control plane opened {local} -> {peer}")
        # Among them, one stream from each agent, from its VPC's uplink address.
        peers = {host_of(peer) for local, peer in established if port_of(local) == GRPC_PORT}
        for i in VPCS.values():
            self.assertIn(uplink_addr(i), peers)

        for x, i in VPCS.items():
            with self.subTest(agent=x):
                pid = self.agents[x].process.proc.pid
                # The agent listens on its VPC address (and its status port on loopback): not on
                # a wildcard, not on the uplink the hub could reach.
                listening = sorted(local for local, _ in sockets(NS[x], True, pid))
                self.assertEqual(listening, sorted([
                    f"{agent_addr(i)}:{AGENT_PG_PORT}", f"{agent_addr(i)}:{AGENT_MYSQL_PORT}",
                    f"127.0.0.1:{self.agents[x].status_port}"]))
                # Its connections to the hub: it dialed them, from an ephemeral port of its
                # uplink to the control plane's gRPC port, and none reached its listeners.
                to_hub = [(local, peer) for local, peer in sockets(NS[x], False, pid)
                          if host_of(peer).startswith("198.18.")]
                self.assertTrue(to_hub, "no stream to the control plane")
                listen_ports = {port_of(l) for l in listening}
                for local, peer in to_hub:
                    self.assertEqual(peer, f"{HUB_ADDR}:{GRPC_PORT}")
                    self.assertEqual(host_of(local), uplink_addr(i))
                    self.assertNotIn(port_of(local), listen_ports)
                # And the hub has no way in: no route to the agent's listener.
                self.assertEqual(tcp_connect_error(NS["hub"], agent_addr(i), AGENT_PG_PORT),
                                 "Network is unreachable")

    # --- 4 ------------------------------------------------------------------------------------

    def test_4_a_policy_change_reaches_all_three_agents(self):
        for x in VPCS:
            self.assert_answers(self.psql(x, "SELECT vpc_probe()"), "1")
        before = type(self).version
        version = self.apply_and_wait(self.base_policy + guardrail_yaml(["vpc_probe"]))
        self.assertGreater(version, before)
        type(self).version = version
        listed = {a["agent_id"]: a for a in self.cp.agents()["agents"]}
        for x in VPCS:
            with self.subTest(agent=x):
                self.assertEqual(self.agents[x].status()["applied_version"], version)
                self.assertEqual(int(listed[f"agent-{x}"]["applied_version"]), version)
                self.assert_blocked(self.psql(x, "SELECT vpc_probe()"), "vpc_probe")
                self.assert_answers(self.psql(x, "SELECT vpc_name()"), x)

    # --- 5 ------------------------------------------------------------------------------------

    def test_5_a_cut_off_agent_keeps_serving_and_catches_up(self):
        # The guardrail of test 4 is in force everywhere (this test applies it if run alone).
        last_good = self.apply_and_wait(self.base_policy + guardrail_yaml(["vpc_probe"]))
        c = self.agents["c"]
        # Cut VPC c off: the hub's end of its link goes down.
        ip("-n", NS["hub"], "link", "set", "to-c", "down")
        restored = False
        try:
            self.assertIn(tcp_connect_error(NS["c"], HUB_ADDR, GRPC_PORT, timeout=2),
                          ("timeout", "No route to host"))
            newer = self.apply(self.base_policy + guardrail_yaml(["vpc_probe", "vpc_name"]))
            self.assertGreater(newer, last_good)
            type(self).version = newer
            self.wait_applied(newer, ("a", "b"))
            # a and b run the newer policy; c cannot have it, and the control plane says so.
            self.assert_blocked(self.psql("a", "SELECT vpc_name()"), "vpc_name")
            self.assertEqual(c.status()["applied_version"], last_good)
            row = self.cp.agent("agent-c")
            self.assertEqual((int(row["desired_version"]), int(row["applied_version"])),
                             (newer, last_good))
            # c keeps serving, with its last good policy: what it allowed still runs, what it
            # blocked is still blocked.
            token = self.idp.token(sub="cut-off-bot")
            self.assert_answers(self.psql("c", "SELECT vpc_name()", password=token), "c")
            self.assert_blocked(self.psql("c", "SELECT vpc_probe()", password=token), "vpc_probe")
            self.assertEqual(c.status()["applied_version"], last_good)

            # The agent notices that its stream is gone (the hub's address stopped answering),
            # and goes on serving the same policy while it tries to reconnect.
            st = wait_for(lambda: (s := c.status())["state"] == "reconnecting" and s, timeout=90,
                          what="agent c to notice that it is cut off")
            self.assertEqual(st["applied_version"], last_good)
            self.assertEqual(st["connections"], ["db-c"])
            self.assert_answers(self.psql("c", "SELECT vpc_name()", password=token), "c")
            self.assert_blocked(self.psql("c", "SELECT vpc_probe()", password=token), "vpc_probe")

            # The link returns: c reconnects and catches up on its own.
            ip("-n", NS["hub"], "link", "set", "to-c", "up")
            restored = True
            self.wait_applied(newer, ("c",), timeout=90)
            st = c.status()
            self.assertEqual((st["state"], st["snapshot_source"]), ("connected", "control-plane"))
            self.assertTrue(self.cp.agent("agent-c")["connected"])
            self.assert_blocked(self.psql("c", "SELECT vpc_name()"), "vpc_name")
            # What c did while cut off reached the control plane too.
            wait_for(lambda: any(s.get("connection") == "db-c" for s in json.loads(
                self.cp.ctl("sessions", "list", "--identity", "cut-off-bot", "-o",
                            "json").stdout).get("sessions", [])),
                     timeout=60, what="the cut-off sessions in the control plane")
        finally:
            if not restored:
                ip("-n", NS["hub"], "link", "set", "to-c", "up", check=False)


if __name__ == "__main__":
    unittest.main()
