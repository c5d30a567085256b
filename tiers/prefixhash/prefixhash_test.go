package prefixhash_test

import (
	"errors"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/kvtier/kvtier/tiers"
	"github.com/kvtier/kvtier/tiers/prefixhash"
)

var allAlgos = []prefixhash.Algo{prefixhash.XXH3, prefixhash.SHA256CBOR, prefixhash.XXHashCBOR}

// randTokens returns n token ids below a 128k vocabulary, fixed by seed.
func randTokens(seed uint64, n int) []uint32 {
	r := rand.New(rand.NewPCG(seed, 0x6b76))
	t := make([]uint32, n)
	for i := range t {
		t[i] = r.Uint32N(1 << 17)
	}
	return t
}

func mustChain(t testing.TB, p prefixhash.Params, tokens []uint32) []tiers.Hash {
	t.Helper()
	c, err := prefixhash.Chain(p, tokens)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestParamsValidate(t *testing.T) {
	ok := prefixhash.Params{Algo: prefixhash.SHA256CBOR, Seed: "s", BlockTokens: 16, LoRA: "l", CacheSalt: "c"}
	long := strings.Repeat("x", prefixhash.MaxStringLen+1)
	tests := []struct {
		name    string
		mod     func(*prefixhash.Params)
		wantErr string // substring of the error; "" means valid
	}{
		{"ok", func(*prefixhash.Params) {}, ""},
		{"xxh3", func(p *prefixhash.Params) { p.Algo = prefixhash.XXH3 }, ""},
		{"xxhash_cbor", func(p *prefixhash.Params) { p.Algo = prefixhash.XXHashCBOR }, ""},
		{"empty strings", func(p *prefixhash.Params) { p.Seed, p.LoRA, p.CacheSalt = "", "", "" }, ""},
		{"one token per block", func(p *prefixhash.Params) { p.BlockTokens = 1 }, ""},
		{"max block tokens", func(p *prefixhash.Params) { p.BlockTokens = prefixhash.MaxBlockTokens }, ""},
		{"max string", func(p *prefixhash.Params) { p.LoRA = long[1:] }, ""},
		{"unicode", func(p *prefixhash.Params) { p.Seed, p.LoRA = "π-seed", "adaptér" }, ""},
		{"unknown algo", func(p *prefixhash.Params) { p.Algo = prefixhash.Algo(3) }, "algo"},
		{"zero block tokens", func(p *prefixhash.Params) { p.BlockTokens = 0 }, "block tokens"},
		{"negative block tokens", func(p *prefixhash.Params) { p.BlockTokens = -16 }, "block tokens"},
		{"too many block tokens", func(p *prefixhash.Params) { p.BlockTokens = prefixhash.MaxBlockTokens + 1 }, "block tokens"},
		{"seed not utf-8", func(p *prefixhash.Params) { p.Seed = "\xff" }, "seed"},
		{"lora not utf-8", func(p *prefixhash.Params) { p.LoRA = "a\xc3" }, "lora"},
		{"salt not utf-8", func(p *prefixhash.Params) { p.CacheSalt = "\xed\xa0\x80" }, "cache salt"},
		{"seed too long", func(p *prefixhash.Params) { p.Seed = long }, "seed"},
		{"salt too long", func(p *prefixhash.Params) { p.CacheSalt = long }, "cache salt"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := ok
			tc.mod(&p)
			err := p.Validate()
			_, herr := prefixhash.NewHasher(p)
			_, cerr := prefixhash.Chain(p, make([]uint32, 64))
			for _, e := range []error{err, herr, cerr} {
				if tc.wantErr == "" {
					if e != nil {
						t.Fatalf("unexpected error: %v", e)
					}
					continue
				}
				if e == nil {
					t.Fatalf("no error, want one naming %q", tc.wantErr)
				}
				if !errors.Is(e, tiers.ErrInvalid) || !errors.Is(e, prefixhash.ErrInvalid) {
					t.Errorf("%v does not wrap ErrInvalid", e)
				}
				if !strings.Contains(e.Error(), tc.wantErr) || !strings.Contains(e.Error(), "prefixhash") {
					t.Errorf("error %q does not name prefixhash and %q", e, tc.wantErr)
				}
			}
		})
	}
}

