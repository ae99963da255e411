//! Shift calendars with time zones (tz database compiled in; no file reads) and the split of a
//! period into shift windows (docs/ENGINE.md §2.2).

use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use serde::{Deserialize, Serialize};

use crate::error::Errors;

pub const DEFAULT_ZONE: &str = "Asia/Shanghai";

/// Shifts a calendar may define per day (bounds the windows a period splits into).
pub const MAX_SHIFTS: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Calendar {
    #[serde(default = "default_zone")]
    pub time_zone: String,
    pub shifts: Vec<Shift>,
    /// Days on which shifts start; all days when absent. `mon` … `sun`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weekdays: Option<Vec<String>>,
    /// Dates (`YYYY-MM-DD`) on which no shift starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holidays: Vec<String>,
}

fn default_zone() -> String {
    DEFAULT_ZONE.to_owned()
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Shift {
    pub name: String,
    /// `HH:MM` local time.
    pub start: String,
    /// `HH:MM` local time; at or before `start` means the next day.
    pub end: String,
}

/// A half-open time window `[start, end)`, optionally named after its shift.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub start: Timestamp,
    pub end: Timestamp,
    pub shift: Option<String>,
}

pub fn zone(name: &str) -> Result<TimeZone, String> {
    TimeZone::get(name).map_err(|_| {
        format!("unknown time zone \"{name}\" (use an IANA name such as Asia/Shanghai)")
    })
}

fn parse_hm(s: &str) -> Result<Time, String> {
    let bad = || format!("\"{s}\" is not a local time HH:MM");
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: i8 = h.parse().map_err(|_| bad())?;
    let m: i8 = m.parse().map_err(|_| bad())?;
    Time::new(h, m, 0, 0).map_err(|_| bad())
}

fn parse_weekday(s: &str) -> Option<Weekday> {
    Some(match s.to_ascii_lowercase().as_str() {
        "mon" => Weekday::Monday,
        "tue" => Weekday::Tuesday,
        "wed" => Weekday::Wednesday,
        "thu" => Weekday::Thursday,
        "fri" => Weekday::Friday,
        "sat" => Weekday::Saturday,
        "sun" => Weekday::Sunday,
        _ => return None,
    })
}

fn parse_date(s: &str) -> Result<Date, String> {
    if s.len() != 10 {
        return Err(format!("\"{s}\" is not a date YYYY-MM-DD"));
    }
    s.parse::<Date>()
        .map_err(|_| format!("\"{s}\" is not a date YYYY-MM-DD"))
}

/// An instant given as an RFC 3339 time or as a date. A date means the start of that day in
/// `tz`, or with `end_of_day` the end of it (the start of the next day).
pub fn instant(s: &str, tz: &str, end_of_day: bool) -> Result<Timestamp, String> {
    if let Ok(t) = s.parse::<Timestamp>() {
        return Ok(t);
    }
    let d = parse_date(s)
        .map_err(|_| format!("\"{s}\" is neither a date YYYY-MM-DD nor an RFC 3339 time"))?;
    let tz = zone(tz)?;
    let d = if end_of_day {
        d.checked_add(1.day()).map_err(|e| e.to_string())?
    } else {
        d
    };
    d.to_zoned(tz)
        .map(|z| z.timestamp())
        .map_err(|e| e.to_string())
}

impl Calendar {
    pub(crate) fn validate(&self, path: &str, errs: &mut Errors) {
        if let Err(r) = zone(&self.time_zone) {
            errs.push(format!("{path}.time_zone"), r);
        }
        if self.shifts.is_empty() {
            errs.push(
                format!("{path}.shifts"),
                "a calendar needs at least one shift",
            );
        } else if self.shifts.len() > MAX_SHIFTS {
            errs.push(
                format!("{path}.shifts"),
                format!(
                    "at most {MAX_SHIFTS} shifts a day, got {}",
                    self.shifts.len()
                ),
            );
        }
        for (i, s) in self.shifts.iter().enumerate() {
            if s.name.trim().is_empty() {
                errs.push(format!("{path}.shifts[{i}].name"), "must not be empty");
            }
            for (f, v) in [("start", &s.start), ("end", &s.end)] {
                if let Err(r) = parse_hm(v) {
                    errs.push(format!("{path}.shifts[{i}].{f}"), r);
                }
            }
        }
        if let Some(days) = &self.weekdays {
            for (i, d) in days.iter().enumerate() {
                if parse_weekday(d).is_none() {
                    errs.push(
                        format!("{path}.weekdays[{i}]"),
                        format!("\"{d}\" is not one of mon tue wed thu fri sat sun"),
                    );
                }
            }
        }
        for (i, h) in self.holidays.iter().enumerate() {
            if let Err(r) = parse_date(h) {
                errs.push(format!("{path}.holidays[{i}]"), r);
            }
        }
    }

