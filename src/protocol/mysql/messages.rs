//! The server packets the proxy writes itself (ERR, OK, EOF, AuthSwitchRequest,
//! AuthMoreData) and borrowing readers for the few fields the relay needs from the
//! backend's OK, EOF and ERR packets. Everything else is relayed as bytes.

use bytes::{BufMut, BytesMut};
use mysql_common::io::ParseBuf;
use mysql_common::packets::{self, AuthSwitchRequest, ErrPacket, SqlState};
use mysql_common::proto::MySerialize;

use super::constants::{CapabilityFlags, ErrorCode, StatusFlags, header};
use super::packet::write_with;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MessageError {
    #[error("{what} packet is truncated")]
    Truncated { what: &'static str },
    #[error("expected {what} packet, got header byte {got:#04x}")]
    Header { what: &'static str, got: u8 },
}

fn truncated(what: &'static str) -> MessageError {
    MessageError::Truncated { what }
}

/// A length-encoded integer at the start of `buf`: (value, bytes it took). `None` if
/// `buf` is too short or starts with 0xFB (NULL) or 0xFF (undefined), which are not
/// integers.
pub fn lenenc_int(buf: &[u8]) -> Option<(u64, usize)> {
    let (&first, rest) = buf.split_first()?;
    let width = match first {
        0..=0xFA => return Some((u64::from(first), 1)),
        0xFC => 2,
        0xFD => 3,
        0xFE => 8,
        0xFB | 0xFF => return None,
    };
    let bytes = rest.get(..width)?;
    let mut le = [0u8; 8];
    le[..width].copy_from_slice(bytes);
    Some((u64::from_le_bytes(le), 1 + width))
}

/// A length-encoded string at the start of `buf`: (bytes, total bytes it took).
pub fn lenenc_str(buf: &[u8]) -> Option<(&[u8], usize)> {
    let (len, at) = lenenc_int(buf)?;
    let len = usize::try_from(len).ok()?;
    let end = at.checked_add(len)?;
    Some((buf.get(at..end)?, end))
}

/// Appends a length-encoded integer.
pub fn put_lenenc_int(out: &mut BytesMut, v: u64) {
    match v {
        0..=0xFA => out.put_u8(v as u8),
        0xFB..=0xFFFF => {
            out.put_u8(0xFC);
            out.put_u16_le(v as u16);
        }
        0x1_0000..=0xFF_FFFF => {
            out.put_u8(0xFD);
            out.put_slice(&(v as u32).to_le_bytes()[..3]);
        }
        _ => {
            out.put_u8(0xFE);
            out.put_u64_le(v);
        }
    }
}

/// Appends a length-encoded string.
pub fn put_lenenc_str(out: &mut BytesMut, s: &[u8]) {
    put_lenenc_int(out, s.len() as u64);
    out.put_slice(s);
}

fn u16_at(buf: &[u8], at: usize) -> Option<u16> {
    let b = buf.get(at..at + 2)?;
    Some(u16::from_le_bytes([b[0], b[1]]))
}

/// ERR packet: the single place where the proxy's own MySQL errors are built. Without
/// CLIENT_PROTOCOL_41 the SQLSTATE is left out, as the protocol requires; before the
/// client's capabilities are known (an error instead of the greeting) pass
/// `CapabilityFlags::CLIENT_PROTOCOL_41`, as MySQL does. Returns the next sequence id.
///
/// Built with mysql_common's `ErrPacket` (one small allocation): errors are rare, so
/// the crate's encoding is worth more here than the copy.
pub fn err_packet(
    out: &mut BytesMut,
    seq: u8,
    capabilities: CapabilityFlags,
    error: ErrorCode,
    message: &str,
) -> u8 {
    let state = capabilities
        .contains(CapabilityFlags::CLIENT_PROTOCOL_41)
        .then(|| SqlState::new(error.sqlstate));
    let err = ErrPacket::Error(packets::ServerError::new(
        error.code,
        state,
        message.as_bytes(),
    ));
    let mut payload = Vec::with_capacity(9 + message.len());
    err.serialize(&mut payload);
    write_with(out, seq, |b| b.put_slice(&payload))
}

/// The fields of an OK packet, as the proxy writes it or reads it from a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OkPacket<'a> {
    pub affected_rows: u64,
    pub last_insert_id: u64,
    pub status: StatusFlags,
    pub warnings: u16,
    /// Human-readable info ("Rows matched: …"); empty when absent.
    pub info: &'a [u8],
    /// Session-state-change data (CLIENT_SESSION_TRACK with SERVER_SESSION_STATE_CHANGED),
    /// kept raw; empty when absent.
    pub session_state: &'a [u8],
}

/// Writes an OK packet (header 0x00; `0xFE` when `as_terminator` is set, which is how a
/// result set ends under CLIENT_DEPRECATE_EOF). Written by hand: it is a handful of bytes
/// and the relay writes it on hot paths (held-then-released statements). Session state is
/// never written: the proxy does not announce state changes itself.
pub fn ok_packet(out: &mut BytesMut, seq: u8, ok: &OkPacket<'_>, as_terminator: bool) -> u8 {
    write_with(out, seq, |b| {
        b.put_u8(if as_terminator {
            header::EOF
        } else {
            header::OK
        });
        put_lenenc_int(b, ok.affected_rows);
        put_lenenc_int(b, ok.last_insert_id);
        b.put_u16_le(ok.status.bits() & !StatusFlags::SERVER_SESSION_STATE_CHANGED.bits());
        b.put_u16_le(ok.warnings);
        // length-encoded with or without CLIENT_SESSION_TRACK, as MySQL and MariaDB
        // really send it (the manual's string<EOF> is not what servers write)
        if !ok.info.is_empty() {
            put_lenenc_str(b, ok.info);
        }
    })
}

/// Reads an OK packet (header 0x00, or 0xFE when it ends a result set under
/// CLIENT_DEPRECATE_EOF). Assumes CLIENT_PROTOCOL_41, which the proxy requires.
pub fn parse_ok(
    payload: &[u8],
    capabilities: CapabilityFlags,
) -> Result<OkPacket<'_>, MessageError> {
    const WHAT: &str = "OK";
    let (&first, _) = payload.split_first().ok_or(truncated(WHAT))?;
    if first != header::OK && first != header::EOF {
        return Err(MessageError::Header {
            what: WHAT,
            got: first,
        });
    }
    let mut at = 1;
    let (affected_rows, n) = lenenc_int(&payload[at..]).ok_or(truncated(WHAT))?;
    at += n;
    let (last_insert_id, n) = lenenc_int(&payload[at..]).ok_or(truncated(WHAT))?;
    at += n;
    let status = StatusFlags::from_bits_retain(u16_at(payload, at).ok_or(truncated(WHAT))?);
    let warnings = u16_at(payload, at + 2).ok_or(truncated(WHAT))?;
    at += 4;
    let rest = &payload[at..];
    let (info, session_state) = if capabilities.contains(CapabilityFlags::CLIENT_SESSION_TRACK) {
        if rest.is_empty() {
            (&rest[..0], &rest[..0])
        } else {
            let (info, n) = lenenc_str(rest).ok_or(truncated(WHAT))?;
            let after = &rest[n..];
            let state = if status.contains(StatusFlags::SERVER_SESSION_STATE_CHANGED) {
                lenenc_str(after).ok_or(truncated(WHAT))?.0
            } else {
                &after[..0]
            };
            (info, state)
        }
    } else {
        // servers write a length-encoded string here; fall back to the manual's
        // string<EOF> when the bytes do not fit that
        match lenenc_str(rest) {
            Some((info, n)) if n == rest.len() => (info, &rest[..0]),
            _ => (rest, &rest[..0]),
        }
    };
    Ok(OkPacket {
        affected_rows,
        last_insert_id,
        status,
        warnings,
        info,
        session_state,
    })
}

