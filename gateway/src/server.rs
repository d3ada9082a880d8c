//! Assembles the Pingora server: the proxy, admin and metrics listeners and background
//! services, from [`Settings`].

use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::http_app::HttpServer;
use pingora::listeners::ListenerConfig;
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::admin::AdminApi;
use crate::admin_keys::{self, ResolvedKeys};
use crate::health::{HealthEvents, HealthProber};
use crate::metrics::Metrics;
use crate::metrics_service::MetricsEndpoint;
use crate::providers::yaml::{self as yaml_provider, YamlWatcher};
use crate::proxy::Gateway;
use crate::settings::{ConfigProvider, Settings};
use crate::store::{ConfigStore, StoreDeps};
use portico_healthcheck::HealthRegistry;
use portico_plugins::PluginRegistry;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Settings(String),
    #[error(transparent)]
    AdminKey(#[from] admin_keys::AdminKeyError),
    #[error("metrics: {0}")]
    Metrics(#[from] crate::metrics::MetricsError),
    #[error("data_dir store: {0}")]
    Disk(#[from] crate::store::DiskError),
    #[error("stored configuration does not load: {0}")]
    Store(#[from] crate::store::ApplyError),
    #[error(transparent)]
    Etcd(#[from] crate::providers::etcd::EtcdStartError),
    #[error("yaml_config {path}: {message}")]
    Yaml { path: String, message: String },
    #[error("{key}: cannot listen on {addr}: {source}")]
    Bind {
        key: &'static str,
        addr: String,
        source: std::io::Error,
    },
}

/// Fails startup when any configured listener cannot bind (address in use, permission),
/// as nginx does, before any service starts.
///
/// Pingora binds each service's listeners when the service starts and panics in that
/// service's thread when it cannot; the other services kept running, so a busy admin
/// port left a process that proxied without an admin API. Binding every address here
/// first (all at once, so two keys naming the same address also fail) and releasing
/// them just before Pingora binds turns that into a clean error naming the key and the
/// address. The window between this check and Pingora's bind is a few milliseconds; a
/// port taken in between still makes Pingora panic. Skipped for a graceful upgrade,
/// where the listening sockets come from the running instance.
fn check_listeners(settings: &Settings) -> Result<(), StartError> {
    let mut addrs: Vec<(&'static str, &str)> = settings
        .proxy
        .listen
        .iter()
        .map(|a| ("proxy.listen", a.as_str()))
        .chain(
            settings
                .proxy
                .ssl
                .listen
                .iter()
                .map(|a| ("proxy.ssl.listen", a.as_str())),
        )
        .collect();
    addrs.push(("admin.listen", settings.admin.listen.as_str()));
    addrs.push(("metrics.listen", settings.metrics.listen.as_str()));
    if let Some(status) = &settings.status.listen {
        addrs.push(("status.listen", status.as_str()));
    }
    let mut held = Vec::with_capacity(addrs.len());
    for (key, addr) in addrs {
        match std::net::TcpListener::bind(addr) {
            Ok(l) => held.push(l),
            Err(source) => {
                return Err(StartError::Bind {
                    key,
                    addr: addr.to_string(),
                    source,
                })
            }
        }
    }
    Ok(())
}

/// The resource store, and what its provider runs beside it.
struct OpenedStore {
    store: Arc<ConfigStore>,
    /// The yaml provider's file as read at startup.
    yaml_text: Option<String>,
    /// The etcd provider's watcher and connection status.
    etcd: Option<(
        crate::providers::etcd::watcher::EtcdWatcher,
        Arc<crate::providers::etcd::EtcdStatus>,
    )>,
}

/// Builds the resource store for the configured provider.
/// `upgrade`: the old process of a binary upgrade may still hold the store; it is
/// waited for ([`crate::handover`]).
fn open_store(
    settings: &Settings,
    deps: StoreDeps,
    upgrade: bool,
) -> Result<OpenedStore, StartError> {
    let (store, yaml_text) = match settings.config_provider {
        ConfigProvider::Etcd => {
            let keyring = settings
                .data_encryption
                .as_ref()
                .map(|e| crate::store::Keyring::new(&e.keyring))
                .transpose()
                .map_err(StartError::Settings)?;
            let started =
                crate::providers::etcd::start(&settings.etcd, &settings.data_dir, keyring, deps)?;
            started.store.set_history_keep(settings.history.keep);
            return Ok(OpenedStore {
                store: started.store,
                yaml_text: None,
                etcd: Some((started.watcher, started.status)),
            });
        }
        ConfigProvider::Admin => {
            let disk = crate::handover::open_disk_store(&settings.data_dir, upgrade)?;
            restrict_store_file(&settings.data_dir);
            let keyring = settings
                .data_encryption
                .as_ref()
                .map(|e| crate::store::Keyring::new(&e.keyring))
                .transpose()
                .map_err(StartError::Settings)?;
            let store = match keyring {
                Some(ring) => {
                    ConfigStore::open(crate::store::SealedBackend::new(disk, ring), deps)?
                }
                None => ConfigStore::open(disk, deps)?,
            };
            store.set_history_keep(settings.history.keep);
            if let Some(seed) = &settings.seed_config {
                if store.revision() == 0 {
                    let items = yaml_provider::load(seed).map_err(|e| StartError::Yaml {
                        path: seed.display().to_string(),
                        message: crate::config::describe(&e),
                    })?;
                    let applied = store.apply(
                        crate::store::Change::ReplaceAll(items),
                        crate::store::ApplySource::Startup,
                    )?;
                    tracing::info!(
                        "new data_dir: imported seed resources from {} (version {})",
                        seed.display(),
                        applied.version
                    );
                }
            }
            (Arc::new(store), None)
        }
        ConfigProvider::Yaml => {
            let path = &settings.yaml_config;
            let yaml_err = |message: String| StartError::Yaml {
                path: path.display().to_string(),
                message,
            };
            let text = std::fs::read_to_string(path).map_err(|e| yaml_err(e.to_string()))?;
            let items =
                yaml_provider::parse(&text).map_err(|e| yaml_err(crate::config::describe(&e)))?;
            let store = ConfigStore::declarative(items, deps)?;
            store.set_history_keep(settings.history.keep);
            (Arc::new(store), Some(text))
        }
    };
    Ok(OpenedStore {
        store,
        yaml_text,
        etcd: None,
    })
}

/// The store holds private keys (sealed or not): owner-only access, like `admin.key`.
fn restrict_store_file(data_dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let path = data_dir.join("store.redb");
    if let Err(e) = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)) {
        tracing::warn!("cannot make {} owner-only: {e}", path.display());
    }
}

/// SIGTERM and SIGINT both drain gracefully (Pingora's default makes SIGINT a fast
/// exit); SIGQUIT keeps Pingora's graceful-upgrade meaning.
struct GracefulSignals {
    in_flight: crate::drain::InFlight,
    grace: std::time::Duration,
    /// `/status/ready` answers 503 from the signal on.
    readiness: Arc<crate::status::Readiness>,
}

#[async_trait]
impl ShutdownSignalWatch for GracefulSignals {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int), Ok(mut quit)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
        ) else {
            tracing::error!("cannot install signal handlers; waiting forever");
            return std::future::pending().await;
        };
        let signal = tokio::select! {
            _ = term.recv() => ShutdownSignal::GracefulTerminate,
            _ = int.recv() => ShutdownSignal::GracefulTerminate,
            _ = quit.recv() => ShutdownSignal::GracefulUpgrade,
        };
        self.readiness.mark_draining();
        // Responses say `Connection: close` from now on (crate::drain).
        crate::drain::begin();
        // Pending Lua timers run now with `premature` = true (nginx's worker exit).
        portico_plugins::lua::begin_shutdown();
        // Pingora hands the sockets over on SIGQUIT and keeps accepting for 5 s so the new
        // process can start; only then does this one stop accepting.
        let start_after = match signal {
            ShutdownSignal::GracefulUpgrade => std::time::Duration::from_secs(6),
            _ => std::time::Duration::ZERO,
        };
        tracing::info!(
            in_flight = self.in_flight.current(),
            "shutting down: no new connections; finishing requests in flight"
        );
        self.in_flight.exit_when_drained(self.grace, start_after);
        signal
    }
}

