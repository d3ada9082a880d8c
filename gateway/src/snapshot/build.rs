//! Compiles a [`ResourceSet`] into a [`Snapshot`]: all the work a config change costs is
//! done here, once, never on the request path.

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use crate::balancer::{BalancerNode, PickerKind, PriorityPicker};
use crate::config::{FieldError, ResourceSet, UpstreamSpec, UpstreamType};
use crate::hash_key::HashKey;
use crate::metrics::Metrics;
use crate::router::{RouteMatchSpec, Router};

use portico_healthcheck::HealthRegistry;
use portico_plugins::{PluginChain, PluginInstance, PluginRegistry};

use super::{
    NodeRuntime, RouteRuntime, Snapshot, Timeouts, UpstreamHealth, UpstreamKey, UpstreamRuntime,
};

/// Every problem that stopped a build, with resource-qualified paths.
#[derive(Debug)]
pub struct BuildError(pub Vec<FieldError>);

/// What a node whose host name does not resolve does to a build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsFailure {
    /// Reject the change (admin writes, reloads): the user sees the error at once.
    Reject,
    /// Leave the node out and log it (startup): a DNS hiccup must not keep the gateway
    /// from starting with everything else it has stored.
    SkipNode,
}

/// Builds the snapshot for `set`. `prev` lends runtimes that did not change (their picker
/// state and resolved addresses carry over) and route metric handles.
/// What a build needs besides the resources.
pub struct BuildContext<'a> {
    pub metrics: &'a Metrics,
    pub plugins: &'a PluginRegistry,
    /// Node health lives here, outside any snapshot.
    pub health: &'a HealthRegistry,
    pub dns: DnsFailure,
}