/// The fields of a (pre-CLIENT_DEPRECATE_EOF) EOF packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EofPacket {
    pub warnings: u16,
    pub status: StatusFlags,
}

/// Writes an EOF packet (only for clients without CLIENT_DEPRECATE_EOF).
pub fn eof_packet(out: &mut BytesMut, seq: u8, eof: EofPacket) -> u8 {
    write_with(out, seq, |b| {
        b.put_u8(header::EOF);
        b.put_u16_le(eof.warnings);
        b.put_u16_le(eof.status.bits());
    })
}

/// Whether `payload` is an EOF packet: header 0xFE and shorter than 9 bytes (a row that
/// starts with 0xFE is a length-encoded string of 2^24 bytes or more).
pub fn is_eof(payload: &[u8]) -> bool {
    payload.first() == Some(&header::EOF) && payload.len() < 9
}

/// Reads an EOF packet.
pub fn parse_eof(payload: &[u8]) -> Result<EofPacket, MessageError> {
    const WHAT: &str = "EOF";
    let (&first, _) = payload.split_first().ok_or(truncated(WHAT))?;
    if !is_eof(payload) {
        return Err(MessageError::Header {
            what: WHAT,
            got: first,
        });
    }
    Ok(EofPacket {
        warnings: u16_at(payload, 1).ok_or(truncated(WHAT))?,
        status: StatusFlags::from_bits_retain(u16_at(payload, 3).ok_or(truncated(WHAT))?),
    })
}

