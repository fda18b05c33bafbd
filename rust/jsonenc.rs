//! JSON text of `scan.file` records, built without any intermediate objects: this runs once per
//! reported file and is the hot path of a scan.

/// What one record says about a file, borrowed from a batch.
pub struct FileFields<'a> {
    pub relative_path: &'a str,
    pub filename: &'a str,
    pub inode: u64,
    pub device_id: u64,
    pub size_bytes: u64,
    pub hardlink_count: u64,
    pub mtime_sec: i64,
    pub mtime_nsec: u32,
    pub fingerprint: Option<u128>,
}

/// Appends ASCII bytes to a `String`.
fn push_ascii(out: &mut String, bytes: &[u8]) {
    debug_assert!(bytes.is_ascii());
    // SAFETY: callers only pass ASCII, which is valid UTF-8 on its own.
    unsafe { out.as_mut_vec() }.extend_from_slice(bytes);
}

/// Escape of each byte: 0 = copied as is, `u` = `\u00XX`, anything else = backslash + that byte.
static ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        table[i] = b'u';
        i += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends `text` as a JSON string literal, quotes included.
pub fn write_string(out: &mut String, text: &str) {
    out.reserve(text.len() + 2);
    out.push('"');
    let bytes = text.as_bytes();
    let mut start = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        let escape = ESCAPE[byte as usize];
        if escape == 0 {
            continue;
        }
        // `i` indexes an ASCII byte, hence a char boundary.
        out.push_str(&text[start..i]);
        if escape == b'u' {
            push_ascii(
                out,
                &[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[(byte >> 4) as usize],
                    HEX[(byte & 0xf) as usize],
                ],
            );
        } else {
            push_ascii(out, &[b'\\', escape]);
        }
        start = i + 1;
    }
    out.push_str(&text[start..]);
    out.push('"');
}

static DIGIT_PAIRS: &[u8; 200] = b"00010203040506070809101112131415161718192021222324252627282930313233343536373839404142434445464748495051525354555657585960616263646566676869707172737475767778798081828384858687888990919293949596979899";

