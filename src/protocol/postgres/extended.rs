//! The fields of Parse and Bind that the proxy reads when it answers an extended-protocol
//! statement itself: the parameter types a Parse declares, and a Bind's parameter values
//! with their formats and the formats asked for the result columns. Everything is checked
//! against the message's length: malformed input reads as `None`.

use super::frame::cstr;

/// Text format (`0`) of a parameter or result column.
pub const TEXT: i16 = 0;
/// Binary format (`1`).
pub const BINARY: i16 = 1;

/// The parameter types (oids; 0 for "let the server infer it") a Parse message body
/// declares.
pub fn parse_param_types(body: &[u8]) -> Option<Vec<u32>> {
    let (_, rest) = cstr(body)?;
    let (_, rest) = cstr(rest)?;
    let (count, mut rest) = take_i16(rest)?;
    let mut oids = Vec::with_capacity(usize::try_from(count).ok()?.min(rest.len() / 4));
    for _ in 0..count {
        let (oid, tail) = take(rest, 4)?;
        oids.push(u32::from_be_bytes(oid.try_into().ok()?));
        rest = tail;
    }
    Some(oids)
}

/// A Bind message body, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind<'a> {
    pub portal: &'a [u8],
    pub statement: &'a [u8],
    param_formats: Vec<i16>,
    /// Each parameter's value; `None`: NULL.
    pub values: Vec<Option<&'a [u8]>>,
    result_formats: Vec<i16>,
}

impl<'a> Bind<'a> {
    pub fn parse(body: &'a [u8]) -> Option<Bind<'a>> {
        let (portal, rest) = cstr(body)?;
        let (statement, rest) = cstr(rest)?;
        let (param_formats, rest) = formats(rest)?;
        let (count, mut rest) = take_i16(rest)?;
        let mut values = Vec::with_capacity(usize::try_from(count).ok()?.min(rest.len() / 4));
        for _ in 0..count {
            let (len, tail) = take(rest, 4)?;
            let len = i32::from_be_bytes(len.try_into().ok()?);
            rest = tail;
            if len < 0 {
                values.push(None);
                continue;
            }
            let (value, tail) = take(rest, usize::try_from(len).ok()?)?;
            values.push(Some(value));
            rest = tail;
        }
        let (result_formats, _) = formats(rest)?;
        Some(Bind {
            portal,
            statement,
            param_formats,
            values,
            result_formats,
        })
    }

    /// The format of parameter `index` (0-based): none given means text, one applies to
    /// all; `None` when the codes do not match the parameters (the server refuses those).
    pub fn param_format(&self, index: usize) -> Option<i16> {
        pick(&self.param_formats, index, self.values.len())
    }

    /// The format asked for result column `index` of a result of `columns` columns.
    pub fn result_format(&self, index: usize, columns: usize) -> Option<i16> {
        pick(&self.result_formats, index, columns)
    }
}

fn pick(formats: &[i16], index: usize, count: usize) -> Option<i16> {
    let format = match formats {
        [] => TEXT,
        [one] => *one,
        many if many.len() == count => *many.get(index)?,
        _ => return None,
    };
    matches!(format, TEXT | BINARY).then_some(format)
}

/// A list of format codes: its count, then the codes.
fn formats(buf: &[u8]) -> Option<(Vec<i16>, &[u8])> {
    let (count, mut rest) = take_i16(buf)?;
    let mut codes = Vec::with_capacity(usize::try_from(count).ok()?.min(rest.len() / 2));
    for _ in 0..count {
        let (code, tail) = take_i16(rest)?;
        codes.push(code);
        rest = tail;
    }
    Some((codes, rest))
}

fn take_i16(buf: &[u8]) -> Option<(i16, &[u8])> {
    let (n, rest) = take(buf, 2)?;
    Some((i16::from_be_bytes(n.try_into().ok()?), rest))
}

fn take(buf: &[u8], n: usize) -> Option<(&[u8], &[u8])> {
    (buf.len() >= n).then(|| buf.split_at(n))
}

/// An integer parameter value of type `oid` (int2, int4 or int8) in `format`, as the
/// server's input functions read it; `None` for anything else.
pub fn integer(value: &[u8], format: i16, oid: u32) -> Option<i64> {
    match format {
        BINARY => match (oid, value.len()) {
            (INT2_OID, 2) => Some(i16::from_be_bytes(value.try_into().ok()?).into()),
            (INT4_OID, 4) => Some(i32::from_be_bytes(value.try_into().ok()?).into()),
            (INT8_OID, 8) => Some(i64::from_be_bytes(value.try_into().ok()?)),
            _ => None,
        },
        TEXT => {
            let n: i64 = std::str::from_utf8(value).ok()?.trim().parse().ok()?;
            let fits = match oid {
                INT2_OID => i16::try_from(n).is_ok(),
                INT4_OID => i32::try_from(n).is_ok(),
                INT8_OID => true,
                _ => false,
            };
            fits.then_some(n)
        }
        _ => None,
    }
}

pub const INT2_OID: u32 = 21;
pub const INT4_OID: u32 = 23;
pub const INT8_OID: u32 = 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bind_is_read_with_its_formats() {
        // Portal "", statement "s0", one binary format, one int4 value, one binary result.
        let body = b"\0s0\0\0\x01\0\x01\0\x01\0\0\0\x04\x40\0\0\x01\0\x01\0\x01";
        let bind = Bind::parse(body).unwrap();
        assert_eq!((bind.portal, bind.statement), (&b""[..], &b"s0"[..]));
        assert_eq!(bind.values, vec![Some(&b"\x40\0\0\x01"[..])]);
        assert_eq!(bind.param_format(0), Some(BINARY));
        assert_eq!(bind.result_format(0, 1), Some(BINARY));
        assert_eq!(
            integer(bind.values[0].unwrap(), BINARY, INT4_OID),
            Some(1 << 30 | 1)
        );
        // Text, NULL, no result formats.
        let body = b"p\0\0\0\0\0\x02\0\0\0\x0b 1073741825\xff\xff\xff\xff\0\0";
        let bind = Bind::parse(body).unwrap();
        assert_eq!(bind.values, vec![Some(&b" 1073741825"[..]), None]);
        assert_eq!(bind.param_format(1), Some(TEXT));
        assert_eq!(bind.result_format(0, 1), Some(TEXT));
        assert_eq!(integer(b" 1073741825", TEXT, INT4_OID), Some(1073741825));
        assert_eq!(integer(b"4294967296", TEXT, INT4_OID), None);
        assert_eq!(integer(b"\0\0\0\x01", BINARY, INT8_OID), None);
        // Cut short anywhere: nothing.
        for end in 0..body.len() - 2 {
            assert_eq!(Bind::parse(&body[..end]), None, "{end}");
        }
        assert_eq!(Bind::parse(b"\0\0\0\0\0\x01\x7f\xff\xff\xff\0\0"), None);
    }

    #[test]
    fn parse_types_are_read() {
        assert_eq!(parse_param_types(b"s\0SELECT $1\0\0\0"), Some(vec![]));
        assert_eq!(
            parse_param_types(b"\0SELECT $1\0\0\x01\0\0\0\x17"),
            Some(vec![INT4_OID])
        );
        assert_eq!(parse_param_types(b"\0SELECT $1\0\0\x02\0\0\0\x17"), None);
    }
}
