//! Which resource an upstream runtime belongs to: a standalone upstream, or the inline
//! upstream of a route or a service.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UpstreamKey {
    Upstream(String),
    Route(String),
    Service(String),
}

impl UpstreamKey {
    /// The label of metric series and the health registry's key: the upstream id, or
    /// `route:ID` / `service:ID` for inline upstreams (bounded: one per resource).
    pub fn label(&self) -> String {
        match self {
            UpstreamKey::Upstream(id) => id.clone(),
            UpstreamKey::Route(id) => format!("route:{id}"),
            UpstreamKey::Service(id) => format!("service:{id}"),
        }
    }
}

/// APISIX's key of the resource: `/apisix/upstreams/1`, `/apisix/routes/7`.
impl fmt::Display for UpstreamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamKey::Upstream(id) => write!(f, "/apisix/upstreams/{id}"),
            UpstreamKey::Route(id) => write!(f, "/apisix/routes/{id}"),
            UpstreamKey::Service(id) => write!(f, "/apisix/services/{id}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::UpstreamKey;

    #[test]
    fn names_follow_apisix_keys_and_labels_stay() {
        let keys = [
            (
                UpstreamKey::Upstream("1".into()),
                "/apisix/upstreams/1",
                "1",
            ),
            (
                UpstreamKey::Route("7".into()),
                "/apisix/routes/7",
                "route:7",
            ),
            (
                UpstreamKey::Service("s".into()),
                "/apisix/services/s",
                "service:s",
            ),
        ];
        for (k, name, label) in keys {
            assert_eq!(k.to_string(), name);
            assert_eq!(k.label(), label);
        }
    }
}
