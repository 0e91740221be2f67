//! Timestamps as Litestream writes them.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Go's RFC3339Nano in UTC at millisecond resolution, trailing zeros trimmed:
/// `2026-11-26T07:11:44.824Z`, `…44.83Z`, `…44Z`.
pub fn rfc3339_millis(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let t = OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let base = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    if millis == 0 {
        format!("{base}Z")
    } else {
        let frac = format!("{millis:03}");
        format!("{base}.{}Z", frac.trim_end_matches('0'))
    }
}

/// Parses an RFC 3339 timestamp to milliseconds since the epoch (cut to the millisecond:
/// for timestamps Litestream wrote, which have no finer digits).
pub fn parse_rfc3339_millis(s: &str) -> Option<i64> {
    i64::try_from(parse_rfc3339_nanos(s)?.div_euclid(1_000_000)).ok()
}

/// Parses an RFC 3339 timestamp to nanoseconds since the epoch, every digit kept (as Go's
/// `time.Parse`): for targets, which are compared with millisecond file timestamps.
pub fn parse_rfc3339_nanos(s: &str) -> Option<i128> {
    Some(
        OffsetDateTime::parse(s, &Rfc3339)
            .ok()?
            .unix_timestamp_nanos(),
    )
}

/// Go's RFC3339Nano in UTC, trailing zeros trimmed (`…44.000000001Z`, `…44.83Z`, `…44Z`).
pub fn rfc3339_nanos(ns: i128) -> String {
    let ms = i64::try_from(ns.div_euclid(1_000_000)).unwrap_or(0);
    let sub_ms = ns.rem_euclid(1_000_000);
    if sub_ms == 0 {
        return rfc3339_millis(ms);
    }
    let base = rfc3339_millis(ms.div_euclid(1000) * 1000);
    let frac = format!("{:09}", ns.rem_euclid(1_000_000_000));
    format!(
        "{}.{}Z",
        base.trim_end_matches('Z'),
        frac.trim_end_matches('0')
    )
}

pub fn now_millis() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    d.as_millis() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_go_rfc3339nano() {
        // Values seen in object-metadata.json of the Litestream vectors.
        assert_eq!(rfc3339_millis(1795677104824), "2026-11-26T07:11:44.824Z");
        assert_eq!(rfc3339_millis(1795677104830), "2026-11-26T07:11:44.83Z");
        assert_eq!(rfc3339_millis(1795677104000), "2026-11-26T07:11:44Z");
        assert_eq!(
            parse_rfc3339_millis("2026-11-26T07:11:44.83Z"),
            Some(1795677104830)
        );
        assert_eq!(
            parse_rfc3339_millis("2026-11-26T08:11:44.83+01:00"),
            Some(1795677104830)
        );
    }

    #[test]
    fn nanoseconds_are_kept() {
        let ns = 1795677104830_i128 * 1_000_000;
        assert_eq!(
            parse_rfc3339_nanos("2026-11-26T07:11:44.830000001Z"),
            Some(ns + 1)
        );
        assert_eq!(
            parse_rfc3339_nanos("2026-11-26T07:11:44.830999Z"),
            Some(ns + 999_000)
        );
        // Milliseconds are cut, never rounded up.
        assert_eq!(
            parse_rfc3339_millis("2026-11-26T07:11:44.830999Z"),
            Some(1795677104830)
        );
        assert_eq!(rfc3339_nanos(ns + 1), "2026-11-26T07:11:44.830000001Z");
        assert_eq!(rfc3339_nanos(ns + 999_000), "2026-11-26T07:11:44.830999Z");
        assert_eq!(rfc3339_nanos(ns), "2026-11-26T07:11:44.83Z");
        assert_eq!(
            rfc3339_nanos(1_795_677_104_000_000_000),
            "2026-11-26T07:11:44Z"
        );
    }
}
