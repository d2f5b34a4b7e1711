//! What Go's lexer and parser refuse and gotmpl takes, checked on the source as
//! written: each found by the differential fuzz target against real Go.

use crate::TemplateError;
use crate::check::parse_error;
use crate::numbers::{
    hex_point_without_exponent, number_end, octal_with_decimal_digits, signed_after_number,
    underscores_between_digits,
};

/// Every source-level refusal, in order.
pub(crate) fn refused(source: &str) -> Result<(), TemplateError> {
    balanced_ends(source)?;
    comments(source)?;
    bare_keywords(source)?;
    adjacent_operands(source)
}

/// Go refuses an `{{end}}` (or `{{else}}`) that closes nothing; gotmpl ignores it.
fn balanced_ends(src: &str) -> Result<(), TemplateError> {
    let mut open = 0usize;
    for (offset, body) in actions(src) {
        let body = body.trim_start_matches('-').trim_start();
        let body = body.strip_suffix('-').unwrap_or(body).trim_end();
        // The keyword ends where a name ends (`{{range.L}}` is a range, as in Go).
        let word = body
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .next()
            .unwrap_or("");
        match word {
            "if" | "range" | "with" | "block" | "define" => open += 1,
            "end" | "else" if open == 0 => {
                return Err(parse_error(
                    src,
                    offset,
                    format!("unexpected {{{{{word}}}}}"),
                ));
            }
            "end" => open -= 1,
            _ => {}
        }
    }
    if open > 0 {
        return Err(parse_error(
            src,
            src.len(),
            "unexpected EOF: an {{if}}, {{range}} or {{with}} is not closed".to_owned(),
        ));
    }
    Ok(())
}

/// `(offset, text between the delimiters)` of every action, skipping `}}` inside
/// string, raw string and character literals and comments.
/// Go's parser wants nothing after `end`, `break` and `continue`, and after `else` only
/// `if …` or `with …`: `{{else. }}` is "unexpected <.> in else". gotmpl ignores the rest.
fn bare_keywords(src: &str) -> Result<(), TemplateError> {
    // The open blocks: an `else if` continues an `if`, an `else with` a `with` only.
    let mut open: Vec<&str> = Vec::new();
    for (offset, body) in actions(src) {
        let t = body
            .strip_prefix('-')
            .unwrap_or(body)
            .trim_start_matches([' ', '\t', '\r', '\n']);
        let t = t
            .strip_suffix('-')
            .unwrap_or(t)
            .trim_end_matches([' ', '\t', '\r', '\n']);
        for keyword in ["else", "end", "break", "continue"] {
            let Some(rest) = t.strip_prefix(keyword) else {
                continue;
            };
            if rest.bytes().next().is_some_and(word) {
                continue;
            }
            let rest = rest.trim_start_matches([' ', '\t', '\r', '\n']);
            let chained = if keyword == "else" {
                ["if", "with"].into_iter().find(|k| {
                    rest.strip_prefix(k)
                        .is_some_and(|r| !r.bytes().next().is_some_and(word))
                })
            } else {
                None
            };
            if let (Some(k), Some(&top)) = (chained, open.last())
                && matches!(top, "if" | "with")
                && k != top
            {
                return Err(parse_error(
                    src,
                    offset,
                    format!("unexpected {{{{else {k}}}}} in {{{{{top}}}}}"),
                ));
            }
            if !rest.is_empty() && chained.is_none() {
                return Err(parse_error(
                    src,
                    offset,
                    format!(
                        "unexpected {:?} in {keyword}",
                        rest.chars().next().unwrap_or(' ')
                    ),
                ));
            }
        }
        let first = t
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .next()
            .unwrap_or("");
        match first {
            "if" | "range" | "with" => open.push(first),
            "end" => {
                open.pop();
            }
            _ => {}
        }
    }
    Ok(())
}

