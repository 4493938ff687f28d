//! The frame tracker against headers written by tungstenite (an independent
//! encoder), split anywhere, and against garbage.

use std::io::Cursor;

use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};

use super::*;

/// A frame header for `len` payload bytes, as tungstenite writes it.
fn header(opcode: OpCode, len: u64, mask: Option<[u8; 4]>) -> Vec<u8> {
    let header = FrameHeader {
        opcode,
        mask,
        ..FrameHeader::default()
    };
    let mut out = Vec::new();
    header.format(len, &mut out).expect("format a header");
    out
}

/// A whole frame with a payload of `len` bytes.
fn frame(opcode: OpCode, len: usize, mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = header(opcode, len as u64, mask);
    out.extend(std::iter::repeat_n(b'x', len));
    out
}

const TEXT: OpCode = OpCode::Data(Data::Text);
const BINARY: OpCode = OpCode::Data(Data::Binary);
const CLOSE: OpCode = OpCode::Control(Control::Close);
const PING: OpCode = OpCode::Control(Control::Ping);
const MASK: Option<[u8; 4]> = Some([0x12, 0x34, 0x56, 0x78]);

/// Feeds `bytes` one byte at a time; returns the offsets (after the byte) at
/// which the tracker was at a boundary.
fn boundaries_byte_by_byte(bytes: &[u8]) -> Vec<usize> {
    let mut frames = Frames::default();
    let mut at = Vec::new();
    for (i, byte) in bytes.iter().enumerate() {
        frames.feed(std::slice::from_ref(byte));
        if frames.at_boundary() {
            at.push(i + 1);
        }
    }
    at
}

#[test]
fn a_fresh_tracker_is_at_a_boundary() {
    let frames = Frames::default();
    assert!(frames.at_boundary());
    assert!(!frames.close_seen());
    assert!(!frames.lost());
}

#[test]
fn headers_split_one_byte_at_a_time_end_where_their_frames_end() {
    for mask in [None, MASK] {
        // 7-bit, 16-bit and 64-bit lengths, and an empty payload.
        let lengths = [5usize, 0, 125, 126, 300, 65_535, 65_536, 70_000];
        let mut stream = Vec::new();
        let mut ends = Vec::new();
        for len in lengths {
            stream.extend(frame(BINARY, len, mask));
            ends.push(stream.len());
        }
        assert_eq!(boundaries_byte_by_byte(&stream), ends, "mask {mask:?}");
    }
}

#[test]
fn sixteen_and_sixty_four_bit_lengths_are_read_whole() {
    for (len, header_len) in [(126u64, 4usize), (65_535, 4), (65_536, 10), (1 << 40, 10)] {
        for mask in [None, MASK] {
            let head = header(TEXT, len, mask);
            let extra = if mask.is_some() { 4 } else { 0 };
            assert_eq!(head.len(), header_len + extra);
            let mut frames = Frames::default();
            frames.feed(&head);
            assert!(!frames.at_boundary(), "{len}: a payload is due");
            assert_eq!(frames.left, len, "{len} {mask:?}");
            // The payload passes in pieces; the boundary comes after the last byte.
            let chunk = vec![0u8; 4096];
            let mut left = len;
            while left > 0 && left < 1 << 20 {
                let n = left.min(chunk.len() as u64) as usize;
                assert_eq!(frames.advance_to_frame_end(&chunk[..n]), n);
                left -= n as u64;
            }
            if left == 0 {
                assert!(frames.at_boundary(), "{len}");
            }
        }
    }
}

#[test]
fn many_frames_in_one_read_are_all_followed() {
    let mut stream = Vec::new();
    for i in 0..1000 {
        stream.extend(frame(TEXT, i % 200, if i % 2 == 0 { MASK } else { None }));
    }
    let mut frames = Frames::default();
    frames.feed(&stream);
    assert!(frames.at_boundary());
    // With one byte more, the next frame has started.
    frames.feed(&[0x81]);
    assert!(!frames.at_boundary());
}

