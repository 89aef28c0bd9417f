//! The handshake: one [`Hello`] from the connecting side, one [`Reply`] from the listener.
//!
//! The layout of both messages is frozen across protocol versions (magic, then version, then the
//! rest), so that a peer of any version can always read enough of the other side's message to
//! refuse it with a sentence naming both versions, instead of failing on garbage.

use std::fmt;

use crate::{MAGIC, PROTOCOL_VERSION, ProtocolError};

/// Longest name a [`Hello`] may carry, in bytes.
pub const MAX_NAME_LEN: usize = 1024;
/// Longest message a [`Reply::Refused`] may carry, in bytes (64 KiB).
pub const MAX_MESSAGE_LEN: usize = 64 * 1024;

/// Longest authentication token a [`Hello`] may carry, in bytes.
pub const MAX_TOKEN_LEN: usize = 1024;

/// Bytes of a hello before the name: magic, version, role, name length.
const HELLO_FIXED: usize = 4 + 2 + 1 + 2;
/// The first version whose hello carries a token section after the name.
const TOKEN_SINCE: u16 = 4;
/// Bytes of a reply before the message: magic, version, status, message length.
const REPLY_FIXED: usize = 4 + 2 + 1 + 4;

const STATUS_ACCEPTED: u8 = 0;
const STATUS_REFUSED: u8 = 1;

/// What the connecting side is, so a listener can refuse connections that reached the wrong port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Role {
    /// A user's client submitting graphs to a scheduler.
    Client,
    /// A worker registering with a scheduler.
    Worker,
    /// A worker (or client) fetching data from a worker.
    Peer,
}

impl Role {
    /// The byte that stands for this role on the wire.
    pub const fn code(self) -> u8 {
        match self {
            Role::Client => 0,
            Role::Worker => 1,
            Role::Peer => 2,
        }
    }

    /// The role a wire byte stands for, or `None` for an unknown code.
    pub const fn from_code(code: u8) -> Option<Role> {
        match code {
            0 => Some(Role::Client),
            1 => Some(Role::Worker),
            2 => Some(Role::Peer),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A shared secret that a listener may require in every [`Hello`] (`--auth-token`), for
/// clusters without a certificate authority.
///
/// Its `Debug` shows no byte of it, so it cannot leak into a log line, and [`AuthToken::matches`]
/// compares in constant time, so a listener's answer time says nothing about how much of a guess
/// was right.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthToken(Vec<u8>);

impl AuthToken {
    /// A token of these bytes; `None` when empty or longer than [`MAX_TOKEN_LEN`].
    pub fn new(bytes: impl Into<Vec<u8>>) -> Option<AuthToken> {
        let bytes = bytes.into();
        (!bytes.is_empty() && bytes.len() <= MAX_TOKEN_LEN).then_some(AuthToken(bytes))
    }

    /// The secret's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Whether `other` is this token, compared in constant time (only the length can differ
    /// early, and the length is not the secret).
    pub fn matches(&self, other: &AuthToken) -> bool {
        use subtle::ConstantTimeEq;
        bool::from(self.0.as_slice().ct_eq(other.0.as_slice()))
    }
}

impl fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthToken(<redacted>)")
    }
}

/// The first message on every connection, sent by the connecting side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The protocol version the sender speaks.
    pub version: u16,
    /// What the sender is.
    pub role: Role,
    /// A human-readable name for logs (e.g. a worker's address); at most [`MAX_NAME_LEN`] bytes.
    pub name: String,
    /// The shared secret the listener may require (see [`check_token`]).
    pub token: Option<AuthToken>,
}

impl Hello {
    /// A hello for this build's [`PROTOCOL_VERSION`], without a token.
    pub fn new(role: Role, name: impl Into<String>) -> Self {
        Hello { version: PROTOCOL_VERSION, role, name: name.into(), token: None }
    }

    /// This hello presenting `token`.
    pub fn with_token(mut self, token: Option<AuthToken>) -> Self {
        self.token = token;
        self
    }
}

