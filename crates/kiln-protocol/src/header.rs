//! Postcard encoding of header frames, for the message layer above.

use crate::ProtocolError;

/// Encodes a header value with postcard.
pub fn encode_header<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, ProtocolError> {
    postcard::to_allocvec(value).map_err(|e| ProtocolError::Header(e.to_string()))
}

/// Decodes a header value with postcard.
///
/// Trailing bytes are an error: they mean the two sides disagree about the message type, and
/// silently ignoring them would turn that into wrong data instead of a clear failure.
pub fn decode_header<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ProtocolError> {
    let (value, rest) = postcard::take_from_bytes(bytes).map_err(|e| ProtocolError::Header(e.to_string()))?;
    if !rest.is_empty() {
        return Err(ProtocolError::Header(format!("{} unexpected bytes after the header value", rest.len())));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Role;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Msg {
        op: String,
        keys: Vec<u64>,
        role: Role,
    }

    #[test]
    fn headers_round_trip_and_reject_garbage() {
        let msg = Msg { op: "gather".into(), keys: vec![1, 2, 300], role: Role::Peer };
        let mut bytes = encode_header(&msg).unwrap();
        assert_eq!(decode_header::<Msg>(&bytes).unwrap(), msg);

        bytes.push(0);
        let err = decode_header::<Msg>(&bytes).unwrap_err();
        assert_eq!(err.to_string(), "bad packet header: 1 unexpected bytes after the header value");
        assert!(matches!(decode_header::<Msg>(&[0xff, 0xff]), Err(ProtocolError::Header(_))));
    }
}
