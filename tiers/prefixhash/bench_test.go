package prefixhash_test

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/zeebo/xxh3"

	"github.com/kvtier/kvtier/tiers"
	"github.com/kvtier/kvtier/tiers/prefixhash"
)

// BenchmarkChain hashes a chain of 16-token blocks with each mode, with a
// reused Hasher and (fresh) with the package-level Chain. Bytes are the token
// ids as uint32 (64 B per block). References, on the same bytes: the hash
// function called once per 64-byte block (the floor under any chain: no
// encoding, no parent) and once over everything (flat).
func BenchmarkChain(b *testing.B) {
	const bt = 16
	for _, blocks := range []int{1, 8192} {
		tokens := randTokens(9, blocks*bt)
		raw := make([]byte, 0, 4*len(tokens))
		for _, t := range tokens {
			raw = binary.LittleEndian.AppendUint32(raw, t)
		}
		for _, a := range allAlgos {
			b.Run(fmt.Sprintf("algo=%s/size=%d", a, blocks), func(b *testing.B) {
				h, err := prefixhash.NewHasher(prefixhash.Params{Algo: a, Seed: prefixhash.DefaultSeed, BlockTokens: bt, LoRA: "adapter-7", CacheSalt: "tenant-a"})
				if err != nil {
					b.Fatal(err)
				}
				dst := make([]tiers.Hash, 0, blocks)
				b.SetBytes(int64(len(raw)))
				b.ReportAllocs()
				for b.Loop() {
					if dst, err = h.AppendChain(dst[:0], tokens); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run(fmt.Sprintf("algo=%s/fresh/size=%d", a, blocks), func(b *testing.B) {
				p := prefixhash.Params{Algo: a, Seed: prefixhash.DefaultSeed, BlockTokens: bt, LoRA: "adapter-7", CacheSalt: "tenant-a"}
				b.SetBytes(int64(len(raw)))
				b.ReportAllocs()
				for b.Loop() {
					if _, err := prefixhash.Chain(p, tokens); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
		b.Run(fmt.Sprintf("ref=sha256-per-block/size=%d", blocks), func(b *testing.B) {
			b.SetBytes(int64(len(raw)))
			b.ReportAllocs()
			for b.Loop() {
				for k := range blocks {
					sha256.Sum256(raw[64*k : 64*(k+1)])
				}
			}
		})
		b.Run(fmt.Sprintf("ref=xxh3-per-block/size=%d", blocks), func(b *testing.B) {
			b.SetBytes(int64(len(raw)))
			b.ReportAllocs()
			for b.Loop() {
				for k := range blocks {
					xxh3.Hash128(raw[64*k : 64*(k+1)])
				}
			}
		})
		b.Run(fmt.Sprintf("ref=sha256-flat/size=%d", blocks), func(b *testing.B) {
			b.SetBytes(int64(len(raw)))
			b.ReportAllocs()
			for b.Loop() {
				sha256.Sum256(raw)
			}
		})
		b.Run(fmt.Sprintf("ref=xxh3-flat/size=%d", blocks), func(b *testing.B) {
			b.SetBytes(int64(len(raw)))
			b.ReportAllocs()
			for b.Loop() {
				xxh3.Hash128(raw)
			}
		})
	}
}
