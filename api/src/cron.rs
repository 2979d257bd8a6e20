//! Cron schedules as CronJobs write them: five fields (minute, hour, day of month, month, day
//! of week) or a macro (`@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`, `@midnight`,
//! `@hourly`).
//!
//! Each field is a comma-separated list of `*`, a value, a range `a-b`, each optionally with a
//! step (`*/15`, `1-30/2`, `5/10` meaning `5-max/10`). Months and weekdays take names (`jan`,
//! `mon`, case-insensitive); weekday 7 is Sunday, like 0; `?` means `*` in the day fields. As in
//! classic cron, when both day fields are restricted a day matching either one runs.
//!
//! No I/O and no clock: the caller walks civil times in the CronJob's time zone and asks
//! [`Schedule::matches`].

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    /// The day-of-month field was `*` (or `?`).
    any_day: bool,
    /// The day-of-week field was `*` (or `?`).
    any_weekday: bool,
}

/// Why a schedule was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid schedule {schedule:?}: {reason}")]
pub struct ParseError {
    pub schedule: String,
    pub reason: String,
}

const MONTHS: &[&str] = &[
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const FIELDS: [Field; 5] = [
    Field {
        name: "minute",
        min: 0,
        max: 59,
        names: &[],
    },
    Field {
        name: "hour",
        min: 0,
        max: 23,
        names: &[],
    },
    Field {
        name: "day of month",
        min: 1,
        max: 31,
        names: &[],
    },
    Field {
        name: "month",
        min: 1,
        max: 12,
        names: MONTHS,
    },
    Field {
        name: "day of week",
        min: 0,
        max: 7,
        names: WEEKDAYS,
    },
];

impl Schedule {
    pub fn parse(input: &str) -> Result<Self, ParseError> {
        let fail = |reason: String| ParseError {
            schedule: input.to_string(),
            reason,
        };
        let trimmed = input.trim();
        let expanded = match trimmed.to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => "0 0 1 1 *".to_string(),
            "@monthly" => "0 0 1 * *".to_string(),
            "@weekly" => "0 0 * * 0".to_string(),
            "@daily" | "@midnight" => "0 0 * * *".to_string(),
            "@hourly" => "0 * * * *".to_string(),
            other if other.starts_with('@') => {
                return Err(fail(format!("unknown macro {trimmed:?}")));
            }
            _ => trimmed.to_string(),
        };
        if expanded.starts_with("TZ=") || expanded.starts_with("CRON_TZ=") {
            return Err(fail(
                "a time zone in the schedule is not allowed: use spec.timeZone".to_string(),
            ));
        }
        let parts: Vec<&str> = expanded.split_whitespace().collect();
        if parts.len() != 5 {
            return Err(fail(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week), found {}",
                parts.len()
            )));
        }
        let mut sets = [0u64; 5];
        for (i, (part, field)) in parts.iter().zip(FIELDS.iter()).enumerate() {
            sets[i] = parse_field(part, field).map_err(fail)?;
        }
        // Sunday is 0 and 7.
        if sets[4] & (1 << 7) != 0 {
            sets[4] = (sets[4] | 1) & !(1 << 7);
        }
        let star = |p: &str| p == "*" || p == "?";
        Ok(Self {
            minutes: sets[0],
            hours: sets[1],
            days: sets[2],
            months: sets[3],
            weekdays: sets[4],
            any_day: star(parts[2]),
            any_weekday: star(parts[4]),
        })
    }

    /// Whether the schedule fires at this civil minute (`weekday`: 0 = Sunday).
    pub fn matches(&self, month: u32, day: u32, weekday: u32, hour: u32, minute: u32) -> bool {
        self.month_matches(month)
            && self.day_matches(day, weekday)
            && bit(self.hours, hour)
            && bit(self.minutes, minute)
    }

    pub fn month_matches(&self, month: u32) -> bool {
        bit(self.months, month)
    }

    pub fn day_matches(&self, day: u32, weekday: u32) -> bool {
        let by_day = bit(self.days, day);
        let by_weekday = bit(self.weekdays, weekday);
        match (self.any_day, self.any_weekday) {
            (true, true) => true,
            (true, false) => by_weekday,
            (false, true) => by_day,
            (false, false) => by_day || by_weekday,
        }
    }

    pub fn hour_matches(&self, hour: u32) -> bool {
        bit(self.hours, hour)
    }

    pub fn minute_matches(&self, minute: u32) -> bool {
        bit(self.minutes, minute)
    }
}

