//! Go's `fmt` (Sprint, Sprintln, Sprintf) and `strconv.Quote` for template values,
//! written from Go's specification and checked byte for byte against Go by the
//! differential test. Template values map to Go types as Go's text/template sees
//! them: nil, bool, int, uint64, float64, string, []interface {} and
//! map[string]interface {}.

use gotmpl::Value;

use crate::isprint_table::PRINT_RANGES;

const LOWER: &[u8; 17] = b"0123456789abcdefx";
const UPPER: &[u8; 17] = b"0123456789ABCDEFX";

/// A format Go renders that hookline does not (refused rather than rendered differently).
#[derive(Debug)]
pub(crate) struct Unsupported(pub(crate) &'static str);

/// Go's `unicode.IsPrint`.
pub(crate) fn is_print(r: char) -> bool {
    let r = u32::from(r);
    PRINT_RANGES
        .binary_search_by(|(lo, hi)| {
            if r < *lo {
                std::cmp::Ordering::Greater
            } else if r > *hi {
                std::cmp::Ordering::Less
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// `fmt.Sprint(args...)`.
pub(crate) fn sprint(args: &[Value]) -> Result<String, Unsupported> {
    let mut p = Printer::default();
    let mut prev_string = false;
    for (i, arg) in args.iter().enumerate() {
        let is_string = matches!(arg, Value::String(_));
        if i > 0 && !is_string && !prev_string {
            p.buf.push(' ');
        }
        p.print_arg(arg, 'v')?;
        prev_string = is_string;
    }
    Ok(p.buf)
}

/// `fmt.Sprintln(args...)`.
pub(crate) fn sprintln(args: &[Value]) -> Result<String, Unsupported> {
    let mut p = Printer::default();
    for (i, arg) in args.iter().enumerate() {
        if i > 0 {
            p.buf.push(' ');
        }
        p.print_arg(arg, 'v')?;
    }
    p.buf.push('\n');
    Ok(p.buf)
}

/// `fmt.Sprintf(format, args...)`.
pub(crate) fn sprintf(format: &str, args: &[Value]) -> Result<String, Unsupported> {
    let mut p = Printer::default();
    p.do_printf(format, args)?;
    Ok(p.buf)
}

/// `strconv.Quote` (`ascii_only`: `QuoteToASCII`).
pub(crate) fn quote(s: &str, ascii_only: bool) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for r in s.chars() {
        escaped_rune(&mut out, r, '"', ascii_only);
    }
    out.push('"');
    out
}

fn quote_rune(r: char, ascii_only: bool) -> String {
    let mut out = String::with_capacity(8);
    out.push('\'');
    escaped_rune(&mut out, r, '\'', ascii_only);
    out.push('\'');
    out
}

fn escaped_rune(out: &mut String, r: char, quote: char, ascii_only: bool) {
    if r == quote || r == '\\' {
        out.push('\\');
        out.push(r);
        return;
    }
    if ascii_only {
        if r.is_ascii() && is_print(r) {
            out.push(r);
            return;
        }
    } else if is_print(r) {
        out.push(r);
        return;
    }
    match r {
        '\u{7}' => out.push_str("\\a"),
        '\u{8}' => out.push_str("\\b"),
        '\u{c}' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{b}' => out.push_str("\\v"),
        r if r < ' ' || r == '\u{7f}' => {
            let b = r as u8;
            out.push_str("\\x");
            out.push(char::from(LOWER[usize::from(b >> 4)]));
            out.push(char::from(LOWER[usize::from(b & 0xF)]));
        }
        r if u32::from(r) < 0x10000 => hex_escape(out, "\\u", u32::from(r), 4),
        r => hex_escape(out, "\\U", u32::from(r), 8),
    }
}

fn hex_escape(out: &mut String, prefix: &str, r: u32, digits: u32) {
    out.push_str(prefix);
    for shift in (0..digits).rev() {
        out.push(char::from(LOWER[((r >> (shift * 4)) & 0xF) as usize]));
    }
}

fn can_backquote(s: &str) -> bool {
    s.chars().all(|r| {
        if r.len_utf8() > 1 {
            return r != '\u{feff}';
        }
        !((r < ' ' && r != '\t') || r == '`' || r == '\u{7f}')
    })
}

/// The Go type name `fmt` prints in `%!verb(type=value)`.
fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Nil => "<nil>",
        Value::Bool(_) => "bool",
        Value::Int(_) => "int",
        Value::Uint(_) => "uint64",
        Value::Float(_) => "float64",
        Value::String(_) => "string",
        Value::List(_) => "[]interface {}",
        Value::Map(_) => "map[string]interface {}",
        _ => "func",
    }
}

#[derive(Default, Clone, Copy)]
struct Flags {
    wid: usize,
    wid_present: bool,
    prec: usize,
    prec_present: bool,
    minus: bool,
    plus: bool,
    sharp: bool,
    space: bool,
    zero: bool,
    plus_v: bool,
    sharp_v: bool,
}

#[derive(Default)]
struct Printer {
    buf: String,
    f: Flags,
    reordered: bool,
    good_arg_num: bool,
}

impl Printer {
    // ---- padding -------------------------------------------------------------

    fn write_padding(&mut self, n: usize) {
        let pad = if self.f.zero { '0' } else { ' ' };
        self.buf.extend(std::iter::repeat_n(pad, n));
    }

    fn pad(&mut self, s: &str) {
        if !self.f.wid_present || self.f.wid == 0 {
            self.buf.push_str(s);
            return;
        }
        let width = self.f.wid.saturating_sub(s.chars().count());
        if self.f.minus {
            self.buf.push_str(s);
            self.write_padding(width);
        } else {
            self.write_padding(width);
            self.buf.push_str(s);
        }
    }

    fn truncate<'a>(&self, s: &'a str) -> &'a str {
        if self.f.prec_present {
            if let Some((i, _)) = s.char_indices().nth(self.f.prec) {
                return &s[..i];
            }
        }
        s
    }

    // ---- printArg / printValue ----------------------------------------------

    fn print_arg(&mut self, arg: &Value, verb: char) -> Result<(), Unsupported> {
        if let Value::Nil = arg {
            return match verb {
                'T' | 'v' => {
                    self.pad("<nil>");
                    Ok(())
                }
                _ => self.bad_verb(verb, arg, true),
            };
        }
        if verb == 'T' || verb == 'p' {
            return Err(Unsupported("the %T and %p verbs"));
        }
        self.print_value(arg, verb, 0)
    }

    fn print_value(&mut self, v: &Value, verb: char, depth: usize) -> Result<(), Unsupported> {
        match v {
            Value::Nil => {
                // A nil element of a list or map.
                if depth == 0 {
                    self.buf.push_str("<invalid reflect.Value>");
                    Ok(())
                } else if verb == 'v' {
                    self.buf.push_str("<nil>");
                    Ok(())
                } else {
                    self.bad_verb(verb, v, false)
                }
            }
            Value::Bool(b) => match verb {
                't' | 'v' => {
                    self.pad(if *b { "true" } else { "false" });
                    Ok(())
                }
                _ => self.bad_verb(verb, v, depth == 0),
            },
            Value::Int(i) => self.fmt_integer(*i as u64, true, verb, v, depth),
            Value::Uint(u) => self.fmt_integer(*u, false, verb, v, depth),
            Value::Float(x) => self.fmt_float_verb(*x, verb, v, depth),
            Value::String(s) => match verb {
                'v' if self.f.sharp_v => Err(Unsupported("the %#v verb")),
                'v' | 's' => {
                    let t = self.truncate(s).to_owned();
                    self.pad(&t);
                    Ok(())
                }
                'x' => {
                    self.fmt_sx(s, LOWER);
                    Ok(())
                }
                'X' => {
                    self.fmt_sx(s, UPPER);
                    Ok(())
                }
                'q' => {
                    self.fmt_q(s);
                    Ok(())
                }
                _ => self.bad_verb(verb, v, depth == 0),
            },
            Value::List(items) => {
                if self.f.sharp_v {
                    return Err(Unsupported("the %#v verb"));
                }
                self.buf.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.buf.push(' ');
                    }
                    self.print_element(item, verb, depth + 1)?;
                }
                self.buf.push(']');
                Ok(())
            }
            Value::Map(map) => {
                if self.f.sharp_v {
                    return Err(Unsupported("the %#v verb"));
                }
                self.buf.push_str("map[");
                for (i, (k, item)) in map.iter().enumerate() {
                    if i > 0 {
                        self.buf.push(' ');
                    }
                    self.print_value(&Value::String(k.clone()), verb, depth + 1)?;
                    self.buf.push(':');
                    self.print_element(item, verb, depth + 1)?;
                }
                self.buf.push(']');
                Ok(())
            }
            _ => Err(Unsupported("function values")),
        }
    }

    /// An element of a list or map: an interface value, nil printed as `<nil>` whatever
    /// the verb.
    fn print_element(&mut self, v: &Value, verb: char, depth: usize) -> Result<(), Unsupported> {
        if let Value::Nil = v {
            self.buf.push_str("<nil>");
            return Ok(());
        }
        self.print_value(v, verb, depth)
    }

    /// `%!verb(type=value)`; the flags in force still apply to the value, as in Go.
    fn bad_verb(&mut self, verb: char, v: &Value, _top: bool) -> Result<(), Unsupported> {
        self.buf.push_str("%!");
        self.buf.push(verb);
        self.buf.push('(');
        match v {
            Value::Nil => self.buf.push_str("<nil>"),
            other => {
                self.buf.push_str(type_name(other));
                self.buf.push('=');
                self.print_arg(other, 'v')?;
            }
        }
        self.buf.push(')');
        Ok(())
    }

    // ---- integers ------------------------------------------------------------

    fn fmt_integer(&mut self, u: u64, signed: bool, verb: char, v: &Value, depth: usize) -> Result<(), Unsupported> {
        match verb {
            'v' if self.f.sharp_v => Err(Unsupported("the %#v verb")),
            'v' | 'd' => {
                self.integer(u, 10, signed, verb, LOWER);
                Ok(())
            }
            'b' => {
                self.integer(u, 2, signed, verb, LOWER);
                Ok(())
            }
            'o' | 'O' => {
                self.integer(u, 8, signed, verb, LOWER);
                Ok(())
            }
            'x' => {
                self.integer(u, 16, signed, verb, LOWER);
                Ok(())
            }
            'X' => {
                self.integer(u, 16, signed, verb, UPPER);
                Ok(())
            }
            'c' => {
                let r = rune_of(u);
                self.pad(&r.to_string());
                Ok(())
            }
            'q' => {
                let q = quote_rune(rune_of(u), self.f.plus);
                self.pad(&q);
                Ok(())
            }
            'U' => {
                self.fmt_unicode(u);
                Ok(())
            }
            _ => self.bad_verb(verb, v, depth == 0),
        }
    }

    fn integer(&mut self, mut u: u64, base: u64, signed: bool, verb: char, digits: &[u8; 17]) {
        let negative = signed && (u as i64) < 0;
        if negative {
            u = (u as i64).unsigned_abs();
        }
        let mut prec = 0usize;
        if self.f.prec_present {
            prec = self.f.prec;
            if prec == 0 && u == 0 {
                let old = self.f.zero;
                self.f.zero = false;
                self.write_padding(self.f.wid);
                self.f.zero = old;
                return;
            }
        } else if self.f.zero && !self.f.minus && self.f.wid_present {
            prec = self.f.wid;
            if negative || self.f.plus || self.f.space {
                prec = prec.saturating_sub(1);
            }
        }
        let mut rev: Vec<u8> = Vec::with_capacity(24);
        loop {
            rev.push(digits[(u % base) as usize]);
            u /= base;
            if u == 0 {
                break;
            }
        }
        while rev.len() < prec {
            rev.push(b'0');
        }
        if self.f.sharp {
            match base {
                2 => rev.extend_from_slice(b"b0"),
                8 if rev.last() != Some(&b'0') => rev.push(b'0'),
                16 => {
                    rev.push(digits[16]);
                    rev.push(b'0');
                }
                _ => {}
            }
        }
        if verb == 'O' {
            rev.extend_from_slice(b"o0");
        }
        if negative {
            rev.push(b'-');
        } else if self.f.plus {
            rev.push(b'+');
        } else if self.f.space {
            rev.push(b' ');
        }
        rev.reverse();
        let s = String::from_utf8(rev).unwrap_or_default();
        let old = self.f.zero;
        self.f.zero = false;
        self.pad(&s);
        self.f.zero = old;
    }

    fn fmt_unicode(&mut self, mut u: u64) {
        let mut prec = 4usize;
        if self.f.prec_present && self.f.prec > 4 {
            prec = self.f.prec;
        }
        let mut rev: Vec<u8> = Vec::new();
        let mut tail = String::new();
        if self.f.sharp {
            if let Some(r) = u32::try_from(u).ok().and_then(char::from_u32) {
                if is_print(r) {
                    tail = format!(" '{r}'");
                }
            }
        }
        loop {
            rev.push(UPPER[(u & 0xF) as usize]);
            prec = prec.saturating_sub(1);
            u >>= 4;
            if u == 0 {
                break;
            }
        }
        rev.extend(std::iter::repeat_n(b'0', prec));
        rev.extend_from_slice(b"+U");
        rev.reverse();
        let s = format!("{}{tail}", String::from_utf8(rev).unwrap_or_default());
        let old = self.f.zero;
        self.f.zero = false;
        self.pad(&s);
        self.f.zero = old;
    }

    // ---- strings -------------------------------------------------------------

    fn fmt_sx(&mut self, s: &str, digits: &[u8; 17]) {
        let bytes = s.as_bytes();
        let mut length = bytes.len();
        if self.f.prec_present && self.f.prec < length {
            length = self.f.prec;
        }
        let mut width = 2 * length;
        if width > 0 {
            if self.f.space {
                if self.f.sharp {
                    width *= 2;
                }
                width += length - 1;
            } else if self.f.sharp {
                width += 2;
            }
        } else {
            if self.f.wid_present {
                self.write_padding(self.f.wid);
            }
            return;
        }
        if self.f.wid_present && self.f.wid > width && !self.f.minus {
            self.write_padding(self.f.wid - width);
        }
        if self.f.sharp {
            self.buf.push('0');
            self.buf.push(char::from(digits[16]));
        }
        for (i, c) in bytes[..length].iter().enumerate() {
            if self.f.space && i > 0 {
                self.buf.push(' ');
                if self.f.sharp {
                    self.buf.push('0');
                    self.buf.push(char::from(digits[16]));
                }
            }
            self.buf.push(char::from(digits[usize::from(c >> 4)]));
            self.buf.push(char::from(digits[usize::from(c & 0xF)]));
        }
        if self.f.wid_present && self.f.wid > width && self.f.minus {
            self.write_padding(self.f.wid - width);
        }
    }

    fn fmt_q(&mut self, s: &str) {
        let s = self.truncate(s).to_owned();
        if self.f.sharp && can_backquote(&s) {
            self.pad(&format!("`{s}`"));
            return;
        }
        let q = quote(&s, self.f.plus);
        self.pad(&q);
    }

    // ---- floats --------------------------------------------------------------

    fn fmt_float_verb(&mut self, x: f64, verb: char, v: &Value, depth: usize) -> Result<(), Unsupported> {
        let (conv, default_prec) = match verb {
            'v' if self.f.sharp_v => return Err(Unsupported("the %#v verb")),
            'v' => ('g', None),
            'b' | 'g' | 'G' | 'x' | 'X' => (verb, None),
            'F' => ('f', Some(6)),
            'f' | 'e' | 'E' => (verb, Some(6)),
            _ => return self.bad_verb(verb, v, depth == 0),
        };
        if self.f.sharp {
            return Err(Unsupported("the # flag with floating-point verbs"));
        }
        let prec = if self.f.prec_present { Some(self.f.prec) } else { default_prec };
        let body = format_float(x, conv, prec)?;
        let mut num = if body.starts_with('-') || body.starts_with('+') { body } else { format!("+{body}") };
        if self.f.space && num.starts_with('+') && !self.f.plus {
            num.replace_range(0..1, " ");
        }
        let second = num.as_bytes().get(1).copied();
        if second == Some(b'I') || second == Some(b'N') {
            let old = self.f.zero;
            self.f.zero = false;
            if second == Some(b'N') && !self.f.space && !self.f.plus {
                num.remove(0);
            }
            self.pad(&num);
            self.f.zero = old;
            return Ok(());
        }
        if self.f.plus || !num.starts_with('+') {
            if self.f.zero && !self.f.minus && self.f.wid_present && self.f.wid > num.len() {
                let (sign, rest) = num.split_at(1);
                self.buf.push_str(sign);
                self.write_padding(self.f.wid - num.len());
                self.buf.push_str(rest);
                return Ok(());
            }
            self.pad(&num);
            return Ok(());
        }
        let unsigned = num[1..].to_owned();
        self.pad(&unsigned);
        Ok(())
    }

    // ---- Printf ----------------------------------------------------------------

    fn do_printf(&mut self, format: &str, args: &[Value]) -> Result<(), Unsupported> {
        let fb = format.as_bytes();
        let end = fb.len();
        let mut arg_num = 0usize;
        let mut after_index;
        self.reordered = false;
        let mut i = 0usize;
        'format: while i < end {
            self.good_arg_num = true;
            let last = i;
            while i < end && fb[i] != b'%' {
                i += 1;
            }
            if i > last {
                self.buf.push_str(&format[last..i]);
            }
            if i >= end {
                break;
            }
            i += 1;
            self.f = Flags::default();
            while i < end {
                let c = fb[i];
                match c {
                    b'#' => self.f.sharp = true,
                    b'0' => self.f.zero = !self.f.minus,
                    b'+' => self.f.plus = true,
                    b'-' => {
                        self.f.minus = true;
                        self.f.zero = false;
                    }
                    b' ' => self.f.space = true,
                    _ => {
                        if c.is_ascii_lowercase() && arg_num < args.len() {
                            if c == b'w' {
                                return Err(Unsupported("the %w verb"));
                            }
                            if c == b'v' {
                                self.f.sharp_v = self.f.sharp;
                                self.f.sharp = false;
                                self.f.plus_v = self.f.plus;
                                self.f.plus = false;
                            }
                            self.print_arg(&args[arg_num], char::from(c))?;
                            arg_num += 1;
                            i += 1;
                            continue 'format;
                        }
                        break;
                    }
                }
                i += 1;
            }
            (arg_num, i, after_index) = self.arg_number(arg_num, format, i, args.len());
            if i < end && fb[i] == b'*' {
                return Err(Unsupported("a `*` width or precision in printf"));
            }
            let (wid, present, ni) = parse_num(fb, i, end);
            (self.f.wid, self.f.wid_present, i) = (wid, present, ni);
            if after_index && self.f.wid_present {
                self.good_arg_num = false;
            }
            if i + 1 < end && fb[i] == b'.' {
                i += 1;
                if after_index {
                    self.good_arg_num = false;
                }
                (arg_num, i, after_index) = self.arg_number(arg_num, format, i, args.len());
                if i < end && fb[i] == b'*' {
                    return Err(Unsupported("a `*` width or precision in printf"));
                }
                let (prec, present, ni) = parse_num(fb, i, end);
                (self.f.prec, self.f.prec_present, i) = (prec, present, ni);
                if !self.f.prec_present {
                    self.f.prec = 0;
                    self.f.prec_present = true;
                }
            }
            if self.f.wid > crate::check::MAX_WIDTH || self.f.prec > crate::check::MAX_WIDTH {
                return Err(Unsupported("a printf width or precision over 1000"));
            }
            if !after_index {
                (arg_num, i, _) = self.arg_number(arg_num, format, i, args.len());
            }
            if i >= end {
                self.buf.push_str("%!(NOVERB)");
                break;
            }
            let verb = format[i..].chars().next().unwrap_or('?');
            i += verb.len_utf8();
            match verb {
                '%' => self.buf.push('%'),
                _ if !self.good_arg_num => {
                    self.buf.push_str("%!");
                    self.buf.push(verb);
                    self.buf.push_str("(BADINDEX)");
                }
                _ if arg_num >= args.len() => {
                    self.buf.push_str("%!");
                    self.buf.push(verb);
                    self.buf.push_str("(MISSING)");
                }
                'w' => return Err(Unsupported("the %w verb")),
                _ => {
                    if verb == 'v' {
                        self.f.sharp_v = self.f.sharp;
                        self.f.sharp = false;
                        self.f.plus_v = self.f.plus;
                        self.f.plus = false;
                    }
                    self.print_arg(&args[arg_num], verb)?;
                    arg_num += 1;
                }
            }
        }
        if !self.reordered && arg_num < args.len() {
            self.f = Flags::default();
            self.buf.push_str("%!(EXTRA ");
            for (k, arg) in args[arg_num..].iter().enumerate() {
                if k > 0 {
                    self.buf.push_str(", ");
                }
                if let Value::Nil = arg {
                    self.buf.push_str("<nil>");
                } else {
                    self.buf.push_str(type_name(arg));
                    self.buf.push('=');
                    self.print_arg(arg, 'v')?;
                }
            }
            self.buf.push(')');
        }
        Ok(())
    }

    fn arg_number(&mut self, arg_num: usize, format: &str, i: usize, num_args: usize) -> (usize, usize, bool) {
        let fb = format.as_bytes();
        if fb.len() <= i || fb[i] != b'[' {
            return (arg_num, i, false);
        }
        self.reordered = true;
        let (index, wid, ok) = parse_arg_number(&fb[i..]);
        if ok && index.is_some_and(|x| x < num_args) {
            return (index.unwrap_or(0), i + wid, true);
        }
        self.good_arg_num = false;
        (arg_num, i + wid, ok)
    }
}

