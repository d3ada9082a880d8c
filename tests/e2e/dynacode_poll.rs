//! lua-resty-dynacode documents polled from a CMS (`dynacode:` in the static config):
//! the README's snippets apply from a polled document, conditional requests recompile
//! nothing, a changed document applies, every failure keeps the last good document, a
//! restart with the CMS down serves the persisted document, and jitter spreads polls.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::dynacode_push::readme_doc;
use crate::support::cms::CmsRequest;
use crate::support::prom;
use crate::support::*;

/// A gateway polling `cms` every second (no jitter, 2 s timeout, a bearer token);
/// `overrides` replaces fields of that `dynacode:` section.
fn polling_gateway(cms: &MockCms, overrides: Value) -> Gateway {
    let mut section = json!({
        "url": cms.url(),
        "interval": 1,
        "jitter": 0,
        "timeout": 2,
        "headers": {"Authorization": "Bearer t"},
    });
    for (k, v) in overrides.as_object().cloned().unwrap_or_default() {
        section[k] = v;
    }
    Gateway::start(GatewayOpts {
        dynacode: Some(section),
        ..Default::default()
    })
}

fn metric(gw: &Gateway, name: &str, pairs: &[(&str, &str)]) -> f64 {
    let samples = prom::parse(&gw.metrics_text()).expect("metrics parse");
    prom::sum(&samples, name, pairs)
}

/// `portico_dynacode_polls_total{result}` (0 before the first such poll).
fn polls(gw: &Gateway, result: &str) -> u64 {
    metric(gw, "portico_dynacode_polls_total", &[("result", result)]) as u64
}

fn config_version(gw: &Gateway) -> u64 {
    metric(gw, "portico_config_version", &[]) as u64
}

fn active_snippets(gw: &Gateway) -> u64 {
    metric(gw, "portico_dynacode_snippets", &[("state", "active")]) as u64
}

/// Waits until `portico_dynacode_polls_total{result}` reaches `n`.
fn wait_polls(gw: &Gateway, result: &str, n: u64) {
    let ok = wait_until(WAIT, || polls(gw, result) >= n);
    assert!(
        ok,
        "polls_total{{result={result}}} never reached {n}\n{}",
        gw.metrics_text()
    );
}

fn get_host(gw: &Gateway, host: &str, path: &str) -> Response {
    gw.proxy("GET", path, &[("host", host)])
}

/// The README document's behaviour on `dynamic.local.com` (as in the push test).
fn assert_readme_serves(gw: &Gateway, when: &str) {
    let r = get_host(gw, "dynamic.local.com", "/");
    assert_eq!(r.status, 403, "{when}: no token: {r:?}");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://dynamic.local.com"),
        "{when}: CORS header on the 403"
    );
    let r = get_host(gw, "dynamic.local.com", "/?token=token");
    assert_eq!(r.status, 200, "{when}: token in the query: {r:?}");
    assert_eq!(r.text(), "olá mundo!\nhello world!\n", "{when}");
    assert_eq!(r.header("set-cookie"), Some("superstition=token"), "{when}");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://dynamic.local.com"),
        "{when}: CORS header on the 200"
    );
    let r = gw.proxy(
        "GET",
        "/",
        &[
            ("host", "dynamic.local.com"),
            ("cookie", "superstition=token"),
        ],
    );
    assert_eq!(r.status, 200, "{when}: token in the cookie: {r:?}");
    assert_eq!(
        get_host(gw, "other.com", "/").status,
        404,
        "{when}: other host"
    );
    assert_eq!(
        get_host(gw, "api.server.local.com", "/").status,
        404,
        "{when}: skip_domains host"
    );
}

/// Waits until the polled README document answers on `dynamic.local.com`.
fn wait_readme_applied(gw: &Gateway) {
    let ok = wait_until(WAIT, || {
        gw.try_proxy(Request::get("/").header("host", "dynamic.local.com"))
            .is_ok_and(|r| r.status == 403)
    });
    assert!(
        ok,
        "the polled document never applied\n{}",
        gw.metrics_text()
    );
    // The apply is swapped in just before the poll is counted.
    wait_polls(gw, "updated", 1);
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn readme_document_polled_with_auth_header() {
    let cms = MockCms::start(&readme_doc());
    let gw = polling_gateway(&cms, json!({}));
    wait_readme_applied(&gw);
    assert_readme_serves(&gw, "polled");
    assert_eq!(active_snippets(&gw), 3);

    let reqs = cms.requests();
    assert!(!reqs.is_empty());
    for r in &reqs {
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("GET", "/plugins.json")
        );
        assert_eq!(
            r.header("authorization"),
            Some("Bearer t"),
            "the configured headers are sent: {r:?}"
        );
    }
    // The first poll is unconditional.
    assert_eq!(reqs[0].header("if-none-match"), None, "{:?}", reqs[0]);
    // The admin API shows the polled document.
    let (status, _, body) = gw.admin("GET", "/dynacode", None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["value"], readme_doc());
}