func TestAlgoNames(t *testing.T) {
	tests := []struct {
		in   string
		want prefixhash.Algo
		size int
		ok   bool
	}{
		{"xxh3", prefixhash.XXH3, 16, true},
		{"sha256_cbor", prefixhash.SHA256CBOR, 32, true},
		{"xxhash_cbor", prefixhash.XXHashCBOR, 16, true},
		{"", 0, 0, false},
		{"sha256", 0, 0, false},
		{"SHA256_CBOR", 0, 0, false},
		{"xxh3 ", 0, 0, false},
	}
	for _, tc := range tests {
		t.Run("in="+tc.in, func(t *testing.T) {
			a, err := prefixhash.ParseAlgo(tc.in)
			if !tc.ok {
				if err == nil || !errors.Is(err, prefixhash.ErrInvalid) {
					t.Fatalf("ParseAlgo(%q) = %v, %v; want an ErrInvalid error", tc.in, a, err)
				}
				var u prefixhash.Algo
				if u.UnmarshalText([]byte(tc.in)) == nil {
					t.Fatalf("UnmarshalText(%q) accepted it", tc.in)
				}
				return
			}
			if err != nil || a != tc.want {
				t.Fatalf("ParseAlgo(%q) = %v, %v; want %v", tc.in, a, err, tc.want)
			}
			if a.String() != tc.in || a.Size() != tc.size {
				t.Errorf("String() = %q, Size() = %d; want %q, %d", a, a.Size(), tc.in, tc.size)
			}
			txt, err := a.MarshalText()
			if err != nil || string(txt) != tc.in {
				t.Errorf("MarshalText() = %q, %v", txt, err)
			}
			var u prefixhash.Algo
			if err := u.UnmarshalText(txt); err != nil || u != a {
				t.Errorf("UnmarshalText(%q) = %v, %v", txt, u, err)
			}
		})
	}
	bad := prefixhash.Algo(200)
	if bad.String() != "Algo(200)" || bad.Size() != 0 {
		t.Errorf("Algo(200): String() = %q, Size() = %d", bad, bad.Size())
	}
	if _, err := bad.MarshalText(); !errors.Is(err, prefixhash.ErrInvalid) {
		t.Errorf("MarshalText of an unknown Algo: %v", err)
	}
	if got := prefixhash.AlgoNames(); !slices.Equal(got, []string{"xxh3", "sha256_cbor", "xxhash_cbor"}) {
		t.Errorf("AlgoNames() = %q", got)
	}
}

// TestChainShape checks, for every mode, the digest count and size, the
// prefix property, that a trailing partial block changes nothing, and that
// Extend from any block continues the chain.
func TestChainShape(t *testing.T) {
	for _, a := range allAlgos {
		for _, bt := range []int{1, 16, 33} {
			p := prefixhash.Params{Algo: a, Seed: "seed", BlockTokens: bt, LoRA: "lora", CacheSalt: "salt"}
			t.Run(p.Algo.String()+"/bt="+strconv.Itoa(bt), func(t *testing.T) {
				tokens := randTokens(uint64(bt), 9*bt+bt/2)
				full := mustChain(t, p, tokens)
				if len(full) != 9 {
					t.Fatalf("%d digests for %d tokens of %d per block, want 9", len(full), len(tokens), bt)
				}
				seen := map[tiers.Hash]bool{}
				for i, d := range full {
					if d.Len() != a.Size() {
						t.Errorf("digest %d is %d bytes, want %d", i, d.Len(), a.Size())
					}
					seen[d] = true
				}
				if len(seen) != len(full) {
					t.Errorf("repeated digests in a chain of random blocks")
				}
				if got := mustChain(t, p, tokens[:9*bt]); !slices.Equal(got, full) {
					t.Errorf("a trailing partial block changed the chain")
				}
				if got := mustChain(t, p, tokens[:bt-1]); len(got) != 0 {
					t.Errorf("%d digests for less than one block", len(got))
				}
				h, err := prefixhash.NewHasher(p)
				if err != nil {
					t.Fatal(err)
				}
				for k := 0; k <= len(full); k++ {
					pre := mustChain(t, p, tokens[:k*bt])
					if !slices.Equal(pre, full[:k]) {
						t.Errorf("chain of the first %d blocks is not a prefix of the whole chain", k)
					}
					parent := h.Root()
					if k > 0 {
						parent = full[k-1]
					}
					rest, err := h.Extend(pre, parent, k, tokens[k*bt:])
					if err != nil {
						t.Fatal(err)
					}
					if !slices.Equal(rest, full) {
						t.Errorf("Extend from block %d does not continue the chain", k)
					}
				}
			})
		}
	}
}

