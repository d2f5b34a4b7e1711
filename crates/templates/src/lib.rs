//! Go `text/template` for endpoint URLs, headers and bodies, on the `gotmpl` crate,
//! with the bounds a multi-tenant renderer needs.
//!
//! - Output is byte-identical to Go's `text/template` for every supported feature (a
//!   differential test runs real Go on the same corpus).
//! - Features outside the supported set are refused when the template is parsed,
//!   with the feature named and its position, never rendered differently from Go.
//! - A hostile template cannot exhaust the renderer: the template's size, its
//!   output, its range iterations and the bytes its string functions build are capped,
//!   each with its own error code.

mod check;
mod escape;
mod funcs;
mod gofmt;
mod isprint_table;
mod lexical;
mod numbers;
mod rewrite;
mod strconv;

use std::io::Write;

use gotmpl::Value;
use serde_json::Value as Json;

/// Bounds on one template.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest template source, in bytes.
    pub max_template_bytes: usize,
    /// Largest rendered output, in bytes.
    pub max_output_bytes: usize,
    /// `{{range}}` iterations per render, across all ranges.
    pub max_range_iterations: u64,
    /// Bytes that `printf`, `print`, `println`, `html`, `js` and `urlquery` may build
    /// in one render, and in one call.
    pub max_function_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_template_bytes: 16 * 1024,
            max_output_bytes: 1024 * 1024,
            max_range_iterations: 10_000,
            max_function_bytes: 4 * 1024 * 1024,
        }
    }
}

/// Why a template was refused or could not be rendered. Messages name positions and
/// features, never data values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The source does not parse.
    #[error("line {line}, column {col}: {message}")]
    Parse {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        col: usize,
        /// What the parser says.
        message: String,
    },
    /// A feature hookline does not support.
    #[error("line {line}, column {col}: {feature} is not supported")]
    Unsupported {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        col: usize,
        /// The feature, e.g. `{{template}}` or the function `call`.
        feature: String,
    },
    /// The source is larger than allowed.
    #[error("template is {size} bytes; at most {limit} are allowed")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The output grew past its limit.
    #[error("output exceeds {0} bytes")]
    OutputLimit(usize),
    /// Too many range iterations.
    #[error("more than {0} range iterations")]
    RangeLimit(u64),
    /// String functions built too many bytes.
    #[error("string functions built more than {0} bytes")]
    WorkLimit(usize),
    /// Execution failed (wrong types, index out of range, ...).
    #[error("execution failed: {0}")]
    Exec(String),
}

impl TemplateError {
    /// The stable code, for dead letters and API errors.
    pub fn code(&self) -> &'static str {
        match self {
            TemplateError::Parse { .. } => "HL-TEMPLATE-PARSE",
            TemplateError::Unsupported { .. } => "HL-TEMPLATE-UNSUPPORTED",
            TemplateError::TooLarge { .. } => "HL-TEMPLATE-TOO-LARGE",
            TemplateError::OutputLimit(_) => "HL-TEMPLATE-OUTPUT-LIMIT",
            TemplateError::RangeLimit(_) => "HL-TEMPLATE-RANGE-LIMIT",
            TemplateError::WorkLimit(_) => "HL-TEMPLATE-WORK-LIMIT",
            TemplateError::Exec(_) => "HL-TEMPLATE-EXEC",
        }
    }
}

/// A parsed, checked template.
#[derive(Clone)]
pub struct Template {
    inner: gotmpl::Template,
    limits: Limits,
    /// The source of a template without actions, which Go prints as written whatever
    /// the data: [`Template::render_with`] then never asks for the data.
    literal: Option<String>,
}

impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Template")
            .field("name", &self.inner.name())
            .finish_non_exhaustive()
    }
}

