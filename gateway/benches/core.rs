//! Micro-benchmarks of the data path's pure parts (issue 6): router match with 1, 100
//! and 10,000 routes, balancer picks, building a 10,000-route snapshot, and the edge's
//! request head check (every plain HTTP/1 request passes it before Pingora parses it).
//!
//! `cargo bench -p portico --bench core`

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use portico::balancer::{BalancerNode, PickerKind, PriorityPicker};
use portico::config::{ResourceKind, ResourceSet};
use portico::metrics::Metrics;
use portico::router::{RouteMatchSpec, Router};
use portico::snapshot::{build, BuildContext, DnsFailure};
use portico::vars::RequestView;
use portico_plugins::PluginRegistry;

/// Half exact routes, half prefix routes, like a typical API estate.
fn specs(n: usize) -> Vec<RouteMatchSpec> {
    (0..n)
        .map(|i| RouteMatchSpec {
            uris: vec![if i % 2 == 0 {
                format!("/exact/{i}")
            } else {
                format!("/api/v1/svc{i}/*")
            }],
            ..Default::default()
        })
        .collect()
}

fn router(c: &mut Criterion) {
    let headers = http::HeaderMap::new();
    for n in [1usize, 100, 10_000] {
        let r = Router::build(&specs(n)).expect("valid routes");
        let exact = format!("/exact/{}", (n - 1) / 2 * 2);
        let prefix = format!("/api/v1/svc{}/items/7", if n > 1 { (n - 1) | 1 } else { 1 });
        // One route is an exact one; a prefix lookup there would only measure a miss.
        let cases = if n == 1 {
            vec![("exact", exact)]
        } else {
            vec![("exact", exact), ("prefix", prefix)]
        };
        for (kind, path) in cases {
            let view = RequestView {
                method: "GET",
                path: &path,
                query: None,
                host: "example.com",
                headers: &headers,
                remote_addr: None,
                remote_port: None,
                server_port: None,
                scheme: "http",
                consumer_name: None,
            };
            c.bench_function(&format!("router match, {n} routes, {kind}"), |b| {
                b.iter(|| black_box(r.find(black_box(&view))))
            });
        }
    }
}

fn balancer(c: &mut Criterion) {
    let nodes: Vec<BalancerNode> = (0..10)
        .map(|i| BalancerNode {
            addr: format!("10.0.0.{}:80", i + 1).parse().expect("address"),
            weight: 1,
        })
        .collect();
    let priorities = vec![0; nodes.len()];
    let rr = PriorityPicker::new(PickerKind::RoundRobin, &nodes[..3], &priorities[..3]);
    let ch = PriorityPicker::new(PickerKind::Chash, &nodes, &priorities);
    c.bench_function("balancer pick, smooth round-robin, 3 nodes", |b| {
        b.iter(|| black_box(rr.pick(b"", |_| true)))
    });
    let mut i = 0u64;
    c.bench_function("balancer pick, chash, 10 nodes", |b| {
        b.iter(|| {
            i += 1;
            black_box(ch.pick(&i.to_le_bytes(), |_| true))
        })
    });
}

fn snapshot_build(c: &mut Criterion) {
    let plugins = PluginRegistry::builtin();
    let health =
        portico_healthcheck::HealthRegistry::new(Arc::new(portico_healthcheck::NoopObserver));
    let metrics = Metrics::new().expect("metrics");
    let mut set = ResourceSet::default();
    set.insert(
        ResourceKind::Upstreams,
        "u1",
        serde_json::json!({"nodes": {"127.0.0.1:8080": 1}}),
        1,
        1,
        &plugins,
    )
    .expect("upstream");
    for i in 0..10_000 {
        let uri = if i % 2 == 0 {
            format!("/exact/{i}")
        } else {
            format!("/api/v1/svc{i}/*")
        };
        set.insert(
            ResourceKind::Routes,
            &format!("r{i}"),
            serde_json::json!({"uri": uri, "upstream_id": "u1"}),
            2,
            2,
            &plugins,
        )
        .expect("route");
    }
    let cx = BuildContext {
        metrics: &metrics,
        plugins: &plugins,
        health: &health,
        dns: DnsFailure::Reject,
    };
    let mut group = c.benchmark_group("snapshot");
    group.sample_size(10);
    group.bench_function("build, 10,000 routes", |b| {
        b.iter(|| black_box(build(&set, None, 1, &cx).map(|s| s.routes.len()).ok()))
    });
    group.finish();
}

/// wrk's request (S1) and a browser's.
const HEADS: [(&str, &str); 2] = [
    ("wrk", "GET / HTTP/1.1\r\nHost: 127.0.0.1:18080\r\n\r\n"),
    (
        "browser",
        "GET /api/v1/items?page=2 HTTP/1.1\r\nHost: api.example.com\r\n\
         User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
         Accept: application/json, text/plain, */*\r\nAccept-Language: en-US,en;q=0.5\r\n\
         Accept-Encoding: gzip, deflate, br\r\nReferer: https://app.example.com/items\r\n\
         Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJl\r\n\
         Connection: keep-alive\r\nCookie: session=0123456789abcdef; theme=dark\r\n\
         Cache-Control: no-cache\r\n\r\n",
    ),
];

fn edge_head(c: &mut Criterion) {
    use portico::edge::head;
    for (kind, text) in HEADS {
        c.bench_function(&format!("edge head, blank line search, {kind}"), |b| {
            b.iter(|| {
                let mut scanned = 0;
                head::blank_line_seen(black_box(text.as_bytes()), &mut scanned)
            })
        });
        c.bench_function(&format!("edge head, check, {kind}"), |b| {
            b.iter(|| head::check(black_box(text.as_bytes()), 32 * 1024))
        });
    }
}

criterion_group!(benches, router, balancer, snapshot_build, edge_head);
criterion_main!(benches);
