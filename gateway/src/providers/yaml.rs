//! `config_provider: yaml`: resources from an APISIX standalone-style file
//! (`routes:`, `upstreams:`, `services:`, `global_rules:` lists, optionally ended by
//! `#END`), reloaded when it changes. An invalid file keeps the last good configuration.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde_json::Value;

use crate::config::{FieldError, ResourceKind};
use crate::store::{ApplySource, Change, ConfigStore};

/// How often the file is checked for changes.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Reads and parses the file into declarative items (errors name the path in the file).
pub fn load(path: &Path) -> Result<Vec<(ResourceKind, String, Value)>, Vec<FieldError>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![FieldError::new(
            "",
            format!("cannot read {}: {e}", path.display()),
        )]
    })?;
    parse(&text)
}

/// True when the file carries APISIX's end marker: a line `#END`. Without it the file
/// may be half-written, so it is not applied.
pub fn is_complete(text: &str) -> bool {
    text.lines().any(|l| l.trim_end() == "#END")
}

/// Parses file contents; a document with only `#END` is an empty configuration.
pub fn parse(text: &str) -> Result<Vec<(ResourceKind, String, Value)>, Vec<FieldError>> {
    if !is_complete(text) {
        return Err(vec![FieldError::new(
            "",
            "missing the `#END` line that ends an APISIX standalone file (a file without it may be half-written)",
        )]);
    }
    if text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        return Ok(Vec::new());
    }
    let doc: Value = serde_yaml::from_str(text)
        .map_err(|e| vec![FieldError::new("", format!("invalid YAML: {e}"))])?;
    let doc = if doc.is_null() {
        Value::Object(Default::default())
    } else {
        doc
    };
    crate::config::items_of(doc)
}

/// Background task that re-applies the file whenever its contents change.
pub struct YamlWatcher {
    pub path: PathBuf,
    pub store: Arc<ConfigStore>,
    /// Contents last seen (applied or rejected), so a bad file is reported once.
    pub initial: Option<String>,
}

#[async_trait]
impl BackgroundService for YamlWatcher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut last = self.initial.clone();
        let mut unreadable_logged = false;
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => {}
            }
            let text = match tokio::fs::read_to_string(&self.path).await {
                Ok(text) => {
                    unreadable_logged = false;
                    text
                }
                Err(e) => {
                    if !unreadable_logged {
                        tracing::warn!(file = %self.path.display(), "cannot read yaml configuration, keeping the running one: {e}");
                        unreadable_logged = true;
                    }
                    continue;
                }
            };
            // A file still being written (no `#END` yet) is looked at again next tick.
            if last.as_deref() == Some(text.as_str()) || !is_complete(&text) {
                continue;
            }
            last = Some(text.clone());
            let store = Arc::clone(&self.store);
            let path = self.path.clone();
            let outcome = tokio::task::spawn_blocking(move || {
                let items = match parse(&text) {
                    Ok(items) => items,
                    Err(errors) => {
                        store.count_rejected(ApplySource::Yaml);
                        return Err(crate::store::ApplyError::Invalid(errors));
                    }
                };
                store.apply(Change::ReplaceAll(items), ApplySource::Yaml)
            })
            .await;
            match outcome {
                Ok(Ok(applied)) => tracing::info!(
                    file = %path.display(),
                    version = applied.version,
                    "reloaded yaml configuration"
                ),
                Ok(Err(e)) => tracing::error!(
                    file = %path.display(),
                    "yaml configuration rejected, keeping the running one: {e}"
                ),
                Err(e) => tracing::error!("yaml reload task failed: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standalone_file_parses() {
        let items = parse(
            "routes:\n  - id: 1\n    uri: /a\n    upstream_id: u\nupstreams:\n  - id: u\n    nodes:\n      \"127.0.0.1:80\": 1\n#END\n",
        )
        .unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].0, ResourceKind::Upstreams);
        assert_eq!(items[1].1, "1");
    }

    #[test]
    fn bad_files_name_the_problem() {
        let e = parse("routes: [ {uri: /a} ]\n#END").unwrap_err();
        assert_eq!(e[0].path, "routes[0].id");
        let e = parse("routez: []\n#END").unwrap_err();
        assert_eq!(e[0].path, "routez");
        assert!(parse(": : :\n#END").is_err());
        assert!(parse("#END").unwrap().is_empty());
        let e = parse("routes: []\n").unwrap_err();
        assert!(e[0].message.contains("#END"));
    }
}
