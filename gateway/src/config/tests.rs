use serde_json::json;

use super::*;

fn route(v: serde_json::Value) -> Result<RouteSpec, Vec<FieldError>> {
    parse_spec::<RouteSpec>(&v)
}

fn upstream(v: serde_json::Value) -> Result<UpstreamSpec, Vec<FieldError>> {
    parse_spec::<UpstreamSpec>(&v)
}

#[test]
fn route_defaults_follow_apisix() {
    let r = route(json!({"uri": "/a", "upstream_id": 1})).unwrap();
    assert_eq!(r.status, 1);
    assert_eq!(r.priority, 0);
    assert_eq!(r.upstream_id, Some(Id("1".into())));
}

#[test]
fn unknown_field_is_named_with_its_path() {
    let e = route(json!({"uri": "/a", "upstream": {"nodes": {}, "nodez": 1}})).unwrap_err();
    assert_eq!(e[0].path, "upstream.nodez");
    assert!(e[0].message.contains("unknown field"), "{}", e[0].message);
    let e = route(json!({"uri": 5, "upstream_id": "1"})).unwrap_err();
    assert_eq!(e[0].path, "uri");
}

#[test]
fn wrong_type_deep_in_the_object_names_the_path() {
    let e = route(json!({"uri": "/a", "upstream": {"nodes": {"127.0.0.1:80": "x"}}})).unwrap_err();
    assert!(e[0].path.starts_with("upstream.nodes"), "{:?}", e);
    let e = upstream(json!({"nodes": [], "timeout": {"connect": 1, "send": 1, "read": "x"}}))
        .unwrap_err();
    assert_eq!(e[0].path, "timeout.read");
}

#[test]
fn semantic_errors_are_all_reported() {
    let e = route(json!({
        "uri": "/a", "uris": ["/b"], "host": "a", "hosts": ["b"],
        "upstream": {"type": "chash", "nodes": {"bad host:80": 1}, "pass_host": "rewrite"}
    }))
    .unwrap_err();
    let paths: Vec<&str> = e.iter().map(|e| e.path.as_str()).collect();
    assert!(paths.contains(&"uris"), "{paths:?}");
    assert!(paths.contains(&"hosts"));
    assert!(paths.contains(&"upstream.key"));
    assert!(paths.contains(&"upstream.upstream_host"));
    assert!(paths.iter().any(|p| p.starts_with("upstream.nodes")));
}

#[test]
fn nodes_normalise_from_both_shapes() {
    let a = upstream(json!({"nodes": {"127.0.0.1:8080": 2, "example.com": 1}})).unwrap();
    let n = a.nodes.normalise(a.scheme).unwrap();
    assert_eq!(n.len(), 2);
    assert!(n.iter().any(|x| x.host == "example.com" && x.port == 80));
    let b =
        upstream(json!({"scheme": "https", "nodes": [{"host": "10.0.0.1", "weight": 3}]})).unwrap();
    let n = b.nodes.normalise(b.scheme).unwrap();
    assert_eq!((n[0].port, n[0].weight), (443, 3));
    let e = upstream(json!({"nodes": [{"host": "10.0.0.1", "port": 1, "weight": 1}, {"host": "10.0.0.1", "port": 1, "weight": 2}]}))
        .unwrap_err();
    assert!(e[0].message.contains("duplicate"));
}

#[test]
fn grpc_schemes_default_ports_and_transport() {
    for (scheme, port, tls) in [("grpc", 80, false), ("grpcs", 443, true)] {
        let u = upstream(json!({"scheme": scheme, "nodes": {"10.0.0.1": 1}})).unwrap();
        assert_eq!(u.nodes.normalise(u.scheme).unwrap()[0].port, port);
        assert_eq!((u.scheme.tls(), u.scheme.http2()), (tls, true));
        assert_eq!(u.scheme.as_str(), scheme);
    }
    let https = upstream(json!({"scheme": "https", "nodes": {}})).unwrap();
    assert!(https.scheme.tls() && !https.scheme.http2());
    assert!(upstream(json!({"scheme": "ws", "nodes": {}})).is_err());
}

#[test]
fn checks_parse_with_apisix_defaults_and_bad_values_name_their_path() {
    let u = upstream(json!({"nodes": {}, "checks": {"active": {"type": "tcp"}}})).unwrap();
    let active = u.checks.unwrap().active.unwrap();
    assert_eq!(active.healthy.successes, 2);
    assert_eq!(active.unhealthy.tcp_failures, 2);
    let e = upstream(json!({"nodes": {}, "checks": {"passive": {}}})).unwrap_err();
    assert!(e.iter().any(|e| e.path == "checks.active"), "{e:?}");
    let e = upstream(json!({"nodes": {}, "checks": {"active": {"healthy": {"successes": 0}}}}))
        .unwrap_err();
    assert!(
        e.iter()
            .any(|e| e.path == "checks.active.healthy.successes"),
        "{e:?}"
    );
    let e = upstream(json!({"nodes": {}, "checks": {"active": {"bogus": 1}}})).unwrap_err();
    assert!(e[0].path.starts_with("checks.active"), "{e:?}");
}

#[test]
fn ids_follow_the_apisix_rule() {
    assert!(check_id("route-1_a.b").is_ok());
    assert!(check_id("").is_err());
    assert!(check_id("a/b").is_err());
    assert!(check_id(&"x".repeat(65)).is_err());
}

#[test]
fn set_tracks_references() {
    let plugins = portico_plugins::PluginRegistry::builtin();
    let mut set = ResourceSet::default();
    set.insert(
        ResourceKind::Upstreams,
        "u",
        json!({"nodes": {}}),
        1,
        1,
        &plugins,
    )
    .unwrap();
    set.insert(
        ResourceKind::Services,
        "s",
        json!({"upstream_id": "u"}),
        2,
        2,
        &plugins,
    )
    .unwrap();
    set.insert(
        ResourceKind::Routes,
        "r",
        json!({"uri": "/", "service_id": "s", "upstream_id": "u"}),
        3,
        3,
        &plugins,
    )
    .unwrap();
    assert_eq!(set.referrers(ResourceKind::Upstreams, "u").len(), 2);
    assert_eq!(
        set.referrers(ResourceKind::Services, "s"),
        vec![(ResourceKind::Routes, "r".to_string())]
    );
    assert!(set.check_all_references().is_empty());
    set.remove(ResourceKind::Upstreams, "u");
    let e = set.check_all_references();
    assert_eq!(e.len(), 2);
    assert_eq!(e[0].path, "services[id=s].upstream_id");
    let e = set
        .insert(
            ResourceKind::Routes,
            "p",
            json!({"uri": "/", "plugins": {"nope": {}}}),
            4,
            4,
            &plugins,
        )
        .unwrap_err();
    assert_eq!(e[0].path, "plugins.nope");
    assert_eq!(set.max_index(), 3);
}

/// A spec is kept per resource for the life of the configuration (10,000 routes keep
/// 10,000 of them), so a large optional field is boxed: an inline
/// `upstream` made every route and service spec 640 bytes larger.
#[test]
fn spec_sizes() {
    let route = std::mem::size_of::<RouteSpec>();
    let service = std::mem::size_of::<ServiceSpec>();
    assert!(route <= 512, "RouteSpec is {route} bytes");
    assert!(service <= 512, "ServiceSpec is {service} bytes");
}
