package progress

import (
	"bytes"
	"strings"
	"testing"
)

func TestBarNotTerminal(t *testing.T) {
	var out bytes.Buffer
	b := New(&out, "bench")
	for i := 0; i <= 100; i++ {
		b.Set(float64(i)/100, "step")
	}
	b.Done("finished")
	b.Set(0.5, "after done") // ignored
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 12 { // 0%, 10%, ..., 100%, and the final line
		t.Fatalf("%d lines:\n%s", len(lines), out.String())
	}
	if !strings.Contains(lines[5], " 50% step") || !strings.HasPrefix(lines[11], "bench: finished in ") {
		t.Fatalf("unexpected lines:\n%s", out.String())
	}
}