/// Seconds between two log lines about the same unreachable upstream node.
const UPSTREAM_ERROR_LOG_INTERVAL_SECS: u64 = 10;

/// Builds every service and runs until a shutdown signal; returns when drained.
/// `upgrade`: take over the listening sockets of a running instance (Pingora's graceful
/// upgrade through `upgrade_sock`).
/// `conf`: the static config file, re-read on `SIGHUP` ([`crate::reload`]).
pub fn run(
    settings: Settings,
    upgrade: bool,
    conf_file: &std::path::Path,
) -> Result<(), StartError> {
    let errors = settings.check();
    if !errors.is_empty() {
        return Err(StartError::Settings(errors.join("; ")));
    }
    if !upgrade {
        check_listeners(&settings)?;
    }
    // Before the store opens, so a slow start answers 503 "starting".
    let readiness = Arc::new(crate::status::Readiness::default());
    if let Some(addr) = &settings.status.listen {
        crate::status::start_listener(addr, Arc::clone(&readiness), upgrade).map_err(|source| {
            StartError::Bind {
                key: "status.listen",
                addr: addr.clone(),
                source,
            }
        })?;
        tracing::info!("status listening on http://{addr}/status");
    }
    let ResolvedKeys { keys, generated } = admin_keys::resolve(&settings, admin_keys::env_key())?;
    if let Some(path) = &generated {
        tracing::warn!(
            "no admin key configured: using the generated key stored in {}",
            path.display()
        );
    }
    let metrics = Metrics::with_naming(settings.metrics.naming)?;
    let health = HealthRegistry::new(Arc::new(HealthEvents {
        metrics: Arc::clone(&metrics),
    }));
    let dicts = Arc::new(
        portico_plugins::lua::SharedDicts::from_config(&settings.lua.shared_dicts)
            .map_err(StartError::Settings)?,
    );
    let plugins =
        PluginRegistry::new(settings.lua.limits(), &dicts).map_err(StartError::Settings)?;
    // Before the store: applying the stored routes resolves their cache zones.
    crate::cache::zone::install(
        crate::cache::zone::Zones::open(&settings.cache, &settings.data_dir, &metrics.cache, true)
            .map_err(StartError::Settings)?,
    );
    let deps = StoreDeps {
        plugins: Arc::new(plugins),
        metrics: Arc::clone(&metrics),
        health: Arc::clone(&health),
    };
    let server_header = settings
        .server_header
        .value()
        .map_err(StartError::Settings)?;
    let access_log = Arc::new(
        crate::logging::AccessLog::start(&settings.log.access, metrics.access_log_dropped())
            .map_err(StartError::Settings)?,
    );
    access_log
        .reopen_on_usr1()
        .map_err(|e| StartError::Settings(format!("cannot watch SIGUSR1: {e}")))?;

    let data_dir = settings.data_dir.display().to_string();
    let conf = ServerConf {
        threads: settings.threads,
        // One Lua VM per worker thread: a connection stays on the thread it arrived on.
        work_stealing: false,
        grace_period_seconds: Some(settings.shutdown_grace_seconds),
        graceful_shutdown_timeout_seconds: Some(5),
        pid_file: format!("{data_dir}/portico.pid"),
        upgrade_sock: format!("{data_dir}/portico_upgrade.sock"),
        ..ServerConf::default()
    };
    let opt = pingora::server::configuration::Opt {
        upgrade,
        ..Default::default()
    };
    if upgrade {
        // The upgrade socket lives in data_dir, which the yaml provider does not create.
        crate::data_dir::create_private(&settings.data_dir).map_err(|e| {
            StartError::Settings(format!(
                "data_dir {}: cannot create it for the upgrade socket: {e}",
                settings.data_dir.display()
            ))
        })?;
    }
    let mut server = Server::new_with_opt_and_conf(Some(opt), conf);
    let phases = server.watch_execution_phase();
    // An upgrade takes the listening sockets here (waiting for the old process's
    // SIGQUIT), before the store, which the old process releases only once it has sent
    // them (crate::handover).
    server.bootstrap();
    let OpenedStore {
        store,
        yaml_text,
        etcd,
    } = open_store(&settings, deps, upgrade)?;
    crate::handover::release_store_on_handover(phases, Arc::clone(&store));
    readiness.set_store(Arc::clone(&store));

    let in_flight = crate::drain::InFlight::default();
    let lua_vms = Arc::new(portico_plugins::lua::WorkerVms::new(
        settings.lua.limits(),
        settings.threads,
        dicts,
    ));
    let gateway = Gateway {
        store: Arc::clone(&store),
        metrics: Arc::clone(&metrics),
        in_flight: in_flight.clone(),
        health: Arc::clone(store.health()),
        lua: Arc::clone(&lua_vms),
        access_log: Arc::clone(&access_log),
        server_header: server_header.clone(),
        upstream_errors: Arc::new(crate::logging::throttle::Throttle::new(
            std::time::Duration::from_secs(UPSTREAM_ERROR_LOG_INTERVAL_SECS),
        )),
        // Checked with the settings at startup.
        max_read_body: settings.proxy.max_body_bytes().unwrap_or(1024 * 1024),
    };
    let driver = (settings.proxy.request_driver == crate::settings::RequestDriver::Portico)
        .then(|| crate::proxy::driver::H1Driver::new(gateway.clone(), &server.configuration));
    let mut proxy_app = pingora::proxy::http_proxy(&server.configuration, gateway);
    if settings.proxy.h2c {
        let mut options = pingora::apps::HttpServerOptions::default();
        options.h2c = true;
        proxy_app.server_options = Some(options);
    }
    let mut idle_light = crate::keepalive::IdleLight::new(
        proxy_app,
        crate::edge::EdgeLimits::from_settings(&settings.proxy).with_server_header(server_header),
    )
    .with_reply_observer(crate::logging::edge_replies::observer(
        Arc::clone(&metrics),
        Arc::clone(&access_log),
    ));
    if let Some(driver) = driver {
        idle_light = idle_light.with_driver(driver);
    }
    let mut proxy = Service::new("portico proxy".to_string(), idle_light);
    for addr in &settings.proxy.listen {
        proxy.add_listener(proxy_listener(addr));
        tracing::info!("proxy listening on http://{addr}");
    }
    for addr in &settings.proxy.ssl.listen {
        proxy.add_tls_with_settings(
            addr,
            None,
            crate::tls_accept::tls_settings(&store, &settings.proxy),
        );
        tracing::info!("proxy listening on https://{addr}");
    }

    let live_keys: crate::reload::LiveKeys = Arc::new(arc_swap::ArcSwap::from_pointee(keys));
    let mut reloader = background_service(
        "portico reload (SIGHUP)",
        crate::reload::Reloader {
            conf: conf_file.to_path_buf(),
            running: parking_lot::Mutex::new(settings.clone()),
            keys: Arc::clone(&live_keys),
            store: Arc::clone(&store),
            lua: lua_vms,
            access_log,
        },
    );
    reloader.threads = Some(1);
    let mut admin = Service::new(
        "portico admin".to_string(),
        HttpServer::new_app(AdminApi {
            store: Arc::clone(&store),
            keys: Arc::clone(&live_keys),
            standalone: Default::default(),
        }),
    );
    admin.threads = Some(1);
    admin.add_tcp(&settings.admin.listen);
    tracing::info!(
        "admin API listening on http://{}/apisix/admin",
        settings.admin.listen
    );

    let mut metrics_svc = Service::new(
        "portico metrics".to_string(),
        HttpServer::new_app(MetricsEndpoint {
            metrics: Arc::clone(&metrics),
        }),
    );
    metrics_svc.threads = Some(1);
    metrics_svc.add_tcp(&settings.metrics.listen);
    tracing::info!(
        "metrics listening on http://{}/metrics",
        settings.metrics.listen
    );

    let mut prober = background_service("portico health checks", HealthProber { registry: health });
    prober.threads = Some(1);

    server.add_service(proxy);
    server.add_service(admin);
    server.add_service(metrics_svc);
    server.add_service(prober);
    server.add_service(reloader);
    if let Some(poll) = settings.dynacode.clone() {
        tracing::info!("dynacode: polling {} every {}s", poll.url, poll.interval);
        let mut poller = background_service(
            "portico dynacode poller",
            crate::providers::DynacodePoller {
                settings: poll,
                store: Arc::clone(&store),
                metrics: Arc::clone(&metrics),
            },
        );
        poller.threads = Some(1);
        server.add_service(poller);
    }
    if let Some((watcher, status)) = etcd {
        readiness.set_etcd(status);
        let mut watcher = background_service("portico etcd watcher", watcher);
        watcher.threads = Some(1);
        server.add_service(watcher);
        tracing::info!(
            "config_provider etcd: watching {} under {}",
            settings.etcd.endpoints.join(", "),
            settings.etcd.prefix
        );
    }
    if let Some(text) = yaml_text {
        let mut watcher = background_service(
            "portico yaml watcher",
            YamlWatcher {
                path: settings.yaml_config.clone(),
                store: Arc::clone(&store),
                initial: Some(text),
            },
        );
        watcher.threads = Some(1);
        server.add_service(watcher);
        tracing::info!(
            "config_provider yaml: watching {}",
            settings.yaml_config.display()
        );
    }
    tracing::info!(
        version = store.snapshot().version,
        routes = store.snapshot().routes.len(),
        "portico {} started",
        crate::VERSION
    );
    if let Some(first) = settings.proxy.listen.first() {
        crate::status::mark_ready_when_listening(first, Arc::clone(&readiness));
    }
    if upgrade {
        crate::handover::notify_systemd_main_pid();
    }
    server.run(RunArgs {
        shutdown_signal: Box::new(GracefulSignals {
            in_flight,
            grace: std::time::Duration::from_secs(settings.shutdown_grace_seconds),
            readiness,
        }),
    });
    Ok(())
}

