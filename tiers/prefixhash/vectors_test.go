package prefixhash

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"testing"

	"github.com/kvtier/kvtier/tiers"
)

// vector is one line of testdata/vllm-block-hashes.jsonl (see testdata/README.md).
type vector struct {
	Algo        string     `json:"algo"`
	Seed        string     `json:"seed"`
	BlockTokens int        `json:"block_tokens"`
	LoRA        *string    `json:"lora"`
	CacheSalt   *string    `json:"cache_salt"`
	Tokens      []uint32   `json:"tokens"`
	Extras      [][]string `json:"extras"`
	Hashes      []string   `json:"hashes"`
	SeedHash    string     `json:"seed_hash"`
	EventIDs    []uint64   `json:"event_ids"`
}

func (v vector) params(t testing.TB) Params {
	t.Helper()
	a, err := ParseAlgo(v.Algo)
	if err != nil {
		t.Fatal(err)
	}
	p := Params{Algo: a, Seed: v.Seed, BlockTokens: v.BlockTokens}
	if v.LoRA != nil {
		p.LoRA = *v.LoRA
	}
	if v.CacheSalt != nil {
		p.CacheSalt = *v.CacheSalt
	}
	return p
}

func loadVectors(t testing.TB, path string) []vector {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var vs []vector
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for line := 1; sc.Scan(); line++ {
		var v vector
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			t.Fatalf("line %d: %v", line, err)
		}
		vs = append(vs, v)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return vs
}

func TestVLLMVectors(t *testing.T) {
	vs := loadVectors(t, "testdata/vllm-block-hashes.jsonl")
	if len(vs) != 64 {
		t.Fatalf("loaded %d vectors, want 64", len(vs))
	}
	algos := map[string]int{}
	for i, v := range vs {
		algos[v.Algo]++
		name := fmt.Sprintf("%02d/%s/seed=%s/bt=%d/lora=%t/salt=%t/tokens=%d",
			i+1, v.Algo, v.Seed, v.BlockTokens, v.LoRA != nil, v.CacheSalt != nil, len(v.Tokens))
		t.Run(name, func(t *testing.T) {
			p := v.params(t)
			if len(v.Hashes) != len(v.Tokens)/v.BlockTokens || len(v.EventIDs) != len(v.Hashes) || len(v.Extras) != len(v.Hashes) {
				t.Fatalf("malformed vector: %d hashes, %d event ids, %d extras for %d tokens / %d",
					len(v.Hashes), len(v.EventIDs), len(v.Extras), len(v.Tokens), v.BlockTokens)
			}
			h, err := NewHasher(p)
			if err != nil {
				t.Fatal(err)
			}
			if got := h.Root().String(); got != v.SeedHash {
				t.Errorf("seed hash = %s, want %s", got, v.SeedHash)
			}
			for i, want := range v.Extras {
				if got := p.extras(i); !slices.Equal(got, want) || (got == nil) != (want == nil) {
					t.Errorf("extras[%d] = %q, want %q", i, got, want)
				}
			}

			chain, err := Chain(p, v.Tokens)
			if err != nil {
				t.Fatal(err)
			}
			if len(chain) != len(v.Hashes) {
				t.Fatalf("%d digests, want %d", len(chain), len(v.Hashes))
			}
			for i, d := range chain {
				if d.Len() != p.Algo.Size() {
					t.Errorf("hash[%d] is %d bytes, want %d", i, d.Len(), p.Algo.Size())
				}
				if got := d.String(); got != v.Hashes[i] {
					t.Errorf("hash[%d] = %s, want %s", i, got, v.Hashes[i])
				}
				if got := d.EventID(); got != v.EventIDs[i] {
					t.Errorf("event id[%d] = %d, want %d", i, got, v.EventIDs[i])
				}
				want, err := tiers.ParseHash(v.Hashes[i])
				if err != nil {
					t.Fatal(err)
				}
				if d != want {
					t.Errorf("hash[%d] != tiers.ParseHash of the reference", i)
				}
			}

			// Block by block from the root, as an engine hashing incrementally would.
			parent := h.Root()
			bt := v.BlockTokens
			for i := range chain {
				d, err := h.Block(parent, i, v.Tokens[i*bt:(i+1)*bt])
				if err != nil {
					t.Fatal(err)
				}
				if d != chain[i] {
					t.Errorf("Block(%d) = %s, want %s", i, d, chain[i])
				}
				parent = d
			}
		})
	}
	if algos["sha256_cbor"] == 0 || algos["xxhash_cbor"] == 0 {
		t.Errorf("vectors cover %v; want both CBOR modes", algos)
	}
}
