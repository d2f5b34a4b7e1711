//! The API's OpenAPI 3.1 document, derived from the handlers' `#[utoipa::path]`
//! attributes and the body types (`bodies`, `requests`). The routes are registered from
//! the same attributes (`api::routes`), so a route cannot exist without its
//! description. Served at `GET /openapi.json` and checked in as `docs/openapi.json`.

use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{Object, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, OpenApi as Document, RefOr};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

use crate::bodies::ErrorBody;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "hookline",
        description = "The management API of hookline, a durable webhook delivery pipeline on Apache Kafka: events in, webhooks and sensitive-trace endpoints configured, deliveries and dead letters inspected and replayed.\n\nEvery route but `/health`, `/openapi.json` and the public key takes `Authorization: Bearer <HOOKLINE_API_TOKEN>`. Errors are `{\"error\": {\"code\": \"HL-…\", \"message\", \"field\"?}}`: messages name fields, never values.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    security(("bearer" = [])),
    tags(
        (name = "events", description = "Events in, from a transfer engine"),
        (name = "webhooks", description = "Webhook endpoints"),
        (name = "sensitive-trace-endpoints", description = "Endpoints that receive a transfer's raw traces"),
        (name = "deliveries", description = "What was sent, from the attempt log"),
        (name = "dead-letters", description = "What could not be delivered: inspect and replay"),
        (name = "keys", description = "The signing key and the master keys"),
        (name = "service", description = "Health and this document"),
    ),
    modifiers(&Finish),
)]
struct ApiDoc;

/// The document: `ApiDoc`'s header with every route's description merged in.
pub fn document() -> Document {
    let mut doc = ApiDoc::openapi();
    doc.merge(crate::api::routes().into_openapi());
    Finish.modify(&mut doc);
    doc
}

/// The document as served and checked in: pretty JSON with a final newline.
pub fn document_json() -> String {
    let mut json = document()
        .to_pretty_json()
        .unwrap_or_else(|_| "{}".to_owned());
    json.push('\n');
    json
}

/// What attributes cannot say: the bearer scheme, its 401 on every route that takes
/// it, and the values the API accepts that live in other crates (vendors, signing
/// schemes, event types).
struct Finish;

impl Modify for Finish {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("`HOOKLINE_API_TOKEN`"))
                    .build(),
            ),
        );
        components
            .schemas
            .entry(ErrorBody::name().into_owned())
            .or_insert_with(ErrorBody::schema);
        let vendors: Vec<&str> = render::VENDORS.to_vec();
        let schemes: Vec<&str> = signing::SCHEMES.to_vec();
        let event_types: Vec<String> = wire::Registry::bundled()
            .map(|r| r.event_types().into_iter().map(str::to_owned).collect())
            .unwrap_or_default();
        let event_types: Vec<&str> = event_types.iter().map(String::as_str).collect();
        for (schema, property, values) in [
            ("WebhookFields", "vendor", &vendors),
            ("WebhookFields", "signing_scheme", &schemes),
            ("Webhook", "vendor", &vendors),
            ("Webhook", "signing_scheme", &schemes),
            ("EventInput", "type", &event_types),
        ] {
            if let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(schema)
                && let Some(RefOr::T(Schema::Object(field))) = object.properties.get_mut(property)
            {
                set_enum(field, values);
            }
        }
        // Bounds of the array branch of a `oneOf` (a variant attribute cannot carry them).
        for (schema, min, max) in [
            ("ScheduleInput", 1, None),
            ("EventsInput", 1, Some(crate::events::MAX_BATCH)),
        ] {
            if let Some(RefOr::T(Schema::OneOf(one_of))) = components.schemas.get_mut(schema) {
                for item in &mut one_of.items {
                    if let RefOr::T(Schema::Array(array)) = item {
                        array.min_items = Some(min);
                        array.max_items = max;
                    }
                }
            }
        }
        link_created(doc, "/webhooks", "webhook", WEBHOOK_LINKS);
        link_created(
            doc,
            "/sensitive-trace-endpoints",
            "sensitive_trace_endpoint",
            TRACE_ENDPOINT_LINKS,
        );
        for item in doc.paths.paths.values_mut() {
            for operation in operations(item) {
                if operation.security.is_none() {
                    operation.responses.responses.insert(
                        "401".to_owned(),
                        RefOr::T(
                            ResponseBuilder::new()
                                .description("Missing or wrong bearer token")
                                .content(
                                    "application/json",
                                    Content::new(Some(RefOr::Ref(
                                        utoipa::openapi::Ref::from_schema_name("ErrorBody"),
                                    ))),
                                )
                                .build(),
                        ),
                    );
                }
            }
        }
    }
}

/// What a created webhook's id leads to: (link name, operation id).
const WEBHOOK_LINKS: &[(&str, &str)] = &[
    ("ShowWebhook", "show_webhook"),
    ("UpdateWebhook", "update_webhook"),
    ("DeleteWebhook", "delete_webhook"),
    ("ListDeliveries", "list_deliveries"),
    ("RecoverWebhook", "recover_webhook"),
    ("TestWebhook", "test_webhook"),
];

