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
	batch := fs.Int("batch", 1, "events per request, as a JSON array when more than 1 (hookline)")
	direct := fs.String("direct", "", "post each event to this URL instead, any 2xx accepted (a receiver alone)")
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
	if *direct != "" {
		target = *direct
	}
	if *batch < 1 || (*batch > 1 && (*svixApp != "" || *direct != "")) {
		return fmt.Errorf("-batch must be at least 1, and 1 with -svix-app or -direct")
	}
	// Each job is a batch of event numbers: one POST of a JSON array, or of one event.
	jobs := make(chan []int, *c)
	go func() {
		begin := time.Now()
		for i := 0; i < *n; i += *batch {
			if *rate > 0 {
				due := begin.Add(time.Duration(float64(i) / *rate * float64(time.Second)))
				if d := time.Until(due); d > 0 {
					time.Sleep(d)
				}
			}
			job := []int{}
			for k := i; k < i+*batch && k < *n; k++ {
				job = append(job, k)
			}
			jobs <- job
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
			for pending := range jobs {
				for attempt := 0; attempt < 10 && len(pending) > 0; attempt++ {
					if attempt > 0 {
						retries.Add(1)
						time.Sleep(time.Duration(attempt) * 50 * time.Millisecond)
					}
					ids, body := make([]string, len(pending)), []byte{}
					for k, i := range pending {
						ids[k] = fmt.Sprintf("%s-%d", *prefix, i)
					}
					if *batch == 1 {
						body = wrap(transferErrorJSON(ids[0]))
					} else {
						body = append(body, '[')
						for k, id := range ids {
							if k > 0 {
								body = append(body, ',')
							}
							body = append(body, transferErrorJSON(id)...)
						}
						body = append(body, ']')
					}
					start := time.Now().UnixNano()
					accepted, err := post(client, target, *token, body, len(pending), *batch > 1, *direct != "")
					if err != nil {
						continue
					}
					now := time.Now().UnixNano()
					var left []int
					for k, i := range pending {
						if accepted[k] {
							results[i] = sent{id: ids[k], start: start, accepted: now}
						} else {
							left = append(left, i)
						}
					}
					pending = left
				}
				failed.Add(int64(len(pending)))
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

// post sends one request; says which of its `count` events were accepted: all of them
// on a 202, those whose result says 202 on a 207 (an array), none otherwise.
// post sends one request; anyOK counts any 2xx as accepted (a receiver, not hookline).
func post(client *http.Client, url, token string, body []byte, count int, array, anyOK bool) ([]bool, error) {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	accepted := make([]bool, count)
	switch {
	case resp.StatusCode == http.StatusAccepted || (anyOK && resp.StatusCode/100 == 2):
		io.Copy(io.Discard, resp.Body)
		for k := range accepted {
			accepted[k] = true
		}
	case resp.StatusCode == http.StatusMultiStatus && array:
		var answer struct {
			Events []struct {
				Status int `json:"status"`
			} `json:"events"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&answer); err != nil {
			return nil, err
		}
		for k := range accepted {
			accepted[k] = k < len(answer.Events) && answer.Events[k].Status == http.StatusAccepted
		}
	default:
		io.Copy(io.Discard, resp.Body)
	}
	return accepted, nil
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
