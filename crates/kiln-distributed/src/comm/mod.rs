//! Connections: the handshake, a packet reader, a batching writer, values on the wire, and a
//! pool of peer connections for data transfers; [`tls`] adds encryption, mutual
//! authentication and the shared-secret token.
//!
//! Every connection is a [`Stream`] (plain TCP or TLS over TCP, an enum: no boxing and no
//! dynamic dispatch on the plain path); the reader and writers are generic over the halves.

pub mod tls;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kiln_graph::{CodecError, CodecRegistry, Encoded, Frame, Key, Value};
use kiln_protocol::messages::{PeerReply, PeerRequest, WireValue, WriteToken};
use kiln_protocol::{
    DEFAULT_MAX_FRAME, DEFAULT_MAX_PACKET, Hello, Packet, PacketDecoder, ProtocolError, Reply, Role,
    UNREGISTERED_MAX_FRAME, check_hello, check_token, decode_header, decode_hello, decode_reply, encode_header,
    encode_hello, encode_packet, encode_reply, packet_prefix,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

pub use tls::{
    ReadHalf, Scheme, Security, SecurityError, Stream, TlsRole, TlsVersion, Transport, WriteHalf, parse_address,
};

/// How long a peer may take to complete the handshake before it is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What peers may make this process buffer, and how long strangers may linger.
///
/// One set per process ([`limits`]), read from the environment on first use (or set with
/// [`set_limits`] before any connection is made), because the budget is shared by every
/// connection of the process: the scheduler's, a worker's data port and its fetches, a client's.
///
/// | field | variable | default |
/// |---|---|---|
/// | `max_frame` | `KILN_MAX_FRAME` (bytes) | 1 GiB |
/// | `max_packet` | `KILN_MAX_PACKET` (bytes) | 2 GiB |
/// | `unregistered_max_frame` | `KILN_UNREGISTERED_MAX_FRAME` (bytes) | 64 KiB |
/// | `receive_budget` | `KILN_RECEIVE_BUDGET` (bytes) | 4 GiB |
/// | `register_timeout` | `KILN_REGISTER_TIMEOUT` (seconds, fractions allowed) | 10 s |
/// | `max_unregistered` | `KILN_MAX_UNREGISTERED` | 64 |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame (a packet's header or one payload frame) accepted from a registered peer;
    /// a client also refuses to send a value or graph larger than this, with a message.
    pub max_frame: usize,
    /// Largest packet (all its frames) accepted on a connection this process accepted.
    pub max_packet: usize,
    /// Largest frame or packet accepted from a peer that has not registered (scheduler) or
    /// authenticated (a worker's data port) yet.
    pub unregistered_max_frame: usize,
    /// Bytes of packets being received, over all connections of the process; a connection
    /// whose next packet does not fit waits (backpressure) instead of allocating.
    pub receive_budget: usize,
    /// A connection that has not completed the handshake and registered in this time is
    /// dropped.
    pub register_timeout: Duration,
    /// Most connections a listener keeps waiting for registration; beyond it the oldest one is
    /// dropped, so idle sockets cannot use up the file descriptors real peers need.
    pub max_unregistered: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame: DEFAULT_MAX_FRAME,
            max_packet: DEFAULT_MAX_PACKET,
            unregistered_max_frame: UNREGISTERED_MAX_FRAME,
            receive_budget: 4 << 30,
            register_timeout: Duration::from_secs(10),
            max_unregistered: 64,
        }
    }
}

/// A `KILN_*` limit variable that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}={value:?} is not valid: expected {expected}")]
pub struct LimitError {
    /// The variable.
    pub variable: &'static str,
    /// Its value.
    pub value: String,
    /// What would have been accepted.
    pub expected: &'static str,
}

impl Limits {
    /// The defaults, overridden by the `KILN_*` variables that are set.
    ///
    /// # Errors
    /// A variable that is not a positive number (zero would refuse every peer).
    pub fn from_env() -> Result<Limits, LimitError> {
        Limits::from_vars(|name| std::env::var(name).ok())
    }

    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Limits, LimitError> {
        let mut limits = Limits::default();
        let bytes = |variable: &'static str, slot: &mut usize| -> Result<(), LimitError> {
            if let Some(value) = var(variable) {
                *slot = value.trim().parse::<usize>().ok().filter(|&n| n > 0).ok_or(LimitError {
                    variable,
                    value,
                    expected: "a positive whole number",
                })?;
            }
            Ok(())
        };
        bytes("KILN_MAX_FRAME", &mut limits.max_frame)?;
        bytes("KILN_MAX_PACKET", &mut limits.max_packet)?;
        bytes("KILN_UNREGISTERED_MAX_FRAME", &mut limits.unregistered_max_frame)?;
        bytes("KILN_RECEIVE_BUDGET", &mut limits.receive_budget)?;
        bytes("KILN_MAX_UNREGISTERED", &mut limits.max_unregistered)?;
        if let Some(value) = var("KILN_REGISTER_TIMEOUT") {
            let seconds = value.trim().parse::<f64>().ok().filter(|s| s.is_finite() && *s > 0.0 && *s < 1e9);
            limits.register_timeout = Duration::from_secs_f64(seconds.ok_or(LimitError {
                variable: "KILN_REGISTER_TIMEOUT",
                value,
                expected: "a positive number of seconds",
            })?);
        }
        Ok(limits)
    }
}

static LIMITS: OnceLock<Limits> = OnceLock::new();

