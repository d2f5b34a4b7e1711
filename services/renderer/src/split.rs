//! Splitting a transfer's traces into requests whose bodies fit the maximum size.
//!
//! Traces stream in (a transfer may hold thousands, each up to 64 KiB); a [`Splitter`]
//! keeps at most two parts in memory: the one being filled, and the one before it,
//! held back until it is known whether it is the last. Every part is measured by
//! rendering it, so the limit holds whatever the template does to the traces (`%q`
//! doubles backslashes). A single trace too large on its own has its `trace` text cut,
//! with `"trace_truncated": true` added to it.

use serde_json::Value;

/// Renders one part: `traces_json` is a JSON array of trace objects.
pub(crate) trait RenderPart {
    /// The rendered request.
    type Request;
    /// Why rendering failed.
    type Error;
    /// Renders part number `part` (1-based).
    fn render(
        &mut self,
        traces_json: &str,
        part: u32,
        last: bool,
    ) -> Result<Self::Request, Self::Error>;
    /// The size the limit applies to.
    fn body_len(request: &Self::Request) -> usize;
}

/// A part ready to send.
#[derive(Debug)]
pub(crate) struct Part<Q> {
    /// 1-based number.
    pub number: u32,
    /// Whether it is the transfer's last.
    pub last: bool,
    /// The request.
    pub request: Q,
    /// A trace in it was cut to fit.
    pub truncated: bool,
}

/// Cuts a stream of traces into parts within `max_body` bytes.
pub(crate) struct Splitter<R: RenderPart> {
    render: R,
    max_body: usize,
    /// Traces of the part being filled, and their JSON length.
    pending: Vec<String>,
    pending_bytes: usize,
    /// A measured part waiting for the next one (then it is not the last).
    held: Option<Measured>,
    next_number: u32,
    /// JSON bytes aimed at per part, learnt from how much the template expands them.
    target: usize,
}

struct Measured {
    number: u32,
    traces: Vec<String>,
    truncated: bool,
}

impl<R: RenderPart> Splitter<R> {
    /// A splitter rendering with `render`.
    pub(crate) fn new(render: R, max_body: usize) -> Self {
        Splitter {
            render,
            max_body,
            pending: Vec::new(),
            pending_bytes: 0,
            held: None,
            next_number: 1,
            target: max_body,
        }
    }

    /// The renderer it was made with.
    pub(crate) fn renderer(&self) -> &R {
        &self.render
    }

    /// Adds one trace (a JSON object); returns the parts that became ready.
    pub(crate) fn push(&mut self, trace: String) -> Result<Vec<Part<R::Request>>, R::Error> {
        let mut ready = Vec::new();
        if !self.pending.is_empty() && self.pending_bytes + trace.len() + 1 > self.target {
            self.cut(&mut ready)?;
        }
        self.pending_bytes += trace.len() + 1;
        self.pending.push(trace);
        Ok(ready)
    }

    /// Ends the stream; returns the remaining parts, the last one marked.
    pub(crate) fn finish(mut self) -> Result<Vec<Part<R::Request>>, R::Error> {
        let mut ready = Vec::new();
        if !self.pending.is_empty() {
            self.cut(&mut ready)?;
        }
        if let Some(held) = self.held.take() {
            ready.push(self.emit(held, true)?);
        }
        Ok(ready)
    }

    /// Turns the pending traces into measured parts, emitting the held one.
    fn cut(&mut self, ready: &mut Vec<Part<R::Request>>) -> Result<(), R::Error> {
        let traces = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        let mut parts = Vec::new();
        self.fit(traces, false, &mut parts)?;
        for part in parts {
            if let Some(previous) = self.held.replace(part) {
                ready.push(self.emit(previous, false)?);
            }
        }
        Ok(())
    }

    /// Splits `traces` into parts that fit, in order, numbering them.
    fn fit(
        &mut self,
        mut traces: Vec<String>,
        truncated: bool,
        out: &mut Vec<Measured>,
    ) -> Result<(), R::Error> {
        let json = array(&traces);
        let size = self.measure(&json, self.next_number)?;
        if size <= self.max_body {
            // Learn the template's expansion so the next parts are cut closer to the limit.
            let ratio = (size as f64 / json.len().max(1) as f64).max(1.0);
            self.target = ((self.max_body as f64 / ratio) * 0.95) as usize;
            out.push(Measured {
                number: self.next_number,
                traces,
                truncated,
            });
            self.next_number += 1;
            return Ok(());
        }
        if traces.len() > 1 {
            let right = traces.split_off(traces.len() / 2);
            self.fit(traces, truncated, out)?;
            return self.fit(right, truncated, out);
        }
        let excess = size - self.max_body;
        match traces.pop().and_then(|t| shorten(&t, excess)) {
            Some(shorter) => self.fit(vec![shorter], true, out),
            None => {
                // Nothing left to cut (the template alone is over the limit): send it as
                // it is rather than drop the trace.
                tracing::warn!(
                    code = "HL-TRACE-TOO-LARGE",
                    size,
                    max = self.max_body,
                    "a part exceeds the maximum body even with its trace cut"
                );
                out.push(Measured {
                    number: self.next_number,
                    traces: vec![json[1..json.len() - 1].to_owned()],
                    truncated: true,
                });
                self.next_number += 1;
                Ok(())
            }
        }
    }

    /// The larger of the body sizes as a middle and as a last part.
    fn measure(&mut self, json: &str, number: u32) -> Result<usize, R::Error> {
        let middle = R::body_len(&self.render.render(json, number, false)?);
        let last = R::body_len(&self.render.render(json, number, true)?);
        Ok(middle.max(last))
    }