/// Go's `parseArgNumber`: `[n]`, 1-based; `(index, consumed, ok)`.
fn parse_arg_number(f: &[u8]) -> (Option<usize>, usize, bool) {
    if f.len() < 3 {
        return (None, 1, false);
    }
    for i in 1..f.len() {
        if f[i] == b']' {
            let (width, ok, newi) = parse_num(f, 1, i);
            if !ok || newi != i {
                return (None, i + 1, false);
            }
            return (width.checked_sub(1), i + 1, true);
        }
    }
    (None, 1, false)
}

/// Go's `parsenum`: `(number, is number, next index)`.
fn parse_num(s: &[u8], start: usize, end: usize) -> (usize, bool, usize) {
    if start >= end {
        return (0, false, end);
    }
    let mut num = 0usize;
    let mut is_num = false;
    let mut i = start;
    while i < end && s[i].is_ascii_digit() {
        if num > 1_000_000 {
            return (0, false, end);
        }
        num = num * 10 + usize::from(s[i] - b'0');
        is_num = true;
        i += 1;
    }
    (num, is_num, i)
}

fn rune_of(u: u64) -> char {
    u32::try_from(u).ok().and_then(char::from_u32).unwrap_or('\u{fffd}')
}

/// Decimal digits of `x` (no sign): shortest when `sig` is `None`, else rounded to
/// `sig` significant digits. Returns (digits without trailing zeros, decimal point
/// position), as Go's `decimalSlice` (`digits` = d1d2..., value = 0.d1d2... × 10^dp).
fn decimal(x: f64, sig: Option<usize>) -> (Vec<u8>, i32) {
    if x == 0.0 {
        return (Vec::new(), 0);
    }
    let s = match sig {
        None => format!("{:e}", x.abs()),
        Some(n) => format!("{:.*e}", n.max(1) - 1, x.abs()),
    };
    let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let mut digits: Vec<u8> = mantissa.bytes().filter(u8::is_ascii_digit).collect();
    while digits.last() == Some(&b'0') {
        digits.pop();
    }
    if digits.is_empty() {
        return (Vec::new(), 0);
    }
    (digits, exp + 1)
}