/// Encodes a hello: [`MAGIC`], version (u16 LE), role (u8), name length (u16 LE), name (UTF-8),
/// then (since version 4) token length (u16 LE, 0 for none) and the token's bytes.
///
/// A name longer than [`MAX_NAME_LEN`] bytes is cut at the last character boundary that fits:
/// the name only labels log lines, and refusing to connect over a long label would be worse.
pub fn encode_hello(hello: &Hello) -> Vec<u8> {
    let name = truncate_utf8(&hello.name, MAX_NAME_LEN);
    let mut out = Vec::with_capacity(HELLO_FIXED + name.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&hello.version.to_le_bytes());
    out.push(hello.role.code());
    out.extend_from_slice(&(name.len() as u16).to_le_bytes());
    out.extend_from_slice(name.as_bytes());
    if hello.version >= TOKEN_SINCE {
        let token = hello.token.as_ref().map_or(&[][..], AuthToken::as_bytes);
        out.extend_from_slice(&(token.len() as u16).to_le_bytes());
        out.extend_from_slice(token);
    }
    out
}

/// Decodes a hello from the start of `buf`.
///
/// Returns `Ok(None)` while more bytes are needed, `Ok(Some((hello, consumed)))` once a whole
/// hello is there. Errors are reported as soon as the offending byte has arrived, so a peer that
/// is not speaking kiln is dropped without waiting for the rest. A version other than
/// [`PROTOCOL_VERSION`] is *not* an error here: [`check_hello`] refuses it, with a message that
/// names both versions.
pub fn decode_hello(buf: &[u8]) -> Result<Option<(Hello, usize)>, ProtocolError> {
    if !check_magic(buf)? {
        return Ok(None);
    }
    if buf.len() < 7 {
        return Ok(None);
    }
    let version = u16::from_le_bytes([buf[4], buf[5]]);
    let role = Role::from_code(buf[6]).ok_or(ProtocolError::UnknownRole(buf[6]))?;
    if buf.len() < HELLO_FIXED {
        return Ok(None);
    }
    let name_len = usize::from(u16::from_le_bytes([buf[7], buf[8]]));
    if name_len > MAX_NAME_LEN {
        return Err(ProtocolError::NameTooLong(name_len));
    }
    let end = HELLO_FIXED + name_len;
    let Some(name) = buf.get(HELLO_FIXED..end) else {
        return Ok(None);
    };
    let name = std::str::from_utf8(name).map_err(|_| ProtocolError::BadUtf8)?.to_owned();
    // An older peer's hello ends at the name: waiting for a token section it never sends would
    // turn the version refusal into a timeout.
    if version < TOKEN_SINCE {
        return Ok(Some((Hello { version, role, name, token: None }, end)));
    }
    let Some(len) = buf.get(end..end + 2) else {
        return Ok(None);
    };
    let token_len = usize::from(u16::from_le_bytes([len[0], len[1]]));
    if token_len > MAX_TOKEN_LEN {
        return Err(ProtocolError::TokenTooLong(token_len));
    }
    let token_end = end + 2 + token_len;
    let Some(token) = buf.get(end + 2..token_end) else {
        return Ok(None);
    };
    let token = AuthToken::new(token);
    Ok(Some((Hello { version, role, name, token }, token_end)))
}

/// Why a listener refuses a hello. Its message is sent back in [`Reply::Refused`] and shown to
/// the user on the other side as is, so it says what is wrong and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The peer speaks another protocol version.
    #[error(
        "protocol version {theirs} is not supported by this {listener} (speaks version {PROTOCOL_VERSION}); \
         upgrade kiln on one side"
    )]
    Version {
        /// The listener's kind ("scheduler", "worker").
        listener: String,
        /// The version the peer speaks.
        theirs: u16,
    },
    /// The peer's role is not served here (a client dialling a worker's data port).
    #[error("this address is a kiln {listener}; role {role} is not accepted here (expected {expected})")]
    Role {
        /// The listener's kind.
        listener: String,
        /// The role the peer announced.
        role: Role,
        /// The roles served here, listed for the message.
        expected: String,
    },
    /// The peer did not present the listener's authentication token (or presented another).
    /// The message says no more, so a guesser learns nothing from it.
    #[error("authentication failed")]
    Authentication,
}

/// The listener's verdict on a hello's token: with `expected`, the hello must carry that token;
/// without, any hello passes (a token it carries is ignored).
///
/// # Errors
/// [`Refusal::Authentication`], whose message names nothing of either token.
pub fn check_token(hello: &Hello, expected: Option<&AuthToken>) -> Result<(), Refusal> {
    match (expected, &hello.token) {
        (None, _) => Ok(()),
        (Some(expected), Some(theirs)) if expected.matches(theirs) => Ok(()),
        (Some(_), _) => Err(Refusal::Authentication),
    }
}

