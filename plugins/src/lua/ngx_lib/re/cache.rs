//! The per-VM cache of compiled regexes.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};

use fancy_regex::Regex;
use lru::LruCache;

use super::translate::{translate_pcre, Opts};

/// Compiled regexes kept per VM.
pub(super) const CACHE_SIZE: usize = 1024;
/// Backtracking steps allowed per search (PCRE's match limit; OpenResty's error is
/// `pcre_exec() failed: -8`). One search cannot be interrupted, so this bounds how long
/// it holds the worker: 200,000 steps take about 10 ms in a release build (fancy-regex's
/// default of 1,000,000 took over 300 ms in a debug build). Patterns without
/// backreferences or lookaround run on the `regex` crate, in linear time, and never
/// count steps.
pub(crate) const BACKTRACK_LIMIT: usize = 200_000;

pub(super) struct Compiled {
    pub(super) re: Regex,
    /// Number of capture groups, not counting group 0.
    pub(super) ncaps: usize,
    /// Named groups: (index, name).
    pub(super) names: Vec<(usize, String)>,
}

pub(super) type Cache = Arc<Mutex<LruCache<Vec<u8>, Arc<Compiled>>>>;

pub(super) fn compile(
    cache: &Cache,
    pattern: &[u8],
    opts: Opts,
    latin1: bool,
) -> Result<Arc<Compiled>, String> {
    let mut key = Vec::with_capacity(pattern.len() + 2);
    key.extend_from_slice(pattern);
    key.push(opts.key_byte());
    key.push(latin1 as u8);
    if let Ok(mut c) = cache.lock() {
        if let Some(hit) = c.get(&key) {
            return Ok(hit.clone());
        }
    }
    let pat: Cow<'_, str> = if latin1 {
        Cow::Owned(pattern.iter().map(|&b| b as char).collect())
    } else {
        String::from_utf8_lossy(pattern)
    };
    let mut src = String::with_capacity(pat.len() + 8);
    if opts.caseless || opts.multiline || opts.dotall || opts.extended {
        src.push_str("(?");
        for (on, f) in [
            (opts.caseless, 'i'),
            (opts.multiline, 'm'),
            (opts.dotall, 's'),
            (opts.extended, 'x'),
        ] {
            if on {
                src.push(f);
            }
        }
        src.push(')');
    }
    let scanned = translate_pcre(&pat, &mut src);
    let re = fancy_regex::RegexBuilder::new(&src)
        .backtrack_limit(BACKTRACK_LIMIT)
        .build()
        .map_err(|e| {
            format!(
                "failed to compile regex \"{}\": {e}",
                String::from_utf8_lossy(pattern)
            )
        })?;
    let ncaps = re.captures_len().saturating_sub(1);
    let names = if scanned.iter().all(|(i, _)| *i <= ncaps) {
        scanned
    } else {
        re.capture_names()
            .enumerate()
            .filter_map(|(i, n)| n.map(|n| (i, n.to_string())))
            .collect()
    };
    let compiled = Arc::new(Compiled { re, ncaps, names });
    if let Ok(mut c) = cache.lock() {
        c.put(key, compiled.clone());
    }
    Ok(compiled)
}