    /// The shift windows that intersect `[from, to)`, clipped to it, sorted, overlaps merged
    /// (two shifts covering the same time keep the earlier one's name). Assumes a validated
    /// calendar; invalid entries are skipped.
    pub fn shift_windows(&self, from: Timestamp, to: Timestamp) -> Vec<Window> {
        let Ok(tz) = zone(&self.time_zone) else {
            return Vec::new();
        };
        let weekdays: Option<Vec<Weekday>> = self
            .weekdays
            .as_ref()
            .map(|w| w.iter().filter_map(|d| parse_weekday(d)).collect());
        let holidays: Vec<Date> = self
            .holidays
            .iter()
            .filter_map(|h| parse_date(h).ok())
            .collect();
        let shifts: Vec<(&str, Time, Time)> = self
            .shifts
            .iter()
            .filter_map(|s| {
                Some((
                    s.name.as_str(),
                    parse_hm(&s.start).ok()?,
                    parse_hm(&s.end).ok()?,
                ))
            })
            .collect();
        let first = from
            .to_zoned(tz.clone())
            .date()
            .yesterday()
            .unwrap_or(Date::MIN);
        let last = to.to_zoned(tz.clone()).date();
        let mut out: Vec<Window> = Vec::new();
        let mut day = first;
        while day <= last {
            let works = weekdays.as_ref().is_none_or(|w| w.contains(&day.weekday()))
                && !holidays.contains(&day);
            if works {
                for &(name, s, e) in &shifts {
                    let end_day = if e <= s {
                        day.tomorrow().ok()
                    } else {
                        Some(day)
                    };
                    let (Some(end_day), Ok(start)) =
                        (end_day, day.to_datetime(s).to_zoned(tz.clone()))
                    else {
                        continue;
                    };
                    let Ok(end) = end_day.to_datetime(e).to_zoned(tz.clone()) else {
                        continue;
                    };
                    let (a, b) = (start.timestamp().max(from), end.timestamp().min(to));
                    if a < b {
                        out.push(Window {
                            start: a,
                            end: b,
                            shift: Some(name.to_owned()),
                        });
                    }
                }
            }
            match day.tomorrow() {
                Ok(d) => day = d,
                Err(_) => break,
            }
        }
        out.sort_by_key(|w| (w.start, w.end));
        let mut merged: Vec<Window> = Vec::with_capacity(out.len());
        for w in out {
            match merged.last_mut() {
                Some(last) if w.start <= last.end => last.end = last.end.max(w.end),
                _ => merged.push(w),
            }
        }
        merged
    }
}

/// Splits `[from, to)` at every shift boundary: consecutive windows that tile the period, each
/// either inside one shift (named) or outside every shift (unnamed). Without a calendar the
/// period is one window.
pub fn split_period(calendar: Option<&Calendar>, from: Timestamp, to: Timestamp) -> Vec<Window> {
    let Some(cal) = calendar else {
        return vec![Window {
            start: from,
            end: to,
            shift: None,
        }];
    };
    let mut out = Vec::new();
    let mut cursor = from;
    for w in cal.shift_windows(from, to) {
        if w.start > cursor {
            out.push(Window {
                start: cursor,
                end: w.start,
                shift: None,
            });
        }
        cursor = w.end;
        out.push(w);
    }
    if cursor < to {
        out.push(Window {
            start: cursor,
            end: to,
            shift: None,
        });
    }
    out
}

/// Fraction of calendar years covered by `[from, to)` in zone `tz`: Σ over the years it
/// touches of (seconds of the period in that year / seconds of that year). A whole calendar
/// year is exactly 1.
pub fn years_covered(from: Timestamp, to: Timestamp, tz: &str) -> Option<f64> {
    let tz = zone(tz).ok()?;
    let mut year = from.to_zoned(tz.clone()).year();
    let mut total = 0.0;
    loop {
        let start = Date::new(year, 1, 1)
            .ok()?
            .to_zoned(tz.clone())
            .ok()?
            .timestamp();
        let end = Date::new(year.checked_add(1)?, 1, 1)
            .ok()?
            .to_zoned(tz.clone())
            .ok()?
            .timestamp();
        if start >= to {
            break;
        }
        let (a, b) = (from.max(start), to.min(end));
        if a < b {
            total += secs(a, b) / secs(start, end);
        }
        year = year.checked_add(1)?;
    }
    Some(total)
}

/// Seconds between two instants, exact to the nanosecond before the conversion to f64.
pub fn secs(a: Timestamp, b: Timestamp) -> f64 {
    nanos(a, b) as f64 / 1e9
}

