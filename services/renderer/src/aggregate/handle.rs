//! Handling one event: a trace appended to its transfer, a connection test sent at
//! once, a transfer's end flushed.

use super::*;

impl Core {
    pub(super) fn process(
        &mut self,
        consumer: &GroupConsumer,
        message: &BorrowedMessage<'_>,
    ) -> anyhow::Result<()> {
        let result = self.handle(consumer, message);
        match result {
            Ok(()) => Ok(()),
            Err(e) => self.recover(consumer, e),
        }
    }

    pub(super) fn handle(
        &mut self,
        consumer: &GroupConsumer,
        message: &BorrowedMessage<'_>,
    ) -> anyhow::Result<()> {
        let (p, offset) = (message.partition(), message.offset());
        // The first record since the assignment is where the group's commit left it.
        self.committed.entry(p).or_insert(offset);
        if let Some(t) = message.timestamp().to_millis() {
            let stream = self.stream_ms.entry(p).or_insert(t);
            *stream = (*stream).max(t);
        }
        if !self.partitions.contains_key(&p) {
            self.restore(p)?;
        }
        // Undecodable events are the webhook path's to dead-letter; here they are skipped.
        let event = match message.payload() {
            Some(bytes) => match self.read(consumer, p, offset, bytes)? {
                registry_wait::Readable::Now(event) => event,
                registry_wait::Readable::Later => return Ok(()),
            },
            None => None,
        };
        let Some(mut event) = event.filter(|e| is_ours(&e.event_type)) else {
            return self.advance(p, offset);
        };
        if service_kit::open_event(&self.shared.sealer, &self.shared.registry, &mut event).is_err()
        {
            self.begin()?;
            let reason = "cannot open the event's sealed fields with this HOOKLINE_MASTER_KEY";
            self.dead_letter(
                p,
                offset,
                Some(&event),
                None,
                "HL-SEAL-OPEN",
                reason,
                message.payload().map(<[u8]>::to_vec),
            )?;
            return self.advance(p, offset);
        }
        match event.event_type.as_str() {
            // Model validation traces are never forwarded.
            _ if render::subscription::is_model_validation_trace(&event) => self.advance(p, offset),
            "transfer.sensitive_trace" => match transfer_id(&event) {
                Some(id) => {
                    let id = id.to_owned();
                    self.append(p, &id, &event, telemetry::message_context(message))?;
                    self.advance(p, offset)
                }
                None => {
                    self.begin()?;
                    let reason = "transfer.sensitive_trace without transfer_id: cannot be gathered with its transfer";
                    self.dead_letter(
                        p,
                        offset,
                        Some(&event),
                        None,
                        "HL-TRACE-NO-TRANSFER",
                        reason,
                        message.payload().map(<[u8]>::to_vec),
                    )?;
                    self.advance(p, offset)
                }
            },
            "connection_test.sensitive_trace" => {
                self.send_now(p, offset, &event)?;
                self.advance(p, offset)
            }
            "transfer.completed" => {
                let open = transfer_id(&event)
                    .filter(|id| self.partitions.get(&p).is_some_and(|t| t.contains_key(*id)));
                if let Some(id) = open.map(str::to_owned) {
                    // Its traces must be readable back: commit what came before this event.
                    self.commit(consumer)?;
                    self.flush(p, &id, FlushReason::Completed, Some((offset, &event.id)))?;
                }
                self.advance(p, offset)
            }
            _ => self.advance(p, offset),
        }
    }

    /// Records one trace of an open transfer on the changelog.
    pub(super) fn append(
        &mut self,
        p: i32,
        transfer_id: &str,
        event: &Event,
        trace: Option<opentelemetry::Context>,
    ) -> anyhow::Result<()> {
        self.begin()?;
        let floor = self.floor(p);
        let data = &event.data;
        let text = |k: &str| data.get(k).and_then(Value::as_str);
        let transfers = self.partitions.entry(p).or_default();
        let transfer = transfers
            .entry(transfer_id.to_owned())
            .or_insert_with(|| Transfer {
                destination_id: text("destination_id").unwrap_or_default().to_owned(),
                first_event_id: event.id.clone(),
                opened_at_ms: now_ms(),
                traces: 0,
                source_ids: Vec::new(),
                model_ids: Vec::new(),
                scan_from: floor,
                links: Vec::new(),
            });
        if let Some(cx) = trace
            && transfer.links.len() < MAX_LINKS
        {
            use opentelemetry::trace::TraceContextExt as _;
            transfer.links.push(cx.span().span_context().clone());
        }
        let seq = transfer.traces;
        let record = AggregatedTrace {
            transfer_id: transfer_id.to_owned(),
            seq,
            event_id: event.id.clone(),
            destination_id: transfer.destination_id.clone(),
            source_id: text("source_id").map(str::to_owned),
            model_id: text("model_id").map(str::to_owned),
            opened_at_ms: transfer.opened_at_ms,
            trace_sealed: self.shared.sealer.seal(
                trace_object(data).expose().as_bytes(),
                &trace_context(transfer_id, seq),
            ),
        };
        transfer.traces += 1;
        transfer.add_ids(text("source_id"), text("model_id"));
        let bytes = self.shared.registry.encode(&record)?;
        let topic = self.shared.topics.sensitive_trace_changelog.clone();
        self.send(
            &topic,
            Some(p),
            &changelog_key(transfer_id, seq),
            Some(&bytes),
        )
    }

    /// A connection test's trace: one request per endpoint, at once.
    pub(super) fn send_now(&mut self, p: i32, offset: i64, event: &Event) -> anyhow::Result<()> {
        self.begin()?;
        self.sync_endpoints()?;
        let data = &event.data;
        let text = |k: &str| {
            data.get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let source_ids: Vec<String> = text("source_id").into_iter().collect();
        let destination_id = text("destination_id").unwrap_or_default();
        let timestamp = render::trace_timestamp(time::OffsetDateTime::now_utc());
        let environment = self.settings.environment.clone();
        let trace = trace_object(data);
        for configured in self.trace_endpoints() {
            let Some(compiled) = configured.traces() else {
                continue;
            };
            let batch = BatchRender {
                compiled,
                environment: &environment,
                transfer_id: None,
                destination_id: &destination_id,
                source_ids: &source_ids,
                model_ids: &[],
                timestamp: &timestamp,
                reason: FlushReason::ConnectionTest,
            };
            let mut splitter = Splitter::new(batch, self.settings.max_body);
            let mut parts = splitter
                .push(trace.expose().clone())
                .unwrap_or_else(|never| match never {});
            parts.extend(splitter.finish().unwrap_or_else(|never| match never {}));
            for part in parts {
                self.deliver(p, offset, compiled, part, &event.id, &event.id, None)?;
            }
        }
        Ok(())
    }
}
