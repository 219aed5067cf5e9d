//! Times in parameters and answers: RFC 3339 outside, µs since the epoch inside (as events and
//! the index hold them).

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::ApiError;

/// Parses the RFC 3339 value of parameter `name` into µs since the epoch.
pub fn parse_micros(name: &str, value: &str) -> Result<i64, ApiError> {
    let time = OffsetDateTime::parse(value, &Rfc3339).map_err(|error| {
        ApiError::BadRequest(format!(
            "`{name}` must be an RFC 3339 time such as 2026-01-31T00:00:00Z, but {value:?} is not: {error}"
        ))
    })?;
    i64::try_from(time.unix_timestamp_nanos() / 1_000)
        .map_err(|_| ApiError::BadRequest(format!("`{name}` is out of range")))
}

/// Formats µs since the epoch as RFC 3339 (UTC).
pub fn format_micros(micros: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
        .ok()
        .and_then(|time| time.format(&Rfc3339).ok())
        .unwrap_or_else(|| micros.to_string())
}

/// Now, in µs since the epoch.
pub fn now_micros() -> i64 {
    i64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000).unwrap_or_default()
}

/// A required period `from` (inclusive) .. `to` (exclusive).
pub fn period(from: Option<&str>, to: Option<&str>) -> Result<(i64, i64), ApiError> {
    let from = from.ok_or_else(|| ApiError::BadRequest("`from` is required (RFC 3339)".into()))?;
    let to = to.ok_or_else(|| ApiError::BadRequest("`to` is required (RFC 3339)".into()))?;
    let (from, to) = (parse_micros("from", from)?, parse_micros("to", to)?);
    if from >= to {
        return Err(ApiError::BadRequest("`from` must be before `to`".into()));
    }
    Ok((from, to))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_and_bad_ones_name_the_parameter() {
        let micros = parse_micros("from", "2026-03-01T12:00:00.000001Z").unwrap();
        assert_eq!(format_micros(micros), "2026-03-01T12:00:00.000001Z");
        let error = parse_micros("from", "yesterday").unwrap_err().to_string();
        assert!(error.contains("`from`"), "{error}");
        assert!(period(Some("2026-03-02T00:00:00Z"), Some("2026-03-01T00:00:00Z")).is_err());
        assert!(period(None, Some("2026-03-01T00:00:00Z")).is_err());
    }
}
