"""The processes a scenario runs: the origin, and the proxies under test (nginx,
nginx + ngx_lua, HAProxy, Portico). Each peer's configuration is a template kept in
bench/peers/; a scenario supplies only its own part (an nginx include, HAProxy
frontend/backend sections, Portico resources)."""

import json
import os
import shutil
import signal
import subprocess
import socket
import urllib.request

from . import system

BENCH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(BENCH)
PEERS = os.path.join(BENCH, "peers")
LUA_DIR = os.path.join(PEERS, "lua")
WORK = os.environ.get("BENCH_WORK", "/tmp/portico-bench")
# BENCH_PORTICO_BIN measures another build as `portico` (scripts/build-pgo.sh's, say).
PORTICO_BIN = os.environ.get("BENCH_PORTICO_BIN") or os.path.join(ROOT, "target", "profiling", "portico")
# An earlier build to run beside the current one (labels `portico-base...`), so a change's
# effect is a ratio measured in one run: `BENCH_BASELINE_BIN=/path/to/old/portico`.
BASELINE_BIN = os.environ.get("BENCH_BASELINE_BIN") or None
FLOOR_BIN = os.path.join(BENCH, "floor-proxy", "target", "release", "floor-proxy")
PINGORA_FLOOR_BIN = os.path.join(BENCH, "pingora-floor", "target", "release", "pingora-floor")
PINGORA_CODEC_FLOOR_BIN = os.path.join(BENCH, "pingora-floor", "target", "release", "pingora-codec-floor")
ADMIN_KEY = "bench-admin-key-0123456789abcdef"

ORIGIN_PORTS = list(range(19001, 19011))


def template(name, **values):
    with open(os.path.join(PEERS, name)) as f:
        text = f.read()
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    return text


def prefix_dir(name):
    path = os.path.join(WORK, name)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(os.path.join(path, "tmp"))
    return path


def port_open(port):
    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True


def http_get(url, headers=None, timeout=5.0):
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.status, dict(resp.headers), resp.read()


class Peer:
    """A started server process group and the port it answers on."""

    name = "peer"
    core = system.PROXY_CORE

    def __init__(self, name, port):
        self.name = name
        self.port = port
        self.proc = None

    def url(self, path="/"):
        return f"http://127.0.0.1:{self.port}{path}"

    def pids(self):
        return system.group_pids(self.proc.pid) if self.proc else []

    def wait_ready(self, timeout=30):
        system.wait_for(lambda: port_open(self.port), timeout, f"{self.name} on :{self.port}")

    def stop(self, sig=signal.SIGTERM):
        if self.proc:
            system.stop(self.proc, sig)
            self.proc = None

    def version(self):
        return ""


class Nginx(Peer):
    """nginx 1 worker; `scenario` is the text of its http{} part (upstreams, servers)."""

    def __init__(self, name, port, scenario, conf="nginx.conf", core=system.PROXY_CORE):
        super().__init__(name, port)
        self.scenario = scenario
        self.conf = conf
        self.core = core

    def start(self):
        self.prefix = prefix_dir(self.name)
        with open(os.path.join(self.prefix, "scenario.inc"), "w") as f:
            f.write(self.scenario.replace("{{PREFIX}}", self.prefix).replace("{{LUA_DIR}}", LUA_DIR))
        conf = os.path.join(self.prefix, "nginx.conf")
        with open(conf, "w") as f:
            f.write(template(self.conf, PREFIX=self.prefix, LISTEN=f"listen 127.0.0.1:{self.port};"))
        system.run(["nginx", "-t", "-q", "-p", self.prefix, "-c", conf])
        self.proc = system.spawn(
            ["nginx", "-p", self.prefix, "-c", conf, "-g", "daemon off;"],
            self.core,
            os.path.join(self.prefix, "stdout.log"),
        )
        self.wait_ready()
        return self

    def reload(self, scenario=None):
        """SIGHUP after rewriting the scenario part: nginx's way to change config."""
        if scenario is not None:
            self.scenario = scenario
            with open(os.path.join(self.prefix, "scenario.inc"), "w") as f:
                f.write(scenario.replace("{{PREFIX}}", self.prefix))
        os.kill(self.proc.pid, signal.SIGHUP)

    def version(self):
        return _stderr_version(["nginx", "-v"])


class Origin(Nginx):
    """The origin: nginx answering "ok\\n" with an X-Node header, on the client core."""

    def __init__(self, name="origin", ports=None):
        super().__init__(name, (ports or ORIGIN_PORTS)[0], "", conf="origin.nginx.conf",
                         core=system.CLIENT_CORE)
        self.ports = ports or ORIGIN_PORTS

    def start(self):
        self.prefix = prefix_dir(self.name)
        listen = "\n        ".join(f"listen 127.0.0.1:{p} reuseport;" for p in self.ports)
        conf = os.path.join(self.prefix, "nginx.conf")
        with open(conf, "w") as f:
            f.write(template(self.conf, PREFIX=self.prefix, LISTEN=listen))
        self.proc = system.spawn(
            ["nginx", "-p", self.prefix, "-c", conf, "-g", "daemon off;"],
            self.core,
            os.path.join(self.prefix, "stdout.log"),
        )
        for p in self.ports:
            system.wait_for(lambda p=p: port_open(p), 10, f"origin :{p}")
        return self


