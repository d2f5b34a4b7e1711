// Command hlbench is the load side of ops/bench: a receiver that counts what arrives,
// a load generator for POST /events, a writer that produces events straight to Kafka
// (the transfer engine's path), and topic cleanup. ops/bench/pipeline drives it.
//
//	hlbench receive -addr 127.0.0.1:0 -port-file F
//	hlbench load    -url http://127.0.0.1:8080 -token T -n 30000 -c 64 [-rate 200] -out F
//	hlbench write   -brokers 127.0.0.1:9092 -topic P-events -schema schemas/event.v1.avsc -n N -out F
//	hlbench topics-delete -brokers 127.0.0.1:9092 -prefix P
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "receive":
		err = receive(os.Args[2:])
	case "load":
		err = load(os.Args[2:])
	case "write":
		err = write(os.Args[2:])
	case "topics-delete":
		err = topicsDelete(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "hlbench:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: hlbench receive|load|write|topics-delete [flags] (-h for each)")
	os.Exit(2)
}
