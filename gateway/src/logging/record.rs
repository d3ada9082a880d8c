//! What the access log knows of one finished request, gathered in the log phase (or by
//! the edge, for a request refused before routing).

use std::net::SocketAddr;
use std::time::SystemTime;

use crate::vars::RequestView;

/// The values an access log line is made of. Everything is borrowed from the request's
/// session and context; nothing is formatted until the line is.
pub struct LogRecord<'a> {
    /// The request; `None` for a request refused before it was parsed (a malformed head).
    pub view: Option<RequestView<'a>>,
    /// The client's address, also without a parsed request.
    pub client: Option<SocketAddr>,
    /// `HTTP/1.1`.
    pub protocol: &'a str,
    /// The status sent, 499 when the client went away first.
    pub status: u16,
    /// Response body bytes sent.
    pub body_bytes_sent: u64,
    /// Response bytes sent, header included.
    pub bytes_sent: u64,
    /// Request bytes received, header included.
    pub request_length: u64,
    /// From the request's first byte to the log phase, in seconds.
    pub request_time: f64,
    /// When the request finished.
    pub time: SystemTime,
    /// Every node tried, in order.
    pub upstream_addrs: &'a [SocketAddr],
    pub upstream_status: Option<u16>,
    /// Seconds from choosing the node to its response header.
    pub upstream_response_time: Option<f64>,
    /// `http` or `https` when an upstream was tried.
    pub upstream_scheme: Option<&'a str>,
    /// The Host header sent upstream.
    pub upstream_host: Option<&'a str>,
    /// The path and query sent upstream.
    pub upstream_uri: Option<&'a str>,
    pub route_id: Option<&'a str>,
    pub service_id: Option<&'a str>,
    /// The authenticated consumer's username.
    pub consumer_name: Option<&'a str>,
    /// The request-id plugin's header (`X-Request-Id`) or an id made for this line.
    pub request_id: Option<&'a str>,
}

impl LogRecord<'_> {
    /// A record with only the client and status known (the edge's refusals).
    pub fn bare(client: Option<SocketAddr>, status: u16) -> LogRecord<'static> {
        LogRecord {
            view: None,
            client,
            protocol: "HTTP/1.1",
            status,
            body_bytes_sent: 0,
            bytes_sent: 0,
            request_length: 0,
            request_time: 0.0,
            time: SystemTime::now(),
            upstream_addrs: &[],
            upstream_status: None,
            upstream_response_time: None,
            upstream_scheme: None,
            upstream_host: None,
            upstream_uri: None,
            route_id: None,
            service_id: None,
            consumer_name: None,
            request_id: None,
        }
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A UTC time broken down, for the log's time variables.
#[derive(Debug, Clone, Copy)]
pub struct UtcTime {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub millis: u32,
    /// Seconds since the epoch.
    pub epoch: u64,
}

impl UtcTime {
    pub fn of(t: SystemTime) -> UtcTime {
        let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        let secs = d.as_secs();
        let (year, month, day) = civil_from_days((secs / 86_400) as i64);
        let rem = secs % 86_400;
        UtcTime {
            year,
            month,
            day,
            hour: (rem / 3600) as u32,
            minute: (rem % 3600 / 60) as u32,
            second: (rem % 60) as u32,
            millis: d.subsec_millis(),
            epoch: secs,
        }
    }

    /// nginx's `$time_local` (always UTC here): `05/Dec/2026:07:14:49 +0000`.
    pub fn local_format(&self) -> String {
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let month = MONTHS[(self.month.clamp(1, 12) - 1) as usize];
        format!(
            "{:02}/{month}/{}:{:02}:{:02}:{:02} +0000",
            self.day, self.year, self.hour, self.minute, self.second
        )
    }

    /// nginx's `$time_iso8601`: `2026-12-05T07:14:49+00:00`.
    pub fn iso8601(&self) -> String {
        format!(
            "{}-{:02}-{:02}T{:02}:{:02}:{:02}+00:00",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }

    /// nginx's `$msec`: seconds with millisecond resolution.
    pub fn msec(&self) -> String {
        format!("{}.{:03}", self.epoch, self.millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_known_dates() {
        // 2026-12-05T07:14:49.123Z
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_454_889_123);
        let u = UtcTime::of(t);
        assert_eq!(u.local_format(), "05/Dec/2026:07:14:49 +0000");
        assert_eq!(u.iso8601(), "2026-12-05T07:14:49+00:00");
        assert_eq!(u.msec(), "1796454889.123");
        let leap = UtcTime::of(SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400));
        assert_eq!(leap.iso8601(), "2000-02-29T00:00:00+00:00");
        let epoch = UtcTime::of(SystemTime::UNIX_EPOCH);
        assert_eq!(epoch.local_format(), "01/Jan/1970:00:00:00 +0000");
    }
}
