//! [`Redacted`]: a value that is never printed.

/// Trace text, transfer logs: whatever must never reach a log line, a span, an error
/// message or an API answer. `Debug` and `Display` print `[redacted]`; only
/// [`Redacted::expose`] gives the value, to the code that seals or sends it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Redacted<T>(T);

impl<T> Redacted<T> {
    /// Wraps a sensitive value.
    pub fn new(value: T) -> Self {
        Redacted(value)
    }

    /// The value, for sealing or sending it; never for printing it.
    pub fn expose(&self) -> &T {
        &self.0
    }

    /// The value, unwrapped.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::fmt::Debug for Redacted<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<T> std::fmt::Display for Redacted<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::Redacted;

    #[test]
    fn never_prints_its_value() {
        let trace = Redacted::new("ERROR: row (42, 'alice@example.com')".to_owned());
        assert_eq!(format!("{trace}"), "[redacted]");
        assert_eq!(format!("{trace:?} {trace:#?}"), "[redacted] [redacted]");
        assert_eq!(format!("{:?}", Some(trace.clone())), "Some([redacted])");
        assert_eq!(trace.expose(), "ERROR: row (42, 'alice@example.com')");
    }
}
