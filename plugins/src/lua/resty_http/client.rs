//! The network half of `request_uri`, on the shared outbound client
//! (`portico-outbound`: DNS, the pooled connector, the exchange and the cosocket-style
//! error words); what stays here is `resty.http`'s pool, its limits and the Lua table.

use std::sync::OnceLock;

use mlua::{Lua, Table};
use portico_outbound::{resolve_cached, Client, PeerSpec, Request, Response};

use super::params::Prepared;

/// Largest response body `request_uri` reads (the body becomes one Lua string).
pub const MAX_BODY: usize = 16 * 1024 * 1024;
/// Idle connections kept by the process-wide pool, over all hosts.
const POOL_SIZE: usize = 512;

/// The response as a Lua table: `status`, `reason`, `headers` (a name with several
/// values becomes a list), `body`.
pub(super) fn into_lua(resp: Response, lua: &Lua) -> mlua::Result<Table> {
    let head = &resp.header;
    let res = lua.create_table_with_capacity(0, 4)?;
    res.raw_set("status", head.status.as_u16())?;
    res.raw_set("reason", head.get_reason_phrase().unwrap_or(""))?;
    let headers = lua.create_table_with_capacity(0, head.headers.keys_len())?;
    for name in head.headers.keys() {
        let mut values = head.headers.get_all(name).iter();
        match (values.next(), values.next()) {
            (Some(v), None) => headers.raw_set(name.as_str(), lua.create_string(v.as_bytes())?)?,
            _ => {
                let list = lua.create_table()?;
                for v in head.headers.get_all(name) {
                    list.raw_push(lua.create_string(v.as_bytes())?)?;
                }
                headers.raw_set(name.as_str(), list)?;
            }
        }
    }
    res.raw_set("headers", headers)?;
    res.raw_set("body", lua.create_string(&resp.body)?)?;
    Ok(res)
}

/// The process-wide pooled client (built on first use). When the system CA store
/// cannot be loaded, every call fails with that message instead of the worker panicking.
fn client() -> Result<&'static Client, String> {
    static CLIENT: OnceLock<Result<Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| Client::new(POOL_SIZE).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| e.clone())
}

pub(super) async fn execute(p: Prepared) -> Result<Response, String> {
    let client = client()?;
    // Resolved through a short cache: Lua may call the same host many times a second.
    let addr = resolve_cached(&p.uri.host, p.uri.port, Some(p.connect))
        .await
        .map_err(|e| e.to_string())?;
    let peer = PeerSpec {
        tls: p.uri.tls,
        sni: p.sni.clone(),
        verify: p.verify,
        connect_timeout: Some(p.connect),
        total_connect_timeout: None,
    }
    .peer(addr);
    let request = Request {
        header: &p.header,
        body: &p.body,
        read_timeout: Some(p.read),
        write_timeout: Some(p.send),
        max_body: MAX_BODY,
        retry_stale: p.idempotent,
        keepalive: p.keepalive.then_some(p.idle),
    };
    client
        .request(&peer, &request)
        .await
        .map_err(|e| e.to_string())
}
