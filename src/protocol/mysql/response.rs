//! The relay's bookkeeping for one command: fed the server's packets one at a time, it
//! says when the response is complete and which status flags ended it, so the session
//! knows when the backend is free again and whether a transaction is open. It reads only
//! first bytes, lengths and the status word of OK/EOF packets; rows are never decoded.
//!
//! Shapes (CLIENT_PROTOCOL_41; "EOF" is left out under CLIENT_DEPRECATE_EOF, and the final
//! EOF becomes an OK packet with the 0xFE header):
//! - OK | ERR
//! - result set: column count, column definitions, EOF, rows, EOF — repeated while the
//!   status says SERVER_MORE_RESULTS_EXISTS; an ERR ends the whole response
//! - LOCAL INFILE: 0xFB file name; the client sends the file and an empty packet; then OK | ERR
//! - COM_STMT_PREPARE: prepare-OK, parameter definitions (+ EOF), column definitions (+ EOF)
//! - COM_STMT_EXECUTE with a cursor: column count, column definitions, EOF carrying
//!   SERVER_STATUS_CURSOR_EXISTS, no rows (they come through COM_STMT_FETCH)
//! - COM_STMT_FETCH: rows, EOF
//! - COM_FIELD_LIST: column definitions, EOF
//! - COM_STATISTICS: one string packet
//! - COM_QUIT, COM_STMT_CLOSE, COM_STMT_SEND_LONG_DATA: nothing

use super::constants::command::{
    COM_FIELD_LIST, COM_QUERY, COM_STATISTICS, COM_STMT_EXECUTE, COM_STMT_FETCH, COM_STMT_PREPARE,
    expects_response,
};
use super::constants::{StatusFlags, header};
use super::messages::{MessageError, is_terminator, lenenc_int, parse_err, terminator_status};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResponseError {
    #[error("server sent an empty packet while {state}")]
    Empty { state: &'static str },
    #[error("server sent a packet with header {header:#04x}, unexpected while {state}")]
    Unexpected { header: u8, state: &'static str },
    #[error("server sent a packet after the response to command {command:#04x} was complete")]
    AfterDone { command: u8 },
    #[error("malformed packet in the response to command {command:#04x}")]
    Malformed {
        command: u8,
        #[source]
        source: MessageError,
    },
}

/// What the caller does after feeding one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Relay it; more packets of this response follow.
    More,
    /// Relay it (the 0xFB request); then relay the client's packets to the server until
    /// and including the client's empty packet, and go on feeding the server's packets.
    LocalInfile,
    /// Relay it; the response is complete. `status` is the status word of the final OK
    /// or EOF, or the latest one seen in this response when the last packet had none
    /// (prepare-OK, COM_STATISTICS); `None` if no packet of the response carried one.
    Done { status: Option<StatusFlags> },
    /// Relay it; an ERR ended the response. `status` as for `Done`, from before the error.
    Failed {
        code: u16,
        status: Option<StatusFlags>,
    },
}

/// What a COM_STMT_PREPARE response said about the statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prepared {
    pub statement_id: u32,
    pub num_columns: u16,
    pub num_params: u16,
    pub warnings: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The first packet of a result (or of the next result of a multi-result response).
    First,
    /// Column definitions of a result set still to come.
    Columns {
        left: u64,
    },
    /// The EOF after the column definitions.
    ColumnsEof,
    /// Rows until the terminator.
    Rows,
    /// COM_FIELD_LIST: column definitions until the terminator.
    FieldList,
    /// COM_STATISTICS: one string packet.
    Statistics,
    /// COM_STMT_PREPARE: the prepare-OK.
    PrepareOk,
    /// COM_STMT_PREPARE: parameter definitions, then `columns` column definitions.
    PrepareParams {
        left: u16,
        columns: u16,
    },
    PrepareParamsEof {
        columns: u16,
    },
    PrepareColumns {
        left: u16,
    },
    PrepareColumnsEof,
    Done,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::First => "awaiting the first packet of a result",
            State::Columns { .. } => "reading column definitions",
            State::ColumnsEof => "awaiting the EOF after column definitions",
            State::Rows => "reading rows",
            State::FieldList => "reading a field list",
            State::Statistics => "awaiting statistics",
            State::PrepareOk => "awaiting the prepare OK",
            State::PrepareParams { .. } => "reading parameter definitions",
            State::PrepareParamsEof { .. } => "awaiting the EOF after parameter definitions",
            State::PrepareColumns { .. } => "reading prepared column definitions",
            State::PrepareColumnsEof => "awaiting the EOF after prepared column definitions",
            State::Done => "done",
        }
    }
}

