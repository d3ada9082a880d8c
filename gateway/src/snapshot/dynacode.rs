//! A dynacode document compiled for the request path: regexes compiled, snippets
//! compiled into per-phase lists, per-snippet status kept for the admin API.

use std::sync::Arc;

use portico_plugins::lua::compile_statements;
use portico_plugins::{ChainEntry, Phase, Step};
use regex::Regex;
use serde::Serialize;

use crate::config::DynacodeDoc;

/// The phases a dynacode snippet may run in (lua-resty-dynacode's list).
const PHASES: [Phase; 7] = [
    Phase::Rewrite,
    Phase::Access,
    Phase::Content,
    Phase::Balancer,
    Phase::HeaderFilter,
    Phase::BodyFilter,
    Phase::Log,
];

/// Whether a snippet runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SnippetState {
    Active,
    CompileError,
}

/// One snippet's outcome, as `GET /apisix/admin/dynacode` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct SnippetStatus {
    pub domain: String,
    pub name: String,
    pub phase: String,
    pub state: SnippetState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

enum DomainMatch {
    Any,
    Regex(Regex),
}

struct DomainRuntime {
    matcher: DomainMatch,
    phases: [Vec<ChainEntry>; Phase::ALL.len()],
}

/// Built at apply time; read by every request.
pub struct DynacodeRuntime {
    /// The document this was built from (to reuse the runtime when it is unchanged).
    source: Arc<serde_json::Value>,
    enabled: bool,
    skip: Vec<Regex>,
    domains: Vec<DomainRuntime>,
    pub status: Vec<SnippetStatus>,
}

