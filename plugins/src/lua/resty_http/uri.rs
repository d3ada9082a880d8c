//! Parsing `http(s)://` URIs as lua-resty-http does.

/// A parsed `http(s)://` URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Uri {
    pub(super) tls: bool,
    /// Without IPv6 brackets.
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) path: String,
    pub(super) query: Option<String>,
    pub(super) userinfo: Option<String>,
}

pub(super) fn parse_uri(uri: &str) -> Result<Uri, String> {
    let bad = || format!("bad uri: {uri}");
    let (scheme, rest) = uri.split_once("://").ok_or_else(bad)?;
    let tls = if scheme.eq_ignore_ascii_case("http") {
        false
    } else if scheme.eq_ignore_ascii_case("https") {
        true
    } else {
        return Err(bad());
    };
    let rest = rest.split('#').next().unwrap_or("");
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u.to_string()), h),
        None => (None, authority),
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(bad)?;
        if h.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad());
        }
        if !after.is_empty() && !after.starts_with(':') {
            return Err(bad());
        }
        (h, after.strip_prefix(':'))
    } else if let Some((h, p)) = hostport.split_once(':') {
        (h, Some(p))
    } else {
        (hostport, None)
    };
    if host.is_empty() || host.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(bad());
    }
    let port = match port {
        None => {
            if tls {
                443
            } else {
                80
            }
        }
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(bad()),
        },
    };
    let (path, query) = match tail.split_once('?') {
        Some((p, q)) => (p, Some(q.to_string())),
        None => (tail, None),
    };
    if tail.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(bad());
    }
    Ok(Uri {
        tls,
        host: host.to_string(),
        port,
        path: if path.is_empty() { "/" } else { path }.to_string(),
        query: query.filter(|q| !q.is_empty()),
        userinfo,
    })
}