fn bit(set: u64, n: u32) -> bool {
    n < 64 && set & (1 << n) != 0
}

fn parse_field(part: &str, field: &Field) -> Result<u64, String> {
    let mut set = 0u64;
    for item in part.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s
                    .parse()
                    .map_err(|_| format!("{}: invalid step {s:?}", field.name))?;
                if step == 0 {
                    return Err(format!("{}: a step must be at least 1", field.name));
                }
                (r, step)
            }
            None => (item, 1),
        };
        let (low, high) = if range == "*" || range == "?" {
            if range == "?" && !matches!(field.name, "day of month" | "day of week") {
                return Err(format!("{}: ? is only for the day fields", field.name));
            }
            (field.min, field.max)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a, field)?, value(b, field)?)
        } else {
            let v = value(range, field)?;
            // `5/10` runs from 5 to the end in steps of 10.
            (v, if item.contains('/') { field.max } else { v })
        };
        if low > high {
            return Err(format!("{}: range {range:?} runs backwards", field.name));
        }
        let mut v = low;
        while v <= high {
            set |= 1 << v;
            v += step;
        }
    }
    Ok(set)
}

fn value(text: &str, field: &Field) -> Result<u32, String> {
    let lower = text.to_ascii_lowercase();
    if let Some(i) = field.names.iter().position(|n| *n == lower) {
        // Months count from 1, weekdays from 0 (Sunday).
        return Ok(if field.name == "month" {
            i as u32 + 1
        } else {
            i as u32
        });
    }
    let v: u32 = text
        .parse()
        .map_err(|_| format!("{}: {text:?} is not a number", field.name))?;
    if v < field.min || v > field.max {
        return Err(format!(
            "{}: {v} is outside {}-{}",
            field.name, field.min, field.max
        ));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_lists_ranges_steps_and_names() {
        let s = Schedule::parse("*/15 9-17 * jan,JUL mon-fri").unwrap();
        assert!(s.matches(1, 5, 1, 9, 0));
        assert!(s.matches(7, 5, 5, 17, 45));
        assert!(!s.matches(1, 5, 1, 9, 10));
        assert!(!s.matches(2, 5, 1, 9, 0));
        assert!(!s.matches(1, 5, 0, 9, 0), "Sunday");
        assert!(!s.matches(1, 5, 1, 18, 0));
        let s = Schedule::parse("5/20 0 1 * *").unwrap();
        assert!(s.minute_matches(5) && s.minute_matches(25) && s.minute_matches(45));
        assert!(!s.minute_matches(0));
    }

    #[test]
    fn macros_expand() {
        assert_eq!(
            Schedule::parse("@hourly").unwrap(),
            Schedule::parse("0 * * * *").unwrap()
        );
        assert_eq!(
            Schedule::parse("@annually").unwrap(),
            Schedule::parse("0 0 1 1 *").unwrap()
        );
        assert_eq!(
            Schedule::parse("@midnight").unwrap(),
            Schedule::parse("0 0 * * *").unwrap()
        );
        assert!(Schedule::parse("@every 5m").is_err());
    }

    #[test]
    fn sunday_is_zero_and_seven_and_restricted_day_fields_combine_with_or() {
        assert_eq!(
            Schedule::parse("0 0 * * 7").unwrap(),
            Schedule::parse("0 0 * * sun").unwrap()
        );
        // The 13th, or any Friday.
        let s = Schedule::parse("0 0 13 * 5").unwrap();
        assert!(s.day_matches(13, 2));
        assert!(s.day_matches(3, 5));
        assert!(!s.day_matches(3, 2));
        // Only the weekday restricted: the day of month does not matter.
        let s = Schedule::parse("0 0 * * 1").unwrap();
        assert!(s.day_matches(20, 1) && !s.day_matches(20, 2));
    }

    #[test]
    fn bad_schedules_say_why() {
        for (input, why) in [
            ("* * * *", "expected 5 fields"),
            ("60 * * * *", "outside 0-59"),
            ("* * 0 * *", "outside 1-31"),
            ("*/0 * * * *", "at least 1"),
            ("5-1 * * * *", "backwards"),
            ("* * * foo *", "not a number"),
            ("? * * * *", "only for the day fields"),
            ("TZ=UTC * * * * *", "spec.timeZone"),
        ] {
            let err = Schedule::parse(input).unwrap_err();
            assert!(err.reason.contains(why), "{input}: {}", err.reason);
        }
    }
}
