//! The compressed protocol (CLIENT_COMPRESS, zlib) that a client may ask for: after the
//! login, every byte in either direction travels in compressed packets — a 7-byte header
//! (3-byte compressed length, sequence id, 3-byte length before compression, 0 when the
//! payload is stored as it is) and a zlib stream — that carry ordinary packets.
//!
//! Written over flate2 rather than with mysql_common's `PacketCodec`: that codec frames
//! the ordinary packets too (the proxy relays them as they are) and takes an owned buffer
//! for each write. Here a decoder hands back the ordinary packet stream as the client sent
//! it, and the encoder wraps the bytes of a relayed run of whole packets.
//!
//! Sequence ids, as a server numbers them: a command's compressed packets start at 0, the
//! answer's continue from there; the packets inside one write are numbered on from the
//! sequence id of the compressed packet that carries the first of them (a server does the
//! same after each flush), which is what clients check when they check at all.

use std::io::{Read, Write};

use bytes::{BufMut, BytesMut};
use flate2::Compression;
use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;

use super::packet::{self, HEADER_LEN, MAX_PHYSICAL_PAYLOAD};

/// Bytes of a compressed packet's header.
pub const COMPRESSED_HEADER_LEN: usize = 7;

/// Payloads shorter than this go out stored rather than deflated, as MySQL does
/// (`MIN_COMPRESS_LENGTH`).
pub const MIN_COMPRESS_LENGTH: usize = 50;

#[derive(Debug, thiserror::Error)]
pub enum CompressError {
    #[error("compressed packet of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("compressed packet announces {len} bytes of data but carries none")]
    Empty { len: usize },
    #[error("compressed packet does not inflate to the {expected} bytes it announces")]
    Inflate {
        expected: usize,
        #[source]
        source: std::io::Error,
    },
}

/// One direction's compression state of a connection: the sequence id of the next
/// compressed packet the proxy sends, and how hard it deflates.
#[derive(Debug, Clone, Copy)]
pub struct Codec {
    next_seq: u8,
    level: Compression,
}

impl Codec {
    pub fn new(level: Compression) -> Codec {
        Codec { next_seq: 0, level }
    }

    /// Decodes the compressed packet at the front of `src`, if it is whole, appending the
    /// packets it carries to `dst`; returns whether it was whole. `max` bounds both lengths
    /// the header announces, before anything is allocated for them. The proxy's next
    /// compressed packet follows this one's sequence id.
    pub fn decode(
        &mut self,
        src: &mut BytesMut,
        dst: &mut BytesMut,
        max: usize,
    ) -> Result<bool, CompressError> {
        let Some(head) = src.get(..COMPRESSED_HEADER_LEN) else {
            return Ok(false);
        };
        let stored_len = u24(&head[0..3]);
        let seq = head[3];
        let plain_len = u24(&head[4..7]);
        for len in [stored_len, plain_len] {
            if len > max {
                return Err(CompressError::TooLarge { len, max });
            }
        }
        let Some(body) = src.get(COMPRESSED_HEADER_LEN..COMPRESSED_HEADER_LEN + stored_len) else {
            return Ok(false);
        };
        if plain_len == 0 {
            dst.extend_from_slice(body);
        } else if body.is_empty() {
            return Err(CompressError::Empty { len: plain_len });
        } else {
            let start = dst.len();
            dst.reserve(plain_len);
            // One byte more than announced is read, so that a stream inflating to more
            // than it said is caught; never more than that.
            let copied = std::io::copy(
                &mut ZlibDecoder::new(body).take(plain_len as u64 + 1),
                &mut (&mut *dst).writer(),
            );
            let inflated = dst.len() - start;
            let failed = match copied {
                Err(e) => Some(e),
                Ok(_) if inflated != plain_len => Some(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("inflated to {inflated} bytes"),
                )),
                Ok(_) => None,
            };
            if let Some(source) = failed {
                dst.truncate(start);
                return Err(CompressError::Inflate {
                    expected: plain_len,
                    source,
                });
            }
        }
        let whole = COMPRESSED_HEADER_LEN + stored_len;
        bytes::Buf::advance(src, whole);
        self.next_seq = seq.wrapping_add(1);
        Ok(true)
    }

    /// Appends `plain`, a run of whole packets, to `out` as compressed packets, renumbering
    /// the packets inside from the first compressed packet's sequence id (`plain` is copied
    /// for that; it is compressed anyway).
    pub fn encode(&mut self, plain: &[u8], scratch: &mut BytesMut, out: &mut BytesMut) {
        scratch.clear();
        scratch.extend_from_slice(plain);
        let mut inner = self.next_seq;
        let mut at = 0;
        while let Some(h) = scratch.get(at..).and_then(packet::header) {
            scratch[at + 3] = inner;
            inner = inner.wrapping_add(1);
            at += HEADER_LEN + h.len;
        }
        for chunk in scratch.chunks(MAX_PHYSICAL_PAYLOAD) {
            self.put_compressed(chunk, out);
        }
        if scratch.is_empty() {
            self.put_compressed(&[], out);
        }
    }

    fn put_compressed(&mut self, chunk: &[u8], out: &mut BytesMut) {
        let start = out.len();
        out.put_bytes(0, COMPRESSED_HEADER_LEN);
        let mut stored_len = chunk.len();
        let mut plain_len = 0;
        if chunk.len() >= MIN_COMPRESS_LENGTH {
            let end = {
                let mut encoder = ZlibEncoder::new((&mut *out).writer(), self.level);
                // Writing into memory does not fail; if it did, the chunk goes out stored.
                let finished = encoder.write_all(chunk).and_then(|()| encoder.finish());
                finished.map(|w| w.get_ref().len()).ok()
            };
            match end.map(|e| e - start - COMPRESSED_HEADER_LEN) {
                Some(deflated) if deflated < chunk.len() => {
                    stored_len = deflated;
                    plain_len = chunk.len();
                }
                // Not smaller: stored as it is.
                _ => out.truncate(start + COMPRESSED_HEADER_LEN),
            }
        }
        if plain_len == 0 {
            out.extend_from_slice(chunk);
        }
        let head = &mut out[start..start + COMPRESSED_HEADER_LEN];
        head[0..3].copy_from_slice(&(stored_len as u32).to_le_bytes()[..3]);
        head[3] = self.next_seq;
        head[4..7].copy_from_slice(&(plain_len as u32).to_le_bytes()[..3]);
        self.next_seq = self.next_seq.wrapping_add(1);
    }
}

