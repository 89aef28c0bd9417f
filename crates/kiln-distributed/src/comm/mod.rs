//! Connections: the handshake, a packet reader, a batching writer, values on the wire, and a
//! pool of peer connections for data transfers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kiln_graph::{CodecError, CodecRegistry, Encoded, Key, Value};
use kiln_protocol::messages::{PeerReply, PeerRequest, WireValue};
use kiln_protocol::{
    Hello, Packet, PacketDecoder, ProtocolError, Reply, Role, check_hello, decode_header, decode_hello, decode_reply,
    encode_header, encode_hello, encode_packet, encode_reply, packet_prefix,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot};

/// How long a peer may take to complete the handshake before it is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// The connection closed.
    #[error("connection to {0} closed")]
    Closed(String),
    /// The handshake did not complete in time.
    #[error("{0} did not complete the handshake in time")]
    Timeout(String),
    /// A value could not be encoded or decoded.
    #[error(transparent)]
    Codec(#[from] CodecError),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> CommError {
    let context = context.into();
    move |source| CommError::Io { context, source }
}

/// Connects to `address` and introduces this process in `role`.
///
/// # Errors
/// Connection failures, a refused handshake (with the listener's reason), a timeout.
pub async fn connect(address: &str, role: Role, name: &str) -> Result<(TcpStream, BytesMut), CommError> {
    let mut stream = TcpStream::connect(address).await.map_err(io(format!("cannot connect to {address}")))?;
    stream.set_nodelay(true).map_err(io("set_nodelay"))?;
    stream.write_all(&encode_hello(&Hello::new(role, name))).await.map_err(io(format!("handshake with {address}")))?;
    let reply = read_handshake(&mut stream, address, decode_reply).await?;
    let (reply, leftover) = reply;
    match reply {
        // Bytes after the reply already belong to the first packets.
        Reply::Accepted => Ok((stream, leftover)),
        Reply::Refused(message) => Err(CommError::Refused { peer: address.to_string(), message }),
    }
}

/// A handshake decoder: `Ok(None)` while more bytes are needed, else the message and how many
/// bytes it took.
type HandshakeDecoder<T> = fn(&[u8]) -> Result<Option<(T, usize)>, ProtocolError>;

/// Reads one handshake message within [`HANDSHAKE_TIMEOUT`]; bytes after it (the first packets)
/// are returned for the packet reader.
async fn read_handshake<T>(
    stream: &mut TcpStream,
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

/// Reads a connecting peer's hello and accepts or refuses it.
///
/// # Errors
/// A malformed or refused hello (the refusal is sent to the peer first), a timeout.
pub async fn accept(stream: &mut TcpStream, accepted: &[Role], listener: &str) -> Result<(Hello, BytesMut), CommError> {
    let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "?".into());
    stream.set_nodelay(true).map_err(io("set_nodelay"))?;
    let hello = read_handshake(stream, &peer, decode_hello).await?;
    let (hello, leftover) = hello;
    match check_hello(&hello, accepted, listener) {
        Ok(()) => {
            stream.write_all(&encode_reply(&Reply::Accepted)).await.map_err(io(format!("handshake from {peer}")))?;
            Ok((hello, leftover))
        }
        Err(message) => {
            let message = message.to_string();
            let _ = stream.write_all(&encode_reply(&Reply::Refused(message.clone()))).await;
            Err(CommError::Refused { peer, message })
        }
    }
}

/// Reads packets from one connection.
pub struct PacketReader {
    half: OwnedReadHalf,
    buf: BytesMut,
    decoder: PacketDecoder,
    peer: String,
}

impl PacketReader {
    /// A reader over the read half of an accepted or connected stream.
    pub fn new(half: OwnedReadHalf, peer: impl Into<String>) -> Self {
        Self::with_buffer(half, peer, BytesMut::new())
    }

    /// A reader that starts with bytes already received (after the handshake).
    pub fn with_buffer(half: OwnedReadHalf, peer: impl Into<String>, mut received: BytesMut) -> Self {
        received.reserve(64 << 10);
        PacketReader { half, buf: received, decoder: PacketDecoder::default(), peer: peer.into() }
    }

