//! The string-building functions (`printf`, `print`, `println`, `html`, `js`,
//! `urlquery`) under a byte budget.
//!
//! gotmpl's own printing differs from Go's (floats, `%q` of non-ASCII runes, verbs
//! applied to lists and maps, type names in `%!verb(...)`), so hookline replaces every
//! function that prints, and the printing of actions themselves, with its Go-exact
//! `gofmt`. Each call is checked against the render's byte budget: without it, a
//! template doubling a string in a loop would exhaust memory long before its output
//! reached the output cap.

use std::cell::{Cell, RefCell};

use gotmpl::Value;

use crate::{Limits, escape, gofmt};

const WRAPPED: &[&str] = &[
    "printf", "print", "println", "html", "js", "urlquery", PRINT,
];

/// The function every printing action is rewritten to end with (see `rewrite::rewrite`).
pub(crate) const PRINT: &str = "hookline_print";

/// The function every field access is rewritten to (see `rewrite::rewrite`): its first
/// argument the receiver, the others the field names.
pub(crate) const FIELD: &str = "hookline_field";

/// The function `index X` (no index) is rewritten to: X itself, as Go gives it, or
/// Go's error for nil (gotmpl wants an index).
pub(crate) const INDEX_SELF: &str = "hookline_index_self";

/// The function a field given arguments (`{{.A.B 1}}`, a method call in Go) is
/// rewritten to: the receiver, the number of names, the names, then the arguments.
pub(crate) const METHOD: &str = "hookline_method";

thread_local! {
    /// Bytes the current render may still build (renders run on one thread each).
    static REMAINING: Cell<usize> = const { Cell::new(usize::MAX) };
    static FAILURE: RefCell<Option<Failure>> = const { RefCell::new(None) };
}