/// `portico -t`: checks settings and the declarative resources they name; returns every
/// error found, each with its path.
pub fn check(settings: &Settings) -> Vec<String> {
    let mut errors = settings.check();
    let env_key = admin_keys::env_key();
    if let Some(name) = admin_keys::short_public_key(settings, env_key.as_deref()) {
        errors.push(format!(
            "admin.keys[name={name}].key: shorter than {} characters while admin.listen {} is not loopback",
            crate::settings::MIN_PUBLIC_KEY_LEN,
            settings.admin.listen
        ));
    }
    let declarative = match settings.config_provider {
        ConfigProvider::Yaml => Some(&settings.yaml_config),
        ConfigProvider::Admin => settings.seed_config.as_ref(),
        ConfigProvider::Etcd => None,
    };
    if let Some(file) = declarative {
        let path = file.display().to_string();
        match yaml_provider::load(file) {
            Err(errs) => errors.extend(errs.iter().map(|e| format!("{path}: {e}"))),
            Ok(items) => {
                let checked = Metrics::new().map_err(|e| e.to_string()).and_then(|m| {
                    // Zone names only: `-t` does not read or create the disk zones.
                    crate::cache::zone::install(crate::cache::zone::Zones::open(
                        &settings.cache,
                        &settings.data_dir,
                        &m.cache,
                        false,
                    )?);
                    let dicts =
                        portico_plugins::lua::SharedDicts::from_config(&settings.lua.shared_dicts)
                            .unwrap_or_default();
                    let plugins = PluginRegistry::new(settings.lua.limits(), &dicts)?;
                    let deps = StoreDeps {
                        plugins: Arc::new(plugins),
                        metrics: m,
                        health: HealthRegistry::new(Arc::new(portico_healthcheck::NoopObserver)),
                    };
                    Ok(crate::store::every_error(items, &deps))
                });
                match checked {
                    Ok(errs) => errors.extend(errs.iter().map(|e| format!("{path}: {e}"))),
                    Err(e) => errors.push(format!("{path}: {e}")),
                }
            }
        }
    }
    errors
}

/// A proxy listener without Pingora's L4 read buffer.
///
/// Pingora puts a 64 KiB read buffer in front of every accepted connection and
/// keeps it for the connection's life: an idle keep-alive connection cost about
/// 43 KB of RSS (benchmark S9). HTTP/1 parsing reads into its own per-request
/// header buffer anyway, so the L4 buffer saves no syscall for plain HTTP.
fn proxy_listener(addr: &str) -> ListenerConfig {
    ListenerConfig::tcp(addr).l4_buffer(L4BufferSettings::default().read(0))
}
