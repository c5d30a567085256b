package tiers

import (
	"context"
	"encoding/binary"
	"errors"
	"hash/maphash"
	"io"
	"log/slog"
	"slices"
	"testing"

	"github.com/kvtier/kvtier/codec"
)

// lookupLayout: 32-byte blocks, so a chain of a few windows is cheap to store.
var lookupLayout = Layout{DType: codec.FP8, Layers: 1, KVHeads: 1, HeadDim: 1, Tokens: 16}

// lookupHash is block i's hash of size bytes (16 or 32), distinct per size.
func lookupHash(i, size int) []byte {
	b := make([]byte, size)
	for off := 0; off < size; off += 8 {
		binary.BigEndian.PutUint64(b[off:], uint64(i)*0x9E3779B97F4A7C15+uint64(size+off))
	}
	return b
}

// packChain returns the packed form of blocks first..first+n-1.
func packChain(first, n, size int) []byte {
	var p []byte
	for i := range n {
		p = append(p, lookupHash(first+i, size)...)
	}
	return p
}

// unpack is the []Hash form of a packed chain, for Lookup.
func unpack(t testing.TB, packed []byte, size int) []Hash {
	t.Helper()
	hs := make([]Hash, 0, len(packed)/size)
	for off := 0; off < len(packed); off += size {
		h, err := HashFromBytes(packed[off : off+size])
		if err != nil {
			t.Fatal(err)
		}
		hs = append(hs, h)
	}
	return hs
}

// lookupStore holds, in namespace "m": blocks 0..cached16-1 with 16-byte
// hashes at AllLayers, blocks 0..cached32-1 with 32-byte hashes at layer 7.
// DRAM is smaller than the chains and every put is durable, so the levels
// are a mix of DRAM and NVMe.
const (
	cached16 = 2*windowLen + 100 // three windows, the last one partial
	cached32 = windowLen + 3
)

