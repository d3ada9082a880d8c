//! The access log format: `$var` names and literal text, parsed once at startup into a
//! list of [`Segment`]s; per request a line is only the segments written in order.

use std::borrow::Cow;
use std::io::Write;

use super::record::{LogRecord, UtcTime};
use crate::vars::Var;

/// A variable of the access log: a request variable (the same as `vars` and `ngx.var`)
/// or one known once the request is over.
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    Request(Var),
    Status,
    BodyBytesSent,
    BytesSent,
    RequestLength,
    RequestTime,
    TimeLocal,
    TimeIso8601,
    Msec,
    RemoteUser,
    /// The request line: `GET /a?b HTTP/1.1`.
    RequestLine,
    ServerProtocol,
    UpstreamAddr,
    UpstreamStatus,
    UpstreamResponseTime,
    UpstreamScheme,
    UpstreamHost,
    UpstreamUri,
    RouteId,
    ServiceId,
    ConsumerName,
    RequestId,
}

impl Field {
    fn parse(name: &str) -> Result<Field, String> {
        Ok(match name {
            "status" => Field::Status,
            "body_bytes_sent" => Field::BodyBytesSent,
            "bytes_sent" => Field::BytesSent,
            "request_length" => Field::RequestLength,
            "request_time" => Field::RequestTime,
            "time_local" => Field::TimeLocal,
            "time_iso8601" => Field::TimeIso8601,
            "msec" => Field::Msec,
            "remote_user" => Field::RemoteUser,
            "request" => Field::RequestLine,
            "server_protocol" => Field::ServerProtocol,
            "upstream_addr" => Field::UpstreamAddr,
            "upstream_status" => Field::UpstreamStatus,
            "upstream_response_time" => Field::UpstreamResponseTime,
            "upstream_scheme" => Field::UpstreamScheme,
            "upstream_host" => Field::UpstreamHost,
            "upstream_uri" => Field::UpstreamUri,
            "route_id" => Field::RouteId,
            "service_id" => Field::ServiceId,
            "consumer_name" => Field::ConsumerName,
            "request_id" => Field::RequestId,
            other => Field::Request(Var::parse(other)?),
        })
    }
}

/// One piece of a line.
#[derive(Debug, Clone, PartialEq)]
pub enum Segment {
    Literal(String),
    /// The variable and its name as written (the JSON member name).
    Field(Field, String),
}

/// A parsed format.
#[derive(Debug, Clone)]
pub struct LogFormat {
    segments: Vec<Segment>,
    json: bool,
}

