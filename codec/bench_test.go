package codec_test

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/kvtier/kvtier/codec"
	"github.com/kvtier/kvtier/internal/kvfile"
)

// fixtureBlock returns the KVSeparate fp16 block (k_post_rope then v) of a
// fixture dump in testdata/kv.
func fixtureBlock(tb testing.TB, name string) (codec.Layout, []byte, *kvfile.File) {
	tb.Helper()
	f, err := kvfile.Open("testdata/kv/" + name + ".bin")
	if err != nil {
		tb.Fatal(err)
	}
	k, kt, err := f.Raw(kvfile.KPostRoPE)
	if err != nil {
		tb.Fatal(err)
	}
	v, _, err := f.Raw(kvfile.V)
	if err != nil {
		tb.Fatal(err)
	}
	l := codec.Layout{DType: codec.FP16, Order: codec.KVSeparate, Layers: uint16(kt.Shape[0]),
		KVHeads: uint16(kt.Shape[1]), Tokens: uint32(kt.Shape[2]), HeadDim: uint16(kt.Shape[3])}
	raw := append(append([]byte{}, k...), v...)
	return l, raw, f
}

// cpuMeter reports, next to the wall-clock MB/s, MB/s per CPU-second of the
// benchmark's thread ("cpu-MB/s"): on a loaded machine the wall clock counts
// time spent waiting for a core, the thread's CPU time does not.
type cpuMeter struct {
	start time.Duration
	ok    bool
}

func startCPU() cpuMeter {
	runtime.LockOSThread()
	t, ok := threadCPU()
	return cpuMeter{t, ok}
}

func (m cpuMeter) report(b *testing.B, bytesPerOp int) {
	defer runtime.UnlockOSThread()
	t, ok := threadCPU()
	if !m.ok || !ok || t <= m.start {
		return
	}
	b.ReportMetric(float64(bytesPerOp)*float64(b.N)/(t-m.start).Seconds()/1e6, "cpu-MB/s")
}

// BenchmarkCodec measures single-goroutine encode and decode of the fixture
// block (6 layers × 2 heads × 480 tokens × 32 channels, fp16, 720 KiB) and of
// per-layer blocks, with memcpy of the same bytes as the reference.
func BenchmarkCodec(b *testing.B) {
	l, raw, _ := fixtureBlock(b, "kv-p00")
	per := len(raw) / 2 / int(l.Layers)
	layer := make([]byte, 0, 2*per)
	layer = append(append(layer, raw[:per]...), raw[len(raw)/2:len(raw)/2+per]...)
	ll := l
	ll.Layers = 1
	blocks := []struct {
		l   codec.Layout
		raw []byte
	}{{l, raw}, {ll, layer}}
	for _, blk := range blocks {
		n := len(blk.raw)
		b.Run(fmt.Sprintf("memcpy/size=%d", n), func(b *testing.B) {
			dst := make([]byte, n)
			b.SetBytes(int64(n))
			b.ReportAllocs()
			m := startCPU()
			for b.Loop() {
				copy(dst, blk.raw)
			}
			m.report(b, n)
		})
		for _, spec := range []string{"lossless", "int8", "int4", "int3", "int2", "int3+out", "int2+out", "int3+clip", "int3+ec"} {
			opts, err := codec.ParseSpec(spec)
			if err != nil {
				b.Fatal(err)
			}
			frame, err := codec.Encode(nil, blk.l, blk.raw, opts)
			if err != nil {
				b.Fatal(err)
			}
			b.Run(fmt.Sprintf("encode/%s/size=%d", spec, n), func(b *testing.B) {
				dst := make([]byte, 0, codec.MaxFrameLen(blk.l, opts.Mode))
				b.SetBytes(int64(n))
				b.ReportAllocs()
				m := startCPU()
				for b.Loop() {
					if _, err := codec.Encode(dst, blk.l, blk.raw, opts); err != nil {
						b.Fatal(err)
					}
				}
				m.report(b, n)
			})
			b.Run(fmt.Sprintf("decode/%s/size=%d", spec, n), func(b *testing.B) {
				dst := make([]byte, 0, n)
				b.SetBytes(int64(n))
				b.ReportAllocs()
				m := startCPU()
				for b.Loop() {
					if _, _, err := codec.Decode(dst, frame); err != nil {
						b.Fatal(err)
					}
				}
				m.report(b, n)
			})
		}
	}
}
