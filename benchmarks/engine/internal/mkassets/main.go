// Command mkassets regenerates the reference engine's shipped assets from
// the shared fixtures: the fp16 model (models/tiny.f16) from llama2.c's
// model.bin, and trimmed KV dumps (testdata/kv-pNN.{bin,json}) holding
// k_post_rope and v of the last 32 positions and attn_probs of four query
// positions, for the forward-pass test.
//
//	go run ./benchmarks/engine/internal/mkassets -model ../shared/testdata/model/model.bin -kv ../shared/testdata/kv
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/kvtier/kvtier/benchmarks/engine"
	"github.com/kvtier/kvtier/internal/kvfile"
)

func main() {
	model := flag.String("model", "", "llama2.c `model.bin`")
	kv := flag.String("kv", "", "`DIR` of kv-pNN.bin dumps")
	out := flag.String("out", "benchmarks/engine", "package `DIR` to write into")
	flag.Parse()
	if err := run(*model, *kv, *out); err != nil {
		fmt.Fprintln(os.Stderr, "mkassets:", err)
		os.Exit(1)
	}
}

// Kept positions.
const keepKV = 32

var keepProbs = []int{464, 469, 474, 479}

func run(model, kvDir, out string) error {
	if model != "" {
		b, err := os.ReadFile(model)
		if err != nil {
			return err
		}
		m, err := engine.Load(b)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(out, "models", "tiny.f16"), m.EncodeF16(), 0o644); err != nil {
			return err
		}
	}
	if kvDir == "" {
		return nil
	}
	bins, err := filepath.Glob(filepath.Join(kvDir, "kv-p*.bin"))
	if err != nil {
		return err
	}
	for _, p := range bins {
		if err := trim(p, filepath.Join(out, "testdata", filepath.Base(p))); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
	}
	return nil
}

func trim(src, dst string) error {
	f, err := kvfile.Open(src)
	if err != nil {
		return err
	}
	var data []byte
	var tensors []kvfile.Tensor
	for _, name := range []string{kvfile.KPostRoPE, kvfile.V} {
		raw, t, err := f.Raw(name)
		if err != nil {
			return err
		}
		L, H, T, D := t.Shape[0], t.Shape[1], t.Shape[2], t.Shape[3]
		nt := kvfile.Tensor{Name: name, DType: t.DType, Shape: []int{L, H, keepKV, D}, Dims: t.Dims,
			Offset: int64(len(data)), QueryPositions: nil}
		for l := 0; l < L; l++ {
			for h := 0; h < H; h++ {
				off := 2 * ((l*H+h)*T + T - keepKV) * D
				data = append(data, raw[off:off+2*keepKV*D]...)
			}
		}
		nt.NBytes = int64(len(data)) - nt.Offset
		nt.Dims = append([]string(nil), t.Dims...)
		nt.Dims[2] = fmt.Sprintf("token (positions %d..%d)", T-keepKV, T-1)
		tensors = append(tensors, nt)
	}
	raw, t, err := f.Raw(kvfile.AttnProbs)
	if err != nil {
		return err
	}
	L, H, Q, T := t.Shape[0], t.Shape[1], t.Shape[2], t.Shape[3]
	nt := kvfile.Tensor{Name: kvfile.AttnProbs, DType: t.DType, Shape: []int{L, H, len(keepProbs), T},
		Dims: t.Dims, Offset: int64(len(data)), QueryPositions: keepProbs}
	for l := 0; l < L; l++ {
		for h := 0; h < H; h++ {
			for _, p := range keepProbs {
				row := -1
				for i, qp := range t.QueryPositions {
					if qp == p {
						row = i
					}
				}
				if row < 0 {
					return fmt.Errorf("no attn_probs row for position %d", p)
				}
				off := 2 * ((l*H+h)*Q + row) * T
				data = append(data, raw[off:off+2*T]...)
			}
		}
	}
	nt.NBytes = int64(len(data)) - nt.Offset
	tensors = append(tensors, nt)
	meta := f.Meta
	meta.File = filepath.Base(dst)
	meta.FileSize = int64(len(data))
	meta.Tensors = tensors
	js, err := json.MarshalIndent(meta, "", " ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(dst, data, 0o644); err != nil {
		return err
	}
	return os.WriteFile(kvfile.SidecarPath(dst), append(js, '\n'), 0o644)
}
