//! Go's number literals as its lexer and parser read them, where gotmpl reads them
//! differently: each found by the differential fuzz target against real Go.

use crate::TemplateError;
use crate::check::parse_error;

/// Where a number that started before `i` ends: digits, letters (`0x1F`, `1e3`), `_`,
/// one point, an exponent's sign. A second point is not the number's (`0..B`: Go's
/// "unexpected . after term").
pub(crate) fn number_end(b: &[u8], mut i: usize, mut point: bool) -> usize {
    while i < b.len() {
        let c = b[i];
        let sign = matches!(c, b'+' | b'-') && matches!(b[i - 1], b'e' | b'E' | b'p' | b'P');
        if c == b'.' && !point {
            point = true;
        } else if !(c.is_ascii_alphanumeric() || c == b'_' || sign) {
            break;
        }
        i += 1;
    }
    i
}

/// Go's number literals take `_` only between two digits (or after a base prefix):
/// `0x1_` and `1__0` are "illegal number syntax".
pub(crate) fn underscores_between_digits(number: &[u8]) -> bool {
    number.iter().enumerate().all(|(k, c)| {
        *c != b'_'
            || (k > 0
                && number[k - 1].is_ascii_alphanumeric()
                && number.get(k + 1).is_some_and(u8::is_ascii_alphanumeric))
    })
}

/// Go's lexer reads a number followed at once by `+` or `-` as a complex number
/// (`1+2i`): one whose second part does not end in `i` (`1+2`, `.0+2.0`) is "bad number
/// syntax"; a complex number is not supported. gotmpl read `1+2` as two numbers.
pub(crate) fn signed_after_number(
    src: &str,
    at: usize,
    inner: &str,
    start: usize,
    end: usize,
) -> Result<(), TemplateError> {
    let b = inner.as_bytes();
    if !matches!(b.get(end), Some(b'+' | b'-')) {
        return Ok(());
    }
    let second = number_end(b, end + 1, false);
    if second > end + 1 && b[second - 1] == b'i' {
        return Err(crate::check::unsupported(
            src,
            at + start,
            "complex numbers",
        ));
    }
    Err(parse_error(
        src,
        at + start,
        format!("bad number syntax: {:?}", &inner[start..second]),
    ))
}

/// A leading `0` makes Go read an integer as octal: `083`, `09` and `0_9` are no
/// integer, and Go then refuses a number that parses only as a float but has no `.`
/// or exponent as "integer overflow". gotmpl read them as decimal (`083` was 83; found
/// by the differential fuzz target).
pub(crate) fn octal_with_decimal_digits(number: &[u8]) -> bool {
    number.len() > 1
        && number[0] == b'0'
        && number[1..].iter().all(|c| c.is_ascii_digit() || *c == b'_')
        && number.iter().any(|c| matches!(c, b'8' | b'9'))
}

/// A hexadecimal number with a point is a float only with a `p` exponent (`0x1.8p1`):
/// Go refuses `0x2.0B` as "illegal number syntax"; gotmpl read it as 2.04296875.
pub(crate) fn hex_point_without_exponent(number: &[u8]) -> bool {
    matches!(number, [b'0', b'x' | b'X', ..])
        && number.contains(&b'.')
        && !number.iter().any(|c| matches!(c, b'p' | b'P'))
}