func TestHasherErrors(t *testing.T) {
	for _, a := range allAlgos {
		t.Run(a.String(), func(t *testing.T) {
			h, err := prefixhash.NewHasher(prefixhash.Params{Algo: a, BlockTokens: 4})
			if err != nil {
				t.Fatal(err)
			}
			other := prefixhash.SHA256CBOR
			if a == other {
				other = prefixhash.XXH3
			}
			ho, err := prefixhash.NewHasher(prefixhash.Params{Algo: other, BlockTokens: 4})
			if err != nil {
				t.Fatal(err)
			}
			toks := []uint32{1, 2, 3, 4, 5, 6, 7, 8}
			tests := []struct {
				name   string
				parent tiers.Hash
				index  int
				block  []uint32
			}{
				{"zero parent", tiers.Hash{}, 0, toks[:4]},
				{"parent of another size", ho.Root(), 0, toks[:4]},
				{"negative index", h.Root(), -1, toks[:4]},
				{"short block", h.Root(), 0, toks[:3]},
				{"long block", h.Root(), 0, toks[:5]},
			}
			dst := []tiers.Hash{h.Root()}
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					if _, err := h.Block(tc.parent, tc.index, tc.block); !errors.Is(err, prefixhash.ErrInvalid) {
						t.Errorf("Block: %v, want ErrInvalid", err)
					}
					if len(tc.block) != 4 {
						return // a length Extend accepts
					}
					got, err := h.Extend(dst, tc.parent, tc.index, toks)
					if !errors.Is(err, prefixhash.ErrInvalid) {
						t.Errorf("Extend: %v, want ErrInvalid", err)
					}
					if len(got) != 1 || got[0] != h.Root() {
						t.Errorf("Extend changed dst on error: %v", got)
					}
				})
			}
		})
	}
}

// TestDistinct checks that each input to the xxh3 mode, and the inputs the
// vLLM modes hash, change the digests.
func TestDistinct(t *testing.T) {
	base := prefixhash.Params{Seed: "seed", BlockTokens: 16, LoRA: "lora", CacheSalt: "salt"}
	tokens := randTokens(7, 3*16)
	tests := []struct {
		name string
		p    func(prefixhash.Params) prefixhash.Params
		tok  func([]uint32) []uint32
		// from is the first block whose digest must differ from base's
		// (every block after it differs too, through the chain).
		from int
	}{
		{"seed", func(p prefixhash.Params) prefixhash.Params { p.Seed = "seed2"; return p }, nil, 0},
		{"empty seed", func(p prefixhash.Params) prefixhash.Params { p.Seed = ""; return p }, nil, 0},
		{"lora", func(p prefixhash.Params) prefixhash.Params { p.LoRA = "lora2"; return p }, nil, 0},
		{"no lora", func(p prefixhash.Params) prefixhash.Params { p.LoRA = ""; return p }, nil, 0},
		{"salt", func(p prefixhash.Params) prefixhash.Params { p.CacheSalt = "salt2"; return p }, nil, 0},
		{"no salt", func(p prefixhash.Params) prefixhash.Params { p.CacheSalt = ""; return p }, nil, 0},
		{"no extras", func(p prefixhash.Params) prefixhash.Params { p.LoRA, p.CacheSalt = "", ""; return p }, nil, 0},
		{"lora and salt swapped", func(p prefixhash.Params) prefixhash.Params { p.LoRA, p.CacheSalt = p.CacheSalt, p.LoRA; return p }, nil, 0},
		{"block size", func(p prefixhash.Params) prefixhash.Params { p.BlockTokens = 8; return p }, nil, 0},
		{"first token", nil, func(t []uint32) []uint32 { t[0]++; return t }, 0},
		{"last token of block 1", nil, func(t []uint32) []uint32 { t[31] ^= 1 << 31; return t }, 1},
		{"tokens swapped in block 2", nil, func(t []uint32) []uint32 { t[32], t[33] = t[33], t[32]; return t }, 2},
	}
	for _, a := range allAlgos {
		base.Algo = a
		want := mustChain(t, base, tokens)
		for _, tc := range tests {
			t.Run(a.String()+"/"+tc.name, func(t *testing.T) {
				p, tok := base, slices.Clone(tokens)
				if tc.p != nil {
					p = tc.p(p)
				}
				if tc.tok != nil {
					tok = tc.tok(tok)
				}
				got := mustChain(t, p, tok)
				for i := range min(len(got), len(want)) {
					if same := got[i] == want[i]; same != (i < tc.from) {
						t.Errorf("block %d: equal to base = %t, want %t", i, same, i < tc.from)
					}
				}
			})
		}
	}
}

