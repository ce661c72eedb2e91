//! How log fields and times are written: logfmt quoting (`key=value`, the value quoted and
//! escaped when it holds a space, `=`, a quote or a control character), the same in the
//! text and the `logfmt` log formats and in the lines `/decisions` prints, and RFC 3339
//! times in UTC.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// A value as logfmt writes it: bare when it is a non-empty run of printable characters
/// other than space, `=` and `"`; otherwise quoted, with `\`, `"` and control characters
/// escaped.
pub fn value(s: &str) -> Cow<'_, str> {
    let bare = !s.is_empty()
        && s.chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && c != '=' && c != '"');
    if bare {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    Cow::Owned(out)
}

/// A time as RFC 3339 in UTC with milliseconds, e.g. `2026-12-03T12:17:23.042Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's `civil_from_days`).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Writes an event's or a span's fields as `key=value` pairs with [`value`] quoting.
///
/// `message_key: None` (the text format) puts the message first, bare, as
/// tracing-subscriber's own formatter does; `Some("msg")` (logfmt) makes it a field too.
#[derive(Debug, Clone, Copy)]
pub struct Fields {
    pub message_key: Option<&'static str>,
}

impl<'w> FormatFields<'w> for Fields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        mut writer: Writer<'w>,
        fields: R,
    ) -> fmt::Result {
        let mut v = Visitor {
            message_key: self.message_key,
            message: None,
            pairs: String::new(),
        };
        fields.record(&mut v);
        let mut out = String::new();
        if let Some(m) = v.message.take() {
            match self.message_key {
                None => out.push_str(&m),
                Some(key) => {
                    let _ = write!(out, "{key}={}", value(&m));
                }
            }
        }
        if !v.pairs.is_empty() {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(&v.pairs);
        }
        writer.write_str(&out)
    }
}

struct Visitor {
    message_key: Option<&'static str>,
    message: Option<String>,
    pairs: String,
}

impl Visitor {
    fn pair(&mut self, field: &Field, text: &str) {
        if field.name() == "message" {
            self.message = Some(text.to_string());
            return;
        }
        if !self.pairs.is_empty() {
            self.pairs.push(' ');
        }
        let name = field.name();
        // A field named like the message key would read as the message: prefix it.
        let name = match self.message_key {
            Some(key) if key == name => "field.msg",
            _ => name,
        };
        let _ = write!(self.pairs, "{name}={}", value(text));
    }
}

impl Visit for Visitor {
    fn record_str(&mut self, field: &Field, v: &str) {
        self.pair(field, v);
    }

    fn record_debug(&mut self, field: &Field, v: &dyn fmt::Debug) {
        self.pair(field, &format!("{v:?}"));
    }
}

/// The `--log-format logfmt` event format: `time=… level=… target=… msg=…`, then the
/// fields of the spans the event is in (outermost first), then its own.
#[derive(Debug, Default, Clone, Copy)]
pub struct Logfmt;

impl<S, N> FormatEvent<S, N> for Logfmt
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        write!(
            writer,
            "time={} level={} target={} ",
            rfc3339(SystemTime::now()),
            meta.level().as_str().to_ascii_lowercase(),
            value(meta.target())
        )?;
        ctx.format_fields(writer.by_ref(), event)?;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let ext = span.extensions();
                if let Some(f) = ext.get::<FormattedFields<N>>() {
                    if !f.is_empty() {
                        write!(writer, " {f}")?;
                    }
                }
            }
        }
        writeln!(writer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn values_with_spaces_quotes_or_equals_are_quoted_and_escaped() {
        assert_eq!(value("alice"), "alice");
        assert_eq!(value("127.0.0.1:5061"), "127.0.0.1:5061");
        assert_eq!(value(""), "\"\"");
        assert_eq!(value("two words"), "\"two words\"");
        assert_eq!(value("a=b"), "\"a=b\"");
        assert_eq!(
            value(r#"2000;reason="Temporarily unavailable""#),
            r#""2000;reason=\"Temporarily unavailable\"""#
        );
        assert_eq!(value("back\\slash x"), r#""back\\slash x""#);
        assert_eq!(value("line\nbreak"), r#""line\nbreak""#);
    }

    #[test]
    fn times_are_rfc3339_in_utc_with_milliseconds() {
        let at = |secs: u64, ms: u64| {
            rfc3339(UNIX_EPOCH + std::time::Duration::from_millis(secs * 1000 + ms))
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 7), "2000-02-29T00:00:00.007Z");
        assert_eq!(at(1_700_000_000, 999), "2023-11-14T22:13:20.999Z");
        assert_eq!(at(4_107_542_399, 0), "2100-02-28T23:59:59.000Z");
    }

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn log_one(logfmt: bool) -> String {
        let out = Captured::default();
        let sink = out.clone();
        let builder = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .without_time();
        let event = || {
            let span = tracing::info_span!("txn", call_id = "c 1");
            let _in = span.enter();
            tracing::info!(
                peer = %"127.0.0.1:5061",
                reason = "a \"quoted\" thing",
                n = 3,
                "peer said hi"
            );
        };
        if logfmt {
            let s = builder
                .fmt_fields(Fields {
                    message_key: Some("msg"),
                })
                .event_format(Logfmt)
                .finish();
            tracing::subscriber::with_default(s, event);
        } else {
            let s = builder.fmt_fields(Fields { message_key: None }).finish();
            tracing::subscriber::with_default(s, event);
        }
        let text = out.0.lock().unwrap().clone();
        String::from_utf8(text).unwrap()
    }

    #[test]
    fn the_logfmt_format_writes_every_field_as_a_quoted_key_value_pair() {
        let line = log_one(true);
        assert!(line.starts_with("time=") && line.ends_with('\n'), "{line}");
        let rest = line.split_once(' ').unwrap().1;
        assert_eq!(
            rest,
            "level=info target=sipedge::logfmt::tests msg=\"peer said hi\" peer=127.0.0.1:5061 reason=\"a \\\"quoted\\\" thing\" n=3 call_id=\"c 1\"\n"
        );
    }

    #[test]
    fn the_text_format_quotes_its_fields_the_logfmt_way() {
        let line = log_one(false);
        assert!(
            line.ends_with(
                "peer said hi peer=127.0.0.1:5061 reason=\"a \\\"quoted\\\" thing\" n=3\n"
            ),
            "{line}"
        );
        assert!(line.contains("txn{call_id=\"c 1\"}"), "{line}");
    }
}