/// One command's response, as it streams by.
#[derive(Debug, Clone)]
pub struct Response {
    command: u8,
    deprecate_eof: bool,
    state: State,
    status: Option<StatusFlags>,
    prepared: Option<Prepared>,
}

impl Response {
    /// `command` is the first byte of the client's command packet; `deprecate_eof` whether
    /// CLIENT_DEPRECATE_EOF was agreed with the backend. A command without a response
    /// starts complete. COM_CHANGE_USER's response is an authentication exchange: handle
    /// it with the auth module, not here.
    pub fn new(command: u8, deprecate_eof: bool) -> Response {
        let state = match command {
            c if !expects_response(c) => State::Done,
            COM_STMT_PREPARE => State::PrepareOk,
            COM_STMT_FETCH => State::Rows,
            COM_FIELD_LIST => State::FieldList,
            COM_STATISTICS => State::Statistics,
            _ => State::First,
        };
        Response {
            command,
            deprecate_eof,
            state,
            status: None,
            prepared: None,
        }
    }

    /// Whether the response is complete (at once for commands without one).
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The statement a COM_STMT_PREPARE response created, once its prepare-OK was fed.
    pub fn prepared(&self) -> Option<Prepared> {
        self.prepared
    }

    /// The latest status flags seen in this response.
    pub fn status(&self) -> Option<StatusFlags> {
        self.status
    }

    /// Feeds one server packet: the whole logical payload, or for a packet split at
    /// 16 MiB only its first physical piece (the rest is relayed without feeding).
    pub fn feed(&mut self, payload: &[u8]) -> Result<Step, ResponseError> {
        let state = self.state;
        let Some(&first) = payload.first() else {
            return Err(if state == State::Done {
                ResponseError::AfterDone {
                    command: self.command,
                }
            } else {
                ResponseError::Empty {
                    state: state.name(),
                }
            });
        };
        if first == header::ERR && state != State::Done {
            return self.error(payload);
        }
        let unexpected = ResponseError::Unexpected {
            header: first,
            state: state.name(),
        };
        match state {
            State::Done => Err(ResponseError::AfterDone {
                command: self.command,
            }),
            State::First => match first {
                header::OK => {
                    let status = self.terminator(payload, true)?;
                    Ok(self.end_of_result(status))
                }
                // COM_SET_OPTION and COM_DEBUG answer with an EOF (an OK under DEPRECATE_EOF)
                header::EOF if is_terminator(payload, self.deprecate_eof) => {
                    let status = self.terminator(payload, self.deprecate_eof)?;
                    Ok(self.end_of_result(status))
                }
                header::LOCAL_INFILE if self.command == COM_QUERY => {
                    // the server's OK | ERR for the load comes after the client's data
                    Ok(Step::LocalInfile)
                }
                header::LOCAL_INFILE | header::EOF => Err(unexpected),
                _ => {
                    let columns = match lenenc_int(payload) {
                        Some((n, _)) if n > 0 => n,
                        _ => return Err(unexpected),
                    };
                    self.state = State::Columns { left: columns };
                    Ok(Step::More)
                }
            },
            State::Columns { left } => {
                self.state = match left {
                    1 if self.deprecate_eof => State::Rows,
                    1 => State::ColumnsEof,
                    n => State::Columns { left: n - 1 },
                };
                Ok(Step::More)
            }
            State::ColumnsEof => {
                if !is_terminator(payload, false) {
                    return Err(unexpected);
                }
                let status = self.terminator(payload, false)?;
                if self.command == COM_STMT_EXECUTE
                    && status.contains(StatusFlags::SERVER_STATUS_CURSOR_EXISTS)
                {
                    // a cursor was opened: no rows now, they come through COM_STMT_FETCH
                    return Ok(self.end_of_result(status));
                }
                self.state = State::Rows;
                Ok(Step::More)
            }
            State::Rows | State::FieldList => {
                if is_terminator(payload, self.deprecate_eof) {
                    let status = self.terminator(payload, self.deprecate_eof)?;
                    Ok(self.end_of_result(status))
                } else {
                    Ok(Step::More)
                }
            }
            State::Statistics => {
                self.state = State::Done;
                Ok(Step::Done {
                    status: self.status,
                })
            }
            State::PrepareOk => self.prepare_ok(payload, unexpected),
            State::PrepareParams { left, columns } => {
                self.state = match (left, columns) {
                    (1, _) if !self.deprecate_eof => State::PrepareParamsEof { columns },
                    (1, 0) => State::Done,
                    (1, c) => State::PrepareColumns { left: c },
                    (n, c) => State::PrepareParams {
                        left: n - 1,
                        columns: c,
                    },
                };
                Ok(self.step_for_state())
            }
            State::PrepareParamsEof { columns } => {
                if !is_terminator(payload, false) {
                    return Err(unexpected);
                }
                self.status = Some(self.terminator(payload, false)?);
                self.state = if columns == 0 {
                    State::Done
                } else {
                    State::PrepareColumns { left: columns }
                };
                Ok(self.step_for_state())
            }
            State::PrepareColumns { left } => {
                self.state = match left {
                    1 if self.deprecate_eof => State::Done,
                    1 => State::PrepareColumnsEof,
                    n => State::PrepareColumns { left: n - 1 },
                };
                Ok(self.step_for_state())
            }
            State::PrepareColumnsEof => {
                if !is_terminator(payload, false) {
                    return Err(unexpected);
                }
                self.status = Some(self.terminator(payload, false)?);
                self.state = State::Done;
                Ok(self.step_for_state())
            }
        }
    }