    /// The next packet; `Ok(None)` when the peer closed the connection cleanly.
    ///
    /// # Errors
    /// Socket errors and malformed packets (the caller drops the connection).
    pub async fn next(&mut self) -> Result<Option<Packet>, CommError> {
        loop {
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(packet)) => return Ok(Some(packet)),
                Ok(None) => {}
                Err(source) => return Err(CommError::Protocol { peer: self.peer.clone(), source }),
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
    pub async fn next_messages<M: DeserializeOwned>(&mut self) -> Result<Option<(Vec<M>, Vec<Bytes>)>, CommError> {
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

async fn write_all_timed(half: &mut OwnedWriteHalf, bytes: &[u8], peer: &str) -> bool {
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
pub fn spawn_writer<M: Serialize + Send + 'static>(half: OwnedWriteHalf, peer: String) -> Sender<M> {
    spawn_flushing_writer(half, peer).0
}

/// Resolves when a writer task has ended: every message queued before the last [`Sender`] was
/// dropped is written and the socket is shut down (or the socket failed).
pub type Flushed = tokio::task::JoinHandle<()>;

/// [`spawn_writer`], plus a handle to await the flush: drop every [`Sender`], then await
/// [`Flushed`] to know the peer has been sent everything (no sleeping "for the writer").
pub fn spawn_flushing_writer<M: Serialize + Send + 'static>(
    mut half: OwnedWriteHalf,
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
        frames.extend(value_frames.into_iter().map(Bytes::from));
        entries.push((key, WireValue { tag, header, first_frame, frame_count }));
    }
    Ok((entries, frames))
}

/// Decodes values received with their packet's frames.
///
/// # Errors
/// Frames out of range or bytes the codec rejects.
pub fn value_from_wire(wire: &WireValue, frames: &[Bytes], codecs: &CodecRegistry) -> Result<Value, CodecError> {
    let start = wire.first_frame as usize;
    let end = start.checked_add(wire.frame_count as usize).filter(|&e| e <= frames.len()).ok_or_else(|| {
        CodecError::Malformed {
            tag: wire.tag.clone(),
            message: "value refers to frames the packet does not have".into(),
        }
    })?;
    let encoded = Encoded {
        tag: wire.tag.clone(),
        header: wire.header.clone(),
        frames: frames[start..end].iter().map(|f| f.to_vec()).collect(),
    };
    codecs.decode(&encoded)
}

type ReplySlot = oneshot::Sender<Result<(PeerReply, Vec<Bytes>), CommError>>;

struct PeerConn {
    tx: Sender<PeerRequest>,
    pending: Arc<Mutex<HashMap<u64, ReplySlot>>>,
}

/// Connections to workers' data ports, opened on first use and reused.
#[derive(Clone)]
pub struct PeerPool {
    name: Arc<str>,
    conns: Arc<tokio::sync::Mutex<HashMap<String, Arc<PeerConn>>>>,
    next_request: Arc<std::sync::atomic::AtomicU64>,
}

impl PeerPool {
    /// An empty pool; `name` introduces this process to peers.
    pub fn new(name: &str) -> Self {
        PeerPool {
            name: name.into(),
            conns: Arc::default(),
            next_request: Arc::new(std::sync::atomic::AtomicU64::new(1)),
        }
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
        let (stream, leftover) = connect(address, Role::Peer, &self.name).await?;
        let (read, write) = stream.into_split();
        let tx = spawn_writer::<PeerRequest>(write, address.to_string());
        let pending: Arc<Mutex<HashMap<u64, ReplySlot>>> = Arc::default();
        let conn = Arc::new(PeerConn { tx, pending: pending.clone() });
        conns.insert(address.to_string(), conn.clone());
        let pool = self.conns.clone();
        let peer = address.to_string();
        tokio::spawn(async move {
            let mut reader = PacketReader::with_buffer(read, peer.clone(), leftover);
            let error = loop {
                match reader.next_messages::<PeerReply>().await {
                    Ok(Some((replies, frames))) => {
                        for reply in replies {
                            let id = match &reply {
                                PeerReply::Data { request, .. }
                                | PeerReply::Stored { request }
                                | PeerReply::Error { request, .. } => *request,
                            };
                            let slot = pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                            if let Some(slot) = slot {
                                let _ = slot.send(Ok((reply, frames.clone())));
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
    ) -> Result<(PeerReply, Vec<Bytes>), CommError> {
        let conn = self.conn(address).await?;
        let id = match &request {
            PeerRequest::Get { request, .. } | PeerRequest::Put { request, .. } => *request,
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
