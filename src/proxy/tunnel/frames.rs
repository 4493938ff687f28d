//! Websocket frame boundaries, followed from the bytes as a tunnel passes them
//! on (RFC 6455 §5.2), so that a close frame can be put between two frames and
//! never inside one; and the close frames the edge sends at shutdown.
//!
//! The tracker holds no buffer but the header in progress (at most 14 bytes)
//! and a count of payload bytes still to come: a declared length, however
//! large, is only a number. Input that is not a websocket frame sequence (a
//! reserved opcode, a 64-bit length with its top bit set, a fragmented or long
//! control frame) makes the tracker give up: it is then never at a boundary,
//! and the tunnel does not inject anything into that stream.

use std::hash::BuildHasher as _;

use bytes::Bytes;

#[cfg(test)]
mod tests;

/// Longest frame header: 2 bytes, a 64-bit length, a 4-byte masking key.
const MAX_HEADER: usize = 14;

/// Close status 1001, Going Away (RFC 6455 §7.4.1), as two bytes.
const GOING_AWAY: [u8; 2] = 1001u16.to_be_bytes();

/// The reason text sent with 1001.
const REASON: &[u8] = b"server shutting down";

/// Where one direction of a websocket stands in its sequence of frames.
#[derive(Debug, Default, Clone)]
pub(crate) struct Frames {
    /// The header being read; only `head[..have]` is meaningful.
    head: [u8; MAX_HEADER],
    /// Header bytes read so far; 0 at a boundary and in a payload.
    have: u8,
    /// Payload bytes of the current frame still to come.
    left: u64,
    /// A close frame has been seen (its header, at least).
    close_seen: bool,
    /// The bytes are not a frame sequence: boundaries are unknown from here on.
    lost: bool,
}

impl Frames {
    /// Between two frames: a frame may be inserted here.
    pub(crate) fn at_boundary(&self) -> bool {
        !self.lost && self.have == 0 && self.left == 0
    }

    /// The stream has stopped looking like websocket frames.
    pub(crate) fn lost(&self) -> bool {
        self.lost
    }

    /// A close frame has passed (so the receiver has been told to close).
    pub(crate) fn close_seen(&self) -> bool {
        self.close_seen
    }

    /// Follows every byte of `bytes`.
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) {
        // Bounded: each turn takes at least one byte.
        while !bytes.is_empty() {
            let used = self.advance_to_frame_end(bytes);
            bytes = &bytes[used..];
        }
    }

    /// Follows `bytes` up to the end of the current frame (at a boundary: of
    /// the next frame) or their end, whichever comes first; returns how many
    /// bytes that took, at least one when `bytes` is not empty. Once the
    /// stream is lost, takes everything.
    pub(crate) fn advance_to_frame_end(&mut self, bytes: &[u8]) -> usize {
        if self.lost {
            return bytes.len();
        }
        let mut used = 0;
        if self.left == 0 {
            // At a boundary or inside a header: take header bytes one by one,
            // since the first two decide how long the header is.
            for &byte in bytes {
                // `have < header_len() <= MAX_HEADER` holds here: a header is
                // finished (and `have` reset) as soon as `have` reaches its length.
                self.head[usize::from(self.have)] = byte;
                self.have += 1;
                used += 1;
                if self.have >= 2 && usize::from(self.have) == self.header_len() {
                    self.finish_header();
                    break;
                }
            }
            if self.have > 0 || self.lost || self.left == 0 {
                // A header still incomplete, a bad one, or an empty payload.
                return used;
            }
        }
        let rest = (bytes.len() - used) as u64;
        let take = rest.min(self.left);
        self.left -= take;
        // `take <= rest`, which came from a usize.
        used + take as usize
    }

    /// The full header length, once its first two bytes are in.
    fn header_len(&self) -> usize {
        let length = match self.head[1] & 0x7F {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if self.head[1] & 0x80 != 0 { 4 } else { 0 };
        2 + length + mask
    }

    fn finish_header(&mut self) {
        let fin = self.head[0] & 0x80 != 0;
        let opcode = self.head[0] & 0x0F;
        let len = match self.head[1] & 0x7F {
            126 => u64::from(u16::from_be_bytes([self.head[2], self.head[3]])),
            127 => {
                let mut bytes = [0; 8];
                bytes.copy_from_slice(&self.head[2..10]);
                u64::from_be_bytes(bytes)
            }
            n => u64::from(n),
        };
        self.have = 0;
        let control = opcode & 0x08 != 0;
        let valid = matches!(opcode, 0x0..=0x2 | 0x8..=0xA)
            && len >> 63 == 0
            && !(control && (!fin || len > 125));
        if !valid {
            self.lost = true;
            return;
        }
        if opcode == 0x8 {
            self.close_seen = true;
        }
        self.left = len;
    }
}

/// A close frame with 1001 and [`REASON`], as the edge sends it to the
/// client: a server's frames are not masked.
pub(crate) fn close_to_client() -> Bytes {
    let mut frame = Vec::with_capacity(4 + REASON.len());
    frame.push(0x88);
    frame.push(close_payload_len());
    frame.extend_from_slice(&GOING_AWAY);
    frame.extend_from_slice(REASON);
    Bytes::from(frame)
}

/// A close frame with 1001 and [`REASON`], as the edge sends it to the node:
/// a client's frames must be masked (RFC 6455 §5.3). The key needs no
/// secrecy here (it protects intermediaries from a browser's script), only
/// to differ from frame to frame.
pub(crate) fn close_to_node() -> Bytes {
    // Each RandomState has fresh keys, so this differs on every call.
    let key = std::collections::hash_map::RandomState::new()
        .hash_one(std::time::SystemTime::now())
        .to_be_bytes();
    close_masked([key[0], key[1], key[2], key[3]])
}

fn close_masked(key: [u8; 4]) -> Bytes {
    let mut frame = Vec::with_capacity(8 + REASON.len());
    frame.push(0x88);
    frame.push(0x80 | close_payload_len());
    frame.extend_from_slice(&key);
    let payload = GOING_AWAY.iter().chain(REASON);
    frame.extend(payload.enumerate().map(|(i, b)| b ^ key[i % 4]));
    Bytes::from(frame)
}

/// The close payload length: code and reason, well under 126.
const fn close_payload_len() -> u8 {
    (GOING_AWAY.len() + REASON.len()) as u8
}