/// Appends the decimal digits of `value`.
pub fn write_u64(out: &mut String, mut value: u64) {
    let mut buf = [0u8; 20];
    let mut pos = buf.len();
    while value >= 100 {
        let pair = (value % 100) as usize * 2;
        value /= 100;
        pos -= 2;
        buf[pos..pos + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    }
    if value >= 10 {
        let pair = value as usize * 2;
        pos -= 2;
        buf[pos..pos + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    } else {
        pos -= 1;
        buf[pos] = b'0' + value as u8;
    }
    push_ascii(out, &buf[pos..]);
}

fn write_two_digits(out: &mut String, value: u32) {
    let pair = value as usize * 2;
    push_ascii(out, &DIGIT_PAIRS[pair..pair + 2]);
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01.
///
/// Works in 400-year eras of 146097 days that start on March 1st, so the leap day is the last day
/// of its era-year and months from March on have a fixed pattern of lengths.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468; // days from 0000-03-01 to 1970-01-01
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097); // [0, 146096]
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153; // [0, 11]
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Appends `YYYY-MM-DDTHH:MM:SS[.fraction]Z` (RFC 3339, UTC). The fraction is present only when
/// non-zero and keeps nanosecond precision without trailing zeros. Years outside 0..=9999, which
/// RFC 3339 cannot express, get ISO 8601's expanded form (a sign when negative, at least 4 digits).
pub fn write_rfc3339(out: &mut String, sec: i64, nsec: u32) {
    let days = sec.div_euclid(86_400);
    let second_of_day = sec.rem_euclid(86_400) as u32;
    let (year, month, day) = civil_from_days(days);
    if year < 0 {
        out.push('-');
    }
    let abs_year = year.unsigned_abs();
    if abs_year <= 9999 {
        write_two_digits(out, (abs_year / 100) as u32);
        write_two_digits(out, (abs_year % 100) as u32);
    } else {
        write_u64(out, abs_year);
    }
    out.push('-');
    write_two_digits(out, month);
    out.push('-');
    write_two_digits(out, day);
    out.push('T');
    write_two_digits(out, second_of_day / 3600);
    out.push(':');
    write_two_digits(out, second_of_day / 60 % 60);
    out.push(':');
    write_two_digits(out, second_of_day % 60);
    if nsec != 0 {
        let mut digits = [0u8; 10];
        digits[0] = b'.';
        let mut rest = nsec % 1_000_000_000;
        for slot in digits[1..].iter_mut().rev() {
            *slot = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        let mut end = digits.len();
        while digits[end - 1] == b'0' {
            end -= 1;
        }
        push_ascii(out, &digits[..end]);
    }
    out.push('Z');
}

/// Appends `xxh3-128:` and the 32 lower-case hex digits of a digest (big-endian, as xxHash's
/// canonical form and Python's `xxh3_128_hexdigest` print it).
pub fn write_fingerprint(out: &mut String, digest: u128) {
    push_ascii(out, b"xxh3-128:");
    let mut hex = [0u8; 32];
    for (i, slot) in hex.iter_mut().enumerate() {
        *slot = HEX[((digest >> (124 - 4 * i)) & 0xf) as usize];
    }
    push_ascii(out, &hex);
}

/// `xxh3-128:<hex>` as its own string.
pub fn fingerprint_text(digest: u128) -> String {
    let mut out = String::with_capacity(41);
    write_fingerprint(&mut out, digest);
    out
}

/// The members `write_file_fields` writes, in order: the per-file part of a `scan.file`
/// message's data (`protocol.ScanFile` lists these after its per-scan fields; a test checks
/// both agree). Exported to Python as `_native.SCAN_FILE_FIELDS`. `fingerprint` follows them
/// only when the walk fingerprints, which the agent's scans do not.
pub const SCAN_FILE_FIELDS: [&str; 7] = [
    "relative_path",
    "filename",
    "inode",
    "device_id",
    "size_bytes",
    "hardlink_count",
    "mod_time",
];

/// Appends `"name":`.
fn write_key(out: &mut String, name: &str) {
    out.push('"');
    out.push_str(name);
    out.push_str("\":");
}

/// Appends the members of one `scan.file` record (no braces; see `Batch.json_records`).
pub fn write_file_fields(out: &mut String, file: &FileFields<'_>) {
    // Destructured so that a name added to SCAN_FILE_FIELDS without its value does not compile.
    let [relative_path, filename, inode, device_id, size_bytes, hardlink_count, mod_time] =
        SCAN_FILE_FIELDS;
    write_key(out, relative_path);
    write_string(out, file.relative_path);
    out.push(',');
    write_key(out, filename);
    write_string(out, file.filename);
    out.push(',');
    for (key, value) in [
        (inode, file.inode),
        (device_id, file.device_id),
        (size_bytes, file.size_bytes),
        (hardlink_count, file.hardlink_count),
    ] {
        write_key(out, key);
        write_u64(out, value);
        out.push(',');
    }
    write_key(out, mod_time);
    out.push('"');
    write_rfc3339(out, file.mtime_sec, file.mtime_nsec);
    out.push('"');
    if let Some(digest) = file.fingerprint {
        out.push_str(",\"fingerprint\":\"");
        write_fingerprint(out, digest);
        out.push('"');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(text: &str) -> String {
        let mut out = String::new();
        write_string(&mut out, text);
        out
    }

    fn date(sec: i64, nsec: u32) -> String {
        let mut out = String::new();
        write_rfc3339(&mut out, sec, nsec);
        out
    }

    #[test]
    fn strings_escape_quotes_backslashes_and_control_chars() {
        assert_eq!(string("plain"), r#""plain""#);
        assert_eq!(string(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(string("\n\r\t\u{8}\u{c}"), r#""\n\r\t\b\f""#);
        assert_eq!(string("\u{0}\u{1f}\u{7f}"), "\"\\u0000\\u001f\u{7f}\"");
        assert_eq!(string("Amélie/東京 \u{2028}"), "\"Amélie/東京 \u{2028}\"");
        assert_eq!(string(""), r#""""#);
    }

    #[test]
    fn every_control_char_round_trips_through_a_json_reader_shape() {
        for byte in 0u8..0x20 {
            let text = string(&char::from(byte).to_string());
            assert!(text.starts_with("\"\\"), "{byte}: {text}");
            assert!(text.bytes().all(|b| b >= 0x20), "{byte}: {text}");
        }
    }

    #[test]
    fn integers() {
        for value in [0, 7, 10, 99, 100, 12345, 1_000_000, u64::MAX] {
            let mut out = String::new();
            write_u64(&mut out, value);
            assert_eq!(out, value.to_string());
        }
    }

    #[test]
    fn civil_dates_known_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(-719_468), (0, 3, 1));
        assert_eq!(civil_from_days(2_932_896), (9999, 12, 31));
    }

    #[test]
    fn civil_dates_walk_day_by_day() {
        // Every day from 1900 to 2100 follows the previous one on the calendar.
        let mut previous = civil_from_days(-25_567);
        assert_eq!(previous, (1900, 1, 1));
        for days in -25_566..=47_482 {
            let (y, m, d) = civil_from_days(days);
            let (py, pm, pd) = previous;
            let leap = (py % 4 == 0 && py % 100 != 0) || py % 400 == 0;
            let month_len = [
                31,
                if leap { 29 } else { 28 },
                31,
                30,
                31,
                30,
                31,
                31,
                30,
                31,
                30,
                31,
            ];
            if pd < month_len[pm as usize - 1] {
                assert_eq!((y, m, d), (py, pm, pd + 1));
            } else if pm < 12 {
                assert_eq!((y, m, d), (py, pm + 1, 1));
            } else {
                assert_eq!((y, m, d), (py + 1, 1, 1));
            }
            previous = (y, m, d);
        }
        assert_eq!(previous, (2100, 1, 1));
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(date(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(
            date(1_704_164_645, 123_456_789),
            "2024-01-02T03:04:05.123456789Z"
        );
        assert_eq!(date(1_704_164_645, 500_000_000), "2024-01-02T03:04:05.5Z");
        assert_eq!(date(1_704_164_645, 1_000), "2024-01-02T03:04:05.000001Z");
        assert_eq!(date(-1, 999_999_999), "1969-12-31T23:59:59.999999999Z");
        assert_eq!(date(951_782_400, 0), "2000-02-29T00:00:00Z");
        assert_eq!(date(253_402_300_799, 0), "9999-12-31T23:59:59Z");
        assert_eq!(date(253_402_300_800, 0), "10000-01-01T00:00:00Z");
        assert_eq!(date(-62_167_219_200, 0), "0000-01-01T00:00:00Z");
        assert_eq!(date(-62_167_219_201, 0), "-0001-12-31T23:59:59Z");
    }

    #[test]
    fn fingerprints_are_big_endian_hex() {
        assert_eq!(
            fingerprint_text(0x0123_4567_89ab_cdef_0011_2233_4455_6677),
            "xxh3-128:0123456789abcdef0011223344556677"
        );
        assert_eq!(fingerprint_text(1), format!("xxh3-128:{}1", "0".repeat(31)));
    }

    #[test]
    fn record_fields_in_protocol_order() {
        let mut out = String::new();
        let mut file = FileFields {
            relative_path: "TV/Show \"1\"/e1.mkv",
            filename: "e1.mkv",
            inode: 42,
            device_id: 2049,
            size_bytes: 1_000_000,
            hardlink_count: 2,
            mtime_sec: 1_704_164_645,
            mtime_nsec: 0,
            fingerprint: None,
        };
        write_file_fields(&mut out, &file);
        assert_eq!(
            out,
            r#""relative_path":"TV/Show \"1\"/e1.mkv","filename":"e1.mkv","inode":42,"device_id":2049,"size_bytes":1000000,"hardlink_count":2,"mod_time":"2024-01-02T03:04:05Z""#
        );
        out.clear();
        file.fingerprint = Some(u128::MAX);
        write_file_fields(&mut out, &file);
        assert!(out.ends_with(&format!(r#","fingerprint":"xxh3-128:{}""#, "f".repeat(32))));
    }
}
