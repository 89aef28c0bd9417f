//! Packets: one header frame plus raw payload frames, length-prefixed.
//!
//! Wire layout: u32 LE frame count `n` (at least 1: the header counts), `n` u64 LE frame lengths,
//! then the frames' bytes back to back, header first.

use bytes::{Buf, Bytes, BytesMut};
use kiln_graph::Frame;
use kiln_graph::frame::{AlignedBuf, OWN_BUFFER_FROM};

use crate::{DEFAULT_MAX_FRAME, MAX_FRAMES, ProtocolError};

/// How far ahead of the buffered bytes the decoder reserves at least, when it knows more bytes
/// are coming. Beyond this it reserves no more than is already buffered, so a peer can make us
/// allocate only about twice what it has actually sent, whatever lengths it announces.
pub(crate) const RESERVE_CHUNK: usize = 64 * 1024;

/// How much room the decoder asks for in the read buffer while a large frame streams through
/// it into its own buffer: few read calls per frame, and the read buffer stays small and warm.
const STREAM_CHUNK: usize = 1 << 20;

/// One message on a connection after the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Packet {
    /// The header frame: a small postcard-encoded value (see [`encode_header`](crate::encode_header)).
    pub header: Bytes,
    /// Raw payload frames (e.g. array chunk buffers), carried as is and never re-encoded: small
    /// ones as slices of the receive buffer, large ones in their own aligned buffers that a
    /// codec can adopt ([`Frame::into_pod_vec`]).
    pub frames: Vec<Frame>,
}

/// Appends one packet to `out`: the prefix (see [`packet_prefix`]), then the header, then the
/// frames.
///
/// This copies the frames; for large frames write [`packet_prefix`] and the frames with one
/// vectored write instead.
///
/// # Panics
///
/// If `frames` has more than `MAX_FRAMES - 1` entries (see [`packet_prefix`]).
pub fn encode_packet(header: &[u8], frames: &[&[u8]], out: &mut Vec<u8>) {
    let prefix = packet_prefix(header.len(), frames.iter().map(|f| f.len()));
    let body: usize = header.len() + frames.iter().map(|f| f.len()).sum::<usize>();
    out.reserve(prefix.len() + body);
    out.extend_from_slice(&prefix);
    out.extend_from_slice(header);
    for frame in frames {
        out.extend_from_slice(frame);
    }
}

/// The bytes that go on the wire before a packet's header and frames: the frame count (u32 LE,
/// counting the header) and each frame's length (u64 LE), header first.
///
/// Write this, then the header, then the frames, ideally with one vectored write so that large
/// frames are never copied into a single buffer.
///
/// # Panics
///
/// If there are more than `MAX_FRAMES - 1` payload frames. The receiver would refuse such a
/// packet and drop the connection; failing here instead points at the sender that has to split
/// its data over several packets. Frame sizes are not checked: the sender cannot know the
/// receiver's `max_frame`.
pub fn packet_prefix(header_len: usize, frame_lens: impl ExactSizeIterator<Item = usize>) -> Vec<u8> {
    let count = 1 + frame_lens.len();
    assert!(
        count <= MAX_FRAMES,
        "packet of {count} frames exceeds the maximum of {MAX_FRAMES} frames; split the payload over several packets"
    );
    let mut out = Vec::with_capacity(4 + 8 * count);
    out.extend_from_slice(&(count as u32).to_le_bytes());
    out.extend_from_slice(&(header_len as u64).to_le_bytes());
    for len in frame_lens {
        out.extend_from_slice(&(len as u64).to_le_bytes());
    }
    out
}

/// Incremental packet decoder: feed it everything received so far, take packets out.
///
/// The decoder consumes the count and length table from the buffer as they arrive and remembers
/// them, so a packet whose bytes trickle in is parsed once, not once per read.
///
/// Memory: limits are checked as soon as the offending count or length is readable, before
/// anything is reserved for it. While waiting for bytes the decoder reserves room for them in the
/// buffer, but never more than `max(buffered bytes, 64 KiB)` ahead of what is buffered, so a peer
/// that announces a huge (allowed) frame and stalls costs at most a 64 KiB reservation; big frames
/// still grow the buffer geometrically, with few copies.
///
/// Payload frames of [`OWN_BUFFER_FROM`] bytes or more do not stay in the buffer: their bytes
/// are moved, as they arrive, into a buffer of their own (which grows with what arrives, as the
/// read buffer does), so the connection's buffer stays small and a value's codec can adopt the
/// frame instead of copying it.
#[derive(Debug)]
pub struct PacketDecoder {
    max_frame: usize,
    /// Most bytes one packet (all its frames) may take; checked as the length table arrives.
    max_packet: usize,
    /// Payload frames at least this large get their own buffer.
    own_buffer_from: usize,
    state: State,
}

