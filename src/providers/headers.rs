//! Reading the rate-limit headers upstreams send: `Retry-After`, `retry-after-ms` and OpenAI's
//! `x-ratelimit-*` family.
//!
//! Pure functions: the clock comes in as an argument, so an HTTP-date `Retry-After` is tested
//! without waiting. Anything unparseable reads as "not sent" rather than as an error, because a
//! garbled hint must never fail a call that otherwise succeeded.

use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;

use super::RateHints;

/// Parses a `Retry-After` value: whole or decimal seconds (`"30"`, `"1.5"`) or an HTTP date.
///
/// A date already past means "retry now" (`Some(Duration::ZERO)`); negative numbers, garbage and
/// empty values are `None`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if value.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        return parse_seconds(value);
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Parses OpenAI's reset format, a Go-style duration (`"1s"`, `"6m0s"`, `"20ms"`,
/// `"1h2m3.5s"`), or a bare number of seconds.
pub fn parse_reset(value: &str) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if let Some(plain) = parse_seconds(value) {
        return Some(plain);
    }
    let mut rest = value;
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let amount: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit_secs, unit_len) =
            UNITS.iter().find(|(unit, _)| rest.starts_with(unit)).map(|(unit, secs)| (*secs, unit.len()))?;
        rest = &rest[unit_len..];
        total = total.checked_add(Duration::try_from_secs_f64(amount * unit_secs).ok()?)?;
    }
    Some(total)
}

/// Go duration units with their length in seconds, longest spelling first so that `"ms"` is not
/// read as minutes followed by garbage.
const UNITS: [(&str, f64); 7] =
    [("ms", 1e-3), ("us", 1e-6), ("µs", 1e-6), ("ns", 1e-9), ("h", 3600.0), ("m", 60.0), ("s", 1.0)];

/// The `x-ratelimit-*` headers of a reply, each `None` when absent or unreadable.
pub fn rate_hints(headers: &HeaderMap) -> RateHints {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let count = |name: &str| text(name).and_then(|v| v.trim().parse::<u64>().ok());
    let reset = |name: &str| text(name).and_then(parse_reset);
    RateHints {
        limit_requests: count("x-ratelimit-limit-requests"),
        remaining_requests: count("x-ratelimit-remaining-requests"),
        reset_requests: reset("x-ratelimit-reset-requests"),
        limit_tokens: count("x-ratelimit-limit-tokens"),
        remaining_tokens: count("x-ratelimit-remaining-tokens"),
        reset_tokens: reset("x-ratelimit-reset-tokens"),
    }
}

/// How long the upstream asks us to wait: `retry-after-ms` (milliseconds, the more precise one
/// OpenAI sends) first, then `retry-after`.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(ms) = text("retry-after-ms").and_then(parse_seconds) {
        // parse_seconds read the number as seconds; the header is in milliseconds.
        return Some(ms / 1000);
    }
    text("retry-after").and_then(|v| parse_retry_after(v, now))
}

/// A non-negative decimal number of seconds (`"2"`, `"0.25"`); signs, exponents, `inf` and `NaN`
/// are refused because no upstream sends them on purpose.
fn parse_seconds(value: &str) -> Option<Duration> {
    let value = value.trim();
    let well_formed = !value.is_empty()
        && value.chars().all(|c| c.is_ascii_digit() || c == '.')
        && value.chars().filter(|&c| c == '.').count() <= 1
        && value.chars().any(|c| c.is_ascii_digit());
    if !well_formed {
        return None;
    }
    Duration::try_from_secs_f64(value.parse().ok()?).ok()
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn retry_after_reads_whole_and_decimal_seconds() {
        assert_eq!(parse_retry_after("30", at(0)), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after(" 1.5 ", at(0)), Some(Duration::from_millis(1500)));
        assert_eq!(parse_retry_after("0", at(0)), Some(Duration::ZERO));
    }

    #[test]
    fn retry_after_date_is_honoured() {
        // 1994-11-06 08:49:37 UTC is 784111777 s after the epoch.
        let date = "Sun, 06 Nov 1994 08:49:37 GMT";
        assert_eq!(parse_retry_after(date, at(784_111_777 - 90)), Some(Duration::from_secs(90)));
    }

    #[test]
    fn retry_after_date_in_the_past_means_now() {
        let date = "Sun, 06 Nov 1994 08:49:37 GMT";
        assert_eq!(parse_retry_after(date, at(784_111_777 + 5)), Some(Duration::ZERO));
    }

    #[test]
    fn retry_after_refuses_negative_and_garbage() {
        for bad in ["", "  ", "-1", "soon", "1e3", "1.2.3", "inf", "NaN", ".", "Sun, 99 Foo"] {
            assert_eq!(parse_retry_after(bad, at(0)), None, "{bad:?}");
        }
    }

    #[test]
    fn reset_reads_go_durations_and_plain_seconds() {
        assert_eq!(parse_reset("1s"), Some(Duration::from_secs(1)));
        assert_eq!(parse_reset("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(parse_reset("20ms"), Some(Duration::from_millis(20)));
        assert_eq!(parse_reset("1h2m3.5s"), Some(Duration::from_millis(3_723_500)));
        assert_eq!(parse_reset("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_reset("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_reset("12"), Some(Duration::from_secs(12)));
    }

    #[test]
    fn reset_refuses_garbage() {
        for bad in ["", "s", "1x", "-1s", "1s2", "ms", "1.2.3s"] {
            assert_eq!(parse_reset(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn rate_hints_read_openai_headers() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("x-ratelimit-limit-requests", "500"),
            ("x-ratelimit-remaining-requests", "499"),
            ("x-ratelimit-reset-requests", "120ms"),
            ("x-ratelimit-limit-tokens", "30000"),
            ("x-ratelimit-remaining-tokens", "29000"),
            ("x-ratelimit-reset-tokens", "2s"),
        ] {
            headers.insert(name, HeaderValue::from_static(value));
        }
        assert_eq!(
            rate_hints(&headers),
            RateHints {
                limit_requests: Some(500),
                remaining_requests: Some(499),
                reset_requests: Some(Duration::from_millis(120)),
                limit_tokens: Some(30_000),
                remaining_tokens: Some(29_000),
                reset_tokens: Some(Duration::from_secs(2)),
            }
        );
    }

    #[test]
    fn rate_hints_skip_unreadable_values() {
        let mut headers = HeaderMap::new();
        headers.insert("x-ratelimit-limit-requests", HeaderValue::from_static("lots"));
        headers.insert("x-ratelimit-reset-tokens", HeaderValue::from_static("1s"));
        let hints = rate_hints(&headers);
        assert_eq!(hints.limit_requests, None);
        assert_eq!(hints.reset_tokens, Some(Duration::from_secs(1)));
        assert!(rate_hints(&HeaderMap::new()).is_empty());
    }

    #[test]
    fn retry_after_ms_wins_over_retry_after() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after(&headers, at(0)), Some(Duration::from_secs(2)));
        headers.insert("retry-after-ms", HeaderValue::from_static("1250"));
        assert_eq!(retry_after(&headers, at(0)), Some(Duration::from_millis(1250)));
    }

    #[test]
    fn retry_after_falls_back_when_ms_is_garbage() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after-ms", HeaderValue::from_static("-5"));
        headers.insert("retry-after", HeaderValue::from_static("3"));
        assert_eq!(retry_after(&headers, at(0)), Some(Duration::from_secs(3)));
        assert_eq!(retry_after(&HeaderMap::new(), at(0)), None);
    }
}