/// The process's limits: those given to [`set_limits`], else [`Limits::from_env`] (an invalid
/// variable is logged as an error and the defaults are used).
pub fn limits() -> &'static Limits {
    LIMITS.get_or_init(|| {
        Limits::from_env().unwrap_or_else(|e| {
            tracing::error!("{e}; using the default connection limits");
            Limits::default()
        })
    })
}

/// Sets the process's limits; call it before the first connection.
///
/// # Errors
/// The limits already in force (they were set or used before), when they differ.
pub fn set_limits(new: Limits) -> Result<(), Limits> {
    let current = *LIMITS.get_or_init(|| new);
    if current == new { Ok(()) } else { Err(current) }
}

/// Packets at most this large are read without taking from the budget: one per connection at a
/// time, so they cannot add up to much, and the common small message pays nothing.
const SMALL_PACKET: usize = 64 << 10;

/// The receive budget: a semaphore of bytes (counted in KiB, so that a `u32` of permits covers
/// terabytes). A packet's bytes are acquired before its body is read.
#[derive(Clone)]
pub struct ReceiveBudget {
    sem: Arc<Semaphore>,
    units: u32,
}

impl ReceiveBudget {
    /// A budget of `bytes` (at least 1 KiB).
    pub fn new(bytes: usize) -> Self {
        let units = u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX).max(1);
        ReceiveBudget { sem: Arc::new(Semaphore::new(units as usize)), units }
    }

    /// The process-wide budget ([`Limits::receive_budget`]).
    pub fn global() -> &'static ReceiveBudget {
        static GLOBAL: OnceLock<ReceiveBudget> = OnceLock::new();
        GLOBAL.get_or_init(|| ReceiveBudget::new(limits().receive_budget))
    }

    /// Bytes not taken by packets being received now (rounded to KiB).
    pub fn available(&self) -> usize {
        self.sem.available_permits() * 1024
    }

    /// Takes room for a packet of `bytes`, waiting until it is free. A packet larger than the
    /// whole budget takes all of it, so it can still be received, alone.
    async fn acquire(&self, bytes: usize) -> OwnedSemaphorePermit {
        let units = u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX).min(self.units);
        // The semaphore is never closed.
        self.sem.clone().acquire_many_owned(units).await.expect("the receive budget is never closed")
    }
}

/// Listener-side bookkeeping of connections that have not registered yet: at most
/// [`Limits::max_unregistered`] of them; admitting one more drops the oldest.
pub struct Admission {
    max: usize,
    waiting: Mutex<(u64, BTreeMap<u64, oneshot::Sender<()>>)>,
}

/// A connection counted by an [`Admission`] until it registers (or is dropped).
pub struct Stranger {
    id: u64,
    admission: Arc<Admission>,
    evicted: oneshot::Receiver<()>,
    /// Set once `evicted` has fired (a oneshot must not be polled again after that).
    was_evicted: bool,
}

/// Why a connection was dropped before it registered.
#[derive(Debug, thiserror::Error)]
pub enum Unregistered {
    /// It did not complete the handshake and registration in time.
    #[error("did not register within {0:?}")]
    Timeout(Duration),
    /// Too many connections were waiting to register and it was the oldest.
    #[error("dropped to make room: more than {0} connections were waiting to register and this was the oldest")]
    Evicted(usize),
    /// The handshake or the registration failed.
    #[error(transparent)]
    Failed(#[from] CommError),
}

impl Admission {
    /// Bookkeeping for at most `max` unregistered connections.
    pub fn new(max: usize) -> Arc<Admission> {
        Arc::new(Admission { max: max.max(1), waiting: Mutex::new((0, BTreeMap::new())) })
    }

    /// Counts a new connection, dropping the oldest waiting one if there are too many.
    pub fn admit(self: &Arc<Self>) -> Stranger {
        let (tx, evicted) = oneshot::channel();
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        let id = waiting.0;
        waiting.0 += 1;
        waiting.1.insert(id, tx);
        while waiting.1.len() > self.max {
            if let Some((_, oldest)) = waiting.1.pop_first() {
                let _ = oldest.send(());
            }
        }
        Stranger { id, admission: self.clone(), evicted, was_evicted: false }
    }

    /// Connections waiting to register now.
    pub fn waiting(&self) -> usize {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner()).1.len()
    }
}

impl Drop for Stranger {
    fn drop(&mut self) {
        self.admission.waiting.lock().unwrap_or_else(|p| p.into_inner()).1.remove(&self.id);
    }
}

impl Stranger {
    /// Resolves when this connection is dropped to make room for a newer one.
    pub async fn evicted(&mut self) {
        if !self.was_evicted {
            let _ = (&mut self.evicted).await;
            self.was_evicted = true;
        }
    }

    /// Why [`Stranger::evicted`] resolved, for the log line.
    pub fn eviction_reason(&self) -> String {
        Unregistered::Evicted(self.admission.max).to_string()
    }

    /// Runs a connection's handshake and registration `work` within `timeout`, unless this
    /// connection is evicted first; either way it stops counting as unregistered.
    ///
    /// # Errors
    /// The timeout, an eviction, or `work`'s own error.
    pub async fn register<T>(
        mut self,
        timeout: Duration,
        work: impl std::future::Future<Output = Result<T, CommError>>,
    ) -> Result<T, Unregistered> {
        let max = self.admission.max;
        tokio::select! {
            done = tokio::time::timeout(timeout, work) => match done {
                Ok(result) => Ok(result?),
                Err(_) => Err(Unregistered::Timeout(timeout)),
            },
            _ = self.evicted() => Err(Unregistered::Evicted(max)),
        }
    }
}

