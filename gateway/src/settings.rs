//! Static settings: `conf/portico.yaml`.
//!
//! These are the settings that need a restart to change (listeners, threads, where data
//! lives). Everything that changes at runtime (routes, upstreams, services, global rules)
//! is a *resource* handled by [`crate::store`]. Key names are public interface; unknown
//! keys are an error naming the key (Pingora's own YAML loader ignores them silently,
//! which hides typos).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Environment variable that overrides the admin key.
pub const ADMIN_KEY_ENV: &str = "PORTICO_ADMIN_KEY";

/// Minimum key length accepted when the admin API listens on a non-loopback address.
pub const MIN_PUBLIC_KEY_LEN: usize = 16;

/// The whole static configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub proxy: ProxySettings,
    pub admin: AdminSettings,
    pub metrics: MetricsSettings,
    /// Directory of the durable resource store and the generated admin key.
    pub data_dir: PathBuf,
    pub config_provider: ConfigProvider,
    /// APISIX standalone-style resource file, read when `config_provider` is `yaml`.
    pub yaml_config: PathBuf,
    /// Resources (same file format as `yaml_config`) imported once, through the normal
    /// apply path, when the admin provider starts on a brand-new `data_dir`.
    pub seed_config: Option<PathBuf>,
    /// Worker threads of the proxy service.
    pub threads: usize,
    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT.
    pub shutdown_grace_seconds: u64,
    pub lua: LuaSettings,
    /// Poll a lua-resty-dynacode document from a URL (optional).
    pub dynacode: Option<DynacodePollSettings>,
    /// Seal SSL private keys at rest (APISIX's `data_encryption`).
    pub data_encryption: Option<DataEncryption>,
    /// The configuration history (docs/operations.md).
    pub history: HistorySettings,
    /// The access log and the error log's format (docs/operations.md).
    pub log: crate::logging::LogSettings,
    /// The status listener (docs/operations.md).
    pub status: crate::status::StatusSettings,
    /// The `Server` header of every proxy response: a value, `true` (the default,
    /// `Portico/<version>`) or `false` (none).
    pub server_header: ServerHeader,
    /// Where `config_provider: etcd` keeps the configuration.
    pub etcd: crate::settings_etcd::EtcdSettings,
    /// Response cache zones (`proxy-cache`) and its status header.
    pub cache: crate::settings_cache::CacheSettings,
}

/// `server_header:` a value or a switch.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum ServerHeader {
    Enabled(bool),
    Value(String),
}

impl Default for ServerHeader {
    fn default() -> Self {
        ServerHeader::Enabled(true)
    }
}

impl ServerHeader {
    /// The header value to send, `None` for none; the error names the key.
    pub fn value(&self) -> Result<Option<http::HeaderValue>, String> {
        let text = match self {
            ServerHeader::Enabled(false) => return Ok(None),
            ServerHeader::Enabled(true) => crate::SERVER_NAME,
            ServerHeader::Value(v) => v.as_str(),
        };
        if text.is_empty() {
            return Ok(None);
        }
        http::HeaderValue::from_str(text)
            .map(Some)
            .map_err(|_| format!("server_header: `{text}` is not a valid header value"))
    }
}

/// `data_encryption:`: the keys SSL private keys are sealed with in the store
/// (AES-128-CBC; the first seals, all are tried to open).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataEncryption {
    pub keyring: Vec<String>,
}

/// `history:`: how many applied configuration changes are kept for
/// `/apisix/admin/configs/history` and rollback.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistorySettings {
    /// 0 keeps none.
    pub keep: usize,
}

impl Default for HistorySettings {
    fn default() -> Self {
        HistorySettings {
            keep: crate::store::DEFAULT_HISTORY_KEEP,
        }
    }
}

/// `dynacode:` in the static config: where and how often to poll the document.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DynacodePollSettings {
    pub url: String,
    /// Seconds between polls.
    #[serde(default = "default_poll_interval")]
    pub interval: u64,
    /// Up to this many seconds of random delay added to each poll.
    #[serde(default = "default_poll_jitter")]
    pub jitter: u64,
    /// Seconds a poll may take.
    #[serde(default = "default_poll_timeout")]
    pub timeout: u64,
    /// Extra request headers (e.g. `Authorization`).
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// Poll once right at startup (otherwise the first poll waits one interval).
    #[serde(default = "default_true")]
    pub poll_at_start: bool,
}

