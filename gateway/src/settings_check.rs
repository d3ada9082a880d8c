//! Every error of a settings file in one pass, for `portico -t`.
//!
//! Serde stops at the first problem. Here the file is read as a YAML tree, and each error
//! (an unknown key, a value of the wrong type) is recorded with its path and its key
//! removed from the tree, then the rest is read again; what remains is checked with
//! [`Settings::check`]. A removed key takes its default, so later checks still run.

use serde_path_to_error::Segment;
use serde_yaml::{Mapping, Value};

use crate::settings::Settings;

/// At most this many errors are collected (each round removes one key).
const MAX_ERRORS: usize = 100;

/// The settings that remain readable and every error of `text`, each naming its key.
/// An empty list means `text` parses as it is (then [`Settings::parse`] succeeds too).
pub fn parse_reporting_all(text: &str) -> (Settings, Vec<String>) {
    if text.trim().is_empty() {
        return (Settings::default(), Vec::new());
    }
    let mut tree: Value = match serde_yaml::from_str(text) {
        Ok(Value::Null) => return (Settings::default(), Vec::new()),
        Ok(v) => v,
        Err(e) => return (Settings::default(), vec![format!("invalid YAML: {e}")]),
    };
    let mut errors = Vec::new();
    let mut removed: Vec<String> = Vec::new();
    while errors.len() < MAX_ERRORS {
        let e = match serde_path_to_error::deserialize::<_, Settings>(tree.clone()) {
            Ok(settings) => return (settings, errors),
            Err(e) => e,
        };
        let mut path: Vec<Segment> = e.path().iter().cloned().collect();
        let message = e.inner().to_string();
        let shown = e.path().to_string();
        // A required field the previous rounds removed is not a new problem.
        let consequence =
            message.starts_with("missing field") && removed.iter().any(|r| r.starts_with(&shown));
        if !consequence {
            errors.push(if shown == "." {
                message.clone()
            } else {
                format!("{shown}: {message}")
            });
        }
        // An unknown key is reported at the map holding it: remove that key.
        if let Some(name) = unknown_field(&message) {
            if !matches!(path.last(), Some(Segment::Map { key }) if *key == name) {
                path.push(Segment::Map { key: name });
            }
        }
        if path.is_empty() || !remove(&mut tree, &path) {
            break;
        }
        removed.push(shown);
    }
    (Settings::default(), errors)
}

/// `unknown field `proxyy`, expected one of ...` → `proxyy`.
fn unknown_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split_once('`').map(|(name, _)| name.to_string())
}

/// Removes the node at `path`; whether there was one.
fn remove(tree: &mut Value, path: &[Segment]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut node = tree;
    for seg in parents {
        let next = match (seg, node) {
            (Segment::Map { key }, Value::Mapping(m)) => m.get_mut(key.as_str()),
            (Segment::Seq { index }, Value::Sequence(s)) => s.get_mut(*index),
            _ => None,
        };
        match next {
            Some(n) => node = n,
            None => return false,
        }
    }
    match (last, node) {
        (Segment::Map { key }, Value::Mapping(m)) => remove_key(m, key),
        (Segment::Seq { index }, Value::Sequence(s)) if *index < s.len() => {
            s.remove(*index);
            true
        }
        _ => false,
    }
}

fn remove_key(m: &mut Mapping, key: &str) -> bool {
    m.remove(key).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unknown_key_and_bad_value_is_reported() {
        let text = "proxyy: 1\nproxy:\n  listn: []\n  client_header_timeout: abc\nadmin:\n  keys:\n    - {name: a, key: k, role: boss}\nthreads: 0\n";
        let (_, errors) = parse_reporting_all(text);
        let all = errors.join("\n");
        assert!(all.contains("proxyy"), "{all}");
        assert!(all.contains("listn"), "{all}");
        assert!(all.contains("proxy.client_header_timeout"), "{all}");
        assert!(all.contains("admin.keys[0].role"), "{all}");
        assert_eq!(errors.len(), 4, "{all}");
    }

    #[test]
    fn a_good_file_has_no_errors() {
        let (s, errors) = parse_reporting_all("threads: 3\n");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(s.threads, 3);
        assert!(parse_reporting_all("").1.is_empty());
    }
}
