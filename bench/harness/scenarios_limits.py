"""S10 and S12: what limits and the everyday plugins cost.

S10: rate limiting's added cost. Portico's native `limit-count` (local policy) on the
S1 route against nginx's `limit_req` and ngx_lua counting in a shared dict (what
`resty.limit.count` does: one `incr` with an initial TTL; lua-resty-limit-traffic itself is
not packaged by Debian, so the same operation is written out in
`bench/peers/lua/s10-limit-count.lua`). Thresholds are far above the load, so every
request passes and is counted: the figure is the cost of counting, not of refusing.

S12 (issue 14): the native plugins a typical API route carries, `key-auth` (100
consumers) + `limit-count` (local, 10^9 per 60 s, nothing refused) + `proxy-rewrite` (URI
and two request headers), against nginx + ngx_lua doing the same in one access handler
(`bench/peers/lua/s12-auth-limit-rewrite.lua`: a Lua table lookup of the key, a
shared-dict `incr`, `ngx.req.set_header`/`set_uri`). Requests carry one of the 100 keys
at random."""

from . import compare, measure
from .peers import Nginx, Portico
from .report import Scenario
from .peers import LUA_DIR
from .scenarios_proxy import (ORIGIN, RATE, expect_status, nginx_server, nginx_upstream,
                              portico_resources, read_lua, started, stop_all)


def s10_limit(run):
    code = read_lua("s10-limit-count.lua")
    s = Scenario("S10", "limit-count on the S1 route",
                 "S1 plus a per-client-address request counter: `limit-count` "
                 "(count 10^9 per 60 s) on Portico, `limit_req` (rate 10^8 r/s, nodelay) on "
                 "nginx, a shared-dict `incr` in `access_by_lua_block` on nginx + ngx_lua. "
                 "Each peer's plain S1 configuration runs in the same rounds, so the table "
                 "gives each one's added CPU per request.")
    ps = started(
        Nginx("nginx", 18081, nginx_upstream([ORIGIN]) + nginx_server(18081)),
        Nginx("nginx+limit_req", 18083, nginx_upstream([ORIGIN]) + nginx_server(
            18083, "limit_req zone=perip burst=1000 nodelay;",
            "limit_req_zone $binary_remote_addr zone=perip:10m rate=100000000r/s;\n")),
        Nginx("nginx+lua", 18084, nginx_upstream([ORIGIN]) + nginx_server(
            18084, f"access_by_lua_block {{\n{code}\n}}", "lua_shared_dict limits 10m;\n")),
        Portico("portico", 18080, portico_resources()),
        Portico("portico+limit-count", 18090, portico_resources(
            {"plugins": {"limit-count": {"count": 1000000000, "time_window": 60}}})),
    )
    try:
        targets = [measure.Target(p.name, p) for p in ps]
        tp = measure.throughput(targets)
        compare.peer_table(s, tp, None)
        compare.ratio_table(s, tp, None, "portico+limit-count", ["nginx+limit_req", "nginx+lua"])

        ep = compare.cpu_extra(tp, "portico+limit-count", "portico")
        en = compare.cpu_extra(tp, "nginx+limit_req", "nginx")
        el = compare.cpu_extra(tp, "nginx+lua", "nginx")
        s.table(["added CPU of counting", "µs/req (median of rounds)"],
                [["Portico limit-count", f"{ep:.2f}"],
                 ["nginx limit_req", f"{en:.2f}"],
                 ["nginx + ngx_lua shared-dict incr", f"{el:.2f}"]])
        s.check("S10 limit-count's added CPU ≤ ngx_lua's", f"{ep:.2f} µs vs {el:.2f} µs", ep <= el)
        r = compare.rps_ratio(tp, "portico+limit-count", "nginx+limit_req")
        s.check("S10 capped req/s vs nginx+limit_req (reported)", compare.fmt_ratio(r), True)
    finally:
        stop_all(ps)
    return s


S12_KEYS = 100


def s12_route():
    """The S12 route's plugins on Portico (the consumers are in `s12_resources`)."""
    return {"plugins": {
        "key-auth": {},
        "limit-count": {"count": 1000000000, "time_window": 60, "policy": "local"},
        "proxy-rewrite": {"uri": "/rewritten",
                          "headers": {"set": {"X-Gateway": "bench",
                                              "X-Consumer": "$consumer_name"}}},
    }}


def s12_resources():
    res = portico_resources(s12_route())
    res["consumers"] = [{"username": f"consumer{i}", "plugins": {"key-auth": {"key": f"key-{i}"}}}
                        for i in range(1, S12_KEYS + 1)]
    return res


def s12_auth_limit_rewrite(run):
    s = Scenario("S12", "key-auth + limit-count + proxy-rewrite",
                 "One route with the native `key-auth` (100 consumers), `limit-count` (local, "
                 "10^9 per 60 s: every request passes and is counted) and `proxy-rewrite` (URI "
                 "and two request headers, one of them `$consumer_name`); nginx + ngx_lua does "
                 "the same in one `access_by_lua_block` (`s12-auth-limit-rewrite.lua`: a Lua "
                 "table lookup of the key, a shared-dict `incr`, `ngx.req.set_header` and "
                 "`set_uri`). Requests carry one of the 100 keys at random. Each peer's plain "
                 "S1 configuration runs in the same rounds.")
    init = (f'lua_package_path "{LUA_DIR}/?.lua;;";\n'
            "lua_shared_dict limits 10m;\n"
            'init_by_lua_block { require("s12-auth-limit-rewrite") }\n')
    ps = started(
        Nginx("nginx", 18081, nginx_upstream([ORIGIN]) + nginx_server(18081)),
        Nginx("nginx+lua", 18084, nginx_upstream([ORIGIN]) + nginx_server(
            18084, 'access_by_lua_block { require("s12-auth-limit-rewrite").access() }', init)),
        Portico("portico", 18080, portico_resources()),
        Portico("portico+plugins", 18090, s12_resources()),
    )
    try:
        for p in ps[1::2]:
            expect_status(p, "/", 401)
            expect_status(p, "/", 401, {"apikey": "no-such-key"})
            expect_status(p, "/", 200, {"apikey": "key-7"})
        targets = [measure.Target(p.name, p, script="s3-key.lua") for p in ps]
        tp = measure.throughput(targets)
        lat = measure.latency([measure.Target(p.name, p, headers={"apikey": "key-7"})
                               for p in ps[1::2]], RATE)
        compare.peer_table(s, tp, lat)
        compare.ratio_table(s, tp, lat, "portico+plugins", ["nginx+lua"])

        ep = compare.cpu_extra(tp, "portico+plugins", "portico")
        el = compare.cpu_extra(tp, "nginx+lua", "nginx")
        s.table(["added CPU of the three plugins", "µs/req (median of rounds)"],
                [["Portico key-auth + limit-count + proxy-rewrite", f"{ep:.2f}"],
                 ["nginx + ngx_lua doing the same", f"{el:.2f}"]])
        r = compare.rps_ratio(tp, "portico+plugins", "nginx+lua")
        s.check("S12 capped req/s vs nginx+ngx_lua (ratio in one run)", compare.fmt_ratio(r), None)
        s.check("S12 added CPU ≤ ngx_lua's", f"{ep:.2f} µs vs {el:.2f} µs", ep <= el)
    finally:
        stop_all(ps)
    return s


SCENARIOS = {"S10": s10_limit, "S12": s12_auth_limit_rewrite}