/// Whether `payload` ends a result set (or a column-definition list): an EOF packet, or
/// under CLIENT_DEPRECATE_EOF an OK packet with the 0xFE header. Under CLIENT_DEPRECATE_EOF
/// the OK may be longer than 9 bytes, so the row/terminator rule is the one MySQL's own
/// client uses: 0xFE and shorter than a full 0xFFFFFF physical packet. Feed either the
/// whole logical payload or its first physical piece; both give the same answer.
pub fn is_terminator(payload: &[u8], deprecate_eof: bool) -> bool {
    let limit = if deprecate_eof {
        super::packet::MAX_PHYSICAL_PAYLOAD
    } else {
        9
    };
    payload.first() == Some(&header::EOF) && payload.len() < limit
}

/// Status flags of a terminator packet (see [`is_terminator`]).
pub fn terminator_status(payload: &[u8], deprecate_eof: bool) -> Result<StatusFlags, MessageError> {
    if deprecate_eof {
        // only the status is read, so the capabilities do not matter here
        Ok(parse_ok(payload, CapabilityFlags::empty())?.status)
    } else {
        Ok(parse_eof(payload)?.status)
    }
}

/// The fields of an ERR packet, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrView<'a> {
    pub code: u16,
    pub sqlstate: Option<[u8; 5]>,
    pub message: &'a [u8],
}

impl ErrView<'_> {
    /// MariaDB's progress report travels in an ERR packet with code 0xFFFF.
    pub fn is_progress_report(&self) -> bool {
        self.code == 0xFFFF
    }
}

/// Reads an ERR packet. The SQLSTATE is taken when its `#` marker is there, as libmysql
/// does, so errors sent before the capabilities were agreed parse too.
pub fn parse_err(payload: &[u8]) -> Result<ErrView<'_>, MessageError> {
    const WHAT: &str = "ERR";
    let (&first, _) = payload.split_first().ok_or(truncated(WHAT))?;
    if first != header::ERR {
        return Err(MessageError::Header {
            what: WHAT,
            got: first,
        });
    }
    let code = u16_at(payload, 1).ok_or(truncated(WHAT))?;
    let rest = &payload[3..];
    match rest {
        [b'#', s0, s1, s2, s3, s4, message @ ..] => Ok(ErrView {
            code,
            sqlstate: Some([*s0, *s1, *s2, *s3, *s4]),
            message,
        }),
        message => Ok(ErrView {
            code,
            sqlstate: None,
            message,
        }),
    }
}

/// AuthSwitchRequest asking the client to answer `plugin` with `data` (for the
/// password plugins: the 20-byte scramble, written NUL-terminated as MySQL does).
pub fn auth_switch_request(out: &mut BytesMut, seq: u8, plugin: &str, data: &[u8]) -> u8 {
    let mut with_nul = Vec::with_capacity(data.len() + 1);
    with_nul.extend_from_slice(data);
    with_nul.push(0);
    let mut payload = Vec::with_capacity(plugin.len() + with_nul.len() + 2);
    AuthSwitchRequest::new(plugin.as_bytes(), with_nul).serialize(&mut payload);
    write_with(out, seq, |b| b.put_slice(&payload))
}

/// Reads an AuthSwitchRequest: (plugin name, plugin data without the trailing NUL).
pub fn parse_auth_switch_request(payload: &[u8]) -> Result<(&[u8], &[u8]), MessageError> {
    const WHAT: &str = "AuthSwitchRequest";
    let (&first, rest) = payload.split_first().ok_or(truncated(WHAT))?;
    if first != header::AUTH_SWITCH || rest.is_empty() {
        // a lone 0xFE is the pre-4.1 "old auth switch", which the proxy does not speak
        return Err(MessageError::Header {
            what: WHAT,
            got: first,
        });
    }
    let req: AuthSwitchRequest<'_> = ParseBuf(payload).parse(()).map_err(|_| truncated(WHAT))?;
    let name_len = rest.iter().position(|&b| b == 0).ok_or(truncated(WHAT))?;
    let plugin = &rest[..name_len];
    // the crate strips the trailing NUL of the data for us
    let data_len = req.plugin_data().len();
    let data_at = 1 + name_len + 1;
    Ok((plugin, &payload[data_at..data_at + data_len]))
}