fn default_poll_interval() -> u64 {
    15
}
fn default_poll_jitter() -> u64 {
    5
}
fn default_poll_timeout() -> u64 {
    5
}
fn default_true() -> bool {
    true
}

/// Limits of the Lua runtime (one VM per proxy worker thread).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LuaSettings {
    /// Longest uninterrupted run of Lua code (a slice between yields) before it is stopped.
    pub max_slice_ms: u64,
    /// Memory cap of each VM.
    pub max_memory_mb: usize,
    /// `ngx.shared` dictionaries: name → size (`10m`, `512k`, bytes), shared by all workers.
    pub shared_dicts: std::collections::BTreeMap<String, String>,
    /// Timers (`ngx.timer.at`/`every`) waiting to run per worker VM; beyond it
    /// `ngx.timer.at` returns `nil, "too many pending timers"` (`lua_max_pending_timers`).
    pub max_pending_timers: usize,
}

impl Default for LuaSettings {
    fn default() -> Self {
        LuaSettings {
            max_slice_ms: 100,
            max_memory_mb: 128,
            shared_dicts: Default::default(),
            max_pending_timers: 1024,
        }
    }
}

impl LuaSettings {
    pub fn limits(&self) -> portico_plugins::lua::LuaLimits {
        portico_plugins::lua::LuaLimits {
            max_slice: std::time::Duration::from_millis(self.max_slice_ms),
            max_memory: self.max_memory_mb.saturating_mul(1024 * 1024),
            max_pending_timers: self.max_pending_timers,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            proxy: ProxySettings::default(),
            admin: AdminSettings::default(),
            metrics: MetricsSettings::default(),
            data_dir: PathBuf::from("data"),
            config_provider: ConfigProvider::Admin,
            yaml_config: PathBuf::from("conf/apisix.yaml"),
            seed_config: None,
            threads: 2,
            shutdown_grace_seconds: 10,
            lua: LuaSettings::default(),
            dynacode: None,
            data_encryption: None,
            history: HistorySettings::default(),
            log: Default::default(),
            status: Default::default(),
            server_header: ServerHeader::default(),
            etcd: Default::default(),
            cache: Default::default(),
        }
    }
}

/// `proxy:`: the client-facing listeners and the limits on what clients may send
/// (docs/security.md, "HTTP edge").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxySettings {
    pub listen: Vec<String>,
    /// Seconds a client has to send a whole request header (nginx's
    /// `client_header_timeout`, a total, not per read). For the first request of a
    /// connection it counts from the accept; on a kept-alive connection from the
    /// request's first byte.
    pub client_header_timeout: u64,
    /// Seconds between two reads of a request body (nginx's `client_body_timeout`,
    /// per read).
    pub client_body_timeout: u64,
    /// Most connections at once that are still sending a request header (from the accept
    /// until the first header is complete, and from the first byte of each later
    /// request); a connection beyond it is closed at once.
    pub max_header_connections: usize,
    /// Largest request header section in bytes (request line and header fields); a
    /// larger one is answered 431 and the connection closed.
    pub client_max_header_size: usize,
    /// Largest request body `ngx.req.read_body()` reads (nginx's `client_max_body_size`:
    /// `1m`, `512k`, bytes; `0` = no limit); a larger one is answered 413. Bodies Lua
    /// does not read are streamed and not bounded by it.
    #[serde(deserialize_with = "size_text")]
    pub client_max_body_size: String,
    /// TLS listeners, certificates from `/apisix/admin/ssls` (docs/tls.md).
    pub ssl: SslListenSettings,
    /// Offer HTTP/2 by ALPN on the TLS listeners (HTTP/1.1 stays available).
    pub http2: bool,
    /// Accept HTTP/2 with prior knowledge on the plain listeners. Plain HTTP/1.1 then
    /// runs in Pingora's own keep-alive loop (larger idle connections, and without the
    /// edge checks of `edge/`), so it is off by default.
    pub h2c: bool,
    /// Which loop proxies a plain HTTP/1 request without a body: Portico's own
    /// ([`RequestDriver::Portico`], the default) or `pingora-proxy`'s.
    pub request_driver: RequestDriver,
}

