//! One stream type for plain TCP and TLS in either direction, so the data path is
//! written once and dispatches with a match rather than a boxed trait object.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// What a read that does not wait found on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrived {
    Nothing,
    /// Bytes arrived; they were appended to the buffer.
    Bytes,
    /// The peer closed the connection, or it failed.
    Closed,
}

pub enum Stream {
    Plain(TcpStream),
    TlsServer(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    TlsClient(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// Why a client connection could not be upgraded to TLS.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("TLS requested on a connection that already uses TLS")]
    AlreadyTls,
    #[error("TLS handshake did not finish in time")]
    Timeout,
    #[error("TLS handshake failed")]
    Handshake(#[source] io::Error),
}

impl Stream {
    pub fn is_tls(&self) -> bool {
        !matches!(self, Stream::Plain(_))
    }

    /// The address of the other end.
    pub fn peer_addr(&self) -> io::Result<std::net::SocketAddr> {
        match self {
            Stream::Plain(tcp) => tcp.peer_addr(),
            Stream::TlsServer(tls) => tls.get_ref().0.peer_addr(),
            Stream::TlsClient(tls) => tls.get_ref().0.peer_addr(),
        }
    }

    /// Runs the server side of a TLS handshake on a plain client stream before `deadline`.
    pub async fn accept_tls(
        self,
        config: std::sync::Arc<rustls::ServerConfig>,
        deadline: std::time::Instant,
    ) -> Result<Stream, UpgradeError> {
        let Stream::Plain(tcp) = self else {
            return Err(UpgradeError::AlreadyTls);
        };
        let accept = tokio_rustls::TlsAcceptor::from(config).accept(tcp);
        match tokio::time::timeout_at(deadline.into(), accept).await {
            Err(_) => Err(UpgradeError::Timeout),
            Ok(Err(e)) => Err(UpgradeError::Handshake(e)),
            Ok(Ok(tls)) => Ok(Stream::TlsServer(Box::new(tls))),
        }
    }
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Stream::Plain($s) => {
                let $s = Pin::new($s);
                $e
            }
            Stream::TlsServer($s) => {
                let $s = Pin::new($s.as_mut());
                $e
            }
            Stream::TlsClient($s) => {
                let $s = Pin::new($s.as_mut());
                $e
            }
        }
    };
}

impl Stream {
    /// Writes what of `bytes` the socket takes now, without waiting; how many bytes. Plain
    /// TCP only: a TLS stream takes none here (its records are written by `write_all`).
    /// Nearly every write of the data path fits in the socket's buffer: then no future is
    /// polled for it, nor tokio's cooperative budget spent ([`Stream::write_or_rest`]
    /// makes one only for what is left). Nothing to write makes no system call.
    pub fn write_now(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let Stream::Plain(tcp) = self else {
            return Ok(0);
        };
        if bytes.is_empty() {
            return Ok(0);
        }
        match tcp.try_write(bytes) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            written => written,
        }
    }

    /// Writes `bytes` at once when the socket takes all of them ([`Stream::write_now`]);
    /// otherwise gives the write of the rest, flushed (over TLS a write may leave records
    /// buffered when the socket is full), to await. No future is made for the first.
    pub fn write_or_rest<'a>(
        &'a mut self,
        bytes: &'a [u8],
    ) -> io::Result<Option<impl Future<Output = io::Result<()>> + 'a>> {
        let written = self.write_now(bytes)?;
        if written == bytes.len() {
            return Ok(None);
        }
        Ok(Some(async move {
            self.write_all(&bytes[written..]).await?;
            self.flush().await
        }))
    }

    /// Appends to `buf` what has already arrived, without waiting: polls with a waker that
    /// does nothing. Tokio answers from the readiness it has cached, so on a quiet
    /// connection this costs no system call; a peer that died has sent its FIN (or its last
    /// words and then its FIN), which shows as `Closed`.
    pub fn read_arrived(&mut self, buf: &mut BytesMut) -> Arrived {
        if let Stream::Plain(tcp) = self {
            // Without a poll: no waker is registered (nor the task's replaced), about half
            // the cost, asked before every statement of a transaction.
            let mut arrived = Arrived::Nothing;
            for _ in 0..4 {
                if buf.capacity() - buf.len() < 4096 {
                    buf.reserve(8192);
                }
                match tcp.try_read_buf(buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return arrived,
                    Ok(0) | Err(_) => return Arrived::Closed,
                    Ok(_) => arrived = Arrived::Bytes,
                }
            }
            return arrived;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut arrived = Arrived::Nothing;
        // A few reads at most: last words, then the end of the stream.
        for _ in 0..4 {
            if buf.capacity() - buf.len() < 4096 {
                buf.reserve(8192);
            }
            let read = std::pin::pin!(tokio::io::AsyncReadExt::read_buf(self, buf));
            match read.poll(&mut cx) {
                Poll::Pending => return arrived,
                Poll::Ready(Ok(0) | Err(_)) => return Arrived::Closed,
                Poll::Ready(Ok(_)) => arrived = Arrived::Bytes,
            }
        }
        arrived
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        dispatch!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        dispatch!(self, s => s.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        dispatch!(self, s => s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::TlsServer(s) => s.is_write_vectored(),
            Stream::TlsClient(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        dispatch!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        dispatch!(self, s => s.poll_shutdown(cx))
    }
}