impl Template {
    /// Parses and checks `source`.
    pub fn parse(name: &str, source: &str, limits: Limits) -> Result<Template, TemplateError> {
        if source.len() > limits.max_template_bytes {
            return Err(TemplateError::TooLarge {
                size: source.len(),
                limit: limits.max_template_bytes,
            });
        }
        // gotmpl gets comments as actions that print nothing (see the function); the
        // checks read the source as written.
        let lexed = lexical::without_comment_text(source);
        let parsed = funcs::install(gotmpl::Template::new(name), limits)
            .max_range_iters(limits.max_range_iterations)
            .parse(&lexed)
            .map_err(|e| match e {
                gotmpl::TemplateError::Parse {
                    line, col, message, ..
                }
                | gotmpl::TemplateError::Lex {
                    line, col, message, ..
                } => TemplateError::Parse { line, col, message },
                other => TemplateError::Parse {
                    line: 0,
                    col: 0,
                    message: safe_message(&other),
                },
            })?;
        // The parser's own tree (gotmpl keeps no tree for a template of only blanks,
        // which Go still prints), checked for what hookline supports.
        let (tree, defines) = gotmpl::parse::Parser::new(&lexed, "{{", "}}")
            .and_then(gotmpl::parse::Parser::parse)
            .map_err(|e| TemplateError::Parse {
                line: 0,
                col: 0,
                message: safe_message(&e),
            })?;
        check::supported(&tree, &defines, source)?;
        drop(parsed);
        // Execute a copy of the tree whose printing actions end in hookline's Go-exact
        // printer, called from a one-line root: `{{template "main" .}}`.
        let inner = funcs::install(gotmpl::Template::new("hookline"), limits)
            .max_range_iters(limits.max_range_iterations)
            .parse("{{template \"main\" .}}")
            .map_err(|e| TemplateError::Parse {
                line: 0,
                col: 0,
                message: safe_message(&e),
            })?
            .add_parse_tree("main", rewrite::rewrite(tree));
        // No `{{`, so no action and no comment: one text node, printed as written.
        let literal = (!source.contains("{{") && source.len() <= limits.max_output_bytes)
            .then(|| source.to_owned());
        Ok(Template {
            inner,
            limits,
            literal,
        })
    }

    /// The text of a template without actions, which every render prints as written.
    pub fn literal(&self) -> Option<&str> {
        self.literal.as_deref()
    }

    /// Renders with `data` (see [`data_from_json`]).
    pub fn render(&self, data: &Value) -> Result<Vec<u8>, TemplateError> {
        self.render_with(|| data)
    }

    /// Renders with the data `data` gives, asked for only when the output depends on
    /// it: a template without actions prints its source, so a caller whose templates
    /// are plain text never builds the data.
    pub fn render_with<'d>(
        &self,
        data: impl FnOnce() -> &'d Value,
    ) -> Result<Vec<u8>, TemplateError> {
        if let Some(text) = &self.literal {
            return Ok(text.as_bytes().to_vec());
        }
        let data = data();
        let mut out = Capped {
            buf: Vec::with_capacity(256),
            limit: self.limits.max_output_bytes,
            overflowed: false,
        };
        let result = funcs::with_budget(self.limits.max_function_bytes, || {
            self.inner.execute(&mut out, data)
        });
        match result {
            Ok(()) => Ok(out.buf),
            Err(_) if out.overflowed => {
                Err(TemplateError::OutputLimit(self.limits.max_output_bytes))
            }
            Err(funcs::Outcome::Budget) => {
                Err(TemplateError::WorkLimit(self.limits.max_function_bytes))
            }
            Err(funcs::Outcome::Unsupported(what)) => Err(TemplateError::Unsupported {
                line: 0,
                col: 0,
                feature: what.to_owned(),
            }),
            Err(funcs::Outcome::Template(gotmpl::TemplateError::RangeIterLimit)) => {
                Err(TemplateError::RangeLimit(self.limits.max_range_iterations))
            }
            // Go cuts strings by bytes and writes half a character; hookline's strings
            // are UTF-8, so it refuses rather than write something else.
            Err(funcs::Outcome::Template(gotmpl::TemplateError::Exec(m)))
                if m.contains("not on UTF-8 character boundary") =>
            {
                Err(TemplateError::Unsupported {
                    line: 0,
                    col: 0,
                    feature: "slicing a string inside a UTF-8 character".to_owned(),
                })
            }
            Err(funcs::Outcome::Template(e)) => Err(TemplateError::Exec(safe_message(&e))),
        }
    }

    /// Renders to a string (templates of text: URLs, headers).
    pub fn render_string(&self, data: &Value) -> Result<String, TemplateError> {
        self.render_string_with(|| data)
    }

    /// [`Template::render_string`] with the data asked for as [`Template::render_with`]
    /// asks for it.
    pub fn render_string_with<'d>(
        &self,
        data: impl FnOnce() -> &'d Value,
    ) -> Result<String, TemplateError> {
        let bytes = self.render_with(data)?;
        String::from_utf8(bytes)
            .map_err(|_| TemplateError::Exec("output is not valid UTF-8".to_owned()))
    }
}

