//! Route matcher with APISIX radixtree semantics, compiled once per config
//! change and matched per request.
//!
//! Precedence, most significant first:
//! 1. an exact uri beats a prefix uri (`/api/*`), and a longer prefix beats a
//!    shorter one;
//! 2. within one uri, higher `priority` first;
//! 3. then host specificity: exact host, then wildcard hosts (longer suffix
//!    first), then routes without hosts;
//! 4. then lower route index (stable).
//!
//! Each candidate, in that order, is checked against its filters — host,
//! methods, remote_addrs, vars — and the first one passing all of them wins.
//! A more precise uri whose filters fail falls through to less precise ones.
//!
//! Lookup cost is a handful of hash probes: one for the exact uri, one per
//! distinct prefix length (no longer than the path), and within a uri's
//! bucket one probe for the exact host plus one per distinct wildcard suffix
//! length. Nothing is allocated on the match path unless a candidate has
//! `vars` (or the request host is not lowercase).

pub mod expr;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use ipnet::IpNet;

pub use self::expr::{CompileError, Expr};
use crate::vars::RequestView;

/// Matching input for one route; its index is its position in the slice
/// passed to [`Router::build`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouteMatchSpec {
    /// Exact `"/a/b"` or prefix `"/api/*"` (the trailing `*` makes `"/api/"`
    /// a prefix); `"/*"` matches everything. At least one is required.
    pub uris: Vec<String>,
    /// Empty = any host. Exact `"a.com"` or wildcard `"*.a.com"` (matches
    /// `x.a.com` and `y.x.a.com`, not `a.com`). Case-insensitive.
    pub hosts: Vec<String>,
    /// Empty = any method. Upper-case HTTP method names.
    pub methods: Vec<String>,
    /// Higher wins among routes with the same uri. Default 0.
    pub priority: i64,
    /// lua-resty-expr `vars` JSON (see [`Expr`]).
    pub vars: Option<serde_json::Value>,
    /// Empty = any client. IPs or CIDRs.
    pub remote_addrs: Vec<String>,
}

