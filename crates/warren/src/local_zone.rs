//! The local time zone as the C library sees it (`TZ`, else `/etc/localtime`): its offset and
//! abbreviation at an instant, for the course's date formats (`ctime`, `Date.toString()`),
//! which print local time. The `time` crate refuses to read the local offset in a process with
//! threads, so this asks `localtime_r`, which is thread-safe.

use std::time::SystemTime;

use time::UtcOffset;

/// The local zone's offset from UTC at `wall`, and its abbreviation (`UTC`, `CET`, `EDT`).
/// UTC when the C library cannot tell.
pub fn local_zone(wall: SystemTime) -> (UtcOffset, String) {
    let secs = match wall.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(after) => after.as_secs() as nix::libc::time_t,
        Err(before) => -(before.duration().as_secs() as nix::libc::time_t),
    };
    // SAFETY: `localtime_r` writes only into `tm`; `tm_zone` then points at a static string
    // of the C library's zone table, read at once.
    unsafe {
        let mut tm: nix::libc::tm = std::mem::zeroed();
        if nix::libc::localtime_r(&secs, &mut tm).is_null() {
            return (UtcOffset::UTC, "UTC".to_owned());
        }
        let offset = UtcOffset::from_whole_seconds(tm.tm_gmtoff as i32).unwrap_or(UtcOffset::UTC);
        let zone = if tm.tm_zone.is_null() {
            "UTC".to_owned()
        } else {
            std::ffi::CStr::from_ptr(tm.tm_zone).to_string_lossy().into_owned()
        };
        (offset, zone)
    }
}

/// The local zone's offset alone: what a server's `ctime` line needs.
pub fn local_offset(wall: SystemTime) -> UtcOffset {
    local_zone(wall).0
}