#[test]
fn etag_round_trip_does_not_recompile() {
    let cms = MockCms::start(&readme_doc());
    let gw = polling_gateway(&cms, json!({}));
    wait_readme_applied(&gw);
    let version = config_version(&gw);
    assert!(version > 0);

    // Further polls are conditional and answered 304: nothing is applied.
    wait_polls(&gw, "not_modified", 2);
    assert_eq!(polls(&gw, "updated"), 1);
    assert_eq!(
        config_version(&gw),
        version,
        "a 304 must not apply anything"
    );
    assert_eq!(active_snippets(&gw), 3);
    let last = metric(&gw, "portico_dynacode_last_success_timestamp_seconds", &[]);
    assert!(last > 0.0, "last success {last}");
    assert!(
        (unix_now() - last).abs() < 120.0,
        "last success {last} is not recent"
    );
    let reqs = cms.requests();
    let conditional: Vec<_> = reqs
        .iter()
        .skip(1)
        .filter(|r| r.header("if-none-match") == Some("\"v1\"") && r.status == 304)
        .collect();
    assert!(
        conditional.len() >= 2,
        "polls after the first send If-None-Match \"v1\" and get 304: {reqs:#?}"
    );
    assert!(reqs
        .iter()
        .all(|r| r.header("authorization") == Some("Bearer t")));

    // A CMS without validators: a 200 with the same document is not_modified too.
    let nm = polls(&gw, "not_modified");
    let served_200 = reqs.iter().filter(|r| r.status == 200).count();
    cms.set_etags(false);
    wait_polls(&gw, "not_modified", nm + 3);
    let reqs = cms.requests();
    assert!(
        reqs.iter().filter(|r| r.status == 200).count() >= served_200 + 2,
        "the CMS answered full 200s: {reqs:#?}"
    );
    // Without an ETag, the poller stops sending If-None-Match.
    assert!(
        reqs.last().unwrap().header("if-none-match").is_none(),
        "{:?}",
        reqs.last()
    );
    assert_eq!(polls(&gw, "updated"), 1);
    assert_eq!(
        config_version(&gw),
        version,
        "an unchanged 200 must not apply anything"
    );
    assert_readme_serves(&gw, "after the not_modified polls");
}

#[test]
fn changed_document_on_the_cms_applies() {
    let cms = MockCms::start(&readme_doc());
    let gw = polling_gateway(&cms, json!({}));
    wait_readme_applied(&gw);
    wait_polls(&gw, "not_modified", 1);
    let version = config_version(&gw);

    let mut doc = readme_doc();
    doc["domains"][0]["plugins"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "version header", "phase": "header_filter",
                     "code": "ngx.header['X-Doc-Version'] = 'two'"}));
    cms.set_document(&doc);
    assert_eq!(cms.etag(), "\"v2\"");
    let ok = wait_until(WAIT, || {
        get_host(&gw, "dynamic.local.com", "/").header("x-doc-version") == Some("two")
    });
    assert!(
        ok,
        "the changed document never applied\n{}",
        gw.metrics_text()
    );
    wait_polls(&gw, "updated", 2);
    assert!(config_version(&gw) > version);
    assert_eq!(active_snippets(&gw), 4);
    // The old snippets still run alongside the new one.
    assert_readme_serves(&gw, "after the change");
    let r = get_host(&gw, "dynamic.local.com", "/?token=token");
    assert_eq!(r.header("x-doc-version"), Some("two"));
    // The new document was fetched by a conditional request carrying the old ETag.
    let reqs = cms.requests();
    let first_v2 = reqs.iter().find(|r| r.generation == 2).unwrap();
    assert_eq!(
        (first_v2.status, first_v2.header("if-none-match")),
        (200, Some("\"v1\"")),
        "{reqs:#?}"
    );
    // ... and the next polls are 304s on the new ETag.
    let nm = polls(&gw, "not_modified");
    wait_polls(&gw, "not_modified", nm + 1);
    assert_eq!(polls(&gw, "updated"), 2);
    assert!(cms
        .requests()
        .iter()
        .any(|r| r.status == 304 && r.header("if-none-match") == Some("\"v2\"")));
    let (_, _, body) = gw.admin("GET", "/dynacode", None);
    assert_eq!(body["value"], doc);
}