#[derive(Debug, Default)]
enum State {
    /// Waiting for the u32 frame count.
    #[default]
    Count,
    /// Reading the length table; `lens` holds the entries read so far.
    Lengths { count: usize, lens: Vec<usize>, total: usize },
    /// The table is complete; frames are taken in order as their bytes arrive.
    Frames {
        lens: Vec<usize>,
        total: usize,
        /// The next frame to complete (0 is the header).
        next: usize,
        header: Bytes,
        frames: Vec<Frame>,
        /// The large frame being filled, if any.
        filling: Option<AlignedBuf>,
    },
}

impl PacketDecoder {
    /// A decoder refusing frames (header or payload) larger than `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        PacketDecoder { max_frame, max_packet: usize::MAX, own_buffer_from: OWN_BUFFER_FROM, state: State::Count }
    }

    /// Gives payload frames of at least `bytes` bytes their own buffer (default
    /// [`OWN_BUFFER_FROM`]); tests lower it to exercise that path with small packets.
    pub fn own_buffers_from(mut self, bytes: usize) -> Self {
        self.own_buffer_from = bytes.max(1);
        self
    }

    /// A decoder refusing frames larger than `max_frame` bytes and packets whose frames add up
    /// to more than `max_packet` bytes: what one peer may make us buffer at once.
    pub fn with_limits(max_frame: usize, max_packet: usize) -> Self {
        PacketDecoder { max_frame, max_packet, own_buffer_from: OWN_BUFFER_FROM, state: State::Count }
    }

    /// The frame size limit this decoder enforces.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// The packet size limit this decoder enforces.
    pub fn max_packet(&self) -> usize {
        self.max_packet
    }

    /// Changes both limits, e.g. raises them once a peer has registered. They apply from the
    /// next length read; a packet whose table is already complete keeps its size.
    pub fn set_limits(&mut self, max_frame: usize, max_packet: usize) {
        self.max_frame = max_frame;
        self.max_packet = max_packet;
    }

    /// The total size of the packet whose length table is complete but whose frames have not
    /// all arrived yet, or `None` between packets and while the table is being read.
    ///
    /// A reader uses it to account for the bytes it is about to buffer (and to reserve them in
    /// one go) before reading the body, instead of trusting the lengths blindly.
    pub fn pending_body(&self) -> Option<usize> {
        match &self.state {
            State::Frames { total, .. } => Some(*total),
            _ => None,
        }
    }

    /// Of the pending packet, the bytes that stay in the read buffer until the packet is whole
    /// (the header and the small frames): what a reader may reserve in one go. Large frames
    /// stream through the buffer into their own and need no room there.
    pub fn pending_inline(&self) -> Option<usize> {
        match &self.state {
            State::Frames { lens, next, .. } => Some(
                lens.iter()
                    .enumerate()
                    .skip(*next)
                    .filter(|&(i, &len)| i == 0 || len < self.own_buffer_from)
                    .map(|(_, &len)| len)
                    .sum(),
            ),
            _ => None,
        }
    }

    /// Takes the next whole packet out of `buf`.
    ///
    /// Returns `Ok(Some(packet))` and removes the packet's bytes from `buf` (the frames are
    /// slices of `buf`'s allocation, not copies); `Ok(None)` when more bytes are needed; `Err`
    /// for a malformed packet. Call it again after `Some`: `buf` may hold further packets.
    /// After an `Err` the stream cannot be resynchronized; drop the connection.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Packet>, ProtocolError> {
        let result = self.step(buf);
        if result.is_err() {
            // Whatever was parsed belongs to a stream the caller is about to drop; a clean state
            // keeps a misbehaving caller from seeing half a table reused.
            self.state = State::Count;
        }
        result
    }

    fn step(&mut self, buf: &mut BytesMut) -> Result<Option<Packet>, ProtocolError> {
        loop {
            match &mut self.state {
                State::Count => {
                    if buf.len() < 4 {
                        reserve_bounded(buf, 4 - buf.len());
                        return Ok(None);
                    }
                    let count = buf.get_u32_le();
                    if count == 0 {
                        return Err(ProtocolError::NoFrames);
                    }
                    if count as usize > MAX_FRAMES {
                        return Err(ProtocolError::TooManyFrames(u64::from(count)));
                    }
                    // The table grows as its entries arrive, never from the announced count.
                    self.state = State::Lengths { count: count as usize, lens: Vec::new(), total: 0 };
                }
                State::Lengths { count, lens, total } => {
                    while lens.len() < *count && buf.len() >= 8 {
                        let len = buf.get_u64_le();
                        if len > self.max_frame as u64 {
                            return Err(ProtocolError::FrameTooLarge { size: len, max: self.max_frame });
                        }
                        // Cannot truncate: len <= max_frame, a usize.
                        let len = len as usize;
                        *total = total.checked_add(len).ok_or(ProtocolError::PacketTooLarge)?;
                        if *total > self.max_packet {
                            return Err(ProtocolError::PacketOverLimit { size: *total as u64, max: self.max_packet });
                        }
                        lens.push(len);
                    }
                    if lens.len() < *count {
                        let missing_table = (*count - lens.len()) * 8 - buf.len();
                        reserve_bounded(buf, missing_table);
                        return Ok(None);
                    }
                    let (lens, total) = (std::mem::take(lens), *total);
                    let frames = Vec::with_capacity(lens.len() - 1);
                    self.state = State::Frames { lens, total, next: 0, header: Bytes::new(), frames, filling: None };
                }
                State::Frames { lens, next, header, frames, filling, .. } => {
                    while *next < lens.len() {
                        let len = lens[*next];
                        if *next > 0 && len >= self.own_buffer_from {
                            let own = filling.get_or_insert_with(|| AlignedBuf::growing(len));
                            let taken = own.extend_from_slice(buf);
                            buf.advance(taken);
                            if own.remaining() > 0 {
                                // Reads grow with what the frame has delivered (up to 1 MiB),
                                // never with what it announced.
                                let chunk = own.remaining().min(STREAM_CHUNK).min(own.len().max(RESERVE_CHUNK));
                                buf.reserve(chunk);
                                return Ok(None);
                            }
                            frames.push(Frame::from(filling.take().expect("filled above")));
                        } else {
                            // Small frames wait for all the inline bytes up to them, so a run
                            // of them is cut from one read without copies.
                            if buf.len() < len {
                                reserve_bounded(buf, len - buf.len());
                                return Ok(None);
                            }
                            let bytes = buf.split_to(len).freeze();
                            if *next == 0 {
                                *header = bytes;
                            } else {
                                frames.push(Frame::from(bytes));
                            }
                        }
                        *next += 1;
                    }
                    let packet = Packet { header: std::mem::take(header), frames: std::mem::take(frames) };
                    self.state = State::Count;
                    return Ok(Some(packet));
                }
            }
        }
    }
}

