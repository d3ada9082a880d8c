"""S11: TLS termination. New TLS handshakes per second and keep-alive requests per second
over TLS, Portico against nginx serving the same certificate (ECDSA P-256, generated with
openssl in the harness's work dir) to the same clients.

Handshakes: `openssl s_time -new` (a full handshake per connection, never a resumed
session, then close; no request), several of them at once on the client core, against
each peer in turn within each round, with the proxy under the same CPU quota as the
throughput scenarios; the figure is handshakes per second and the proxy's CPU time per
handshake. Keep-alive: wrk over `https://` (one handshake per connection, then requests
on it), the S1 route, in the usual capped rounds. Idle: S9's measurement over TLS
(memory per idle keep-alive TLS connection; Portico's TLS listeners run Pingora's own
keep-alive loop, not the small idle future of plain HTTP/1.1)."""

import os
import re
import subprocess

from . import compare, measure, peers, system
from .peers import Nginx, Portico
from .report import Scenario
from .scenarios_ops import idle_row
from .scenarios_proxy import ORIGIN, nginx_upstream, portico_resources, started, stop_all

SNI = "bench.test"
HANDSHAKE_CLIENTS = int(os.environ.get("BENCH_TLS_CLIENTS", "4"))
IDLE_TLS_CONNS = int(os.environ.get("BENCH_TLS_IDLE_CONNS", "2000"))
NGINX_TLS = 18481
PORTICO_TLS = 18480


def make_certificate(workdir):
    """A self-signed ECDSA P-256 certificate for SNI, both peers serve it."""
    os.makedirs(workdir, exist_ok=True)
    cert = os.path.join(workdir, "cert.pem")
    key = os.path.join(workdir, "key.pem")
    system.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", f"/CN={SNI}",
                "-addext", f"subjectAltName=DNS:{SNI}"])
    return cert, key


class TlsTarget(measure.Target):
    """A target loaded over `https://` on the peer's TLS port (wrk does not verify the
    certificate; it sends the IP as SNI, which both peers ignore: nginx has one server,
    Portico falls back to `proxy.ssl.fallback_sni`)."""

    def __init__(self, label, peer, tls_port, path="/"):
        super().__init__(label, peer, path)
        self.tls_port = tls_port

    @property
    def url(self):
        return f"https://127.0.0.1:{self.tls_port}{self.path}"


def s_time(port, seconds, clients):
    """`clients` concurrent `openssl s_time -new` runs; the handshakes they completed."""
    argv = ["taskset", "-c", system.CLIENT_CORE, "openssl", "s_time", "-connect",
            f"127.0.0.1:{port}", "-new", "-time", str(seconds)]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(clients)]
    total = 0
    for p in procs:
        out, err = p.communicate(timeout=seconds + 30)
        m = re.search(r"(\d+) connections in [\d.]+ real seconds", out)
        if not m:
            raise RuntimeError(f"openssl s_time on :{port}: no result ({err.strip()[-500:]})")
        total += int(m.group(1))
    return total


def handshakes(targets, rounds=None, seconds=None, cap=None):
    """Capped rounds of new handshakes, peers interleaved: {label: [{hps, cpu_us}]}."""
    rounds = rounds or measure.ROUNDS
    seconds = seconds or measure.SECONDS
    cap = measure.CAP_PERCENT if cap is None else cap
    use_cap = cap and system.CpuCap.available()
    if use_cap:
        system.CpuCap.set(cap)
        for t in targets:
            system.CpuCap.add(t.peer.pids())
    try:
        for t in targets:  # warm-up
            s_time(t.tls_port, 1, 1)
        out = {t.label: [] for t in targets}
        for _ in range(rounds):
            for t in targets:
                pids = t.peer.pids()
                cpu0 = system.cpu_seconds(pids)
                n = s_time(t.tls_port, seconds, HANDSHAKE_CLIENTS)
                cpu1 = system.cpu_seconds(pids)
                out[t.label].append({"hps": n / seconds, "cpu_us": (cpu1 - cpu0) / max(n, 1) * 1e6,
                                     "load": system.loadavg()})
        return out
    finally:
        if use_cap:
            system.CpuCap.set(None)


