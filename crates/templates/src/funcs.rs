//! The string-building functions (`printf`, `print`, `println`, `html`, `js`,
//! `urlquery`) under a byte budget.
//!
//! Each is replaced by a wrapper that checks the size of what it is given and of
//! what it built against the render's budget, and delegates the formatting itself to
//! gotmpl's own built-in through a one-action helper template (`{{printf .A0 .A1}}`),
//! so the bytes are exactly those of the built-in, and so Go's. Without the budget, a
//! template doubling a string in a loop would exhaust memory long before its output
//! reached the output cap.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use gotmpl::Value;

use crate::check::{format_problem, MAX_ARGS};
use crate::Limits;

const WRAPPED: &[&str] = &["printf", "print", "println", "html", "js", "urlquery"];

thread_local! {
    /// Bytes the current render may still build (renders run on one thread each).
    static REMAINING: Cell<usize> = const { Cell::new(usize::MAX) };
    static FAILURE: RefCell<Option<Failure>> = const { RefCell::new(None) };
}

enum Failure {
    Budget,
    Format(String),
}

/// How a render under a budget ended badly.
pub(crate) enum Outcome {
    /// The budget ran out.
    Budget,
    /// gotmpl refused (or a wrapper did, with a reason folded into the error).
    Template(gotmpl::TemplateError),
}

/// Runs one render with `budget` bytes for the string functions.
pub(crate) fn with_budget(budget: usize, render: impl FnOnce() -> gotmpl::Result<()>) -> Result<(), Outcome> {
    let previous = REMAINING.with(|r| r.replace(budget));
    FAILURE.with(|f| f.borrow_mut().take());
    let result = render();
    REMAINING.with(|r| r.set(previous));
    let failure = FAILURE.with(|f| f.borrow_mut().take());
    match (result, failure) {
        (Ok(()), _) => Ok(()),
        (Err(_), Some(Failure::Budget)) => Err(Outcome::Budget),
        (Err(_), Some(Failure::Format(why))) => Err(Outcome::Template(gotmpl::TemplateError::Parse {
            name: None,
            line: 0,
            col: 0,
            message: why,
        })),
        (Err(e), None) => Err(Outcome::Template(e)),
    }
}

/// Registers the wrappers on a template about to be parsed.
pub(crate) fn install(mut template: gotmpl::Template, limits: Limits) -> gotmpl::Template {
    for name in WRAPPED {
        let name: &'static str = name;
        let per_call = limits.max_function_bytes;
        template = template.func(name, move |args| call(name, args, per_call));
    }
    template
}

fn call(name: &'static str, args: &[Value], per_call: usize) -> gotmpl::Result<Value> {
    if name == "printf" {
        if let Some(Value::String(format)) = args.first() {
            if let Some(problem) = format_problem(format) {
                return Err(fail(Failure::Format(format!("{problem} is not supported"))));
            }
        }
    }
    // What a call can build is bounded by what it is given: refuse early when that is
    // already past the budget (escaping grows a string at most 6 times, %q 4 times).
    let given: usize = args.iter().map(size).fold(0, usize::saturating_add);
    let remaining = REMAINING.with(Cell::get);
    if given > per_call.min(remaining) {
        return Err(fail(Failure::Budget));
    }
    let helper = helpers().get(&(name, args.len())).ok_or_else(|| {
        gotmpl::TemplateError::Exec(format!("{name}: at most {} arguments", MAX_ARGS + 1))
    })?;
    let data: BTreeMap<Arc<str>, Value> =
        args.iter().enumerate().map(|(i, v)| (Arc::from(format!("A{i}")), v.clone())).collect();
    let built = helper.execute_to_string(&Value::Map(data.into()))?;
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
        Value::List(items) => items.iter().map(size).fold(2, |a, b| a.saturating_add(b).saturating_add(1)),
        Value::Map(map) => map
            .iter()
            .map(|(k, v)| k.len().saturating_add(size(v)).saturating_add(2))
            .fold(5, usize::saturating_add),
        _ => 32,
    }
}

/// One helper template per (function, arity): `{{printf .A0 .A1}}`.
fn helpers() -> &'static BTreeMap<(&'static str, usize), gotmpl::Template> {
    static HELPERS: OnceLock<BTreeMap<(&'static str, usize), gotmpl::Template>> = OnceLock::new();
    HELPERS.get_or_init(|| {
        let mut all = BTreeMap::new();
        for name in WRAPPED {
            for arity in 0..=MAX_ARGS + 1 {
                let args: String = (0..arity).map(|i| format!(" .A{i}")).collect();
                if let Ok(t) = gotmpl::Template::new(name).parse(&format!("{{{{{name}{args}}}}}")) {
                    all.insert((*name, arity), t);
                }
            }
        }
        all
    })
}
