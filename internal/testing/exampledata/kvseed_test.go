package exampledata_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/prego/testreset/internal/testing/exampledata"
)

func TestParseKV(t *testing.T) {
	got, err := exampledata.ParseKV([]byte(`{"NS": [
		{"key": "text", "value": "a \"quoted\" \u00e9"},
		{"key": "json", "value": {"b": [1, 2], "a": null}, "metadata": {"m": 1}, "expiration": 4102444800},
		{"key": "number", "value": 12.50},
		{"key": "bytes", "value_base64": "/wA="},
		{"key": "empty", "value": ""}
	]}`))
	if err != nil {
		t.Fatal(err)
	}
	entries := got["NS"]
	want := []struct {
		key, value, metadata string
		expiration           int64
	}{
		{"text", "a \"quoted\" é", "", 0},
		{"json", `{"b":[1,2],"a":null}`, `{"m": 1}`, 4102444800},
		{"number", "12.50", "", 0},
		{"bytes", "\xff\x00", "", 0},
		{"empty", "", "", 0},
	}
	if len(entries) != len(want) {
		t.Fatalf("%d entries, want %d", len(entries), len(want))
	}
	for i, w := range want {
		e := entries[i]
		if e.Key != w.key || !bytes.Equal(e.Value, []byte(w.value)) || string(e.Metadata) != w.metadata || e.Expiration != w.expiration {
			t.Errorf("entry %d = {%q %q %s %d}, want {%q %q %s %d}", i, e.Key, e.Value, e.Metadata, e.Expiration, w.key, w.value, w.metadata, w.expiration)
		}
	}
}

func TestParseKVErrors(t *testing.T) {
	for _, c := range []struct{ name, json, want string }{
		{"no value", `{"NS": [{"key": "k"}]}`, "no value"},
		{"null value", `{"NS": [{"key": "k", "value": null}]}`, "no value"},
		{"both", `{"NS": [{"key": "k", "value": "a", "value_base64": "YQ=="}]}`, "both"},
		{"bad base64", `{"NS": [{"key": "k", "value_base64": "***"}]}`, "value_base64"},
		{"empty key", `{"NS": [{"key": "", "value": "a"}]}`, "empty key"},
		{"duplicate", `{"NS": [{"key": "k", "value": "a"}, {"key": "k", "value": "b"}]}`, "duplicate key"},
		{"unknown field", `{"NS": [{"key": "k", "value": "a", "ttl": 5}]}`, "unknown field"},
		{"empty namespace", `{"": [{"key": "k", "value": "a"}]}`, "empty namespace"},
		{"not an object", `[]`, "parse kv seed"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := exampledata.ParseKV([]byte(c.json))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want one containing %q", err, c.want)
			}
		})
	}
}
