//! Structured logs: one JSON object per line on stdout.
//!
//! Each line has `time` (RFC 3339, UTC, milliseconds), `level` (`DEBUG`, `INFO`, `WARN`,
//! `ERROR`), `msg`, then the fields in the order given — the shape of Go's `log/slog` JSON
//! handler, so the tools that read Kubernetes components' logs read these too. Bosun's
//! container log files keep stdout as written, and `kubectl logs` shows it.
//!
//! ```
//! use bosun_sdk::{info, warn};
//!
//! let port = 8080;
//! info!("listening", port = port, tls = false);
//! warn!("slow request", path = "/orders", millis = 840);
//! ```
//! prints
//! ```text
//! {"time":"2026-11-30T13:20:47.543Z","level":"INFO","msg":"listening","port":8080,"tls":false}
//! {"time":"2026-11-30T13:20:47.544Z","level":"WARN","msg":"slow request","path":"/orders","millis":840}
//! ```
//! The minimum level comes from the variable `LOG_LEVEL` (`debug`, `info`, `warn`, `error`;
//! default `info`).

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// How severe a line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
        }
    }

    /// `debug`, `info`, `warn` (or `warning`), `error`, in any case.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "debug" => Some(Level::Debug),
            "info" => Some(Level::Info),
            "warn" | "warning" => Some(Level::Warn),
            "error" => Some(Level::Error),
            _ => None,
        }
    }
}

/// The lowest level written: `LOG_LEVEL`, or `info`.
pub fn min_level() -> Level {
    static MIN: OnceLock<Level> = OnceLock::new();
    *MIN.get_or_init(|| {
        std::env::var("LOG_LEVEL")
            .ok()
            .and_then(|l| Level::parse(&l))
            .unwrap_or(Level::Info)
    })
}

/// A value a log field can hold.
pub trait Value {
    /// Appends the value as JSON.
    fn write_json(&self, out: &mut String);
}

impl Value for str {
    fn write_json(&self, out: &mut String) {
        write_json_string(out, self);
    }
}

impl Value for String {
    fn write_json(&self, out: &mut String) {
        write_json_string(out, self);
    }
}

impl Value for bool {
    fn write_json(&self, out: &mut String) {
        out.push_str(if *self { "true" } else { "false" });
    }
}

impl Value for char {
    fn write_json(&self, out: &mut String) {
        write_json_string(out, self.encode_utf8(&mut [0; 4]));
    }
}

macro_rules! integer_values {
    ($($t:ty)*) => {$(
        impl Value for $t {
            fn write_json(&self, out: &mut String) {
                let _ = write!(out, "{self}");
            }
        }
    )*};
}
integer_values!(u8 u16 u32 u64 u128 usize i8 i16 i32 i64 i128 isize);

impl Value for f64 {
    fn write_json(&self, out: &mut String) {
        if self.is_finite() {
            let _ = write!(out, "{self}");
        } else {
            // JSON has no NaN or infinity.
            write_json_string(out, &self.to_string());
        }
    }
}

impl Value for f32 {
    fn write_json(&self, out: &mut String) {
        f64::from(*self).write_json(out);
    }
}

impl<T: Value + ?Sized> Value for &T {
    fn write_json(&self, out: &mut String) {
        (**self).write_json(out);
    }
}

impl<T: Value> Value for Option<T> {
    fn write_json(&self, out: &mut String) {
        match self {
            Some(v) => v.write_json(out),
            None => out.push_str("null"),
        }
    }
}

/// A value written with its `Display` (addresses, errors, paths): `field = display(&addr)`.
pub struct Display<T>(pub T);

/// Logs `value` through its `Display` implementation, as a string.
pub fn display<T: std::fmt::Display>(value: T) -> Display<T> {
    Display(value)
}

impl<T: std::fmt::Display> Value for Display<T> {
    fn write_json(&self, out: &mut String) {
        write_json_string(out, &self.0.to_string());
    }
}

/// The line for `msg` with `fields` at `level`, at `now`, without the newline.
pub fn format_line(
    now: SystemTime,
    level: Level,
    msg: &str,
    fields: &[(&str, &dyn Value)],
) -> String {
    let mut out = String::with_capacity(96);
    out.push_str("{\"time\":\"");
    write_rfc3339(&mut out, now);
    out.push_str("\",\"level\":\"");
    out.push_str(level.as_str());
    out.push_str("\",\"msg\":");
    write_json_string(&mut out, msg);
    for (key, value) in fields {
        out.push(',');
        write_json_string(&mut out, key);
        out.push(':');
        value.write_json(&mut out);
    }
    out.push('}');
    out
}

/// Writes one line to stdout if `level` is at least [`min_level`]. The macros call this.
pub fn emit(level: Level, msg: &str, fields: &[(&str, &dyn Value)]) {
    if level < min_level() {
        return;
    }
    let mut line = format_line(SystemTime::now(), level, msg, fields);
    line.push('\n');
    // One write per line, so lines of concurrent writers never interleave.
    let _ = std::io::stdout().lock().write_all(line.as_bytes());
}

/// Logs at `level`: `log!(Level::Info, "msg", key = value, …)`.
#[macro_export]
macro_rules! log {
    ($level:expr, $msg:expr $(, $key:ident = $value:expr)* $(,)?) => {
        $crate::log::emit(
            $level,
            &$msg,
            &[$((stringify!($key), &$value as &dyn $crate::log::Value)),*],
        )
    };
}

/// Logs at DEBUG: `debug!("msg", key = value, …)`.
#[macro_export]
macro_rules! debug {
    ($($t:tt)*) => { $crate::log!($crate::log::Level::Debug, $($t)*) };
}

/// Logs at INFO: `info!("msg", key = value, …)`.
#[macro_export]
macro_rules! info {
    ($($t:tt)*) => { $crate::log!($crate::log::Level::Info, $($t)*) };
}

/// Logs at WARN: `warn!("msg", key = value, …)`.
#[macro_export]
macro_rules! warn {
    ($($t:tt)*) => { $crate::log!($crate::log::Level::Warn, $($t)*) };
}

/// Logs at ERROR: `error!("msg", key = value, …)`.
#[macro_export]
macro_rules! error {
    ($($t:tt)*) => { $crate::log!($crate::log::Level::Error, $($t)*) };
}

fn write_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn write_rfc3339(out: &mut String, t: SystemTime) {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    );
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's algorithm).
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn lines_are_slog_shaped_json() {
        let at = UNIX_EPOCH + Duration::from_millis(1_796_045_247_543);
        let path = "/a \"b\"\n";
        let line = format_line(
            at,
            Level::Warn,
            "slow",
            &[
                ("path", &path),
                ("millis", &840u32),
                ("ok", &false),
                ("ratio", &0.5f64),
                ("peer", &display("10.88.0.7:5000")),
                ("gone", &None::<u8>),
            ],
        );
        assert_eq!(
            line,
            r#"{"time":"2026-11-30T13:27:27.543Z","level":"WARN","msg":"slow","path":"/a \"b\"\n","millis":840,"ok":false,"ratio":0.5,"peer":"10.88.0.7:5000","gone":null}"#
        );
    }

    #[test]
    fn dates_cross_leap_years_and_month_ends() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(11_017), (2000, 3, 1));
        assert_eq!(civil_from_days(20_818), (2026, 12, 31));
    }

    #[test]
    fn levels_parse_in_any_case() {
        assert_eq!(Level::parse("WARNING"), Some(Level::Warn));
        assert_eq!(Level::parse(" debug"), Some(Level::Debug));
        assert_eq!(Level::parse("loud"), None);
        assert!(Level::Error > Level::Info);
    }
}
