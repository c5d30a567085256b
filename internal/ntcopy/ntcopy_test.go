package ntcopy

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"
	"unsafe"
)

// alignedBuf returns n bytes starting at a 32-byte boundary plus off.
func alignedBuf(n, off int) []byte {
	b := make([]byte, n+64)
	a := int(-uintptr(unsafe.Pointer(&b[0])) & 31)
	return b[a+off : a+off+n]
}

// TestCopy checks Copy against the built-in copy across lengths,
// alignments and short sides, with the non-temporal path on (where the CPU
// has it) and forced off.
func TestCopy(t *testing.T) {
	for _, nt := range []bool{true, false} {
		t.Run(fmt.Sprintf("nt=%v", nt), func(t *testing.T) {
			defer setNT(setNT(nt))
			testCopy(t)
		})
	}
}

func testCopy(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, c := range []struct {
		name           string
		dstN, srcN     int
		dstOff, srcOff int
	}{
		{"empty", 0, 0, 0, 0},
		{"short", 100, 100, 0, 0},
		{"threshold", Threshold, Threshold, 0, 0},
		{"threshold+tail", Threshold + 77, Threshold + 77, 0, 3},
		{"64KiB", 64 << 10, 64 << 10, 0, 0},
		{"unaligned dst", 64 << 10, 64 << 10, 8, 0},
		{"unaligned src", 64<<10 + 5, 64<<10 + 5, 0, 1},
		{"dst shorter", 40 << 10, 64 << 10, 0, 0},
		{"src shorter", 64 << 10, 40<<10 + 9, 0, 0},
		{"1MiB", 1 << 20, 1 << 20, 0, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			dst, src := alignedBuf(c.dstN, c.dstOff), alignedBuf(c.srcN, c.srcOff)
			for i := range src {
				src[i] = byte(r.Uint32())
			}
			for i := range dst {
				dst[i] = 0xEE
			}
			want := min(c.dstN, c.srcN)
			if n := Copy(dst, src); n != want {
				t.Fatalf("Copy = %d, want %d", n, want)
			}
			if !bytes.Equal(dst[:want], src[:want]) {
				t.Fatal("copied bytes differ")
			}
			for i := want; i < len(dst); i++ {
				if dst[i] != 0xEE {
					t.Fatalf("byte %d past the copy was written", i)
				}
			}
		})
	}
}

// BenchmarkCopy compares Copy with the built-in copy into a rotating set of
// destinations as large as a small DRAM arena (64 MiB, beyond the caches),
// visited in random order (slots freed out of address order) and in
// address order (a full arena evicting least recently used first reuses
// the slots of blocks put one after another in turn).
func BenchmarkCopy(b *testing.B) {
	for _, n := range []int{64 << 10, 256 << 10, 1 << 20} {
		window := (64 << 20) / n
		pool := alignedBuf(window*n, 0)
		for i := range pool {
			pool[i] = byte(i)
		}
		src := make([]byte, n)
		perm := rand.New(rand.NewPCG(3, 4)).Perm(window)
		for _, order := range []string{"random", "seq"} {
			for _, f := range []struct {
				name string
				fn   func(dst, src []byte) int
			}{{"builtin", func(d, s []byte) int { return copy(d, s) }}, {"ntcopy", Copy}} {
				b.Run(fmt.Sprintf("size=%d/order=%s/%s", n, order, f.name), func(b *testing.B) {
					b.SetBytes(int64(n))
					i := 0
					for b.Loop() {
						o := (i % window) * n
						if order == "random" {
							o = perm[i%window] * n
						}
						f.fn(pool[o:o+n], src)
						i++
					}
				})
			}
		}
	}
}