/// A configuration error in one route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("route {route}: {path}: {message}")]
pub struct RouterError {
    /// Index of the offending spec.
    pub route: usize,
    /// Field path inside the spec, e.g. `"vars[0][1]"`, `"remote_addrs[2]"`,
    /// `"uris[0]"`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// Methods accepted in `methods`, in bit order.
const METHODS: [&str; 10] = [
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE", "PURGE",
];

/// Bit for a method name; 0 for an unknown method (which then only matches
/// routes without a method filter).
fn method_bit(method: &str) -> u16 {
    METHODS
        .iter()
        .position(|m| *m == method)
        .map_or(0, |i| 1 << i)
}

/// The compiled route table.
#[derive(Debug)]
pub struct Router {
    /// Buckets for exact uris.
    exact: FastMap<Bucket>,
    /// Buckets for prefix uris, keyed by the prefix (uri without the `*`).
    prefixes: FastMap<Bucket>,
    /// Distinct prefix lengths, longest first.
    prefix_lens: Vec<usize>,
    /// Per-route filters, indexed by route.
    filters: Vec<Filter>,
}

/// The non-path conditions of one route (hosts are encoded in the buckets).
#[derive(Debug)]
struct Filter {
    /// Bit set over [`METHODS`]; 0 = any method.
    methods: u16,
    /// Allowed client networks; empty = any.
    remote_addrs: Vec<IpNet>,
    /// Compiled `vars`, if any.
    vars: Option<Expr>,
}

impl Filter {
    /// Whether a request passes the method, remote_addrs and vars filters.
    fn passes(&self, method: u16, req: &RequestView<'_>) -> bool {
        (self.methods == 0 || self.methods & method != 0)
            && (self.remote_addrs.is_empty()
                || req
                    .remote_addr
                    .is_some_and(|ip| expr::ip_in(&self.remote_addrs, ip)))
            && self.vars.as_ref().is_none_or(|v| v.eval(req))
    }
}

/// All candidates for one uri, grouped by priority (highest first).
#[derive(Debug, Default)]
struct Bucket {
    groups: Vec<Group>,
}

/// Candidates sharing one uri and one priority, indexed by host. Every list
/// holds route indices in ascending order.
#[derive(Debug, Default)]
struct Group {
    priority: i64,
    /// Exact host → routes.
    exact_hosts: FastMap<Vec<u32>>,
    /// Wildcard suffix (`".a.com"`) → routes.
    wildcard_hosts: FastMap<Vec<u32>>,
    /// Distinct wildcard suffix lengths, longest first.
    wildcard_lens: Vec<usize>,
    /// Routes without a host restriction.
    any_host: Vec<u32>,
}

/// How a route restricts the host, after validation.
enum HostRule {
    Exact(String),
    /// The suffix including the leading dot, e.g. `".a.com"`.
    Wildcard(String),
}

impl Router {
    /// Validates and compiles the specs. Every error in every route is
    /// reported; the router is only built when there are none.
    pub fn build(specs: &[RouteMatchSpec]) -> Result<Router, Vec<RouterError>> {
        let mut errors = Vec::new();
        let mut exact: HashMap<String, Vec<Group>> = HashMap::new();
        let mut prefixes: HashMap<String, Vec<Group>> = HashMap::new();
        let mut filters = Vec::with_capacity(specs.len());

        if u32::try_from(specs.len()).is_err() {
            errors.push(RouterError {
                route: 0,
                path: String::new(),
                message: format!("too many routes ({})", specs.len()),
            });
            return Err(errors);
        }

        for (index, spec) in specs.iter().enumerate() {
            let mut err = |path: String, message: String| {
                errors.push(RouterError {
                    route: index,
                    path,
                    message,
                })
            };
            let uris = validate_uris(&spec.uris, &mut err);
            let hosts = validate_hosts(&spec.hosts, &mut err);
            let methods = validate_methods(&spec.methods, &mut err);
            let remote_addrs = validate_remote_addrs(&spec.remote_addrs, &mut err);
            let vars = match &spec.vars {
                None => None,
                Some(json) => match Expr::compile(json) {
                    Ok(e) => Some(e),
                    Err(es) => {
                        for (path, message) in es {
                            err(format!("vars{path}"), message);
                        }
                        None
                    }
                },
            };
            filters.push(Filter {
                methods,
                remote_addrs,
                vars,
            });

            // `index` fits in u32: checked above.
            let route = index as u32;
            for (uri, is_prefix) in uris {
                let map = if is_prefix { &mut prefixes } else { &mut exact };
                let groups = map.entry(uri).or_default();
                let group = match groups.iter().position(|g| g.priority == spec.priority) {
                    Some(i) => &mut groups[i],
                    None => {
                        groups.push(Group {
                            priority: spec.priority,
                            ..Group::default()
                        });
                        let last = groups.len() - 1;
                        &mut groups[last]
                    }
                };
                if hosts.is_empty() {
                    push_route(&mut group.any_host, route);
                }
                for host in &hosts {
                    match host {
                        HostRule::Exact(h) => push_route(
                            group.exact_hosts.entry(h.as_str().into()).or_default(),
                            route,
                        ),
                        HostRule::Wildcard(s) => push_route(
                            group.wildcard_hosts.entry(s.as_str().into()).or_default(),
                            route,
                        ),
                    }
                }
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }

        let mut prefix_lens: Vec<usize> = prefixes.keys().map(String::len).collect();
        prefix_lens.sort_unstable_by(|a, b| b.cmp(a));
        prefix_lens.dedup();
        Ok(Router {
            exact: finish_buckets(exact),
            prefixes: finish_buckets(prefixes),
            prefix_lens,
            filters,
        })
    }

    /// Finds the route for a request: the index of the matched spec.
    pub fn find(&self, req: &RequestView<'_>) -> Option<usize> {
        let path = req.path;
        let method = method_bit(req.method);
        // The proxy passes a lowercase host; only allocate if it did not.
        let host: Cow<'_, str> = if req.host.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(req.host.to_ascii_lowercase())
        } else {
            Cow::Borrowed(req.host)
        };
        if let Some(bucket) = self.exact.get(path) {
            if let Some(route) = self.find_in_bucket(bucket, &host, method, req) {
                return Some(route);
            }
        }
        // Skip prefix lengths longer than the path, then probe longest first.
        let start = self.prefix_lens.partition_point(|&len| len > path.len());
        for &len in &self.prefix_lens[start..] {
            let Some(prefix) = path.get(..len) else {
                continue; // not a char boundary
            };
            if let Some(bucket) = self.prefixes.get(prefix) {
                if let Some(route) = self.find_in_bucket(bucket, &host, method, req) {
                    return Some(route);
                }
            }
        }
        None
    }

    /// Number of routes the router was built from.
    pub fn len(&self) -> usize {
        self.filters.len()
    }