/// What a created sensitive-trace endpoint's id leads to.
const TRACE_ENDPOINT_LINKS: &[(&str, &str)] = &[
    (
        "ShowSensitiveTraceEndpoint",
        "show_sensitive_trace_endpoint",
    ),
    (
        "UpdateSensitiveTraceEndpoint",
        "update_sensitive_trace_endpoint",
    ),
    (
        "DeleteSensitiveTraceEndpoint",
        "delete_sensitive_trace_endpoint",
    ),
];

/// Links from the 201 of `POST <path>` to the operations taking the created id, for
/// clients and stateful testing (create, then show, change, delete).
fn link_created(doc: &mut Document, path: &str, wrapper: &str, links: &[(&str, &str)]) {
    let Some(RefOr::T(created)) = doc
        .paths
        .paths
        .get_mut(path)
        .and_then(|item| item.post.as_mut())
        .and_then(|post| post.responses.responses.get_mut("201"))
    else {
        return;
    };
    for (name, operation_id) in links {
        created.links.insert(
            (*name).to_owned(),
            RefOr::T(
                LinkBuilder::new()
                    .operation_id(*operation_id)
                    .parameter("id", format!("$response.body#/{wrapper}/id"))
                    .build(),
            ),
        );
    }
}

fn set_enum(field: &mut Object, values: &[&str]) {
    if !values.is_empty() && field.schema_type == Type::String.into() {
        field.enum_values = Some(values.iter().map(|v| (*v).into()).collect());
    }
}

fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.post,
        &mut item.put,
        &mut item.patch,
        &mut item.delete,
    ]
    .into_iter()
    .flatten()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::requests::{TraceEndpointFields, WebhookFields};

    fn properties(schema: RefOr<Schema>) -> BTreeSet<String> {
        match schema {
            RefOr::T(Schema::Object(object)) => object.properties.keys().cloned().collect(),
            _ => BTreeSet::new(),
        }
    }

    fn names(fields: &[&str]) -> BTreeSet<String> {
        fields.iter().map(|f| (*f).to_owned()).collect()
    }

    #[test]
    fn request_schemas_hold_the_fields_handlers_take() {
        assert_eq!(
            properties(WebhookFields::schema()),
            names(crate::webhooks::FIELDS)
        );
        assert_eq!(
            properties(TraceEndpointFields::schema()),
            names(crate::trace_endpoints::FIELDS)
        );
        assert_eq!(
            properties(crate::requests::ReplayInput::schema()),
            names(crate::dead_letters::REPLAY_FIELDS)
        );
        assert_eq!(
            properties(crate::requests::RecoverInput::schema()),
            names(crate::dead_letters::RECOVER_FIELDS)
        );
        assert_eq!(
            properties(crate::requests::TestWebhookInput::schema()),
            names(crate::test_delivery::WEBHOOK_FIELDS)
        );
        assert_eq!(
            properties(crate::requests::TestTracesInput::schema()),
            names(crate::test_delivery::TRACE_FIELDS)
        );
        assert_eq!(
            properties(crate::requests::EventInput::schema()),
            names(&wire::ENVELOPE_FIELDS)
        );
    }

    #[test]
    fn the_document_describes_every_route_and_the_bearer_scheme() {
        let doc: serde_json::Value =
            serde_json::from_str(&document_json()).expect("the document is JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().expect("paths");
        for path in [
            "/events",
            "/webhooks",
            "/webhooks/{id}",
            "/webhooks/{id}/deliveries",
            "/webhooks/{id}/recover",
            "/webhooks/{id}/test",
            "/sensitive-trace-endpoints/{id}/test",
            "/sensitive-trace-endpoints",
            "/sensitive-trace-endpoints/{id}",
            "/dead-letters",
            "/dead-letters/replay",
            "/dead-letters/{id}",
            "/signatures/webhook-key/rotate",
            "/keys/master",
            "/keys/master/reseal",
            "/health",
            "/openapi.json",
            "/public/signatures/webhook-public-key",
        ] {
            assert!(paths.contains_key(path), "{path} is not described");
        }
        assert_eq!(
            doc["paths"]["/webhooks"]["post"]["responses"]["401"]["content"]["application/json"]["schema"]
                ["$ref"],
            "#/components/schemas/ErrorBody"
        );
        assert!(doc["paths"]["/health"]["get"]["responses"]["401"].is_null());
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        let vendors = &doc["components"]["schemas"]["WebhookFields"]["properties"]["vendor"];
        assert!(
            vendors["enum"]
                .as_array()
                .is_some_and(|v| v.iter().any(|x| x == "slack")),
            "{vendors}"
        );
    }

    /// `docs/openapi.json` is what the code generates. `HOOKLINE_BLESS=1` rewrites it.
    #[test]
    fn the_checked_in_document_is_the_generated_one() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
        let generated = document_json();
        if std::env::var_os("HOOKLINE_BLESS").is_some() {
            std::fs::write(path, &generated).expect("writing docs/openapi.json");
        }
        let checked_in = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            checked_in == generated,
            "docs/openapi.json differs from what the code generates: run \
             `HOOKLINE_BLESS=1 cargo test -p producer --lib openapi` and commit the file"
        );
    }
}
