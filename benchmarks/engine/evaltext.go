package engine

import (
	"bytes"
	_ "embed"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

//go:embed models/eval-files.txt
var evalList string

// EvalFiles returns the held-out evaluation files: paths under
// $(go env GOROOT)/src, none of them in the model's training set.
func EvalFiles(goroot string) []string {
	var out []string
	for _, l := range strings.Split(evalList, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, filepath.Join(goroot, "src", l))
		}
	}
	return out
}

// Windows cuts up to max windows of size bytes from the files, each
// starting at a line that begins with "func ", at most perFile from one
// file, in file order. A missing file is an error naming it.
func Windows(files []string, size, maxN, perFile int) ([][]byte, error) {
	if size <= 0 || maxN <= 0 || perFile <= 0 {
		return nil, fmt.Errorf("%w: window size, count and per-file count must be positive", ErrInput)
	}
	var out [][]byte
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("%w: evaluation text: %w", ErrInput, err)
		}
		n := 0
		for off := 0; off < len(b) && n < perFile && len(out) < maxN; {
			i := bytes.Index(b[off:], []byte("\nfunc "))
			if i < 0 {
				break
			}
			start := off + i + 1
			if start+size > len(b) {
				break
			}
			out = append(out, b[start:start+size])
			n++
			off = start + size // windows do not overlap
		}
		if len(out) >= maxN {
			break
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no %d-byte window starting at a line \"func \" in %d files", ErrInput, size, len(files))
	}
	return out, nil
}

// Tokens maps bytes to token ids (the model is byte-level).
func Tokens(b []byte) []int {
	out := make([]int, len(b))
	for i, c := range b {
		out[i] = int(c)
	}
	return out
}

// MeasureCodecRatio prefills text and encodes every full per-layer block
// of its KV with the codec: raw bytes over encoded bytes.
func (m *Model) MeasureCodecRatio(c *Codec, text []byte) (float64, error) {
	n := min(len(text), m.SeqLen) / BlockTokens * BlockTokens
	if n == 0 {
		return 0, fmt.Errorf("%w: need at least %d bytes of text", ErrInput, BlockTokens)
	}
	s := m.NewSession()
	if _, err := s.Prefill(Tokens(text[:n]), nil); err != nil {
		return 0, err
	}
	var raw, enc int
	var buf []byte
	lay := m.BlockLayout(BlockTokens)
	for l := 0; l < m.Layers; l++ {
		for t0 := 0; t0 < n; t0 += BlockTokens {
			var err error
			if buf, err = s.AppendBlock(buf[:0], l, t0, BlockTokens); err != nil {
				return 0, err
			}
			e, err := c.RoundTrip(lay, buf)
			if err != nil {
				return 0, err
			}
			raw += len(buf)
			enc += e
		}
	}
	return float64(raw) / float64(enc), nil
}