/// A fresh [`WriteToken`]: 128 bits from the operating system's random source.
///
/// # Errors
/// The random source cannot be read.
pub fn new_write_token() -> Result<WriteToken, CommError> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(io("cannot read /dev/urandom for the worker's write token"))?;
    Ok(WriteToken(u128::from_le_bytes(bytes)))
}

/// A connection-level failure.
#[derive(Debug, thiserror::Error)]
pub enum CommError {
    /// The socket failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The peer sent bytes that are not the kiln protocol.
    #[error("protocol error from {peer}: {source}")]
    Protocol {
        /// Who sent them.
        peer: String,
        /// What was wrong.
        source: ProtocolError,
    },
    /// The other side refused the handshake.
    #[error("{peer} refused the connection: {message}")]
    Refused {
        /// Who refused.
        peer: String,
        /// Its reason.
        message: String,
    },
    /// The peer sent something out of place (e.g. work before registering).
    #[error("{peer}: {message}")]
    Unexpected {
        /// Who sent it.
        peer: String,
        /// What was wrong.
        message: String,
    },
    /// The connection closed.
    #[error("connection to {0} closed")]
    Closed(String),
    /// The handshake did not complete in time.
    #[error("{0} did not complete the handshake in time")]
    Timeout(String),
    /// A value could not be encoded or decoded.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The TLS handshake failed: a certificate the other side's CA did not sign, an expired one,
    /// none at all, or TLS on one side only.
    #[error("TLS with {peer} failed: {message}")]
    Tls {
        /// The other side.
        peer: String,
        /// rustls's reason.
        message: String,
    },
    /// A plain connection where encryption is required (on either side).
    #[error("{0}")]
    Unencrypted(String),
    /// No scheduler could be reached within the worker's death timeout.
    #[error("{0}")]
    NoScheduler(String),
    /// The security settings do not work (see [`SecurityError`]), or an address is not
    /// `tcp://` or `tls://`.
    #[error("{0}")]
    Setup(String),
}

impl From<SecurityError> for CommError {
    fn from(e: SecurityError) -> Self {
        CommError::Setup(e.to_string())
    }
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> CommError {
    let context = context.into();
    move |source| CommError::Io { context, source }
}

/// Connects to `address` (`tcp://host:port`, `tls://host:port` or `host:port`) and introduces
/// this process in `role`, presenting `transport`'s token.
///
/// # Errors
/// Connection failures, a refused handshake (with the listener's reason), a timeout, a TLS
/// failure, a plain address while encryption is required.
pub async fn connect(
    address: &str,
    role: Role,
    name: &str,
    transport: &Transport,
) -> Result<(Stream, BytesMut), CommError> {
    let (scheme, host_port) = parse_address(address).map_err(CommError::Setup)?;
    if scheme == Scheme::Tcp && transport.require_encryption {
        return Err(CommError::Unencrypted(format!(
            "refusing a plain tcp:// connection to {host_port}: encryption is required (connect to tls://{host_port})"
        )));
    }
    let tcp = TcpStream::connect(host_port).await.map_err(io(format!("cannot connect to {address}")))?;
    tcp.set_nodelay(true).map_err(io("set_nodelay"))?;
    let mut stream = match scheme {
        Scheme::Tcp => Stream::Tcp(tcp),
        Scheme::Tls => {
            let connector = transport.connector.as_ref().ok_or_else(|| {
                CommError::Setup(format!(
                    "{address} is a TLS address but this process has no TLS settings (give --tls-ca-file, --tls-cert \
                     and --tls-key, or a Security)"
                ))
            })?;
            let server_name = rustls::pki_types::ServerName::try_from(tls::host_of(host_port).to_string())
                .map_err(|e| CommError::Setup(format!("{address}: {e}")))?;
            let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(server_name, tcp))
                .await
                .map_err(|_| CommError::Timeout(address.to_string()))?
                .map_err(|e| tls_failure(address, e))?;
            Stream::Tls(Box::new(tokio_rustls::TlsStream::Client(tls)))
        }
    };
    let hello = Hello::new(role, name).with_token(transport.token.clone());
    let sent = async {
        stream.write_all(&encode_hello(&hello)).await?;
        stream.flush().await
    };
    sent.await.map_err(|e| {
        if stream_is_tls(&stream) { tls_failure(address, e) } else { io(format!("handshake with {address}"))(e) }
    })?;
    let reply = read_handshake(&mut stream, address, decode_reply).await.map_err(|e| match e {
        // With TLS 1.3 the listener judges our certificate after we think the handshake is
        // done: its verdict arrives as an alert on the first read.
        CommError::Io { source, .. } if stream_is_tls(&stream) => tls_failure(address, source),
        CommError::Closed(_) if stream_is_tls(&stream) => CommError::Tls {
            peer: address.to_string(),
            message: "the listener closed the connection (does it trust this process's certificate?)".into(),
        },
        CommError::Closed(_) => CommError::Closed(format!(
            "{address} (during the handshake: if it is a TLS listener, connect to tls://{host_port})"
        )),
        e => e,
    })?;
    let (reply, leftover) = reply;
    match reply {
        // Bytes after the reply already belong to the first packets.
        Reply::Accepted => Ok((stream, leftover)),
        Reply::Refused(message) => Err(CommError::Refused { peer: address.to_string(), message }),
    }
}

fn stream_is_tls(stream: &Stream) -> bool {
    stream.is_tls()
}

fn tls_failure(peer: &str, e: std::io::Error) -> CommError {
    CommError::Tls { peer: peer.to_string(), message: e.to_string() }
}

