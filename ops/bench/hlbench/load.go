package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// sent is one accepted event: when its POST started and when the 202 came back.
type sent struct {
	id       string
	start    int64
	accepted int64
}

// load posts N transfer.error events to POST /events (or svix-server's message API) over
// C keep-alive connections, as fast as they are accepted or at a fixed rate, retrying an
// event that is not accepted (a client of an at-least-once API would), and writes one
// line per accepted event.
func load(args []string) error {
	fs := flag.NewFlagSet("load", flag.ExitOnError)
	url := fs.String("url", "http://127.0.0.1:8080", "producer API")
	token := fs.String("token", "", "API bearer token")
	n := fs.Int("n", 1000, "events")
	c := fs.Int("c", 64, "concurrent connections")
	rate := fs.Float64("rate", 0, "events per second (0: as fast as accepted)")
	prefix := fs.String("id-prefix", "bench", "event ids are PREFIX-<n>")
	out := fs.String("out", "", "write 'id start_ns accepted_ns' lines here")
	svixApp := fs.String("svix-app", "", "post to svix-server's POST /api/v1/app/APP/msg/ instead")
	fs.Parse(args)

	target := *url + "/events"
	wrap := func(event []byte) []byte { return event }
	if *svixApp != "" {
		// svix-server takes the payload inside a message with its event type.
		target = *url + "/api/v1/app/" + *svixApp + "/msg/"
		wrap = func(event []byte) []byte {
			return append(append([]byte(`{"eventType":"transfer.error","payload":`), event...), '}')
		}
	}

	client := &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			MaxIdleConns:        *c,
			MaxIdleConnsPerHost: *c,
			MaxConnsPerHost:     *c,
			IdleConnTimeout:     90 * time.Second,
		},
	}
	jobs := make(chan int, *c)
	go func() {
		begin := time.Now()
		for i := 0; i < *n; i++ {
			if *rate > 0 {
				due := begin.Add(time.Duration(float64(i) / *rate * float64(time.Second)))
				if d := time.Until(due); d > 0 {
					time.Sleep(d)
				}
			}
			jobs <- i
		}
		close(jobs)
	}()

	results := make([]sent, *n)
	var failed, retries atomic.Int64
	var wg sync.WaitGroup
	begin := time.Now()
	for w := 0; w < *c; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				id := fmt.Sprintf("%s-%d", *prefix, i)
				body := wrap(transferErrorJSON(id))
				ok := false
				for attempt := 0; attempt < 10 && !ok; attempt++ {
					if attempt > 0 {
						retries.Add(1)
						time.Sleep(time.Duration(attempt) * 50 * time.Millisecond)
					}
					start := time.Now().UnixNano()
					req, _ := http.NewRequest(http.MethodPost, target, bytes.NewReader(body))
					req.Header.Set("Content-Type", "application/json")
					req.Header.Set("Authorization", "Bearer "+*token)
					resp, err := client.Do(req)
					if err != nil {
						continue
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode == http.StatusAccepted {
						results[i] = sent{id: id, start: start, accepted: time.Now().UnixNano()}
						ok = true
					}
				}
				if !ok {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(begin)
	if *out != "" {
		if err := writeSent(*out, results); err != nil {
			return err
		}
	}
	accepted := int64(*n) - failed.Load()
	return json.NewEncoder(os.Stdout).Encode(map[string]any{
		"accepted": accepted, "failed": failed.Load(), "retries": retries.Load(),
		"elapsed_s": elapsed.Seconds(), "accepted_per_s": float64(accepted) / elapsed.Seconds(),
	})
}

func writeSent(path string, results []sent) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(f, 1<<16)
	for _, r := range results {
		if r.id != "" {
			fmt.Fprintf(bw, "%s %d %d\n", r.id, r.start, r.accepted)
		}
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	return f.Close()
}