impl DynacodeRuntime {
    /// Compiles `doc`. Snippets or domain patterns that do not compile are left out and
    /// reported in `status`; they never fail the build.
    pub fn build(doc: &DynacodeDoc, source: Arc<serde_json::Value>) -> DynacodeRuntime {
        let mut status = Vec::new();
        let skip = doc
            .general
            .skip_domains
            .iter()
            .filter_map(|p| match Regex::new(p) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!("dynacode: skip_domains pattern `{p}` does not compile: {e}");
                    None
                }
            })
            .collect();
        let mut domains = Vec::new();
        let dynacode_name: Arc<str> = Arc::from("dynacode");
        for (di, domain) in doc.domains.iter().enumerate() {
            let matcher = if domain.name == "*" {
                Some(DomainMatch::Any)
            } else {
                Regex::new(&domain.name).ok().map(DomainMatch::Regex)
            };
            let mut phases: [Vec<ChainEntry>; Phase::ALL.len()] = Default::default();
            for (pi, snippet) in domain.plugins.iter().enumerate() {
                let label = format!("dynacode.domains[{di}].plugins[{pi}] ({})", snippet.name);
                let phase = Phase::parse(&snippet.phase).filter(|p| PHASES.contains(p));
                let compiled = match (&matcher, phase) {
                    (None, _) => Err(format!("domain name `{}` is not a valid regex", domain.name)),
                    (_, None) => Err(format!(
                        "phase `{}` is not one of rewrite, access, content, balancer, header_filter, body_filter, log",
                        snippet.phase
                    )),
                    (Some(_), Some(p)) => compile_statements(&label, &snippet.code).map(|f| (p, f)),
                };
                let (state, error) = match compiled {
                    Ok((phase, f)) => {
                        phases[phase as usize].push(ChainEntry {
                            plugin: Arc::clone(&dynacode_name),
                            step: Step::Lua(Arc::new(f)),
                            contain_errors: true,
                        });
                        (SnippetState::Active, None)
                    }
                    Err(e) => {
                        tracing::warn!(domain = %domain.name, snippet = %snippet.name, "dynacode snippet skipped: {e}");
                        (SnippetState::CompileError, Some(e))
                    }
                };
                status.push(SnippetStatus {
                    domain: domain.name.clone(),
                    name: snippet.name.clone(),
                    phase: snippet.phase.clone(),
                    state,
                    error,
                });
            }
            if let Some(matcher) = matcher {
                domains.push(DomainRuntime { matcher, phases });
            }
        }
        DynacodeRuntime {
            source,
            enabled: doc.is_enabled(),
            skip,
            domains,
            status,
        }
    }

    /// Whether this runtime was built from `value` (same document).
    pub fn source_is(&self, value: &Arc<serde_json::Value>) -> bool {
        Arc::ptr_eq(&self.source, value) || *self.source == **value
    }

    /// Indexes of the domains whose snippets run for `host`, in document order (empty
    /// when the document is disabled or the host is skipped). Computed once per request.
    pub fn matching(&self, host: &str) -> Vec<u16> {
        if !self.enabled || self.skip.iter().any(|r| r.is_match(host)) {
            return Vec::new();
        }
        self.domains
            .iter()
            .enumerate()
            .filter(|(_, d)| match &d.matcher {
                DomainMatch::Any => true,
                DomainMatch::Regex(r) => r.is_match(host),
            })
            .map(|(i, _)| i as u16)
            .collect()
    }

    /// The snippets of `phase` for the matched domains, in document order.
    pub fn entries(&self, matched: &[u16], phase: Phase) -> Vec<ChainEntry> {
        matched
            .iter()
            .filter_map(|i| self.domains.get(usize::from(*i)))
            .flat_map(|d| d.phases[phase as usize].iter().cloned())
            .collect()
    }

    /// Whether [`Self::entries`] would return anything (without cloning the entries).
    pub fn has_entries(&self, matched: &[u16], phase: Phase) -> bool {
        matched
            .iter()
            .filter_map(|i| self.domains.get(usize::from(*i)))
            .any(|d| !d.phases[phase as usize].is_empty())
    }

    /// (active, compile_error) snippet counts.
    pub fn counts(&self) -> (usize, usize) {
        let active = self
            .status
            .iter()
            .filter(|s| s.state == SnippetState::Active)
            .count();
        (active, self.status.len() - active)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(v: serde_json::Value) -> DynacodeRuntime {
        let doc = DynacodeDoc::parse(&v).unwrap();
        DynacodeRuntime::build(&doc, Arc::new(v))
    }

    #[test]
    fn domains_match_unanchored_and_skip_wins() {
        let rt = build(serde_json::json!({
            "general": {"status": "enabled", "skip_domains": ["[\\w\\d\\.\\-]*server.local.com"]},
            "domains": [
                {"name": "*", "plugins": [{"name": "all", "code": "ngx.header['X-All'] = '1'", "phase": "header_filter"}]},
                {"name": "dynamic.local.com", "plugins": [{"name": "c", "code": "ngx.say('hi')", "phase": "content"}]}
            ]
        }));
        assert_eq!(rt.matching("dynamic.local.com"), vec![0, 1]);
        assert_eq!(
            rt.matching("x.dynamic.local.com.evil"),
            vec![0, 1],
            "unanchored, as ngx.re.find"
        );
        assert_eq!(rt.matching("other.com"), vec![0]);
        assert!(rt.matching("api.server.local.com").is_empty());
        assert_eq!(rt.entries(&[0, 1], Phase::Content).len(), 1);
        assert_eq!(rt.entries(&[0, 1], Phase::HeaderFilter).len(), 1);
        assert_eq!(rt.counts(), (2, 0));
    }

    #[test]
    fn bad_snippets_are_skipped_and_reported() {
        let rt = build(serde_json::json!({
            "domains": [{"name": "*", "plugins": [
                {"name": "good", "code": "ngx.log(ngx.INFO, 'x')", "phase": "access"},
                {"name": "broken", "code": "if then", "phase": "access"},
                {"name": "nophase", "code": "local x = 1", "phase": "init_worker"}
            ]}, {"name": "(unclosed", "plugins": [{"name": "r", "code": "local y = 1", "phase": "log"}]}]
        }));
        assert_eq!(rt.counts(), (1, 3));
        let broken = rt.status.iter().find(|s| s.name == "broken").unwrap();
        assert!(
            broken.error.as_deref().unwrap().contains("line 1"),
            "{:?}",
            broken.error
        );
        assert_eq!(rt.entries(&rt.matching("h"), Phase::Access).len(), 1);
    }

    #[test]
    fn disabled_documents_run_nothing() {
        let rt = build(serde_json::json!({
            "general": {"status": "disabled"},
            "domains": [{"name": "*", "plugins": [{"name": "a", "code": "ngx.exit(403)", "phase": "access"}]}]
        }));
        assert!(rt.matching("any").is_empty());
    }

    #[test]
    fn wrong_shapes_name_the_field() {
        let e = DynacodeDoc::parse(&serde_json::json!({"domains": [{"plugins": []}]})).unwrap_err();
        assert!(e[0].message.contains("name"), "{e:?}");
        let e = DynacodeDoc::parse(&serde_json::json!({"domains": "x"})).unwrap_err();
        assert_eq!(e[0].path, "domains");
    }
}