/// A handshake decoder: `Ok(None)` while more bytes are needed, else the message and how many
/// bytes it took.
type HandshakeDecoder<T> = fn(&[u8]) -> Result<Option<(T, usize)>, ProtocolError>;

/// Reads one handshake message within [`HANDSHAKE_TIMEOUT`]; bytes after it (the first packets)
/// are returned for the packet reader.
async fn read_handshake<T>(
    stream: &mut Stream,
    peer: &str,
    decode: HandshakeDecoder<T>,
) -> Result<(T, BytesMut), CommError> {
    let mut buf = Vec::with_capacity(64);
    tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        loop {
            let mut chunk = [0u8; 256];
            let n = stream.read(&mut chunk).await.map_err(io(format!("handshake with {peer}")))?;
            if n == 0 {
                return Err(CommError::Closed(peer.to_string()));
            }
            buf.extend_from_slice(&chunk[..n]);
            match decode(&buf) {
                Ok(Some((message, used))) => return Ok((message, BytesMut::from(&buf[used..]))),
                Ok(None) => {}
                Err(source) => return Err(CommError::Protocol { peer: peer.to_string(), source }),
            }
        }
    })
    .await
    .map_err(|_| CommError::Timeout(peer.to_string()))?
}

/// Completes an accepted connection: TLS first when `transport` has a listener certificate (a
/// plain kiln hello is then refused with a sentence saying so), then the peer's hello, which is
/// accepted or refused (role, version, token).
///
/// # Errors
/// A failed TLS handshake (an untrusted, expired or missing certificate), a plain connection to
/// a TLS listener, a malformed or refused hello (the refusal is sent to the peer first), a
/// timeout.
pub async fn accept(
    tcp: TcpStream,
    transport: &Transport,
    accepted: &[Role],
    listener: &str,
) -> Result<(Stream, Hello, BytesMut), CommError> {
    let peer = tcp.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "?".into());
    tcp.set_nodelay(true).map_err(io("set_nodelay"))?;
    let mut stream = match &transport.acceptor {
        None => Stream::Tcp(tcp),
        Some(acceptor) => {
            let mut first = [0u8; 1];
            let peeked = tokio::time::timeout(HANDSHAKE_TIMEOUT, tcp.peek(&mut first))
                .await
                .map_err(|_| CommError::Timeout(peer.clone()))?
                .map_err(io(format!("handshake with {peer}")))?;
            if peeked == 1 && first[0] == MAGIC_FIRST {
                // A plain kiln hello: answer in plain words before closing.
                let mut tcp = tcp;
                let message = format!("{listener} accepts only TLS connections: connect to tls:// instead of tcp://");
                let _ = tcp.write_all(&encode_reply(&Reply::Refused(message))).await;
                return Err(CommError::Unencrypted(format!(
                    "refused a plain tcp:// connection from {peer}: this listener requires TLS"
                )));
            }
            let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
                .await
                .map_err(|_| CommError::Timeout(peer.clone()))?
                .map_err(|e| tls_failure(&peer, e))?;
            Stream::Tls(Box::new(tokio_rustls::TlsStream::Server(tls)))
        }
    };
    let hello = read_handshake(&mut stream, &peer, decode_hello).await.map_err(|e| match e {
        CommError::Protocol { source: ProtocolError::BadMagic([0x16, 0x03, ..]), .. } => CommError::Unencrypted(format!(
            "{peer} started a TLS handshake but this listener speaks plain tcp:// (give it a certificate, or connect with tcp://)"
        )),
        e => e,
    })?;
    let (hello, leftover) = hello;
    let verdict = check_hello(&hello, accepted, listener).and_then(|()| check_token(&hello, transport.token.as_ref()));
    match verdict {
        Ok(()) => {
            let sent = async {
                stream.write_all(&encode_reply(&Reply::Accepted)).await?;
                stream.flush().await
            };
            sent.await.map_err(io(format!("handshake from {peer}")))?;
            Ok((stream, hello, leftover))
        }
        Err(message) => {
            let message = message.to_string();
            let _ = stream.write_all(&encode_reply(&Reply::Refused(message.clone()))).await;
            let _ = stream.flush().await;
            Err(CommError::Refused { peer, message })
        }
    }
}

/// The first byte of every kiln hello (`K`); a TLS handshake starts with 0x16.
const MAGIC_FIRST: u8 = kiln_protocol::MAGIC[0];

/// Reads packets from one connection, within the process's [`Limits`] and receive budget.
/// Generic over the reading half, so each kind of connection gets its own monomorphic loop.
pub struct PacketReader<R = ReadHalf> {
    half: R,
    buf: BytesMut,
    decoder: PacketDecoder,
    peer: String,
    budget: ReceiveBudget,
    /// The budget taken for the packet being received.
    permit: Option<OwnedSemaphorePermit>,
}

impl<R: AsyncRead + Unpin> PacketReader<R> {
    /// A reader over the read half of a connection this process opened (to an address it was
    /// given): frames up to [`Limits::max_frame`], packets of any size.
    pub fn new(half: R, peer: impl Into<String>) -> Self {
        Self::with_buffer(half, peer, BytesMut::new())
    }

    /// [`PacketReader::new`], starting with bytes already received (after the handshake).
    pub fn with_buffer(half: R, peer: impl Into<String>, received: BytesMut) -> Self {
        Self::with_decoder(half, peer, received, PacketDecoder::new(limits().max_frame))
    }