/// `proxy.request_driver`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestDriver {
    /// Portico's driver ([`crate::proxy::driver`]) for plain HTTP/1 requests without a
    /// body, with a path as target, while no route uses `proxy-cache` or an HTTP/2
    /// upstream; `pingora-proxy` for every other request.
    #[default]
    Portico,
    /// `pingora-proxy` for every request.
    Pingora,
}

/// `proxy.ssl:`: where TLS is terminated. Off (no listener) by default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SslListenSettings {
    pub listen: Vec<String>,
    /// The SNI to select a certificate by when the client sends none; without it such a
    /// handshake fails.
    pub fallback_sni: Option<String>,
}

/// A size written as text (`1m`) or as a number of bytes (`1048576`, `0`).
fn size_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Text(String),
        Bytes(u64),
    }
    Ok(match Size::deserialize(d)? {
        Size::Text(t) => t,
        Size::Bytes(n) => n.to_string(),
    })
}

impl ProxySettings {
    /// `client_max_body_size` in bytes (`usize::MAX` for `0`); `Err` names the setting.
    pub fn max_body_bytes(&self) -> Result<usize, String> {
        match portico_plugins::lua::parse_size(self.client_max_body_size.trim()) {
            Some(0) => Ok(usize::MAX),
            Some(n) => Ok(n),
            None => Err(format!(
                "proxy.client_max_body_size: `{}` is not a size like 1m, 512k or 8192",
                self.client_max_body_size
            )),
        }
    }
}

impl Default for ProxySettings {
    fn default() -> Self {
        ProxySettings {
            listen: vec!["0.0.0.0:9080".to_string()],
            client_header_timeout: 60,
            client_body_timeout: 60,
            max_header_connections: 4096,
            client_max_header_size: 32 * 1024,
            client_max_body_size: "1m".to_string(),
            ssl: SslListenSettings::default(),
            http2: true,
            h2c: false,
            request_driver: RequestDriver::Portico,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSettings {
    pub listen: String,
    pub keys: Vec<AdminKey>,
}

impl Default for AdminSettings {
    fn default() -> Self {
        AdminSettings {
            listen: "127.0.0.1:9180".to_string(),
            keys: Vec::new(),
        }
    }
}

/// One `X-API-KEY` value and what it may do.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AdminKey {
    pub name: String,
    pub key: String,
    #[serde(default)]
    pub role: Role,
}

/// `admin` may use every method; `viewer` only GET.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    Admin,
    Viewer,
}

pub use crate::metrics::MetricsNaming;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSettings {
    pub listen: String,
    /// The metric names and labels: Portico's own, or APISIX's prometheus plugin's.
    pub naming: MetricsNaming,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        MetricsSettings {
            listen: "127.0.0.1:9091".to_string(),
            naming: MetricsNaming::Portico,
        }
    }
}

/// Where resources come from.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ConfigProvider {
    /// The admin API, persisted in `data_dir`.
    #[default]
    Admin,
    /// A declarative file, reloaded when it changes; the admin API is read-only.
    Yaml,
    /// A shared etcd (`etcd:`), watched; the admin API writes to it (docs/cluster.md).
    Etcd,
}

