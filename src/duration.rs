//! Go-style durations ("10s", "1m30s", "500ms"): the API server writes its `?timeout=` query this way,
//! and using the same syntax in the config keeps one vocabulary for operators.

use std::time::Duration;

/// Parses a Go `time.Duration` string. Returns `None` for anything malformed, negative or overflowing.
pub fn parse_go_duration(input: &str) -> Option<Duration> {
    // Whole seconds or milliseconds, as the API server writes its timeout ("10s") on every review.
    let digits = input.bytes().take_while(u8::is_ascii_digit).count();
    if (1..=9).contains(&digits) {
        let whole = input
            .bytes()
            .take(digits)
            .fold(0_u64, |n, digit| n * 10 + u64::from(digit - b'0'));
        match &input[digits..] {
            "s" => return Some(Duration::from_secs(whole)),
            "ms" => return Some(Duration::from_millis(whole)),
            _ => {}
        }
    }
    let mut rest = input.trim();
    if rest.is_empty() {
        return None;
    }
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if number_len == 0 {
            return None;
        }
        let (number, after) = rest.split_at(number_len);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        total_nanos = total_nanos.checked_add(scaled(number, unit_nanos)?)?;
        rest = next;
    }
    let secs = u64::try_from(total_nanos / 1_000_000_000).ok()?;
    // The remainder is below one second, so it always fits in u32.
    let nanos = (total_nanos % 1_000_000_000) as u32;
    Some(Duration::new(secs, nanos))
}

fn scaled(number: &str, unit_nanos: u128) -> Option<u128> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    let mut value: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    value = value.checked_mul(unit_nanos)?;
    let mut scale = unit_nanos;
    for digit in fraction.bytes() {
        scale /= 10;
        value = value.checked_add(u128::from(digit.checked_sub(b'0')?) * scale)?;
    }
    Some(value)
}

/// Formats a duration the way it is written in the config (used in messages).
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis.is_multiple_of(1000) {
        format!("{}s", millis / 1000)
    } else {
        format!("{millis}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        let cases: &[(&str, Option<Duration>)] = &[
            ("10s", Some(Duration::from_secs(10))),
            ("010s", Some(Duration::from_secs(10))),
            (" 10s ", Some(Duration::from_secs(10))),
            ("999999999ms", Some(Duration::from_millis(999_999_999))),
            ("1000000000s", Some(Duration::from_secs(1_000_000_000))),
            ("10sm", None),
            ("0", Some(Duration::ZERO)),
            ("1m30s", Some(Duration::from_secs(90))),
            ("500ms", Some(Duration::from_millis(500))),
            ("1.5s", Some(Duration::from_millis(1500))),
            ("2h", Some(Duration::from_secs(7200))),
            ("250us", Some(Duration::from_micros(250))),
            ("7ns", Some(Duration::from_nanos(7))),
            ("", None),
            ("s", None),
            ("10", None),
            ("10x", None),
            ("-1s", None),
            ("1..5s", None),
            ("99999999999999999999999h", None),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_go_duration(input), *expected, "input {input:?}");
        }
    }

    #[test]
    fn formats_whole_seconds_and_millis() {
        assert_eq!(format_duration(Duration::from_secs(2)), "2s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }
}
