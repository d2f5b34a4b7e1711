package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"
)

// arrival is one request as the receiver saw it; id is the event's (see eventID).
type arrival struct {
	path string
	id   string
	at   int64 // unix nanoseconds, when the body had been read
}

// receiver answers every request at once (paths under /ok/), or fails it (/fail/: 500),
// or holds it until the client gives up (/hang/: a black hole), and keeps what arrived.
type receiver struct {
	mu       sync.Mutex
	arrivals []arrival
	seen     map[string]struct{}
}

func receive(args []string) error {
	fs := flag.NewFlagSet("receive", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	portFile := fs.String("port-file", "", "write the bound port here once listening")
	fs.Parse(args)

	r := &receiver{seen: make(map[string]struct{}, 1<<16)}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	if *portFile != "" {
		tmp := *portFile + ".tmp"
		if err := os.WriteFile(tmp, []byte(fmt.Sprint(port)), 0o644); err != nil {
			return err
		}
		if err := os.Rename(tmp, *portFile); err != nil {
			return err
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/_stats", r.stats)
	mux.HandleFunc("/_dump", r.dump)
	mux.HandleFunc("/_reset", r.reset)
	mux.HandleFunc("/", r.hook)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: 1 << 16}
	go func() {
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
		<-ch
		srv.Close()
	}()
	if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
		return err
	}
	return nil
}

func (r *receiver) hook(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		return
	}
	now := time.Now().UnixNano()
	switch {
	case strings.HasPrefix(req.URL.Path, "/hang/"):
		<-req.Context().Done()
		return
	case strings.HasPrefix(req.URL.Path, "/fail/"):
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	id := eventID(body)
	if id == "" {
		id = req.Header.Get("Hookline-Delivery-Id")
	}
	r.mu.Lock()
	r.arrivals = append(r.arrivals, arrival{path: req.URL.Path, id: id, at: now})
	r.seen[req.URL.Path+"\x00"+id] = struct{}{}
	r.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

var idKey = []byte(`"transfer_id"`)

// eventID is the event's transfer id (the load generators give every event its own, the
// event's id, since hookline's envelope does not carry the event id), found without
// parsing the body; whitespace around the colon is allowed (svix re-serialises JSON).
func eventID(body []byte) string {
	for rest := body; ; {
		i := bytes.Index(rest, idKey)
		if i < 0 {
			return ""
		}
		rest = rest[i+len(idKey):]
		v := bytes.TrimLeft(rest, " \t\r\n")
		if len(v) == 0 || v[0] != ':' {
			continue
		}
		v = bytes.TrimLeft(v[1:], " \t\r\n")
		if len(v) == 0 || v[0] != '"' {
			continue
		}
		if j := bytes.IndexByte(v[1:], '"'); j >= 0 {
			return string(v[1 : 1+j])
		}
		return ""
	}
}

func (r *receiver) stats(w http.ResponseWriter, _ *http.Request) {
	r.mu.Lock()
	out := map[string]any{"requests": len(r.arrivals), "distinct": len(r.seen)}
	if n := len(r.arrivals); n > 0 {
		out["last_ns"] = r.arrivals[n-1].at
	}
	r.mu.Unlock()
	json.NewEncoder(w).Encode(out)
}

// dump writes one line per request: path, event id, arrival in unix nanoseconds.
func (r *receiver) dump(w http.ResponseWriter, _ *http.Request) {
	r.mu.Lock()
	all := append([]arrival(nil), r.arrivals...)
	r.mu.Unlock()
	bw := bufio.NewWriterSize(w, 1<<16)
	for _, a := range all {
		fmt.Fprintf(bw, "%s %s %d\n", a.path, a.id, a.at)
	}
	bw.Flush()
}

func (r *receiver) reset(w http.ResponseWriter, _ *http.Request) {
	r.mu.Lock()
	r.arrivals = r.arrivals[:0]
	r.seen = make(map[string]struct{}, 1<<16)
	r.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}
