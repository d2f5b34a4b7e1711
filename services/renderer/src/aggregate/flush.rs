//! Flushing: a transfer's traces read back from the changelog, split and rendered per
//! sensitive-trace endpoint, written as deliveries (or dead letters) in the transaction.

use super::*;

impl Core {
    /// Sends a transfer's traces to every sensitive-trace endpoint and forgets them.
    /// The caller committed first, so every trace of the transfer is readable.
    pub(super) fn flush(
        &mut self,
        p: i32,
        transfer_id: &str,
        reason: FlushReason,
        trigger: Option<(i64, &str)>,
    ) -> anyhow::Result<()> {
        let Some(transfer) = self
            .partitions
            .get_mut(&p)
            .and_then(|t| t.remove(transfer_id))
        else {
            return Ok(());
        };
        self.begin()?;
        self.sync_endpoints()?;
        // The flush's span links to the traces of the events it gathers; its requests'
        // attempts are parented in it.
        let span = flush_span(transfer_id, &transfer, reason);
        self.flush_headers = telemetry::span_kafka_headers(&span);
        let flushed = self.flush_transfer(p, transfer_id, &transfer, reason, trigger);
        self.flush_headers = None;
        flushed
    }

    pub(super) fn flush_transfer(
        &mut self,
        p: i32,
        transfer_id: &str,
        transfer: &Transfer,
        reason: FlushReason,
        trigger: Option<(i64, &str)>,
    ) -> anyhow::Result<()> {
        let (offset, event_id) = trigger.unwrap_or((-1, &transfer.first_event_id));
        let environment = self.settings.environment.clone();
        let timestamp = render::trace_timestamp(time::OffsetDateTime::now_utc());
        let endpoints = self.trace_endpoints();
        let mut splitters: Vec<Splitter<BatchRender<'_>>> = endpoints
            .iter()
            .filter_map(|c| c.traces())
            .map(|compiled| {
                let batch = BatchRender {
                    compiled,
                    environment: &environment,
                    transfer_id: Some(transfer_id),
                    destination_id: &transfer.destination_id,
                    source_ids: &transfer.source_ids,
                    model_ids: &transfer.model_ids,
                    timestamp: &timestamp,
                    reason,
                };
                Splitter::new(batch, self.settings.max_body)
            })
            .collect();
        // Read the transfer's traces back, in order, into every endpoint's splitter,
        // until every one of them was seen (the last commit's markers may lag).
        let base = format!("transfer/{transfer_id}");
        let mut expected = 0;
        let mut failure: Option<anyhow::Error> = None;
        let topic = self.shared.topics.sensitive_trace_changelog.clone();
        let read = read_changelog(
            &self.changelog,
            &topic,
            p,
            Offset::Offset(transfer.scan_from),
            Until::Done,
            |m| {
                let Some((key_transfer, seq)) = m.key().and_then(parse_key) else {
                    return false;
                };
                if key_transfer != transfer_id || seq < expected || seq >= transfer.traces {
                    return false;
                }
                let Some(bytes) = m.payload() else {
                    return false;
                };
                if seq != expected {
                    tracing::error!(
                        code = "HL-TRACE-GAP",
                        transfer_id,
                        expected,
                        found = seq,
                        "traces missing from the changelog"
                    );
                }
                expected = seq + 1;
                let opened = self
                    .shared
                    .registry
                    .decode::<AggregatedTrace>(bytes)
                    .ok()
                    .and_then(|r| {
                        self.shared
                            .sealer
                            .open(&r.trace_sealed, &trace_context(transfer_id, seq))
                            .ok()
                    })
                    .and_then(|plain| String::from_utf8(plain).ok())
                    .map(Redacted::new);
                let step = match opened {
                Some(trace) => splitters.iter_mut().try_for_each(|splitter| {
                    let compiled = splitter.renderer().compiled;
                    let parts = splitter.push(trace.expose().clone()).unwrap_or_else(|never| match never {});
                    parts.into_iter().try_for_each(|part| self.deliver(p, offset, compiled, part, &base, event_id, Some(transfer_id)))
                }),
                // Kept, sealed as it is, rather than dropped or retried forever.
                None => self.dead_letter(
                    p,
                    offset,
                    None,
                    None,
                    "HL-TRACE-UNREADABLE",
                    "a trace on the changelog cannot be read or opened with this HOOKLINE_MASTER_KEY",
                    Some(bytes.to_vec()),
                ),
            };
                if let Err(e) = step {
                    failure = Some(e);
                    return true;
                }
                expected >= transfer.traces
            },
        );
        read?;
        if let Some(e) = failure {
            return Err(e);
        }
        for splitter in splitters {
            let compiled = splitter.renderer().compiled;
            for part in splitter.finish().unwrap_or_else(|never| match never {}) {
                self.deliver(
                    p,
                    offset,
                    compiled,
                    part,
                    &base,
                    event_id,
                    Some(transfer_id),
                )?;
            }
        }
        for seq in 0..transfer.traces {
            self.send(&topic, Some(p), &changelog_key(transfer_id, seq), None)?;
        }
        tracing::info!(
            transfer_id,
            traces = transfer.traces,
            reason = reason.as_str(),
            endpoints = endpoints.len(),
            "sensitive traces flushed"
        );
        self.shared.metrics.flushed(reason.as_str());
        Ok(())
    }

