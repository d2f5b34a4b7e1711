//! The tree hookline executes: every printing action ends in `hookline_print` (Go's
//! printing), every field access is `hookline_field` (Go's nil and missing-key rules),
//! a field given arguments is `hookline_method`, and `index X` is `hookline_index_self`.

use gotmpl::parse::{CommandNode, Expr, ListNode, Node, PipeNode, SmolStr};

/// The tree with every printing action (`{{pipeline}}` without a declaration) ending
/// in `| hookline_print`, so values print exactly as Go prints them, and every field
/// access (`.A.B`, `$x.A`, `(pipeline).A`) a call of `hookline_field`, so a field of
/// no value fails as in Go.
pub(crate) fn rewrite(mut list: ListNode) -> ListNode {
    list.nodes = list.nodes.into_iter().map(rewrite_node).collect();
    list
}

fn rewrite_node(n: Node) -> Node {
    match n {
        Node::List(l) => Node::List(rewrite(l)),
        Node::Action(mut a) => {
            a.pipe = rewrite_pipe(a.pipe);
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
    b.pipe = rewrite_pipe(b.pipe);
    b.body = rewrite(b.body);
    b.else_body = b.else_body.map(rewrite);
    b
}

fn rewrite_pipe(mut p: PipeNode) -> PipeNode {
    // `index X` (or `X | index`) is X itself in Go, or an error for nil; gotmpl wants an
    // index (found by the differential fuzz target).
    let is_index = |e: &Expr| matches!(e, Expr::Identifier(_, name) if name.as_str() == "index");
    p.commands = p
        .commands
        .into_iter()
        .enumerate()
        .map(|(k, mut c)| {
            let alone = match c.args.as_slice() {
                [f] => k > 0 && is_index(f),
                [f, _] => k == 0 && is_index(f),
                _ => false,
            };
            if alone && let Expr::Identifier(pos, _) = c.args[0] {
                c.args[0] = Expr::Identifier(pos, crate::funcs::INDEX_SELF.into());
            }
            c
        })
        .map(|mut c| {
            // A field followed by arguments is a method call in Go.
            if c.args.len() > 1
                && let Some(method) = method_call(&c.args[0])
            {
                let rest: Vec<Expr> = c.args.drain(1..).map(rewrite_expr).collect();
                c.args = method;
                c.args.extend(rest);
                return c;
            }
            c.args = c.args.into_iter().map(rewrite_expr).collect();
            c
        })
        .collect();
    p
}

/// `hookline_method receiver count names…` for a field in a command's first place, whose
/// arguments follow.
fn method_call(e: &Expr) -> Option<Vec<Expr>> {
    let (pos, receiver, names) = match e {
        Expr::Field(pos, names) => (*pos, Expr::Dot(*pos), names),
        Expr::Variable(pos, name, names) if !names.is_empty() => {
            (*pos, Expr::Variable(*pos, name.clone(), Vec::new()), names)
        }
        _ => return None,
    };
    let mut args = vec![
        Expr::Identifier(pos, crate::funcs::METHOD.into()),
        receiver,
        Expr::Number(
            pos,
            gotmpl::parse::Number::Int(i64::try_from(names.len()).ok()?),
        ),
    ];
    args.extend(names.iter().map(|n| Expr::String(pos, n.as_str().into())));
    Some(args)
}

fn rewrite_expr(e: Expr) -> Expr {
    let call = |pos, receiver: Expr, names: Vec<SmolStr>| {
        let mut args = vec![Expr::Identifier(pos, crate::funcs::FIELD.into()), receiver];
        args.extend(
            names
                .into_iter()
                .map(|n| Expr::String(pos, n.as_str().into())),
        );
        Expr::Pipe(
            pos,
            PipeNode {
                pos,
                decl: Vec::new(),
                commands: vec![CommandNode { pos, args }],
                is_assign: false,
            },
        )
    };
    match e {
        Expr::Field(pos, names) => call(pos, Expr::Dot(pos), names),
        Expr::Variable(pos, name, names) if !names.is_empty() => {
            call(pos, Expr::Variable(pos, name, Vec::new()), names)
        }
        Expr::Chain(pos, inner, names) => call(pos, rewrite_expr(*inner), names),
        Expr::Pipe(pos, p) => Expr::Pipe(pos, rewrite_pipe(p)),
        other => other,
    }
}
