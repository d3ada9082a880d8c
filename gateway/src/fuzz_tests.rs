//! Property-driven fuzzing of the admin input path: arbitrary JSON objects, shaped like
//! APISIX resources, through parse → validate → reference checks → snapshot build, and
//! arbitrary `vars` expressions through compile → eval. The property is that nothing
//! panics (a panic in an admin write once surfaced as a "task panicked" 400) and that
//! what validation accepts builds.
//!
//! CI runs a bounded number of cases; a longer run is
//! `PROPTEST_CASES=100000 cargo test -p portico --lib fuzz_tests` (docs/security.md).

use std::sync::Arc;

use proptest::prelude::*;
use serde_json::{Map, Number, Value};

use crate::config::{ResourceKind, ResourceSet};
use crate::router::Expr;
use crate::snapshot::{self, BuildContext, DnsFailure};
use crate::vars::RequestView;

/// Field names APISIX objects use, so generated objects reach past the unknown-field
/// check into the semantic ones.
const FIELDS: &[&str] = &[
    "uri",
    "uris",
    "host",
    "hosts",
    "methods",
    "priority",
    "vars",
    "remote_addr",
    "remote_addrs",
    "plugins",
    "upstream",
    "upstream_id",
    "service_id",
    "timeout",
    "status",
    "name",
    "desc",
    "labels",
    "nodes",
    "type",
    "key",
    "hash_on",
    "retries",
    "retry_timeout",
    "scheme",
    "pass_host",
    "upstream_host",
    "keepalive_pool",
    "idle_timeout",
    "size",
    "requests",
    "checks",
    "active",
    "passive",
    "connect",
    "send",
    "read",
    "weight",
    "port",
    "enable_websocket",
    "healthy",
    "unhealthy",
    "interval",
];

/// Strings that mean something somewhere: operators, paths, CIDRs, regexes, ids.
const WORDS: &[&str] = &[
    "",
    "/",
    "/a/*",
    "*",
    "/a",
    "..",
    "GET",
    "POST",
    "PURGE",
    "chash",
    "roundrobin",
    "vars",
    "header",
    "cookie",
    "consumer",
    "vars_combinations",
    "remote_addr",
    "arg_x",
    "http_x",
    "==",
    "~=",
    "~~",
    "~*",
    "in",
    "has",
    "ipmatch",
    "!",
    "AND",
    "OR",
    "!AND",
    "(",
    "[",
    "a{99999}",
    "10.0.0.0/8",
    "::1/128",
    "*.example.com",
    "example.com",
    "https",
    "http",
    "pass",
    "node",
    "rewrite",
    "$host$uri",
    "serverless-pre-function",
];

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| Value::Number(n.into())),
        prop_oneof![
            Just(1e308),
            Just(1.9e19),
            Just(-1.0),
            Just(0.0),
            Just(0.5),
            Just(65536.0),
            any::<f64>()
        ]
        .prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
        prop::sample::select(WORDS).prop_map(|w| Value::String(w.to_string())),
        "[a-z0-9./*:_-]{0,12}".prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        prop::sample::select(FIELDS).prop_map(str::to_string),
                        prop::sample::select(WORDS).prop_map(str::to_string),
                    ],
                    inner
                ),
                0..6
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A resource-shaped object: mostly known fields.
fn resource() -> impl Strategy<Value = Value> {
    prop::collection::vec((prop::sample::select(FIELDS), json_value()), 0..8).prop_map(|kv| {
        let mut m: Map<String, Value> = kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        // A node host name would be resolved (DNS is not what is fuzzed here).
        if let Some(nodes) = m.get_mut("nodes") {
            loopback_nodes(nodes);
        }
        if let Some(Value::Object(up)) = m.get_mut("upstream") {
            if let Some(nodes) = up.get_mut("nodes") {
                loopback_nodes(nodes);
            }
        }
        Value::Object(m)
    })
}

fn loopback_nodes(nodes: &mut Value) {
    match nodes {
        Value::Object(map) => {
            let old = std::mem::take(map);
            for (i, (_, w)) in old.into_iter().enumerate() {
                map.insert(format!("127.0.0.{}:{}", i % 250 + 1, 1000 + i), w);
            }
        }
        Value::Array(list) => {
            for n in list.iter_mut() {
                if let Value::Object(n) = n {
                    n.insert("host".into(), Value::String("127.0.0.1".into()));
                }
            }
        }
        _ => {}
    }
}

fn kind() -> impl Strategy<Value = ResourceKind> {
    prop::sample::select(vec![
        ResourceKind::Upstreams,
        ResourceKind::Services,
        ResourceKind::Routes,
        ResourceKind::GlobalRules,
    ])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn admin_objects_validate_and_build_without_panics(
        objects in prop::collection::vec((kind(), resource()), 1..6)
    ) {
        let plugins = portico_plugins::PluginRegistry::builtin();
        let metrics = crate::metrics::Metrics::new().expect("metrics");
        let health = portico_healthcheck::HealthRegistry::new(Arc::new(
            portico_healthcheck::NoopObserver,
        ));
        let mut set = ResourceSet::default();
        for (i, (kind, value)) in objects.into_iter().enumerate() {
            let _ = set.insert(kind, &format!("o{i}"), value, 1, 1, &plugins);
        }
        // Dangling references are the store's to refuse; the build sees a checked set.
        if set.check_all_references().is_empty() {
            let cx = BuildContext {
                metrics: &metrics,
                plugins: &plugins,
                health: &health,
                dns: DnsFailure::Reject,
            };
            let _ = snapshot::build(&set, None, 1, &cx);
        }
    }

    #[test]
    fn vars_expressions_compile_and_evaluate_without_panics(
        expr in json_value(),
        path in "/[a-z/.%]{0,16}",
        query in proptest::option::of("[a-z=&%]{0,16}"),
    ) {
        if let Ok(compiled) = Expr::compile(&expr) {
            let headers = http::HeaderMap::new();
            let view = RequestView {
                method: "GET",
                path: &path,
                query: query.as_deref(),
                host: "example.com",
                headers: &headers,
                remote_addr: "10.1.2.3".parse().ok(),
                remote_port: Some(5000),
                server_port: Some(9080),
                scheme: "http",
                consumer_name: None,
            };
            let _ = compiled.eval(&view);
        }
    }
}
