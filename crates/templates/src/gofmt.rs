//! Go's `fmt` (Sprint, Sprintln, Sprintf) for template values, written from Go's
//! specification and checked byte for byte against Go by the differential test.
//! Template values map to Go types as Go's text/template sees them: nil, bool, int,
//! uint64, float64, string, []interface {} and map[string]interface {}.

use gotmpl::Value;

use crate::strconv::{LOWER, UPPER, can_backquote, format_float, is_print, quote, quote_rune};

/// A format Go renders that hookline does not (refused rather than rendered differently).
#[derive(Debug)]
pub(crate) struct Unsupported(pub(crate) &'static str);

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
        if self.f.prec_present
            && let Some((i, _)) = s.char_indices().nth(self.f.prec)
        {
            return &s[..i];
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

    fn fmt_integer(
        &mut self,
        u: u64,
        signed: bool,
        verb: char,
        v: &Value,
        depth: usize,
    ) -> Result<(), Unsupported> {
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
        if self.f.sharp
            && let Some(r) = u32::try_from(u).ok().and_then(char::from_u32)
            && is_print(r)
        {
            tail = format!(" '{r}'");
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

    fn fmt_float_verb(
        &mut self,
        x: f64,
        verb: char,
        v: &Value,
        depth: usize,
    ) -> Result<(), Unsupported> {
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
        let prec = if self.f.prec_present {
            Some(self.f.prec)
        } else {
            default_prec
        };
        let body = format_float(x, conv, prec)?;
        let mut num = if body.starts_with('-') || body.starts_with('+') {
            body
        } else {
            format!("+{body}")
        };
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

    fn arg_number(
        &mut self,
        arg_num: usize,
        format: &str,
        i: usize,
        num_args: usize,
    ) -> (usize, usize, bool) {
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
    u32::try_from(u)
        .ok()
        .and_then(char::from_u32)
        .unwrap_or('\u{fffd}')
}
