"""Checks of deploy/ that no schema makes, for scripts/check-deploy.

    check_deploy.py static             the files agree with each other and with
                                       the binary's settings (src/)
    check_deploy.py start-script       prints the StatefulSet's start script
                                       (for shellcheck)
    check_deploy.py emulate BINARY     runs the StatefulSet's pods as processes
                                       on loopback (see `emulate`)

Every failure is one line saying which file and what is wrong; exit 1.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
KUBE = ROOT / "deploy" / "kubernetes"
COMPOSE = ROOT / "deploy" / "compose" / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
PROBE = ROOT / "deploy" / "docker" / "vinzclortho-probe"
# The emulated pods listen on 127.0.<this>.<ordinal + 1>: a net no test in
# tests/ uses (Cluster::start(NET, n)).
LOOPBACK_NET = 249
# src/config.rs: the cluster port defaults to the HTTP port plus this.
CLUSTER_PORT_OFFSET = 1000

failures = []


def fail(where, what):
    failures.append(f"{where}: {what}")


def kube_objects():
    objects = []
    for path in sorted(KUBE.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                objects.append((path.name, doc))
    return objects


def one(objects, kind, name=None):
    found = [(f, o) for f, o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    if len(found) != 1:
        raise SystemExit(f"check-deploy: expected one {kind} {name or ''} in deploy/kubernetes, found {len(found)}")
    return found[0]


def known_env_vars():
    """Every VINZCLORTHO_* variable the binary reads (clap `env = ...`)."""
    names = set()
    for path in (ROOT / "src").rglob("*.rs"):
        names.update(re.findall(r'env = "(VINZCLORTHO_[A-Z0-9_]+)"', path.read_text()))
    if len(names) < 10:
        raise SystemExit("check-deploy: found almost no VINZCLORTHO_* variables in src/: has config.rs moved?")
    return names


def image_user():
    match = re.search(r"^USER (\d+):(\d+)$", DOCKERFILE.read_text(), re.M)
    if not match:
        raise SystemExit("check-deploy: the Dockerfile has no numeric `USER UID:GID`")
    return int(match.group(1)), int(match.group(2))


def statefulset(objects):
    where, sts = one(objects, "StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return where, sts, pod, container


def start_script(objects):
    _, _, _, container = statefulset(objects)
    command = container["command"]
    if command[:2] != ["/bin/sh", "-c"]:
        raise SystemExit("check-deploy: the StatefulSet's command is no longer `/bin/sh -c SCRIPT`")
    return command[2]


def check_env(where, names, known):
    for name in names:
        if name.startswith("VINZCLORTHO_") and name not in known:
            fail(where, f"{name} is no variable the binary reads (src/: env = \"VINZCLORTHO_...\")")


def selects(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def check_kubernetes(known, uid, gid):
    objects = kube_objects()
    where, sts, pod, container = statefulset(objects)
    labels = sts["spec"]["template"]["metadata"]["labels"]
    if not selects(sts["spec"]["selector"]["matchLabels"], labels):
        fail(where, "the StatefulSet's selector does not select its own pods")
    service_name = sts["spec"]["serviceName"]
    swhere, headless = one(objects, "Service", service_name)
    if headless["spec"].get("clusterIP") != "None":
        fail(swhere, f"Service {service_name} (the StatefulSet's serviceName) must be headless (clusterIP: None)")
    if not headless["spec"].get("publishNotReadyAddresses"):
        fail(swhere, f"Service {service_name} must publish not-ready pods: joiners are reached before they are ready")
    for f, svc in [(f, o) for f, o in objects if o["kind"] == "Service"]:
        if not selects(svc["spec"]["selector"], labels):
            fail(f, f"Service {svc['metadata']['name']} does not select the StatefulSet's pods")
    pwhere, pdb = one(objects, "PodDisruptionBudget")
    if not selects(pdb["spec"]["selector"]["matchLabels"], labels):
        fail(pwhere, "the PodDisruptionBudget does not select the StatefulSet's pods")
    if pdb["spec"].get("maxUnavailable") != 1:
        fail(pwhere, "with N=3 and R=W=2 one pod at a time may go: maxUnavailable 1")

    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = {e["name"]: e.get("value") for e in container["env"]}
    check_env(where, env, known)
    address = env.get("VINZCLORTHO_ADDRESS", "")
    if not address.startswith(f"$(POD_NAME).{service_name}.$(POD_NAMESPACE).svc."):
        fail(where, f"VINZCLORTHO_ADDRESS {address!r} is not the pod's stable name under Service {service_name}")
    http_port = int(address.rsplit(":", 1)[-1]) if ":" in address else None
    if ports.get("http") != http_port:
        fail(where, f"container port http ({ports.get('http')}) is not the port of VINZCLORTHO_ADDRESS ({http_port})")
    if http_port is not None and ports.get("cluster") != http_port + CLUSTER_PORT_OFFSET:
        fail(where, f"container port cluster ({ports.get('cluster')}) is not the HTTP port + {CLUSTER_PORT_OFFSET}")
    for svc_where, svc in [(f, o) for f, o in objects if o["kind"] == "Service"]:
        for p in svc["spec"]["ports"]:
            if p["targetPort"] not in ports:
                fail(svc_where, f"Service {svc['metadata']['name']} targets port {p['targetPort']!r}, not a container port")
            elif p["port"] != ports[p["targetPort"]]:
                fail(svc_where, f"Service {svc['metadata']['name']} port {p['port']} differs from the container's")

    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = container.get(kind)
        if not probe:
            fail(where, f"no {kind}")
            continue
        handler = probe.get("httpGet") or probe.get("tcpSocket") or probe.get("grpc")
        if handler and handler.get("port") not in ports and handler.get("port") not in ports.values():
            fail(where, f"{kind} asks port {handler.get('port')!r}, not a container port")
        if probe.get("httpGet"):
            https = "VINZCLORTHO_HTTP_TLS_CERT" in env
            if (probe["httpGet"].get("scheme") == "HTTPS") != https or probe["httpGet"].get("path") != "/ping":
                fail(where, f"{kind} must GET /ping over {'HTTPS' if https else 'HTTP'}")
        if probe.get("grpc") and "VINZCLORTHO_TLS_CA" in env:
            fail(where, f"{kind}: the kubelet's gRPC probe cannot pass the cluster port's mutual TLS")

    security = pod.get("securityContext", {})
    if (security.get("runAsUser"), security.get("runAsGroup"), security.get("fsGroup")) != (uid, gid, gid):
        fail(where, f"runAsUser/runAsGroup/fsGroup must be the image's user {uid}:{gid} (Dockerfile USER)")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    claims = {c["metadata"]["name"] for c in sts["spec"].get("volumeClaimTemplates", [])}
    mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}
    for name in mounts:
        if name not in volumes and name not in claims:
            fail(where, f"volumeMount {name} names no volume or claim template")
    for name, volume in volumes.items():
        if "secret" in volume:
            if volume["secret"].get("defaultMode") != 0o400:
                fail(where, f"Secret volume {name} must have defaultMode 0400")
            if any(m.get("subPath") for m in container["volumeMounts"] if m["name"] == name):
                fail(where, f"Secret volume {name} mounted with subPath: rotated files would never arrive")
    data_dir = env.get("VINZCLORTHO_DATA_DIR", "")
    if not any(data_dir.startswith(mounts.get(c, "//") + "/") for c in claims):
        fail(where, f"VINZCLORTHO_DATA_DIR {data_dir!r} is not on the pod's volume claim")
    for var in ("VINZCLORTHO_TLS_CA", "VINZCLORTHO_TLS_CERT", "VINZCLORTHO_TLS_KEY", "VINZCLORTHO_METRICS_TOKEN_FILE"):
        path = env.get(var) or ""
        if not any(path.startswith(mounts[n] + "/") for n, v in volumes.items() if "secret" in v and n in mounts):
            fail(where, f"{var} {path!r} is not in a mounted Secret")
    # Prometheus scrapes every pod at its stable name.
    prometheus = yaml.safe_load((KUBE / "prometheus" / "prometheus.yml").read_text())
    targets = [t for sc in prometheus["scrape_configs"] for s in sc["static_configs"] for t in s["targets"]]
    expected = [
        f"vinzclortho-{k}.{service_name}.NAMESPACE.svc.cluster.local:{http_port}" for k in range(sts["spec"]["replicas"])
    ]
    if targets != expected:
        fail("prometheus/prometheus.yml", f"targets {targets}, expected the pods' stable names {expected}")
    return objects


def check_compose(known):
    compose = yaml.safe_load(COMPOSE.read_text())
    where = "deploy/compose/compose.yaml"
    services = compose["services"]
    declared = set(compose.get("volumes") or {})
    nodes = {}
    for name, service in services.items():
        for dep in service.get("depends_on") or []:
            if dep not in services:
                fail(where, f"{name} depends on {dep}, no such service")
        for volume in service.get("volumes") or []:
            source = volume.split(":", 1)[0]
            if source.startswith((".", "/")):
                if not (COMPOSE.parent / source).exists():
                    fail(where, f"{name} mounts {source}, which does not exist")
            elif source not in declared:
                fail(where, f"{name} mounts volume {source}, not declared under volumes")
        env = service.get("environment") or {}
        check_env(f"{where} ({name})", env, known)
        if "VINZCLORTHO_ADDRESS" in env:
            nodes[name] = env
    for name, env in nodes.items():
        host = env["VINZCLORTHO_ADDRESS"].rsplit(":", 1)[0]
        if host != name:
            fail(where, f"{name}: VINZCLORTHO_ADDRESS must be the service's own name, {host} is not")
        join = env.get("VINZCLORTHO_JOIN")
        if join:
            seed, seed_port = join.rsplit(":", 1)
            seed_http = nodes.get(seed, {}).get("VINZCLORTHO_ADDRESS", ":0").rsplit(":", 1)[1]
            if int(seed_port) != int(seed_http) + CLUSTER_PORT_OFFSET:
                fail(where, f"{name} joins {join}, not {seed}'s cluster port (HTTP + {CLUSTER_PORT_OFFSET})")
    # Prometheus scrapes exactly the nodes.
    prometheus = yaml.safe_load((COMPOSE.parent / "prometheus.yml").read_text())
    targets = sorted(t for sc in prometheus["scrape_configs"] for s in sc["static_configs"] for t in s["targets"])
    if targets != sorted(env["VINZCLORTHO_ADDRESS"] for env in nodes.values()):
        fail("deploy/compose/prometheus.yml", f"targets {targets} are not the nodes' HTTP addresses")
    # Grafana finds the dashboards where the provider of dashboards/ looks.
    provider = yaml.safe_load((ROOT / "dashboards/provisioning/dashboards.yaml").read_text())["providers"][0]
    grafana = [v.split(":")[1] for v in services["grafana"]["volumes"] if v.startswith("../../dashboards:")]
    if grafana != [provider["options"]["path"]]:
        fail(where, f"grafana mounts dashboards/ at {grafana}, the provider reads {provider['options']['path']}")
    datasource = yaml.safe_load((COMPOSE.parent / "grafana-datasources.yaml").read_text())["datasources"][0]
    if not datasource["url"].startswith("http://prometheus:"):
        fail("deploy/compose/grafana-datasources.yaml", "the datasource must point at the prometheus service")


def check_dockerfile(known):
    text = DOCKERFILE.read_text()
    check_env("Dockerfile", re.findall(r"^ENV (VINZCLORTHO_[A-Z0-9_]+)=", text, re.M), known)
    if 'HEALTHCHECK' not in text or '"vinzclortho-probe", "http"' not in text:
        fail("Dockerfile", "the HEALTHCHECK must run vinzclortho-probe http")
    if "COPY deploy/docker/vinzclortho-probe /usr/local/bin/vinzclortho-probe" not in text:
        fail("Dockerfile", "the image must carry deploy/docker/vinzclortho-probe")


def static():
    known = known_env_vars()
    uid, gid = image_user()
    check_dockerfile(known)
    check_kubernetes(known, uid, gid)
    check_compose(known)


# --- emulation -------------------------------------------------------------


def expand(text, env):
    """Kubernetes' expansion of $(NAME) in env values, command and args
    (its third_party/forked/golang/expansion, ported): a defined NAME is
    replaced, an undefined one kept as it is, `$$` is one `$`. In a shell
    script it also meets `$(command)` and `$((arithmetic))`, kept unless the
    text up to the first `)` names a variable."""
    out = []
    i = 0
    while i < len(text):
        if text[i] != "$" or i + 1 == len(text):
            out.append(text[i])
            i += 1
        elif text[i + 1] == "$":
            out.append("$")
            i += 2
        elif text[i + 1] == "(":
            end = text.find(")", i + 2)
            if end == -1:
                out.append("$(")
                i += 2
            else:
                name = text[i + 2 : end]
                out.append(env[name] if name in env else f"$({name})")
                i = end + 1
        else:
            out.append(text[i : i + 2])
            i += 2
    return "".join(out)


class Pods:
    """The StatefulSet's pods as processes: each runs the manifest's start
    script with the manifest's environment (POD_NAME, POD_NAMESPACE filled as
    the downward API would), its Secrets copied to files the way the kubelet
    writes them (0400 plus group read for fsGroup), its own data directory,
    and its stable name resolving to a loopback address of its own through
    this mount namespace's /etc/hosts (see `emulate`)."""

    def __init__(self, binary, work, namespace, objects):
        self.binary = binary
        self.work = work
        self.namespace = namespace
        _, self.sts, _, self.container = statefulset(objects)
        self.script = start_script(objects)
        self.mounts = {m["name"]: m["mountPath"] for m in self.container["volumeMounts"]}
        self.procs = {}
        self.logs = {}

    def path(self, ordinal, mount_path):
        """Where pod `ordinal` has `mount_path` in this emulation."""
        return str(self.work / f"pod{ordinal}" / mount_path.lstrip("/"))

    def env(self, ordinal):
        env = {
            "PATH": f"{Path(self.binary).parent}:{PROBE.parent}:/usr/bin:/bin",
            "HOME": str(self.work),
            "HOSTNAME": f"vinzclortho-{ordinal}",
        }
        for item in self.container["env"]:
            if "valueFrom" in item:
                field = item["valueFrom"]["fieldRef"]["fieldPath"]
                env[item["name"]] = {"metadata.name": f"vinzclortho-{ordinal}", "metadata.namespace": self.namespace}[
                    field
                ]
            else:
                env[item["name"]] = expand(item["value"], env)
        # The manifest's 1024 partitions take a debug build on 2 shared
        # cores about a minute to settle; the start-up path is the same.
        env["VINZCLORTHO_PARTITIONS"] = "64"
        # Paths inside the pod, moved under this pod's directory.
        for name, value in list(env.items()):
            for mount in self.mounts.values():
                if name.startswith("VINZCLORTHO_") and (value == mount or value.startswith(mount + "/")):
                    env[name] = self.path(ordinal, mount) + value[len(mount) :]
        return env

    def install_secrets(self, ordinal, secrets):
        for volume in self.sts["spec"]["template"]["spec"]["volumes"]:
            if "secret" not in volume:
                continue
            target = Path(self.path(ordinal, self.mounts[volume["name"]]))
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            for source in Path(secrets[volume["secret"]["secretName"]]).iterdir():
                shutil.copy(source, target / source.name)
                # What the kubelet makes of defaultMode with an fsGroup.
                os.chmod(target / source.name, volume["secret"]["defaultMode"] | 0o040)

    def start(self, ordinal):
        log = open(self.work / f"pod{ordinal}.log", "a")
        self.logs[ordinal] = self.work / f"pod{ordinal}.log"
        env = self.env(ordinal)
        self.procs[ordinal] = subprocess.Popen(
            # The kubelet expands the command with the container's variables.
            ["/bin/sh", "-c", expand(self.script, env)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def stop(self, ordinal):
        proc = self.procs.pop(ordinal, None)
        if proc and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def probe(self, ordinal, kind):
        return subprocess.run(
            [str(PROBE), kind], env=self.env(ordinal), capture_output=True, text=True, timeout=10
        )

    def wait_ready(self, ordinal, deadline):
        """Until both probes pass (the startup, readiness and liveness
        probes ask the same two things)."""
        while True:
            proc = self.procs[ordinal]
            if proc.poll() is not None:
                raise SystemExit(f"check-deploy: pod {ordinal} exited ({proc.returncode}):\n{self.tail(ordinal)}")
            if self.probe(ordinal, "http").returncode == 0 and self.probe(ordinal, "grpc").returncode == 0:
                return
            if time.monotonic() > deadline:
                raise SystemExit(f"check-deploy: pod {ordinal} not ready in time:\n{self.tail(ordinal)}")
            time.sleep(0.3)

    def admin(self, ordinal, *args, token=None):
        env = self.env(ordinal)
        if token:
            env["VINZCLORTHO_TOKEN"] = token
        return subprocess.run(
            [self.binary, "admin", "--json", *args], env=env, capture_output=True, text=True, timeout=90
        )

    def healthy(self, ordinal, token):
        answer = self.admin(ordinal, "wait-healthy", "--timeout", "60", token=token)
        if answer.returncode != 0:
            raise SystemExit(f"check-deploy: the emulated cluster is not healthy: {answer.stdout}{answer.stderr}")

    def members(self, ordinal, token):
        answer = self.admin(ordinal, "members", token=token)
        if answer.returncode != 0:
            raise SystemExit(f"check-deploy: admin members failed: {answer.stderr}")
        return json.loads(answer.stdout)

    def until(self, deadline, what, done, token):
        """Polls pod 0's member list until `done(members)`."""
        while True:
            members = self.members(0, token)
            if done(members):
                return
            if time.monotonic() > deadline:
                raise SystemExit(f"check-deploy: not in time: {what}: {members}")
            time.sleep(0.5)

    def store(self, ordinal, token, method, key, body=None):
        """A client request to /store/KEY on pod `ordinal`, as clients of the
        vinzclortho-http Service make it."""
        env = self.env(ordinal)
        url = f"https://{env['VINZCLORTHO_ADDRESS']}/store/{key}"
        args = ["curl", "-fsS", "--max-time", "10", "--cacert", env["VINZCLORTHO_CACERT"], "-X", method]
        args += ["-H", f"Authorization: Bearer {token}", "-H", "X-VinzClortho-ClientID: check-deploy"]
        if body is not None:
            args += ["--data-binary", body]
        answer = subprocess.run([*args, url], capture_output=True, text=True, timeout=15)
        if answer.returncode != 0:
            raise SystemExit(f"check-deploy: {method} {url}: {answer.stderr.strip()}")
        return answer.stdout

    def get(self, ordinal, path, token, expect_failure=False):
        """GET `path` over HTTPS; the body, or "" when it failed as expected."""
        env = self.env(ordinal)
        url = f"https://{env['VINZCLORTHO_ADDRESS']}{path}"
        args = ["curl", "-fsS", "--max-time", "10", "--cacert", env["VINZCLORTHO_CACERT"]]
        if token:
            args += ["-H", f"Authorization: Bearer {token}"]
        answer = subprocess.run([*args, url], capture_output=True, text=True, timeout=15)
        if answer.returncode != 0 and not expect_failure:
            raise SystemExit(f"check-deploy: GET {url}: {answer.stderr.strip()}")
        return answer.stdout if answer.returncode == 0 else ""

    def tail(self, ordinal):
        return "".join(open(self.logs[ordinal]).readlines()[-15:])

    def stop_all(self):
        for ordinal in list(self.procs):
            self.stop(ordinal)


def emulate(binary):
    """The StatefulSet's pods on loopback, as the kubelet would run them,
    through the README's steps: pod 0 creates the cluster with client
    security, pods 1 and 2 join through pod 0's stable name, every probe
    passes over mutual TLS and HTTPS, the cluster becomes healthy, a write
    and /metrics work with their tokens only; pod 0 loses its volume and
    comes back as a new member that replaces the old one, the write still
    there; scaling up renews every certificate (loaded without a restart)
    and pod 3 joins; scaling down, pod 3 leaves and is stopped. Runs in a
    private mount namespace (scripts/check-deploy starts it with `unshare`)
    whose /etc/hosts maps each pod's stable name, once the pod exists, to
    127.0.LOOPBACK_NET.1, .2, ...."""
    namespace = "ci"
    deadline = time.monotonic() + 180
    objects = kube_objects()
    work = Path(tempfile.mkdtemp(prefix="vinzclortho-deploy-"))
    try:
        _, sts, _, _ = statefulset(objects)
        service = sts["spec"]["serviceName"]
        replicas = sts["spec"]["replicas"]
        names = {k: f"vinzclortho-{k}.{service}.{namespace}.svc.cluster.local" for k in range(replicas)}
        hosts = work / "hosts"
        hosts.write_text(Path("/etc/hosts").read_text())
        subprocess.run(["mount", "--bind", str(hosts), "/etc/hosts"], check=True)
        secrets = work / "secrets"

        def make_certs(count):
            subprocess.run(
                [str(KUBE / "make-certs"), namespace, str(count), str(secrets)],
                env={**os.environ, "VINZCLORTHO": binary},
                check=True,
                capture_output=True,
            )

        make_certs(replicas)
        secret_dirs = {"vinzclortho-tls": secrets / "tls", "vinzclortho-metrics": secrets / "metrics"}
        pods = Pods(binary, work, namespace, objects)
        try:
            for k in range(replicas):  # OrderedReady: one at a time
                # A pod's name resolves once the pod exists (the headless
                # Service publishes it before it is ready), not before: the
                # start script asks whether pod 1 exists. Appended in place:
                # the bind mount holds this inode.
                with open(hosts, "a") as f:
                    f.write(f"127.0.{LOOPBACK_NET}.{k + 1} {names[k]}\n")
                pods.install_secrets(k, secret_dirs)
                pods.start(k)
                pods.wait_ready(k, deadline)
            data0 = Path(pods.env(0)["VINZCLORTHO_DATA_DIR"])
            token = (data0 / "admin.token").read_text().strip()
            pods.healthy(1, token)
            members = pods.members(2, token)
            addresses = sorted(m["address"] for m in members)
            if addresses != sorted(f"{n}:8880" for n in names.values()):
                raise SystemExit(f"check-deploy: members {addresses}, expected the pods' stable names")
            old0 = next(m["id"] for m in members if m["address"] == f"{names[0]}:8880")
            # Without the client token nothing but /ping answers; with it,
            # a write through one pod reads back through another (HTTPS,
            # checked against the cluster CA, at the stable names).
            if pods.admin(0, "status").returncode == 0:
                raise SystemExit("check-deploy: the emulated cluster answered /admin/status without a token")
            pods.store(1, token, "PUT", "greeting", "hello")
            # Prometheus's scrape (deploy/kubernetes/prometheus): HTTPS and
            # the metrics token; refused without it.
            metrics_token = (secret_dirs["vinzclortho-metrics"] / "token").read_text()
            if "vinzclortho_build_info" not in pods.get(2, "/metrics", metrics_token):
                raise SystemExit("check-deploy: /metrics with the metrics token has no vinzclortho_build_info")
            if pods.get(2, "/metrics", None, expect_failure=True):
                raise SystemExit("check-deploy: /metrics answered without the metrics token")

            # Pod 0 loses its volume: it must join the running cluster
            # through pod 1 (not create a second cluster), replace its old
            # member and take over its partitions.
            pods.stop(0)
            shutil.rmtree(data0)
            pods.start(0)
            pods.wait_ready(0, deadline)
            partitions = int(pods.env(0)["VINZCLORTHO_PARTITIONS"])
            while True:
                members = pods.members(1, token)
                new0 = [m for m in members if m["address"] == f"{names[0]}:8880"]
                replaced = len(members) == replicas and new0 and new0[0]["id"] != old0
                if replaced and new0[0]["claim"] > 0 and sum(m["claim"] for m in members) == partitions:
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"check-deploy: pod 0 did not come back as a new member owning partitions: {members}")
                time.sleep(0.5)
            pods.healthy(0, token)
            if pods.store(0, token, "GET", "greeting") != "hello":
                raise SystemExit("check-deploy: the key written before pod 0 lost its volume does not read back")

            # Scaling up as the README says: certificates for one more pod
            # (every pod's renewed: a rotation the running nodes load), then
            # the new pod joins through pod 0 and takes a share.
            make_certs(replicas + 1)
            for k in range(replicas):
                pods.install_secrets(k, secret_dirs)
            for k in range(replicas):
                while "cluster TLS certificates reloaded" not in pods.logs[k].read_text():
                    if time.monotonic() > deadline:
                        raise SystemExit(f"check-deploy: pod {k} did not load its renewed certificate")
                    time.sleep(0.3)
            names[replicas] = f"vinzclortho-{replicas}.{service}.{namespace}.svc.cluster.local"
            with open(hosts, "a") as f:
                f.write(f"127.0.{LOOPBACK_NET}.{replicas + 1} {names[replicas]}\n")
            pods.install_secrets(replicas, secret_dirs)
            pods.start(replicas)
            pods.wait_ready(replicas, deadline)
            pods.until(
                deadline,
                f"pod {replicas} joined and owns partitions",
                lambda members: len(members) == replicas + 1 and all(m["claim"] > 0 for m in members),
                token,
            )
            pods.healthy(replicas, token)
            # Scaling down: the last pod leaves (staged and committed through
            # that pod, which knows the plan before gossip spreads it), hands
            # its partitions over and is removed; then it is stopped.
            answer = pods.admin(replicas, "leave", token=token)
            if answer.returncode != 0:
                raise SystemExit(f"check-deploy: admin leave failed: {answer.stdout}{answer.stderr}")
            answer = pods.admin(replicas, "commit", token=token)
            # Exit 1 without a refusal: not applied within 10 s, but it
            # stays requested (the claimant applies it once it can).
            refused = re.search(r"\b[45]\d\d [A-Z]", answer.stderr)
            if answer.returncode != 0 and (answer.returncode != 1 or refused):
                raise SystemExit(f"check-deploy: admin commit failed: {answer.stdout}{answer.stderr}")
            pods.until(deadline, f"pod {replicas} left", lambda members: len(members) == replicas, token)
            pods.stop(replicas)
            pods.healthy(1, token)
            if pods.store(2, token, "GET", "greeting") != "hello":
                raise SystemExit("check-deploy: the key does not read back after scaling down")
        finally:
            pods.stop_all()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main():
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "static":
        static()
    elif command == "start-script":
        print(start_script(kube_objects()))
        return
    elif command == "emulate" and len(sys.argv) == 3:
        emulate(sys.argv[2])
    else:
        raise SystemExit(__doc__)
    if failures:
        print("\n".join(failures), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
