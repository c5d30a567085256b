package engine

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

func header(vals ...int32) []byte {
	var b []byte
	for _, v := range vals {
		b = binary.LittleEndian.AppendUint32(b, uint32(v))
	}
	return b
}

func TestLoadRejects(t *testing.T) {
	good := header(256, 688, 6, 8, 2, 256, 512)
	cases := []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"short header", good[:20]},
		{"no weights", good},
		{"zero dim", header(0, 688, 6, 8, 2, 256, 512)},
		{"heads do not divide", header(256, 688, 6, 7, 2, 256, 512)},
		{"untied classifier", header(256, 688, 6, 8, 2, -256, 512)},
		{"huge", header(1<<30, 1<<30, 1<<30, 8, 2, 256, 512)},
		{"fp16 truncated", append([]byte(f16Magic), good...)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := Load(c.in); !errors.Is(err, ErrModel) {
				t.Fatalf("Load: %v, want ErrModel", err)
			}
		})
	}
}

func TestF16RoundTrip(t *testing.T) {
	m := tinyModel(t)
	if got := m.Params(); got != 4222208 {
		t.Fatalf("Params = %d, want 4,222,208", got)
	}
	enc := m.EncodeF16()
	if !bytes.Equal(enc, tinyF16) {
		t.Fatal("re-encoding the shipped model changed it")
	}
}

func TestForwardRejects(t *testing.T) {
	m := tinyModel(t)
	s := m.NewSession()
	if _, err := s.Prefill(nil, nil); !errors.Is(err, ErrInput) {
		t.Fatalf("empty: %v", err)
	}
	if _, err := s.Step(256); !errors.Is(err, ErrInput) {
		t.Fatalf("token 256: %v", err)
	}
	s.N = m.SeqLen
	if _, err := s.Step(1); !errors.Is(err, ErrInput) {
		t.Fatalf("past seq_len: %v", err)
	}
}

// TestBatchedPrefillMatchesSteps: a batched prefill and token-by-token
// steps produce the same cache and logits (up to float32 summation order).
func TestBatchedPrefillMatchesSteps(t *testing.T) {
	m := tinyModel(t)
	toks := tokensOf("func main() {\n\tfmt.Println(\"hello, world\")\n}\n")
	a, b := m.NewSession(), m.NewSession()
	la, err := a.Prefill(toks, nil)
	if err != nil {
		t.Fatal(err)
	}
	la = append([]float32(nil), la...)
	var lb []float32
	for _, tok := range toks {
		if lb, err = b.Step(tok); err != nil {
			t.Fatal(err)
		}
	}
	for i := range la {
		if d := la[i] - lb[i]; d > 1e-3 || d < -1e-3 {
			t.Fatalf("logit %d: %v batched, %v stepped", i, la[i], lb[i])
		}
	}
	if Argmax(la) != Argmax(lb) {
		t.Fatal("greedy token differs")
	}
}

func FuzzLoad(f *testing.F) {
	f.Add(header(256, 688, 6, 8, 2, 256, 512))
	f.Add(append([]byte(f16Magic), header(8, 8, 1, 2, 1, 4, 4)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Load(b)
		if err == nil && m.Params() <= 0 {
			t.Fatal("loaded a model without parameters")
		}
	})
}
