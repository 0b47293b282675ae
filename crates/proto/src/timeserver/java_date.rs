//! A `java.util.Date` as `ObjectOutputStream.writeObject` writes it to a fresh stream: the
//! course's Java TimeServer sends exactly these 46 bytes, and its TimeClient reads them with
//! `ObjectInputStream.readObject`. The layout (Java Object Serialization Specification, §6):
//!
//! ```text
//! AC ED 00 05                 stream magic, version 5
//! 73 72                       TC_OBJECT, TC_CLASSDESC
//! 00 0E "java.util.Date"      class name, 14 bytes of modified UTF-8
//! 68 6A 81 01 4B 59 74 19     serialVersionUID 7523967970034938905
//! 03                          SC_SERIALIZABLE | SC_WRITE_METHOD (Date writes its own data)
//! 00 00                       no serializable fields
//! 78 70                       TC_ENDBLOCKDATA (no class annotation), TC_NULL (no superclass)
//! 77 08 <8 bytes>             TC_BLOCKDATA of 8 bytes: milliseconds since 1970, big-endian, signed
//! 78                          TC_ENDBLOCKDATA
//! ```

use std::time::{Duration, SystemTime};

/// Everything before the milliseconds.
const HEAD: [u8; HEAD_LEN] = [
    0xAC, 0xED, 0x00, 0x05, 0x73, 0x72, 0x00, 0x0E, b'j', b'a', b'v', b'a', b'.', b'u', b't', b'i', b'l', b'.', b'D',
    b'a', b't', b'e', 0x68, 0x6A, 0x81, 0x01, 0x4B, 0x59, 0x74, 0x19, 0x03, 0x00, 0x00, 0x78, 0x70, 0x77, 0x08,
];
const HEAD_LEN: usize = 37;
/// The block's end after the milliseconds.
const TAIL: u8 = 0x78;
/// A whole serialized Date.
pub const JAVA_DATE_LEN: usize = HEAD_LEN + 8 + 1;
/// The first two bytes of every Java object stream.
pub const STREAM_MAGIC: [u8; 2] = [0xAC, 0xED];

/// `wall` as a serialized `java.util.Date`.
pub fn encode_java_date(wall: SystemTime) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(JAVA_DATE_LEN);
    bytes.extend_from_slice(&HEAD);
    bytes.extend_from_slice(&unix_millis(wall).to_be_bytes());
    bytes.push(TAIL);
    bytes
}

/// What the front of a Java object stream holds.
#[derive(Debug, PartialEq, Eq)]
pub enum JavaDate {
    /// A whole Date: milliseconds since 1970 (negative before).
    Millis(i64),
    /// Every byte so far fits; more are needed.
    Incomplete,
    /// Not a serialized Date: the offset of the first byte that differs.
    Mismatch(usize),
}

/// Decode the Date at the front of `bytes` (bytes after it are ignored).
pub fn decode_java_date(bytes: &[u8]) -> JavaDate {
    let head = &HEAD;
    if let Some(at) = bytes.iter().zip(head).position(|(got, want)| got != want) {
        return JavaDate::Mismatch(at);
    }
    if bytes.len() < JAVA_DATE_LEN {
        return JavaDate::Incomplete;
    }
    if bytes[JAVA_DATE_LEN - 1] != TAIL {
        return JavaDate::Mismatch(JAVA_DATE_LEN - 1);
    }
    let millis: [u8; 8] = bytes[HEAD_LEN..HEAD_LEN + 8].try_into().expect("8 bytes");
    JavaDate::Millis(i64::from_be_bytes(millis))
}

/// The time `millis` after 1970 as a `SystemTime`.
pub fn from_unix_millis(millis: i64) -> SystemTime {
    let magnitude = Duration::from_millis(millis.unsigned_abs());
    if millis >= 0 { SystemTime::UNIX_EPOCH + magnitude } else { SystemTime::UNIX_EPOCH - magnitude }
}

fn unix_millis(wall: SystemTime) -> i64 {
    match wall.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_has_the_specified_layout() {
        let wall = SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_616_083_123);
        let bytes = encode_java_date(wall);
        assert_eq!(bytes.len(), 46);
        assert_eq!(&bytes[..4], &[0xAC, 0xED, 0x00, 0x05]);
        assert_eq!(&bytes[8..22], b"java.util.Date");
        assert_eq!(&bytes[35..37], &[0x77, 0x08]);
        assert_eq!(bytes[45], 0x78);
        assert_eq!(decode_java_date(&bytes), JavaDate::Millis(1_796_616_083_123));
        assert_eq!(from_unix_millis(1_796_616_083_123), wall);
    }

    #[test]
    fn partial_and_foreign_streams() {
        let bytes = encode_java_date(SystemTime::UNIX_EPOCH);
        assert_eq!(decode_java_date(&bytes[..10]), JavaDate::Incomplete);
        assert_eq!(decode_java_date(b"Saturday"), JavaDate::Mismatch(0));
        let mut other_class = bytes.clone();
        other_class[21] = b'X';
        assert_eq!(decode_java_date(&other_class), JavaDate::Mismatch(21));
        let before_1970 = encode_java_date(SystemTime::UNIX_EPOCH - Duration::from_millis(1500));
        assert_eq!(decode_java_date(&before_1970), JavaDate::Millis(-1500));
    }
}