/// `strconv.FormatFloat(x, conv, prec, 64)` for the verbs hookline supports.
fn format_float(x: f64, conv: char, prec: Option<usize>) -> Result<String, Unsupported> {
    if x.is_nan() {
        return Ok("NaN".to_owned());
    }
    if x.is_infinite() {
        return Ok(if x > 0.0 { "+Inf" } else { "-Inf" }.to_owned());
    }
    let neg = x.is_sign_negative();
    let sign = if neg { "-" } else { "" };
    match conv {
        'e' | 'E' => {
            let (digits, dp, p) = match prec {
                None => {
                    let (d, dp) = decimal(x, None);
                    let p = d.len().saturating_sub(1);
                    (d, dp, p)
                }
                Some(p) => {
                    let (d, dp) = decimal(x, Some(p + 1));
                    (d, dp, p)
                }
            };
            Ok(format!("{sign}{}", fmt_e(&digits, dp, p, conv)))
        }
        'f' | 'F' => match prec {
            None => {
                let (d, dp) = decimal(x, None);
                let p = (d.len() as i32 - dp).max(0) as usize;
                Ok(format!("{sign}{}", fmt_f(&d, dp, p)))
            }
            Some(p) => Ok(format!("{sign}{:.*}", p, x.abs())),
        },
        'g' | 'G' => {
            let shortest = prec.is_none();
            let (digits, dp, mut p) = match prec {
                None => {
                    let (d, dp) = decimal(x, None);
                    let n = d.len();
                    (d, dp, n)
                }
                Some(p) => {
                    let p = p.max(1);
                    let (d, dp) = decimal(x, Some(p));
                    (d, dp, p)
                }
            };
            let nd = digits.len().max(1);
            let mut eprec = p;
            if eprec > nd && nd as i32 >= dp {
                eprec = nd;
            }
            if shortest {
                eprec = 6;
            }
            let exp = dp - 1;
            if exp < -4 || exp >= eprec as i32 {
                if p > nd {
                    p = nd;
                }
                let e = if conv == 'g' { 'e' } else { 'E' };
                return Ok(format!("{sign}{}", fmt_e(&digits, dp, p.saturating_sub(1), e)));
            }
            if p as i32 > dp {
                p = nd;
            }
            Ok(format!("{sign}{}", fmt_f(&digits, dp, (p as i32 - dp).max(0) as usize)))
        }
        'b' => {
            let (mant, exp) = decompose(x);
            let exp = exp - 52;
            Ok(format!("{sign}{mant}p{}{exp}", if exp >= 0 { "+" } else { "" }))
        }
        'x' | 'X' if prec.is_none() => Ok(format!("{sign}{}", fmt_x(x, conv))),
        _ => Err(Unsupported("this floating-point verb with a precision")),
    }
}

