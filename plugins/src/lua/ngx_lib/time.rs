//! `ngx.now`, `time`, `update_time`, `today`, `localtime`, `utctime`,
//! `http_time`, `cookie_time`, `parse_http_time`.
//!
//! Local time is UTC: `ngx.localtime()` and `ngx.today()` give the same
//! clock as `ngx.utctime()` (the gateway's containers run in UTC).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use mlua::{Lua, Table, Value};

/// The VM's cached clock, in milliseconds since the epoch; 0 = stale, read the clock at
/// the next use. nginx refreshes its cached time once per event-loop pass; here every
/// slice of Lua marks it stale, so the clock is read only by code that asks for the time.
#[derive(Clone)]
pub(crate) struct TimeCache(Arc<AtomicU64>);

impl TimeCache {
    fn ms(&self) -> u64 {
        match self.0.load(Ordering::Relaxed) {
            0 => {
                let now = wall_ms();
                self.0.store(now, Ordering::Relaxed);
                now
            }
            ms => ms,
        }
    }

    /// The next read takes the time afresh.
    pub(crate) fn mark_stale(&self) {
        self.0.store(0, Ordering::Relaxed);
    }

    /// The VM's cache (installed with `ngx`).
    pub(crate) fn of(lua: &Lua) -> Option<TimeCache> {
        lua.app_data_ref::<TimeCache>().map(|c| c.clone())
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Refreshes the VM's cached time (what `ngx.update_time()` does), for runs that do not
/// go through a request slice (timers).
pub fn refresh_time(lua: &Lua) {
    if let Some(c) = lua.app_data_ref::<TimeCache>() {
        c.mark_stale();
    }
}

const WEEK: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Broken-down UTC time.
struct Tm {
    year: i64,
    month: u32, // 1..=12
    day: u32,
    hour: u32,
    min: u32,
    sec: u32,
    wday: usize, // 0 = Sunday
}

fn gmtime(t: i64) -> Tm {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    Tm {
        year,
        month,
        day,
        hour: (secs / 3600) as u32,
        min: (secs / 60 % 60) as u32,
        sec: (secs % 60) as u32,
        wday: (days + 4).rem_euclid(7) as usize,
    }
}

fn month_name(tm: &Tm) -> &'static str {
    MONTHS[(tm.month as usize).saturating_sub(1) % 12]
}

pub(crate) fn http_time(t: i64) -> String {
    let tm = gmtime(t);
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        WEEK[tm.wday],
        tm.day,
        month_name(&tm),
        tm.year,
        tm.hour,
        tm.min,
        tm.sec
    )
}

/// nginx's cookie time: two-digit years up to 2037, four digits after.
pub(crate) fn cookie_time(t: i64) -> String {
    let tm = gmtime(t);
    let year = if tm.year > 2037 {
        format!("{}", tm.year)
    } else {
        format!("{:02}", tm.year.rem_euclid(100))
    };
    format!(
        "{}, {:02}-{}-{} {:02}:{:02}:{:02} GMT",
        WEEK[tm.wday],
        tm.day,
        month_name(&tm),
        year,
        tm.hour,
        tm.min,
        tm.sec
    )
}

fn ymd_hms(t: i64) -> String {
    let tm = gmtime(t);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        tm.year, tm.month, tm.day, tm.hour, tm.min, tm.sec
    )
}

fn today(t: i64) -> String {
    let tm = gmtime(t);
    format!("{:04}-{:02}-{:02}", tm.year, tm.month, tm.day)
}

fn parse_http_time(s: &str) -> Option<i64> {
    let t = httpdate::parse_http_date(s.trim()).ok()?;
    t.duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs() as i64)
}

fn sec_arg(v: &Value, fname: &str) -> mlua::Result<i64> {
    match super::to_number(v) {
        Some(n) if n.is_finite() => Ok(n.trunc() as i64),
        _ => Err(mlua::Error::runtime(format!(
            "bad argument #1 to '{fname}' (number expected, got {})",
            super::type_name(v)
        ))),
    }
}

pub(super) fn install(lua: &Lua, ngx: &Table) -> mlua::Result<()> {
    let cache = match lua.app_data_ref::<TimeCache>() {
        Some(c) => c.clone(),
        None => {
            let c = TimeCache(Arc::new(AtomicU64::new(wall_ms())));
            lua.set_app_data(c.clone());
            c
        }
    };
    let secs = {
        let c = cache.clone();
        move || (c.ms() / 1000) as i64
    };
    let c = cache.clone();
    ngx.raw_set(
        "now",
        lua.create_function(move |_, ()| Ok(c.ms() as f64 / 1000.0))?,
    )?;
    let c = cache;
    ngx.raw_set(
        "update_time",
        lua.create_function(move |_, ()| {
            c.0.store(wall_ms(), Ordering::Relaxed);
            Ok(())
        })?,
    )?;
    let s = secs.clone();
    ngx.raw_set("time", lua.create_function(move |_, ()| Ok(s() as f64))?)?;
    let s = secs.clone();
    ngx.raw_set("today", lua.create_function(move |_, ()| Ok(today(s())))?)?;
    let s = secs.clone();
    ngx.raw_set(
        "localtime",
        lua.create_function(move |_, ()| Ok(ymd_hms(s())))?,
    )?;
    let s = secs;
    ngx.raw_set(
        "utctime",
        lua.create_function(move |_, ()| Ok(ymd_hms(s())))?,
    )?;
    ngx.raw_set(
        "http_time",
        lua.create_function(|_, t: Value| Ok(http_time(sec_arg(&t, "http_time")?)))?,
    )?;
    ngx.raw_set(
        "cookie_time",
        lua.create_function(|_, t: Value| Ok(cookie_time(sec_arg(&t, "cookie_time")?)))?,
    )?;
    ngx.raw_set(
        "parse_http_time",
        lua.create_function(|_, s: Value| match s {
            Value::String(s) => {
                let b = s.as_bytes();
                Ok(std::str::from_utf8(&b)
                    .ok()
                    .and_then(parse_http_time)
                    .map(|t| t as f64))
            }
            other => Err(mlua::Error::runtime(format!(
                "bad argument #1 to 'parse_http_time' (string expected, got {})",
                super::type_name(&other)
            ))),
        })?,
    )?;
    Ok(())
}
