package report

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
)

type bar struct{ msg string }

func (b *bar) Done(msg string) { b.msg = msg }

func TestJSON(t *testing.T) {
	type row struct {
		A int `json:"a"`
	}
	for _, tc := range []struct {
		name string
		rows []row
		want string
	}{
		{"nil", nil, "[]\n"},
		{"rows", []row{{1}, {2}}, "[\n  {\n    \"a\": 1\n  },\n  {\n    \"a\": 2\n  }\n]\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := JSON(&buf, tc.rows); err != nil {
				t.Fatal(err)
			}
			if buf.String() != tc.want {
				t.Fatalf("got %q, want %q", buf.String(), tc.want)
			}
		})
	}
}

func TestOutcome(t *testing.T) {
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	boom := errors.New("boom")
	for _, tc := range []struct {
		name    string
		ctx     context.Context
		err     error
		code    int
		msg     string
		stderrs string
	}{
		{"ok", context.Background(), nil, 0, "3 rows", ""},
		{"failed", context.Background(), boom, 1, "failed", "bench x: boom"},
		{"interrupted", cancelled, context.Canceled, 130, "interrupted; 3 rows measured so far", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bar
			var stderr bytes.Buffer
			code := Outcome(tc.ctx, &b, &stderr, "bench x", 3, tc.err)
			if code != tc.code || b.msg != tc.msg || !strings.Contains(stderr.String(), tc.stderrs) {
				t.Fatalf("got code %d, bar %q, stderr %q", code, b.msg, stderr.String())
			}
		})
	}
}
