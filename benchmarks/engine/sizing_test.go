package engine

import (
	"errors"
	"testing"
)

// TestPlanChapterExample pins the worked sizing example: Llama-3.1-70B
// (80 layers, 8 KV heads, head dim 128, bf16), 4K context, 8 × 80 GB,
// 140 GB of weights.
func TestPlanChapterExample(t *testing.T) {
	p, err := MakePlan(PlanInput{Shape: Presets["llama-3.1-70b"], GPU: GPUs["h100"], GPUs: 8, Context: 4096,
		CodecName: "3.7x", CodecRatio: 3.7})
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want int64
	}{
		{"KV bytes per token", p.KVBytesPerToken, 327680},
		{"KV bytes per request (1.25 GiB)", p.KVBytesPerRequest, 1342177280},
		{"chapter's requests (mixed units)", p.ChapterRequests, 390},
		{"chapter's requests with 3.7x codec", p.ChapterRequestsEnc, 1445},
		{"requests, decimal units", p.Rows[0].Requests, 372},
		{"requests, binary units", p.Rows[0].RequestsBinary, 400},
		{"requests with 3.7x, decimal units", p.Rows[1].Requests, 1378},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d", c.name, c.got, c.want)
		}
	}
	if p.HBMFreeBytes != 500e9 {
		t.Errorf("free HBM = %v, want 500 GB", p.HBMFreeBytes)
	}
}

func TestPlanRejects(t *testing.T) {
	cases := []struct {
		name string
		in   PlanInput
	}{
		{"no gpus", PlanInput{Shape: Presets["llama-3.1-8b"], GPU: GPUs["h100"], Context: 4096}},
		{"no context", PlanInput{Shape: Presets["llama-3.1-8b"], GPU: GPUs["h100"], GPUs: 1}},
		{"weights do not fit", PlanInput{Shape: Presets["llama-3.1-70b"], GPU: GPUs["h100"], GPUs: 1, Context: 4096}},
		{"ratio below 1", PlanInput{Shape: Presets["llama-3.1-8b"], GPU: GPUs["h100"], GPUs: 1, Context: 4096, CodecRatio: 0.5}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := MakePlan(c.in); !errors.Is(err, ErrInput) {
				t.Fatalf("MakePlan: %v, want ErrInput", err)
			}
		})
	}
}

func TestParseBytes(t *testing.T) {
	cases := []struct {
		in   string
		want float64
		bad  bool
	}{
		{"512GiB", 512 << 30, false}, {"80GB", 80e9, false}, {"4TiB", 4 << 40, false}, {"1.5TB", 1.5e12, false},
		{"4096", 4096, false}, {"", 0, true}, {"-1GB", 0, true}, {"lots", 0, true},
	}
	for _, c := range cases {
		got, err := ParseBytes(c.in)
		if (err != nil) != c.bad || (!c.bad && got != c.want) {
			t.Errorf("ParseBytes(%q) = %v, %v", c.in, got, err)
		}
	}
	if s := FormatBoth(1342177280); s != "1.342 GB (1.250 GiB)" {
		t.Errorf("FormatBoth = %q", s)
	}
}

func TestModelDecode(t *testing.T) {
	s, g := Presets["llama-3.1-8b"], GPUs["h100"]
	// 16 GB of weights + 32768 × 128 KiB of KV over 3.35 TB/s.
	want := (16e9 + 131072*32768) / 3.35e12
	if got := Roofline(s, g, 32768).Seconds(); got < want*0.999 || got > want*1.001 {
		t.Fatalf("roofline %v s, want %v", got, want)
	}
	r, err := ModelDecode(s, g, 32768, 0.2, 10e9, 65536)
	if err != nil {
		t.Fatal(err)
	}
	moved := 0.8 * 131072 * 32768
	if r.BytesPerToken != moved || r.StallMs < moved/10e9*1e3 || r.Measured != "modelled" {
		t.Fatalf("%+v", r)
	}
	if _, err := ModelDecode(s, g, 32768, 0, 10e9, 1); !errors.Is(err, ErrInput) {
		t.Fatalf("budget 0: %v", err)
	}
}