func newLookupStore(t testing.TB) *Store {
	t.Helper()
	ctx := context.Background()
	blocks := int64(cached16 + cached32)
	s, err := Open(ctx, Config{
		DRAM:   newMemTier("dram", blocks*3/4*lookupLayout.Size()),
		NVMe:   newMemTier("nvme", blocks*lookupLayout.Size()),
		Shards: 8,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	data := make([]byte, lookupLayout.Size())
	put := func(n, size int, layer int16) {
		var parent Hash
		for i, h := range unpack(t, packChain(0, n, size), size) {
			k := Key{Namespace: "m", Hash: h, Layer: layer}
			if err := s.Put(ctx, k, lookupLayout, data, PutOptions{Parent: parent, Durable: true}); err != nil {
				t.Fatalf("put %d: %v", i, err)
			}
			parent = h
		}
	}
	put(cached16, 16, AllLayers)
	put(cached32, 32, 7)
	return s
}

// TestLookupPackedMatchesLookup checks that LookupPacked gives Lookup's
// answer, prefix length and levels, for the same chains.
func TestLookupPackedMatchesLookup(t *testing.T) {
	ctx := context.Background()
	s := newLookupStore(t)
	missAt := func(p []byte, size, i int) []byte { // block i replaced by an uncached one
		p = slices.Clone(p)
		copy(p[i*size:], lookupHash(1<<30, size))
		return p
	}
	full16 := packChain(0, cached16, 16)
	full32 := packChain(0, cached32, 32)
	for _, tc := range []struct {
		name   string
		ns     string
		layer  int16
		packed []byte
		size   int
		want   int
	}{
		{"empty", "m", AllLayers, nil, 16, 0},
		{"one", "m", AllLayers, full16[:16], 16, 1},
		{"all cached", "m", AllLayers, full16, 16, cached16},
		{"one window exactly", "m", AllLayers, full16[:windowLen*16], 16, windowLen},
		{"longer than cached", "m", AllLayers, packChain(0, cached16+5, 16), 16, cached16},
		{"miss first", "m", AllLayers, missAt(full16, 16, 0), 16, 0},
		{"miss at a window's end", "m", AllLayers, missAt(full16, 16, windowLen-1), 16, windowLen - 1},
		{"miss at a window's start", "m", AllLayers, missAt(full16, 16, windowLen), 16, windowLen},
		{"miss in the last window", "m", AllLayers, missAt(full16, 16, 2*windowLen+7), 16, 2*windowLen + 7},
		{"32-byte hashes", "m", 7, full32, 32, cached32},
		{"32-byte miss", "m", 7, missAt(full32, 32, windowLen+1), 32, windowLen + 1},
		{"other layer", "m", 0, full16, 16, 0},
		{"other namespace", "n", AllLayers, full16, 16, 0},
		{"other hash size", "m", AllLayers, full32, 32, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := len(tc.packed) / tc.size
			want := make([]Level, n)
			got, err := s.Lookup(ctx, tc.ns, tc.layer, unpack(t, tc.packed, tc.size), want)
			if err != nil || got != tc.want {
				t.Fatalf("Lookup = %d, %v; want %d", got, err, tc.want)
			}
			levels := make([]Level, n)
			got, err = s.LookupPacked(ctx, tc.ns, tc.layer, tc.packed, tc.size, levels)
			if err != nil || got != tc.want {
				t.Fatalf("LookupPacked = %d, %v; want %d", got, err, tc.want)
			}
			if !slices.Equal(levels, want) {
				t.Fatalf("LookupPacked levels differ from Lookup's")
			}
			for i, l := range levels[:got] {
				if l != LevelDRAM && l != LevelNVMe {
					t.Fatalf("levels[%d] = %v", i, l)
				}
			}
			if got, err := s.LookupPacked(ctx, tc.ns, tc.layer, tc.packed, tc.size, nil); err != nil || got != tc.want {
				t.Fatalf("LookupPacked without levels = %d, %v; want %d", got, err, tc.want)
			}
		})
	}
}

// TestLookupLevelsMixed makes sure the chains above really exercise more
// than one level, so the comparison of levels means something.
func TestLookupLevelsMixed(t *testing.T) {
	s := newLookupStore(t)
	levels := make([]Level, cached16)
	if n, err := s.LookupPacked(context.Background(), "m", AllLayers, packChain(0, cached16, 16), 16, levels); n != cached16 || err != nil {
		t.Fatalf("LookupPacked = %d, %v", n, err)
	}
	if !slices.Contains(levels, LevelDRAM) || !slices.Contains(levels, LevelNVMe) {
		t.Fatalf("levels are all one kind: %v ... %v", levels[0], levels[len(levels)-1])
	}
}

func TestLookupPackedErrors(t *testing.T) {
	s := newLookupStore(t)
	full := packChain(0, cached16, 16)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name    string
		ctx     context.Context
		ns      string
		layer   int16
		packed  []byte
		size    int
		levels  []Level
		want    error
		wantN   int
		viaHash bool // Lookup must answer the same (the chain is valid for HashFromBytes)
	}{
		{"hash size 0", context.Background(), "m", AllLayers, full, 0, nil, ErrInvalid, 0, false},
		{"hash size 8", context.Background(), "m", AllLayers, full, 8, nil, ErrInvalid, 0, false},
		{"hash size 64", context.Background(), "m", AllLayers, full, 64, nil, ErrInvalid, 0, false},
		{"ragged", context.Background(), "m", AllLayers, full[:40], 16, nil, ErrInvalid, 0, false},
		{"empty namespace", context.Background(), "", AllLayers, full, 16, nil, ErrInvalid, 0, true},
		{"bad namespace", context.Background(), "m m", AllLayers, full, 16, nil, ErrInvalid, 0, true},
		{"layer too low", context.Background(), "m", -2, full, 16, nil, ErrInvalid, 0, true},
		{"layer too high", context.Background(), "m", MaxLayer + 1, full, 16, nil, ErrInvalid, 0, true},
		{"short levels", context.Background(), "m", AllLayers, full, 16, make([]Level, 3), ErrInvalid, 0, true},
		{"cancelled", cancelled, "m", AllLayers, full, 16, nil, context.Canceled, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := s.LookupPacked(tc.ctx, tc.ns, tc.layer, tc.packed, tc.size, tc.levels)
			if !errors.Is(err, tc.want) || n != tc.wantN {
				t.Fatalf("LookupPacked = %d, %v; want %d, %v", n, err, tc.wantN, tc.want)
			}
			if tc.viaHash {
				n, err := s.Lookup(tc.ctx, tc.ns, tc.layer, unpack(t, tc.packed, tc.size), tc.levels)
				if !errors.Is(err, tc.want) || n != tc.wantN {
					t.Fatalf("Lookup = %d, %v; want %d, %v", n, err, tc.wantN, tc.want)
				}
			}
		})
	}
	t.Run("closed", func(t *testing.T) {
		s := newLookupStore(t)
		s.Close()
		if _, err := s.LookupPacked(context.Background(), "m", AllLayers, full, 16, nil); !errors.Is(err, ErrClosed) {
			t.Fatalf("LookupPacked after Close = %v, want ErrClosed", err)
		}
	})
}