#[test]
fn cms_failures_keep_the_last_good_document() {
    let mut cms = MockCms::start(&readme_doc());
    let gw = polling_gateway(&cms, json!({}));
    wait_readme_applied(&gw);
    let version = config_version(&gw);
    let unchanged = |when: &str| {
        assert_readme_serves(&gw, when);
        assert_eq!(config_version(&gw), version, "{when}: nothing applied");
        assert_eq!(polls(&gw, "updated"), 1, "{when}");
        assert_eq!(active_snippets(&gw), 3, "{when}");
        let (status, _, body) = gw.admin("GET", "/dynacode", None);
        assert_eq!((status, &body["value"]), (200, &readme_doc()), "{when}");
    };

    // 500: status_error.
    cms.set_status(Some(500));
    wait_polls(&gw, "status_error", 2);
    unchanged("CMS answers 500");

    // A body that is not JSON: invalid.
    cms.set_status(None);
    cms.set_body("{\"domains\": [ this is not json");
    let gen_bad_json = cms.generation();
    wait_polls(&gw, "invalid", 2);
    unchanged("CMS serves invalid JSON");

    // A document of the wrong shape: invalid. Wait until the CMS served it twice (so
    // at least one such poll has been counted: polls are sequential).
    let invalid_before = polls(&gw, "invalid");
    cms.set_document(&json!({"domains": "x"}));
    let gen_bad_shape = cms.generation();
    let ok = wait_until(WAIT, || {
        cms.requests()
            .iter()
            .filter(|r| r.generation == gen_bad_shape && r.status == 200)
            .count()
            >= 2
    });
    assert!(ok, "the CMS never served the wrong-shape document twice");
    assert!(polls(&gw, "invalid") > invalid_before);
    unchanged("CMS serves a document of the wrong shape");

    // Stopped: fetch_error.
    cms.stop();
    let stopped_at = cms.count();
    wait_polls(&gw, "fetch_error", 2);
    unchanged("CMS stopped");
    assert_eq!(cms.count(), stopped_at);

    // Every poll the CMS answered is counted under the right result.
    let reqs = cms.requests();
    let count = |f: &dyn Fn(&CmsRequest) -> bool| reqs.iter().filter(|r| f(r)).count() as u64;
    assert_eq!(
        polls(&gw, "status_error"),
        count(&|r| r.status == 500),
        "status_error = 500s served"
    );
    assert_eq!(
        polls(&gw, "invalid"),
        count(
            &|r| r.status == 200 && (r.generation == gen_bad_json || r.generation == gen_bad_shape)
        ),
        "invalid = invalid JSON + wrong shape served\n{reqs:#?}"
    );
    assert_eq!(
        polls(&gw, "not_modified"),
        count(&|r| r.status == 304),
        "not_modified = 304s served"
    );
    assert!(count(&|r| r.generation == gen_bad_json && r.status == 200) >= 2);
    // After an invalid document the poller forgets the validators: unconditional.
    for r in reqs.iter().filter(|r| r.generation == gen_bad_shape) {
        assert_eq!(r.header("if-none-match"), None, "{r:?}");
    }
    let logs = gw.logs();
    assert!(
        logs.contains("dynacode poll failed"),
        "failures are logged\n{logs}"
    );
}

#[test]
fn restart_with_the_cms_down_serves_the_persisted_document() {
    let mut cms = MockCms::start(&readme_doc());
    let mut gw = polling_gateway(&cms, json!({}));
    wait_readme_applied(&gw);
    cms.stop();
    let status = gw.terminate();
    assert!(status.success());
    gw.restart();
    // Served as soon as the gateway is up, before (and after) any poll.
    assert_readme_serves(&gw, "restarted, CMS down");
    wait_polls(&gw, "fetch_error", 1);
    assert_readme_serves(&gw, "after a failed poll");
    assert_eq!(polls(&gw, "updated"), 0);
    assert_eq!(active_snippets(&gw), 3);
    let (status, _, body) = gw.admin("GET", "/dynacode", None);
    assert_eq!((status, &body["value"]), (200, &readme_doc()));
}

