"""S13 (issue 19): the response cache's HIT path. One route with `proxy-cache` on Portico
(the memory zone, and the default disk zone) against nginx's `proxy_cache` (a disk cache
with its key zone in shared memory: its hits are served from the page cache), both
serving the same origin object, stored on the first request; every measured request is
a hit. Portico and nginx without caching run in the same rounds, so the table also shows
what a hit saves over going to the origin. Figures: requests per second (capped CPU) and
CPU per request, Portico ÷ nginx in one run."""

from . import compare, measure, peers
from .peers import Nginx, Portico
from .report import Scenario
from .scenarios_proxy import ORIGIN, nginx_server, nginx_upstream, portico_resources, started, stop_all

NGINX_CACHE = "proxy_cache_path {{PREFIX}}/cache levels=1:2 keys_zone=s13:10m max_size=100m inactive=1h;\n"
NGINX_LOCATION = ("proxy_cache s13; proxy_cache_key $host$request_uri; proxy_cache_valid 200 1h; "
                  "add_header X-Cache-Status $upstream_cache_status;")


def portico_cached(strategy, zone):
    return portico_resources({"plugins": {"proxy-cache": {
        "cache_strategy": strategy, "cache_zone": zone, "cache_ttl": 3600}}})


def expect_hit(peer, header):
    """Stores the object (first request) and checks the next one is a hit."""
    peers.http_get(peer.url("/"))
    headers = peers.http_get(peer.url("/"))[1]
    # Header names as sent: nginx's in its case, Portico's in lower case (HTTP/1.1 names
    # are case-insensitive).
    status = {k.lower(): v for k, v in headers.items()}.get(header.lower())
    if status != "HIT":
        raise RuntimeError(f"{peer.name}: second GET / was not a cache hit ({header}: {status})")


def s13_cache_hit(run):
    s = Scenario("S13", "proxy-cache HIT path",
                 "One route `/*` with `proxy-cache` (TTL 1 h) on Portico, in the memory zone "
                 "(`memory_cache`) and in the disk zone (`disk_cache_one`); nginx with "
                 "`proxy_cache` (`levels=1:2`, key `$host$request_uri`, `proxy_cache_valid 200 1h`). "
                 "The object is stored before the load, so every measured request is a hit. "
                 "Each peer without a cache runs in the same rounds.")
    ps = started(
        Nginx("nginx", 18081, nginx_upstream([ORIGIN]) + nginx_server(18081)),
        Nginx("nginx+proxy_cache", 18083, nginx_upstream([ORIGIN]) + nginx_server(
            18083, NGINX_LOCATION, NGINX_CACHE)),
        Portico("portico", 18080, portico_resources()),
        Portico("portico+cache", 18090, portico_cached("memory", "memory_cache")),
        Portico("portico+disk-cache", 18092, portico_cached("disk", "disk_cache_one")),
    )
    try:
        expect_hit(ps[1], "X-Cache-Status")
        expect_hit(ps[3], "Apisix-Cache-Status")
        expect_hit(ps[4], "Apisix-Cache-Status")
        targets = [measure.Target(p.name, p) for p in ps]
        tp = measure.throughput(targets)
        compare.peer_table(s, tp, None)
        compare.ratio_table(s, tp, None, "portico+cache", ["nginx+proxy_cache"])
        compare.ratio_table(s, tp, None, "portico+disk-cache", ["nginx+proxy_cache"])
        r = compare.rps_ratio(tp, "portico+cache", "nginx+proxy_cache")
        s.check("S13 HIT req/s (memory zone) vs nginx proxy_cache (ratio in one run)",
                compare.fmt_ratio(r), None)
        r = compare.rps_ratio(tp, "portico+disk-cache", "nginx+proxy_cache")
        s.check("S13 HIT req/s (disk zone) vs nginx proxy_cache (ratio in one run)",
                compare.fmt_ratio(r), None)
        pc = compare.cpu_of(tp, "portico+cache")
        nc = compare.cpu_of(tp, "nginx+proxy_cache")
        s.check("S13 CPU per HIT, Portico (memory zone) / nginx (reported)",
                f"{pc:.2f} / {nc:.2f} µs", None)
    finally:
        stop_all(ps)
    return s


SCENARIOS = {"S13": s13_cache_hit}
