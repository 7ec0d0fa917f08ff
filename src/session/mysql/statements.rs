//! Prepared statements across backends: the client sees the proxy's statement ids; each
//! statement is prepared lazily on whichever backend runs it, and COM_STMT_EXECUTE is
//! rewritten with that backend's id (and with the parameter types when that backend has
//! not seen them yet, since clients send types only on the first execute).

use std::collections::HashMap;

use bytes::{BufMut, BytesMut};

use crate::protocol::mysql::packet::{HEADER_LEN, write_with};
use crate::router::Target;
use crate::sql::Statement;

/// Byte offsets in a COM_STMT_EXECUTE payload: command, id (4), flags, iterations (4).
const EXECUTE_FIXED: usize = 10;

/// One statement the client prepared.
#[derive(Debug)]
pub struct Stmt {
    /// Shared: looked up by on each connection a transaction-mode session runs it on.
    pub sql: std::sync::Arc<[u8]>,
    pub class: Statement,
    pub params: u16,
    /// The backend's own id, per target (writer, reader).
    backend_ids: [Option<u32>; 2],
    /// Whether that backend has been sent the parameter types.
    types_sent: [bool; 2],
    /// The parameter types of the client's last execute that carried them.
    types: Option<Vec<u8>>,
    /// Where it last ran: COM_STMT_FETCH / RESET go there.
    pub last: Target,
    /// SEND_LONG_DATA was used: it must stay on the writer.
    pub long_data: bool,
}

fn slot(t: Target) -> usize {
    match t {
        Target::Writer => 0,
        Target::Reader => 1,
    }
}

impl Stmt {
    pub fn backend_id(&self, t: Target) -> Option<u32> {
        self.backend_ids[slot(t)]
    }

    pub fn set_backend_id(&mut self, t: Target, id: u32) {
        self.backend_ids[slot(t)] = Some(id);
        self.types_sent[slot(t)] = false;
    }
}

#[derive(Debug, Default)]
pub struct Statements {
    /// Looked up at every execute: foldhash, not SipHash.
    by_id: HashMap<u32, Stmt, foldhash::fast::RandomState>,
    next_id: u32,
    /// The statement the client prepared last, if that prepare succeeded: MariaDB's id
    /// [`LAST_PREPARED`] names it.
    last: Option<u32>,
}

/// The statement id MariaDB (10.2+) reads as "the statement this connection prepared last":
/// a connector that pipelines a COM_STMT_PREPARE and its first COM_STMT_EXECUTE (the
/// `mariadb` connectors) executes it by this id before the prepare's answer came.
pub const LAST_PREPARED: u32 = u32::MAX;

impl Statements {
    /// Reserves the id the client will see for a statement being prepared.
    pub fn reserve_id(&mut self) -> u32 {
        // A prepare that fails leaves no last statement.
        self.last = None;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        if self.next_id == LAST_PREPARED {
            self.next_id = 1;
        }
        self.next_id
    }

    /// The statement a client's id names: [`LAST_PREPARED`] is the one prepared last.
    pub fn resolve(&self, id: u32) -> u32 {
        match (id, self.last) {
            (LAST_PREPARED, Some(last)) => last,
            _ => id,
        }
    }

    pub fn insert(
        &mut self,
        id: u32,
        sql: Vec<u8>,
        class: Statement,
        params: u16,
        target: Target,
        backend_id: u32,
    ) {
        let mut stmt = Stmt {
            sql: sql.into(),
            class,
            params,
            backend_ids: [None, None],
            types_sent: [false, false],
            types: None,
            last: target,
            long_data: false,
        };
        stmt.set_backend_id(target, backend_id);
        self.by_id.insert(id, stmt);
        self.last = Some(id);
    }

    pub fn get_mut(&mut self, id: u32) -> Option<&mut Stmt> {
        self.by_id.get_mut(&id)
    }

    pub fn remove(&mut self, id: u32) -> Option<Stmt> {
        if self.last == Some(id) {
            self.last = None;
        }
        self.by_id.remove(&id)
    }

    pub fn clear(&mut self) {
        self.last = None;
        self.by_id.clear();
    }

    /// Forgets the backend ids on `target` that are not in `held` (the connection's own
    /// statements: the others were closed).
    pub fn keep_only(&mut self, target: Target, held: &[u32]) {
        for stmt in self.by_id.values_mut() {
            if let Some(id) = stmt.backend_ids[slot(target)]
                && !held.contains(&id)
            {
                stmt.backend_ids[slot(target)] = None;
                stmt.types_sent[slot(target)] = false;
            }
        }
    }

    /// Forgets every backend id on `target` (its connection was replaced or reset).
    pub fn forget_backend(&mut self, target: Target) {
        for stmt in self.by_id.values_mut() {
            stmt.backend_ids[slot(target)] = None;
            stmt.types_sent[slot(target)] = false;
        }
    }
}

