//! The data port: answers `Get` and `Put` from peers and clients.
//!
//! A connection is a stranger until it presents the worker's write token
//! (`PeerRequest::Authenticate`), which only the scheduler hands out (in `WorkerInfo`): a
//! stranger may only send small frames, must authenticate within the registration deadline, and
//! counts against the bound on strangers; a `Put` from it is refused and the connection dropped.
//!
//! Values in memory are served straight from the store; a spilled value is read back from its
//! file on the blocking pool and served without being put back in memory (the state decides
//! what lives in memory). Scattered values (`Put`) are stored before `Stored` is answered, so a
//! peer told about them can fetch them at once, and the shell is told to record them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kiln_graph::{CodecRegistry, Key, Value};
use kiln_protocol::Role;
use kiln_protocol::messages::{PeerReply, PeerRequest, WriteToken};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::metrics::Served;
use super::shell::ShellEvent;
use super::store::{Lookup, Store, read_spill};
use crate::comm::{self, Outgoing, PacketReader, ReceivedFrames, Transport, value_from_wire, values_to_wire};

/// Accepts connections on the data port until the shell is gone.
///
/// A peer is a stranger (small frames only, a deadline, counted against the bound on strangers)
/// until it presents `token`, which only the scheduler hands out; strangers may `Get` but not
/// `Put`.
pub(super) async fn serve_peers(
    listener: TcpListener,
    store: Arc<Store>,
    served: Arc<Served>,
    events: mpsc::UnboundedSender<ShellEvent>,
    name: String,
    token: WriteToken,
    transport: Transport,
) {
    let admission = comm::Admission::new(comm::limits().max_unregistered);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!("worker {name}: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if events.is_closed() {
            return;
        }
        let store = store.clone();
        let served = served.clone();
        let events = events.clone();
        let name = name.clone();
        let stranger = admission.admit();
        let transport = transport.clone();
        tokio::spawn(async move {
            if let Err(why) =
                serve_peer((stream, transport), peer, stranger, (store, served), events, &name, token).await
            {
                tracing::warn!("worker {name}: dropped connection from {peer}: {why}");
            }
        });
    }
}

/// Serves one data-port connection (`stream` is completed with `transport`: TLS, token);
/// `Err` says why it was dropped.
async fn serve_peer(
    (stream, transport): (TcpStream, Transport),
    peer: SocketAddr,
    mut stranger: comm::Stranger,
    (store, served): (Arc<Store>, Arc<Served>),
    events: mpsc::UnboundedSender<ShellEvent>,
    name: &str,
    token: WriteToken,
) -> Result<(), String> {
    let limits = comm::limits();
    let deadline = tokio::time::Instant::now() + limits.register_timeout;
    let listener_name = format!("kiln worker {name}");
    let (stream, leftover) = tokio::select! {
        accepted = comm::accept(stream, &transport, &[Role::Peer], &listener_name) => {
            let (stream, _, leftover) = accepted.map_err(|e| e.to_string())?;
            (stream, leftover)
        }
        _ = tokio::time::sleep_until(deadline) => {
            return Err(format!("did not authenticate within {:?}", limits.register_timeout));
        }
        _ = stranger.evicted() => return Err(stranger.eviction_reason()),
    };
    let (read, write) = stream.into_split();
    let replies = comm::spawn_writer::<PeerReply>(write, peer.to_string());
    let mut reader = PacketReader::stranger(read, peer.to_string(), leftover);
    // `Some` until the peer presents the token: until then it may only read, in small frames,
    // and must authenticate before the deadline.
    let mut unknown = Some(stranger);
    loop {
        let read = match &mut unknown {
            Some(stranger) => tokio::select! {
                read = reader.next_messages::<PeerRequest>() => read,
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(format!("did not authenticate within {:?}", limits.register_timeout));
                }
                _ = stranger.evicted() => return Err(stranger.eviction_reason()),
            },
            None => reader.next_messages::<PeerRequest>().await,
        };
        let (requests, frames) = match read {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(()),
            Err(e) => return Err(e.to_string()),
        };
        let mut frames = ReceivedFrames::from(frames);
        for request in requests {
            match request {
                PeerRequest::Authenticate { token: theirs } => {
                    if theirs != token {
                        return Err("it presented a wrong write token".into());
                    }
                    if unknown.take().is_some() {
                        reader.trust();
                    }
                }
                PeerRequest::Put { values, .. } if unknown.is_some() => {
                    return Err(format!(
                        "refused a Put of {} values: the peer has not presented this worker's write token, \
                         so the scheduler did not tell it about this worker",
                        values.len()
                    ));
                }
                request => {
                    let reply = answer(request, &mut frames, &store, &served, &events).await;
                    if replies.send(reply).is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }
}

async fn answer(
    request: PeerRequest,
    frames: &mut ReceivedFrames,
    store: &Arc<Store>,
    served: &Served,
    events: &mpsc::UnboundedSender<ShellEvent>,
) -> Outgoing<PeerReply> {
    match request {
        // Handled by the connection (it changes what the peer may do).
        PeerRequest::Authenticate { .. } => {
            Outgoing::Message(PeerReply::Error { request: 0, message: "Authenticate is not a request".into() })
        }
        PeerRequest::Get { request, keys } => {
            let mut found = Vec::with_capacity(keys.len());
            let mut missing = Vec::new();
            for key in keys {
                match store.lookup(&key) {
                    Lookup::Memory(value) => found.push((key, value)),
                    Lookup::Disk(path) => match read_from_disk(path).await {
                        Some(value) => found.push((key, value)),
                        None => missing.push(key),
                    },
                    Lookup::Absent => missing.push(key),
                }
            }
            let (count, bytes) = (found.len() as u64, found.iter().map(|(_, v)| value_nbytes(v)).sum());
            match values_to_wire(found, CodecRegistry::global()) {
                Ok((values, frames)) => {
                    served.add(count, bytes);
                    Outgoing::WithFrames(PeerReply::Data { request, values, missing }, frames)
                }
                Err(e) => Outgoing::Message(PeerReply::Error { request, message: e.to_string() }),
            }
        }
        PeerRequest::Put { request, values } => {
            let mut decoded: Vec<(Key, Value)> = Vec::with_capacity(values.len());
            for (key, wire) in values {
                match value_from_wire(&wire, frames, CodecRegistry::global()) {
                    Ok(v) => decoded.push((key, v)),
                    Err(e) => return Outgoing::Message(PeerReply::Error { request, message: format!("{key}: {e}") }),
                }
            }
            let mut entries = Vec::with_capacity(decoded.len());
            for (key, value) in decoded {
                entries.push((key.clone(), value_nbytes(&value)));
                store.insert(key, value);
            }
            let _ = events.send(ShellEvent::Received(entries));
            Outgoing::Message(PeerReply::Stored { request })
        }
    }
}

/// Reads a spilled value on the blocking pool; `None` (logged) when it cannot be read, e.g.
/// because the value was freed meanwhile and its file deleted.
async fn read_from_disk(path: std::path::PathBuf) -> Option<Value> {
    match tokio::task::spawn_blocking(move || read_spill(&path)).await {
        Ok(Ok(value)) => Some(value),
        Ok(Err(e)) => {
            tracing::warn!("serving a spilled value: {e}");
            None
        }
        Err(e) => {
            tracing::error!("reading a spilled value panicked: {e}");
            None
        }
    }
}

/// A value's size as the worker reports it: the codec's figure, 64 bytes without a codec.
pub(super) fn value_nbytes(value: &Value) -> u64 {
    CodecRegistry::global().nbytes(value).unwrap_or(64) as u64
}