// TestVLLMExtrasAmbiguity pins a vLLM property the xxh3 mode avoids: a LoRA
// name and a cache salt with the same text give the same block 0 input.
func TestVLLMExtrasAmbiguity(t *testing.T) {
	tokens := randTokens(3, 32)
	for _, a := range allAlgos {
		t.Run(a.String(), func(t *testing.T) {
			l := mustChain(t, prefixhash.Params{Algo: a, BlockTokens: 16, LoRA: "x"}, tokens)
			s := mustChain(t, prefixhash.Params{Algo: a, BlockTokens: 16, CacheSalt: "x"}, tokens)
			if same, want := l[0] == s[0], a != prefixhash.XXH3; same != want {
				t.Errorf("lora=x and salt=x give equal block 0: %t, want %t", same, want)
			}
			if l[1] == s[1] {
				t.Errorf("lora=x and salt=x give equal block 1")
			}
		})
	}
}

func TestHasherReuse(t *testing.T) {
	for _, a := range allAlgos {
		t.Run(a.String(), func(t *testing.T) {
			p := prefixhash.Params{Algo: a, BlockTokens: 16, LoRA: "l", CacheSalt: "s"}
			h, err := prefixhash.NewHasher(p)
			if err != nil {
				t.Fatal(err)
			}
			if h.Params() != p {
				t.Errorf("Params() = %+v, want %+v", h.Params(), p)
			}
			for i := range 4 {
				tokens := randTokens(uint64(i), 16*(i+1))
				got, err := h.AppendChain(nil, tokens)
				if err != nil {
					t.Fatal(err)
				}
				if want := mustChain(t, p, tokens); !slices.Equal(got, want) {
					t.Errorf("round %d: a reused Hasher differs from a fresh one", i)
				}
			}
		})
	}
}

// TestHasherAllocs checks that a Hasher allocates nothing per block when dst
// has room: the arenas' "no per-block allocation on the hot path" rule.
func TestHasherAllocs(t *testing.T) {
	tokens := randTokens(1, 64*16)
	for _, a := range allAlgos {
		t.Run(a.String(), func(t *testing.T) {
			h, err := prefixhash.NewHasher(prefixhash.Params{Algo: a, BlockTokens: 16, LoRA: "l", CacheSalt: "s"})
			if err != nil {
				t.Fatal(err)
			}
			dst := make([]tiers.Hash, 0, 64)
			allocs := testing.AllocsPerRun(20, func() {
				if dst, err = h.AppendChain(dst[:0], tokens); err != nil {
					t.Fatal(err)
				}
			})
			if allocs != 0 {
				t.Errorf("%v allocations per 64-block chain, want 0", allocs)
			}
		})
	}
}

func TestChainConcurrent(t *testing.T) {
	p := prefixhash.Params{Algo: prefixhash.SHA256CBOR, BlockTokens: 16, LoRA: "l"}
	tokens := randTokens(5, 32*16)
	want := mustChain(t, p, tokens)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			got, err := prefixhash.Chain(p, tokens)
			if err == nil && !slices.Equal(got, want) {
				err = errors.New("concurrent Chain differs")
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}