    /// A reader for a connection this process accepted from a peer that has not registered:
    /// frames and packets up to [`Limits::unregistered_max_frame`] until [`PacketReader::trust`].
    pub fn stranger(half: R, peer: impl Into<String>, received: BytesMut) -> Self {
        let small = limits().unregistered_max_frame;
        Self::with_decoder(half, peer, received, PacketDecoder::with_limits(small, small))
    }

    fn with_decoder(half: R, peer: impl Into<String>, mut received: BytesMut, decoder: PacketDecoder) -> Self {
        received.reserve(64 << 10);
        PacketReader {
            half,
            buf: received,
            decoder,
            peer: peer.into(),
            budget: ReceiveBudget::global().clone(),
            permit: None,
        }
    }

    /// Takes room for packets from `budget` instead of the process-wide one.
    pub fn with_budget(mut self, budget: ReceiveBudget) -> Self {
        self.budget = budget;
        self
    }

    /// The peer has registered: from the next packet on, frames up to [`Limits::max_frame`]
    /// and packets up to [`Limits::max_packet`].
    pub fn trust(&mut self) {
        let limits = limits();
        self.decoder.set_limits(limits.max_frame, limits.max_packet);
    }

    /// The next packet; `Ok(None)` when the peer closed the connection cleanly.
    ///
    /// A packet's body is read only after its bytes are taken from the receive budget (then
    /// reserved in one go); while the budget is used up, this waits without reading.
    ///
    /// # Errors
    /// Socket errors and malformed packets (the caller drops the connection).
    pub async fn next(&mut self) -> Result<Option<Packet>, CommError> {
        loop {
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(packet)) => {
                    // The packet is whole: what it holds is the caller's now.
                    self.permit = None;
                    return Ok(Some(packet));
                }
                Ok(None) => {}
                Err(source) => return Err(CommError::Protocol { peer: self.peer.clone(), source }),
            }
            if self.permit.is_none()
                && let Some(total) = self.decoder.pending_body()
                && total > SMALL_PACKET
            {
                self.permit = Some(self.budget.acquire(total).await);
                // Room for the bytes that stay in the buffer; large frames stream through it
                // into their own buffers (the decoder asks for room as they do).
                let inline = self.decoder.pending_inline().unwrap_or(0);
                self.buf.reserve(inline.saturating_sub(self.buf.len()));
            }
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(64 << 10);
            }
            let n = self.half.read_buf(&mut self.buf).await.map_err(io(format!("reading from {}", self.peer)))?;
            if n == 0 {
                return if self.buf.is_empty() { Ok(None) } else { Err(CommError::Closed(self.peer.clone())) };
            }
        }
    }

    /// The next packet's messages and payload frames.
    ///
    /// # Errors
    /// As [`PacketReader::next`], plus headers that do not decode as `M`.
    pub async fn next_messages<M: DeserializeOwned>(&mut self) -> Result<Option<(Vec<M>, Vec<Frame>)>, CommError> {
        match self.next().await? {
            None => Ok(None),
            Some(packet) => {
                let messages = decode_header::<Vec<M>>(&packet.header)
                    .map_err(|source| CommError::Protocol { peer: self.peer.clone(), source })?;
                Ok(Some((messages, packet.frames)))
            }
        }
    }
}

/// Something to send on a connection.
pub enum Outgoing<M> {
    /// A message, batched with others queued at the same time.
    Message(M),
    /// A message whose values' payloads travel as these frames (sent as its own packet).
    WithFrames(M, Vec<Bytes>),
}

/// The sending side of a connection: messages queue here and a writer task batches them.
pub type Sender<M> = mpsc::UnboundedSender<Outgoing<M>>;

/// Most messages drained into one packet.
const MAX_BATCH: usize = 8192;

/// A peer that has not taken our bytes for this long has stopped reading: the connection is
/// dropped rather than queueing without bound.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

async fn write_all_timed<W: AsyncWrite + Unpin>(half: &mut W, bytes: &[u8], peer: &str) -> bool {
    match tokio::time::timeout(WRITE_TIMEOUT, half.write_all(bytes)).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::debug!("connection to {peer} lost while writing: {e}");
            false
        }
        Err(_) => {
            tracing::warn!("{peer} stopped reading for {WRITE_TIMEOUT:?}; dropping the connection");
            false
        }
    }
}

/// Starts the writer task of a connection. It ends when every [`Sender`] is dropped (after
/// flushing) or the socket fails.
pub fn spawn_writer<M: Serialize + Send + 'static>(
    half: impl AsyncWrite + Unpin + Send + 'static,
    peer: String,
) -> Sender<M> {
    spawn_flushing_writer(half, peer).0
}

/// Resolves when a writer task has ended: every message queued before the last [`Sender`] was
/// dropped is written and the socket is shut down (or the socket failed).
pub type Flushed = tokio::task::JoinHandle<()>;

