//! Durations given in seconds (flags, config files, the environment): one parser and one range
//! for all of them, so no setting can overflow a `Duration` or an `Instant` later (a panic) or
//! be zero, negative or not a number.

use std::time::Duration;

/// The longest duration kiln takes: a year.
pub const MAX_SECONDS: f64 = 366.0 * 24.0 * 3600.0;

/// A number of seconds that kiln refuses.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("`{given}` is not a number of seconds between 0 and {max} (a year)", max = MAX_SECONDS)]
pub struct SecondsError {
    /// What was given.
    pub given: String,
}

/// `text` as a duration: a positive, finite number of seconds up to [`MAX_SECONDS`].
pub fn parse_seconds(text: &str) -> Result<Duration, SecondsError> {
    let refuse = || SecondsError {
        given: text.to_owned(),
    };
    let v: f64 = text.trim().parse().map_err(|_| refuse())?;
    seconds(v).map_err(|_| refuse())
}

/// `v` seconds as a duration, within the same range as [`parse_seconds`].
pub fn seconds(v: f64) -> Result<Duration, SecondsError> {
    if v > 0.0 && v <= MAX_SECONDS {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(SecondsError {
            given: v.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_in_range_are_durations() {
        assert_eq!(parse_seconds("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_seconds(" 0.5 "), Ok(Duration::from_millis(500)));
        assert_eq!(
            seconds(MAX_SECONDS),
            Ok(Duration::from_secs_f64(MAX_SECONDS))
        );
    }

    #[test]
    fn huge_zero_negative_and_non_numbers_are_refused() {
        for bad in [
            "18446744073709551615",
            "9223372036854775807",
            "1e300",
            "inf",
            "NaN",
            "0",
            "-1",
            "",
            "ten",
        ] {
            assert!(parse_seconds(bad).is_err(), "{bad}");
        }
        assert!(seconds(f64::MAX).is_err());
    }
}
