//! Listing endpoints a page at a time: `GET /webhooks` and
//! `GET /sensitive-trace-endpoints` take `limit`, `cursor` and filters, and answer the
//! oldest first with a `next_cursor` while more follow. The cursor is the last item's
//! place in that order (creation time, then id), so a page is stable while endpoints
//! are added or removed around it.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use wire::Endpoint;

use crate::AppState;
use crate::error::ApiError;
use crate::fields::printable;

/// Endpoints on a page when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 100;
/// The largest `limit`.
pub const MAX_LIMIT: usize = 500;

/// A listing's parameters.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Query {
    /// Endpoints per page.
    pub limit: usize,
    /// After this place: (created_at, id).
    pub after: Option<(String, String)>,
    /// Only endpoints subscribed to this event type.
    pub event_type: Option<String>,
    /// Only endpoints of this vendor.
    pub vendor: Option<String>,
    /// Only active (or inactive) endpoints.
    pub active: Option<bool>,
}

impl Query {
    /// From a query string, taking only `known` parameters (`limit` and `cursor`
    /// always). Empty values are absent.
    pub fn parse(query: &str, known: &[&str]) -> Result<Query, ApiError> {
        let mut q = Query {
            limit: DEFAULT_LIMIT,
            ..Query::default()
        };
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            let name = name.as_ref();
            if !(name == "limit" || name == "cursor" || known.contains(&name)) {
                return Err(ApiError::invalid(
                    printable(name),
                    format!(
                        "unknown query parameter; known: limit, cursor, {}",
                        known.join(", ")
                    ),
                ));
            }
            if value.is_empty() {
                continue;
            }
            match name {
                "limit" => {
                    q.limit = value
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| {
                            ApiError::invalid(
                                "limit",
                                format!("must be an integer from 1 to {MAX_LIMIT}"),
                            )
                        })?;
                }
                "cursor" => q.after = Some(decode(&value)?),
                "event_type" => q.event_type = Some(value.into_owned()),
                "vendor" => q.vendor = Some(value.into_owned()),
                "active" => {
                    q.active = Some(match value.as_ref() {
                        "true" => true,
                        "false" => false,
                        _ => return Err(ApiError::invalid("active", "must be true or false")),
                    });
                }
                _ => {}
            }
        }
        Ok(q)
    }

    /// The page of `all` (any order) this query asks for, and the cursor of the next.
    pub fn page(&self, mut all: Vec<Endpoint>) -> (Vec<Endpoint>, Option<String>) {
        all.retain(|e| self.keeps(e));
        all.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        let start = self.after.as_ref().map_or(0, |(at, id)| {
            all.partition_point(|e| (&e.created_at, &e.id) <= (at, id))
        });
        let mut page: Vec<Endpoint> = all.into_iter().skip(start).take(self.limit + 1).collect();
        let next = if page.len() > self.limit {
            page.truncate(self.limit);
            page.last().map(|e| encode(&e.created_at, &e.id))
        } else {
            None
        };
        (page, next)
    }

    fn keeps(&self, e: &Endpoint) -> bool {
        self.vendor.as_ref().is_none_or(|v| &e.vendor == v)
            && self.active.is_none_or(|a| e.active == a)
            && self
                .event_type
                .as_ref()
                .is_none_or(|t| e.events.iter().any(|p| render::type_matches(p, t)))
    }
}

/// The page of the endpoints of `kind` that `query` asks for, and the next cursor; read
/// after the `endpoints` table caught up.
pub async fn of_kind(
    state: &AppState,
    kind: &str,
    query: &Query,
) -> Result<(Vec<Endpoint>, Option<String>), ApiError> {
    crate::endpoints::sync(state).await?;
    Ok(query.page(
        state
            .endpoints
            .values()
            .into_iter()
            .filter(|e| e.kind == kind)
            .collect(),
    ))
}

fn encode(created_at: &str, id: &str) -> String {
    B64.encode(format!("{created_at}\n{id}"))
}

fn decode(cursor: &str) -> Result<(String, String), ApiError> {
    B64.decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| {
            text.split_once('\n')
                .map(|(at, id)| (at.to_owned(), id.to_owned()))
        })
        .ok_or_else(|| ApiError::invalid("cursor", "not a cursor a listing returned"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(id: &str, at: &str, vendor: &str, active: bool, events: &[&str]) -> Endpoint {
        Endpoint {
            id: id.into(),
            created_at: at.into(),
            vendor: vendor.into(),
            active,
            events: events.iter().map(|e| (*e).to_owned()).collect(),
            ..Endpoint::default()
        }
    }

    fn ids(page: &[Endpoint]) -> Vec<&str> {
        page.iter().map(|e| e.id.as_str()).collect()
    }

    #[test]
    fn pages_follow_creation_order_to_the_end() {
        let all: Vec<Endpoint> = (0..5)
            .rev()
            .map(|i| {
                endpoint(
                    &format!("e{i}"),
                    &format!("2026-01-0{}", i + 1),
                    "slack",
                    true,
                    &["*"],
                )
            })
            .collect();
        let mut query = Query::parse("limit=2", &[]).expect("valid");
        let mut seen = Vec::new();
        loop {
            let (page, next) = query.page(all.clone());
            seen.extend(ids(&page).into_iter().map(str::to_owned));
            let Some(cursor) = next else { break };
            query = Query::parse(&format!("limit=2&cursor={cursor}"), &[]).expect("valid");
        }
        assert_eq!(seen, ["e0", "e1", "e2", "e3", "e4"]);
    }

    #[test]
    fn filters_combine() {
        let all = vec![
            endpoint("a", "1", "slack", true, &["transfer.error"]),
            endpoint("b", "2", "slack", false, &["source.*"]),
            endpoint("c", "3", "generic_post", true, &["*"]),
        ];
        let known = ["event_type", "vendor", "active"];
        let page =
            |q: &str| ids(&Query::parse(q, &known).expect("valid").page(all.clone()).0).join(",");
        assert_eq!(page("vendor=slack"), "a,b");
        assert_eq!(page("active=true"), "a,c");
        assert_eq!(page("event_type=source.created"), "b,c");
        assert_eq!(
            page("event_type=transfer.error&vendor=slack&active=true"),
            "a"
        );
        assert_eq!(page("vendor="), "a,b,c", "an empty value is absent");
    }

    #[test]
    fn bad_parameters_name_their_field() {
        for (query, field) in [
            ("limit=0", "limit"),
            ("limit=501", "limit"),
            ("cursor=!!", "cursor"),
            ("active=yes", "active"),
            ("page=2", "page"),
        ] {
            let refusal = format!("{:?}", Query::parse(query, &["active"]).unwrap_err());
            assert!(
                refusal.contains(&format!("field: Some({field:?})")),
                "{query}: {refusal}"
            );
        }
    }
}
