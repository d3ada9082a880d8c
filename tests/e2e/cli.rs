//! The command line and process lifecycle: --version, -t config checks,
//! generated admin key, refusing weak keys on public listeners, startup log
//! lines, graceful SIGTERM.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::support::gateway::run_portico;
use crate::support::*;

fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn version() {
    let out = run_portico(&["--version"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let text = output_text(&out);
    assert!(
        text.contains(env!("CARGO_PKG_VERSION")),
        "prints the version {}: {text}",
        env!("CARGO_PKG_VERSION")
    );
}

#[test]
fn check_mode_accepts_a_good_config() {
    let gw = Gateway::prepare(GatewayOpts::default());
    let out = run_portico(&["-t", "-c", gw.config_path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "portico -t on a good config: {}",
        output_text(&out)
    );

    // with a valid declarative file
    let yaml = Gateway::prepare(GatewayOpts {
        yaml_provider: Some(
            "routes:\n  - id: r1\n    uri: /a\n    upstream_id: u1\nupstreams:\n  - id: u1\n    nodes:\n      \"127.0.0.1:1980\": 1\n#END\n"
                .into(),
        ),
        ..Default::default()
    });
    let out = run_portico(&["-t", "-c", yaml.config_path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "portico -t with a good yaml_config: {}",
        output_text(&out)
    );
}

#[test]
fn check_mode_rejects_an_unknown_key() {
    let gw = Gateway::prepare(GatewayOpts {
        extra_yaml: "proxyy:\n  listen: [\"127.0.0.1:1\"]\n".into(),
        ..Default::default()
    });
    let out = run_portico(&["-t", "-c", gw.config_path.to_str().unwrap()]);
    let text = output_text(&out);
    assert!(!out.status.success(), "unknown key must fail -t: {text}");
    assert!(text.contains("proxyy"), "the error names the key: {text}");
}

#[test]
fn check_mode_reports_every_resource_error_with_its_path() {
    let gw = Gateway::prepare(GatewayOpts {
        yaml_provider: Some(
            "routes:\n  - id: r1\n    urii: /a\n    upstream_id: u1\nupstreams:\n  - id: u1\n    nodes: \"not-nodes\"\n#END\n"
                .into(),
        ),
        ..Default::default()
    });
    let out = run_portico(&["-t", "-c", gw.config_path.to_str().unwrap()]);
    let text = output_text(&out);
    assert!(!out.status.success(), "bad resources must fail -t: {text}");
    assert!(
        text.contains("urii"),
        "first error (unknown field) reported: {text}"
    );
    assert!(
        text.contains("nodes"),
        "second error (wrong type) reported: {text}"
    );
    assert!(
        text.contains("routes") && text.contains("upstreams"),
        "errors carry their path: {text}"
    );
}

#[test]
fn check_mode_lists_every_error_of_a_file_in_one_run() {
    // Five different errors: two unknown keys (one nested), a bad value, and in the
    // resource file an unknown field in one route and a Lua syntax error in another.
    let gw = Gateway::prepare(GatewayOpts {
        yaml_provider: Some(
            "routes:\n  - id: r1\n    urii: /a\n  - id: r2\n    uri: /b\n    plugins:\n      serverless-pre-function:\n        functions: [\"return function( end\"]\n#END\n"
                .into(),
        ),
        proxy_extra: "  listn: [\"127.0.0.1:1\"]\n".into(),
        extra_yaml: "proxyy: 1\nshutdown_grace_seconds: soon\n".into(),
        ..Default::default()
    });
    let out = run_portico(&["-t", "-c", gw.config_path.to_str().unwrap()]);
    let text = output_text(&out);
    assert!(!out.status.success(), "-t must fail: {text}");
    for needle in [
        "proxyy",
        "listn",
        "shutdown_grace_seconds",
        "urii",
        "routes[id=r2]",
    ] {
        assert!(
            text.contains(needle),
            "-t lists the error about {needle}: {text}"
        );
    }
    assert!(text.contains("test failed (5 errors)"), "{text}");

    let good = Gateway::prepare(GatewayOpts::default());
    let out = run_portico(&["-t", "-c", good.config_path.to_str().unwrap()]);
    let text = output_text(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("test is successful"), "{text}");
}

#[test]
fn generates_admin_key_when_none_is_configured() {
    let mut gw = Gateway::start(GatewayOpts {
        admin_keys: false,
        ..Default::default()
    });
    let key_path = gw.data_dir.join("admin.key");
    assert!(
        wait_until(WAIT, || key_path.exists()),
        "{} written",
        key_path.display()
    );
    let mode = std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "admin.key mode is 0600, got {mode:o}");
    let key = std::fs::read_to_string(&key_path)
        .unwrap()
        .trim()
        .to_owned();
    assert!(
        key.len() >= 16,
        "a strong generated key: {} chars",
        key.len()
    );

    let logs = gw.logs();
    assert!(
        logs.contains("admin.key"),
        "the log names the key file: {logs}"
    );
    assert!(
        !logs.contains(&key),
        "the log must not contain the key itself"
    );

    gw.admin_key = key.clone();
    let (status, _, body) = gw.admin("GET", "/routes", None);
    assert_eq!(status, 200, "the generated key works: {body}");
    let (status, _, _) = gw.admin_with_key("GET", "/routes", None, None);
    assert_eq!(status, 401);

    // the same key after a restart
    gw.restart();
    let again = std::fs::read_to_string(&key_path)
        .unwrap()
        .trim()
        .to_owned();
    assert_eq!(again, key, "the key is generated once");
    let (status, _, _) = gw.admin("GET", "/routes", None);
    assert_eq!(status, 200);
}

#[test]
fn env_admin_key_overrides() {
    let env_key = random_string(32);
    let gw = Gateway::start(GatewayOpts {
        admin_keys: false,
        env: vec![("PORTICO_ADMIN_KEY".into(), env_key.clone())],
        ..Default::default()
    });
    let (status, _, body) = gw.admin_with_key("GET", "/routes", None, Some(&env_key));
    assert_eq!(status, 200, "PORTICO_ADMIN_KEY is the admin key: {body}");
    let (status, _, _) = gw.admin_with_key(
        "PUT",
        "/upstreams/1",
        Some(json!({"nodes": {"127.0.0.1:1980": 1}})),
        Some(&env_key),
    );
    assert_eq!(status, 201, "it has the admin role");
}

#[test]
fn refuses_short_key_on_public_admin_listener() {
    let mut gw = Gateway::prepare(GatewayOpts {
        admin_host: "0.0.0.0".into(),
        ..Default::default()
    });
    gw.admin_key = "abcde".into();
    std::fs::write(&gw.config_path, gw.config_text()).unwrap();
    let out = run_portico(&["-c", gw.config_path.to_str().unwrap()]);
    let text = output_text(&out);
    assert!(
        !out.status.success(),
        "admin on 0.0.0.0 with a 5-char key must refuse to start: {text}"
    );

    // the same short key on loopback is allowed
    let mut gw = Gateway::prepare(GatewayOpts::default());
    gw.admin_key = "abcde".into();
    std::fs::write(&gw.config_path, gw.config_text()).unwrap();
    gw.spawn();
    gw.wait_ready().expect("a short key on loopback is fine");
}

#[test]
fn startup_logs_each_listener() {
    let gw = Gateway::start_default();
    let addrs = [
        format!("127.0.0.1:{}", gw.proxy_port),
        format!("127.0.0.1:{}", gw.admin_port),
        format!("127.0.0.1:{}", gw.metrics_port),
    ];
    let ok = wait_until(WAIT, || {
        let logs = gw.logs();
        addrs.iter().all(|a| logs.contains(a))
    });
    assert!(ok, "one log line per listener {addrs:?}:\n{}", gw.logs());
}

#[test]
fn sigterm_finishes_in_flight_requests() {
    let mut gw = Gateway::start_default();
    let slow = Backend::start_with("slow", 200, Duration::from_secs(2));
    gw.put(
        "/routes/1",
        json!({"uri": "/slow", "upstream": {"nodes": {slow.node(): 1}}}),
    );
    gw.sync();

    let addr = gw.proxy_addr();
    let inflight = std::thread::spawn(move || http::send(addr, &Request::get("/slow")));
    assert!(
        wait_until(WAIT, || slow.hits() >= 1),
        "request reached the backend"
    );
    let status = gw.terminate();
    let r = inflight
        .join()
        .unwrap()
        .expect("in-flight request completes");
    assert_eq!(r.status, 200, "in-flight request finished: {r:?}");
    assert!(status.success(), "graceful exit: {status}");
    // not accepting any more
    assert!(std::net::TcpStream::connect(addr).is_err());
}

#[test]
fn sighup_applies_log_settings_admin_keys_lua_limits_and_names_what_needs_a_restart() {
    let mut gw = Gateway::start(GatewayOpts {
        extra_yaml:
            "log:\n  level: warn\n  access:\n    path: stdout\n    format: \"before $uri\"\n".into(),
        ..Default::default()
    });
    let logs = gw.logs();
    assert!(
        !logs.contains("admin API listening"),
        "log.level: warn hides info lines at startup: {logs}"
    );
    let old_key = gw.admin_key.clone();
    // A route whose Lua needs 24 MB: fine under the default 128 MB per VM.
    let b = Backend::start("b");
    crate::lua_common::lua_route(
        &gw,
        "big",
        "/big",
        Some(&b),
        crate::lua_common::pre("access", "local s = string.rep('x', 24 * 1024 * 1024)"),
    );
    assert_eq!(gw.proxy_get("/big").status, 200);
    // The access log line is written after the response went out, and formatted then:
    // wait for it before the SIGHUP changes the format.
    assert!(
        wait_until(WAIT, || gw.logs().contains("before /big")),
        "the old format is in force before the SIGHUP: {}",
        gw.logs()
    );
    let pid = gw.pid();
    assert!(
        wait_until(WAIT, || catches_sighup(pid)),
        "the SIGHUP handler is installed"
    );

    // New admin key, log level info, and a setting that needs a restart.
    gw.admin_key = random_string(32);
    gw.opts.extra_yaml = "log:\n  level: info\n  access:\n    path: stdout\n    format: \"after $uri $status\"\nshutdown_grace_seconds: 3\n".into();
    gw.opts.lua = Some(LuaOpts {
        max_memory_mb: Some(16),
        ..Default::default()
    });
    std::fs::write(&gw.config_path, gw.config_text()).unwrap();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &gw.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());

    let new_key = gw.admin_key.clone();
    assert!(
        wait_until(WAIT, || {
            gw.admin_with_key("GET", "/routes", None, Some(&new_key)).0 == 200
        }),
        "the new admin key works after SIGHUP\n{}",
        gw.logs()
    );
    let (status, _, _) = gw.admin_with_key("GET", "/routes", None, Some(&old_key));
    assert_eq!(status, 401, "the old key no longer does");
    assert!(
        wait_until(WAIT, || gw
            .logs()
            .contains("SIGHUP: static configuration re-read")),
        "the reload is logged at info, so the new level is in force: {}",
        gw.logs()
    );
    let logs = gw.logs();
    assert!(
        logs.contains("SIGHUP: shutdown_grace_seconds changed; it takes effect after a restart"),
        "{logs}"
    );
    assert!(gw.is_running(), "SIGHUP does not stop the process");
    // The new access log format is in force.
    assert!(
        wait_until(WAIT, || {
            gw.proxy_get("/fmt");
            gw.logs().contains("after /fmt 404")
        }),
        "the access log line uses the new format: {}",
        gw.logs()
    );
    // The new Lua memory limit is in force for new requests.
    assert!(
        wait_until(WAIT, || gw.proxy_get("/big").status >= 500),
        "lua.max_memory_mb 16 refuses the 24 MB string after SIGHUP"
    );

    // A file that does not parse changes nothing.
    std::fs::write(&gw.config_path, "proxyy: 1\n").unwrap();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &gw.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    assert!(
        wait_until(WAIT, || gw.logs().contains("proxyy")),
        "the error is logged: {}",
        gw.logs()
    );
    assert!(gw.logs().contains("nothing changed"));
    let (status, _, _) = gw.admin_with_key("GET", "/routes", None, Some(&new_key));
    assert_eq!(status, 200, "keys unchanged by a bad file");
}

/// Whether process `pid` has a handler for SIGHUP (bit 0 of `SigCgt`); before that a
/// SIGHUP would end it.
fn catches_sighup(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|mask| mask & 1 == 1)
}