class Haproxy(Peer):
    """HAProxy, one thread, master-worker mode so that a reload is `SIGUSR2`."""

    def __init__(self, name, port, frontend, backend, files=None):
        super().__init__(name, port)
        self.frontend = frontend
        self.backend = backend
        self.files = files or {}

    def _write(self):
        for fname, text in self.files.items():
            with open(os.path.join(self.prefix, fname), "w") as f:
                f.write(text)
        with open(self.cfg, "w") as f:
            f.write(template("haproxy.cfg", PREFIX=self.prefix, LISTEN=f"127.0.0.1:{self.port}",
                             FRONTEND=self.frontend.replace("{{PREFIX}}", self.prefix),
                             BACKEND=self.backend.replace("{{PREFIX}}", self.prefix)))

    def start(self):
        self.prefix = prefix_dir(self.name)
        self.cfg = os.path.join(self.prefix, "haproxy.cfg")
        self._write()
        system.run(["haproxy", "-c", "-q", "-f", self.cfg])
        self.proc = system.spawn(["haproxy", "-W", "-db", "-f", self.cfg], self.core,
                                 os.path.join(self.prefix, "stdout.log"))
        self.wait_ready()
        return self

    def reload(self, backend=None):
        """HAProxy's reload: the master re-reads the file and starts a new worker; the old
        one finishes its connections."""
        if backend is not None:
            self.backend = backend
            self._write()
        os.kill(self.proc.pid, signal.SIGUSR2)

    def admin(self, command):
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(os.path.join(self.prefix, "haproxy.sock"))
            s.sendall(command.encode() + b"\n")
            chunks = []
            while True:
                data = s.recv(65536)
                if not data:
                    break
                chunks.append(data)
        return b"".join(chunks).decode()

    def version(self):
        return system.run(["haproxy", "-v"]).splitlines()[0]


class Portico(Peer):
    """Portico (profiling build: release code with symbols), configured through its admin API like a user would."""

    conf_template = "portico.yaml"

    def __init__(self, name, port, resources, static_extra="", bin=None, proxy_extra=""):
        super().__init__(name, port)
        self.bin = bin or PORTICO_BIN
        self.resources = resources
        self.static_extra = static_extra
        # Lines added to the `proxy:` section (indented), e.g. `  request_driver: pingora`.
        self.proxy_extra = proxy_extra
        self.admin_port = port + 100
        self.metrics_port = port + 200

    def start(self):
        self.prefix = prefix_dir(self.name)
        conf = os.path.join(self.prefix, "portico.yaml")
        for name in [self.conf_template, "portico-baseline.yaml"]:
            with open(conf, "w") as f:
                f.write(template(name, PREFIX=self.prefix, LISTEN=f"127.0.0.1:{self.port}",
                                 ADMIN=f"127.0.0.1:{self.admin_port}",
                                 METRICS=f"127.0.0.1:{self.metrics_port}",
                                 PROXY_EXTRA=self.proxy_extra, **self.template_values())
                        + self.static_extra)
            # An earlier build (BENCH_BASELINE_BIN) gets the same settings when it knows
            # them all, else the baseline file without the ones older builds refuse.
            if self.bin == PORTICO_BIN or subprocess.run(
                    [self.bin, "-t", "-c", conf], capture_output=True).returncode == 0:
                break
        env = dict(os.environ, PORTICO_ADMIN_KEY=ADMIN_KEY, RUST_LOG="warn")
        self.proc = system.spawn([self.bin, "-c", conf], self.core,
                                 os.path.join(self.prefix, "portico.log"), env=env)
        system.wait_for(lambda: port_open(self.admin_port), 30, f"{self.name} admin")
        self.wait_ready()
        if self.resources is not None:
            self.admin("PUT", "/apisix/admin/configs", self.resources)
        return self

    def template_values(self):
        return {}

    def admin(self, method, path, body=None, timeout=30.0):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.admin_port}{path}", data=data,
                                     method=method, headers={"X-API-KEY": ADMIN_KEY})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"{method} {path}: {e.code} {e.read()[:500]!r}") from None

    def version(self):
        return system.run([self.bin, "--version"]).strip()


class Floor(Peer):
    """The floor (issue 17): bench/floor-proxy, a tokio + httparse keep-alive proxy with
    no Pingora, one thread, the same forwarding headers."""

    bin = FLOOR_BIN

    def __init__(self, name, port, origin, *args):
        super().__init__(name, port)
        self.origin = origin
        self.args = list(args)

    def start(self):
        self.prefix = prefix_dir(self.name)
        self.proc = system.spawn([self.bin, f"127.0.0.1:{self.port}", self.origin, *self.args], self.core,
                                 os.path.join(self.prefix, "stdout.log"))
        self.wait_ready()
        return self


class PingoraFloor(Floor):
    """The Pingora floor (issue 17): bench/pingora-floor, a `ProxyHttp` with a fixed peer
    and the same forwarding headers, on Portico's Pingora, allocator and build profile:
    what Pingora costs before any of Portico's code runs."""

    bin = PINGORA_FLOOR_BIN


class PingoraCodecFloor(Floor):
    """Pingora's codec floor (issue 17): bench/pingora-floor's second binary, the same work
    on pingora-core's HTTP/1 sessions in a loop of its own, without pingora-proxy. Mode
    `pooled` takes origin connections from Pingora's pool as `pingora` does, `owned` keeps
    one per client connection as `floor` does, and `hooks` is `pooled` with pingora-proxy's
    `Session` and the bare `ProxyHttp`'s hooks driven by that loop."""

    bin = PINGORA_CODEC_FLOOR_BIN


def _stderr_version(argv):
    import subprocess

    res = subprocess.run(argv, capture_output=True, text=True)
    return (res.stderr or res.stdout).strip()