/// Mantissa (with the implicit bit) and unbiased exponent, as strconv splits a float64.
fn decompose(x: f64) -> (u64, i32) {
    let bits = x.to_bits();
    let mut exp = ((bits >> 52) & 0x7FF) as i32;
    let mut mant = bits & ((1u64 << 52) - 1);
    if exp == 0 {
        exp += 1;
    } else {
        mant |= 1u64 << 52;
    }
    (mant, exp - 1023)
}

/// strconv's %x for float64 at shortest precision: 0x1.yyyp±dd.
fn fmt_x(x: f64, conv: char) -> String {
    let (mut mant, mut exp) = decompose(x);
    if mant == 0 {
        exp = 0;
    }
    mant <<= 60 - 52;
    while mant != 0 && mant & (1u64 << 60) == 0 {
        mant <<= 1;
        exp -= 1;
    }
    let hex = if conv == 'X' { UPPER } else { LOWER };
    let mut out = String::from("0");
    out.push(conv);
    out.push(char::from(b'0' + ((mant >> 60) & 1) as u8));
    mant <<= 4;
    if mant != 0 {
        out.push('.');
        while mant != 0 {
            out.push(char::from(hex[((mant >> 60) & 15) as usize]));
            mant <<= 4;
        }
    }
    out.push(if conv == 'X' { 'P' } else { 'p' });
    out.push(if exp < 0 { '-' } else { '+' });
    let e = exp.unsigned_abs();
    if e < 10 {
        out.push('0');
    }
    out.push_str(&e.to_string());
    out
}

