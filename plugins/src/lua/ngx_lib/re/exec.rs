//! The subject as regex-engine text, and running a compiled regex over it.

use std::borrow::Cow;

use super::cache::Compiled;

/// The subject as text the regex engine can run on, with offset mapping.
pub(super) enum Text<'a> {
    Utf8(Cow<'a, str>),
    /// One char per byte; `offs[i]` is the text offset of byte `i`.
    Latin1 {
        s: String,
        offs: Vec<usize>,
    },
}

impl<'a> Text<'a> {
    pub(super) fn new(subject: &'a [u8], pattern: &[u8], pos: usize) -> Text<'a> {
        if let (Ok(s), true) = (
            std::str::from_utf8(subject),
            std::str::from_utf8(pattern).is_ok(),
        ) {
            if s.is_char_boundary(pos.min(s.len())) {
                return Text::Utf8(Cow::Borrowed(s));
            }
        }
        let mut s = String::with_capacity(subject.len() + subject.len() / 4);
        let mut offs = Vec::with_capacity(subject.len() + 1);
        for &b in subject {
            offs.push(s.len());
            s.push(b as char);
        }
        offs.push(s.len());
        Text::Latin1 { s, offs }
    }

    pub(super) fn into_owned(self) -> Text<'static> {
        match self {
            Text::Utf8(s) => Text::Utf8(Cow::Owned(s.into_owned())),
            Text::Latin1 { s, offs } => Text::Latin1 { s, offs },
        }
    }

    pub(super) fn latin1(&self) -> bool {
        matches!(self, Text::Latin1 { .. })
    }

    fn as_str(&self) -> &str {
        match self {
            Text::Utf8(s) => s,
            Text::Latin1 { s, .. } => s,
        }
    }

    fn to_text(&self, orig: usize) -> usize {
        match self {
            Text::Utf8(_) => orig,
            Text::Latin1 { offs, .. } => offs.get(orig).copied().unwrap_or(usize::MAX),
        }
    }

    fn to_orig(&self, t: usize) -> usize {
        match self {
            Text::Utf8(_) => t,
            Text::Latin1 { offs, .. } => offs.binary_search(&t).unwrap_or_else(|i| i),
        }
    }

    /// The original offset just past the character at `orig`.
    pub(super) fn next_char(&self, orig: usize) -> usize {
        match self {
            Text::Utf8(s) => match s.get(orig..).and_then(|r| r.chars().next()) {
                Some(c) => orig + c.len_utf8(),
                None => orig + 1,
            },
            Text::Latin1 { .. } => orig + 1,
        }
    }
}

/// Group spans in original byte offsets; index 0 is the whole match.
pub(super) type Spans = Vec<Option<(usize, usize)>>;

/// Runs the regex from original offset `pos`; `want_groups` false only fills
/// group 0.
pub(super) fn exec(
    c: &Compiled,
    text: &Text<'_>,
    pos: usize,
    anchored: bool,
    want_groups: bool,
) -> Result<Option<Spans>, String> {
    let t = text.to_text(pos);
    let hay = text.as_str();
    if t > hay.len() {
        return Ok(None);
    }
    // PCRE's wording for its match limit (PCRE_ERROR_MATCHLIMIT), which OpenResty
    // code may test for.
    let err = |e: fancy_regex::Error| match e {
        fancy_regex::Error::RuntimeError(fancy_regex::RuntimeError::BacktrackLimitExceeded) => {
            "pcre_exec() failed: -8".to_string()
        }
        e => format!("regex execution failed: {e}"),
    };
    let spans: Spans = if want_groups {
        let Some(caps) = c.re.captures_from_pos(hay, t).map_err(err)? else {
            return Ok(None);
        };
        (0..=c.ncaps)
            .map(|i| {
                caps.get(i)
                    .map(|m| (text.to_orig(m.start()), text.to_orig(m.end())))
            })
            .collect()
    } else {
        let Some(m) = c.re.find_from_pos(hay, t).map_err(err)? else {
            return Ok(None);
        };
        vec![Some((text.to_orig(m.start()), text.to_orig(m.end())))]
    };
    if anchored && spans.first().copied().flatten().map(|s| s.0) != Some(pos) {
        return Ok(None);
    }
    Ok(Some(spans))
}
