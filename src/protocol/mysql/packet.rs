//! Framing: finds MySQL packet boundaries in a read buffer without copying. A physical
//! packet is a 3-byte little-endian payload length, a 1-byte sequence id and the payload;
//! a logical packet of 0xFFFFFF bytes or more is sent as physical packets of exactly
//! 0xFFFFFF bytes followed by a shorter one (possibly empty). A partial frame is `Ok(None)`.

use bytes::{BufMut, BytesMut};

/// Bytes of a physical packet header: 3-byte length + sequence id.
pub const HEADER_LEN: usize = 4;

/// The largest payload of one physical packet; a payload of exactly this size means
/// "the logical packet continues in the next physical packet".
pub const MAX_PHYSICAL_PAYLOAD: usize = 0xFF_FFFF;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("packet of {len} payload bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("packet sequence id {got} where {expected} was expected")]
    OutOfOrder { expected: u8, got: u8 },
}

/// The header of one physical packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Payload length, 0..=0xFFFFFF.
    pub len: usize,
    pub seq: u8,
}

impl Header {
    /// Whether another physical packet of the same logical packet follows this one.
    pub fn continues(&self) -> bool {
        self.len == MAX_PHYSICAL_PAYLOAD
    }
}

/// Reads the physical packet header at the start of `buf`; `None` with fewer than 4 bytes.
pub fn header(buf: &[u8]) -> Option<Header> {
    let head = buf.get(..HEADER_LEN)?;
    Some(Header {
        len: usize::from(head[0]) | (usize::from(head[1]) << 8) | (usize::from(head[2]) << 16),
        seq: head[3],
    })
}

/// One whole physical packet at the start of `buf`, as (header, payload); `Ok(None)` if
/// incomplete. `max_payload` is checked before anyone allocates for the payload.
pub fn packet(buf: &[u8], max_payload: usize) -> Result<Option<(Header, &[u8])>, FrameError> {
    let Some(h) = header(buf) else {
        return Ok(None);
    };
    if h.len > max_payload {
        return Err(FrameError::TooLarge {
            len: h.len,
            max: max_payload,
        });
    }
    Ok(buf
        .get(HEADER_LEN..HEADER_LEN + h.len)
        .map(|payload| (h, payload)))
}

/// Where one whole logical packet lies at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Logical {
    /// Bytes of all its physical packets, headers included.
    pub total: usize,
    /// Sum of the payloads.
    pub payload_len: usize,
    /// Sequence id of the first physical packet.
    pub first_seq: u8,
    /// Sequence id of the last physical packet; the next packet uses `last_seq + 1`.
    pub last_seq: u8,
}

impl Logical {
    /// The sequence id the next packet of the exchange must carry.
    pub fn next_seq(&self) -> u8 {
        self.last_seq.wrapping_add(1)
    }

    /// Whether the payload is split across physical packets (and so not contiguous).
    pub fn is_split(&self) -> bool {
        self.total != self.payload_len + HEADER_LEN
    }
}

/// Finds the end of the whole logical packet at the start of `buf` without copying;
/// `Ok(None)` until every physical packet of it is in `buf`. The running sum of payloads
/// is checked against `max` as each header is read, so a peer cannot make the caller
/// allocate more than `max` (+ headers) by announcing continuation packets. The
/// continuation packets must carry consecutive sequence ids.
pub fn logical(buf: &[u8], max: usize) -> Result<Option<Logical>, FrameError> {
    let Some(first) = header(buf) else {
        return Ok(None);
    };
    let mut at = 0;
    let mut payload_len = 0;
    let mut expected = first.seq;
    loop {
        let Some(h) = buf.get(at..).and_then(header) else {
            return Ok(None);
        };
        if h.seq != expected {
            return Err(FrameError::OutOfOrder {
                expected,
                got: h.seq,
            });
        }
        payload_len += h.len;
        if payload_len > max {
            return Err(FrameError::TooLarge {
                len: payload_len,
                max,
            });
        }
        at += HEADER_LEN + h.len;
        if buf.len() < at {
            return Ok(None);
        }
        if !h.continues() {
            return Ok(Some(Logical {
                total: at,
                payload_len,
                first_seq: first.seq,
                last_seq: h.seq,
            }));
        }
        expected = h.seq.wrapping_add(1);
    }
}

