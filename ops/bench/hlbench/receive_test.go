package main

import "testing"

func TestEventID(t *testing.T) {
	cases := map[string]string{
		`{"data":{"error":{"transfer_id":"a-1"}}}`:              "a-1",
		`{"payload": {"data": {"x": 1, "transfer_id": "b-2"}}}`: "b-2",
		`{"transfer_id_old":"no","transfer_id" : "c-3"}`:        "c-3",
		`{"type":"x"}`:       "",
		`{"transfer_id": 5}`: "",
	}
	for body, want := range cases {
		if got := eventID([]byte(body)); got != want {
			t.Errorf("eventID(%s) = %q, want %q", body, got, want)
		}
	}
}
