//! Checks of the classic protocols' answers, written from the RFCs, and process measurements.

use std::process::Command;
use std::time::{Duration, SystemTime};

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64
}

const WEEKDAYS: [&str; 7] = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// Parse an RFC 867 line as warren sends it (`Sunday, November 29, 2026 15:16:34-UTC\r\n`,
/// CR LF included) into seconds since the Unix epoch, checking the weekday.
pub fn parse_daytime(line: &str) -> Result<i64, String> {
    let bad = |why: &str| format!("bad daytime line {line:?}: {why}");
    let body = line.strip_suffix("\r\n").ok_or_else(|| bad("not ended by CR LF"))?;
    let words: Vec<&str> = body.split(' ').collect();
    let [weekday, month, day, year, clock] = words.as_slice() else { return Err(bad("not five words")) };
    let weekday = weekday.strip_suffix(',').ok_or_else(|| bad("weekday"))?;
    let day = day.strip_suffix(',').ok_or_else(|| bad("day comma"))?;
    if day.starts_with('0') {
        return Err(bad("day has a leading zero"));
    }
    let day: i64 = day.parse().map_err(|_| bad("day"))?;
    let month = MONTHS.iter().position(|m| m == month).ok_or_else(|| bad("month"))? as i64 + 1;
    let year: i64 = year.parse().map_err(|_| bad("year"))?;
    let clock = clock.strip_suffix("-UTC").ok_or_else(|| bad("no -UTC"))?;
    let hms: Vec<&str> = clock.split(':').collect();
    if hms.len() != 3 || hms.iter().any(|p| p.len() != 2) {
        return Err(bad("time is not hh:mm:ss"));
    }
    let hms: Vec<i64> = hms.iter().map(|p| p.parse().map_err(|_| bad("time"))).collect::<Result<_, _>>()?;
    let days = days_from_civil(year, month, day);
    if WEEKDAYS[(days + 4).rem_euclid(7) as usize] != weekday {
        return Err(bad("weekday does not match the date"));
    }
    Ok(days * 86_400 + hms[0] * 3600 + hms[1] * 60 + hms[2])
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Check a daytime answer: one line, CR LF, within a few seconds of now.
pub fn check_daytime(reply: &[u8]) {
    let text = std::str::from_utf8(reply).unwrap_or_else(|_| panic!("daytime reply is not text: {reply:?}"));
    assert_eq!(text.matches('\n').count(), 1, "one line: {text:?}");
    let at = parse_daytime(text).unwrap_or_else(|e| panic!("{e}"));
    assert!((at - unix_now()).abs() <= 5, "daytime {text:?} is not now");
}

/// Check an RFC 868 answer: exactly four bytes, within a few seconds of now.
pub fn check_time(reply: &[u8]) {
    let bytes: [u8; 4] = reply.try_into().unwrap_or_else(|_| panic!("time: expected 4 bytes, got {reply:?}"));
    let unix = i64::from(u32::from_be_bytes(bytes)) - 2_208_988_800;
    assert!((unix - unix_now()).abs() <= 5, "time {unix} is not now ({})", unix_now());
}

/// User plus system CPU time of a process, from /proc/<pid>/stat.
pub fn cpu_time(pid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/<pid>/stat");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 1000 / clock_ticks())
}

fn clock_ticks() -> u64 {
    let out = Command::new("getconf").arg("CLK_TCK").output();
    out.ok().and_then(|o| String::from_utf8(o.stdout).ok()).and_then(|s| s.trim().parse().ok()).unwrap_or(100)
}