    /// Flushes transfers whose end never came within the maximum age.
    pub(super) fn expire(&mut self, consumer: &GroupConsumer) -> anyhow::Result<()> {
        let max_age = i64::try_from(self.settings.max_age.as_millis()).unwrap_or(i64::MAX);
        let now = now_ms();
        let mut due: Vec<(i32, String)> = self
            .partitions
            .iter()
            .flat_map(|(p, transfers)| {
                transfers
                    .iter()
                    .filter(|(_, t)| now - t.opened_at_ms >= max_age)
                    .map(|(id, _)| (*p, id.clone()))
            })
            .collect();
        // A partition still reading a backlog may hold the end of such a transfer.
        let mut partitions: Vec<i32> = due.iter().map(|(p, _)| *p).collect();
        partitions.sort_unstable();
        partitions.dedup();
        let behind: Vec<i32> = partitions
            .into_iter()
            .filter(|p| !self.caught_up(consumer, *p, now))
            .collect();
        due.retain(|(p, _)| !behind.contains(p));
        if due.is_empty() {
            return Ok(());
        }
        let result = self.commit(consumer).and_then(|()| {
            due.iter()
                .try_for_each(|(p, id)| self.flush(*p, id, FlushReason::MaxAge, None))
        });
        match result {
            Ok(()) => Ok(()),
            Err(e) => self.recover(consumer, e),
        }
    }

    /// Whether partition `p` of `events` is read up to now: its newest record read is
    /// recent, or nothing is left to read.
    pub(super) fn caught_up(&self, consumer: &GroupConsumer, p: i32, now: i64) -> bool {
        if self.stream_ms.get(&p).is_some_and(|t| *t >= now - 60_000) {
            return true;
        }
        let topic = &self.shared.topics.events;
        let position = consumer
            .position()
            .ok()
            .and_then(|t| t.find_partition(topic, p).map(|e| e.offset()));
        match (
            consumer.fetch_watermarks(topic, p, Duration::from_secs(5)),
            position,
        ) {
            (Ok((_, high)), Some(Offset::Offset(at))) => at >= high,
            // Nothing read yet since the assignment: at the committed offset.
            (Ok((_, high)), _) => {
                consumer
                    .committed(Duration::from_secs(5))
                    .ok()
                    .and_then(|t| t.find_partition(topic, p).map(|e| e.offset()))
                    == Some(Offset::Offset(high))
            }
            (Err(_), _) => false,
        }
    }

