//! kiln's wire protocol below the messages: the connection handshake and packet framing.
//!
//! Everything here is a pure function on bytes. There are no sockets, runtimes, threads or clocks,
//! so the scheduler, workers and clients share one implementation that tests (and the property
//! tests that stand in for a fuzzer) drive directly. `docs/PROTOCOL.md` describes the byte layouts.
//!
//! - Handshake: the connecting side sends a [`Hello`] ([`encode_hello`]); the listener decodes it
//!   ([`decode_hello`]), judges it ([`check_hello`]) and answers with a [`Reply`]
//!   ([`encode_reply`] / [`decode_reply`]).
//! - Packets: a postcard-encoded header frame ([`encode_header`] / [`decode_header`]) plus raw
//!   payload frames that are never re-encoded ([`encode_packet`], [`packet_prefix`] for vectored
//!   writes, [`PacketDecoder`] for reading).
//!
//! ```
//! use bytes::BytesMut;
//! use kiln_protocol::{PacketDecoder, encode_packet};
//! let mut wire = Vec::new();
//! encode_packet(b"header", &[b"chunk 0", b"chunk 1"], &mut wire);
//! let mut buf = BytesMut::from(&wire[..]);
//! let packet = PacketDecoder::default().decode(&mut buf).unwrap().unwrap();
//! assert_eq!(&packet.header[..], b"header");
//! assert_eq!(&packet.frames[1][..], b"chunk 1");
//! ```

#![deny(missing_docs)]

mod error;
mod handshake;
mod header;
mod ids;
pub mod messages;
mod packet;

pub use error::ProtocolError;
pub use handshake::{
    AuthToken, Hello, MAX_MESSAGE_LEN, MAX_NAME_LEN, MAX_TOKEN_LEN, Refusal, Reply, Role, check_hello, check_token,
    decode_hello, decode_reply, encode_hello, encode_reply,
};
pub use header::{decode_header, encode_header};
pub use ids::{ClientId, WorkerId};
pub use packet::{Packet, PacketDecoder, encode_packet, packet_prefix};

/// The first four bytes of every hello and reply, so that a stray client (an HTTP probe, a
/// different service) is recognized and dropped at once.
pub const MAGIC: [u8; 4] = *b"KILN";
/// The protocol version this build speaks; both sides of a connection must speak the same one.
///
/// Version 2: `TaskFailure` carries a `kind` (a task's own error, or given up on after killing
/// workers). Version 3: clients register; workers register a `WriteToken` that peers present
/// (`PeerRequest::Authenticate`) before a `Put`; `WorkerToScheduler::Paused` (a worker tells the
/// scheduler it paused or resumed). Version 4: the hello ends with an optional authentication
/// token ([`AuthToken`], `--auth-token`); `Finished` carries the run's start time and thread,
/// `Heartbeat` the CPU use and the transfers and spills since the last one (`ActivityRecord`),
/// `Welcome` the dashboard's address. Version 5: `ComputeTask::who_has` and `Acquire` name each
/// value's size ([`messages::WhoHas`]), so a worker bounds the bytes it fetches at once, and
/// `Heartbeat` carries the worker process's network byte totals (read and written).
pub const PROTOCOL_VERSION: u16 = 5;
/// Default maximum size of one frame (header or payload frame): 1 GiB.
pub const DEFAULT_MAX_FRAME: usize = 1 << 30;
/// Default maximum size of one packet (all its frames) on an accepted connection: what one peer
/// may make a listener buffer at once.
pub const DEFAULT_MAX_PACKET: usize = 2 << 30;
/// Default maximum frame size on a connection whose peer has not registered or authenticated
/// yet: enough for any hello-time message, far too little to make a listener buffer much.
pub const UNREGISTERED_MAX_FRAME: usize = 64 << 10;
/// Maximum number of frames in one packet, header included.
pub const MAX_FRAMES: usize = 1 << 20;