/// A variable's value for one request.
enum Value<'a> {
    Str(Cow<'a, str>),
    Int(u64),
    Seconds(f64),
    Missing,
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

impl LogFormat {
    /// Parses `format`; `json` makes each line a JSON object of the variables (literal
    /// text is left out). The error names the unknown variable.
    pub fn parse(format: &str, json: bool) -> Result<LogFormat, String> {
        let bytes = format.as_bytes();
        let mut segments = Vec::new();
        let mut literal = String::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] != b'$' {
                let next = format[i..].find('$').map_or(bytes.len(), |n| i + n);
                literal.push_str(&format[i..next]);
                i = next;
                continue;
            }
            let (name, end) = if bytes.get(i + 1) == Some(&b'{') {
                let close = format[i + 2..]
                    .find('}')
                    .ok_or_else(|| format!("`${{` at byte {i} is not closed"))?;
                (&format[i + 2..i + 2 + close], i + 3 + close)
            } else {
                let len = bytes[i + 1..]
                    .iter()
                    .take_while(|b| is_name_byte(**b))
                    .count();
                (&format[i + 1..i + 1 + len], i + 1 + len)
            };
            if name.is_empty() {
                literal.push('$');
                i += 1;
                continue;
            }
            if !literal.is_empty() {
                segments.push(Segment::Literal(std::mem::take(&mut literal)));
            }
            segments.push(Segment::Field(Field::parse(name)?, name.to_string()));
            i = end;
        }
        if !literal.is_empty() {
            segments.push(Segment::Literal(literal));
        }
        if json {
            // One member per variable, in first-use order.
            let mut seen = std::collections::HashSet::new();
            segments.retain(|s| match s {
                Segment::Field(_, name) => seen.insert(name.clone()),
                Segment::Literal(_) => false,
            });
        }
        Ok(LogFormat { segments, json })
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Whether a line needs `$request_id` (made up per request when the request-id
    /// plugin did not set one).
    pub fn uses_request_id(&self) -> bool {
        self.segments
            .iter()
            .any(|s| matches!(s, Segment::Field(Field::RequestId, _)))
    }

    /// Appends one line (with its newline) for `rec` to `out`.
    pub fn write_line(&self, rec: &LogRecord<'_>, out: &mut Vec<u8>) {
        // Computed at most once per line, only when a time variable is used.
        let mut time: Option<UtcTime> = None;
        if self.json {
            out.push(b'{');
            for (n, seg) in self.segments.iter().enumerate() {
                let Segment::Field(field, name) = seg else {
                    continue;
                };
                if n > 0 {
                    out.push(b',');
                }
                write_json_str(out, name);
                out.push(b':');
                match value(field, rec, &mut time) {
                    Value::Str(s) => write_json_str(out, &s),
                    Value::Int(v) => {
                        let _ = write!(out, "{v}");
                    }
                    Value::Seconds(v) => {
                        let _ = write!(out, "{v:.3}");
                    }
                    Value::Missing => out.extend_from_slice(b"null"),
                }
            }
            out.extend_from_slice(b"}\n");
            return;
        }
        for seg in &self.segments {
            match seg {
                Segment::Literal(text) => out.extend_from_slice(text.as_bytes()),
                Segment::Field(field, _) => match value(field, rec, &mut time) {
                    Value::Str(s) if s.is_empty() => out.push(b'-'),
                    Value::Str(s) => write_escaped(out, &s),
                    Value::Int(v) => {
                        let _ = write!(out, "{v}");
                    }
                    Value::Seconds(v) => {
                        let _ = write!(out, "{v:.3}");
                    }
                    Value::Missing => out.push(b'-'),
                },
            }
        }
        out.push(b'\n');
    }
}

fn opt_str<'a>(v: Option<&'a str>) -> Value<'a> {
    v.map_or(Value::Missing, |s| Value::Str(Cow::Borrowed(s)))
}

fn value<'a>(field: &Field, rec: &LogRecord<'a>, time: &mut Option<UtcTime>) -> Value<'a> {
    let mut utc = || *time.get_or_insert_with(|| UtcTime::of(rec.time));
    match field {
        Field::Request(var) => match (&rec.view, var) {
            (Some(view), var) => var.resolve(view).map_or(Value::Missing, Value::Str),
            (None, Var::RemoteAddr) => rec
                .client
                .map_or(Value::Missing, |a| Value::Str(a.ip().to_string().into())),
            (None, Var::RemotePort) => rec
                .client
                .map_or(Value::Missing, |a| Value::Int(u64::from(a.port()))),
            (None, _) => Value::Missing,
        },
        Field::Status => Value::Int(u64::from(rec.status)),
        Field::BodyBytesSent => Value::Int(rec.body_bytes_sent),
        Field::BytesSent => Value::Int(rec.bytes_sent),
        Field::RequestLength => Value::Int(rec.request_length),
        Field::RequestTime => Value::Seconds(rec.request_time),
        Field::TimeLocal => Value::Str(utc().local_format().into()),
        Field::TimeIso8601 => Value::Str(utc().iso8601().into()),
        Field::Msec => Value::Str(utc().msec().into()),
        Field::RemoteUser | Field::ConsumerName => opt_str(rec.consumer_name),
        Field::RequestLine => match &rec.view {
            Some(v) => Value::Str(Cow::Owned(match v.query {
                Some(q) => format!("{} {}?{} {}", v.method, v.path, q, rec.protocol),
                None => format!("{} {} {}", v.method, v.path, rec.protocol),
            })),
            None => Value::Missing,
        },
        Field::ServerProtocol => Value::Str(Cow::Borrowed(rec.protocol)),
        Field::UpstreamAddr if rec.upstream_addrs.is_empty() => Value::Missing,
        Field::UpstreamAddr => Value::Str(Cow::Owned(
            rec.upstream_addrs
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        )),
        Field::UpstreamStatus => rec
            .upstream_status
            .map_or(Value::Missing, |s| Value::Int(u64::from(s))),
        Field::UpstreamResponseTime => rec
            .upstream_response_time
            .map_or(Value::Missing, Value::Seconds),
        Field::UpstreamScheme => opt_str(rec.upstream_scheme),
        Field::UpstreamHost => opt_str(rec.upstream_host),
        Field::UpstreamUri => opt_str(rec.upstream_uri),
        Field::RouteId => opt_str(rec.route_id),
        Field::ServiceId => opt_str(rec.service_id),
        Field::RequestId => opt_str(rec.request_id),
    }
}