/// Go's lexer ends a comment action only at `*/}}` or `*/ -}}`; anything between the
/// comment and the delimiter is "comment ends before closing delimiter". gotmpl takes it.
fn comments(src: &str) -> Result<(), TemplateError> {
    for (offset, body) in actions(src) {
        let opened = body.strip_prefix("- ").unwrap_or(body);
        if !opened.starts_with("/*") {
            continue;
        }
        let Some(close) = opened[2..].find("*/") else {
            continue;
        };
        let after = &opened[2 + close + 2..];
        if !(after.is_empty() || after == " -") {
            return Err(parse_error(
                src,
                offset,
                "comment ends before closing delimiter".to_owned(),
            ));
        }
    }
    Ok(())
}

/// Go's quoted strings end at the line, and its parser needs a space, `|` or `)` after
/// an operand (a field chain excepted):
/// `{{..}}`, `{{"a""b"}}`, `{{.A$x}}` are "unexpected … in operand". gotmpl splits them
/// into operands. Only the clear cases are refused: an operand followed at once by the
/// start of another (a dot, a quote, a `$`, a `(`), never a template Go takes.
fn adjacent_operands(src: &str) -> Result<(), TemplateError> {
    for (offset, body) in actions(src) {
        let inner = body.strip_prefix("- ").unwrap_or(body);
        if inner.starts_with("/*") {
            continue;
        }
        let b = inner.as_bytes();
        // Go's parser wants a space, `|` or `)` after an operand: a quote, `$`, `(`, a
        // name or a number right after one is "unexpected … in operand".
        let starts_operand = |c: u8| matches!(c, b'"' | b'`' | b'\'' | b'$' | b'(') || word(c);
        let mut i = 0;
        // Whether the token just read is an operand, and whether a `.field` may follow it.
        let mut after: Option<bool> = None;
        while i < b.len() {
            let c = b[i];
            let start = i;
            let (operand, chains) = match c {
                b'"' | b'\'' => {
                    i += 1;
                    while i < b.len() && b[i] != c {
                        // Go's quoted strings and characters end at the line.
                        if b[i] == b'\n' {
                            return Err(parse_error(
                                src,
                                offset + 2 + start,
                                "unterminated quoted string".to_owned(),
                            ));
                        }
                        i += if b[i] == b'\\' { 2 } else { 1 };
                    }
                    i += 1;
                    // Go reads the literal with strconv.Unquote: its escapes only.
                    let literal = inner.get(start..i.min(inner.len())).unwrap_or("");
                    if i <= inner.len() && !unquotes(literal) {
                        return Err(parse_error(
                            src,
                            offset + 2 + start,
                            "invalid syntax in a quoted string".to_owned(),
                        ));
                    }
                    (true, false)
                }
                b'`' => {
                    i += 1;
                    while i < b.len() && b[i] != b'`' {
                        i += 1;
                    }
                    i += 1;
                    (true, false)
                }
                b'.' if b.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                    i = number_end(b, i + 1, true);
                    if !underscores_between_digits(&b[start..i]) {
                        return Err(parse_error(
                            src,
                            offset + 2 + start,
                            "illegal number syntax".to_owned(),
                        ));
                    }
                    signed_after_number(src, offset + 2, inner, start, i)?;
                    (true, false)
                }
                b'.' | b'$' => {
                    i += 1;
                    while i < b.len() && word(b[i]) {
                        i += 1;
                    }
                    if !terminated(b, i) {
                        return Err(bad_character(src, offset + 2 + i, inner, i));
                    }
                    // A lone dot takes no field; `.A`, `$`, `$x` do.
                    (true, !(c == b'.' && i == start + 1))
                }
                b')' => {
                    i += 1;
                    (true, true)
                }
                c if c.is_ascii_digit() => {
                    i = number_end(b, i + 1, false);
                    if !underscores_between_digits(&b[start..i]) {
                        return Err(parse_error(
                            src,
                            offset + 2 + start,
                            "illegal number syntax".to_owned(),
                        ));
                    }
                    signed_after_number(src, offset + 2, inner, start, i)?;
                    if hex_point_without_exponent(&b[start..i]) {
                        return Err(parse_error(
                            src,
                            offset + 2 + start,
                            format!("illegal number syntax: {:?}", &inner[start..i]),
                        ));
                    }
                    if octal_with_decimal_digits(&b[start..i]) {
                        return Err(parse_error(
                            src,
                            offset + 2 + start,
                            format!("integer overflow: {:?}", &inner[start..i]),
                        ));
                    }
                    (true, false)
                }
                c if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 => {
                    while i < b.len() && word(b[i]) {
                        i += 1;
                    }
                    if !terminated(b, i) {
                        return Err(bad_character(src, offset + 2 + i, inner, i));
                    }
                    // A keyword leaves what follows to the parser (`if(…)` is Go's);
                    // a function name or a constant is an operand (`len(…)` is not).
                    // A field may follow a function name (Go fails at execution), not
                    // a constant (`nil.F`: Go's "unexpected . after term").
                    let constant = matches!(&inner[start..i], "true" | "false" | "nil");
                    let keyword = matches!(
                        &inner[start..i],
                        "if" | "else"
                            | "end"
                            | "range"
                            | "with"
                            | "template"
                            | "define"
                            | "block"
                            | "break"
                            | "continue"
                    );
                    (!keyword, !constant)
                }
                c if (c < 0x20 && !matches!(c, b'\t' | b'\r' | b'\n')) || c == 0x7f => {
                    // Go's lexer knows only these spaces; gotmpl took any.
                    return Err(parse_error(
                        src,
                        offset + 2 + start,
                        format!("unrecognized character in action: U+{c:04X}"),
                    ));
                }
                _ => {
                    i += 1;
                    (false, false)
                }
            };
            if let Some(chains_before) = after
                && (starts_operand(c) || (c == b'.' && operand && !(chains_before && chains)))
            {
                return Err(parse_error(
                    src,
                    offset + 2 + start,
                    format!("unexpected {:?} in operand", char::from(c)),
                ));
            }
            after = operand.then_some(chains);
        }
    }
    Ok(())
}

