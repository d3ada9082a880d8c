"""S11: TLS termination. Portico (certificate pushed as an `ssl` resource) against nginx
(`ssl_certificate`), the same ECDSA P-256 certificate for `localhost`: new full handshakes
per second (one request per connection, `Connection: close`; wrk does not resume
sessions), keep-alive requests per second over TLS, and the memory of idle TLS
keep-alive connections."""

import os

from . import compare, measure, peers, system
from .peers import Nginx, Portico
from .report import Scenario
from .scenarios_ops import IDLE_CONNS, IDLE_HEADER, idle_footprint
from .scenarios_proxy import ORIGIN, nginx_upstream, portico_resources, started, stop_all

TLS_IDLE_CONNS = int(os.environ.get("BENCH_TLS_IDLE_CONNS", str(min(IDLE_CONNS, 5000))))


def certificate():
    """A self-signed ECDSA P-256 certificate for localhost in the work dir: (cert, key) paths."""
    d = os.path.join(peers.WORK, "tls")
    os.makedirs(d, exist_ok=True)
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    system.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-nodes", "-keyout", key, "-out", cert, "-days", "30", "-subj", "/CN=localhost",
                "-addext", "subjectAltName=DNS:localhost"])
    return cert, key


class TlsNginx(Nginx):
    def url(self, path="/"):
        return f"https://localhost:{self.port}{path}"


class TlsPortico(Portico):
    """Portico with one TLS listener on `tls_port`; readiness on its plain port."""

    conf_template = "portico-tls.yaml"

    def __init__(self, name, port, tls_port, cert, key):
        super().__init__(name, port, portico_resources())
        self.tls_port = tls_port
        self.cert, self.key = cert, key

    def template_values(self):
        return {"TLS_LISTEN": f"127.0.0.1:{self.tls_port}"}

    def start(self):
        super().start()
        with open(self.cert) as c, open(self.key) as k:
            self.admin("PUT", "/apisix/admin/ssls/bench", {"cert": c.read(), "key": k.read(), "snis": ["localhost"]})
        system.wait_for(lambda: peers.port_open(self.tls_port), 30, f"{self.name} TLS :{self.tls_port}")
        return self

    def url(self, path="/"):
        return f"https://localhost:{self.tls_port}{path}"


def s11_tls(run):
    s = Scenario("S11", "TLS termination",
                 "The S1 route behind a TLS listener, the same ECDSA P-256 certificate on both peers "
                 "(TLS 1.3, HTTP/1.1): new handshakes per second (each request on a new connection), "
                 "keep-alive requests per second, and idle TLS keep-alive connections. Portico "
                 "gets its certificate as an `ssl` resource through the admin API.")
    cert, key = certificate()
    tls_server = (f"server {{ listen 127.0.0.1:18443 ssl; ssl_certificate {cert}; "
                  f"ssl_certificate_key {key}; location / {{ proxy_pass http://backend; }} }}\n")
    ps = started(
        TlsNginx("nginx", 18443, nginx_upstream([ORIGIN]) + tls_server),
        TlsPortico("portico", 18080, 18444, cert, key),
    )
    try:
        ka = [measure.Target(p.name, p) for p in ps]
        fresh = [measure.Target(p.name, p, headers={"Connection": "close"}) for p in ps]
        tp_fresh = measure.throughput(fresh)
        compare.peer_table(s, tp_fresh, None, "New handshakes: one request per TLS connection; "
                           f"{measure.CAP_PERCENT}% CPU quota; median (min-max) over rounds")
        compare.ratio_table(s, tp_fresh, None, "portico", ["nginx"], "handshakes, ratios within each round")
        tp_ka = measure.throughput(ka)
        compare.peer_table(s, tp_ka, None, "Keep-alive requests over TLS; "
                           f"{measure.CAP_PERCENT}% CPU quota; median (min-max) over rounds")
        compare.ratio_table(s, tp_ka, None, "portico", ["nginx"], "keep-alive, ratios within each round")
        rows = []
        for p in ps:
            row, held, per = idle_footprint(p, p.tls_port if isinstance(p, TlsPortico) else p.port,
                                            TLS_IDLE_CONNS, tls=True)
            rows.append(row)
            if p.name == "portico":
                s.check(f"S11 KB per idle TLS connection ({held:,} held; reported)", f"{per:.2f} KB", None)
        s.table(IDLE_HEADER, rows, f"{TLS_IDLE_CONNS:,} idle TLS keep-alive connections")
        r = compare.rps_ratio(tp_fresh, "portico", "nginx")
        s.check("S11 new TLS handshakes/s vs nginx (reported)", compare.fmt_ratio(r), None)
        r = compare.rps_ratio(tp_ka, "portico", "nginx")
        s.check("S11 keep-alive TLS req/s vs nginx (reported)", compare.fmt_ratio(r), None)
    finally:
        stop_all(ps)
    return s


SCENARIOS = {"S11": s11_tls}