    fn emit(&mut self, part: Measured, last: bool) -> Result<Part<R::Request>, R::Error> {
        let request = self
            .render
            .render(&array(&part.traces), part.number, last)?;
        Ok(Part {
            number: part.number,
            last,
            request,
            truncated: part.truncated,
        })
    }
}

/// The JSON array of trace objects.
pub(crate) fn array(traces: &[String]) -> String {
    let mut out = String::with_capacity(traces.iter().map(|t| t.len() + 1).sum::<usize>() + 2);
    out.push('[');
    for (i, t) in traces.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(t);
    }
    out.push(']');
    out
}

/// The trace with its `trace` text cut by at least `excess` bytes (and a margin), marked
/// `"trace_truncated": true`; `None` when there is nothing left to cut.
fn shorten(trace: &str, excess: usize) -> Option<String> {
    let mut obj: serde_json::Map<String, Value> = serde_json::from_str(trace).ok()?;
    let text = obj.get("trace")?.as_str()?;
    if text.is_empty() {
        return None;
    }
    // The template may expand each byte (escapes): cut generously, at least a quarter.
    let cut = (excess + 64).max(text.len() / 4);
    let mut keep = text.len().saturating_sub(cut);
    while !text.is_char_boundary(keep) {
        keep -= 1;
    }
    let shorter = text[..keep].to_owned();
    obj.insert("trace".to_owned(), Value::String(shorter));
    obj.insert("trace_truncated".to_owned(), Value::Bool(true));
    serde_json::to_string(&obj).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Renders like a template that wraps the traces and doubles every quote (as `%q` does).
    struct Doubling {
        renders: usize,
    }

    impl RenderPart for Doubling {
        type Request = String;
        type Error = ();
        fn render(&mut self, traces_json: &str, part: u32, last: bool) -> Result<String, ()> {
            self.renders += 1;
            Ok(format!(
                "{{\"part\":{part},\"last\":{last},\"t\":\"{}\"}}",
                traces_json.replace('"', "\\\"")
            ))
        }
        fn body_len(request: &String) -> usize {
            request.len()
        }
    }

    fn trace(i: usize, len: usize) -> String {
        serde_json::json!({"model_id": format!("m{i}"), "trace": "x".repeat(len)}).to_string()
    }

    fn run(traces: Vec<String>, max: usize) -> Vec<Part<String>> {
        let mut s = Splitter::new(Doubling { renders: 0 }, max);
        let mut parts = Vec::new();
        for t in traces {
            parts.extend(s.push(t).expect("renders"));
        }
        parts.extend(s.finish().expect("renders"));
        parts
    }

    fn traces_in(part: &Part<String>) -> Vec<Value> {
        let body: Value = serde_json::from_str(&part.request).expect("json");
        serde_json::from_str(body["t"].as_str().expect("t")).expect("array")
    }

    #[test]
    fn small_transfers_are_one_part_marked_last() {
        let parts = run((0..3).map(|i| trace(i, 10)).collect(), 10_000);
        assert_eq!(parts.len(), 1);
        assert_eq!(
            (parts[0].number, parts[0].last, parts[0].truncated),
            (1, true, false)
        );
        assert_eq!(traces_in(&parts[0]).len(), 3);
    }

    #[test]
    fn no_traces_no_parts() {
        assert!(run(Vec::new(), 1000).is_empty());
    }

    #[test]
    fn large_transfers_are_numbered_parts_within_the_limit_in_order() {
        let sizes: Vec<usize> = (0..500).map(|i| [10, 900, 4000, 64][i % 4]).collect();
        let traces: Vec<String> = sizes
            .iter()
            .enumerate()
            .map(|(i, n)| trace(i, *n))
            .collect();
        let max = 20_000;
        let parts = run(traces, max);
        assert!(parts.len() > 10, "{} parts", parts.len());
        let mut seen = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            assert_eq!(part.number as usize, i + 1);
            assert_eq!(part.last, i + 1 == parts.len());
            assert!(
                part.request.len() <= max,
                "part {} is {} bytes",
                part.number,
                part.request.len()
            );
            assert!(!part.truncated);
            seen.extend(
                traces_in(part)
                    .into_iter()
                    .map(|t| t["model_id"].as_str().expect("id").to_owned()),
            );
        }
        let expected: Vec<String> = (0..500).map(|i| format!("m{i}")).collect();
        assert_eq!(seen, expected, "every trace once, in arrival order");
        // Parts are filled, not one trace each.
        assert!(parts.len() < 200);
    }

    #[test]
    fn a_trace_too_large_alone_is_cut_and_marked() {
        let parts = run(vec![trace(0, 10), trace(1, 50_000), trace(2, 10)], 8_000);
        assert!(parts.iter().all(|p| p.request.len() <= 8_000));
        let cut: Vec<Value> = parts
            .iter()
            .flat_map(traces_in)
            .filter(|t| t["trace_truncated"] == true)
            .collect();
        assert_eq!(cut.len(), 1);
        assert_eq!(cut[0]["model_id"], "m1");
        assert!(parts.iter().any(|p| p.truncated));
        let all: Vec<Value> = parts.iter().flat_map(traces_in).collect();
        assert_eq!(all.len(), 3);
    }

    #[test]
    fn multibyte_traces_are_cut_on_character_boundaries() {
        let big = serde_json::json!({"model_id": "m0", "trace": "é".repeat(20_000)}).to_string();
        let parts = run(vec![big], 5_000);
        let t = traces_in(&parts[0]);
        assert_eq!(t[0]["trace_truncated"], true);
        assert!(
            t[0]["trace"]
                .as_str()
                .expect("text")
                .chars()
                .all(|c| c == 'é')
        );
    }
}
