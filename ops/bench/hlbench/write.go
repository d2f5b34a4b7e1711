package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// write produces N transfer.error events straight to the events topic, as a transfer
// engine that writes Kafka itself would: Avro single-object encoding (0xC3 0x01, the
// schema's CRC-64-AVRO fingerprint little-endian, the datum) by hamba/avro, keyed by
// transfer id, through franz-go with acks from all in-sync replicas.
func write(args []string) error {
	fs := flag.NewFlagSet("write", flag.ExitOnError)
	brokers := fs.String("brokers", "127.0.0.1:9092", "bootstrap servers")
	topic := fs.String("topic", "events", "the events topic (with its prefix)")
	schemaPath := fs.String("schema", "schemas/event.v1.avsc", "hookline's event schema")
	n := fs.Int("n", 1000, "events")
	rate := fs.Float64("rate", 0, "events per second (0: as fast as acknowledged)")
	prefix := fs.String("id-prefix", "bench", "event ids are PREFIX-<n>")
	out := fs.String("out", "", "write 'id start_ns acked_ns' lines here")
	logBytes := fs.Int("log-bytes", 0, "pad each event's transfer_log to this many bytes (floods of large events)")
	fs.Parse(args)

	text, err := os.ReadFile(*schemaPath)
	if err != nil {
		return err
	}
	schema, err := avro.Parse(string(text))
	if err != nil {
		return fmt.Errorf("parsing %s: %w", *schemaPath, err)
	}
	fp, err := schema.FingerprintUsing(avro.CRC64Avro)
	if err != nil {
		return err
	}
	// hamba gives the fingerprint big-endian; single-object encoding wants it little-endian.
	header := make([]byte, 10)
	header[0], header[1] = 0xC3, 0x01
	binary.LittleEndian.PutUint64(header[2:], binary.BigEndian.Uint64(fp))

	client, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(*brokers, ",")...),
		kgo.DefaultProduceTopic(*topic), kgo.ProducerLinger(time.Millisecond),
		kgo.ProducerBatchMaxBytes(int32(*logBytes+1<<20)))
	if err != nil {
		return err
	}
	defer client.Close()

	results := make([]sent, *n)
	var mu sync.Mutex
	var failed int
	var wg sync.WaitGroup
	begin := time.Now()
	for i := 0; i < *n; i++ {
		if *rate > 0 {
			due := begin.Add(time.Duration(float64(i) / *rate * float64(time.Second)))
			if d := time.Until(due); d > 0 {
				time.Sleep(d)
			}
		}
		id := fmt.Sprintf("%s-%d", *prefix, i)
		datum, err := avro.Marshal(schema, avroEvent(id, *logBytes))
		if err != nil {
			return fmt.Errorf("encoding event %d: %w", i, err)
		}
		value := append(append([]byte(nil), header...), datum...)
		start := time.Now().UnixNano()
		rec := &kgo.Record{Key: []byte(id), Value: value}
		wg.Add(1)
		client.Produce(context.Background(), rec, func(_ *kgo.Record, err error) {
			defer wg.Done()
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed++
				return
			}
			results[i] = sent{id: id, start: start, accepted: time.Now().UnixNano()}
		})
	}
	wg.Wait()
	elapsed := time.Since(begin)
	if *out != "" {
		if err := writeSent(*out, results); err != nil {
			return err
		}
	}
	return json.NewEncoder(os.Stdout).Encode(map[string]any{
		"accepted": *n - failed, "failed": failed,
		"elapsed_s": elapsed.Seconds(), "accepted_per_s": float64(*n-failed) / elapsed.Seconds(),
	})
}

// avroEvent is transferError as the Avro event record: the data union's branch named.
func avroEvent(id string, logBytes int) map[string]any {
	ev := transferError(id)
	detail := ev["data"].(map[string]any)["error"].(map[string]any)
	if pad := logBytes - len(detail["transfer_log"].(string)); pad > 0 {
		detail["transfer_log"] = detail["transfer_log"].(string) + strings.Repeat("x", pad)
	}
	detail["models"] = []any{"users"}
	detail["transfer_ended_at"] = map[string]any{"string": detail["transfer_ended_at"]}
	return map[string]any{
		"id":         id,
		"type":       ev["type"],
		"version":    ev["api_version"],
		"created_at": time.Now().UTC().Format(time.RFC3339Nano),
		"data":       map[string]any{"hookline.events.TransferError": map[string]any{"error": detail}},
	}
}

// topicsDelete deletes every topic whose name starts with the prefix (a bench run's).
func topicsDelete(args []string) error {
	fs := flag.NewFlagSet("topics-delete", flag.ExitOnError)
	brokers := fs.String("brokers", "127.0.0.1:9092", "bootstrap servers")
	prefix := fs.String("prefix", "", "topic name prefix (required, at least 8 characters)")
	fs.Parse(args)
	if len(*prefix) < 8 {
		return fmt.Errorf("-prefix must be at least 8 characters, got %q", *prefix)
	}
	client, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(*brokers, ",")...))
	if err != nil {
		return err
	}
	defer client.Close()
	adm := kadm.NewClient(client)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	topics, err := adm.ListTopics(ctx)
	if err != nil {
		return err
	}
	var names []string
	for _, t := range topics.Names() {
		if strings.HasPrefix(t, *prefix) {
			names = append(names, t)
		}
	}
	if len(names) == 0 {
		return nil
	}
	resp, err := adm.DeleteTopics(ctx, names...)
	if err != nil {
		return err
	}
	return resp.Error()
}
