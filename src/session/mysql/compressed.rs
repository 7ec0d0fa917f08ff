//! A client connection in the compressed protocol: what the session reads from the client
//! is inflated into the ordinary packet stream the rest of the session frames, and what it
//! writes is deflated on the way out. The backends never compress (they are near), so the
//! relay itself is unchanged.

use bytes::BytesMut;
use flate2::Compression;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::net::Stream;
use crate::protocol::mysql::compress::Codec;
use crate::protocol::mysql::packet::MAX_PHYSICAL_PAYLOAD;

/// The compression state of a client connection.
pub struct Compressed {
    codec: Codec,
    /// Bytes read from the client that do not make a whole compressed packet yet.
    raw: BytesMut,
    scratch: BytesMut,
    out: BytesMut,
}

impl Compressed {
    /// Deflates fast: the proxy compresses every byte it relays to such a client.
    pub fn new() -> Compressed {
        Compressed {
            codec: Codec::new(Compression::fast()),
            raw: BytesMut::new(),
            scratch: BytesMut::new(),
            out: BytesMut::new(),
        }
    }

    /// Appends to `buf` the packets of the next compressed packet from `stream`, reading
    /// as needed; `Ok(0)` when the client closed the connection. One compressed packet at a
    /// time, so a client cannot make the proxy inflate more than 16 MiB ahead of use.
    pub async fn fill(
        &mut self,
        stream: &mut Stream,
        buf: &mut BytesMut,
    ) -> std::io::Result<usize> {
        loop {
            let before = buf.len();
            let whole = self
                .codec
                .decode(&mut self.raw, buf, MAX_PHYSICAL_PAYLOAD)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            if whole && buf.len() > before {
                return Ok(buf.len() - before);
            }
            if whole {
                continue;
            }
            if self.raw.capacity() - self.raw.len() < 4096 {
                self.raw.reserve(16 * 1024);
            }
            if stream.read_buf(&mut self.raw).await? == 0 {
                return Ok(0);
            }
        }
    }

    /// Writes `bytes`, a run of whole packets, compressed.
    pub async fn write_all(&mut self, stream: &mut Stream, bytes: &[u8]) -> std::io::Result<()> {
        self.out.clear();
        self.codec.encode(bytes, &mut self.scratch, &mut self.out);
        stream.write_all(&self.out).await
    }
}
