//! The supported subset, checked on the parse tree: what hookline renders is exactly
//! what the differential test compares with Go.

use gotmpl::parse::{CommandNode, Expr, ListNode, Node, PipeNode};

use crate::TemplateError;

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
    balanced_ends(source)?;
    if let Some(define) = defines.first() {
        return Err(unsupported(
            source,
            define.pos.offset,
            "{{define}} / {{block}} (named templates)",
        ));
    }
    list(tree, source)
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

fn unsupported(src: &str, offset: usize, feature: &str) -> TemplateError {
    let (line, col) = position(src, offset);
    TemplateError::Unsupported {
        line,
        col,
        feature: feature.to_owned(),
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

/// The tree with every printing action (`{{pipeline}}` without a declaration) ending
/// in `| hookline_print`, so values print exactly as Go prints them.
pub(crate) fn rewrite(mut list: ListNode) -> ListNode {
    list.nodes = list.nodes.into_iter().map(rewrite_node).collect();
    list
}

fn rewrite_node(n: Node) -> Node {
    match n {
        Node::List(l) => Node::List(rewrite(l)),
        Node::Action(mut a) => {
            if a.pipe.decl.is_empty() && !a.pipe.is_assign {
                let pos = a.pos;
                a.pipe.commands.push(CommandNode {
                    pos,
                    args: vec![Expr::Identifier(pos, crate::funcs::PRINT.into())],
                });
            }
            Node::Action(a)
        }
        Node::If(b) => Node::If(branch(b)),
        Node::Range(b) => Node::Range(branch(b)),
        Node::With(b) => Node::With(branch(b)),
        other => other,
    }
}

fn branch(mut b: gotmpl::parse::BranchNode) -> gotmpl::parse::BranchNode {
    b.body = rewrite(b.body);
    b.else_body = b.else_body.map(rewrite);
    b
}

/// Go refuses an `{{end}}` (or `{{else}}`) that closes nothing; gotmpl ignores it.
fn balanced_ends(src: &str) -> Result<(), TemplateError> {
    let mut open = 0usize;
    for (offset, body) in actions(src) {
        let body = body.trim_start_matches('-').trim_start();
        let body = body.strip_suffix('-').unwrap_or(body).trim_end();
        let mut words = body.split_whitespace();
        let first = words.next().unwrap_or("");
        let word = first.split(['(', ')']).next().unwrap_or(first);
        match word {
            "if" | "range" | "with" | "block" | "define" => open += 1,
            "end" | "else" if open == 0 => {
                let (line, col) = position(src, offset);
                return Err(TemplateError::Parse {
                    line,
                    col,
                    message: format!("unexpected {{{{{word}}}}}"),
                });
            }
            "end" => open -= 1,
            _ => {}
        }
    }
    if open > 0 {
        let (line, col) = position(src, src.len());
        return Err(TemplateError::Parse {
            line,
            col,
            message: "unexpected EOF: an {{if}}, {{range}} or {{with}} is not closed".to_owned(),
        });
    }
    Ok(())
}

/// `(offset, text between the delimiters)` of every action, skipping `}}` inside
/// string, raw string and character literals and comments.
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