/// The source as gotmpl should read it: each comment action made an action that prints
/// nothing, its trim markers kept (`{{- /* … */ -}}` becomes `{{- "" -}}`), and a `|`
/// ending a pipeline dropped. gotmpl's lexer ends a comment
/// at a `}}` inside it and trims the right of `{{- /* … */}}` too; Go ends it only at
/// `*/` and trims only the side marked (both found by the differential fuzz target).
pub(crate) fn without_comment_text(src: &str) -> std::borrow::Cow<'_, str> {
    let mut out = String::new();
    let mut copied = 0;
    for (offset, body) in actions(src) {
        let lead = if body.starts_with("- ") { 2 } else { 0 };
        let inner = &body[lead..];
        let Some(close) = inner.strip_prefix("/*").and_then(|c| c.find("*/")) else {
            // Go ends a pipeline quietly at a `|` before the delimiter; gotmpl calls the
            // empty command after it an error (found by the differential fuzz target).
            let end = body
                .strip_suffix(" -")
                .unwrap_or(body)
                .trim_end_matches([' ', '\t', '\r', '\n']);
            if end.ends_with('|') && !end.ends_with("||") && end.len() > 1 {
                let at = offset + 2 + end.len() - 1;
                out.push_str(&src[copied..at]);
                out.push(' ');
                copied = at + 1;
            }
            continue;
        };
        // From `/*` to the end of `*/`.
        let from = offset + 2 + lead;
        let to = from + 2 + close + 2;
        out.push_str(&src[copied..from]);
        out.push_str("\"\"");
        copied = to;
    }
    if copied == 0 {
        return std::borrow::Cow::Borrowed(src);
    }
    out.push_str(&src[copied..]);
    std::borrow::Cow::Owned(out)
}

