//! The supported subset, checked on the parse tree: what hookline renders is exactly
//! what the differential test compares with Go.

use gotmpl::parse::{Expr, ListNode, Node, PipeNode, SmolStr};

use crate::{TemplateError, lexical};

/// Functions a template may call.
pub(crate) const FUNCTIONS: &[&str] = &[
    "and", "or", "not", "eq", "ne", "lt", "le", "gt", "ge", "len", "index", "slice", "print",
    "printf", "println", "html", "js", "urlquery",
];

/// Arguments one call may take.
pub(crate) const MAX_ARGS: usize = 16;

pub(crate) fn supported(
    tree: &ListNode,
    defines: &[gotmpl::parse::DefineNode],
    source: &str,
) -> Result<(), TemplateError> {
    lexical::refused(source)?;
    if let Some(define) = defines.first() {
        return Err(unsupported(
            source,
            define.pos.offset,
            "{{define}} / {{block}} (named templates)",
        ));
    }
    list(tree, source)?;
    variables(tree, &mut vec!["$".into()], source)
}

/// Go's parser refuses a variable used before it is declared, and an assignment
/// (`$x = …`) to a variable never declared parses in Go but fails when executed.
/// gotmpl takes both (its assignment declares), so both are refused here, at creation.
/// A variable lives until the `{{end}}` of the control structure it was declared in, as
/// in Go's parser (`popVars`).
fn variables(l: &ListNode, scope: &mut Vec<SmolStr>, src: &str) -> Result<(), TemplateError> {
    for n in &l.nodes {
        match n {
            Node::List(inner) => variables(inner, scope, src)?,
            Node::Action(a) => declared(&a.pipe, scope, src)?,
            Node::If(b) | Node::Range(b) | Node::With(b) => {
                let mark = scope.len();
                declared(&b.pipe, scope, src)?;
                variables(&b.body, scope, src)?;
                if let Some(e) = &b.else_body {
                    variables(e, scope, src)?;
                }
                scope.truncate(mark);
            }
            _ => {}
        }
    }
    Ok(())
}

/// Checks a pipeline's variables against `scope`, then applies its declarations.
fn declared(p: &PipeNode, scope: &mut Vec<SmolStr>, src: &str) -> Result<(), TemplateError> {
    uses(p, scope, src)?;
    for name in &p.decl {
        if p.is_assign && !scope.contains(name) {
            return Err(parse_error(
                src,
                p.pos.offset,
                format!("assignment to undeclared variable {name}"),
            ));
        }
        if !p.is_assign {
            scope.push(name.clone());
        }
    }
    Ok(())
}

fn uses(p: &PipeNode, scope: &[SmolStr], src: &str) -> Result<(), TemplateError> {
    fn expr(e: &Expr, scope: &[SmolStr], src: &str) -> Result<(), TemplateError> {
        match e {
            Expr::Variable(pos, name, _) if !scope.contains(name) => Err(parse_error(
                src,
                pos.offset,
                format!("undefined variable {name}"),
            )),
            Expr::Pipe(_, p) => uses(p, scope, src),
            Expr::Chain(_, inner, _) => expr(inner, scope, src),
            _ => Ok(()),
        }
    }
    p.commands
        .iter()
        .flat_map(|c| &c.args)
        .try_for_each(|a| expr(a, scope, src))
}

fn list(l: &ListNode, src: &str) -> Result<(), TemplateError> {
    l.nodes.iter().try_for_each(|n| node(n, src))
}

fn node(n: &Node, src: &str) -> Result<(), TemplateError> {
    match n {
        Node::List(l) => list(l, src),
        Node::Text(_) | Node::Break(_) | Node::Continue(_) => Ok(()),
        Node::Action(a) => pipe(&a.pipe, src),
        Node::If(b) | Node::Range(b) | Node::With(b) => {
            pipe(&b.pipe, src)?;
            list(&b.body, src)?;
            b.else_body.as_ref().map_or(Ok(()), |e| list(e, src))
        }
        Node::Template(t) => Err(unsupported(
            src,
            t.pos.offset,
            "{{template}} (named templates)",
        )),
        Node::Define(d) => Err(unsupported(
            src,
            d.pos.offset,
            "{{define}} / {{block}} (named templates)",
        )),
    }
}

fn pipe(p: &PipeNode, src: &str) -> Result<(), TemplateError> {
    for command in &p.commands {
        if command.args.len() > MAX_ARGS + 1 {
            return Err(unsupported(
                src,
                command.pos.offset,
                &format!("a call with more than {MAX_ARGS} arguments"),
            ));
        }
        if let Some(Expr::Identifier(_, name)) = command.args.first()
            && name.as_str() == "printf"
            && let Some(Expr::String(pos, format)) = command.args.get(1)
        {
            check_format(format, src, pos.offset)?;
        }
        for arg in &command.args {
            expr(arg, src)?;
        }
    }
    Ok(())
}

fn expr(e: &Expr, src: &str) -> Result<(), TemplateError> {
    match e {
        Expr::Identifier(pos, name) if !FUNCTIONS.contains(&name.as_str()) => Err(unsupported(
            src,
            pos.offset,
            &format!("the function `{name}`"),
        )),
        Expr::Pipe(_, p) => pipe(p, src),
        Expr::Chain(_, inner, _) => expr(inner, src),
        _ => Ok(()),
    }
}

/// Width and precision up to this are rendered exactly as Go does.
pub(crate) const MAX_WIDTH: usize = 1000;

/// A printf format hookline renders like Go: no `*` widths, widths up to 1000.
pub(crate) fn format_problem(format: &str) -> Option<String> {
    let bytes = format.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            i += 1;
            continue;
        }
        i += 1;
        let mut number = 0usize;
        while i < bytes.len() && !bytes[i].is_ascii_alphabetic() && bytes[i] != b'%' {
            match bytes[i] {
                b'*' => return Some("a `*` width or precision in printf".to_owned()),
                b'#' if bytes.get(i + 1) == Some(&b'v') => return Some("the %#v verb".to_owned()),
                b'0'..=b'9' => {
                    number = number
                        .saturating_mul(10)
                        .saturating_add(usize::from(bytes[i] - b'0'));
                    if number > MAX_WIDTH {
                        return Some(format!("a printf width or precision over {MAX_WIDTH}"));
                    }
                }
                _ => number = 0,
            }
            i += 1;
        }
        if let Some(verb @ (b'w' | b'T' | b'p')) = bytes.get(i) {
            return Some(format!("the %{} verb", char::from(*verb)));
        }
        i += 1;
    }
    None
}

fn check_format(format: &str, src: &str, at: usize) -> Result<(), TemplateError> {
    match format_problem(format) {
        Some(problem) => Err(unsupported(src, at, &problem)),
        None => Ok(()),
    }
}

pub(crate) fn unsupported(src: &str, offset: usize, feature: &str) -> TemplateError {
    let (line, col) = position(src, offset);
    TemplateError::Unsupported {
        line,
        col,
        feature: feature.to_owned(),
    }
}

/// A parse error at `offset` of `src`.
pub(crate) fn parse_error(src: &str, offset: usize, message: impl Into<String>) -> TemplateError {
    let (line, col) = position(src, offset);
    TemplateError::Parse {
        line,
        col,
        message: message.into(),
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub(crate) fn position(src: &str, offset: usize) -> (usize, usize) {
    let end = offset.min(src.len());
    let end = (0..=end)
        .rev()
        .find(|i| src.is_char_boundary(*i))
        .unwrap_or(0);
    let before = &src[..end];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}
