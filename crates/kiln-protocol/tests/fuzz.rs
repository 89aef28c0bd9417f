//! Property tests that stand in for a fuzzer: arbitrary bytes never panic the decoders or make
//! them allocate far beyond what was received, and valid packets survive any split of the stream.

use bytes::{Bytes, BytesMut};
use kiln_graph::Frame;
use kiln_protocol::messages::{ActivityKind, ActivityRecord, WorkerId, WorkerToScheduler};
use kiln_protocol::{
    AuthToken, Hello, MAGIC, Packet, PacketDecoder, ProtocolError, Reply, Role, decode_header, decode_hello,
    decode_reply, encode_header, encode_hello, encode_packet, encode_reply,
};
use proptest::prelude::*;

/// Capacity allowed beyond twice the input: the decoder reserves up to 64 KiB ahead, and
/// `BytesMut` may round a reservation up to double its old capacity.
const SLACK: usize = 256 * 1024;

/// 2000 cases keep `cargo test` fast; set `PROPTEST_CASES` for a longer fuzzing run.
fn config() -> ProptestConfig {
    let default = ProptestConfig::default();
    let cases = if std::env::var_os("PROPTEST_CASES").is_some() { default.cases } else { 2000 };
    ProptestConfig { cases, failure_persistence: None, ..default }
}

/// Bytes that get past the first checks often enough to reach the deeper states: pure noise,
/// a plausible small frame count followed by noise, and corrupted valid packets.
fn packet_like_bytes() -> impl Strategy<Value = Vec<u8>> {
    let noise = prop::collection::vec(any::<u8>(), 0..512);
    let small_count = (1u32..6, prop::collection::vec(0u64..48, 0..6), prop::collection::vec(any::<u8>(), 0..256))
        .prop_map(|(count, lens, tail)| {
            let mut out = count.to_le_bytes().to_vec();
            for len in lens {
                out.extend_from_slice(&len.to_le_bytes());
            }
            out.extend_from_slice(&tail);
            out
        });
    let corrupted = (packets(), any::<prop::sample::Index>(), any::<u8>(), any::<prop::sample::Index>()).prop_map(
        |(packets, at, byte, cut)| {
            let mut wire = encode_all(&packets);
            if !wire.is_empty() {
                let i = at.index(wire.len());
                wire[i] = byte;
                wire.truncate(cut.index(wire.len() + 1));
            }
            wire
        },
    );
    prop_oneof![noise, small_count, corrupted]
}

fn packet() -> impl Strategy<Value = Packet> {
    let header = prop::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from);
    let frame = prop::collection::vec(any::<u8>(), 0..64).prop_map(Frame::from);
    (header, prop::collection::vec(frame, 0..8)).prop_map(|(header, frames)| Packet { header, frames })
}

fn packets() -> impl Strategy<Value = Vec<Packet>> {
    prop::collection::vec(packet(), 0..6)
}

fn encode_all(packets: &[Packet]) -> Vec<u8> {
    let mut wire = Vec::new();
    for p in packets {
        let frames: Vec<&[u8]> = p.frames.iter().map(|f| &f[..]).collect();
        encode_packet(&p.header, &frames, &mut wire);
    }
    wire
}

