//! `proxy-cache` (issue 19) on Pingora's cache: statuses, TTL, `cache_control`, bypass
//! and `no_cache`, method and status filters, `Vary`, PURGE, the cache lock, a bounded
//! memory zone, disk entries across a restart and a corrupt disk file, admin purge.

use std::time::Duration;

use crate::lua_common::upstream;
use crate::support::*;

const STATUS: &str = "apisix-cache-status";

fn route(gw: &Gateway, b: &Backend, cache: Value) {
    gw.put(
        "/routes/c",
        json!({"uri": "/c/*", "plugins": {"proxy-cache": cache}, "upstream": upstream(b)}),
    );
    gw.sync();
}

fn memory() -> Value {
    json!({"cache_strategy": "memory", "cache_zone": "memory_cache"})
}

fn with(mut base: Value, extra: Value) -> Value {
    for (k, v) in extra.as_object().unwrap() {
        base[k] = v.clone();
    }
    base
}

fn get(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> Response {
    let resp = gw.proxy("GET", path, headers);
    assert!(resp.status < 500, "GET {path} -> {resp:?}");
    resp
}

fn status(resp: &Response) -> &str {
    resp.header(STATUS).unwrap_or("<none>")
}

/// The value of a metric series (0 when absent).
fn metric(gw: &Gateway, name: &str, zone: &str) -> f64 {
    prom::parse(&gw.metrics_text())
        .unwrap()
        .iter()
        .find(|s| s.name == name && s.has(&[("zone", zone)]))
        .map_or(0.0, |s| s.value)
}

fn miss_then_hit(gw: &Gateway, b: &Backend, path: &str) {
    let first = get(gw, path, &[]);
    assert_eq!(status(&first), "MISS", "{first:?}");
    let second = get(gw, path, &[]);
    assert_eq!(status(&second), "HIT", "{second:?}");
    assert_eq!(second.status, first.status);
    assert_eq!(second.body, first.body);
    for h in ["content-type", "x-backend", "content-length"] {
        assert_eq!(second.header(h), first.header(h), "{h}");
    }
    assert_eq!(b.path_hits(path), 1);
}

#[test]
fn memory_zone_misses_then_hits_with_the_same_response() {
    let gw = Gateway::start_default();
    let b = Backend::start("b");
    route(&gw, &b, memory());
    miss_then_hit(&gw, &b, "/c/one");
    // HEAD is looked up too, and served from the stored GET.
    let head = gw.proxy("HEAD", "/c/one", &[]);
    assert_eq!(status(&head), "HIT");
    assert_eq!(b.path_hits("/c/one"), 1);
    // A range request is served from the cached full response.
    let range = get(&gw, "/c/one", &[("Range", "bytes=0-9")]);
    assert_eq!(range.status, 206, "{range:?}");
    assert_eq!(range.body.len(), 10);
    assert_eq!(b.path_hits("/c/one"), 1);
    assert!(metric(&gw, "portico_cache_hits_total", "memory_cache") >= 2.0);
    assert!(metric(&gw, "portico_cache_misses_total", "memory_cache") >= 1.0);
    assert!(metric(&gw, "portico_cache_bytes", "memory_cache") > 0.0);
}

#[test]
fn disk_zone_misses_then_hits_and_survives_a_restart() {
    let mut gw = Gateway::start_default();
    let b = Backend::start("b");
    route(&gw, &b, json!({}));
    miss_then_hit(&gw, &b, "/c/disk");
    let files = cache_files(&gw);
    assert_eq!(files.len(), 1, "{files:?}");

    gw.restart();
    let again = get(&gw, "/c/disk", &[]);
    assert_eq!(status(&again), "HIT", "{again:?}");
    assert_eq!(b.path_hits("/c/disk"), 1);
    assert!(metric(&gw, "portico_cache_bytes", "disk_cache_one") > 0.0);
}

/// Every file of the default disk zone.
fn cache_files(gw: &Gateway) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![gw.data_dir.join("cache/disk_cache_one")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().unwrap().is_dir() {
                dirs.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

#[test]
fn a_corrupt_or_truncated_disk_file_is_a_miss() {
    let gw = Gateway::start_default();
    let b = Backend::start("b");
    route(&gw, &b, json!({}));
    let first = get(&gw, "/c/x", &[]);
    assert_eq!(status(&first), "MISS");
    let file = cache_files(&gw).pop().expect("a cache file");
    let mut data = std::fs::read(&file).unwrap();
    let n = data.len();
    data[n / 2] ^= 0xff;
    std::fs::write(&file, &data).unwrap();
    let resp = get(&gw, "/c/x", &[]);
    assert_eq!(status(&resp), "MISS", "{resp:?}");
    assert_eq!(resp.body, first.body);
    assert_eq!(status(&get(&gw, "/c/x", &[])), "HIT");

    let file = cache_files(&gw).pop().expect("a cache file");
    std::fs::write(&file, &data[..n / 3]).unwrap();
    let resp = get(&gw, "/c/x", &[]);
    assert_eq!(status(&resp), "MISS", "{resp:?}");
    assert_eq!(resp.body, first.body);
    assert_eq!(b.path_hits("/c/x"), 3);
}

#[test]
fn entries_expire_after_cache_ttl() {
    let gw = Gateway::start_default();
    let b = Backend::start("b");
    route(&gw, &b, with(memory(), json!({"cache_ttl": 1})));
    assert_eq!(status(&get(&gw, "/c/t", &[])), "MISS");
    assert_eq!(status(&get(&gw, "/c/t", &[])), "HIT");
    let expired = wait_until(WAIT, || status(&get(&gw, "/c/t", &[])) == "EXPIRED");
    assert!(expired, "never EXPIRED");
    assert_eq!(status(&get(&gw, "/c/t", &[])), "HIT");
    assert_eq!(b.path_hits("/c/t"), 2);
}

#[test]
fn cache_control_max_age_no_store_and_private() {
    let gw = Gateway::start_default();
    let b = Backend::start("b");
    route(
        &gw,
        &b,
        with(memory(), json!({"cache_control": true, "cache_ttl": 300})),
    );
    let max_age = [("x-reply-cache-control", "max-age=1")];
    assert_eq!(status(&get(&gw, "/c/m", &max_age)), "MISS");
    assert_eq!(status(&get(&gw, "/c/m", &max_age)), "HIT");
    assert!(wait_until(WAIT, || status(&get(&gw, "/c/m", &max_age)) == "EXPIRED"));

    for cc in ["no-store", "private", "no-cache", "max-age=0"] {
        let path = format!("/c/{}", cc.replace('=', ""));
        let h = [("x-reply-cache-control", cc)];
        assert_eq!(status(&get(&gw, &path, &h)), "MISS", "{cc}");
        assert_eq!(status(&get(&gw, &path, &h)), "MISS", "{cc}");
        assert_eq!(b.path_hits(&path), 2, "{cc}");
    }
    // Set-Cookie is never stored either.
    let h = [("x-reply-set-cookie", "sid=1")];
    get(&gw, "/c/cookie", &h);
    assert_eq!(status(&get(&gw, "/c/cookie", &h)), "MISS");

    // The client's no-cache skips the cache.
    let resp = get(&gw, "/c/m", &[("Cache-Control", "no-cache")]);
    assert_eq!(status(&resp), "BYPASS");

    // Without cache_control, the upstream's Cache-Control does not change the TTL.
    route(&gw, &b, with(memory(), json!({"cache_control": false})));
    let h = [("x-reply-cache-control", "no-cache")];
    assert_eq!(status(&get(&gw, "/c/plain", &h)), "MISS");
    assert_eq!(status(&get(&gw, "/c/plain", &h)), "HIT");
}

#[test]
fn cache_bypass_and_no_cache() {
    let gw = Gateway::start_default();
    let b = Backend::start("b");
    route(
        &gw,
        &b,
        with(
            memory(),
            json!({"cache_bypass": ["$http_x_bypass"], "no_cache": ["$http_x_nocache"]}),
        ),
    );
    assert_eq!(status(&get(&gw, "/c/b", &[("x-bypass", "1")])), "BYPASS");
    assert_eq!(status(&get(&gw, "/c/b", &[("x-bypass", "0")])), "MISS");
    assert_eq!(status(&get(&gw, "/c/b", &[("x-bypass", "1")])), "BYPASS");
    assert_eq!(status(&get(&gw, "/c/b", &[])), "HIT");

    assert_eq!(status(&get(&gw, "/c/n", &[("x-nocache", "yes")])), "MISS");
    assert_eq!(status(&get(&gw, "/c/n", &[("x-nocache", "yes")])), "MISS");
    assert_eq!(status(&get(&gw, "/c/n", &[])), "MISS");
    assert_eq!(status(&get(&gw, "/c/n", &[])), "HIT");
    assert_eq!(b.path_hits("/c/n"), 3);
}

#[test]
fn method_and_status_filters() {
    let gw = Gateway::start_default();
    let b = Backend::start("b");
    route(&gw, &b, memory());
    let post = gw.proxy_req(Request::new("POST", "/c/p").body("x"));
    assert_eq!(status(&post), "BYPASS");
    assert_eq!(status(&get(&gw, "/c/p", &[])), "MISS");

    b.set_status(500);
    assert_eq!(gw.proxy("GET", "/c/err", &[]).header(STATUS), Some("MISS"));
    assert_eq!(gw.proxy("GET", "/c/err", &[]).header(STATUS), Some("MISS"));
    assert_eq!(b.path_hits("/c/err"), 2);
    b.set_status(404);
    assert_eq!(status(&get(&gw, "/c/nf", &[])), "MISS");
    let hit = get(&gw, "/c/nf", &[]);
    assert_eq!((hit.status, status(&hit)), (404, "HIT"));

    route(
        &gw,
        &b,
        with(
            memory(),
            json!({"cache_http_status": [200], "cache_method": ["POST"]}),
        ),
    );
    assert_eq!(status(&get(&gw, "/c/nf2", &[])), "BYPASS");
    let post = gw.proxy_req(Request::new("POST", "/c/nf2").body("x"));
    assert_eq!((post.status, status(&post)), (404, "MISS"));
    let post = gw.proxy_req(Request::new("POST", "/c/nf2").body("x"));
    assert_eq!(status(&post), "MISS");
}

#[test]
fn vary_keeps_one_variant_per_header_value() {
    let gw = Gateway::start_default();
    let b = Backend::start("b");
    route(&gw, &b, memory());
    let lang = |l: &'static str| [("x-reply-vary", "X-Lang"), ("x-lang", l)];
    let en = get(&gw, "/c/v", &lang("en"));
    assert_eq!(status(&en), "MISS");
    let fr = get(&gw, "/c/v", &lang("fr"));
    assert_eq!(status(&fr), "MISS", "{fr:?}");
    let en2 = get(&gw, "/c/v", &lang("en"));
    let fr2 = get(&gw, "/c/v", &lang("fr"));
    assert_eq!((status(&en2), status(&fr2)), ("HIT", "HIT"));
    assert_eq!(en2.json()["headers"]["x-lang"], "en");
    assert_eq!(fr2.json()["headers"]["x-lang"], "fr");
    assert_eq!(b.path_hits("/c/v"), 2);
}

#[test]
fn purge_removes_an_entry() {
    let gw = Gateway::start_default();
    let b = Backend::start("b");
    route(&gw, &b, memory());
    assert_eq!(gw.proxy("PURGE", "/c/p", &[]).status, 404);
    get(&gw, "/c/p", &[]);
    assert_eq!(status(&get(&gw, "/c/p", &[])), "HIT");
    assert_eq!(gw.proxy("PURGE", "/c/p", &[]).status, 200);
    assert_eq!(gw.proxy("PURGE", "/c/p", &[]).status, 404);
    assert_eq!(status(&get(&gw, "/c/p", &[])), "MISS");
    assert_eq!(b.path_hits("/c/p"), 2);
}

#[test]
fn concurrent_misses_send_one_request_upstream() {
    let gw = Gateway::start_default();
    let b = Backend::start_with("b", 200, Duration::from_millis(500));
    route(&gw, &b, memory());
    let addr = gw.proxy_addr();
    let threads: Vec<_> = (0..100)
        .map(|_| {
            std::thread::spawn(move || http::send(addr, &Request::get("/c/lock")).expect("proxy"))
        })
        .collect();
    let responses: Vec<Response> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(responses.iter().all(|r| r.status == 200));
    assert!(responses.iter().all(|r| r.body == responses[0].body));
    assert_eq!(b.path_hits("/c/lock"), 1);
}

#[test]
fn a_memory_zone_stays_under_its_size() {
    let opts = GatewayOpts {
        extra_yaml: "cache:\n  zones:\n    - {name: small, memory_size: 64k}\n".to_string(),
        ..Default::default()
    };
    let gw = Gateway::start(opts);
    let b = Backend::start("b");
    route(
        &gw,
        &b,
        json!({"cache_strategy": "memory", "cache_zone": "small"}),
    );
    let mut conn = gw.proxy_conn();
    for i in 0..10_000 {
        let resp = conn.send(&Request::get(&format!("/c/{i}"))).expect("proxy");
        assert_eq!(resp.header(STATUS), Some("MISS"));
    }
    let limit = 64.0 * 1024.0;
    assert!(
        wait_until(WAIT, || metric(&gw, "portico_cache_bytes", "small")
            <= limit),
        "zone above its size: {}",
        metric(&gw, "portico_cache_bytes", "small")
    );
    assert!(metric(&gw, "portico_cache_bytes", "small") > limit / 2.0);
    assert!(metric(&gw, "portico_cache_evictions_total", "small") > 9000.0);
    // The most recent keys are still there.
    assert_eq!(status(&get(&gw, "/c/9999", &[])), "HIT");
}

#[test]
fn an_unknown_zone_is_refused_naming_the_field() {
    let gw = Gateway::start_default();
    let b = Backend::start("b");
    for (conf, msg) in [
        (json!({"cache_zone": "nope"}), "unknown cache zone `nope`"),
        (json!({"cache_zone": "memory_cache"}), "has no disk_path"),
    ] {
        let (code, _, body) = gw.admin(
            "PUT",
            "/routes/c",
            Some(json!({"uri": "/c", "plugins": {"proxy-cache": conf}, "upstream": upstream(&b)})),
        );
        assert_eq!(code, 400, "{body}");
        let err = body["error_msg"].as_str().unwrap();
        assert!(err.contains("plugins.proxy-cache.cache_zone"), "{err}");
        assert!(err.contains(msg), "{err}");
    }
}

#[test]
fn the_admin_api_purges_a_zone_or_a_key_prefix() {
    let gw = Gateway::start_default();
    let b = Backend::start("b");
    route(&gw, &b, json!({}));
    for p in ["/c/img/1", "/c/img/2", "/c/css/1"] {
        assert_eq!(status(&get(&gw, p, &[])), "MISS");
    }
    // The key is `$host$request_uri`, the host without its port.
    let (code, _, body) = gw.admin(
        "DELETE",
        "/proxy_cache/disk_cache_one?prefix=127.0.0.1/c/img/",
        None,
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["purged"], 2, "{body}");
    assert_eq!(status(&get(&gw, "/c/img/1", &[])), "MISS");
    assert_eq!(status(&get(&gw, "/c/css/1", &[])), "HIT");

    let (code, _, body) = gw.admin("DELETE", "/proxy_cache/disk_cache_one", None);
    assert_eq!((code, body["purged"].as_u64()), (200, Some(2)), "{body}");
    assert_eq!(status(&get(&gw, "/c/css/1", &[])), "MISS");

    let (code, _, body) = gw.admin("DELETE", "/proxy_cache/nope", None);
    assert_eq!(code, 404, "{body}");
}

#[test]
fn a_body_larger_than_the_zone_is_proxied_not_stored() {
    let opts = GatewayOpts {
        extra_yaml: "cache:\n  zones:\n    - {name: tiny, memory_size: 1k}\n".to_string(),
        ..Default::default()
    };
    let gw = Gateway::start(opts);
    let b = Backend::start("b");
    route(
        &gw,
        &b,
        json!({"cache_strategy": "memory", "cache_zone": "tiny"}),
    );
    // The echoed request makes the body larger than the zone.
    let pad = "x".repeat(2000);
    for _ in 0..2 {
        let resp = get(&gw, "/c/big", &[("x-pad", &pad)]);
        assert_eq!(resp.status, 200);
        assert_eq!(status(&resp), "MISS");
        assert_eq!(resp.json()["headers"]["x-pad"], pad.as_str());
    }
    assert_eq!(b.path_hits("/c/big"), 2);
    // A small one fits.
    assert_eq!(status(&get(&gw, "/c/s", &[])), "MISS");
    assert_eq!(status(&get(&gw, "/c/s", &[])), "HIT");
}

#[test]
fn a_stale_entry_is_served_when_the_upstream_fails() {
    let gw = Gateway::start_default();
    let mut b = Backend::start("b");
    route(&gw, &b, with(memory(), json!({"cache_control": true})));
    let h = [("x-reply-cache-control", "max-age=1, stale-if-error=600")];
    let first = get(&gw, "/c/s", &h);
    assert_eq!(status(&first), "MISS");
    b.stop();
    // HIT while fresh (1 s), then STALE: the upstream is down and stale-if-error allows it.
    let mut last = None;
    let stale = wait_until(WAIT, || {
        let resp = gw.proxy("GET", "/c/s", &h);
        let done = resp.status == 200 && status(&resp) == "STALE";
        assert!(matches!(status(&resp), "HIT" | "STALE"), "{resp:?}");
        last = Some(resp);
        done
    });
    assert!(stale, "{last:?}");
    assert_eq!(last.unwrap().body, first.body);
}

#[test]
fn hide_cache_headers_and_a_renamed_status_header() {
    let opts = GatewayOpts {
        extra_yaml: "cache:\n  status_header: X-Cache\n".to_string(),
        ..Default::default()
    };
    let gw = Gateway::start(opts);
    let b = Backend::start("b");
    route(&gw, &b, with(memory(), json!({"hide_cache_headers": true})));
    let h = [
        ("x-reply-cache-control", "max-age=60"),
        ("x-reply-expires", "0"),
    ];
    for expected in ["MISS", "HIT"] {
        let resp = get(&gw, "/c/h", &h);
        assert_eq!(resp.header("x-cache"), Some(expected), "{resp:?}");
        assert_eq!(resp.header(STATUS), None);
        assert_eq!(resp.header("cache-control"), None, "{resp:?}");
        assert_eq!(resp.header("expires"), None, "{resp:?}");
    }
}

#[test]
fn disk_entries_survive_a_binary_upgrade() {
    use crate::upgrade::{exits_within, kill, upgrade, Started};
    let mut gw = Gateway::start_default();
    let b = Backend::start("b");
    route(&gw, &b, json!({}));
    assert_eq!(status(&get(&gw, "/c/up", &[])), "MISS");
    let mut started = Started::default();
    let new_pid = upgrade(&gw, gw.pid(), "b", &mut started);
    assert!(
        gw.wait_exit(Duration::from_secs(60)).is_some(),
        "the old process exits"
    );
    let resp = get(&gw, "/c/up", &[]);
    assert_eq!(status(&resp), "HIT", "{resp:?}");
    assert_eq!(b.path_hits("/c/up"), 1);
    kill("-TERM", new_pid);
    assert!(exits_within(new_pid, WAIT));
}

#[test]
fn check_mode_validates_zones_and_the_routes_naming_them() {
    use crate::support::gateway::run_portico;
    let routes = |zone: &str| {
        format!(
            "routes:\n  - id: r1\n    uri: /a\n    plugins:\n      proxy-cache: {{cache_strategy: memory, cache_zone: {zone}}}\n    upstream:\n      nodes:\n        \"127.0.0.1:1980\": 1\n#END\n"
        )
    };
    let zones = "cache:\n  zones:\n    - {name: mem, memory_size: 4m}\n    - {name: bad, disk_path: /tmp/x, cache_levels: '3'}\n";
    let gw = Gateway::prepare(GatewayOpts {
        yaml_provider: Some(routes("mem")),
        extra_yaml: zones.to_string(),
        ..Default::default()
    });
    let out = run_portico(&["-t", "-c", gw.config_path.to_str().unwrap()]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("cache.zones[1].disk_size"), "{text}");
    assert!(text.contains("cache.zones[1].cache_levels"), "{text}");

    let gw = Gateway::prepare(GatewayOpts {
        yaml_provider: Some(routes("nope")),
        extra_yaml: "cache:\n  zones:\n    - {name: mem, memory_size: 4m}\n".to_string(),
        ..Default::default()
    });
    let out = run_portico(&["-t", "-c", gw.config_path.to_str().unwrap()]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("plugins.proxy-cache.cache_zone") && text.contains("`nope`"),
        "{text}"
    );
    let gw = Gateway::prepare(GatewayOpts {
        yaml_provider: Some(routes("mem")),
        extra_yaml: "cache:\n  zones:\n    - {name: mem, memory_size: 4m}\n".to_string(),
        ..Default::default()
    });
    let out = run_portico(&["-t", "-c", gw.config_path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn admin_purge_works_with_the_yaml_provider_and_needs_an_admin_key() {
    let b = Backend::start("b");
    let yaml = format!(
        "routes:\n  - id: r\n    uri: /y/*\n    plugins:\n      proxy-cache: {{cache_strategy: memory, cache_zone: memory_cache}}\n    upstream:\n      nodes:\n        \"{}\": 1\n#END\n",
        b.node()
    );
    let gw = Gateway::start(GatewayOpts {
        yaml_provider: Some(yaml),
        ..Default::default()
    });
    assert!(wait_until(WAIT, || gw.proxy_get("/y/1").status == 200));
    assert_eq!(status(&get(&gw, "/y/1", &[])), "HIT");
    let viewer = gw.viewer_key.clone();
    let (code, _, _) =
        gw.admin_with_key("DELETE", "/proxy_cache/memory_cache", None, Some(&viewer));
    assert_eq!(code, 401);
    assert_eq!(status(&get(&gw, "/y/1", &[])), "HIT");
    let (code, _, body) = gw.admin("DELETE", "/proxy_cache/memory_cache", None);
    assert_eq!((code, body["purged"].as_u64()), (200, Some(1)), "{body}");
    assert_eq!(status(&get(&gw, "/y/1", &[])), "MISS");
}

#[test]
fn a_disk_zone_stays_under_its_size() {
    let opts = GatewayOpts {
        extra_yaml: "cache:\n  zones:\n    - {name: d, disk_path: small_disk, disk_size: 64k}\n"
            .to_string(),
        ..Default::default()
    };
    let gw = Gateway::start(opts);
    let b = Backend::start("b");
    route(&gw, &b, json!({"cache_zone": "d"}));
    let mut conn = gw.proxy_conn();
    for i in 0..1000 {
        let resp = conn.send(&Request::get(&format!("/c/{i}"))).expect("proxy");
        assert_eq!(resp.header(STATUS), Some("MISS"));
    }
    let limit = 64.0 * 1024.0;
    assert!(
        wait_until(WAIT, || metric(&gw, "portico_cache_bytes", "d") <= limit),
        "zone above its size: {}",
        metric(&gw, "portico_cache_bytes", "d")
    );
    assert!(metric(&gw, "portico_cache_evictions_total", "d") > 800.0);
    // What the gauge says is what the directory holds.
    let mut on_disk = 0u64;
    let mut dirs = vec![gw.data_dir.join("small_disk")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                dirs.push(e.path());
            } else {
                on_disk += meta.len();
            }
        }
    }
    assert!(on_disk as f64 <= limit, "{on_disk} bytes on disk");
    assert_eq!(status(&get(&gw, "/c/999", &[])), "HIT");
}