fn u24(b: &[u8]) -> usize {
    usize::from(b[0]) | usize::from(b[1]) << 8 | usize::from(b[2]) << 16
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::mysql::packet::write_packet;
    use mysql_common::proto::codec::PacketCodec;

    /// Packets as a client sends them, compressed by mysql_common's codec.
    fn client_sends(payloads: &[&[u8]]) -> BytesMut {
        let mut codec = PacketCodec::default();
        codec.compress(Compression::fast());
        let mut wire = BytesMut::new();
        for p in payloads {
            codec.reset_seq_id();
            codec.encode(&mut &p[..], &mut wire).unwrap();
        }
        wire
    }

    #[test]
    fn what_mysql_common_compresses_decodes_to_the_packets_sent() {
        let long = vec![b'q'; 70_000];
        let wire = client_sends(&[b"\x03SELECT 1", &long]);
        let mut src = wire.clone();
        let mut plain = BytesMut::new();
        let mut codec = Codec::new(Compression::fast());
        // Byte by byte: a partial compressed packet waits for the rest.
        let mut fed = BytesMut::new();
        for b in src.split().iter() {
            fed.put_u8(*b);
            while codec.decode(&mut fed, &mut plain, 1 << 24).unwrap() {}
        }
        assert!(fed.is_empty());
        let mut want = BytesMut::new();
        write_packet(&mut want, 0, b"\x03SELECT 1");
        write_packet(&mut want, 0, &long);
        assert_eq!(plain, want);
    }

    #[test]
    fn what_the_proxy_compresses_mysql_common_reads_back() {
        let mut run = BytesMut::new();
        write_packet(&mut run, 1, &[b'a'; 10]);
        write_packet(&mut run, 2, &vec![b'b'; 100_000]);
        write_packet(&mut run, 3, &[0xFE, 0, 0, 2, 0]);
        let mut codec = Codec::new(Compression::fast());
        // The client sent its command as compressed packet 0.
        let mut cmd = client_sends(&[b"\x03SELECT x"]);
        codec
            .decode(&mut cmd, &mut BytesMut::new(), 1 << 24)
            .unwrap();
        let (mut scratch, mut wire) = (BytesMut::new(), BytesMut::new());
        codec.encode(&run, &mut scratch, &mut wire);
        assert!(wire.len() < 1000, "deflated: {} bytes", wire.len());
        let mut theirs = PacketCodec::default();
        theirs.compress(Compression::fast());
        theirs
            .encode(&mut &b"\x03SELECT x"[..], &mut BytesMut::new())
            .unwrap();
        let mut got = Vec::new();
        for want in [vec![b'a'; 10], vec![b'b'; 100_000], vec![0xFE, 0, 0, 2, 0]] {
            let mut one = Vec::new();
            assert!(theirs.decode(&mut wire, &mut one).unwrap());
            got.push(one.clone());
            assert_eq!(one, want);
        }
        assert_eq!(got.len(), 3);
    }

    #[test]
    fn short_payloads_are_stored_and_lies_are_refused() {
        let mut run = BytesMut::new();
        // Numbered from the compressed packet's sequence id (0 here).
        write_packet(&mut run, 0, b"\x00\x00\x00\x02\x00\x00\x00");
        let mut codec = Codec::new(Compression::fast());
        let (mut scratch, mut wire) = (BytesMut::new(), BytesMut::new());
        codec.encode(&run, &mut scratch, &mut wire);
        assert_eq!(&wire[4..7], &[0, 0, 0], "stored, not deflated");
        assert_eq!(&wire[7..], &run[..]);
        // A header announcing more than the limit, before any byte of it arrived.
        let mut huge = BytesMut::from(&[0xff, 0xff, 0xff, 0, 0, 0, 0][..]);
        assert!(matches!(
            codec.decode(&mut huge, &mut BytesMut::new(), 1 << 20),
            Err(CompressError::TooLarge { .. })
        ));
        // Garbage where a zlib stream should be.
        let mut bad = BytesMut::from(&[3, 0, 0, 0, 10, 0, 0, 1, 2, 3][..]);
        assert!(matches!(
            codec.decode(&mut bad, &mut BytesMut::new(), 1 << 20),
            Err(CompressError::Inflate { .. })
        ));
    }
}