def s11_tls(run):
    s = Scenario("S11", "TLS: new handshakes and keep-alive requests",
                 "One TLS listener per peer serving the same self-signed ECDSA P-256 certificate "
                 f"(`{SNI}`, made with openssl for the run) in front of the S1 route, TLS 1.3 as "
                 "negotiated by default. New handshakes: `openssl s_time -new` "
                 f"({HANDSHAKE_CLIENTS} at once; full handshakes only, no session resumption, no "
                 "request). Keep-alive: wrk over `https://` on the S1 route. Portico takes the "
                 "certificate from `/apisix/admin/ssls` with `proxy.ssl.fallback_sni`, since neither "
                 "client sends a name.")
    cert, key = make_certificate(os.path.join(peers.WORK, "s11-tls"))
    with open(cert) as f:
        cert_pem = f.read()
    with open(key) as f:
        key_pem = f.read()
    ng_tls = (nginx_upstream([ORIGIN]) +
              f"server {{ listen 127.0.0.1:{NGINX_TLS} ssl; ssl_certificate {cert}; "
              f"ssl_certificate_key {key}; location / {{ proxy_pass http://backend; }} }}\n")
    ps = started(
        Nginx("nginx", NGINX_TLS, ng_tls),
        Portico("portico", 18080, portico_resources(),
                proxy_extra=f'  ssl:\n    listen: ["127.0.0.1:{PORTICO_TLS}"]\n    fallback_sni: "{SNI}"\n'),
    )
    ng, pt = ps
    try:
        # Through its own endpoint: `PUT /configs` (the standalone body) takes no ssls.
        pt.admin("PUT", "/apisix/admin/ssls/bench", {"cert": cert_pem, "key": key_pem, "snis": [SNI]})
        system.wait_for(lambda: peers.port_open(PORTICO_TLS), 30, f"portico TLS on :{PORTICO_TLS}")
        targets = [TlsTarget("nginx", ng, NGINX_TLS), TlsTarget("portico", pt, PORTICO_TLS)]
        hs = handshakes(targets)
        s.table(["peer", "new handshakes/s (capped)", "CPU µs per handshake"],
                [[label, measure.spread([r["hps"] for r in rounds]),
                  measure.spread([r["cpu_us"] for r in rounds], "{:.0f}")] for label, rounds in hs.items()],
                f"{measure.CAP_PERCENT}% CPU quota; median (min-max) over rounds")
        s.load.extend(r["load"] for rounds in hs.values() for r in rounds)
        hr = compare.rps_ratio({k: [{"rps": r["hps"]} for r in v] for k, v in hs.items()}, "portico", "nginx")
        s.check("S11 new TLS handshakes/s vs nginx", compare.fmt_ratio(hr), None)
        hc = measure.median([r["cpu_us"] for r in hs["portico"]])
        hn = measure.median([r["cpu_us"] for r in hs["nginx"]])
        s.check("S11 CPU per new handshake vs nginx", f"{hc:.0f} µs vs {hn:.0f} µs", None)
        tp = measure.throughput(targets)
        compare.peer_table(s, tp)
        compare.ratio_table(s, tp, None, "portico", ["nginx"])
        r = compare.rps_ratio(tp, "portico", "nginx")
        s.check("S11 keep-alive req/s over TLS vs nginx", compare.fmt_ratio(r), None)
        rows = [idle_row(t.peer, t.tls_port, IDLE_TLS_CONNS, SNI) for t in targets]
        s.table(["peer", "TLS connections held", "RSS MB before", "RSS MB holding", "KB per connection",
                 "CPU in 5 s idle"], rows, "idle keep-alive TLS connections (one request each, then idle)")
        s.check(f"S11 RSS per idle TLS keep-alive connection ({rows[1][1]:,} held)",
                f"{rows[1][4]} KB (nginx {rows[0][4]} KB)", None)
    finally:
        stop_all(ps)
    return s


SCENARIOS = {"S11": s11_tls}
