//! The schema files of `schemas/`, compiled into every binary.

/// The schema files compiled into every binary: `(file name, text)`.
///
/// A file is named `<record>.v<N>.avsc`; the highest `N` of a record is the version
/// writers use, and every version stays readable. A test checks this list matches
/// the `schemas/` folder.
pub const BUNDLED_SCHEMAS: &[(&str, &str)] = &[
    (
        "event.v1.avsc",
        include_str!("../../../schemas/event.v1.avsc"),
    ),
    (
        "endpoint.v1.avsc",
        include_str!("../../../schemas/endpoint.v1.avsc"),
    ),
    (
        "endpoint.v2.avsc",
        include_str!("../../../schemas/endpoint.v2.avsc"),
    ),
    (
        "endpoint.v3.avsc",
        include_str!("../../../schemas/endpoint.v3.avsc"),
    ),
    (
        "endpoint.v4.avsc",
        include_str!("../../../schemas/endpoint.v4.avsc"),
    ),
    (
        "endpoint.v5.avsc",
        include_str!("../../../schemas/endpoint.v5.avsc"),
    ),
    (
        "endpoint.v6.avsc",
        include_str!("../../../schemas/endpoint.v6.avsc"),
    ),
    (
        "endpoint-request.v1.avsc",
        include_str!("../../../schemas/endpoint-request.v1.avsc"),
    ),
    (
        "delivery-summary.v1.avsc",
        include_str!("../../../schemas/delivery-summary.v1.avsc"),
    ),
    (
        "instance-claim.v1.avsc",
        include_str!("../../../schemas/instance-claim.v1.avsc"),
    ),
    (
        "rendered-delivery.v1.avsc",
        include_str!("../../../schemas/rendered-delivery.v1.avsc"),
    ),
    (
        "rendered-delivery.v2.avsc",
        include_str!("../../../schemas/rendered-delivery.v2.avsc"),
    ),
    (
        "rendered-delivery.v3.avsc",
        include_str!("../../../schemas/rendered-delivery.v3.avsc"),
    ),
    (
        "rendered-delivery.v4.avsc",
        include_str!("../../../schemas/rendered-delivery.v4.avsc"),
    ),
    (
        "rendered-delivery.v5.avsc",
        include_str!("../../../schemas/rendered-delivery.v5.avsc"),
    ),
    (
        "dead-letter.v1.avsc",
        include_str!("../../../schemas/dead-letter.v1.avsc"),
    ),
    (
        "dead-letter.v2.avsc",
        include_str!("../../../schemas/dead-letter.v2.avsc"),
    ),
    (
        "dead-letter.v3.avsc",
        include_str!("../../../schemas/dead-letter.v3.avsc"),
    ),
    (
        "dead-letter.v4.avsc",
        include_str!("../../../schemas/dead-letter.v4.avsc"),
    ),
    (
        "dead-letter.v5.avsc",
        include_str!("../../../schemas/dead-letter.v5.avsc"),
    ),
    (
        "signing-key.v1.avsc",
        include_str!("../../../schemas/signing-key.v1.avsc"),
    ),
    (
        "signing-key.v2.avsc",
        include_str!("../../../schemas/signing-key.v2.avsc"),
    ),
    (
        "aggregated-trace.v1.avsc",
        include_str!("../../../schemas/aggregated-trace.v1.avsc"),
    ),
    (
        "delivery-attempt.v1.avsc",
        include_str!("../../../schemas/delivery-attempt.v1.avsc"),
    ),
    (
        "delivery-attempt.v2.avsc",
        include_str!("../../../schemas/delivery-attempt.v2.avsc"),
    ),
    (
        "replay.v1.avsc",
        include_str!("../../../schemas/replay.v1.avsc"),
    ),
];

/// Every bundled version of one record's schema, oldest first: `(file name, text)`;
/// `record` is the file name's stem, e.g. `event`.
pub fn schema_files(record: &str) -> Vec<(&'static str, &'static str)> {
    let mut found: Vec<(u32, &'static str, &'static str)> = BUNDLED_SCHEMAS
        .iter()
        .filter(|(file, _)| {
            file.strip_prefix(record)
                .is_some_and(|rest| rest.starts_with(".v"))
        })
        .filter_map(|(file, text)| Some((version_of(file)?, *file, *text)))
        .collect();
    found.sort_by_key(|(v, _, _)| *v);
    found.into_iter().map(|(_, f, t)| (f, t)).collect()
}

/// The version `N` of a file named `<record>.v<N>.avsc`.
pub(crate) fn version_of(file: &str) -> Option<u32> {
    let stem = file.strip_suffix(".avsc")?;
    let (_, v) = stem.rsplit_once(".v")?;
    v.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_is_read_from_the_file_name() {
        assert_eq!(version_of("event.v1.avsc"), Some(1));
        assert_eq!(version_of("rendered-delivery.v12.avsc"), Some(12));
        assert_eq!(version_of("event.avsc"), None);
        assert_eq!(version_of("event.vx.avsc"), None);
    }
}
