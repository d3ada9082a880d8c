//! The error log: `tracing` on stderr, filtered by `PORTICO_LOG`, else `log.level`
//! (default `info`; changed live by `SIGHUP`), as
//! text or (`log.json: true`) one JSON object per line:
//! `{"time":"...","level":"INFO","target":"portico::server","message":"...",<fields>}`.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use super::record::UtcTime;

/// Installs the global subscriber. Call once, early. Its filter can be changed later
/// ([`super::filter::set_level`]).
pub fn init(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PORTICO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        let builder = builder.event_format(JsonLines).with_filter_reloading();
        let handle = builder.reload_handle();
        super::filter::install(Box::new(move |f| {
            handle.reload(f).map_err(|e| e.to_string())
        }));
        builder.init();
    } else {
        let builder = builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_filter_reloading();
        let handle = builder.reload_handle();
        super::filter::install(Box::new(move |f| {
            handle.reload(f).map_err(|e| e.to_string())
        }));
        builder.init();
    }
}

/// One JSON object per event.
pub struct JsonLines;

struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_string(), Value::from(format!("{value:?}")));
    }
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let now = UtcTime::of(std::time::SystemTime::now());
        let mut obj = Map::new();
        obj.insert(
            "time".into(),
            Value::from(format!(
                "{}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                now.year, now.month, now.day, now.hour, now.minute, now.second, now.millis
            )),
        );
        obj.insert("level".into(), Value::from(meta.level().as_str()));
        obj.insert("target".into(), Value::from(meta.target()));
        let mut fields = Fields(Map::new());
        event.record(&mut fields);
        obj.extend(fields.0);
        let line = serde_json::to_string(&Value::Object(obj)).map_err(|_| fmt::Error)?;
        writeln!(writer, "{line}")
    }
}