    /// An ERR packet: ends the response, except MariaDB's progress reports (code 0xFFFF),
    /// which only come when the client asked for them and do not end anything.
    fn error(&mut self, payload: &[u8]) -> Result<Step, ResponseError> {
        let err = parse_err(payload).map_err(|source| ResponseError::Malformed {
            command: self.command,
            source,
        })?;
        if err.is_progress_report() {
            return Ok(Step::More);
        }
        self.state = State::Done;
        Ok(Step::Failed {
            code: err.code,
            status: self.status,
        })
    }

    /// Status of an OK (`ok_format`) or EOF packet.
    fn terminator(
        &mut self,
        payload: &[u8],
        ok_format: bool,
    ) -> Result<StatusFlags, ResponseError> {
        let status =
            terminator_status(payload, ok_format).map_err(|source| ResponseError::Malformed {
                command: self.command,
                source,
            })?;
        self.status = Some(status);
        Ok(status)
    }

    /// A result ended with `status`: another follows if the server says so.
    fn end_of_result(&mut self, status: StatusFlags) -> Step {
        if status.contains(StatusFlags::SERVER_MORE_RESULTS_EXISTS) {
            self.state = State::First;
            Step::More
        } else {
            self.state = State::Done;
            Step::Done {
                status: Some(status),
            }
        }
    }

    fn step_for_state(&self) -> Step {
        if self.state == State::Done {
            Step::Done {
                status: self.status,
            }
        } else {
            Step::More
        }
    }