/// AuthMoreData: 0x01 followed by `data` (for caching_sha2_password one status byte).
pub fn auth_more_data(out: &mut BytesMut, seq: u8, data: &[u8]) -> u8 {
    write_with(out, seq, |b| {
        b.put_u8(header::AUTH_MORE_DATA);
        b.put_slice(data);
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::mysql::constants::{ER_ACCESS_DENIED_ERROR, ER_BAD_DB_ERROR};
    use crate::protocol::mysql::packet::packet;
    use mysql_common::packets::{CommonOkPacket, OkPacketDeserializer, ResultSetTerminator};

    fn payload_of(out: &BytesMut) -> &[u8] {
        packet(out, usize::MAX).unwrap().unwrap().1
    }

    #[test]
    fn lenenc_int_table() {
        type Case<'a> = (&'a [u8], Option<(u64, usize)>);
        let cases: &[Case<'_>] = &[
            (b"", None),
            (b"\x00", Some((0, 1))),
            (b"\xfa", Some((250, 1))),
            (b"\xfb", None),
            (b"\xff", None),
            (b"\xfc\xfb\x00", Some((251, 3))),
            (b"\xfc\xff", None),
            (b"\xfd\x01\x02\x03", Some((0x030201, 4))),
            (
                b"\xfe\x01\0\0\0\0\0\0\x80",
                Some((0x8000_0000_0000_0001, 9)),
            ),
            (b"\xfe\x01\0\0\0\0\0\0", None),
        ];
        for (buf, want) in cases {
            assert_eq!(lenenc_int(buf), *want, "{buf:x?}");
        }
        for v in [
            0,
            250,
            251,
            0xFFFF,
            0x1_0000,
            0xFF_FFFF,
            0x100_0000,
            u64::MAX,
        ] {
            let mut out = BytesMut::new();
            put_lenenc_int(&mut out, v);
            assert_eq!(lenenc_int(&out), Some((v, out.len())));
        }
        assert_eq!(lenenc_str(b"\x03abcd"), Some((&b"abc"[..], 4)));
        assert_eq!(lenenc_str(b"\x05abc"), None);
    }

    #[test]
    fn err_packet_with_and_without_protocol_41() {
        let mut out = BytesMut::new();
        let next = err_packet(
            &mut out,
            2,
            CapabilityFlags::CLIENT_PROTOCOL_41,
            ER_ACCESS_DENIED_ERROR,
            "Access denied",
        );
        assert_eq!(next, 3);
        assert_eq!(&out[..4], b"\x16\0\0\x02");
        assert_eq!(payload_of(&out), b"\xff\x15\x04#28000Access denied");
        let e = parse_err(payload_of(&out)).unwrap();
        assert_eq!(
            (e.code, e.sqlstate, e.message),
            (1045, Some(*b"28000"), &b"Access denied"[..])
        );

        let mut out = BytesMut::new();
        err_packet(&mut out, 0, CapabilityFlags::empty(), ER_BAD_DB_ERROR, "no");
        assert_eq!(payload_of(&out), b"\xff\x19\x04no");
        assert_eq!(parse_err(payload_of(&out)).unwrap().sqlstate, None);
        assert!(parse_err(b"\xff\x01").is_err());
        assert!(parse_err(b"\x00\x01\x02").is_err());
    }

    #[test]
    fn ok_packet_round_trips_and_matches_mysql_common() {
        let caps = CapabilityFlags::CLIENT_PROTOCOL_41;
        let ok = OkPacket {
            affected_rows: 300,
            last_insert_id: 7,
            status: StatusFlags::SERVER_STATUS_AUTOCOMMIT | StatusFlags::SERVER_STATUS_IN_TRANS,
            warnings: 1,
            info: b"Rows matched: 1",
            session_state: b"",
        };
        for session_track in [false, true] {
            let caps = if session_track {
                caps | CapabilityFlags::CLIENT_SESSION_TRACK
            } else {
                caps
            };
            for terminator in [false, true] {
                let mut out = BytesMut::new();
                ok_packet(&mut out, 1, &ok, terminator);
                let payload = payload_of(&out);
                assert_eq!(parse_ok(payload, caps).unwrap(), ok);
                let theirs = if terminator {
                    assert!(is_terminator(payload, true));
                    assert_eq!(terminator_status(payload, true), Ok(ok.status));
                    ParseBuf(payload)
                        .parse::<OkPacketDeserializer<ResultSetTerminator>>(caps)
                        .unwrap()
                        .into_inner()
                } else {
                    let theirs = ParseBuf(payload)
                        .parse::<OkPacketDeserializer<CommonOkPacket>>(caps)
                        .unwrap()
                        .into_inner();
                    assert_eq!(theirs.affected_rows(), 300);
                    assert_eq!(theirs.last_insert_id(), Some(7));
                    theirs
                };
                assert_eq!(theirs.status_flags(), ok.status);
                assert_eq!(theirs.warnings(), 1);
                assert_eq!(theirs.info_ref(), Some(&b"Rows matched: 1"[..]));
            }
        }
    }

    #[test]
    fn ok_packet_readers_reject_garbage() {
        let caps = CapabilityFlags::CLIENT_PROTOCOL_41 | CapabilityFlags::CLIENT_SESSION_TRACK;
        assert!(parse_ok(b"", caps).is_err());
        assert!(parse_ok(b"\x00\x00", caps).is_err());
        assert!(parse_ok(b"\x00\x00\x00\x02\x00", caps).is_err());
        assert!(parse_ok(b"\xff\x00\x00\x02\x00\x00\x00", caps).is_err());
        assert_eq!(
            parse_ok(b"\x00\x00\x00\x02\x00\x00\x00", caps)
                .unwrap()
                .status,
            StatusFlags::SERVER_STATUS_AUTOCOMMIT
        );
        // SESSION_STATE_CHANGED with a truncated state block
        assert!(parse_ok(b"\x00\x00\x00\x00\x40\x00\x00\x00\x05ab", caps).is_err());
        let ok = parse_ok(b"\x00\x01\x00\x00\x40\x00\x00\x00\x02ab", caps).unwrap();
        assert_eq!(ok.session_state, b"ab");
        // without SESSION_TRACK: info as servers send it (lenenc), or as the manual says (EOF)
        let p41 = CapabilityFlags::CLIENT_PROTOCOL_41;
        assert_eq!(
            parse_ok(b"\x00\x00\x00\x02\x00\x00\x00\x0aRecords: 1", p41)
                .unwrap()
                .info,
            b"Records: 1"
        );
        assert_eq!(
            parse_ok(b"\x00\x00\x00\x02\x00\x00\x00Records: 1", p41)
                .unwrap()
                .info,
            b"Records: 1"
        );
    }

    #[test]
    fn eof_and_terminator_rules() {
        let mut out = BytesMut::new();
        let eof = EofPacket {
            warnings: 2,
            status: StatusFlags::SERVER_MORE_RESULTS_EXISTS,
        };
        eof_packet(&mut out, 5, eof);
        let payload = payload_of(&out);
        assert_eq!(payload, b"\xfe\x02\x00\x08\x00");
        assert_eq!(parse_eof(payload), Ok(eof));
        assert!(is_eof(payload));
        assert!(is_terminator(payload, false));
        // a text row whose first value is a lenenc string of >= 2^24 bytes starts with 0xFE
        let row_start = vec![0xFE; 9];
        assert!(!is_eof(&row_start));
        assert!(!is_terminator(&row_start, false));
        let big_row_first_piece = vec![0xFE; super::super::packet::MAX_PHYSICAL_PAYLOAD];
        assert!(!is_terminator(&big_row_first_piece, true));
        // under DEPRECATE_EOF a long OK (with info) still terminates
        let long_ok = [&b"\xfe\x00\x00\x02\x00\x00\x00"[..], &[b'x'; 40]].concat();
        assert!(is_terminator(&long_ok, true));
        assert!(!is_terminator(&long_ok, false));
        assert!(parse_eof(b"\xfe\x00").is_err());
    }

    #[test]
    fn auth_packets() {
        let mut out = BytesMut::new();
        auth_switch_request(&mut out, 2, "mysql_native_password", &[b'a'; 20]);
        let payload = payload_of(&out);
        assert_eq!(payload.len(), 1 + 21 + 1 + 20 + 1);
        let (plugin, data) = parse_auth_switch_request(payload).unwrap();
        assert_eq!(
            (plugin, data),
            (&b"mysql_native_password"[..], &[b'a'; 20][..])
        );
        assert!(parse_auth_switch_request(b"\xfe").is_err());
        assert!(parse_auth_switch_request(b"\xfeabc").is_err());

        let mut out = BytesMut::new();
        assert_eq!(auth_more_data(&mut out, 3, &[0x03]), 4);
        assert_eq!(&out[..], b"\x02\0\0\x03\x01\x03");
    }
}