/// Nanoseconds between two instants.
pub fn nanos(a: Timestamp, b: Timestamp) -> i128 {
    b.as_nanosecond() - a.as_nanosecond()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn two_shifts() -> Calendar {
        Calendar {
            time_zone: "Asia/Shanghai".into(),
            shifts: vec![
                Shift {
                    name: "day".into(),
                    start: "08:00".into(),
                    end: "16:00".into(),
                },
                Shift {
                    name: "night".into(),
                    start: "20:00".into(),
                    end: "04:00".into(),
                },
            ],
            weekdays: None,
            holidays: vec![],
        }
    }

    #[test]
    fn overnight_shift_crosses_midnight_in_local_time() {
        let cal = two_shifts();
        let w = cal.shift_windows(
            ts("2026-10-01T00:00:00+08:00"),
            ts("2026-10-02T00:00:00+08:00"),
        );
        // 00:00–04:00 (night shift started on 30 Sep), 08:00–16:00, 20:00–24:00.
        let got: Vec<(String, String)> = w
            .iter()
            .map(|w| (w.start.to_string(), w.end.to_string()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("2026-09-30T16:00:00Z".into(), "2026-09-30T20:00:00Z".into()),
                ("2026-10-01T00:00:00Z".into(), "2026-10-01T08:00:00Z".into()),
                ("2026-10-01T12:00:00Z".into(), "2026-10-01T16:00:00Z".into()),
            ]
        );
    }

    #[test]
    fn split_tiles_the_period() {
        let cal = two_shifts();
        let (from, to) = (
            ts("2026-10-01T06:00:00+08:00"),
            ts("2026-10-01T22:00:00+08:00"),
        );
        let parts = split_period(Some(&cal), from, to);
        assert_eq!(parts.first().unwrap().start, from);
        assert_eq!(parts.last().unwrap().end, to);
        for w in parts.windows(2) {
            assert_eq!(w[0].end, w[1].start);
        }
        // 06–08 off, 08–16 day, 16–20 off, 20–22 night.
        let names: Vec<Option<&str>> = parts.iter().map(|w| w.shift.as_deref()).collect();
        assert_eq!(names, vec![None, Some("day"), None, Some("night")]);
    }

    #[test]
    fn holidays_and_weekdays_remove_shifts() {
        let mut cal = two_shifts();
        cal.shifts.truncate(1);
        cal.weekdays = Some(vec![
            "mon".into(),
            "tue".into(),
            "wed".into(),
            "thu".into(),
            "fri".into(),
        ]);
        cal.holidays = vec!["2026-10-01".into()];
        // 2026-09-28 is a Monday; week of 28 Sep – 4 Oct: Mon, Tue, Wed work; Thu 1 Oct holiday;
        // Fri works; weekend off: 4 shifts of 8 h.
        let w = cal.shift_windows(
            ts("2026-09-28T00:00:00+08:00"),
            ts("2026-10-05T00:00:00+08:00"),
        );
        assert_eq!(w.len(), 4);
        let total: f64 = w.iter().map(|w| secs(w.start, w.end)).sum();
        assert_eq!(total, 4.0 * 8.0 * 3600.0);
    }

    #[test]
    fn dst_zone_day_shift_is_local() {
        // Europe/Berlin switches to summer time on 2026-03-29 at 02:00; a 00:00–06:00 shift
        // lasts 5 real hours that night.
        let cal = Calendar {
            time_zone: "Europe/Berlin".into(),
            shifts: vec![Shift {
                name: "n".into(),
                start: "00:00".into(),
                end: "06:00".into(),
            }],
            weekdays: None,
            holidays: vec![],
        };
        let w = cal.shift_windows(
            ts("2026-03-29T00:00:00+01:00"),
            ts("2026-03-29T12:00:00+02:00"),
        );
        assert_eq!(w.len(), 1);
        assert_eq!(secs(w[0].start, w[0].end), 5.0 * 3600.0);
    }

    #[test]
    fn years_covered_is_exact_for_whole_years_and_months() {
        let y = years_covered(
            ts("2024-01-01T00:00:00+08:00"),
            ts("2025-01-01T00:00:00+08:00"),
            "Asia/Shanghai",
        )
        .unwrap();
        assert_eq!(y, 1.0);
        // October 2026: 31 days of a 365-day year.
        let m = years_covered(
            ts("2026-10-01T00:00:00+08:00"),
            ts("2026-11-01T00:00:00+08:00"),
            "Asia/Shanghai",
        )
        .unwrap();
        assert!((m - 31.0 / 365.0).abs() < 1e-15);
        // Across a year boundary: half of Dec 2024 + half of Jan 2025 worth 31 days each.
        let x = years_covered(
            ts("2024-12-17T00:00:00+08:00"),
            ts("2025-01-16T00:00:00+08:00"),
            "Asia/Shanghai",
        )
        .unwrap();
        assert!((x - (15.0 / 366.0 + 15.0 / 365.0)).abs() < 1e-12);
    }

    #[test]
    fn instants_from_dates_or_times() {
        assert_eq!(
            instant("2026-10-01", "Asia/Shanghai", false).unwrap(),
            ts("2026-09-30T16:00:00Z")
        );
        assert_eq!(
            instant("2026-10-01", "Asia/Shanghai", true).unwrap(),
            ts("2026-10-01T16:00:00Z")
        );
        assert_eq!(
            instant("2026-10-01T08:00:00+08:00", "UTC", false).unwrap(),
            ts("2026-10-01T00:00:00Z")
        );
        assert!(instant("1 Oct", "UTC", false).is_err());
    }
}
