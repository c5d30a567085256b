package prefixhash_test

import (
	"encoding/binary"
	"errors"
	"slices"
	"testing"

	"github.com/kvtier/kvtier/tiers/prefixhash"
)

// FuzzChain hashes arbitrary tokens under arbitrary (often invalid) params:
// it must never panic, must reject bad params with ErrInvalid, and a valid
// chain must have one digest per full block, be prefix-closed, and be
// continued exactly by Extend.
func FuzzChain(f *testing.F) {
	f.Add(uint8(0), uint16(16), "seed", "", "", []byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef!"))
	f.Add(uint8(1), uint16(2), "vllm-none-hash", "adapter-7", "tenant-a", []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17})
	f.Add(uint8(2), uint16(1), "", "x", "\xff", []byte{0xff, 0xff, 0xff, 0xff})
	f.Add(uint8(3), uint16(0), "", "", "", []byte{})
	f.Fuzz(func(t *testing.T, algo uint8, bt uint16, seed, lora, salt string, data []byte) {
		p := prefixhash.Params{Algo: prefixhash.Algo(algo % 4), Seed: seed, BlockTokens: int(bt % 70), LoRA: lora, CacheSalt: salt}
		tokens := make([]uint32, len(data)/4)
		for i := range tokens {
			tokens[i] = binary.LittleEndian.Uint32(data[4*i:])
		}
		chain, err := prefixhash.Chain(p, tokens)
		if verr := p.Validate(); verr != nil {
			if err == nil || !errors.Is(err, prefixhash.ErrInvalid) {
				t.Fatalf("Validate: %v, but Chain: %v", verr, err)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(chain) != len(tokens)/p.BlockTokens {
			t.Fatalf("%d digests for %d tokens of %d per block", len(chain), len(tokens), p.BlockTokens)
		}
		for _, d := range chain {
			if d.Len() != p.Algo.Size() {
				t.Fatalf("digest of %d bytes, want %d", d.Len(), p.Algo.Size())
			}
		}
		if len(chain) == 0 {
			return
		}
		k := len(chain) / 2
		pre, err := prefixhash.Chain(p, tokens[:k*p.BlockTokens+p.BlockTokens/2])
		if err != nil || !slices.Equal(pre, chain[:k]) {
			t.Fatalf("chain of the first %d blocks is not a prefix of the whole chain (%v)", k, err)
		}
		h, err := prefixhash.NewHasher(p)
		if err != nil {
			t.Fatal(err)
		}
		parent := h.Root()
		if k > 0 {
			parent = chain[k-1]
		}
		all, err := h.Extend(pre, parent, k, tokens[k*p.BlockTokens:])
		if err != nil || !slices.Equal(all, chain) {
			t.Fatalf("Extend from block %d does not continue the chain (%v)", k, err)
		}
	})
}
