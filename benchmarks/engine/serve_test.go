package engine

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestSummarize(t *testing.T) {
	ms := time.Millisecond
	sv := []Served{
		{Prefill: 10 * ms, Service: 20 * ms, TPOT: ms, Generated: 9, CachedTokens: 0, PromptTokens: 100},
		{Prefill: 10 * ms, Service: 20 * ms, TPOT: 2 * ms, Generated: 9, CachedTokens: 80, PromptTokens: 100},
	}
	ss, err := Summarize("single-stream", sv, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	if ss.TTFTp99 != 10 || ss.HitRate != 0.4 || ss.TokensPerS != 20/0.04 {
		t.Errorf("single-stream %+v", ss)
	}
	off, err := Summarize("offline", sv, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	if off.TTFTp99 != 30 { // the second waits for the first's 20 ms
		t.Errorf("offline p99 TTFT %v, want 30", off.TTFTp99)
	}
	best, err := MaxQPS(sv, 25*ms, 1)
	if err != nil {
		t.Fatal(err)
	}
	if best.TTFTp99 > 25 || best.QPS <= 0 {
		t.Errorf("MaxQPS %+v", best)
	}
	for _, bad := range []struct {
		scen string
		qps  float64
	}{{"batch", 0}, {"server", 0}} {
		if _, err := Summarize(bad.scen, sv, bad.qps, 1); !errors.Is(err, ErrInput) {
			t.Errorf("%v: %v", bad, err)
		}
	}
	if r, err := MaxQPS(sv, ms, 1); err != nil || r.QPS != 0 || r.TTFTp99 != 10 {
		t.Errorf("impossible SLA: %+v, %v", r, err)
	}
}

func TestWorkload(t *testing.T) {
	texts := [][]byte{[]byte(strings.Repeat("a", 600)), []byte(strings.Repeat("b", 600))}
	chat, err := Workload("multi-round-chat", texts, 4, 16)
	if err != nil {
		t.Fatal(err)
	}
	// Round 2 of conversation 0 extends round 1's prompt.
	if len(chat) != 4 || len(chat[2].Prompt) <= len(chat[0].Prompt) || chat[2].Prompt[0] != 'a' {
		t.Errorf("chat workload: %d requests", len(chat))
	}
	qa, err := Workload("long-doc-qa", texts, 3, 16)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range qa {
		if len(r.Prompt) != 416 || r.Prompt[0] != 'a' || r.Prompt[400] != 'b' {
			t.Errorf("long-doc-qa prompt of %d tokens", len(r.Prompt))
		}
	}
	if _, err := Workload("chat", texts, 3, 16); !errors.Is(err, ErrInput) {
		t.Errorf("unknown workload: %v", err)
	}
	if _, err := Workload("multi-round-chat", texts, 40, 16); !errors.Is(err, ErrInput) {
		t.Errorf("too many rounds: %v", err)
	}
}