enum Failure {
    Budget,
    Unsupported(&'static str),
}

/// How a render under a budget ended badly.
pub(crate) enum Outcome {
    /// The budget ran out.
    Budget,
    /// A format hookline does not render like Go.
    Unsupported(&'static str),
    /// gotmpl refused.
    Template(gotmpl::TemplateError),
}

/// Runs one render with `budget` bytes for the string functions.
pub(crate) fn with_budget(
    budget: usize,
    render: impl FnOnce() -> gotmpl::Result<()>,
) -> Result<(), Outcome> {
    let previous = REMAINING.with(|r| r.replace(budget));
    FAILURE.with(|f| f.borrow_mut().take());
    let result = render();
    REMAINING.with(|r| r.set(previous));
    let failure = FAILURE.with(|f| f.borrow_mut().take());
    match (result, failure) {
        (Ok(()), _) => Ok(()),
        (Err(_), Some(Failure::Budget)) => Err(Outcome::Budget),
        (Err(_), Some(Failure::Unsupported(what))) => Err(Outcome::Unsupported(what)),
        (Err(e), None) => Err(Outcome::Template(e)),
    }
}

/// Registers hookline's Go-exact printing functions on a template about to be parsed.
pub(crate) fn install(mut template: gotmpl::Template, limits: Limits) -> gotmpl::Template {
    for name in WRAPPED {
        let name: &'static str = name;
        let per_call = limits.max_function_bytes;
        template = template.func(name, move |args| call(name, args, per_call));
    }
    template
        .func(FIELD, field)
        .func(METHOD, method)
        .func(INDEX_SELF, |args| match args {
            [Value::Nil] => Err(gotmpl::TemplateError::Exec(
                "error calling index: index of untyped nil".to_owned(),
            )),
            [item] => Ok(item.clone()),
            _ => Err(gotmpl::TemplateError::Exec(
                "wrong number of args for index".to_owned(),
            )),
        })
}

/// A field given arguments: data holds no methods, so Go fails, unless a key missing
/// before the last name ends the chain first (then it is no value, as in [`field`]).
fn method(args: &[Value]) -> gotmpl::Result<Value> {
    let (Some(receiver), Some(Value::Int(count))) = (args.first(), args.get(1)) else {
        return Err(gotmpl::TemplateError::Exec(
            "a method of nothing".to_owned(),
        ));
    };
    let count = usize::try_from(*count).unwrap_or(0);
    let names = args.get(2..2 + count).unwrap_or_default();
    let Some((last, path)) = names.split_last() else {
        return Err(gotmpl::TemplateError::Exec(
            "a method of nothing".to_owned(),
        ));
    };
    // The chain before the last name: a missing key there ends it with no value.
    let mut value = receiver.clone();
    for name in path {
        let Value::String(name) = name else {
            return Err(gotmpl::TemplateError::Exec(
                "a field name is text".to_owned(),
            ));
        };
        match &value {
            Value::Map(map) => match map.get(name.as_ref()) {
                Some(v) => value = v.clone(),
                None => return Ok(Value::Nil),
            },
            // Not a map: `field` says why (a nil pointer, a field of a scalar).
            _ => {
                field(&[value.clone(), Value::String(name.clone())])?;
                return unreachable_field().map(|()| Value::Nil);
            }
        }
    }
    let Value::String(last) = last else {
        return Err(gotmpl::TemplateError::Exec(
            "a field name is text".to_owned(),
        ));
    };
    match &value {
        Value::Map(_) => Err(gotmpl::TemplateError::Exec(format!(
            "{last} is not a method but has arguments"
        ))),
        other => {
            field(&[other.clone(), Value::String(last.clone())])?;
            Err(gotmpl::TemplateError::Exec(format!(
                "{last} is not a method but has arguments"
            )))
        }
    }
}

/// [`field`] of a non-map always fails; this keeps the compiler sure of it.
fn unreachable_field() -> gotmpl::Result<()> {
    Err(gotmpl::TemplateError::Exec(
        "can't evaluate a field of this value".to_owned(),
    ))
}

/// A chain of field accesses as Go's text/template evaluates it on hookline's data
/// (maps of any, lists, scalars, nil): a missing key gives no value, and so do the
/// fields after it; a field of a JSON null (a key present with no value, or a nil dot)
/// is Go's "nil pointer evaluating interface {}" error, where gotmpl went on with no
/// value; a field of anything but a map is an error.
fn field(args: &[Value]) -> gotmpl::Result<Value> {
    let Some((receiver, names)) = args.split_first() else {
        return Err(gotmpl::TemplateError::Exec("a field of nothing".to_owned()));
    };
    let mut value = receiver.clone();
    for name in names {
        let Value::String(name) = name else {
            return Err(gotmpl::TemplateError::Exec(
                "a field name is text".to_owned(),
            ));
        };
        value = match &value {
            Value::Map(map) => match map.get(name.as_ref()) {
                Some(v) => v.clone(),
                // Go's zero reflect.Value: printed as no value, its fields too.
                None => return Ok(Value::Nil),
            },
            Value::Nil => {
                return Err(gotmpl::TemplateError::Exec(format!(
                    "nil pointer evaluating interface {{}}.{name}"
                )));
            }
            other => {
                return Err(gotmpl::TemplateError::Exec(format!(
                    "can't evaluate field {name} in type {}",
                    other.type_name()
                )));
            }
        };
    }
    Ok(value)
}

fn call(name: &'static str, args: &[Value], per_call: usize) -> gotmpl::Result<Value> {
    // What a call can build is bounded by what it is given: refuse early when that is
    // already past the budget.
    let given: usize = args.iter().map(size).fold(0, usize::saturating_add);
    let remaining = REMAINING.with(Cell::get);
    if given > per_call.min(remaining) {
        return Err(fail(Failure::Budget));
    }
    let built = match name {
        "printf" => match args.split_first() {
            Some((Value::String(format), rest)) => gofmt::sprintf(format, rest),
            Some(_) => {
                return Err(gotmpl::TemplateError::Exec(
                    "printf: the format must be a string".to_owned(),
                ));
            }
            None => {
                return Err(gotmpl::TemplateError::Exec(
                    "printf: missing format".to_owned(),
                ));
            }
        },
        "print" => gofmt::sprint(args),
        "println" => gofmt::sprintln(args),
        "html" => escape::eval_args(args).map(|s| escape::html_escape(&s)),
        "js" => escape::eval_args(args).map(|s| escape::js_escape(&s)),
        "urlquery" => escape::eval_args(args).map(|s| escape::query_escape(&s)),
        // An action's value, printed as text/template prints it.
        _ => match args {
            [Value::Nil] => Ok("<no value>".to_owned()),
            [v] => gofmt::sprint(std::slice::from_ref(v)),
            _ => gofmt::sprint(args),
        },
    };
    let built = built.map_err(|gofmt::Unsupported(what)| fail(Failure::Unsupported(what)))?;
    if built.len() > per_call || built.len() > remaining {
        return Err(fail(Failure::Budget));
    }
    REMAINING.with(|r| r.set(remaining - built.len()));
    Ok(Value::String(built.into()))
}

fn fail(failure: Failure) -> gotmpl::TemplateError {
    FAILURE.with(|f| *f.borrow_mut() = Some(failure));
    gotmpl::TemplateError::Exec("hookline limit".to_owned())
}

/// An upper bound of the bytes a value prints as.
fn size(v: &Value) -> usize {
    match v {
        Value::String(s) => s.len(),
        Value::List(items) => items
            .iter()
            .map(size)
            .fold(2, |a, b| a.saturating_add(b).saturating_add(1)),
        Value::Map(map) => map
            .iter()
            .map(|(k, v)| k.len().saturating_add(size(v)).saturating_add(2))
            .fold(5, usize::saturating_add),
        _ => 32,
    }
}