pub fn build(
    set: &ResourceSet,
    prev: Option<&Snapshot>,
    version: u64,
    cx: &BuildContext<'_>,
) -> Result<Snapshot, BuildError> {
    let metrics = cx.metrics;
    let mut errors = Vec::new();
    let mut upstreams: BTreeMap<String, Arc<UpstreamRuntime>> = BTreeMap::new();

    let mut ring_points: u64 = 0;
    let mut compile = |upstreams: &mut BTreeMap<String, Arc<UpstreamRuntime>>,
                       key: UpstreamKey,
                       spec: &Arc<UpstreamSpec>,
                       path: String,
                       errors: &mut Vec<FieldError>|
     -> Option<Arc<UpstreamRuntime>> {
        if let Err(e) = count_ring_points(spec, &mut ring_points) {
            errors.push(e.under(&path));
            return None;
        }
        let identity = key.label();
        let reused = prev
            .and_then(|p| p.upstreams.get(&identity))
            .filter(|old| Arc::ptr_eq(&old.spec, spec) || *old.spec == **spec)
            // A client certificate by SSL id follows that SSL: rebuilt each time.
            .filter(|_| spec.tls.as_ref().is_none_or(|t| t.client_cert_id.is_none()))
            .cloned();
        let runtime = match reused {
            Some(r) => Some(r),
            None => match compile_upstream(key, spec, set, cx) {
                Ok(r) => Some(Arc::new(r)),
                Err(errs) => {
                    errors.extend(errs.into_iter().map(|e| e.under(&path)));
                    None
                }
            },
        };
        if let Some(r) = &runtime {
            upstreams.insert(identity, Arc::clone(r));
        }
        runtime
    };

    for (id, entry) in &set.upstreams {
        compile(
            &mut upstreams,
            UpstreamKey::Upstream(id.clone()),
            &entry.spec,
            format!("upstreams[id={id}]"),
            &mut errors,
        );
    }
    let mut service_upstreams: HashMap<&str, Option<Arc<UpstreamRuntime>>> = HashMap::new();
    for (id, entry) in &set.services {
        let up = match (&entry.spec.upstream, &entry.spec.upstream_id) {
            (Some(inline), _) => compile(
                &mut upstreams,
                UpstreamKey::Service(id.clone()),
                &Arc::from(inline.clone()),
                format!("services[id={id}].upstream"),
                &mut errors,
            ),
            (None, Some(uid)) => upstreams.get(&uid.0).cloned(),
            (None, None) => None,
        };
        service_upstreams.insert(id.as_str(), up);
    }

    let tls = Arc::new(super::tls::TlsIndex::build(
        set,
        prev.map(|p| p.tls.as_ref()),
        &mut errors,
    ));
    // Plugin modules and serverless code are loaded by the validator below; what they
    // `require` resolves to this configuration's library modules.
    let lua_libraries = set.libraries();
    cx.plugins.set_lua_libraries(&lua_libraries);
    let lua_modules =
        super::modules::build_modules(set, prev.map(|p| &p.lua_modules), cx.plugins, &mut errors);
    let mut instances = PluginInstances {
        modules: &lua_modules,
        registry: cx.plugins,
        metadata: &set.plugin_metadata,
        prev: prev.map(|p| &p.plugin_instances),
        built: HashMap::new(),
        groups: HashMap::new(),
    };
    let mut global = Vec::new();
    for (id, entry) in &set.global_rules {
        global.extend(instances.build(
            &entry.spec.plugins,
            &format!("global_rules[id={id}].plugins"),
            &mut errors,
        ));
    }
    let global_chain = Arc::new(PluginChain::build(&global, &[]));
    let consumer_index = super::consumers::index(set, &mut errors);
    let mut consumer_plugins = Vec::new();
    for (name, entry) in &set.consumers {
        // The group's plugins, then the consumer's own over them (APISIX).
        let group = entry
            .spec
            .group_id
            .as_ref()
            .and_then(|g| set.consumer_groups.get(&g.0));
        let mut own = super::consumers::own_plugin_confs(group.map(|g| &g.spec.plugins));
        own.extend(super::consumers::own_plugin_confs(
            entry.spec.plugins.as_ref(),
        ));
        if !own.is_empty() {
            let built =
                instances.build(&own, &format!("consumers[id={name}].plugins"), &mut errors);
            consumer_plugins.push((Arc::<str>::from(name.as_str()), built));
        }
    }

    let prev_routes: HashMap<&str, &Arc<RouteRuntime>> = prev
        .map(|p| p.routes.iter().map(|r| (r.id.as_str(), r)).collect())
        .unwrap_or_default();
    let mut routes = Vec::new();
    let mut match_specs = Vec::new();
    let mut route_specs = Vec::new();
    for (id, entry) in &set.routes {
        let spec = &entry.spec;
        if spec.status == 0 {
            continue;
        }
        let service = spec
            .service_id
            .as_ref()
            .and_then(|s| set.services.get(&s.0));
        let upstream = match (&spec.upstream, &spec.upstream_id) {
            (Some(inline), _) => compile(
                &mut upstreams,
                UpstreamKey::Route(id.clone()),
                &Arc::from(inline.clone()),
                format!("routes[id={id}].upstream"),
                &mut errors,
            ),
            (None, Some(uid)) => upstreams.get(&uid.0).cloned(),
            (None, None) => spec
                .service_id
                .as_ref()
                .and_then(|s| service_upstreams.get(s.0.as_str()).cloned().flatten()),
        };
        let mut hosts = spec.all_hosts();
        if hosts.is_empty() {
            if let Some(s) = service {
                hosts = s.spec.hosts.clone().unwrap_or_default();
            }
        }
        // A route's own plugin overrides its plugin config's, which overrides its
        // service's plugin of the same name (APISIX).
        let mut plugin_confs = service
            .and_then(|s| s.spec.plugins.clone())
            .unwrap_or_default();
        let plugin_config = spec
            .plugin_config_id
            .as_ref()
            .and_then(|p| set.plugin_configs.get(&p.0));
        for (name, conf) in plugin_config.into_iter().flat_map(|p| &p.spec.plugins) {
            plugin_confs.insert(name.clone(), conf.clone());
        }
        for (name, conf) in spec.plugins.iter().flatten() {
            plugin_confs.insert(name.clone(), conf.clone());
        }
        let local = instances.build(
            &plugin_confs,
            &format!("routes[id={id}].plugins"),
            &mut errors,
        );
        let cache = match plugin_confs.get("proxy-cache") {
            Some(conf) => crate::cache::route::resolve(conf, &format!("routes[id={id}].plugins"))
                .unwrap_or_else(|e| {
                    errors.push(e);
                    None
                }),
            None => None,
        };
        let consumer_chains = super::consumers::route_chains(&global, &local, &consumer_plugins);
        let chain = if global.is_empty() && local.is_empty() {
            Arc::clone(&global_chain)
        } else {
            Arc::new(PluginChain::build(&global, &local))
        };
        let upstream_label = upstream.as_ref().map(|u| u.id.as_str()).unwrap_or("");
        let route_metrics = match prev_routes.get(id.as_str()) {
            Some(old)
                if old.upstream.as_ref().map(|u| u.id.as_str()).unwrap_or("") == upstream_label =>
            {
                Arc::clone(&old.metrics)
            }
            _ => metrics.route(id, upstream_label),
        };
        // APISIX's `matched_uri`/`matched_host` labels: the route's pattern, bounded.
        let matched_uri = spec.all_uris().into_iter().next().unwrap_or_default();
        let matched_host = hosts.first().cloned().unwrap_or_default();
        route_specs.push(spec.as_ref());
        match_specs.push(RouteMatchSpec {
            uris: spec.all_uris(),
            hosts,
            methods: spec.methods.clone().unwrap_or_default(),
            priority: spec.priority,
            vars: spec.vars.clone(),
            remote_addrs: spec.all_remote_addrs(),
        });
        routes.push(Arc::new(RouteRuntime {
            id: id.clone(),
            service_id: spec.service_id.as_ref().map(|s| s.0.clone()),
            upstream,
            timeouts: spec.timeout.as_ref().map(Timeouts::from_spec),
            websocket: spec
                .enable_websocket
                .or_else(|| service.and_then(|s| s.spec.enable_websocket))
                .unwrap_or(false),
            metrics: route_metrics,
            matched_uri,
            matched_host,
            chain,
            consumer_chains,
            cache,
        }));
    }

    let router = match Router::build(&match_specs) {
        Ok(r) => Some(r),
        Err(router_errors) => {
            for e in router_errors {
                let id = routes.get(e.route).map(|r| r.id.as_str()).unwrap_or("?");
                let path = route_specs
                    .get(e.route)
                    .map(|spec| user_path(spec, &e.path))
                    .unwrap_or(e.path);
                errors.push(FieldError::new(
                    format!("routes[id={id}].{path}"),
                    e.message,
                ));
            }
            None
        }
    };
    let plugin_instances = instances.built;
    match router {
        Some(router) if errors.is_empty() => Ok(Snapshot {
            version,
            own_driver_fits: super::own_driver_fits(&routes),
            router,
            routes,
            upstreams,
            global_chain,
            dynacode: dynacode_runtime(set, prev),
            lua_libraries,
            lua_modules,
            plugin_instances,
            tls,
            consumers: consumer_index,
        }),
        _ => Err(BuildError(errors)),
    }
}

