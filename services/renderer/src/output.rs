//! One rendered delivery: an event rendered for one endpoint, sealed, encoded and
//! written to `rendered-deliveries` keyed by endpoint, or its dead letter.

use super::*;

impl Renderer {
    /// Writes the delivery of `event` to `endpoint`, or its dead letter.
    pub(crate) async fn output(
        &self,
        record: &Record,
        rendering: &render::EventRender<'_>,
        compiled: &Compiled,
        rendered_at: &str,
        process: &Span,
    ) -> Outcome {
        let event = rendering.event();
        let endpoint = endpoint_of(compiled);
        // A hash and a UUID's text: only where it is shown (the rendered delivery
        // carries its own).
        let delivery_id = || render::delivery_id(&event.id, &endpoint.id);
        // One child per rendered delivery; its record carries the child's context, which
        // every attempt of the delivery is parented in.
        let span = if process.is_none() {
            Span::none()
        } else {
            tracing::info_span!(
                target: telemetry::TARGET,
                parent: process,
                "send rendered-deliveries",
                otel.kind = "producer",
                messaging.system = "kafka",
                messaging.operation.type = "send",
                messaging.destination.name = %self.topics.rendered_deliveries,
                hookline.event.id = %event.id,
                hookline.endpoint.id = %endpoint.id,
                hookline.delivery.id = %delivery_id(),
            )
        };
        let mut headers = telemetry::span_headers(&span);
        if let Some(at) = record.timestamp_ms {
            headers.push((telemetry::EVENT_TIME.to_owned(), at.to_string()));
        }
        let headers = telemetry::kafka_headers(&headers);
        let rendered = match compiled.as_ref() {
            Ok(c) => rendering
                .render(c, &self.environment, rendered_at)
                .and_then(|d| self.guard_sensitive(event, d))
                .map(|d| seal_delivery(&self.sealer, d)),
            Err((_, e)) => Err(e.clone()),
        };
        let (code, reason, delivery) = match rendered {
            Ok(delivery) => {
                let refused = match self.registry.encode(&delivery) {
                    Ok(bytes) => {
                        let key = endpoint.id.as_bytes();
                        match kafka_io::send_durably(
                            &self.producer,
                            &self.topics.rendered_deliveries,
                            key,
                            Some(&bytes),
                            headers.as_ref(),
                            &self.shutdown,
                        )
                        .instrument(span.clone())
                        .await
                        {
                            Ok(_) => {
                                self.metrics.deliveries.inc();
                                return Outcome::Done;
                            }
                            Err(SendError::Cancelled) => return Outcome::Abandoned,
                            Err(e) => (e.code(), e.to_string()),
                        }
                    }
                    Err(e) => (e.code(), e.to_string()),
                };
                (refused.0, refused.1, Some(delivery))
            }
            Err(e) => (e.code(), e.to_string(), None),
        };
        tracing::warn!(event_id = %event.id, endpoint_id = %endpoint.id, code, "cannot render or write the delivery; dead-lettered");
        let mut letter = self.dead_letters.letter(record, code, &reason);
        letter.event_id = Some(event.id.clone());
        letter.endpoint_id = Some(endpoint.id.clone());
        letter.delivery_id = Some(delivery_id());
        letter.payload = if delivery.is_none() {
            record.payload.clone()
        } else {
            None
        };
        letter.delivery = delivery;
        self.dead_letters
            .write(
                &self.registry,
                letter,
                telemetry::carried(&record.headers).as_ref(),
                &self.shutdown,
            )
            .await
    }
}