/// nginx's escaping of variables in a text log line: `"`, `\`, control bytes and bytes
/// above 0x7e as `\xHH`.
fn write_escaped(out: &mut Vec<u8>, s: &str) {
    for &b in s.as_bytes() {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            let _ = write!(out, "\\x{b:02X}");
        } else {
            out.push(b);
        }
    }
}

fn write_json_str(out: &mut Vec<u8>, s: &str) {
    // Serializing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::time::{Duration, SystemTime};

    fn with_record(f: impl FnOnce(&LogRecord<'_>)) {
        let mut headers = http::HeaderMap::new();
        headers.insert("user-agent", "curl/8 \"x\"".parse().unwrap());
        headers.insert("host", "example.com".parse().unwrap());
        let view = crate::vars::RequestView {
            method: "GET",
            path: "/a",
            query: Some("b=1"),
            host: "example.com",
            headers: &headers,
            remote_addr: Some("10.0.0.1".parse().unwrap()),
            remote_port: Some(5555),
            server_port: Some(9080),
            scheme: "http",
            consumer_name: None,
        };
        let addrs: Vec<SocketAddr> = vec!["127.0.0.1:1".parse().unwrap()];
        let mut rec = LogRecord::bare(None, 200);
        rec.view = Some(view);
        rec.time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_454_889);
        rec.body_bytes_sent = 12;
        rec.request_time = 0.0042;
        rec.upstream_addrs = &addrs;
        rec.upstream_status = Some(200);
        rec.route_id = Some("r1");
        f(&rec);
    }

    #[test]
    fn default_format_renders_a_combined_line() {
        let fmt = LogFormat::parse(super::super::DEFAULT_ACCESS_FORMAT, false).unwrap();
        with_record(|rec| {
            let mut out = Vec::new();
            fmt.write_line(rec, &mut out);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                "10.0.0.1 - - [05/Dec/2026:07:14:49 +0000] example.com \"GET /a?b=1 HTTP/1.1\" 200 12 0.004 \"-\" \"curl/8 \\x22x\\x22\" 127.0.0.1:1 200 - \"-://--\"\n"
            );
        });
    }

    #[test]
    fn json_lines_have_one_member_per_variable() {
        let fmt = LogFormat::parse(
            "$status $status ${route_id}x $http_user_agent $arg_b $upstream_uri",
            true,
        )
        .unwrap();
        with_record(|rec| {
            let mut out = Vec::new();
            fmt.write_line(rec, &mut out);
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(
                v,
                serde_json::json!({"status": 200, "route_id": "r1", "http_user_agent": "curl/8 \"x\"", "arg_b": "1", "upstream_uri": null})
            );
        });
    }

    #[test]
    fn unknown_variables_are_named_and_lone_dollars_kept() {
        let err = LogFormat::parse("$status $nope", false).unwrap_err();
        assert!(err.contains("nope"), "{err}");
        let fmt = LogFormat::parse("cost: $ 5", false).unwrap();
        assert_eq!(fmt.segments(), &[Segment::Literal("cost: $ 5".into())]);
        assert!(LogFormat::parse("${status", false).is_err());
    }
}