/// Errors reading or checking the static settings; each names the offending key.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl Settings {
    /// Reads and parses a settings file. An empty file means all defaults.
    pub fn load(path: &Path) -> Result<Settings, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Settings::parse(&text).map_err(|message| SettingsError::Parse {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses settings text; the error names the key path (`admin.listen: ...`).
    pub fn parse(text: &str) -> Result<Settings, String> {
        if text.trim().is_empty() {
            return Ok(Settings::default());
        }
        let de = serde_yaml::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            if path == "." {
                e.inner().to_string()
            } else {
                format!("{path}: {}", e.inner())
            }
        })
    }

    /// Checks values serde cannot: addresses, thread count. Returns every problem found.
    pub fn check(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if self.proxy.listen.is_empty() {
            errors.push("proxy.listen: at least one address is required".to_string());
        }
        for (i, addr) in self.proxy.listen.iter().enumerate() {
            if addr.parse::<SocketAddr>().is_err() {
                errors.push(format!(
                    "proxy.listen[{i}]: `{addr}` is not an ip:port address"
                ));
            }
        }
        if self.proxy.client_header_timeout == 0 {
            errors.push("proxy.client_header_timeout: must be at least 1 second".to_string());
        }
        if self.proxy.client_body_timeout == 0 {
            errors.push("proxy.client_body_timeout: must be at least 1 second".to_string());
        }
        if self.proxy.max_header_connections == 0 {
            errors.push("proxy.max_header_connections: must be at least 1".to_string());
        }
        if let Err(e) = self.proxy.max_body_bytes() {
            errors.push(e);
        }
        if self.proxy.client_max_header_size < 1024 {
            errors.push("proxy.client_max_header_size: must be at least 1024 bytes".to_string());
        }
        for (i, addr) in self.proxy.ssl.listen.iter().enumerate() {
            if addr.parse::<SocketAddr>().is_err() {
                errors.push(format!(
                    "proxy.ssl.listen[{i}]: `{addr}` is not an ip:port address"
                ));
            }
        }
        if let Some(sni) = &self.proxy.ssl.fallback_sni {
            if sni.is_empty() || sni.contains(['*', ' ', '/', ':']) {
                errors.push(format!(
                    "proxy.ssl.fallback_sni: `{sni}` is not a host name"
                ));
            }
        }
        if let Some(enc) = &self.data_encryption {
            if let Err(e) = crate::store::Keyring::new(&enc.keyring) {
                errors.push(e);
            }
        }
        if self.admin.listen.parse::<SocketAddr>().is_err() {
            errors.push(format!(
                "admin.listen: `{}` is not an ip:port address",
                self.admin.listen
            ));
        }
        if self.metrics.listen.parse::<SocketAddr>().is_err() {
            errors.push(format!(
                "metrics.listen: `{}` is not an ip:port address",
                self.metrics.listen
            ));
        }
        for (i, key) in self.admin.keys.iter().enumerate() {
            if key.key.is_empty() {
                errors.push(format!("admin.keys[{i}].key: must not be empty"));
            }
            if key.name.is_empty() {
                errors.push(format!("admin.keys[{i}].name: must not be empty"));
            }
        }
        if self.threads == 0 {
            errors.push("threads: must be at least 1".to_string());
        }
        if let Some(level) = &self.log.level {
            if let Err(e) = crate::logging::filter::parse_level(level) {
                errors.push(format!("log.level: {e}"));
            }
        }
        if self.lua.max_slice_ms == 0 {
            errors.push("lua.max_slice_ms: must be at least 1".to_string());
        }
        if self.lua.max_memory_mb < 4 {
            errors.push("lua.max_memory_mb: must be at least 4".to_string());
        }
        if let Err(e) = portico_plugins::lua::SharedDicts::from_config(&self.lua.shared_dicts) {
            errors.push(e);
        }
        errors.extend(self.log.access.check());
        if let Err(e) = self.server_header.value() {
            errors.push(e);
        }
        if let Some(addr) = &self.status.listen {
            if addr.parse::<SocketAddr>().is_err() {
                errors.push(format!("status.listen: `{addr}` is not an ip:port address"));
            }
        }
        errors.extend(self.cache.check());
        if self.config_provider == ConfigProvider::Etcd {
            errors.extend(self.etcd.check());
        }
        if let Some(d) = &self.dynacode {
            if !(d.url.starts_with("http://") || d.url.starts_with("https://")) {
                errors.push(format!("dynacode.url: `{}` is not an http(s) URL", d.url));
            }
            if d.interval == 0 {
                errors.push("dynacode.interval: must be at least 1 second".to_string());
            }
            if d.timeout == 0 {
                errors.push("dynacode.timeout: must be at least 1 second".to_string());
            }
        }
        errors
    }

    /// True when the admin listener is reachable only from this host.
    pub fn admin_is_loopback(&self) -> bool {
        self.admin
            .listen
            .parse::<SocketAddr>()
            .map(|a| a.ip().is_loopback())
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let s = Settings::parse("").unwrap();
        assert_eq!(s.proxy.listen, vec!["0.0.0.0:9080"]);
        assert_eq!(s.admin.listen, "127.0.0.1:9180");
        assert_eq!(s.metrics.listen, "127.0.0.1:9091");
        assert_eq!(s.config_provider, ConfigProvider::Admin);
        assert_eq!(s.threads, 2);
        assert_eq!(s.proxy.client_header_timeout, 60);
        assert_eq!(s.proxy.client_body_timeout, 60);
        assert_eq!(s.proxy.max_header_connections, 4096);
        assert_eq!(s.proxy.client_max_header_size, 32 * 1024);
        assert!(s.check().is_empty());
    }

    #[test]
    fn proxy_limits_parse_and_are_checked() {
        let s = Settings::parse(
            "proxy:\n  client_header_timeout: 1\n  client_body_timeout: 2\n  max_header_connections: 3\n  client_max_header_size: 4096\n",
        )
        .unwrap();
        assert_eq!(s.proxy.client_header_timeout, 1);
        assert_eq!(s.proxy.client_body_timeout, 2);
        assert_eq!(s.proxy.max_header_connections, 3);
        assert_eq!(s.proxy.client_max_header_size, 4096);
        assert_eq!(s.proxy.listen, vec!["0.0.0.0:9080"]);
        let s =
            Settings::parse("proxy:\n  client_header_timeout: 0\n  client_max_header_size: 10\n")
                .unwrap();
        let errors = s.check();
        assert!(errors
            .iter()
            .any(|e| e.starts_with("proxy.client_header_timeout")));
        assert!(errors
            .iter()
            .any(|e| e.starts_with("proxy.client_max_header_size")));
        let err = Settings::parse("proxy:\n  client_header_timout: 1\n").unwrap_err();
        assert!(err.contains("client_header_timout"), "{err}");
    }

    #[test]
    fn client_max_body_size_is_a_size() {
        let s = Settings::parse("").unwrap();
        assert_eq!(s.proxy.max_body_bytes(), Ok(1024 * 1024));
        let s = Settings::parse("proxy:\n  client_max_body_size: 512k\n").unwrap();
        assert_eq!(s.proxy.max_body_bytes(), Ok(512 * 1024));
        let s = Settings::parse("proxy:\n  client_max_body_size: 0\n").unwrap();
        assert_eq!(s.proxy.max_body_bytes(), Ok(usize::MAX));
        let s = Settings::parse("proxy:\n  client_max_body_size: lots\n").unwrap();
        assert!(s
            .check()
            .iter()
            .any(|e| e.starts_with("proxy.client_max_body_size")));
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Settings::parse("proxyy:\n  listen: []\n").unwrap_err();
        assert!(err.contains("proxyy"), "{err}");
        let err = Settings::parse("admin:\n  listen: x\n  kees: []\n").unwrap_err();
        assert!(err.contains("admin") && err.contains("kees"), "{err}");
    }

    #[test]
    fn log_status_and_server_header_parse() {
        let s = Settings::parse(
            "log:\n  json: true\n  access: { path: stdout, format: \"$status $route_id\", json: true }\nstatus: { listen: \"127.0.0.1:7085\" }\nserver_header: false\n",
        )
        .unwrap();
        assert!(s.log.json && s.log.access.json);
        assert_eq!(s.log.access.path, "stdout");
        assert_eq!(s.status.listen.as_deref(), Some("127.0.0.1:7085"));
        assert_eq!(s.server_header.value().unwrap(), None);
        assert!(s.check().is_empty(), "{:?}", s.check());
        let s = Settings::parse("server_header: \"Edge/1\"\n").unwrap();
        assert_eq!(s.server_header.value().unwrap().unwrap(), "Edge/1");
        assert_eq!(
            Settings::default().server_header.value().unwrap().unwrap(),
            crate::SERVER_NAME
        );
        let s = Settings::parse("log:\n  access: { format: \"$nope\" }\n").unwrap();
        assert!(s
            .check()
            .iter()
            .any(|e| e.starts_with("log.access.format") && e.contains("nope")));
    }

    #[test]
    fn keys_and_roles_parse() {
        let s = Settings::parse(
            "admin:\n  keys:\n    - { name: a, key: k1 }\n    - { name: v, key: k2, role: viewer }\n",
        )
        .unwrap();
        assert_eq!(s.admin.keys[0].role, Role::Admin);
        assert_eq!(s.admin.keys[1].role, Role::Viewer);
    }

    #[test]
    fn check_reports_every_bad_address() {
        let s = Settings::parse(
            "proxy: { listen: [\"nope\", \"127.0.0.1:1\"] }\nadmin: { listen: \"x\" }\nthreads: 0\n",
        )
        .unwrap();
        let errors = s.check();
        assert!(errors.iter().any(|e| e.starts_with("proxy.listen[0]")));
        assert!(errors.iter().any(|e| e.starts_with("admin.listen")));
        assert!(errors.iter().any(|e| e.starts_with("threads")));
    }
}