/// [`spawn_writer`], plus a handle to await the flush: drop every [`Sender`], then await
/// [`Flushed`] to know the peer has been sent everything (no sleeping "for the writer").
pub fn spawn_flushing_writer<M: Serialize + Send + 'static>(
    mut half: impl AsyncWrite + Unpin + Send + 'static,
    peer: String,
) -> (Sender<M>, Flushed) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Outgoing<M>>();
    let flushed = tokio::spawn(async move {
        let mut batch: Vec<M> = Vec::new();
        let mut buf: Vec<u8> = Vec::with_capacity(64 << 10);
        let mut items = Vec::new();
        while rx.recv_many(&mut items, MAX_BATCH).await > 0 {
            for item in items.drain(..) {
                match item {
                    Outgoing::Message(m) => batch.push(m),
                    Outgoing::WithFrames(m, frames) => {
                        flush(&mut batch, &mut buf);
                        let header = match encode_header(&vec![m]) {
                            Ok(h) => h,
                            Err(e) => {
                                tracing::error!("cannot encode a message for {peer}: {e}");
                                continue;
                            }
                        };
                        buf.extend_from_slice(&packet_prefix(header.len(), frames.iter().map(|f| f.len())));
                        buf.extend_from_slice(&header);
                        // Large payloads go straight to the socket, never copied into `buf`.
                        if !write_all_timed(&mut half, &buf, &peer).await {
                            return;
                        }
                        buf.clear();
                        for frame in frames {
                            if !write_all_timed(&mut half, &frame, &peer).await {
                                return;
                            }
                        }
                    }
                }
            }
            flush(&mut batch, &mut buf);
            if !buf.is_empty() {
                if !write_all_timed(&mut half, &buf, &peer).await {
                    return;
                }
                buf.clear();
            }
            // TLS keeps the tail of a write in its session until flushed (for TCP a no-op).
            match tokio::time::timeout(WRITE_TIMEOUT, half.flush()).await {
                Ok(Ok(())) => {}
                _ => {
                    tracing::debug!("connection to {peer} lost while flushing");
                    return;
                }
            }
        }
        let _ = half.shutdown().await;
    });
    (tx, flushed)
}

fn flush<M: Serialize>(batch: &mut Vec<M>, buf: &mut Vec<u8>) {
    if batch.is_empty() {
        return;
    }
    match encode_header(&*batch) {
        Ok(header) => encode_packet(&header, &[], buf),
        Err(e) => tracing::error!("cannot encode messages: {e}"),
    }
    batch.clear();
}

/// Values ready for a packet: their descriptions and the payload frames they point into.
pub type WireValues = (Vec<(Key, WireValue)>, Vec<Bytes>);

/// Encodes values for the wire: per value a [`WireValue`] pointing into the returned frames.
///
/// # Errors
/// A value without a codec.
pub fn values_to_wire(
    values: impl IntoIterator<Item = (Key, Value)>,
    codecs: &CodecRegistry,
) -> Result<WireValues, CodecError> {
    let mut entries = Vec::new();
    let mut frames = Vec::new();
    for (key, value) in values {
        let Encoded { tag, header, frames: value_frames } = codecs.encode(&value)?;
        let first_frame = frames.len() as u32;
        let frame_count = value_frames.len() as u32;
        // Frames that view the value's memory stay views: the socket reads the value itself.
        frames.extend(value_frames.into_iter().map(Frame::into_bytes));
        entries.push((key, WireValue { tag, header, first_frame, frame_count }));
    }
    Ok((entries, frames))
}

/// A received packet's payload frames, each handed to at most one value.
///
/// Values of a packet own disjoint ranges of its frames. A packet whose values claim a frame
/// twice (no kiln peer sends one) must not decode the second claimant from whatever the first
/// left behind: for a plain number vector an emptied frame is a valid, empty and wrong value.
/// So a taken frame is remembered, and a second claim is an error.
#[derive(Debug, Default)]
pub struct ReceivedFrames {
    frames: Vec<Option<Frame>>,
}

impl ReceivedFrames {
    /// Frames `start..start + count`, taken out; `None` when the packet does not have them all
    /// or one of them was already taken.
    fn take(&mut self, start: usize, count: usize) -> Option<Vec<Frame>> {
        let range = self.frames.get_mut(start..start.checked_add(count)?)?;
        if range.iter().any(Option::is_none) {
            return None;
        }
        Some(range.iter_mut().filter_map(Option::take).collect())
    }
}

impl From<Vec<Frame>> for ReceivedFrames {
    fn from(frames: Vec<Frame>) -> Self {
        ReceivedFrames { frames: frames.into_iter().map(Some).collect() }
    }
}

/// Decodes a value received with its packet's frames, taking its frames out of `frames` so the
/// codec can adopt a received buffer instead of copying it.
///
/// # Errors
/// Frames the packet does not have, frames another value of the packet already took, or bytes
/// the codec rejects.
pub fn value_from_wire(
    wire: &WireValue,
    frames: &mut ReceivedFrames,
    codecs: &CodecRegistry,
) -> Result<Value, CodecError> {
    let taken =
        frames.take(wire.first_frame as usize, wire.frame_count as usize).ok_or_else(|| CodecError::Malformed {
            tag: wire.tag.clone(),
            message: format!(
                "value refers to frames {}..{} that the packet does not have or that another of its values took",
                wire.first_frame,
                u64::from(wire.first_frame) + u64::from(wire.frame_count)
            ),
        })?;
    codecs.decode_owned(Encoded { tag: wire.tag.clone(), header: wire.header.clone(), frames: taken })
}

type ReplySlot = oneshot::Sender<Result<(PeerReply, Vec<Frame>), CommError>>;

struct PeerConn {
    tx: Sender<PeerRequest>,
    pending: Arc<Mutex<HashMap<u64, ReplySlot>>>,
    /// Whether this connection has presented the worker's write token.
    authenticated: std::sync::atomic::AtomicBool,
}

/// Connections to workers' data ports, opened on first use and reused.
#[derive(Clone)]
pub struct PeerPool {
    name: Arc<str>,
    transport: Transport,
    /// Workers' write tokens by data address, as the scheduler told us.
    tokens: Arc<Mutex<HashMap<String, WriteToken>>>,
    conns: Arc<tokio::sync::Mutex<HashMap<String, Arc<PeerConn>>>>,
    next_request: Arc<std::sync::atomic::AtomicU64>,
}