/// Feeds `wire` to a decoder in pieces ending at `cuts`, checking the capacity bound after every
/// call; returns the packets and the first error.
fn feed(decoder: &mut PacketDecoder, wire: &[u8], cuts: &[usize]) -> (Vec<Packet>, Option<ProtocolError>) {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut start = 0;
    let ends = cuts.iter().copied().filter(|&c| c <= wire.len()).chain([wire.len()]);
    for end in ends {
        if end < start {
            continue;
        }
        buf.extend_from_slice(&wire[start..end]);
        start = end;
        loop {
            let result = decoder.decode(&mut buf);
            assert!(
                buf.capacity() <= 2 * wire.len() + SLACK,
                "capacity {} for {} input bytes",
                buf.capacity(),
                wire.len()
            );
            match result {
                Ok(Some(p)) => out.push(p),
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

fn sorted_cuts() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0usize..4096, 0..12).prop_map(|mut cuts| {
        cuts.sort_unstable();
        cuts
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn decoder_survives_arbitrary_bytes(wire in packet_like_bytes(), cuts in sorted_cuts(), small in any::<bool>(), own in 1usize..40) {
        let max_frame = if small { 32 } else { kiln_protocol::DEFAULT_MAX_FRAME };
        let (whole, whole_err) = feed(&mut PacketDecoder::new(max_frame), &wire, &[]);
        // Frames in their own buffers or in the read buffer: the same packets either way.
        let (split, split_err) = feed(&mut PacketDecoder::new(max_frame).own_buffers_from(own), &wire, &cuts);
        // Where the stream is cut must not change what it means.
        prop_assert_eq!(whole, split);
        prop_assert_eq!(whole_err, split_err);
    }

    #[test]
    fn packets_survive_any_split(packets in packets(), cuts in sorted_cuts(), own in 1usize..80) {
        let wire = encode_all(&packets);
        let (decoded, err) = feed(&mut PacketDecoder::default().own_buffers_from(own), &wire, &cuts);
        prop_assert_eq!(err, None);
        prop_assert_eq!(decoded, packets);
    }

    #[test]
    fn handshake_decoders_survive_arbitrary_bytes(tail in prop::collection::vec(any::<u8>(), 0..64), magic in any::<bool>()) {
        let buf = if magic { [&MAGIC[..], &tail].concat() } else { tail };
        for cut in 0..=buf.len() {
            if let Ok(Some((_, consumed))) = decode_hello(&buf[..cut]) {
                prop_assert!(consumed <= cut);
            }
            if let Ok(Some((_, consumed))) = decode_reply(&buf[..cut]) {
                prop_assert!(consumed <= cut);
            }
        }
    }

    #[test]
    fn handshake_round_trips(
        version in any::<u16>(),
        role in 0u8..3,
        name in ".{0,40}",
        token in proptest::collection::vec(any::<u8>(), 0..40),
        refused in any::<bool>(),
    ) {
        // Hellos before version 4 have no token section.
        let token = if version >= 4 { AuthToken::new(token) } else { None };
        let hello = Hello { version, role: Role::from_code(role).unwrap(), name, token };
        let bytes = encode_hello(&hello);
        prop_assert_eq!(decode_hello(&bytes), Ok(Some((hello.clone(), bytes.len()))));
        let reply = if refused { Reply::Refused(hello.name.clone()) } else { Reply::Accepted };
        let bytes = encode_reply(&reply);
        prop_assert_eq!(decode_reply(&bytes), Ok(Some((reply, bytes.len()))));
    }

    #[test]
    fn worker_pause_messages_round_trip_in_a_batch(paused in any::<bool>(), reason in ".{0,80}", cut in 0usize..64) {
        let batch = vec![
            WorkerToScheduler::Paused { paused, reason: reason.clone() },
            WorkerToScheduler::Heartbeat {
                managed_bytes: 1,
                spilled_bytes: 2,
                process_bytes: 3,
                cpu_percent: 12.5,
                activity: vec![ActivityRecord {
                    kind: ActivityKind::Transfer { from: WorkerId::new(3) },
                    key: kiln_graph::Key::new("x"),
                    nbytes: 8,
                    started_us: 1,
                    duration_us: 2,
                }],
                activity_dropped: 0,
                network_read_bytes: 4096,
                network_written_bytes: 512,
            },
            WorkerToScheduler::Paused { paused: !paused, reason: String::new() },
        ];
        let bytes = encode_header(&batch).unwrap();
        prop_assert_eq!(decode_header::<Vec<WorkerToScheduler>>(&bytes).unwrap(), batch);
        // A truncated header is an error, never a panic or a different message.
        if cut < bytes.len() {
            prop_assert!(decode_header::<Vec<WorkerToScheduler>>(&bytes[..cut]).is_err());
        }
    }
}