    /// Writes one part as a rendered delivery (sealed) in the transaction, or, when it
    /// could not be rendered, as a dead letter holding its traces sealed.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn deliver(
        &self,
        p: i32,
        offset: i64,
        compiled: &EndpointTraces,
        part: Part<Rendered>,
        base: &str,
        event_id: &str,
        transfer_id: Option<&str>,
    ) -> anyhow::Result<()> {
        let endpoint = match compiled {
            Ok(c) => &c.endpoint,
            Err((e, _)) => e,
        };
        let request = match part.request {
            Rendered::Request(request) => request,
            Rendered::Failed { error, traces_json } => {
                let id = uuid::Uuid::now_v7().to_string();
                let sealed = self
                    .shared
                    .sealer
                    .seal(traces_json.expose().as_bytes(), &dead_letter_context(&id));
                return self.write_dead_letter(
                    id,
                    p,
                    offset,
                    Some(event_id),
                    Some(&endpoint.id),
                    error.code(),
                    &error.to_string(),
                    Some(sealed.into_bytes()),
                );
            }
        };
        tracing::debug!(endpoint_id = %endpoint.id, part = part.number, last = part.last, "sensitive-trace request rendered");
        if part.truncated {
            tracing::warn!(code = "HL-TRACE-TRUNCATED", endpoint_id = %endpoint.id, part = part.number, "a trace was cut to fit the maximum body");
        }
        let delivery = request.into_delivery(
            render::delivery_id(&format!("{base}/part/{}", part.number), &endpoint.id),
            event_id.to_owned(),
            transfer_id.map(str::to_owned),
            endpoint,
        );
        let bytes = self
            .shared
            .registry
            .encode(&seal_delivery(&self.shared.sealer, delivery))?;
        self.send_with(
            &self.shared.topics.rendered_deliveries,
            None,
            endpoint.id.as_bytes(),
            Some(&bytes),
            self.flush_headers.as_ref(),
        )
    }

    /// A dead letter in the transaction. `reason` holds no trace text or secret.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn dead_letter(
        &self,
        p: i32,
        offset: i64,
        event: Option<&Event>,
        endpoint_id: Option<&str>,
        code: &str,
        reason: &str,
        payload: Option<Vec<u8>>,
    ) -> anyhow::Result<()> {
        let id = uuid::Uuid::now_v7().to_string();
        self.write_dead_letter(
            id,
            p,
            offset,
            event.map(|e| e.id.as_str()),
            endpoint_id,
            code,
            reason,
            payload,
        )
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn write_dead_letter(
        &self,
        id: String,
        p: i32,
        offset: i64,
        event_id: Option<&str>,
        endpoint_id: Option<&str>,
        code: &str,
        reason: &str,
        payload: Option<Vec<u8>>,
    ) -> anyhow::Result<()> {
        tracing::warn!(
            code,
            endpoint_id,
            event_id,
            "sensitive traces dead-lettered"
        );
        let letter = DeadLetter {
            id,
            reason_code: code.to_owned(),
            reason: reason.to_owned(),
            failed_at: wire::now_rfc3339(),
            stage: "renderer".to_owned(),
            source_topic: self.shared.topics.events.clone(),
            source_partition: p,
            source_offset: offset,
            event_id: event_id.map(str::to_owned),
            endpoint_id: endpoint_id.map(str::to_owned),
            delivery_id: None,
            delivery: None,
            payload,
            attempts: Vec::new(),
        };
        let bytes = self.shared.registry.encode(&letter)?;
        let key = endpoint_id.unwrap_or(&letter.id).as_bytes().to_vec();
        self.send(&self.shared.topics.dead_letter, None, &key, Some(&bytes))
    }

    /// Every endpoint acknowledged before now is seen.
    pub(super) fn sync_endpoints(&self) -> anyhow::Result<()> {
        let since = Instant::now();
        self.runtime
            .block_on(self.shared.endpoints.sync_after(since))
            .context("syncing endpoints")
    }

    pub(super) fn trace_endpoints(&self) -> Vec<Arc<Configured>> {
        self.shared
            .endpoints
            .select(|c| matches!(c.as_ref(), Configured::Traces(_)))
    }
}

/// A sensitive-trace endpoint as the table holds it: compiled, or refused with why.
pub(super) type EndpointTraces = Result<CompiledTraces, (wire::Endpoint, RenderError)>;

/// A part rendered, or its traces with why it could not be (then dead-lettered sealed,
/// and sized by the traces so the split goes on).
pub(super) enum Rendered {
    Request(TracesRequest),
    Failed {
        error: RenderError,
        traces_json: Redacted<String>,
    },
}

/// Renders one batch for one endpoint.
pub(super) struct BatchRender<'a> {
    pub(super) compiled: &'a EndpointTraces,
    pub(super) environment: &'a str,
    pub(super) transfer_id: Option<&'a str>,
    pub(super) destination_id: &'a str,
    pub(super) source_ids: &'a [String],
    pub(super) model_ids: &'a [String],
    pub(super) timestamp: &'a str,
    pub(super) reason: FlushReason,
}

impl RenderPart for BatchRender<'_> {
    type Request = Rendered;
    type Error = std::convert::Infallible;

    fn render(
        &mut self,
        traces_json: &str,
        part: u32,
        last: bool,
    ) -> Result<Rendered, std::convert::Infallible> {
        let batch = TraceBatch {
            transfer_id: self.transfer_id,
            destination_id: self.destination_id,
            traces_json,
            source_ids: self.source_ids,
            model_ids: self.model_ids,
            timestamp: self.timestamp,
            part,
            last_part: last,
            flush_reason: self.reason,
        };
        let rendered = match self.compiled {
            Ok(compiled) => render::render_traces(compiled, &batch, self.environment),
            Err((_, e)) => Err(e.clone()),
        };
        Ok(match rendered {
            Ok(request) => Rendered::Request(request),
            Err(error) => Rendered::Failed {
                error,
                traces_json: Redacted::new(traces_json.to_owned()),
            },
        })
    }

    fn body_len(request: &Rendered) -> usize {
        match request {
            Rendered::Request(r) => r.body.len(),
            Rendered::Failed { traces_json, .. } => traces_json.expose().len(),
        }
    }
}

/// The span of a transfer's flush, linked to its traces' events; `Span::none()` when
/// tracing is off. Carries ids and counts, never a trace.
pub(super) fn flush_span(
    transfer_id: &str,
    transfer: &Transfer,
    reason: FlushReason,
) -> tracing::Span {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    if !telemetry::enabled() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        target: telemetry::TARGET,
        "flush sensitive-traces",
        otel.kind = "producer",
        hookline.transfer.id = %transfer_id,
        hookline.flush.reason = reason.as_str(),
        hookline.traces = transfer.traces,
        hookline.links = transfer.links.len(),
    );
    for link in &transfer.links {
        span.add_link(link.clone());
    }
    span
}
