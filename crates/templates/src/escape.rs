//! text/template's escaping functions (`html`, `js`, `urlquery`) and how they take
//! their arguments.

use gotmpl::Value;

use crate::gofmt::{Unsupported, sprint};
use crate::strconv::{UPPER, is_print};

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
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b))
            }
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
                .map(|a| {
                    if let Value::Nil = a {
                        Value::String("<no value>".into())
                    } else {
                        a.clone()
                    }
                })
                .collect();
            match printable.as_slice() {
                [Value::String(s)] => Ok(s.to_string()),
                _ => sprint(&printable),
            }
        }
    }
}