/// d.ddddde±dd from digits (value 0.d1d2... × 10^dp), `prec` digits after the point.
fn fmt_e(digits: &[u8], dp: i32, prec: usize, e: char) -> String {
    let mut out = String::new();
    out.push(char::from(*digits.first().unwrap_or(&b'0')));
    if prec > 0 {
        out.push('.');
        for k in 1..=prec {
            out.push(char::from(*digits.get(k).unwrap_or(&b'0')));
        }
    }
    out.push(e);
    let exp = if digits.is_empty() { 0 } else { dp - 1 };
    out.push(if exp < 0 { '-' } else { '+' });
    let exp = exp.unsigned_abs();
    if exp < 10 {
        out.push('0');
    }
    out.push_str(&exp.to_string());
    out
}

/// ddd.ddd from digits, `prec` digits after the point.
fn fmt_f(digits: &[u8], dp: i32, prec: usize) -> String {
    let mut out = String::new();
    if dp > 0 {
        for k in 0..dp as usize {
            out.push(char::from(*digits.get(k).unwrap_or(&b'0')));
        }
    } else {
        out.push('0');
    }
    if prec > 0 {
        out.push('.');
        for k in 0..prec as i32 {
            let idx = dp + k;
            let c = if idx < 0 { b'0' } else { *digits.get(idx as usize).unwrap_or(&b'0') };
            out.push(char::from(c));
        }
    }
    out
}