/// The template data model: JSON objects are maps (ranged in sorted key order, as Go
/// ranges a `map[string]any`), integers are `int64`, other numbers `float64`.
pub fn data_from_json(json: &Json) -> Value {
    match json {
        Json::Null => Value::Nil,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Value::Int(i),
            (None, Some(u)) => Value::Uint(u),
            _ => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::String(s.as_str().into()),
        Json::Array(items) => Value::List(items.iter().map(data_from_json).collect()),
        Json::Object(obj) => {
            let map: std::collections::BTreeMap<std::sync::Arc<str>, Value> = obj
                .iter()
                .map(|(k, v)| (k.as_str().into(), data_from_json(v)))
                .collect();
            Value::Map(map.into())
        }
    }
}

/// gotmpl's execution messages name types and template positions; the few that could
/// carry a data value are reduced to their kind.
fn safe_message(e: &gotmpl::TemplateError) -> String {
    match e {
        gotmpl::TemplateError::Exec(_)
        | gotmpl::TemplateError::FuncPanic { .. }
        | gotmpl::TemplateError::Io(_) => {
            "the template could not be executed with this data".to_owned()
        }
        other => other.to_string(),
    }
}

/// Output buffer that refuses to grow past its limit.
struct Capped {
    buf: Vec<u8>,
    limit: usize,
    overflowed: bool,
}

impl Write for Capped {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + bytes.len() > self.limit {
            self.overflowed = true;
            return Err(std::io::Error::other("output limit"));
        }
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A template without actions prints its source, as the executed template does.
    #[test]
    fn a_literal_prints_what_the_executed_template_prints() {
        let data = Value::Nil;
        for source in [
            "https://hooks.example.com/in?a=1&b=%7B",
            "",
            " \n\t",
            "}} stray closers } and a lone { brace",
            "caf\u{e9} \u{1f980} \\n",
        ] {
            let fast = Template::parse("t", source, Limits::default()).unwrap();
            assert_eq!(fast.literal.as_deref(), Some(source));
            let mut slow = fast.clone();
            slow.literal = None;
            assert_eq!(
                fast.render(&data).unwrap(),
                slow.render(&data).unwrap(),
                "{source:?}"
            );
            let unasked = fast.render_with(|| panic!("a literal needs no data"));
            assert_eq!(unasked.unwrap(), source.as_bytes());
        }
        for source in ["{{.Id}}", "a{{/* c */}}b", "{{- \" x \" -}}"] {
            let t = Template::parse("t", source, Limits::default()).unwrap();
            assert_eq!(t.literal, None, "{source:?}");
            let mut asked = false;
            let _ = t.render_with(|| {
                asked = true;
                &data
            });
            assert!(asked, "{source:?}");
        }
    }

    /// A literal longer than the output limit is refused as the executed one is.
    #[test]
    fn a_literal_over_the_output_limit_is_refused() {
        let limits = Limits {
            max_output_bytes: 4,
            ..Limits::default()
        };
        let t = Template::parse("t", "12345", limits).unwrap();
        assert_eq!(t.literal, None);
        assert!(matches!(
            t.render(&Value::Nil),
            Err(TemplateError::OutputLimit(4))
        ));
    }
}