impl Default for PacketDecoder {
    /// A decoder with the [`DEFAULT_MAX_FRAME`] limit.
    fn default() -> Self {
        PacketDecoder::new(DEFAULT_MAX_FRAME)
    }
}

/// Makes room for up to `missing` more bytes, but never more than is already buffered (or
/// [`RESERVE_CHUNK`]): announced lengths are promises from the peer, buffered bytes are facts.
fn reserve_bounded(buf: &mut BytesMut, missing: usize) {
    buf.reserve(missing.min(buf.len().max(RESERVE_CHUNK)));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(header: &[u8], frames: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_packet(header, frames, &mut out);
        out
    }

    fn packet(header: &[u8], frames: &[&[u8]]) -> Packet {
        Packet {
            header: Bytes::copy_from_slice(header),
            frames: frames.iter().map(|f| Frame::from(f.to_vec())).collect(),
        }
    }

    fn decode_all(decoder: &mut PacketDecoder, buf: &mut BytesMut) -> Vec<Packet> {
        let mut out = Vec::new();
        while let Some(p) = decoder.decode(buf).unwrap() {
            out.push(p);
        }
        out
    }

    #[test]
    fn layout_is_as_documented() {
        let bytes = encode(b"hd", &[b"xyz"]);
        let mut expected = vec![2, 0, 0, 0];
        expected.extend_from_slice(&2u64.to_le_bytes());
        expected.extend_from_slice(&3u64.to_le_bytes());
        expected.extend_from_slice(b"hdxyz");
        assert_eq!(bytes, expected);
        assert_eq!(packet_prefix(2, [3].into_iter()), expected[..20]);
    }

    #[test]
    fn packets_round_trip() {
        let big = vec![7u8; 10 << 20];
        let many: Vec<Vec<u8>> = (0..1000u32).map(|i| i.to_le_bytes().repeat(i as usize % 5)).collect();
        let many: Vec<&[u8]> = many.iter().map(Vec::as_slice).collect();
        let cases: Vec<(&[u8], Vec<&[u8]>)> = vec![
            (b"header only", vec![]),
            (b"", vec![]),
            (b"h", vec![b"", b"", b"x", b""]),
            (b"many", many),
            (b"big", vec![b"a", &big, b"z"]),
        ];
        let mut decoder = PacketDecoder::default();
        for (header, frames) in cases {
            let mut buf = BytesMut::from(&encode(header, &frames)[..]);
            let decoded = decoder.decode(&mut buf).unwrap().expect("a whole packet");
            assert_eq!(decoded, packet(header, &frames));
            assert!(buf.is_empty());
            assert_eq!(decoder.decode(&mut buf), Ok(None));
        }
    }

    #[test]
    fn frames_are_slices_of_the_receive_buffer() {
        let mut buf = BytesMut::from(&encode(b"h", &[&[1u8; 1000]])[..]);
        let range = buf.as_ptr_range();
        let p = PacketDecoder::default().decode(&mut buf).unwrap().unwrap();
        assert!(range.contains(&p.frames[0].as_ptr()), "payload frame was copied");
    }

    #[test]
    fn large_frames_stream_into_their_own_buffer_and_the_read_buffer_stays_small() {
        let big: Vec<u8> = (0..(3 * OWN_BUFFER_FROM + 5) as u32).map(|i| (i % 251) as u8).collect();
        let wire = encode(b"hd", &[b"small", &big, b"", &big[..OWN_BUFFER_FROM]]);
        let mut decoder = PacketDecoder::default();
        let mut buf = BytesMut::new();
        let mut got = None;
        let mut most = 0;
        for piece in wire.chunks(10_000) {
            buf.extend_from_slice(piece);
            if let Some(p) = decoder.decode(&mut buf).unwrap() {
                got = Some(p);
            }
            most = most.max(buf.len());
        }
        let p = got.expect("a whole packet");
        assert_eq!(p, packet(b"hd", &[b"small", &big, b"", &big[..OWN_BUFFER_FROM]]));
        assert!(most < 2 * 10_000 + 16, "the read buffer held {most} bytes");
        assert!(format!("{:?}", p.frames[1]).contains("own buffer"), "{:?}", p.frames[1]);
        assert!(format!("{:?}", p.frames[0]).contains("Frame(5 bytes)"), "{:?}", p.frames[0]);
        assert_eq!(decoder.pending_body(), None);
    }

    #[test]
    fn the_inline_part_of_a_pending_packet_excludes_large_frames() {
        let mut decoder = PacketDecoder::default().own_buffers_from(100);
        let wire = encode(b"header", &[&[1; 10], &[2; 100], &[3; 99]]);
        let mut buf = BytesMut::from(&wire[..4 + 4 * 8]);
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        assert_eq!(decoder.pending_body(), Some(6 + 10 + 100 + 99));
        assert_eq!(decoder.pending_inline(), Some(6 + 10 + 99));
        buf.extend_from_slice(&wire[4 + 4 * 8..]);
        let p = decoder.decode(&mut buf).unwrap().unwrap();
        assert_eq!(p, packet(b"header", &[&[1; 10], &[2; 100], &[3; 99]]));
    }

    #[test]
    fn byte_by_byte_and_back_to_back() {
        let packets = [packet(b"a", &[]), packet(b"bb", &[b"", b"ccc"]), packet(b"", &[b"d"])];
        let mut wire = Vec::new();
        for p in &packets {
            let frames: Vec<&[u8]> = p.frames.iter().map(|f| &f[..]).collect();
            encode_packet(&p.header, &frames, &mut wire);
        }

        let mut decoder = PacketDecoder::default();
        let mut buf = BytesMut::from(&wire[..]);
        assert_eq!(decode_all(&mut decoder, &mut buf), packets);

        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for &byte in &wire {
            buf.extend_from_slice(&[byte]);
            got.extend(decode_all(&mut decoder, &mut buf));
        }
        assert_eq!(got, packets);
        assert!(buf.is_empty());
    }

    #[test]
    fn oversized_frame_is_refused_before_any_allocation() {
        let mut wire = 2u32.to_le_bytes().to_vec();
        wire.extend_from_slice(&1u64.to_le_bytes());
        wire.extend_from_slice(&(1u64 << 40).to_le_bytes());
        let mut buf = BytesMut::from(&wire[..]);
        let err = PacketDecoder::default().decode(&mut buf).unwrap_err();
        assert_eq!(err, ProtocolError::FrameTooLarge { size: 1 << 40, max: DEFAULT_MAX_FRAME });
        assert!(buf.capacity() <= 64, "capacity {}", buf.capacity());

        let mut wire = 1u32.to_le_bytes().to_vec();
        wire.extend_from_slice(&3_000_000_000u64.to_le_bytes());
        let err = PacketDecoder::default().decode(&mut BytesMut::from(&wire[..])).unwrap_err();
        assert_eq!(err.to_string(), "frame of 3000000000 bytes exceeds the maximum of 1073741824 bytes");
    }

    #[test]
    fn a_large_allowed_frame_that_stalls_costs_little_memory() {
        let mut wire = 1u32.to_le_bytes().to_vec();
        wire.extend_from_slice(&(DEFAULT_MAX_FRAME as u64).to_le_bytes());
        wire.extend_from_slice(b"first bytes");
        let mut buf = BytesMut::from(&wire[..]);
        let mut decoder = PacketDecoder::default();
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        assert!(buf.capacity() <= 2 * RESERVE_CHUNK, "capacity {}", buf.capacity());
    }

    #[test]
    fn too_many_and_zero_frames_are_errors() {
        let mut buf = BytesMut::from(&((MAX_FRAMES as u32) + 1).to_le_bytes()[..]);
        let err = PacketDecoder::default().decode(&mut buf).unwrap_err();
        assert_eq!(err, ProtocolError::TooManyFrames(MAX_FRAMES as u64 + 1));
        assert!(buf.capacity() <= 4, "capacity {}", buf.capacity());

        let mut buf = BytesMut::from(&0u32.to_le_bytes()[..]);
        assert_eq!(PacketDecoder::default().decode(&mut buf), Err(ProtocolError::NoFrames));
    }

    #[test]
    fn a_small_limit_is_enforced_on_the_header_too() {
        let mut buf = BytesMut::from(&encode(&[0; 17], &[])[..]);
        let err = PacketDecoder::new(16).decode(&mut buf).unwrap_err();
        assert_eq!(err, ProtocolError::FrameTooLarge { size: 17, max: 16 });
        let mut buf = BytesMut::from(&encode(&[0; 16], &[&[1; 16]])[..]);
        assert!(PacketDecoder::new(16).decode(&mut buf).unwrap().is_some());
    }

    #[test]
    fn a_packet_over_the_packet_limit_is_refused_at_its_length_table() {
        // Three frames each under the frame limit, together over the packet limit: refused as
        // soon as the running total passes it (the second 1 GiB), before any body byte is read.
        let mut wire = 4u32.to_le_bytes().to_vec();
        wire.extend_from_slice(&8u64.to_le_bytes());
        for _ in 0..3 {
            wire.extend_from_slice(&(1u64 << 30).to_le_bytes());
        }
        let mut buf = BytesMut::from(&wire[..]);
        let mut decoder = PacketDecoder::with_limits(1 << 30, 2 << 30);
        let err = decoder.decode(&mut buf).unwrap_err();
        assert_eq!(err, ProtocolError::PacketOverLimit { size: (2 << 30) + 8, max: 2 << 30 });
        assert!(buf.capacity() <= 64, "capacity {}", buf.capacity());
        assert_eq!(decoder.pending_body(), None);
    }

    #[test]
    fn limits_can_be_raised_between_packets_and_the_pending_body_is_known() {
        let mut decoder = PacketDecoder::with_limits(16, 32);
        let mut buf = BytesMut::from(&encode(b"h", &[&[1; 100]])[..]);
        assert!(matches!(decoder.decode(&mut buf), Err(ProtocolError::FrameTooLarge { size: 100, max: 16 })));
        decoder.set_limits(1000, 1000);
        let wire = encode(b"h", &[&[1; 100]]);
        let mut buf = BytesMut::from(&wire[..wire.len() - 1]);
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        assert_eq!(decoder.pending_body(), Some(101));
        buf.extend_from_slice(&wire[wire.len() - 1..]);
        assert!(decoder.decode(&mut buf).unwrap().is_some());
        assert_eq!(decoder.pending_body(), None);
    }

    #[test]
    fn total_overflow_is_an_error() {
        let mut wire = 3u32.to_le_bytes().to_vec();
        for _ in 0..3 {
            wire.extend_from_slice(&(usize::MAX as u64 / 2).to_le_bytes());
        }
        let err = PacketDecoder::new(usize::MAX).decode(&mut BytesMut::from(&wire[..])).unwrap_err();
        assert_eq!(err, ProtocolError::PacketTooLarge);
    }

    #[test]
    #[should_panic(expected = "exceeds the maximum of 1048576 frames")]
    fn encoding_too_many_frames_panics() {
        packet_prefix(0, std::iter::repeat_n(0, MAX_FRAMES));
    }
}