    /// Whether the router was built from no routes.
    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    /// Walks one bucket in precedence order and returns the first route whose
    /// filters pass.
    fn find_in_bucket(
        &self,
        bucket: &Bucket,
        host: &str,
        method: u16,
        req: &RequestView<'_>,
    ) -> Option<usize> {
        let first_passing = |routes: &[u32]| {
            routes.iter().copied().find(|&r| {
                self.filters
                    .get(r as usize)
                    .is_some_and(|f| f.passes(method, req))
            })
        };
        for group in &bucket.groups {
            if let Some(routes) = group.exact_hosts.get(host) {
                if let Some(r) = first_passing(routes) {
                    return Some(r as usize);
                }
            }
            for &len in &group.wildcard_lens {
                // The host needs at least one character before the suffix.
                let Some(at) = host.len().checked_sub(len).filter(|&at| at > 0) else {
                    continue;
                };
                let Some(suffix) = host.get(at..) else {
                    continue;
                };
                if let Some(routes) = group.wildcard_hosts.get(suffix) {
                    if let Some(r) = first_passing(routes) {
                        return Some(r as usize);
                    }
                }
            }
            if let Some(r) = first_passing(&group.any_host) {
                return Some(r as usize);
            }
        }
        None
    }
}

/// Appends a route unless it is already the last entry (the same route can
/// list the same uri or host twice).
fn push_route(routes: &mut Vec<u32>, route: u32) {
    if routes.last() != Some(&route) {
        routes.push(route);
    }
}

/// Sorts groups by priority (highest first), records wildcard lengths and
/// moves everything into the lookup map.
fn finish_buckets(map: HashMap<String, Vec<Group>>) -> FastMap<Bucket> {
    let mut out = FastMap::with_capacity_and_hasher(map.len(), Default::default());
    for (uri, mut groups) in map {
        // Stable sort: equal priorities cannot occur within one bucket anyway.
        groups.sort_by_key(|g| std::cmp::Reverse(g.priority));
        for g in &mut groups {
            g.wildcard_lens = g.wildcard_hosts.keys().map(|k| k.len()).collect();
            g.wildcard_lens.sort_unstable_by(|a, b| b.cmp(a));
            g.wildcard_lens.dedup();
            g.exact_hosts.shrink_to_fit();
            g.wildcard_hosts.shrink_to_fit();
        }
        out.insert(uri.into_boxed_str(), Bucket { groups });
    }
    out
}

/// Validates `uris`; returns `(key, is_prefix)` pairs, where the key of a
/// prefix uri is the uri without its trailing `*`.
fn validate_uris(uris: &[String], err: &mut impl FnMut(String, String)) -> Vec<(String, bool)> {
    if uris.is_empty() {
        err("uris".into(), "at least one uri is required".into());
    }
    let mut out = Vec::with_capacity(uris.len());
    for (i, uri) in uris.iter().enumerate() {
        let path = format!("uris[{i}]");
        if !uri.starts_with('/') {
            err(path, format!("uri `{uri}` must start with `/`"));
            continue;
        }
        match uri.find('*') {
            None => out.push((uri.clone(), false)),
            Some(at) if at == uri.len() - 1 => out.push((uri[..at].to_owned(), true)),
            Some(_) => err(
                path,
                format!("uri `{uri}`: `*` is only allowed as the last character"),
            ),
        }
    }
    out
}

/// Validates and lowercases `hosts`.
fn validate_hosts(hosts: &[String], err: &mut impl FnMut(String, String)) -> Vec<HostRule> {
    let mut out = Vec::with_capacity(hosts.len());
    for (i, host) in hosts.iter().enumerate() {
        let lower = host.trim().to_ascii_lowercase();
        let (rule, name) = match lower.strip_prefix("*.") {
            Some(rest) => (HostRule::Wildcard(lower[1..].to_owned()), rest),
            None => (HostRule::Exact(lower.clone()), lower.as_str()),
        };
        let message = if name.is_empty() {
            Some(format!("host `{host}` is empty"))
        } else if name.contains('*') {
            Some(format!(
                "host `{host}`: a wildcard is only allowed as a leading `*.`"
            ))
        } else if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._[]:".contains(&b))
        {
            Some(format!("host `{host}` contains invalid characters"))
        } else {
            None
        };
        match message {
            Some(m) => err(format!("hosts[{i}]"), m),
            None => out.push(rule),
        }
    }
    out
}

/// Validates `methods` into a bit set (0 = any).
fn validate_methods(methods: &[String], err: &mut impl FnMut(String, String)) -> u16 {
    let mut bits = 0;
    for (i, m) in methods.iter().enumerate() {
        match method_bit(m) {
            0 => err(
                format!("methods[{i}]"),
                format!(
                    "unknown method `{m}` (expected one of {})",
                    METHODS.join(", ")
                ),
            ),
            bit => bits |= bit,
        }
    }
    bits
}

/// Parses `remote_addrs` (IPs or CIDRs).
fn validate_remote_addrs(addrs: &[String], err: &mut impl FnMut(String, String)) -> Vec<IpNet> {
    let mut out = Vec::with_capacity(addrs.len());
    for (i, a) in addrs.iter().enumerate() {
        match expr::parse_net(a) {
            Ok(net) => out.push(net),
            Err(m) => err(format!("remote_addrs[{i}]"), m),
        }
    }
    out
}

/// Hash map with boxed-str keys and a fast non-keyed hasher. Keys come from
/// configuration, so request input can only probe, never grow, a chain.
type FastMap<V> = HashMap<Box<str>, V, BuildHasherDefault<FxHasher>>;

/// FxHash-style word-at-a-time hasher with a final avalanche, so that both
/// hashbrown's low (index) and high (tag) bits are well distributed.
#[derive(Default, Clone, Copy)]
struct FxHasher {
    hash: u64,
}

impl FxHasher {
    const SEED: u64 = 0x517c_c1b7_2722_0a95;

    /// Mixes one word into the state.
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(Self::SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 56));
        }
    }

    #[inline]
    fn write_u8(&mut self, b: u8) {
        self.add(u64::from(b));
    }

    #[inline]
    fn finish(&self) -> u64 {
        // murmur3 fmix64.
        let mut h = self.hash;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}