/// The listener's verdict on a hello.
///
/// `accepted` lists the roles this listener serves and `listener` names it for the message
/// ("scheduler", "worker").
///
/// # Errors
/// A [`Refusal`] saying why, to send back to the peer.
pub fn check_hello(hello: &Hello, accepted: &[Role], listener: &str) -> Result<(), Refusal> {
    if hello.version != PROTOCOL_VERSION {
        return Err(Refusal::Version { listener: listener.to_string(), theirs: hello.version });
    }
    if !accepted.contains(&hello.role) {
        return Err(Refusal::Role { listener: listener.to_string(), role: hello.role, expected: list_roles(accepted) });
    }
    Ok(())
}

/// The listener's answer to a [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The connection is open for packets.
    Accepted,
    /// The listener refuses the connection and will close it; the message says why.
    Refused(String),
}

/// Encodes a reply: [`MAGIC`], version (u16 LE), status (u8: 0 = accepted, 1 = refused),
/// message length (u32 LE), message (UTF-8; empty when accepted).
///
/// A message longer than [`MAX_MESSAGE_LEN`] bytes is cut at the last character boundary that
/// fits, so that an over-long explanation still reaches the user instead of a decode error.
pub fn encode_reply(reply: &Reply) -> Vec<u8> {
    let (status, message) = match reply {
        Reply::Accepted => (STATUS_ACCEPTED, ""),
        Reply::Refused(message) => (STATUS_REFUSED, truncate_utf8(message, MAX_MESSAGE_LEN)),
    };
    let mut out = Vec::with_capacity(REPLY_FIXED + message.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    out.push(status);
    out.extend_from_slice(&(message.len() as u32).to_le_bytes());
    out.extend_from_slice(message.as_bytes());
    out
}

/// Decodes a reply from the start of `buf`; `Ok(None)` while more bytes are needed.
///
/// The reply's version field is not checked: the listener has already decided, and a newer
/// listener may accept an older client while announcing its own version. A message on an
/// accepted reply is read and dropped, for the same reason.
pub fn decode_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, ProtocolError> {
    if !check_magic(buf)? {
        return Ok(None);
    }
    if buf.len() < 7 {
        return Ok(None);
    }
    let status = buf[6];
    if status != STATUS_ACCEPTED && status != STATUS_REFUSED {
        return Err(ProtocolError::UnknownStatus(status));
    }
    if buf.len() < REPLY_FIXED {
        return Ok(None);
    }
    let message_len = u32::from_le_bytes([buf[7], buf[8], buf[9], buf[10]]) as usize;
    if message_len > MAX_MESSAGE_LEN {
        return Err(ProtocolError::MessageTooLong(message_len));
    }
    let end = REPLY_FIXED + message_len;
    let Some(message) = buf.get(REPLY_FIXED..end) else {
        return Ok(None);
    };
    let message = std::str::from_utf8(message).map_err(|_| ProtocolError::BadUtf8)?;
    let reply = match status {
        STATUS_ACCEPTED => Reply::Accepted,
        _ => Reply::Refused(message.to_owned()),
    };
    Ok(Some((reply, end)))
}

/// `Ok(true)` when `buf` starts with the magic, `Ok(false)` while fewer than four bytes are there.
fn check_magic(buf: &[u8]) -> Result<bool, ProtocolError> {
    let Some(head) = buf.first_chunk::<4>() else {
        return Ok(false);
    };
    if *head != MAGIC {
        return Err(ProtocolError::BadMagic(*head));
    }
    Ok(true)
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// "Client", "Client or Worker", "Client, Worker or Peer".
fn list_roles(roles: &[Role]) -> String {
    match roles {
        [] => "no role at all".to_owned(),
        [only] => only.to_string(),
        [init @ .., last] => {
            let init: Vec<String> = init.iter().map(Role::to_string).collect();
            format!("{} or {last}", init.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_round_trips_for_every_role() {
        for role in [Role::Client, Role::Worker, Role::Peer] {
            let hello = Hello::new(role, "worker-1 @ 10.0.0.7:8786 — ü");
            let bytes = encode_hello(&hello);
            assert_eq!(decode_hello(&bytes), Ok(Some((hello.clone(), bytes.len()))));
            assert_eq!(Role::from_code(role.code()), Some(role));
        }
    }

    #[test]
    fn hello_layout_is_as_documented() {
        let bytes = encode_hello(&Hello::new(Role::Worker, "ab"));
        assert_eq!(bytes, [b'K', b'I', b'L', b'N', 5, 0, 1, 2, 0, b'a', b'b', 0, 0]);
        let bytes = encode_hello(&Hello::new(Role::Client, "").with_token(AuthToken::new(*b"xyz")));
        assert_eq!(bytes, [b'K', b'I', b'L', b'N', 5, 0, 0, 0, 0, 3, 0, b'x', b'y', b'z']);
    }

    #[test]
    fn hello_decodes_byte_by_byte_and_ignores_trailing_bytes() {
        let hello = Hello::new(Role::Peer, "p");
        let mut bytes = encode_hello(&hello);
        let n = bytes.len();
        for cut in 0..n {
            assert_eq!(decode_hello(&bytes[..cut]), Ok(None), "prefix of {cut} bytes");
        }
        bytes.extend_from_slice(b"first packet");
        assert_eq!(decode_hello(&bytes), Ok(Some((hello, n))));
    }

    #[test]
    fn wrong_magic_is_an_error_naming_the_bytes() {
        let err = decode_hello(b"GET / HTTP/1.1\r\n").unwrap_err();
        assert_eq!(err, ProtocolError::BadMagic(*b"GET "));
        assert!(err.to_string().contains("\"GET \""), "{err}");
        assert_eq!(decode_reply(b"\x16\x03\x01\x02"), Err(ProtocolError::BadMagic([0x16, 3, 1, 2])));
    }

    #[test]
    fn bad_role_long_name_and_bad_utf8_are_errors() {
        let mut bytes = encode_hello(&Hello::new(Role::Client, "x"));
        bytes[6] = 9;
        assert_eq!(decode_hello(&bytes[..7]), Err(ProtocolError::UnknownRole(9)));

        let mut bytes = b"KILN\x01\x00\x00".to_vec();
        bytes.extend_from_slice(&1025u16.to_le_bytes());
        assert_eq!(decode_hello(&bytes), Err(ProtocolError::NameTooLong(1025)));

        let mut bytes = encode_hello(&Hello::new(Role::Client, "xy"));
        bytes[9] = 0xff;
        assert_eq!(decode_hello(&bytes), Err(ProtocolError::BadUtf8));
    }

    #[test]
    fn long_names_are_cut_at_a_char_boundary() {
        let hello = Hello::new(Role::Client, "é".repeat(600));
        let (decoded, _) = decode_hello(&encode_hello(&hello)).unwrap().unwrap();
        assert_eq!(decoded.name, "é".repeat(512));
    }

    #[test]
    fn other_version_decodes_and_is_refused_naming_both_versions() {
        let hello = Hello { version: 7, role: Role::Client, name: "c".into(), token: None };
        let (decoded, _) = decode_hello(&encode_hello(&hello)).unwrap().unwrap();
        assert_eq!(decoded.version, 7);
        let refusal = check_hello(&decoded, &[Role::Client, Role::Worker], "scheduler").unwrap_err();
        assert!(matches!(refusal, Refusal::Version { theirs: 7, .. }), "{refusal:?}");
        assert_eq!(
            refusal.to_string(),
            "protocol version 7 is not supported by this scheduler (speaks version 5); upgrade kiln on one side"
        );
    }

    #[test]
    fn an_older_hello_without_a_token_section_decodes_at_once_and_is_refused_by_version() {
        let hello = Hello { version: 3, role: Role::Worker, name: "old".into(), token: None };
        let bytes = encode_hello(&hello);
        assert_eq!(bytes.len(), HELLO_FIXED + 3);
        assert_eq!(decode_hello(&bytes), Ok(Some((hello.clone(), bytes.len()))));
        assert!(matches!(check_hello(&hello, &[Role::Worker], "scheduler"), Err(Refusal::Version { theirs: 3, .. })));
    }

    #[test]
    fn tokens_round_trip_are_checked_and_never_shown() {
        let secret = AuthToken::new(b"s3cret-token".to_vec()).unwrap();
        let hello = Hello::new(Role::Client, "c").with_token(Some(secret.clone()));
        let bytes = encode_hello(&hello);
        for cut in 0..bytes.len() {
            assert_eq!(decode_hello(&bytes[..cut]), Ok(None), "prefix of {cut} bytes");
        }
        let (decoded, used) = decode_hello(&bytes).unwrap().unwrap();
        assert_eq!((decoded.token.as_ref(), used), (Some(&secret), bytes.len()));
        assert_eq!(check_token(&decoded, Some(&secret)), Ok(()));
        assert_eq!(check_token(&decoded, None), Ok(()));
        let other = AuthToken::new(b"s3cret-tokeN".to_vec()).unwrap();
        assert_eq!(check_token(&decoded, Some(&other)), Err(Refusal::Authentication));
        assert_eq!(check_token(&Hello::new(Role::Client, "c"), Some(&secret)), Err(Refusal::Authentication));
        assert_eq!(Refusal::Authentication.to_string(), "authentication failed");
        let shown = format!("{hello:?} {secret:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert_eq!(AuthToken::new(Vec::new()), None);
        assert_eq!(AuthToken::new(vec![1; MAX_TOKEN_LEN + 1]), None);
        let mut long = encode_hello(&Hello::new(Role::Client, ""));
        long.truncate(HELLO_FIXED);
        long.extend_from_slice(&(MAX_TOKEN_LEN as u16 + 1).to_le_bytes());
        assert_eq!(decode_hello(&long), Err(ProtocolError::TokenTooLong(MAX_TOKEN_LEN + 1)));
    }

    #[test]
    fn wrong_role_is_refused_naming_the_role() {
        let hello = Hello::new(Role::Peer, "w");
        let refusal = check_hello(&hello, &[Role::Client, Role::Worker], "scheduler").unwrap_err();
        assert!(matches!(refusal, Refusal::Role { role: Role::Peer, .. }), "{refusal:?}");
        assert_eq!(
            refusal.to_string(),
            "this address is a kiln scheduler; role Peer is not accepted here (expected Client or Worker)"
        );
        let msg = check_hello(&Hello::new(Role::Client, "c"), &[Role::Peer], "worker").unwrap_err().to_string();
        assert!(msg.ends_with("role Client is not accepted here (expected Peer)"), "{msg}");
        assert_eq!(list_roles(&[Role::Client, Role::Worker, Role::Peer]), "Client, Worker or Peer");
        assert_eq!(check_hello(&hello, &[Role::Peer], "worker"), Ok(()));
    }

    #[test]
    fn replies_round_trip() {
        for reply in [Reply::Accepted, Reply::Refused("no thanks — ø".into()), Reply::Refused(String::new())] {
            let bytes = encode_reply(&reply);
            for cut in 0..bytes.len() {
                assert_eq!(decode_reply(&bytes[..cut]), Ok(None));
            }
            assert_eq!(decode_reply(&bytes), Ok(Some((reply, bytes.len()))));
        }
        assert_eq!(encode_reply(&Reply::Accepted), [b'K', b'I', b'L', b'N', 5, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn bad_replies_are_errors() {
        let mut bytes = encode_reply(&Reply::Refused("x".into()));
        bytes[6] = 2;
        assert_eq!(decode_reply(&bytes[..7]), Err(ProtocolError::UnknownStatus(2)));

        let mut bytes = b"KILN\x01\x00\x01".to_vec();
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode_reply(&bytes), Err(ProtocolError::MessageTooLong(u32::MAX as usize)));

        let mut bytes = encode_reply(&Reply::Refused("x".into()));
        bytes[11] = 0xc3;
        assert_eq!(decode_reply(&bytes), Err(ProtocolError::BadUtf8));
    }

    #[test]
    fn long_refusals_are_cut_to_the_limit() {
        let bytes = encode_reply(&Reply::Refused("ab".repeat(MAX_MESSAGE_LEN)));
        let (Reply::Refused(msg), _) = decode_reply(&bytes).unwrap().unwrap() else { panic!("not refused") };
        assert_eq!(msg.len(), MAX_MESSAGE_LEN);
    }
}