#[test]
fn advance_to_frame_end_stops_at_the_end_of_the_current_frame() {
    let first = frame(TEXT, 10, None);
    let second = frame(TEXT, 3, None);
    let mut frames = Frames::default();
    // Mid-frame: 4 bytes of the first frame are through.
    frames.feed(&first[..4]);
    let mut rest = first[4..].to_vec();
    rest.extend(&second);
    assert_eq!(frames.advance_to_frame_end(&rest), first.len() - 4);
    assert!(frames.at_boundary());
    // At a boundary it takes the next whole frame.
    assert_eq!(
        frames.advance_to_frame_end(&rest[first.len() - 4..]),
        second.len()
    );
    assert!(frames.at_boundary());
    // An empty frame ends with its header.
    let empty = frame(BINARY, 0, MASK);
    let mut two = empty.clone();
    two.extend(&empty);
    assert_eq!(frames.advance_to_frame_end(&two), empty.len());
    assert!(frames.at_boundary());
    assert_eq!(frames.advance_to_frame_end(&[]), 0);
}

#[test]
fn a_close_frame_is_seen_even_split() {
    let mut stream = frame(PING, 4, MASK);
    let close = Frame::close(None);
    let mut bytes = Vec::new();
    close.format(&mut bytes).expect("format a close");
    stream.extend(&bytes);
    let mut frames = Frames::default();
    for byte in &stream {
        assert!(!frames.close_seen());
        frames.feed(std::slice::from_ref(byte));
    }
    assert!(frames.close_seen());
    assert!(frames.at_boundary());
}

#[test]
fn bad_headers_lose_the_stream_for_good() {
    let bad: [&[u8]; 5] = [
        // Reserved data opcode 3.
        &[0x83, 0x00],
        // Reserved control opcode 0xB.
        &[0x8B, 0x00],
        // A fragmented ping.
        &[0x09, 0x00],
        // A close with a 126-byte payload.
        &[0x88, 0x7E, 0x00, 0x7E],
        // A 64-bit length with its top bit set.
        &[0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0],
    ];
    for bytes in bad {
        let mut frames = Frames::default();
        frames.feed(bytes);
        assert!(frames.lost(), "{bytes:?}");
        assert!(!frames.at_boundary(), "{bytes:?}");
        // Everything is taken from then on, and nothing changes.
        assert_eq!(frames.advance_to_frame_end(&[0x81, 0x00]), 2);
        assert!(!frames.at_boundary());
    }
}

#[test]
fn a_huge_declared_length_is_only_counted() {
    let mut frames = Frames::default();
    frames.feed(&header(BINARY, (1 << 63) - 1, None));
    assert!(!frames.lost());
    assert_eq!(frames.left, (1 << 63) - 1);
    let chunk = [0u8; 16 * 1024];
    assert_eq!(frames.advance_to_frame_end(&chunk), chunk.len());
    assert!(!frames.at_boundary());
}

#[test]
fn garbage_in_any_split_never_panics() {
    // A small xorshift generator: the same garbage on every run.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..200 {
        let len = (next() % 4096) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let mut frames = Frames::default();
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let n = 1 + (next() % 64) as usize;
            let piece = &rest[..n.min(rest.len())];
            let used = frames.advance_to_frame_end(piece);
            assert!(used >= 1 && used <= piece.len());
            rest = &rest[used..];
        }
    }
}

#[test]
fn the_close_to_the_client_is_an_unmasked_1001() {
    let bytes = close_to_client();
    let mut cursor = Cursor::new(&bytes[..]);
    let (head, len) = FrameHeader::parse(&mut cursor)
        .expect("a valid header")
        .expect("a whole header");
    assert_eq!(head.opcode, CLOSE);
    assert!(head.is_final);
    assert_eq!(head.mask, None, "a server's frames are not masked");
    let payload = &bytes[cursor.position() as usize..];
    assert_eq!(payload.len() as u64, len);
    assert_eq!(&payload[..2], &[0x03, 0xE9], "1001");
    assert_eq!(&payload[2..], b"server shutting down");
    let mut frames = Frames::default();
    frames.feed(&bytes);
    assert!(frames.at_boundary() && frames.close_seen());
}

#[test]
fn the_close_to_the_node_is_a_masked_1001() {
    let bytes = close_to_node();
    let mut cursor = Cursor::new(&bytes[..]);
    let (head, len) = FrameHeader::parse(&mut cursor)
        .expect("a valid header")
        .expect("a whole header");
    assert_eq!(head.opcode, CLOSE);
    let key = head.mask.expect("a client's frames are masked");
    let payload: Vec<u8> = bytes[cursor.position() as usize..]
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ key[i % 4])
        .collect();
    assert_eq!(payload.len() as u64, len);
    assert_eq!(&payload[..2], &[0x03, 0xE9], "1001");
    assert_eq!(&payload[2..], b"server shutting down");
    assert_ne!(
        close_to_node(),
        close_to_node(),
        "each close gets its own key"
    );
}
