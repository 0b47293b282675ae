//! The two encodings of the same values: postcard (the binary framing) and JSON (the HTTP
//! path). A method's arguments travel as one tuple: postcard writes its fields one after the
//! other, JSON as an array (`[1, "two"]`), so both come from the same `serde` types.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Code, RpcError};

/// An encoding of arguments, results and errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    /// postcard: compact, not self-describing (both sides know the types from the interface).
    Binary,
    /// JSON: what curl and any language can write.
    Json,
}

impl Codec {
    /// `value` encoded. Fails only for values JSON cannot carry (a map with non-string keys).
    pub fn encode<T: Serialize + ?Sized>(self, value: &T) -> Result<Vec<u8>, RpcError> {
        let encoded = match self {
            Codec::Binary => postcard::to_stdvec(value).map_err(|e| e.to_string()),
            Codec::Json => serde_json::to_vec(value).map_err(|e| e.to_string()),
        };
        encoded.map_err(|e| RpcError::new(Code::Internal, format!("cannot encode: {e}")))
    }

    /// A value of type `T` from `bytes`, all of them; `what` names it in the error.
    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8], what: &str) -> Result<T, RpcError> {
        let decoded = match self {
            Codec::Binary => match postcard::take_from_bytes::<T>(bytes) {
                Ok((value, [])) => Ok(value),
                Ok((_, rest)) => Err(format!("{} bytes after the value", rest.len())),
                Err(e) => Err(e.to_string()),
            },
            Codec::Json => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
        };
        decoded.map_err(|e| RpcError::new(Code::BadArguments, format!("{what}: {e}")))
    }

    /// A method's `count` arguments as the tuple `T`; a JSON array of another length is told so.
    pub fn decode_args<T: DeserializeOwned>(self, bytes: &[u8], method: &str, count: usize) -> Result<T, RpcError> {
        self.decode(bytes, method).map_err(|e| match self {
            Codec::Json => match serde_json::from_slice::<Vec<serde_json::Value>>(bytes) {
                Ok(values) if values.len() != count => {
                    let s = if count == 1 { "" } else { "s" };
                    RpcError::new(
                        Code::BadArguments,
                        format!("{method} takes {count} argument{s}, not {}", values.len()),
                    )
                }
                Ok(_) => e,
                Err(_) => RpcError::new(Code::BadArguments, format!("{method}: the arguments are a JSON array")),
            },
            Codec::Binary => e,
        })
    }

    /// Check that a method without parameters got no arguments: nothing (postcard); an empty
    /// array, `null` or an empty body (JSON).
    pub fn expect_no_args(self, bytes: &[u8], method: &str) -> Result<(), RpcError> {
        let empty = match self {
            Codec::Binary => bytes.is_empty(),
            Codec::Json => {
                let text = std::str::from_utf8(bytes).unwrap_or("?").trim();
                text.is_empty() || text == "null" || serde_json::from_str::<[(); 0]>(text).is_ok()
            }
        };
        if empty { Ok(()) } else { Err(RpcError::new(Code::BadArguments, format!("{method} takes no arguments"))) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tuple_is_a_json_array_and_postcard_fields_in_a_row() {
        let args = (7u32, "seven".to_owned());
        for codec in [Codec::Binary, Codec::Json] {
            let bytes = codec.encode(&args).unwrap();
            assert_eq!(codec.decode::<(u32, String)>(&bytes, "args").unwrap(), args);
        }
        assert_eq!(Codec::Json.encode(&args).unwrap(), br#"[7,"seven"]"#);
        assert_eq!(Codec::Json.decode::<(u32,)>(b"[7]", "args").unwrap(), (7,));
    }

    #[test]
    fn wrong_arguments_are_bad_arguments_with_the_reason() {
        let e = Codec::Json.decode::<(u32,)>(b"[]", "add").unwrap_err();
        assert_eq!(e.code, Code::BadArguments);
        assert!(e.message.starts_with("add: "), "{e}");
        let e = Codec::Binary.decode::<(u8,)>(&[1, 2], "add").unwrap_err();
        assert!(e.message.contains("1 bytes after"), "{e}");
    }

    #[test]
    fn a_json_array_of_the_wrong_length_is_told_so() {
        let e = Codec::Json.decode_args::<(i64,)>(b"[1, 2]", "add", 1).unwrap_err();
        assert_eq!(e.message, "add takes 1 argument, not 2");
        let e = Codec::Json.decode_args::<(i64, i64)>(b"7", "add", 2).unwrap_err();
        assert_eq!(e.message, "add: the arguments are a JSON array");
        let e = Codec::Json.decode_args::<(i64,)>(b"[\"x\"]", "add", 1).unwrap_err();
        assert!(e.message.starts_with("add: invalid type"), "{e}");
    }

    #[test]
    fn no_arguments_may_be_written_three_ways_in_json() {
        for body in [&b""[..], b"[]", b" [ ] ", b"null"] {
            Codec::Json.expect_no_args(body, "m").unwrap();
        }
        assert_eq!(Codec::Json.expect_no_args(b"[1]", "m").unwrap_err().code, Code::BadArguments);
        assert_eq!(Codec::Binary.expect_no_args(&[0], "m").unwrap_err().code, Code::BadArguments);
    }
}