/// Bytes of all physical packets of the whole logical packet at the start of `buf`;
/// see [`logical`].
pub fn logical_len(buf: &[u8], max: usize) -> Result<Option<usize>, FrameError> {
    Ok(logical(buf, max)?.map(|l| l.total))
}

/// The payload pieces of a whole logical packet (`buf[..logical.total]`), in order and
/// borrowed. A packet that is not split yields exactly one piece.
pub fn payload_chunks(buf: &[u8]) -> PayloadChunks<'_> {
    PayloadChunks {
        rest: buf,
        done: false,
    }
}

/// Iterator returned by [`payload_chunks`].
#[derive(Debug, Clone)]
pub struct PayloadChunks<'a> {
    rest: &'a [u8],
    done: bool,
}

impl<'a> Iterator for PayloadChunks<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.done {
            return None;
        }
        let h = header(self.rest)?;
        let end = (HEADER_LEN + h.len).min(self.rest.len());
        let chunk = &self.rest[HEADER_LEN..end];
        self.rest = &self.rest[end..];
        self.done = !h.continues();
        Some(chunk)
    }
}

/// Writes `payload` as one logical packet starting at sequence id `seq`, split into
/// physical packets as the protocol requires; returns the next sequence id.
pub fn write_packet(out: &mut BytesMut, seq: u8, payload: &[u8]) -> u8 {
    out.reserve(payload.len() + HEADER_LEN * (1 + payload.len() / MAX_PHYSICAL_PAYLOAD));
    let mut seq = seq;
    let mut rest = payload;
    loop {
        let n = rest.len().min(MAX_PHYSICAL_PAYLOAD);
        put_header(out, n, seq);
        out.put_slice(&rest[..n]);
        rest = &rest[n..];
        seq = seq.wrapping_add(1);
        if n < MAX_PHYSICAL_PAYLOAD {
            return seq;
        }
    }
}

/// Writes a packet whose payload `body` appends to `out` in place (no intermediate
/// buffer); splits it afterwards in the rare case it reached 16 MiB. Returns the next
/// sequence id.
pub fn write_with(out: &mut BytesMut, seq: u8, body: impl FnOnce(&mut BytesMut)) -> u8 {
    let at = out.len();
    out.put_bytes(0, HEADER_LEN);
    body(out);
    let len = out.len() - at - HEADER_LEN;
    if len < MAX_PHYSICAL_PAYLOAD {
        let mut head = [0; HEADER_LEN];
        head[..3].copy_from_slice(&(len as u32).to_le_bytes()[..3]);
        head[3] = seq;
        out[at..at + HEADER_LEN].copy_from_slice(&head);
        return seq.wrapping_add(1);
    }
    let payload = out.split_off(at + HEADER_LEN);
    out.truncate(at);
    write_packet(out, seq, &payload)
}

fn put_header(out: &mut BytesMut, len: usize, seq: u8) {
    out.put_slice(&(len as u32).to_le_bytes()[..3]);
    out.put_u8(seq);
}

/// Checks a packet's sequence id against the one the exchange expects.
pub fn check_seq(expected: u8, got: u8) -> Result<(), FrameError> {
    if expected == got {
        Ok(())
    } else {
        Err(FrameError::OutOfOrder { expected, got })
    }
}

/// The sequence id of the last of the whole packets in `bytes`; `None` when there is none.
pub fn last_seq(bytes: &[u8]) -> Option<u8> {
    let mut at = 0;
    let mut last = None;
    while let Some(header) = bytes.get(at..at + HEADER_LEN) {
        let len =
            usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16;
        last = Some(header[3]);
        at += HEADER_LEN + len;
    }
    last
}

#[cfg(test)]
mod tests {

    #[test]
    fn last_seq_is_the_sequence_id_of_the_last_whole_packet() {
        let mut bytes = vec![1, 0, 0, 3, 0xfe];
        bytes.extend_from_slice(&[2, 0, 0, 4, 1, 2]);
        assert_eq!(super::last_seq(&bytes), Some(4));
        assert_eq!(super::last_seq(&bytes[..5]), Some(3));
        assert_eq!(super::last_seq(&[]), None);
    }
    use super::*;