    /// COM_STMT_PREPARE OK: 0x00, statement id (4), columns (2), params (2), filler (1),
    /// warnings (2).
    fn prepare_ok(
        &mut self,
        payload: &[u8],
        unexpected: ResponseError,
    ) -> Result<Step, ResponseError> {
        let fields = match payload.split_first() {
            Some((&header::OK, fields)) if fields.len() >= 8 => fields,
            _ => return Err(unexpected),
        };
        let u16_at = |at: usize| u16::from_le_bytes([fields[at], fields[at + 1]]);
        let prepared = Prepared {
            statement_id: u32::from_le_bytes([fields[0], fields[1], fields[2], fields[3]]),
            num_columns: u16_at(4),
            num_params: u16_at(6),
            warnings: if fields.len() >= 11 { u16_at(9) } else { 0 },
        };
        self.prepared = Some(prepared);
        self.state = match (prepared.num_params, prepared.num_columns) {
            (0, 0) => State::Done,
            (0, c) => State::PrepareColumns { left: c },
            (p, c) => State::PrepareParams {
                left: p,
                columns: c,
            },
        };
        Ok(self.step_for_state())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::mysql::constants::command::*;

    const AC: StatusFlags = StatusFlags::SERVER_STATUS_AUTOCOMMIT;
    const MORE: StatusFlags = StatusFlags::SERVER_MORE_RESULTS_EXISTS;
    const IN_TRANS: StatusFlags = StatusFlags::SERVER_STATUS_IN_TRANS;
    const CURSOR: StatusFlags = StatusFlags::SERVER_STATUS_CURSOR_EXISTS;
    const LAST_ROW: StatusFlags = StatusFlags::SERVER_STATUS_LAST_ROW_SENT;

    fn ok(status: StatusFlags) -> Vec<u8> {
        let s = status.bits().to_le_bytes();
        vec![0x00, 0x00, 0x00, s[0], s[1], 0x00, 0x00]
    }
    fn ok_fe(status: StatusFlags) -> Vec<u8> {
        let mut p = ok(status);
        p[0] = 0xFE;
        p
    }
    fn eof(status: StatusFlags) -> Vec<u8> {
        let s = status.bits().to_le_bytes();
        vec![0xFE, 0x00, 0x00, s[0], s[1]]
    }
    /// The terminator of a result set in either mode.
    fn end(deprecate_eof: bool, status: StatusFlags) -> Vec<u8> {
        if deprecate_eof {
            ok_fe(status)
        } else {
            eof(status)
        }
    }
    fn err(code: u16) -> Vec<u8> {
        [&[0xFF][..], &code.to_le_bytes(), b"#42000oops"].concat()
    }
    fn count(n: u8) -> Vec<u8> {
        vec![n]
    }
    fn col() -> Vec<u8> {
        b"\x03def\x04test\x01t\x01t\x01a\x01a\x0c\x3f\x00\x0b\x00\x00\x00\x03\x00\x00\x00\x00\x00"
            .to_vec()
    }
    fn text_row() -> Vec<u8> {
        b"\x0242".to_vec()
    }
    fn bin_row() -> Vec<u8> {
        vec![0x00, 0x00, 0x2a, 0x00, 0x00, 0x00]
    }
    fn prepare_ok(id: u32, columns: u16, params: u16) -> Vec<u8> {
        [
            &[0x00][..],
            &id.to_le_bytes(),
            &columns.to_le_bytes(),
            &params.to_le_bytes(),
            &[0x00, 0x00, 0x00],
        ]
        .concat()
    }

    const MORE_STEP: Step = Step::More;
    fn done(status: StatusFlags) -> Step {
        Step::Done {
            status: Some(status),
        }
    }

    /// Feeds `packets` and checks every step; the last one must complete the response.
    fn run(
        name: &str,
        command: u8,
        deprecate_eof: bool,
        packets: &[Vec<u8>],
        want: &[Step],
    ) -> Response {
        let mut r = Response::new(command, deprecate_eof);
        assert_eq!(packets.len(), want.len(), "{name}: table row");
        for (i, (p, w)) in packets.iter().zip(want).enumerate() {
            assert!(!r.is_done(), "{name}: done before packet {i}");
            assert_eq!(r.feed(p).as_ref(), Ok(w), "{name}: packet {i}");
        }
        assert!(r.is_done(), "{name}: not done after the last packet");
        assert!(
            matches!(r.feed(&ok(AC)), Err(ResponseError::AfterDone { .. })),
            "{name}"
        );
        r
    }

    #[test]
    fn shapes_in_both_eof_modes() {
        for d in [false, true] {
            let mut rs = vec![count(2), col(), col()];
            if !d {
                rs.push(eof(AC));
            }
            rs.extend([
                text_row(),
                vec![0x00, 0xFB],
                vec![0xFB, 0x01, b'x'],
                end(d, AC),
            ]);
            let mut rs_steps = vec![MORE_STEP; rs.len() - 1];
            rs_steps.push(done(AC));
            let cols_end = |v: &mut Vec<Vec<u8>>| {
                if !d {
                    v.push(eof(AC));
                }
            };

            run("ok", COM_QUERY, d, &[ok(AC)], &[done(AC)]);
            run(
                "err",
                COM_QUERY,
                d,
                &[err(1064)],
                &[Step::Failed {
                    code: 1064,
                    status: None,
                }],
            );
            run("result set", COM_QUERY, d, &rs, &rs_steps);

            // multi-statement: result set, OK, result set
            let mut multi = vec![count(1), col()];
            cols_end(&mut multi);
            multi.extend([
                text_row(),
                end(d, AC | MORE),
                ok(AC | MORE | IN_TRANS),
                count(1),
                col(),
            ]);
            cols_end(&mut multi);
            multi.extend([text_row(), end(d, AC | IN_TRANS)]);
            let mut steps = vec![MORE_STEP; multi.len() - 1];
            steps.push(done(AC | IN_TRANS));
            run("multi", COM_QUERY, d, &multi, &steps);

            // an error after a first result ends everything, keeping the last status
            let mut failed = vec![count(1), col()];
            cols_end(&mut failed);
            failed.extend([text_row(), end(d, AC | MORE | IN_TRANS), err(1146)]);
            let mut steps = vec![MORE_STEP; failed.len() - 1];
            steps.push(Step::Failed {
                code: 1146,
                status: Some(AC | MORE | IN_TRANS),
            });
            run("multi then error", COM_QUERY, d, &failed, &steps);

            // an error in the middle of the rows (e.g. the query was killed)
            let mut killed = vec![count(1), col()];
            cols_end(&mut killed);
            killed.extend([text_row(), err(1317)]);
            let mut steps = vec![MORE_STEP; killed.len() - 1];
            steps.push(Step::Failed {
                code: 1317,
                status: if d { None } else { Some(AC) },
            });
            run("killed mid-rows", COM_QUERY, d, &killed, &steps);

            run(
                "local infile",
                COM_QUERY,
                d,
                &[b"\xfb/tmp/data.csv".to_vec(), ok(AC)],
                &[Step::LocalInfile, done(AC)],
            );
            run(
                "local infile refused",
                COM_QUERY,
                d,
                &[b"\xfbx".to_vec(), err(1148)],
                &[
                    Step::LocalInfile,
                    Step::Failed {
                        code: 1148,
                        status: None,
                    },
                ],
            );

            // binary result set
            let mut exec = vec![count(1), col()];
            cols_end(&mut exec);
            exec.extend([bin_row(), bin_row(), end(d, AC)]);
            let mut steps = vec![MORE_STEP; exec.len() - 1];
            steps.push(done(AC));
            run("execute", COM_STMT_EXECUTE, d, &exec, &steps);
            run("execute dml", COM_STMT_EXECUTE, d, &[ok(AC)], &[done(AC)]);

            // with a cursor: column definitions, then the terminator with CURSOR_EXISTS
            let cursor = vec![count(1), col(), end(d, AC | CURSOR)];
            run(
                "execute with cursor",
                COM_STMT_EXECUTE,
                d,
                &cursor,
                &[MORE_STEP, MORE_STEP, done(AC | CURSOR)],
            );
            run(
                "fetch",
                COM_STMT_FETCH,
                d,
                &[bin_row(), bin_row(), end(d, AC | CURSOR | LAST_ROW)],
                &[MORE_STEP, MORE_STEP, done(AC | CURSOR | LAST_ROW)],
            );

            run(
                "field list",
                COM_FIELD_LIST,
                d,
                &[col(), col(), end(d, AC)],
                &[MORE_STEP, MORE_STEP, done(AC)],
            );
            run(
                "field list error",
                COM_FIELD_LIST,
                d,
                &[err(1146)],
                &[Step::Failed {
                    code: 1146,
                    status: None,
                }],
            );
            run(
                "statistics",
                COM_STATISTICS,
                d,
                &[b"Uptime: 5  Threads: 1  Questions: 2".to_vec()],
                &[Step::Done { status: None }],
            );
            run("ping", COM_PING, d, &[ok(AC)], &[done(AC)]);
            run("set option", COM_SET_OPTION, d, &[end(d, AC)], &[done(AC)]);
            run(
                "reset connection",
                COM_RESET_CONNECTION,
                d,
                &[ok(AC)],
                &[done(AC)],
            );
            run(
                "init db error",
                COM_INIT_DB,
                d,
                &[err(1049)],
                &[Step::Failed {
                    code: 1049,
                    status: None,
                }],
            );
        }
    }

    #[test]
    fn prepare_shapes() {
        let p = |id, c, n| prepare_ok(id, c, n);
        let none = Step::Done { status: None };
        // classic: params + EOF, columns + EOF
        let r = run(
            "prepare",
            COM_STMT_PREPARE,
            false,
            &[p(7, 2, 1), col(), eof(AC), col(), col(), eof(AC)],
            &[
                MORE_STEP,
                MORE_STEP,
                MORE_STEP,
                MORE_STEP,
                MORE_STEP,
                done(AC),
            ],
        );
        assert_eq!(
            r.prepared(),
            Some(Prepared {
                statement_id: 7,
                num_columns: 2,
                num_params: 1,
                warnings: 0
            })
        );
        run(
            "prepare deprecate",
            COM_STMT_PREPARE,
            true,
            &[p(8, 2, 1), col(), col(), col()],
            &[MORE_STEP, MORE_STEP, MORE_STEP, none],
        );
        run(
            "prepare dml",
            COM_STMT_PREPARE,
            false,
            &[p(9, 0, 0)],
            &[none],
        );
        run(
            "prepare params only",
            COM_STMT_PREPARE,
            false,
            &[p(1, 0, 2), col(), col(), eof(AC)],
            &[MORE_STEP, MORE_STEP, MORE_STEP, done(AC)],
        );
        run(
            "prepare columns only",
            COM_STMT_PREPARE,
            true,
            &[p(1, 1, 0), col()],
            &[MORE_STEP, none],
        );
        let r = run(
            "prepare error",
            COM_STMT_PREPARE,
            false,
            &[err(1064)],
            &[Step::Failed {
                code: 1064,
                status: None,
            }],
        );
        assert_eq!(r.prepared(), None);
    }

    #[test]
    fn no_response_commands_start_done() {
        for c in [COM_QUIT, COM_STMT_CLOSE, COM_STMT_SEND_LONG_DATA] {
            let mut r = Response::new(c, true);
            assert!(r.is_done());
            assert_eq!(
                r.feed(&ok(AC)),
                Err(ResponseError::AfterDone { command: c })
            );
        }
    }

    #[test]
    fn rows_that_look_like_terminators_are_rows() {
        // without DEPRECATE_EOF: 0xFE and 9 bytes or more is a row
        let mut r = Response::new(COM_QUERY, false);
        for p in [count(1), col(), eof(AC)] {
            r.feed(&p).unwrap();
        }
        assert_eq!(r.feed(&[0xFE; 9]), Ok(Step::More));
        assert_eq!(r.feed(&[0x00]), Ok(Step::More)); // an empty string
        assert_eq!(r.feed(&eof(AC)), Ok(done(AC)));

        // with DEPRECATE_EOF: a first piece of a 16 MiB row starting with 0xFE is a row
        let mut r = Response::new(COM_QUERY, true);
        for p in [count(1), col()] {
            r.feed(&p).unwrap();
        }
        let mut big = vec![0u8; crate::protocol::mysql::packet::MAX_PHYSICAL_PAYLOAD];
        big[0] = 0xFE;
        assert_eq!(r.feed(&big), Ok(Step::More));
        // and an OK terminator longer than 9 bytes (with info) is a terminator
        let long_ok = [&ok_fe(AC)[..], b"\x05hello"].concat();
        assert_eq!(r.feed(&long_ok), Ok(done(AC)));
    }

    #[test]
    fn malformed_and_unexpected_packets_are_errors() {
        let cases: &[(u8, bool, &[&[u8]])] = &[
            (COM_QUERY, false, &[b""]),
            (COM_QUERY, false, &[b"\x00\x00"]), // truncated OK
            (COM_QUERY, false, &[b"\x01", b"\x03def", b"\x03def"]), // row where EOF belongs
            (COM_QUERY, false, &[b"\x00\x00\x00\x00"]), // OK without warnings
            (COM_STMT_EXECUTE, false, &[b"\xfbfile"]), // LOCAL INFILE only for COM_QUERY
            (COM_QUERY, false, &[b"\xff\x01"]), // truncated ERR
            (COM_STMT_PREPARE, false, &[b"\x00\x01\x00"]), // truncated prepare OK
            (COM_STMT_PREPARE, false, &[b"\x03def"]), // not a prepare OK
            (
                COM_STMT_PREPARE,
                false,
                &[&prepare_ok(1, 0, 1), b"\x03def", b"\x03def"],
            ),
        ];
        for (i, (command, d, packets)) in cases.iter().enumerate() {
            let mut r = Response::new(*command, *d);
            let (last, init) = packets.split_last().unwrap();
            for p in init {
                assert!(r.feed(p).is_ok(), "case {i}");
            }
            assert!(r.feed(last).is_err(), "case {i}: {:?}", r.feed(last));
        }
    }

    #[test]
    fn progress_reports_do_not_end_the_response() {
        let mut r = Response::new(COM_QUERY, true);
        assert_eq!(
            r.feed(b"\xff\xff\xff\x01\x01\x00\x00\x00\x00\x05stage"),
            Ok(Step::More)
        );
        assert_eq!(r.feed(&ok(AC)), Ok(done(AC)));
    }
}
