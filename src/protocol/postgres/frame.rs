//! Framing: finds message boundaries in a read buffer without copying. A message is a
//! 1-byte tag and a 4-byte big-endian length that counts itself but not the tag; the
//! startup packets have no tag. A partial frame is `Ok(None)`.

/// Bytes of a tagged message header: tag + length.
pub const HEADER_LEN: usize = 5;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("message {tag:?} declares length {len}, below the minimum of 4")]
    BadLength { tag: char, len: u32 },
    #[error("message {tag:?} of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { tag: char, len: usize, max: usize },
    #[error("startup packet length {len} is outside 8..={max}")]
    BadStartupLength { len: usize, max: usize },
}

/// The header of one tagged message at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub tag: u8,
    /// Whole message length including the tag byte.
    pub total: usize,
}

impl Header {
    pub fn body_len(&self) -> usize {
        self.total - HEADER_LEN
    }
}

/// Reads the header at the start of `buf`; `Ok(None)` when fewer than 5 bytes are there.
/// `max` bounds the whole message, checked before anyone allocates for it.
pub fn header(buf: &[u8], max: usize) -> Result<Option<Header>, FrameError> {
    let Some(head) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let tag = head[0];
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
    if len < 4 {
        return Err(FrameError::BadLength {
            tag: tag as char,
            len,
        });
    }
    let total = len as usize + 1;
    if total > max {
        return Err(FrameError::TooLarge {
            tag: tag as char,
            len: total,
            max,
        });
    }
    Ok(Some(Header { tag, total }))
}

/// A whole tagged message at the start of `buf`, as (header, body); `Ok(None)` if incomplete.
pub fn message(buf: &[u8], max: usize) -> Result<Option<(Header, &[u8])>, FrameError> {
    match header(buf, max)? {
        Some(h) if buf.len() >= h.total => Ok(Some((h, &buf[HEADER_LEN..h.total]))),
        _ => Ok(None),
    }
}

/// Length of the untagged startup-phase packet at the start of `buf` (whole packet,
/// including the length word); `Ok(None)` when the length word is not complete.
pub fn startup_len(buf: &[u8], max: usize) -> Result<Option<usize>, FrameError> {
    let Some(head) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if !(8..=max).contains(&len) {
        return Err(FrameError::BadStartupLength { len, max });
    }
    Ok(Some(len))
}

/// Splits a NUL-terminated string off the front of `buf`; `None` if there is no NUL.
pub fn cstr(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = nul(buf)?;
    Some((&buf[..end], &buf[end + 1..]))
}

/// Where the first NUL of `buf` is, eight bytes at a time. Written by hand because the SQL
/// text of every Parse passes here: a byte loop cost about four instructions a byte (a
/// third of the scan of an extended-protocol batch), and `memchr`'s dispatch per call as
/// much again on names and texts this short.
fn nul(buf: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut chunks = buf.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let v = u64::from_le_bytes(word);
        // The high bit of each zero byte (and, past the first, maybe of others): the lowest
        // one set is the first zero byte.
        let zeros = v.wrapping_sub(ONES) & !v & HIGHS;
        if zeros != 0 {
            return Some(at + (zeros.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    let rest = chunks.remainder();
    rest.iter().position(|&b| b == 0).map(|p| at + p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_frames_are_none() {
        assert_eq!(header(b"Q\0\0", 100), Ok(None));
        assert_eq!(message(b"Q\0\0\0\x09SEL", 100), Ok(None));
        assert_eq!(startup_len(b"\0\0", 100), Ok(None));
    }

    #[test]
    fn whole_frame_is_split() {
        let buf = b"Q\0\0\0\x09SEL\0Zrest";
        let (h, body) = message(buf, 100).unwrap().unwrap();
        assert_eq!(h.tag, b'Q');
        assert_eq!(h.total, 10);
        assert_eq!(body, b"SEL\0Z");
    }

    #[test]
    fn bad_lengths_are_errors() {
        assert!(matches!(
            header(b"Q\0\0\0\x02", 100),
            Err(FrameError::BadLength { .. })
        ));
        assert!(matches!(
            header(b"Q\x7f\0\0\0", 100),
            Err(FrameError::TooLarge { .. })
        ));
        assert!(startup_len(b"\0\0\0\x02", 100).is_err());
        assert!(startup_len(b"\x7f\0\0\0", 10000).is_err());
    }

    #[test]
    fn cstr_splits() {
        assert_eq!(cstr(b"ab\0cd"), Some((&b"ab"[..], &b"cd"[..])));
        assert_eq!(cstr(b"ab"), None);
    }

    #[test]
    fn the_first_nul_is_found_wherever_it_is() {
        // Bytes that trip a word-at-a-time search (0x01, 0x80, 0xff around a zero), at
        // every offset and length around the word size.
        let fill = [b'a', 0x01, 0x80, 0xff, 0x7f];
        for len in 0..40 {
            for zero in (0..len).map(Some).chain([None]) {
                for f in fill {
                    let mut buf: Vec<u8> = (0..len).map(|i| fill[i % 5].max(f)).collect();
                    if let Some(z) = zero {
                        buf[z] = 0;
                        if z + 1 < len {
                            buf[z + 1] = 0;
                        }
                    }
                    let want = buf.iter().position(|&b| b == 0);
                    assert_eq!(nul(&buf), want, "{buf:?}");
                }
            }
        }
    }
}
