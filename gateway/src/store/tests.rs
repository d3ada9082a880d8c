use std::sync::Arc;

use serde_json::{json, Value};

use super::*;

fn store() -> (ConfigStore, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!(
        "portico-store-{}-{}",
        std::process::id(),
        rand::random::<u64>()
    ));
    let disk = DiskStore::open(&dir).unwrap();
    let s = ConfigStore::open(disk, deps()).unwrap();
    (s, dir)
}

fn deps() -> StoreDeps {
    StoreDeps {
        plugins: Arc::new(PluginRegistry::builtin()),
        metrics: Metrics::new().unwrap(),
        health: portico_healthcheck::HealthRegistry::new(Arc::new(
            portico_healthcheck::NoopObserver,
        )),
    }
}

fn put(kind: ResourceKind, id: &str, value: Value) -> Change {
    Change::Put {
        kind,
        id: id.into(),
        value,
    }
}

#[test]
fn put_creates_then_replaces_and_stamps() {
    let (s, dir) = store();
    let a = s
        .apply(
            put(
                ResourceKind::Upstreams,
                "u",
                json!({"nodes": {"127.0.0.1:1": 1}}),
            ),
            ApplySource::Admin,
        )
        .unwrap();
    assert!(a.created);
    let b = s
        .apply(
            put(
                ResourceKind::Upstreams,
                "u",
                json!({"nodes": {"127.0.0.1:2": 1}}),
            ),
            ApplySource::Admin,
        )
        .unwrap();
    assert!(!b.created);
    assert_eq!(b.version, a.version + 1);
    let v = s.resources().get(ResourceKind::Upstreams, "u").unwrap();
    assert_eq!(v.value["id"], "u");
    assert!(v.value["create_time"].is_u64() && v.value["update_time"].is_u64());
    assert_eq!(v.created_index, 1);
    assert_eq!(v.modified_index, 2);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn rejected_change_swaps_nothing() {
    let (s, dir) = store();
    s.apply(
        put(
            ResourceKind::Routes,
            "r",
            json!({"uri": "/a", "upstream": {"nodes": {"127.0.0.1:1": 1}}}),
        ),
        ApplySource::Admin,
    )
    .unwrap();
    let before = s.snapshot();
    let e = s
        .apply(
            put(
                ResourceKind::Routes,
                "r",
                json!({"uri": "/b", "upstream_id": "missing"}),
            ),
            ApplySource::Admin,
        )
        .unwrap_err();
    assert!(e.to_string().contains("upstream_id"), "{e}");
    assert!(Arc::ptr_eq(&before, &s.snapshot()));
    assert_eq!(
        s.resources().get(ResourceKind::Routes, "r").unwrap().value["uri"],
        "/a"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn delete_refuses_referenced_unless_forced() {
    let (s, dir) = store();
    s.apply(
        put(ResourceKind::Upstreams, "u", json!({"nodes": {}})),
        ApplySource::Admin,
    )
    .unwrap();
    s.apply(
        put(
            ResourceKind::Routes,
            "r",
            json!({"uri": "/", "upstream_id": "u"}),
        ),
        ApplySource::Admin,
    )
    .unwrap();
    let e = s
        .apply(
            Change::Delete {
                kind: ResourceKind::Upstreams,
                id: "u".into(),
                force: false,
            },
            ApplySource::Admin,
        )
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "can not delete this upstream, route [r] is still using it now"
    );
    s.apply(
        Change::Delete {
            kind: ResourceKind::Upstreams,
            id: "u".into(),
            force: true,
        },
        ApplySource::Admin,
    )
    .unwrap();
    // The route survives with no upstream: it answers 503 rather than breaking the build.
    assert!(s.snapshot().routes[0].upstream.is_none());
    assert!(matches!(
        s.apply(
            Change::Delete {
                kind: ResourceKind::Upstreams,
                id: "u".into(),
                force: false
            },
            ApplySource::Admin
        ),
        Err(ApplyError::NotFound)
    ));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn replace_all_is_all_or_nothing_and_persists() {
    let (s, dir) = store();
    let good = vec![
        (
            ResourceKind::Upstreams,
            "u".to_string(),
            json!({"id": "u", "nodes": {"127.0.0.1:1": 1}}),
        ),
        (
            ResourceKind::Routes,
            "r".to_string(),
            json!({"id": "r", "uri": "/", "upstream_id": "u"}),
        ),
    ];
    s.apply(Change::ReplaceAll(good), ApplySource::Admin)
        .unwrap();
    let bad = vec![
        (
            ResourceKind::Routes,
            "r".to_string(),
            json!({"id": "r", "uri": "/", "upstream_id": "gone"}),
        ),
        (
            ResourceKind::Routes,
            "r2".to_string(),
            json!({"id": "r2", "uri": 3}),
        ),
    ];
    let e = s
        .apply(Change::ReplaceAll(bad), ApplySource::Admin)
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("routes[1].uri") && msg.contains("routes[id=r].upstream_id"),
        "{msg}"
    );
    assert_eq!(s.resources().total(), 2);
    drop(s);
    let disk = DiskStore::open(&dir).unwrap();
    let reopened = ConfigStore::open(disk, deps()).unwrap();
    assert_eq!(reopened.resources().total(), 2);
    assert_eq!(reopened.snapshot().routes.len(), 1);
    assert!(reopened.revision() >= 1);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn dry_run_changes_nothing() {
    let (s, dir) = store();
    s.dry_run(Change::ReplaceAll(vec![(
        ResourceKind::Upstreams,
        "u".into(),
        json!({"nodes": {}}),
    )]))
    .unwrap();
    assert_eq!(s.resources().total(), 0);
    assert_eq!(s.revision(), 0);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn unchanged_upstream_runtime_is_reused_across_swaps() {
    let (s, dir) = store();
    s.apply(
        put(
            ResourceKind::Upstreams,
            "u",
            json!({"nodes": {"127.0.0.1:1": 1}}),
        ),
        ApplySource::Admin,
    )
    .unwrap();
    let before = Arc::clone(&s.snapshot().upstreams["u"]);
    s.apply(
        put(
            ResourceKind::Routes,
            "r",
            json!({"uri": "/", "upstream_id": "u"}),
        ),
        ApplySource::Admin,
    )
    .unwrap();
    assert!(Arc::ptr_eq(&before, &s.snapshot().upstreams["u"]));
    assert!(Arc::ptr_eq(
        &before,
        s.snapshot().routes[0].upstream.as_ref().unwrap()
    ));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn single_put_errors_name_the_field_the_user_wrote() {
    let (s, dir) = store();
    let e = s
        .apply(
            put(
                ResourceKind::Routes,
                "r",
                json!({"uri": "no-slash", "upstream": {"nodes": {}}}),
            ),
            ApplySource::Admin,
        )
        .unwrap_err();
    let ApplyError::Invalid(errors) = e else {
        panic!("expected a validation error")
    };
    assert_eq!(errors[0].path, "uri", "{errors:?}");
    let e = s
        .apply(
            put(
                ResourceKind::Routes,
                "r",
                json!({"uris": ["/a", "bad"], "upstream": {"nodes": {}}}),
            ),
            ApplySource::Admin,
        )
        .unwrap_err();
    let ApplyError::Invalid(errors) = e else {
        panic!("expected a validation error")
    };
    assert_eq!(errors[0].path, "uris[1]", "{errors:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_restart_continues_the_revision_after_deleting_the_newest_object() {
    let (s, dir) = store();
    let up = json!({"nodes": {"127.0.0.1:1": 1}});
    s.apply(
        put(ResourceKind::Upstreams, "a", up.clone()),
        ApplySource::Admin,
    )
    .unwrap();
    let created = s
        .apply(
            Change::Create {
                kind: ResourceKind::Upstreams,
                value: up.clone(),
            },
            ApplySource::Admin,
        )
        .unwrap();
    let id = created.id.unwrap();
    s.apply(
        Change::Delete {
            kind: ResourceKind::Upstreams,
            id: id.clone(),
            force: false,
        },
        ApplySource::Admin,
    )
    .unwrap();
    let before = s.revision();
    drop(s);
    let reopened = ConfigStore::open(DiskStore::open(&dir).unwrap(), deps()).unwrap();
    assert_eq!(
        reopened.revision(),
        before,
        "the persisted counter, not the max index"
    );
    let again = reopened
        .apply(
            Change::Create {
                kind: ResourceKind::Upstreams,
                value: up,
            },
            ApplySource::Admin,
        )
        .unwrap();
    assert_ne!(again.id.unwrap(), id, "a POST id is never handed out twice");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_released_store_refuses_writes_and_lets_another_open_it() {
    let (s, dir) = store();
    let up = json!({"nodes": {"127.0.0.1:1": 1}});
    s.apply(
        put(ResourceKind::Upstreams, "kept", up.clone()),
        ApplySource::Admin,
    )
    .unwrap();
    let locked = DiskStore::open(&dir)
        .err()
        .expect("held by the running store");
    assert!(locked.is_locked(), "{locked}");

    assert!(s.release());
    let refused = s
        .apply(put(ResourceKind::Upstreams, "late", up), ApplySource::Admin)
        .unwrap_err();
    assert!(matches!(refused, ApplyError::HandedOver), "{refused}");
    // Reads and the running snapshot are untouched.
    assert!(s.resources().get(ResourceKind::Upstreams, "kept").is_some());

    let next = ConfigStore::open(DiskStore::open(&dir).unwrap(), deps()).unwrap();
    assert!(next
        .resources()
        .get(ResourceKind::Upstreams, "kept")
        .is_some());
    assert!(next
        .resources()
        .get(ResourceKind::Upstreams, "late")
        .is_none());
    let _ = std::fs::remove_dir_all(dir);
}