/// The dynacode runtime: the previous one when the document did not change (its
/// snippets keep their compiled code), else compiled now.
fn dynacode_runtime(
    set: &ResourceSet,
    prev: Option<&Snapshot>,
) -> Option<Arc<crate::snapshot::dynacode::DynacodeRuntime>> {
    let entry = set.dynacode.as_ref()?;
    if let Some(old) = prev.and_then(|p| p.dynacode.as_ref()) {
        if old.source_is(&entry.value) {
            return Some(Arc::clone(old));
        }
    }
    Some(Arc::new(crate::snapshot::dynacode::DynacodeRuntime::build(
        &entry.spec,
        Arc::clone(&entry.value),
    )))
}

/// Builds plugin instances, reusing the previous snapshot's for an unchanged (place,
/// name, configuration): their Lua is compiled and validated once, not per apply, and
/// keeps its closures (per worker) across swaps. Two routes with the same code get
/// separate closures, as in APISIX.
struct PluginInstances<'a> {
    modules: &'a HashMap<String, Arc<portico_plugins::LuaModule>>,
    registry: &'a PluginRegistry,
    /// Plugin metadata by plugin name, resolved into each instance of the plugin.
    metadata: &'a BTreeMap<String, crate::config::Entry<crate::config::PluginMetadataSpec>>,
    prev: Option<&'a HashMap<String, Arc<PluginInstance>>>,
    built: HashMap<String, Arc<PluginInstance>>,
    /// (plugin, group) -> the first configuration and place seen for it.
    groups: HashMap<(String, String), (serde_json::Value, String)>,
}