#[test]
fn jitter_spreads_polls() {
    // interval 1 + up to 2 s of jitter: each gap is in [1, 3] s (+ the poll itself).
    let cms = MockCms::start(&readme_doc());
    let gw = polling_gateway(&cms, json!({"jitter": 2}));
    // 7 polls = 6 gaps (~12 s): the chance that 6 uniform delays over 2 s all fall
    // within 0.3 s of each other is ~4e-4; without jitter they would all be ~1 s.
    let ok = wait_until(Duration::from_secs(40), || cms.count() >= 7);
    assert!(ok, "only {} polls in 40 s", cms.count());
    let reqs = cms.requests();
    let gaps: Vec<f64> = reqs[..7]
        .windows(2)
        .map(|w| w[1].at.duration_since(w[0].at).as_secs_f64())
        .collect();
    for g in &gaps {
        assert!(
            (0.98..=3.5).contains(g),
            "gap {g:.3} s outside [1, 3.5] s: {gaps:?}"
        );
    }
    let max = gaps.iter().copied().fold(f64::MIN, f64::max);
    let min = gaps.iter().copied().fold(f64::MAX, f64::min);
    eprintln!("jitter gaps: {gaps:?}");
    assert!(max - min > 0.3, "polls are not spread: gaps {gaps:?}");
    drop(gw);
}

#[test]
fn star_and_specific_domain_both_apply_when_polled() {
    let b = Backend::start("b");
    let doc = json!({"domains": [
        {"name": "*", "plugins": [{"name": "all", "phase": "header_filter",
            "code": "ngx.header['X-Order'] = (ngx.header['X-Order'] or '') .. 'star'"}]},
        {"name": "shop\\.example", "plugins": [
            {"name": "specific", "phase": "header_filter",
             "code": "ngx.header['X-Order'] = ngx.header['X-Order'] .. '+shop'"},
            {"name": "req", "phase": "rewrite", "code": "ngx.req.set_header('X-Dyna', 'yes')"}
        ]}
    ]});
    let cms = MockCms::start(&doc);
    let gw = polling_gateway(&cms, json!({}));
    gw.put(
        "/routes/r",
        json!({"uri": "/*", "upstream": {"nodes": {b.node(): 1}}}),
    );
    let ok = wait_until(WAIT, || {
        get_host(&gw, "shop.example", "/x").header("x-order") == Some("star+shop")
    });
    assert!(ok, "{:?}", get_host(&gw, "shop.example", "/x"));
    let r = get_host(&gw, "shop.example", "/x");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["headers"]["x-dyna"],
        "yes",
        "rewrite snippet reached the backend"
    );
    let r = get_host(&gw, "other.example", "/x");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-order"), Some("star"));
    assert!(r.json()["headers"]["x-dyna"].is_null());
}

#[test]
fn the_poll_url_is_authoritative_over_admin_changes() {
    // The poller's documented rule: a document deleted through the admin API comes
    // back on the next successful poll, even when the CMS answers 304.
    let cms = MockCms::start(&readme_doc());
    let gw = polling_gateway(&cms, json!({}));
    wait_readme_applied(&gw);
    wait_polls(&gw, "not_modified", 1);
    let (status, _, _) = gw.admin("DELETE", "/dynacode", None);
    assert_eq!(status, 200);
    let ok = wait_until(WAIT, || polls(&gw, "updated") >= 2);
    assert!(
        ok,
        "the deleted document was not restored\n{}",
        gw.metrics_text()
    );
    assert_readme_serves(&gw, "restored after an admin DELETE");
    let last = cms.requests().last().cloned().unwrap();
    assert_eq!(last.header("if-none-match"), Some("\"v1\""), "{last:?}");
}

#[test]
fn polling_works_with_the_yaml_provider() {
    let cms = MockCms::start(&readme_doc());
    let gw = Gateway::start(GatewayOpts {
        yaml_provider: Some("routes: []\n#END\n".to_owned()),
        dynacode: Some(json!({"url": cms.url(), "interval": 1, "jitter": 0, "timeout": 2})),
        ..Default::default()
    });
    wait_readme_applied(&gw);
    assert_readme_serves(&gw, "yaml provider");
    wait_polls(&gw, "not_modified", 1);
    assert_eq!(polls(&gw, "updated"), 1);
}
