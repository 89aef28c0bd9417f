//! The one error type of this crate.

/// Why bytes received from a peer could not be decoded.
///
/// Every variant means the peer is broken, hostile or not speaking kiln at all: the caller logs
/// the error and drops the connection. None of them is recoverable on the same connection, because
/// once a length is wrong the stream has no reliable place to resynchronize.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The first four bytes were not [`MAGIC`](crate::MAGIC).
    #[error("bad magic bytes \"{}\" (expected \"KILN\"): the peer is not speaking the kiln protocol", .0.escape_ascii())]
    BadMagic([u8; 4]),
    /// The hello named a role code this version does not know.
    #[error("unknown role code {0} in handshake (expected 0 = Client, 1 = Worker or 2 = Peer)")]
    UnknownRole(u8),
    /// The hello announced a name longer than [`MAX_NAME_LEN`](crate::MAX_NAME_LEN).
    #[error("handshake name of {0} bytes exceeds the maximum of {max} bytes", max = crate::MAX_NAME_LEN)]
    NameTooLong(usize),
    /// The hello announced a token longer than [`MAX_TOKEN_LEN`](crate::MAX_TOKEN_LEN).
    #[error("handshake token of {0} bytes exceeds the maximum of {max} bytes", max = crate::MAX_TOKEN_LEN)]
    TokenTooLong(usize),
    /// A name or message was not valid UTF-8.
    #[error("handshake text is not valid UTF-8")]
    BadUtf8,
    /// The reply carried a status byte other than 0 (accepted) or 1 (refused).
    #[error("unknown reply status {0} in handshake (expected 0 = accepted or 1 = refused)")]
    UnknownStatus(u8),
    /// The reply announced a message longer than [`MAX_MESSAGE_LEN`](crate::MAX_MESSAGE_LEN).
    #[error("handshake reply message of {0} bytes exceeds the maximum of {max} bytes", max = crate::MAX_MESSAGE_LEN)]
    MessageTooLong(usize),
    /// A packet announced a frame larger than the decoder's limit.
    #[error("frame of {size} bytes exceeds the maximum of {max} bytes")]
    FrameTooLarge {
        /// The announced length.
        size: u64,
        /// The decoder's limit.
        max: usize,
    },
    /// A packet announced more than [`MAX_FRAMES`](crate::MAX_FRAMES) frames.
    #[error("packet of {0} frames exceeds the maximum of {max} frames", max = crate::MAX_FRAMES)]
    TooManyFrames(u64),
    /// A packet announced zero frames; every packet has at least its header frame.
    #[error("packet announces zero frames (every packet has at least a header frame)")]
    NoFrames,
    /// The frame lengths of one packet add up to more than the decoder's packet limit (what one
    /// peer may make the receiver buffer at once).
    #[error("packet of {size} bytes (or more) exceeds the maximum of {max} bytes per packet")]
    PacketOverLimit {
        /// The announced total so far.
        size: u64,
        /// The decoder's limit.
        max: usize,
    },
    /// The frame lengths of one packet add up to more than this machine can address.
    #[error("packet frame lengths add up to more than {max} bytes", max = usize::MAX)]
    PacketTooLarge,
    /// A header could not be encoded or decoded with postcard.
    #[error("bad packet header: {0}")]
    Header(String),
}