/// Whether Go's strconv.Unquote takes `literal` (`"…"` or `'…'`, quotes included): its
/// escapes are `\a \b \f \n \r \t \v \\`, the literal's own quote, `\x` with 2 hex
/// digits, `\u` with 4, `\U` with 8 (a valid character), or 3 octal digits up to 377;
/// a character literal holds one character.
fn unquotes(literal: &str) -> bool {
    let bytes = literal.as_bytes();
    let (Some(&quote), Some(&last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    if literal.len() < 2 || last != quote {
        return false;
    }
    let body = &literal[1..literal.len() - 1];
    let mut chars = body.chars().peekable();
    let mut count = 0;
    while let Some(c) = chars.next() {
        count += 1;
        if c == char::from(quote) {
            return false;
        }
        if c != '\\' {
            continue;
        }
        let Some(e) = chars.next() else { return false };
        let hex = |n: usize, chars: &mut std::iter::Peekable<std::str::Chars<'_>>| {
            let digits: String = (0..n).filter_map(|_| chars.next()).collect();
            digits.len() == n
                && u32::from_str_radix(&digits, 16)
                    .is_ok_and(|v| n == 2 || char::from_u32(v).is_some())
        };
        let ok = match e {
            'a' | 'b' | 'f' | 'n' | 'r' | 't' | 'v' | '\\' => true,
            '\'' | '"' => e == char::from(quote),
            'x' => hex(2, &mut chars),
            'u' => hex(4, &mut chars),
            'U' => hex(8, &mut chars),
            '0'..='7' => {
                let rest: String = (0..2).filter_map(|_| chars.next()).collect();
                rest.len() == 2
                    && u32::from_str_radix(&format!("{e}{rest}"), 8).is_ok_and(|v| v <= 0o377)
            }
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    quote == b'"' || count == 1
}

/// A byte of a name: ASCII letters, digits, `_`, and any byte of a non-ASCII character
/// (Go takes Unicode letters; taking every non-ASCII byte refuses nothing Go takes).
fn word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80
}

/// Go's lexer ends a name (a field, a variable, a keyword or a function) only at a
/// space, `.`, `,`, `|`, `:`, `(`, `)` or the end of the action.
fn terminated(b: &[u8], i: usize) -> bool {
    b.get(i).is_none_or(|c| {
        matches!(
            c,
            b' ' | b'\t' | b'\r' | b'\n' | b'.' | b',' | b'|' | b':' | b')' | b'('
        )
    })
}

fn bad_character(src: &str, at: usize, inner: &str, i: usize) -> TemplateError {
    let c = inner[i..].chars().next().unwrap_or(' ');
    parse_error(src, at, format!("bad character U+{:04X}", u32::from(c)))
}

fn actions(src: &str) -> Vec<(usize, &str)> {
    let bytes = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(start) = src[i..].find("{{").map(|k| i + k) {
        let mut j = start + 2;
        let mut end = None;
        while j < bytes.len() {
            match bytes[j] {
                b'"' | b'\'' => {
                    let quote = bytes[j];
                    j += 1;
                    while j < bytes.len() && bytes[j] != quote {
                        if bytes[j] == b'\\' {
                            j += 1;
                        }
                        j += 1;
                    }
                }
                b'`' => {
                    j += 1;
                    while j < bytes.len() && bytes[j] != b'`' {
                        j += 1;
                    }
                }
                b'/' if bytes.get(j + 1) == Some(&b'*') => {
                    j = src[j + 2..]
                        .find("*/")
                        .map_or(bytes.len(), |k| j + 2 + k + 1);
                }
                b'}' if bytes.get(j + 1) == Some(&b'}') => {
                    end = Some(j);
                    break;
                }
                _ => {}
            }
            j += 1;
        }
        let Some(end) = end else { break };
        out.push((start, &src[start + 2..end]));
        i = end + 2;
    }
    out
}
