//! `cache:` of the static settings: the zones the `proxy-cache` plugin names
//! (`cache_zone`) and the name of the cache status header. As in APISIX, a zone with a
//! `disk_path` serves `cache_strategy: disk` (bounded by `disk_size`), and any zone serves
//! `cache_strategy: memory` (bounded by `memory_size`). Zones need a restart to change.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// `cache:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSettings {
    pub zones: Vec<ZoneSettings>,
    /// The response header carrying `MISS`/`HIT`/`EXPIRED`/`STALE`/`BYPASS`.
    pub status_header: String,
}

/// A size: bytes, or an nginx-style string (`"50m"`, `"1g"`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Size {
    Bytes(u64),
    Text(String),
}

impl Size {
    /// As written.
    pub fn text(&self) -> String {
        match self {
            Size::Bytes(n) => n.to_string(),
            Size::Text(s) => s.clone(),
        }
    }

    pub fn bytes(&self) -> Option<usize> {
        match self {
            Size::Bytes(n) => usize::try_from(*n).ok(),
            Size::Text(s) => portico_plugins::lua::parse_size(s),
        }
    }
}

/// One zone.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneSettings {
    pub name: String,
    /// The memory zone's size (with `cache_strategy: memory`).
    pub memory_size: Option<Size>,
    /// The disk zone's size.
    pub disk_size: Option<Size>,
    /// The disk zone's directory; relative paths are under `data_dir`.
    pub disk_path: Option<PathBuf>,
    /// nginx's `levels`: one to three directory name lengths of 1 or 2, e.g. `1:2`.
    pub cache_levels: Option<String>,
}

impl Default for CacheSettings {
    /// APISIX's default zones: `disk_cache_one` (50m, 1G on disk, levels 1:2) and
    /// `memory_cache` (50m).
    fn default() -> Self {
        CacheSettings {
            zones: vec![
                ZoneSettings {
                    name: "disk_cache_one".to_string(),
                    memory_size: Some(Size::Text("50m".to_string())),
                    disk_size: Some(Size::Text("1G".to_string())),
                    disk_path: Some(PathBuf::from("cache/disk_cache_one")),
                    cache_levels: Some("1:2".to_string()),
                },
                ZoneSettings {
                    name: "memory_cache".to_string(),
                    memory_size: Some(Size::Text("50m".to_string())),
                    disk_size: None,
                    disk_path: None,
                    cache_levels: None,
                },
            ],
            status_header: "Apisix-Cache-Status".to_string(),
        }
    }
}

/// Parses `cache_levels` (`"1:2"` → `[1, 2]`).
pub fn parse_levels(s: &str) -> Result<Vec<usize>, String> {
    let levels: Vec<usize> = s
        .split(':')
        .map(|p| match p.trim() {
            "1" => Ok(1),
            "2" => Ok(2),
            other => Err(format!("`{other}` is not 1 or 2")),
        })
        .collect::<Result<_, _>>()?;
    if levels.len() > 3 {
        return Err("at most three levels".to_string());
    }
    Ok(levels)
}

impl ZoneSettings {
    /// The disk directory, resolved against `data_dir`.
    pub fn disk_dir(&self, data_dir: &Path) -> Option<PathBuf> {
        self.disk_path.as_ref().map(|p| {
            if p.is_absolute() {
                p.clone()
            } else {
                data_dir.join(p)
            }
        })
    }
}

impl CacheSettings {
    /// Every problem, each naming its key.
    pub fn check(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if http::HeaderName::from_bytes(self.status_header.as_bytes()).is_err() {
            errors.push(format!(
                "cache.status_header: `{}` is not a header name",
                self.status_header
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, z) in self.zones.iter().enumerate() {
            let at = format!("cache.zones[{i}]");
            if z.name.is_empty() || z.name.len() > 100 {
                errors.push(format!("{at}.name: must be 1 to 100 characters"));
            } else if !seen.insert(z.name.as_str()) {
                errors.push(format!("{at}.name: `{}` is declared twice", z.name));
            }
            for (field, size) in [("memory_size", &z.memory_size), ("disk_size", &z.disk_size)] {
                if let Some(s) = size {
                    match s.bytes() {
                        Some(n) if n >= 1024 => {}
                        Some(_) => errors.push(format!("{at}.{field}: must be at least 1k")),
                        None => errors.push(format!(
                            "{at}.{field}: `{}` is not a size like 50m, 1g or 8192",
                            s.text()
                        )),
                    }
                }
            }
            if z.memory_size.is_none() && z.disk_path.is_none() {
                errors.push(format!("{at}: needs memory_size or disk_path"));
            }
            if z.disk_path.is_some() && z.disk_size.is_none() {
                errors.push(format!("{at}.disk_size: required with disk_path"));
            }
            if z.disk_path.is_none() && (z.disk_size.is_some() || z.cache_levels.is_some()) {
                errors.push(format!(
                    "{at}.disk_path: required with disk_size and cache_levels"
                ));
            }
            if let Some(l) = &z.cache_levels {
                if let Err(e) = parse_levels(l) {
                    errors.push(format!("{at}.cache_levels: {e}"));
                }
            }
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> CacheSettings {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn defaults_are_apisix_s_zones_and_check() {
        let s = CacheSettings::default();
        assert!(s.check().is_empty());
        assert_eq!(
            s.zones[0].disk_size.as_ref().unwrap().bytes(),
            Some(1 << 30)
        );
        assert_eq!(
            s.zones[0].disk_dir(Path::new("/d")).unwrap(),
            PathBuf::from("/d/cache/disk_cache_one")
        );
    }

    #[test]
    fn errors_name_the_key() {
        let s = parse(
            "zones:\n - {name: a, memory_size: 4m}\n - {name: a, memory_size: nope}\n - {name: c}\n - {name: d, disk_path: /x, cache_levels: '1:3'}\nstatus_header: 'bad header'\n",
        );
        let errors = s.check().join("\n");
        assert!(
            errors.contains("cache.zones[1].name: `a` is declared twice"),
            "{errors}"
        );
        assert!(
            errors.contains("cache.zones[1].memory_size: `nope` is not a size"),
            "{errors}"
        );
        assert!(
            errors.contains("cache.zones[2]: needs memory_size or disk_path"),
            "{errors}"
        );
        assert!(
            errors.contains("cache.zones[3].disk_size: required"),
            "{errors}"
        );
        assert!(errors.contains("cache.zones[3].cache_levels"), "{errors}");
        assert!(errors.contains("cache.status_header"), "{errors}");
        assert_eq!(
            parse("zones: [{name: m, memory_size: 8192}]").zones[0]
                .memory_size
                .as_ref()
                .unwrap()
                .bytes(),
            Some(8192)
        );
    }
}
