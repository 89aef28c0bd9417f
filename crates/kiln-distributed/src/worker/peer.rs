//! The data port: answers `Get` and `Put` from peers and clients.
//!
//! Values in memory are served straight from the store; a spilled value is read back from its
//! file on the blocking pool and served without being put back in memory (the state decides
//! what lives in memory). Scattered values (`Put`) are stored before `Stored` is answered, so a
//! peer told about them can fetch them at once, and the shell is told to record them.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kiln_graph::{CodecRegistry, Key, Value};
use kiln_protocol::Role;
use kiln_protocol::messages::{PeerReply, PeerRequest};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::shell::ShellEvent;
use super::store::{Lookup, Store, read_spill};
use crate::comm::{self, Outgoing, PacketReader, value_from_wire, values_to_wire};

/// Accepts connections on the data port until the shell is gone.
pub(super) async fn serve_peers(
    listener: TcpListener,
    store: Arc<Store>,
    events: mpsc::UnboundedSender<ShellEvent>,
    name: String,
) {
    loop {
        let (mut stream, peer) = match listener.accept().await {
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
        let events = events.clone();
        let name = name.clone();
        tokio::spawn(async move {
            let listener_name = format!("kiln worker {name}");
            let leftover = match comm::accept(&mut stream, &[Role::Peer], &listener_name).await {
                Ok((_, leftover)) => leftover,
                Err(e) => {
                    tracing::warn!("worker {name}: dropped connection from {peer}: {e}");
                    return;
                }
            };
            let (read, write) = stream.into_split();
            let replies = comm::spawn_writer::<PeerReply>(write, peer.to_string());
            let mut reader = PacketReader::with_buffer(read, peer.to_string(), leftover);
            loop {
                let (requests, frames) = match reader.next_messages::<PeerRequest>().await {
                    Ok(Some(r)) => r,
                    Ok(None) => return,
                    Err(e) => {
                        tracing::warn!("worker {name}: {e}; dropping the connection");
                        return;
                    }
                };
                for request in requests {
                    let reply = answer(request, &frames, &store, &events).await;
                    if replies.send(reply).is_err() {
                        return;
                    }
                }
            }
        });
    }
}

async fn answer(
    request: PeerRequest,
    frames: &[Bytes],
    store: &Arc<Store>,
    events: &mpsc::UnboundedSender<ShellEvent>,
) -> Outgoing<PeerReply> {
    match request {
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
            match values_to_wire(found, CodecRegistry::global()) {
                Ok((values, frames)) => Outgoing::WithFrames(PeerReply::Data { request, values, missing }, frames),
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