/// Writes the client's COM_STMT_EXECUTE `payload` for `target` into `out` as one packet
/// with sequence id 0: the backend's statement id, and the parameter types added when the
/// client left them out but this backend has never received them.
pub fn rewrite_execute(
    stmt: &mut Stmt,
    target: Target,
    backend_id: u32,
    payload: &[u8],
    out: &mut BytesMut,
) {
    out.clear();
    let params = usize::from(stmt.params);
    let bitmap = params.div_ceil(8);
    let flag_at = EXECUTE_FIXED + bitmap;
    let bound_flag = if params > 0 {
        payload.get(flag_at).copied()
    } else {
        None
    };
    match bound_flag {
        Some(1) => {
            let types = payload.get(flag_at + 1..flag_at + 1 + 2 * params);
            stmt.types = types.map(<[u8]>::to_vec);
            stmt.types_sent[slot(target)] = true;
        }
        Some(0) if !stmt.types_sent[slot(target)] => {
            if let Some(types) = &stmt.types {
                write_with(out, 0, |b| {
                    b.put_slice(&payload[..flag_at]);
                    b.put_u8(1);
                    b.put_slice(types);
                    b.put_slice(&payload[flag_at + 1..]);
                });
                out[HEADER_LEN + 1..HEADER_LEN + 5].copy_from_slice(&backend_id.to_le_bytes());
                stmt.types_sent[slot(target)] = true;
                return;
            }
        }
        _ => {}
    }
    write_with(out, 0, |b| b.put_slice(payload));
    if out.len() >= HEADER_LEN + 5 {
        out[HEADER_LEN + 1..HEADER_LEN + 5].copy_from_slice(&backend_id.to_le_bytes());
    }
}

/// Offset of the flags in a COM_STMT_BULK_EXECUTE payload (after the command and the id),
/// the types that follow them when the flag says so, and that flag.
const BULK_FLAGS: usize = 5;
const BULK_TYPES: usize = 7;
const BULK_SEND_TYPES: u16 = 128;

/// Writes the client's COM_STMT_BULK_EXECUTE `payload` for `target` into `out` as one packet
/// with sequence id 0, as [`rewrite_execute`] does an EXECUTE: the backend's statement id,
/// and the parameter types (the same two bytes a parameter as an EXECUTE's) added when the
/// client left them out but this backend has never received them.
pub fn rewrite_bulk(
    stmt: &mut Stmt,
    target: Target,
    backend_id: u32,
    payload: &[u8],
    out: &mut BytesMut,
) {
    out.clear();
    let types_len = 2 * usize::from(stmt.params);
    let flags = payload
        .get(BULK_FLAGS..BULK_TYPES)
        .map(|f| u16::from_le_bytes([f[0], f[1]]));
    match flags {
        Some(flags) if flags & BULK_SEND_TYPES != 0 => {
            let types = payload.get(BULK_TYPES..BULK_TYPES + types_len);
            stmt.types = types.map(<[u8]>::to_vec);
            stmt.types_sent[slot(target)] = true;
        }
        Some(flags) if !stmt.types_sent[slot(target)] => {
            if let Some(types) = &stmt.types {
                write_with(out, 0, |b| {
                    b.put_slice(&payload[..BULK_FLAGS]);
                    b.put_u16_le(flags | BULK_SEND_TYPES);
                    b.put_slice(types);
                    b.put_slice(&payload[BULK_TYPES..]);
                });
                out[HEADER_LEN + 1..HEADER_LEN + 5].copy_from_slice(&backend_id.to_le_bytes());
                stmt.types_sent[slot(target)] = true;
                return;
            }
        }
        _ => {}
    }
    rewrite_id(payload, backend_id, out);
}