    const MAX: usize = MAX_PHYSICAL_PAYLOAD;

    fn framed(seq: u8, payload: &[u8]) -> BytesMut {
        let mut out = BytesMut::new();
        write_packet(&mut out, seq, payload);
        out
    }

    #[test]
    fn partial_frames_are_none() {
        assert_eq!(header(b"\x01\0"), None);
        assert_eq!(packet(b"\x03\0\0\0ab", 100), Ok(None));
        assert_eq!(logical_len(b"\x03\0\0\0ab", 100), Ok(None));
    }

    #[test]
    fn whole_packet_is_split() {
        let (h, payload) = packet(b"\x03\0\0\x07\x03abrest", 100).unwrap().unwrap();
        assert_eq!(h, Header { len: 3, seq: 7 });
        assert_eq!(payload, b"\x03ab");
        assert_eq!(logical_len(b"\x03\0\0\x07\x03abrest", 100), Ok(Some(7)));
        assert_eq!(logical_len(b"\0\0\0\x01", 100), Ok(Some(4)));
    }

    #[test]
    fn too_large_is_an_error_before_the_payload_arrives() {
        assert_eq!(
            packet(b"\xff\xff\x00\x00", 100),
            Err(FrameError::TooLarge {
                len: 0xffff,
                max: 100
            })
        );
        assert!(logical(b"\xff\xff\x00\x00", 100).is_err());
    }

    #[test]
    fn writer_splits_at_16_mib_and_appends_an_empty_packet_when_exact() {
        for (len, pieces) in [
            (0, 1),
            (10, 1),
            (MAX - 1, 1),
            (MAX, 2),
            (MAX + 1, 2),
            (2 * MAX, 3),
        ] {
            let payload = vec![0xab; len];
            let mut out = BytesMut::new();
            let next = write_packet(&mut out, 250, &payload);
            assert_eq!(next, 250u8.wrapping_add(pieces as u8), "len {len}");
            assert_eq!(out.len(), len + pieces * HEADER_LEN, "len {len}");
            let l = logical(&out, usize::MAX).unwrap().unwrap();
            assert_eq!(l.total, out.len());
            assert_eq!(l.payload_len, len);
            assert_eq!(l.first_seq, 250);
            assert_eq!(l.next_seq(), next);
            assert_eq!(l.is_split(), pieces > 1);
            let chunks: Vec<&[u8]> = payload_chunks(&out).collect();
            assert_eq!(chunks.len(), pieces);
            assert_eq!(chunks.concat(), payload);
        }
    }

    #[test]
    fn split_packet_waits_for_its_last_piece_and_checks_the_sum() {
        let whole = framed(0, &vec![1; MAX + 5]);
        assert_eq!(logical_len(&whole[..MAX + 4], usize::MAX), Ok(None));
        assert_eq!(logical_len(&whole[..MAX + 6], usize::MAX), Ok(None));
        assert_eq!(logical_len(&whole, usize::MAX), Ok(Some(MAX + 13)));
        // the limit trips on the second header, before its payload is there
        assert_eq!(
            logical(&whole[..MAX + 8], MAX + 1),
            Err(FrameError::TooLarge {
                len: MAX + 5,
                max: MAX + 1
            })
        );
    }

    #[test]
    fn continuation_with_a_wrong_sequence_id_is_an_error() {
        let mut whole = framed(3, &vec![1; MAX + 1]);
        whole[MAX + 4 + 3] = 9;
        assert_eq!(
            logical(&whole, usize::MAX),
            Err(FrameError::OutOfOrder {
                expected: 4,
                got: 9
            })
        );
        assert!(check_seq(1, 2).is_err());
        assert!(check_seq(2, 2).is_ok());
    }

    #[test]
    fn write_with_matches_write_packet() {
        for len in [0, 5, MAX, MAX + 3] {
            let payload = vec![7u8; len];
            let mut a = BytesMut::from(&b"xx"[..]);
            let na = write_with(&mut a, 1, |b| b.put_slice(&payload));
            let mut b = BytesMut::from(&b"xx"[..]);
            let nb = write_packet(&mut b, 1, &payload);
            assert_eq!((na, &a[..]), (nb, &b[..]), "len {len}");
        }
    }
}