impl PluginInstances<'_> {
    fn build(
        &mut self,
        confs: &serde_json::Map<String, serde_json::Value>,
        path: &str,
        errors: &mut Vec<FieldError>,
    ) -> Vec<Arc<PluginInstance>> {
        let mut out = Vec::new();
        for (name, conf) in confs {
            let owner = format!("{path}.{name}");
            if let Some(group) = self.registry.group_of(name, conf) {
                match self.groups.get(&(name.clone(), group.clone())) {
                    Some((first, at)) if first != conf => {
                        errors.push(FieldError::new(
                            format!("{owner}.group"),
                            format!(
                                "group `{group}` is also configured at {at} with a different \
                                 configuration; a group's configurations must be identical"
                            ),
                        ));
                        continue;
                    }
                    Some(_) => {}
                    None => {
                        self.groups
                            .insert((name.clone(), group), (conf.clone(), owner.clone()));
                    }
                }
            }
            let module = self.modules.get(name.as_str());
            // A module's instances depend on its code too: replacing the code rebuilds
            // every use at this swap.
            // Likewise its metadata: a metadata change (a new revision) rebuilds every
            // instance of that plugin.
            let metadata = self.metadata.get(name.as_str());
            let key = match (module, metadata) {
                (Some(m), _) => format!("{owner}\u{0}{conf}\u{0}{}", m.compiled.id),
                (None, Some(md)) => format!("{owner}\u{0}{conf}\u{0}md{}", md.modified_index),
                (None, None) => format!("{owner}\u{0}{conf}"),
            };
            let found = self
                .built
                .get(&key)
                .or_else(|| self.prev.and_then(|p| p.get(&key)))
                .cloned();
            let instance = match found {
                Some(i) => i,
                None => match self.registry.resolve(
                    name,
                    conf,
                    &owner,
                    self.modules,
                    metadata.map(|m| &m.spec.metadata),
                ) {
                    Ok(Some(i)) => Arc::new(i),
                    Ok(None) => {
                        // New writes naming an unknown plugin are refused earlier; this is
                        // a module deleted with `?force=true`: the use is skipped.
                        tracing::warn!("{owner}: plugin `{name}` no longer exists; skipped");
                        continue;
                    }
                    Err(errs) => {
                        errors.extend(errs.into_iter().map(|(p, m)| FieldError::new(p, m)));
                        continue;
                    }
                },
            };
            self.built.insert(key, Arc::clone(&instance));
            out.push(instance);
        }
        out
    }
}

/// The router sees `uri` + `uris` merged (likewise hosts, remote addresses); name the
/// field the user actually wrote.
fn user_path(spec: &crate::config::RouteSpec, path: &str) -> String {
    for (single, plural, used_single) in [
        ("uri", "uris", spec.uri.is_some()),
        ("host", "hosts", spec.host.is_some()),
        ("remote_addr", "remote_addrs", spec.remote_addr.is_some()),
    ] {
        if let Some(rest) = path.strip_prefix(&format!("{plural}[0]")) {
            if used_single {
                return format!("{single}{rest}");
            }
        }
    }
    path.to_string()
}

/// Adds the ring points a chash upstream will hold to `total`; an error once the
/// configuration's rings would exceed [`MAX_TOTAL_RING_POINTS`], before any is built.
fn count_ring_points(spec: &UpstreamSpec, total: &mut u64) -> Result<(), FieldError> {
    use crate::config::limits::MAX_TOTAL_RING_POINTS;
    if spec.kind != UpstreamType::Chash {
        return Ok(());
    }
    let Ok(nodes) = spec.nodes.normalise(spec.scheme) else {
        return Ok(()); // reported by the upstream's own checks
    };
    *total += crate::balancer::chash::ring_points(nodes.iter().map(|n| n.weight));
    if *total > MAX_TOTAL_RING_POINTS {
        return Err(FieldError::new(
            "nodes",
            format!(
                "the configuration's chash rings would hold more than {MAX_TOTAL_RING_POINTS} points"
            ),
        ));
    }
    Ok(())
}