/// Writes `payload` (a COM_STMT_* command naming a statement) with `backend_id` as its id.
pub fn rewrite_id(payload: &[u8], backend_id: u32, out: &mut BytesMut) {
    out.clear();
    write_with(out, 0, |b| b.put_slice(payload));
    if out.len() >= HEADER_LEN + 5 {
        out[HEADER_LEN + 1..HEADER_LEN + 5].copy_from_slice(&backend_id.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::Class;

    fn stmt(params: u16) -> Stmt {
        let mut s = Statements::default();
        let id = s.reserve_id();
        let class = Statement::of(Class::Read);
        s.insert(id, b"SELECT ?".to_vec(), class, params, Target::Reader, 77);
        s.remove(id).unwrap()
    }

    /// A COM_STMT_BULK_EXECUTE payload of statement `id` with `flags`, then `rest`.
    fn bulk(id: u32, flags: u16, rest: &[u8]) -> Vec<u8> {
        let mut p = vec![0xFA];
        p.extend_from_slice(&id.to_le_bytes());
        p.extend_from_slice(&flags.to_le_bytes());
        p.extend_from_slice(rest);
        p
    }

    #[test]
    fn a_bulk_execute_gets_the_backend_id_and_the_types_a_backend_lacks() {
        let mut s = stmt(2);
        let types = [8, 0, 253, 0];
        let rows = [0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, b'a'];
        let mut out = BytesMut::new();
        // With types: sent as they are, and kept for the other backend.
        let with_types = bulk(3, BULK_SEND_TYPES, &[&types[..], &rows[..]].concat());
        rewrite_bulk(&mut s, Target::Reader, 77, &with_types, &mut out);
        assert_eq!(
            &out[HEADER_LEN..],
            &bulk(77, BULK_SEND_TYPES, &[&types[..], &rows[..]].concat())[..]
        );
        // Without types to a backend that has them: as they are.
        rewrite_bulk(&mut s, Target::Reader, 77, &bulk(3, 0, &rows), &mut out);
        assert_eq!(&out[HEADER_LEN..], &bulk(77, 0, &rows)[..]);
        // Without types to a backend that never got them (prepared there lazily): added.
        s.set_backend_id(Target::Writer, 91);
        rewrite_bulk(&mut s, Target::Writer, 91, &bulk(3, 0, &rows), &mut out);
        assert_eq!(
            &out[HEADER_LEN..],
            &bulk(91, BULK_SEND_TYPES, &[&types[..], &rows[..]].concat())[..]
        );
        rewrite_bulk(&mut s, Target::Writer, 91, &bulk(3, 0, &rows), &mut out);
        assert_eq!(&out[HEADER_LEN..], &bulk(91, 0, &rows)[..], "sent once");
    }

    #[test]
    fn the_last_prepared_id_names_the_statement_prepared_last() {
        let mut s = Statements::default();
        let class = Statement::of(Class::Read);
        assert_eq!(s.resolve(LAST_PREPARED), LAST_PREPARED, "none prepared yet");
        let first = s.reserve_id();
        s.insert(first, b"SELECT 1".to_vec(), class, 0, Target::Reader, 7);
        assert_eq!(s.resolve(LAST_PREPARED), first);
        assert_eq!(s.resolve(first), first, "other ids as they are");
        // A prepare that fails leaves no last statement.
        let _failed = s.reserve_id();
        assert_eq!(s.resolve(LAST_PREPARED), LAST_PREPARED);
        let second = s.reserve_id();
        s.insert(second, b"SELECT 2".to_vec(), class, 0, Target::Reader, 8);
        assert_eq!(s.resolve(LAST_PREPARED), second);
        s.remove(second);
        assert_eq!(s.resolve(LAST_PREPARED), LAST_PREPARED, "closed");
    }

    fn execute(id: u32, bound: Option<&[u8]>) -> Vec<u8> {
        let mut p = vec![0x17];
        p.extend_from_slice(&id.to_le_bytes());
        p.push(0);
        p.extend_from_slice(&1u32.to_le_bytes());
        p.push(0); // null bitmap for one parameter
        match bound {
            Some(types) => {
                p.push(1);
                p.extend_from_slice(types);
            }
            None => p.push(0),
        }
        p.extend_from_slice(&5u32.to_le_bytes()); // a LONG value
        p
    }

    #[test]
    fn types_are_added_for_a_backend_that_never_saw_them() {
        let mut s = stmt(1);
        let mut out = BytesMut::new();
        // First execute on the reader carries types.
        rewrite_execute(
            &mut s,
            Target::Reader,
            77,
            &execute(1, Some(&[3, 0])),
            &mut out,
        );
        assert_eq!(&out[HEADER_LEN + 1..HEADER_LEN + 5], &77u32.to_le_bytes());
        // Later on the writer without types: the proxy adds them.
        s.set_backend_id(Target::Writer, 9);
        rewrite_execute(&mut s, Target::Writer, 9, &execute(1, None), &mut out);
        let payload = &out[HEADER_LEN..];
        assert_eq!(&payload[1..5], &9u32.to_le_bytes());
        assert_eq!(payload[EXECUTE_FIXED + 1], 1, "new-params-bound flag set");
        assert_eq!(&payload[EXECUTE_FIXED + 2..EXECUTE_FIXED + 4], &[3, 0]);
        assert_eq!(&payload[EXECUTE_FIXED + 4..], &5u32.to_le_bytes());
        // And only once.
        rewrite_execute(&mut s, Target::Writer, 9, &execute(1, None), &mut out);
        assert_eq!(out.len(), HEADER_LEN + execute(1, None).len());
    }

    #[test]
    fn short_packets_do_not_panic() {
        let mut s = stmt(3);
        let mut out = BytesMut::new();
        rewrite_execute(&mut s, Target::Writer, 1, &[0x17, 1], &mut out);
        rewrite_id(&[0x19], 1, &mut out);
    }
}
