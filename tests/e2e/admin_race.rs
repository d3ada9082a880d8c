//! Concurrent admin writes (issue 11, "Truly one apply path"): ids for POST and the
//! read-merge-write of PATCH are resolved inside the store's one writer, so concurrent
//! requests never share an id or lose an update.

use std::collections::BTreeSet;

use crate::support::*;

#[test]
fn concurrent_posts_get_distinct_ids_and_all_are_stored() {
    let gw = Gateway::start_default();
    let ids: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..200)
            .map(|i| {
                let gw = &gw;
                s.spawn(move || {
                    let resp = gw.write_ok(
                        "POST",
                        "/upstreams",
                        json!({"nodes": {"127.0.0.1:80": 1}, "desc": format!("n{i}")}),
                    );
                    resp["value"]["id"].as_str().unwrap().to_string()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let distinct: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), 200, "every POST got its own id");
    let list = gw.get("/upstreams");
    assert_eq!(list["total"], 200, "and every object is stored");
    let descs: BTreeSet<String> = list["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["value"]["desc"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(descs.len(), 200);
}

#[test]
fn concurrent_patches_of_different_fields_all_survive() {
    let gw = Gateway::start_default();
    gw.put(
        "/upstreams/u",
        json!({"nodes": {"127.0.0.1:80": 1}, "labels": {}}),
    );
    std::thread::scope(|s| {
        for i in 0..100 {
            let gw = &gw;
            s.spawn(move || {
                gw.write_ok(
                    "PATCH",
                    "/upstreams/u",
                    json!({"labels": {format!("k{i}"): format!("v{i}")}}),
                );
            });
        }
    });
    let labels = gw.get("/upstreams/u")["value"]["labels"].clone();
    let labels = labels.as_object().unwrap();
    assert_eq!(
        labels.len(),
        100,
        "no PATCH lost another's field: {labels:?}"
    );
    for i in 0..100 {
        assert_eq!(labels[&format!("k{i}")], format!("v{i}"));
    }
}