/// Compiles one upstream: resolves node addresses and builds its picker.
pub fn compile_upstream(
    key: UpstreamKey,
    spec: &Arc<UpstreamSpec>,
    set: &ResourceSet,
    cx: &BuildContext<'_>,
) -> Result<UpstreamRuntime, Vec<FieldError>> {
    let label = key.label();
    let identity = label.as_str();
    let addrs = spec.nodes.normalise(spec.scheme)?;
    let mut errors = Vec::new();
    let mut nodes = Vec::with_capacity(addrs.len());
    for n in &addrs {
        match resolve(&n.host, n.port) {
            Ok(addr) => {
                let default_port = n.port == spec.scheme.default_port();
                let host_header = if default_port {
                    n.host.clone()
                } else if n.host.contains(':') {
                    format!("[{}]:{}", n.host, n.port)
                } else {
                    format!("{}:{}", n.host, n.port)
                };
                nodes.push(NodeRuntime {
                    addr,
                    addr_text: addr.to_string(),
                    label: format!("{}:{}", n.host, n.port),
                    host_header,
                    sni: n.host.clone(),
                    weight: n.weight,
                    priority: n.priority,
                });
            }
            Err(msg) => match cx.dns {
                DnsFailure::Reject => errors.push(FieldError::new("nodes", msg)),
                DnsFailure::SkipNode => {
                    tracing::warn!(
                        upstream = identity,
                        "node left out until the next change: {msg}"
                    )
                }
            },
        }
    }
    let hash_key = match (spec.kind, spec.key.as_deref()) {
        (UpstreamType::Chash, Some(key)) => match HashKey::parse(spec.hash_on, key) {
            Ok(k) => Some(k),
            Err(m) => {
                errors.push(FieldError::new("key", m));
                None
            }
        },
        _ => None,
    };
    let client_cert = match super::upstream_tls::client_cert(spec, set) {
        Ok(c) => c,
        Err(e) => {
            errors.push(e);
            None
        }
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    let balancer_nodes: Vec<BalancerNode> = nodes
        .iter()
        .map(|n| BalancerNode {
            addr: n.addr,
            weight: n.weight,
        })
        .collect();
    let kind = match spec.kind {
        UpstreamType::Roundrobin => PickerKind::RoundRobin,
        UpstreamType::Chash => PickerKind::Chash,
    };
    let priorities: Vec<i32> = nodes.iter().map(|n| n.priority).collect();
    let picker = PriorityPicker::new(kind, &balancer_nodes, &priorities);
    let health = spec.checks.as_ref().map(|checks| UpstreamHealth {
        spec: Arc::new(checks.clone()),
        nodes: nodes
            .iter()
            .map(|n| cx.health.node(identity, n.addr))
            .collect(),
    });
    // Only untried nodes are retried, so more retries than other nodes would never run;
    // clamp them and say so once per apply (`ngx.balancer.set_more_tries` adds its own).
    let untried = nodes.len().saturating_sub(1);
    let retries = match spec.retries {
        Some(r) if r as usize > untried => {
            tracing::warn!(
                upstream = identity,
                "retries {r} clamped to {untried}: only untried nodes are retried"
            );
            untried
        }
        Some(r) => r as usize,
        None => untried,
    };
    Ok(UpstreamRuntime {
        key,
        id: label.clone(),
        picker,
        hash_key,
        retries,
        retry_timeout: spec
            .retry_timeout
            .filter(|t| *t > 0.0)
            .map(Duration::from_secs_f64),
        timeouts: spec
            .timeout
            .as_ref()
            .map(Timeouts::from_spec)
            .unwrap_or(Timeouts::DEFAULT),
        tls: spec.scheme.tls(),
        scheme: spec.scheme,
        verify: spec.tls.as_ref().is_some_and(|t| t.verify),
        client_cert,
        pass_host: spec.pass_host,
        upstream_host: spec.upstream_host.clone(),
        idle_timeout: spec
            .keepalive_pool
            .as_ref()
            .map(|p| Duration::from_secs_f64(p.idle_timeout)),
        nodes: nodes.into_boxed_slice(),
        health,
        spec: Arc::clone(spec),
    })
}

/// Resolves a node address once, at apply time (never on the request path: Pingora's
/// `HttpPeer::new("host:port")` would resolve synchronously per request).
fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{host}`: {e}"))?
        .next()
        .ok_or_else(|| format!("`{host}` resolved to no address"))
}
