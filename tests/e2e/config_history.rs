//! Configuration history and rollback (issue 16): the last `history.keep` applied
//! changes, each revision's configuration and diff, a rollback through the apply path,
//! all surviving a restart.

use crate::support::*;

/// Which backend answered `path`.
fn backend_of(gw: &Gateway, path: &str) -> String {
    let body: Value = gw.proxy_get(path).json();
    body["backend"].as_str().unwrap_or_default().to_string()
}

fn history(gw: &Gateway) -> Vec<Value> {
    gw.get("/configs/history")["list"]
        .as_array()
        .expect("list")
        .clone()
}

#[test]
fn history_diff_rollback_and_restart() {
    let a = Backend::start("a");
    let b = Backend::start("b");
    let mut gw = Gateway::start(GatewayOpts {
        extra_yaml: "history:\n  keep: 4\n".into(),
        ..Default::default()
    });
    // r1: upstream to a; r2: route on it; r3: upstream moved to b (with a secret in a
    // plugin config); r4: a second route.
    gw.put("/upstreams/u", json!({"nodes": {a.node(): 1}}));
    gw.put("/routes/r", json!({"uri": "/h", "upstream_id": "u"}));
    let rev_a = history(&gw)[0]["revision"].as_u64().unwrap();
    gw.put(
        "/upstreams/u",
        json!({"nodes": {b.node(): 1}, "desc": "moved", "labels": {"password": "hunter2"}}),
    );
    assert_eq!(backend_of(&gw, "/h"), "b");
    let (status, _, _) = gw.admin("DELETE", "/routes/r", None);
    assert_eq!(status, 200);
    gw.put("/routes/r", json!({"uri": "/h", "upstream_id": "u"}));

    let list = history(&gw);
    assert_eq!(list.len(), 4, "keep: 4 bounds the history: {list:?}");
    let newest = &list[0];
    assert_eq!(newest["source"], "admin", "{newest}");
    assert_eq!(newest["key_name"], "admin", "{newest}");
    assert_eq!(newest["summary"], "created /apisix/routes/r", "{newest}");
    assert_eq!(list[1]["summary"], "deleted /apisix/routes/r", "{list:?}");
    assert_eq!(
        list[2]["summary"], "updated /apisix/upstreams/u",
        "{list:?}"
    );
    let rev_b = list[2]["revision"].as_u64().unwrap();

    // A revision's configuration, secrets redacted; its diff.
    let at_a = gw.get(&format!("/configs/history/{rev_a}"));
    assert_eq!(at_a["revision"], rev_a);
    let ups = at_a["config"]["upstreams"].as_array().unwrap();
    assert_eq!(ups.len(), 1, "{at_a}");
    assert!(ups[0]["nodes"].get(a.node()).is_some(), "{at_a}");
    assert_eq!(at_a["config"]["routes"][0]["uri"], "/h", "{at_a}");
    let diff = gw.get(&format!("/configs/history/{rev_b}/diff"));
    let change = &diff["changes"][0];
    assert_eq!(change["key"], "/apisix/upstreams/u", "{diff}");
    assert_eq!(change["action"], "updated", "{diff}");
    assert!(change["before"]["nodes"].get(a.node()).is_some(), "{diff}");
    assert_eq!(change["after"]["desc"], "moved", "{diff}");
    assert_eq!(
        change["after"]["labels"]["password"], "******",
        "redacted: {diff}"
    );
    assert!(!diff.to_string().contains("hunter2"), "{diff}");

    // Not kept: 404.
    let (status, _, body) = gw.admin("GET", "/configs/history/1", None);
    assert_eq!(status, 404, "revision 1 fell out of keep: 4: {body}");

    // Rollback to rev_a: a new revision, traffic back on a.
    let (status, _, body) = gw.admin(
        "POST",
        &format!("/configs/rollback/{rev_a}"),
        Some(json!({})),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rolled_back_to"], rev_a, "{body}");
    let new_rev = body["revision"].as_u64().unwrap();
    assert!(new_rev > rev_b, "{body}");
    assert_eq!(backend_of(&gw, "/h"), "a");
    let up = gw.get("/upstreams/u")["value"].clone();
    assert!(up.get("desc").is_none(), "{up}");
    let newest = history(&gw)[0].clone();
    assert_eq!(newest["revision"], new_rev);
    assert_eq!(
        newest["summary"],
        format!("rollback to revision {rev_a}: updated /apisix/upstreams/u"),
        "{newest}"
    );

    // Survives a restart.
    let before = history(&gw);
    gw.restart();
    assert_eq!(history(&gw), before);
    let diff = gw.get(&format!("/configs/history/{new_rev}/diff"));
    assert_eq!(diff["changes"][0]["key"], "/apisix/upstreams/u", "{diff}");
    assert_eq!(backend_of(&gw, "/h"), "a");
}

#[test]
fn a_rollback_that_no_longer_validates_changes_nothing() {
    let gw = Gateway::start_default();
    // Lua whose load-time code fails only after `until`: valid when applied, not later.
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let until = now() + 1;
    let code = format!(
        "if os.time() > {until} then error('expired at load') end\nreturn function(conf, ctx) end"
    );
    let up = json!({"nodes": {"127.0.0.1:1": 1}});
    gw.put(
        "/routes/r",
        json!({"uri": "/x", "upstream": up,
               "plugins": {"serverless-pre-function": {"phase": "access", "functions": [code]}}}),
    );
    let bomb = history(&gw)[0]["revision"].as_u64().unwrap();
    gw.put("/routes/r", json!({"uri": "/x", "upstream": up}));
    assert!(
        wait_until(std::time::Duration::from_secs(10), || now() > until),
        "clock passed {until}"
    );
    let before = history(&gw);
    let route = gw.get("/routes/r");
    let (status, _, body) = gw.admin(
        "POST",
        &format!("/configs/rollback/{bomb}"),
        Some(json!({})),
    );
    assert_eq!(status, 400, "{body}");
    let msg = body["error_msg"].as_str().unwrap_or_default();
    assert!(
        msg.contains(&format!("revision {bomb} no longer validates"))
            && msg.contains("expired at load"),
        "{body}"
    );
    assert_eq!(history(&gw), before, "a refused rollback records nothing");
    assert_eq!(gw.get("/routes/r"), route, "and changes nothing");

    let (status, _, body) = gw.admin("POST", "/configs/rollback/999999", Some(json!({})));
    assert_eq!(status, 404, "{body}");
}
