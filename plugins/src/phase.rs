//! OpenResty's request phases, as Portico runs them on Pingora's hooks.

use std::fmt;

/// A phase a Lua function runs in. Order is execution order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    Rewrite,
    Access,
    /// Answers without an upstream.
    Content,
    /// Chooses the upstream node (`ngx.balancer`).
    Balancer,
    /// Just before the request goes upstream (APISIX `before_proxy`).
    BeforeProxy,
    HeaderFilter,
    BodyFilter,
    Log,
}

impl Phase {
    pub const ALL: [Phase; 8] = [
        Phase::Rewrite,
        Phase::Access,
        Phase::Content,
        Phase::Balancer,
        Phase::BeforeProxy,
        Phase::HeaderFilter,
        Phase::BodyFilter,
        Phase::Log,
    ];

    /// The name users write (`"access"`) and `ngx.get_phase()` returns.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Rewrite => "rewrite",
            Phase::Access => "access",
            Phase::Content => "content",
            Phase::Balancer => "balancer",
            Phase::BeforeProxy => "before_proxy",
            Phase::HeaderFilter => "header_filter",
            Phase::BodyFilter => "body_filter",
            Phase::Log => "log",
        }
    }

    pub fn parse(name: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Phases whose Lua may yield (`ngx.sleep`, cosockets): they run as coroutines with
    /// `call_async`. Header and body filters and the balancer run synchronously, as in
    /// OpenResty.
    pub fn may_yield(self) -> bool {
        !matches!(
            self,
            Phase::HeaderFilter | Phase::BodyFilter | Phase::Balancer
        )
    }

    /// Phases where an error or a timeout fails the request with 500; in the others it
    /// is logged and the response continues.
    pub fn fails_request(self) -> bool {
        matches!(
            self,
            Phase::Rewrite | Phase::Access | Phase::Content | Phase::Balancer
        )
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
