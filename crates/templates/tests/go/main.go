// Command gorender renders (template, data) cases with Go's text/template, for
// hookline's differential test. Input on stdin: a JSON array of
// {"template": string, "data": object}. Output on stdout: a JSON array of
// {"ok": bool, "output": base64 bytes, "error": string}, one per case.
//
// With -lines it serves the differential fuzz target instead: one case per input line,
// one result per output line, flushed after each, until stdin closes.
//
// Data follows hookline's template data model: JSON objects are map[string]any,
// integers int (64-bit; uint64 above that), other numbers float64.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"text/template"
)

type testCase struct {
	Template string          `json:"template"`
	Data     json.RawMessage `json:"data"`
}

type result struct {
	OK     bool   `json:"ok"`
	Output []byte `json:"output"`
	Error  string `json:"error,omitempty"`
}

func convert(v any) any {
	switch x := v.(type) {
	case json.Number:
		if i, err := strconv.ParseInt(string(x), 10, 64); err == nil {
			return int(i)
		}
		if u, err := strconv.ParseUint(string(x), 10, 64); err == nil {
			return u
		}
		f, _ := x.Float64()
		return f
	case map[string]any:
		for k, e := range x {
			x[k] = convert(e)
		}
		return x
	case []any:
		for i, e := range x {
			x[i] = convert(e)
		}
		return x
	default:
		return v
	}
}

func render(c testCase) (out result) {
	defer func() {
		if r := recover(); r != nil {
			out = result{OK: false, Error: fmt.Sprint("panic: ", r)}
		}
	}()
	dec := json.NewDecoder(bytes.NewReader(c.Data))
	dec.UseNumber()
	var data any
	if err := dec.Decode(&data); err != nil {
		return result{Error: "bad data: " + err.Error()}
	}
	t, err := template.New("t").Parse(c.Template)
	if err != nil {
		return result{Error: err.Error()}
	}
	var buf bytes.Buffer
	if err := t.Execute(&buf, convert(data)); err != nil {
		return result{Error: err.Error(), Output: buf.Bytes()}
	}
	return result{OK: true, Output: buf.Bytes()}
}

func serveLines() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 64<<20)
	out := bufio.NewWriter(os.Stdout)
	enc := json.NewEncoder(out)
	for in.Scan() {
		var c testCase
		if err := json.Unmarshal(in.Bytes(), &c); err != nil {
			fmt.Fprintln(os.Stderr, "reading a case:", err)
			os.Exit(2)
		}
		if err := enc.Encode(render(c)); err != nil {
			os.Exit(2)
		}
		if err := out.Flush(); err != nil {
			os.Exit(2)
		}
	}
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-lines" {
		serveLines()
		return
	}
	var cases []testCase
	if err := json.NewDecoder(os.Stdin).Decode(&cases); err != nil {
		fmt.Fprintln(os.Stderr, "reading cases:", err)
		os.Exit(2)
	}
	results := make([]result, len(cases))
	for i, c := range cases {
		results[i] = render(c)
	}
	if err := json.NewEncoder(os.Stdout).Encode(results); err != nil {
		fmt.Fprintln(os.Stderr, "writing results:", err)
		os.Exit(2)
	}
}