impl PeerPool {
    /// An empty pool; `name` introduces this process to peers, `transport` says how to reach
    /// them (TLS for `tls://` addresses, the token).
    pub fn new(name: &str, transport: Transport) -> Self {
        PeerPool {
            name: name.into(),
            transport,
            tokens: Arc::default(),
            conns: Arc::default(),
            next_request: Arc::new(std::sync::atomic::AtomicU64::new(1)),
        }
    }

    /// Records the write token of the worker at `address` (from its `WorkerInfo`): requests
    /// to it present the token first, so that it takes this process's `Put`s and large frames.
    pub fn know(&self, address: &str, token: WriteToken) {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner()).insert(address.to_string(), token);
    }

    /// A fresh request id.
    pub fn request_id(&self) -> u64 {
        self.next_request.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    async fn conn(&self, address: &str) -> Result<Arc<PeerConn>, CommError> {
        let mut conns = self.conns.lock().await;
        if let Some(c) = conns.get(address)
            && !c.tx.is_closed()
        {
            return Ok(c.clone());
        }
        let (stream, leftover) = connect(address, Role::Peer, &self.name, &self.transport).await?;
        let (read, write) = stream.into_split();
        let tx = spawn_writer::<PeerRequest>(write, address.to_string());
        let pending: Arc<Mutex<HashMap<u64, ReplySlot>>> = Arc::default();
        let conn = Arc::new(PeerConn { tx, pending: pending.clone(), authenticated: false.into() });
        conns.insert(address.to_string(), conn.clone());
        let pool = self.conns.clone();
        let peer = address.to_string();
        tokio::spawn(async move {
            let mut reader = PacketReader::with_buffer(read, peer.clone(), leftover);
            let error = loop {
                match reader.next_messages::<PeerReply>().await {
                    Ok(Some((replies, frames))) => {
                        // A packet with frames carries one reply: it gets the frames themselves,
                        // not a second handle to them (a shared buffer cannot be adopted).
                        let mut frames = Some(frames);
                        let last = replies.len().saturating_sub(1);
                        for (i, reply) in replies.into_iter().enumerate() {
                            let id = match &reply {
                                PeerReply::Data { request, .. }
                                | PeerReply::Stored { request }
                                | PeerReply::Error { request, .. } => *request,
                            };
                            let slot = pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                            if let Some(slot) = slot {
                                let frames = if i == last { frames.take() } else { frames.clone() };
                                let _ = slot.send(Ok((reply, frames.unwrap_or_default())));
                            }
                        }
                    }
                    Ok(None) => break CommError::Closed(peer.clone()),
                    Err(e) => break e,
                }
            };
            tracing::debug!("peer connection to {peer} ended: {error}");
            pool.lock().await.remove(&peer);
            let slots: Vec<ReplySlot> =
                pending.lock().unwrap_or_else(|p| p.into_inner()).drain().map(|(_, s)| s).collect();
            for slot in slots {
                let _ = slot.send(Err(CommError::Closed(peer.clone())));
            }
        });
        Ok(conn)
    }

    /// Sends a request to the worker at `address` and waits for its reply.
    ///
    /// # Errors
    /// Connection failures (the pooled connection is dropped and reopened next time).
    pub async fn request(
        &self,
        address: &str,
        request: PeerRequest,
        frames: Vec<Bytes>,
    ) -> Result<(PeerReply, Vec<Frame>), CommError> {
        let conn = self.conn(address).await?;
        let token = self.tokens.lock().unwrap_or_else(|p| p.into_inner()).get(address).copied();
        if let Some(token) = token
            && !conn.authenticated.swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            // The writer keeps order: the worker reads this before the request below.
            let _ = conn.tx.send(Outgoing::Message(PeerRequest::Authenticate { token }));
        }
        let id = match &request {
            PeerRequest::Get { request, .. } | PeerRequest::Put { request, .. } => *request,
            PeerRequest::Authenticate { .. } => {
                // It has no answer to wait for.
                return Err(CommError::Refused {
                    peer: address.to_string(),
                    message: "Authenticate is sent by the pool itself (see `PeerPool::know`), not as a request".into(),
                });
            }
        };
        let (slot, answer) = oneshot::channel();
        conn.pending.lock().unwrap_or_else(|p| p.into_inner()).insert(id, slot);
        let item = if frames.is_empty() { Outgoing::Message(request) } else { Outgoing::WithFrames(request, frames) };
        if conn.tx.send(item).is_err() {
            conn.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
            return Err(CommError::Closed(address.to_string()));
        }
        answer.await.unwrap_or_else(|_| Err(CommError::Closed(address.to_string())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    #[test]
    fn a_frame_claimed_by_two_values_of_a_packet_is_an_error_not_an_empty_value() {
        let codecs = CodecRegistry::with_builtins();
        let values = [(Key::new("a"), Value::new(vec![1.5f64; 3])), (Key::new("b"), Value::new(vec![2i64; 2]))];
        let (wires, frames) = values_to_wire(values, &codecs).unwrap();
        let received = || ReceivedFrames::from(frames.iter().cloned().map(Frame::from).collect::<Vec<_>>());

        let mut all = received();
        let a = value_from_wire(&wires[0].1, &mut all, &codecs).unwrap();
        let b = value_from_wire(&wires[1].1, &mut all, &codecs).unwrap();
        assert_eq!(a.downcast_ref::<Vec<f64>>().unwrap(), &vec![1.5; 3]);
        assert_eq!(b.downcast_ref::<Vec<i64>>().unwrap(), &vec![2; 2]);

        // A forged second value pointing at the first one's frame.
        let mut twice = received();
        let forged = WireValue { tag: wires[0].1.tag.clone(), ..wires[0].1.clone() };
        value_from_wire(&wires[0].1, &mut twice, &codecs).unwrap();
        let err = value_from_wire(&forged, &mut twice, &codecs).unwrap_err();
        assert!(err.to_string().contains("another of its values took"), "{err}");

        for (first_frame, frame_count) in [(2, 1), (1, 2), (u32::MAX, u32::MAX), (0, u32::MAX)] {
            let wire = WireValue { first_frame, frame_count, ..wires[0].1.clone() };
            let err = value_from_wire(&wire, &mut received(), &codecs).unwrap_err();
            assert!(err.to_string().contains("does not have"), "{err}");
        }
    }

    #[test]
    fn limits_come_from_the_environment_and_bad_values_are_named() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string())
        };
        assert_eq!(Limits::from_vars(vars(&[])), Ok(Limits::default()));
        let limits = Limits::from_vars(vars(&[("KILN_MAX_FRAME", "1000"), ("KILN_REGISTER_TIMEOUT", "0.5")])).unwrap();
        assert_eq!((limits.max_frame, limits.register_timeout), (1000, Duration::from_millis(500)));
        let err = Limits::from_vars(vars(&[("KILN_MAX_FRAME", "0")])).unwrap_err();
        assert_eq!(err.to_string(), "KILN_MAX_FRAME=\"0\" is not valid: expected a positive whole number");
        assert!(Limits::from_vars(vars(&[("KILN_REGISTER_TIMEOUT", "-1")])).is_err());
        assert!(Limits::from_vars(vars(&[("KILN_RECEIVE_BUDGET", "4GiB")])).is_err());
    }

    #[test]
    fn admitting_one_stranger_too_many_evicts_the_oldest() {
        let rt = runtime();
        rt.block_on(async {
            let admission = Admission::new(2);
            let mut first = admission.admit();
            let second = admission.admit();
            assert_eq!(admission.waiting(), 2);
            let third = admission.admit();
            assert_eq!(admission.waiting(), 2);
            first.evicted().await;
            let err = first.register(Duration::from_secs(60), std::future::pending::<Result<(), _>>()).await;
            assert!(matches!(err, Err(Unregistered::Evicted(2))), "{err:?}");
            // A connection that registered stops counting.
            assert!(second.register(Duration::from_secs(60), async { Ok(()) }).await.is_ok());
            assert_eq!(admission.waiting(), 1);
            drop(third);
            assert_eq!(admission.waiting(), 0);
        });
    }

    /// Two connections each send a packet of 3 MiB to readers sharing a 4 MiB budget: the
    /// second waits (reads nothing of its body) until the first packet is whole.
    #[test]
    fn a_packet_that_does_not_fit_the_budget_waits_for_it() {
        let rt = runtime();
        rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap();
            let budget = ReceiveBudget::new(4 << 20);
            let body = vec![7u8; 3 << 20];
            let mut wire = Vec::new();
            encode_packet(b"h", &[&body], &mut wire);

            let mut a_out = TcpStream::connect(address).await.unwrap();
            let (a_in, _) = listener.accept().await.unwrap();
            let mut b_out = TcpStream::connect(address).await.unwrap();
            let (b_in, _) = listener.accept().await.unwrap();
            let mut a = PacketReader::new(a_in.into_split().0, "a").with_budget(budget.clone());
            let mut b = PacketReader::new(b_in.into_split().0, "b").with_budget(budget.clone());

            // A's table and half its body: A holds 3 MiB of the budget.
            a_out.write_all(&wire[..wire.len() / 2]).await.unwrap();
            let a_task = tokio::spawn(async move { (a.next().await, a) });
            while budget.available() > (1 << 20) + 1024 {
                tokio::task::yield_now().await;
            }
            // B's whole packet is sent, but B cannot take 3 MiB while A holds its share.
            b_out.write_all(&wire).await.unwrap();
            let b_task = tokio::spawn(async move { b.next().await.map(|p| p.map(|p| p.frames[0].len())) });
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert!(!b_task.is_finished(), "B's packet was read beyond the budget");
            assert!(budget.available() <= (1 << 20) + 1024);

            a_out.write_all(&wire[wire.len() / 2..]).await.unwrap();
            let (a_packet, _a) = a_task.await.unwrap();
            assert_eq!(a_packet.unwrap().unwrap().frames[0].len(), 3 << 20);
            assert_eq!(b_task.await.unwrap().unwrap(), Some(3 << 20));
            assert_eq!(budget.available(), 4 << 20);
        });
    }

    #[test]
    fn a_packet_larger_than_the_whole_budget_is_still_received_alone() {
        let rt = runtime();
        rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let budget = ReceiveBudget::new(1 << 20);
            let mut out = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
            let (inp, _) = listener.accept().await.unwrap();
            let mut reader = PacketReader::new(inp.into_split().0, "big").with_budget(budget.clone());
            let body = vec![1u8; 3 << 20];
            let mut wire = Vec::new();
            encode_packet(b"h", &[&body], &mut wire);
            let writer = tokio::spawn(async move { out.write_all(&wire).await });
            assert_eq!(reader.next().await.unwrap().unwrap().frames[0].len(), 3 << 20);
            writer.await.unwrap().unwrap();
            assert_eq!(budget.available(), 1 << 20);
        });
    }
}