/// Go's `template.JSEscapeString`.
pub(crate) fn js_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for r in s.chars() {
        match r {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            '<' => out.push_str("\\u003C"),
            '>' => out.push_str("\\u003E"),
            '&' => out.push_str("\\u0026"),
            '=' => out.push_str("\\u003D"),
            r if r < ' ' => {
                let b = r as u8;
                out.push_str("\\u00");
                out.push(char::from(UPPER[usize::from(b >> 4)]));
                out.push(char::from(UPPER[usize::from(b & 0xF)]));
            }
            r if r.is_ascii() || is_print(r) => out.push(r),
            r => out.push_str(&format!("\\u{:04X}", u32::from(r))),
        }
    }
    out
}

/// Go's `template.HTMLEscapeString`.
pub(crate) fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for r in s.chars() {
        match r {
            '\0' => out.push('\u{fffd}'),
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            r => out.push(r),
        }
    }
    out
}

/// Go's `url.QueryEscape`.
pub(crate) fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(char::from(b)),
            b' ' => out.push('+'),
            b => {
                out.push('%');
                out.push(char::from(UPPER[usize::from(b >> 4)]));
                out.push(char::from(UPPER[usize::from(b & 0xF)]));
            }
        }
    }
    out
}

/// text/template's `evalArgs`: one string argument as is, else `fmt.Sprint` of the
/// arguments, a nil one standing for the text `<no value>`.
pub(crate) fn eval_args(args: &[Value]) -> Result<String, Unsupported> {
    match args {
        [Value::String(s)] => Ok(s.to_string()),
        _ => {
            let printable: Vec<Value> = args
                .iter()
                .map(|a| if let Value::Nil = a { Value::String("<no value>".into()) } else { a.clone() })
                .collect();
            match printable.as_slice() {
                [Value::String(s)] => Ok(s.to_string()),
                _ => sprint(&printable),
            }
        }
    }
}