// FuzzLookupPacked: any packed input gives Lookup's answer for the hashes
// HashFromBytes makes of it, or an ErrInvalid when it is not a chain.
func FuzzLookupPacked(f *testing.F) {
	f.Add(packChain(0, 3, 16), uint8(16), int16(AllLayers))
	f.Add(packChain(0, 2, 32), uint8(32), int16(7))
	f.Add(append(packChain(0, 2, 16), lookupHash(1<<30, 16)...), uint8(16), int16(AllLayers))
	f.Add([]byte{1, 2, 3}, uint8(16), int16(0))
	ctx := context.Background()
	s := newFuzzLookupStore(f)
	f.Fuzz(func(t *testing.T, packed []byte, size uint8, layer int16) {
		n, err := s.LookupPacked(ctx, "m", layer, packed, int(size), nil)
		if (size != 16 && size != 32) || len(packed)%int(size) != 0 {
			if !errors.Is(err, ErrInvalid) || n != 0 {
				t.Fatalf("LookupPacked = %d, %v; want ErrInvalid", n, err)
			}
			return
		}
		want, werr := s.Lookup(ctx, "m", layer, unpack(t, packed, int(size)), nil)
		if n != want || !sameErr(err, werr) {
			t.Fatalf("LookupPacked = %d, %v; Lookup = %d, %v", n, err, want, werr)
		}
	})
}

// newFuzzLookupStore is a small store for the fuzz target: a few blocks of
// each hash size.
func newFuzzLookupStore(f *testing.F) *Store {
	ctx := context.Background()
	s, err := Open(ctx, Config{DRAM: newMemTier("dram", 64*lookupLayout.Size()), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })
	data := make([]byte, lookupLayout.Size())
	for _, c := range []struct {
		size  int
		layer int16
	}{{16, AllLayers}, {32, 7}} {
		for i := range 3 {
			h, _ := HashFromBytes(lookupHash(i, c.size))
			if err := s.Put(ctx, Key{Namespace: "m", Hash: h, Layer: c.layer}, lookupLayout, data, PutOptions{}); err != nil {
				f.Fatal(err)
			}
		}
	}
	return s
}

// sameErr reports whether a and b are both nil, or both errors of the same kind.
func sameErr(a, b error) bool {
	return (a == nil) == (b == nil) && errors.Is(a, ErrInvalid) == errors.Is(b, ErrInvalid)
}

// TestFingerprintMix checks the identity Lookup relies on to fingerprint
// digests in place: a key's fingerprint is the hash of its digest xor a
// part that depends on the namespace and layer alone.
func TestFingerprintMix(t *testing.T) {
	seed := maphash.MakeSeed()
	for _, ns := range []string{"m", "model/a@lora:1"} {
		for _, layer := range []int16{AllLayers, 0, 7, MaxLayer} {
			for _, size := range []int{16, 32} {
				nh := nsHash(seed, ns)
				mix := fingerprintMix(nh, layer)
				for i := range 4 {
					h, _ := HashFromBytes(lookupHash(i, size))
					k := Key{Namespace: ns, Hash: h, Layer: layer}
					if got, want := maphash.Bytes(seed, h.b[:h.n])^mix, fingerprint(seed, nh, k); got != want {
						t.Fatalf("%v: digest hash ^ mix = %#x, fingerprint = %#x: fingerprint no longer splits into digest hash and fingerprintMix", k, got, want)
					}
				}
			}
		}
	}
}
