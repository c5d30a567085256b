package tiers_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"testing"

	"github.com/kvtier/kvtier/codec"
	"github.com/kvtier/kvtier/internal/kveval"
	"github.com/kvtier/kvtier/internal/kvfile"
	"github.com/kvtier/kvtier/tiers"
	"github.com/kvtier/kvtier/tiers/dram"
	"github.com/kvtier/kvtier/tiers/nvme"
)

// fixtureChunks cuts the real K (post-RoPE) and V of the fixture dumps into
// all-layer blocks of 16 tokens, as an engine with 16-token blocks stores
// them: [layers][kv_heads][16][head_dim] of K, then the same of V.
func fixtureChunks(t testing.TB) (tiers.Layout, [][]byte) {
	t.Helper()
	var l tiers.Layout
	var blocks [][]byte
	for _, name := range []string{"kv-p00", "kv-p02", "kv-p05"} {
		var bs [][]byte
		l, bs = fixtureFileChunks(t, "../codec/testdata/kv/"+name+".bin")
		blocks = append(blocks, bs...)
	}
	return l, blocks
}

func fixtureFileChunks(t testing.TB, path string) (tiers.Layout, [][]byte) {
	f, err := kvfile.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	k, kt, err := f.Raw(kvfile.KPostRoPE)
	if err != nil {
		t.Fatal(err)
	}
	v, _, err := f.Raw(kvfile.V)
	if err != nil {
		t.Fatal(err)
	}
	layers, heads, tokens, dim := kt.Shape[0], kt.Shape[1], kt.Shape[2], kt.Shape[3]
	const bt = 16
	l := tiers.Layout{DType: codec.FP16, Order: codec.KVSeparate, Layers: uint16(layers), KVHeads: uint16(heads), Tokens: bt, HeadDim: uint16(dim)}
	row := dim * 2
	var blocks [][]byte
	for c := 0; c+bt <= tokens; c += bt {
		b := make([]byte, 0, l.Size())
		for _, src := range [][]byte{k, v} {
			for lh := range layers * heads {
				off := (lh*tokens + c) * row
				b = append(b, src[off:off+bt*row]...)
			}
		}
		blocks = append(blocks, b)
	}
	return l, blocks
}

func halfs(b []byte) []float32 {
	out := make([]float32, len(b)/2)
	for i := range out {
		out[i] = codec.HalfToFloat32(binary.LittleEndian.Uint16(b[2*i:]))
	}
	return out
}

// TestCompressedDRAM stores real KV blocks in a DRAM arena 3/4 the size of
// their raw bytes, with DRAM kept compressed in each mode: the quantized
// modes hold every block without evicting one (raw and lossless cannot),
// every Get returns the block within the mode's error (lossless: exactly),
// concurrent readers share one decoded staging slot, freed on the last
// Release, and the frames reach NVMe as they are and survive a restart.
func TestCompressedDRAM(t *testing.T) {
	l, blocks := fixtureChunks(t)
	raw := int64(len(blocks)) * l.Size()
	cases := []struct {
		mode    codec.Mode
		maxErr  float64 // relative error of a block's values
		fitsAll bool    // the arena, 3/4 of the raw bytes, holds every block
	}{
		{codec.Raw, 0, false},
		{codec.Lossless, 0, false},
		{codec.Int8, 0.01, true},
		{codec.Int4, 0.15, true},
	}
	for _, c := range cases {
		t.Run(c.mode.String(), func(t *testing.T) {
			ctx := context.Background()
			d, err := dram.New(raw*3/4, dram.WithChunkSize(64<<10), dram.WithHugePages(false))
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			nv, err := nvme.Open(dir, 4*raw)
			if err != nil {
				t.Fatal(err)
			}
			cfg := tiers.Config{DRAM: d, NVMe: nv, Logger: quietLogger(),
				Codecs: func(ns string) tiers.Codecs {
					if ns == "packed" {
						return tiers.Codecs{DRAM: c.mode, NVMe: c.mode}
					}
					return tiers.Codecs{DRAM: codec.Raw, NVMe: codec.Raw}
				}}
			s, err := tiers.Open(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			key := func(i int) tiers.Key { k := benchKey(i); k.Namespace = "packed"; return k }
			for i, b := range blocks {
				if err := s.Put(ctx, key(i), l, b, tiers.PutOptions{Durable: i == 0}); err != nil {
					t.Fatal(err)
				}
			}
			st := s.Stats()
			if d := st.Levels[0]; d.LogicalBytes != d.Blocks*l.Size() || (c.fitsAll && d.UsedBytes >= d.LogicalBytes*3/4) {
				t.Fatalf("DRAM holds %d blocks in %d bytes, %d decoded; want every block counted decoded, and compressed when all fit", d.Blocks, d.UsedBytes, d.LogicalBytes)
			}
			if ev := st.Levels[0].Evictions; (ev == 0) != c.fitsAll {
				t.Fatalf("%d DRAM evictions putting %d blocks (%d raw bytes) into %d bytes; want fits all = %v",
					ev, len(blocks), raw, st.Levels[0].CapacityBytes, c.fitsAll)
			}
			got := func(i int, want []byte) tiers.Block {
				t.Helper()
				b, err := s.Get(ctx, key(i), tiers.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				if c.maxErr == 0 {
					if !bytes.Equal(b.Data, want) {
						t.Fatalf("block %d: bytes differ", i)
					}
				} else if e := kveval.RelError(halfs(want), halfs(b.Data)); e > c.maxErr {
					t.Fatalf("block %d: relative error %.4f > %.4f", i, e, c.maxErr)
				}
				return b
			}
			last := len(blocks) - 1
			b1 := got(last, blocks[last])
			b2 := got(last, blocks[last])
			if c.mode != codec.Raw && b1.Slot != b2.Slot {
				t.Fatalf("two readers got staging slots %+v and %+v; want one shared", b1.Slot, b2.Slot)
			}
			decoded := append([]byte(nil), b1.Data...)
			reserved := d.Stats().ReservedBytes
			s.Release(key(last))
			s.Release(key(last))
			if c.mode != codec.Raw && c.fitsAll && d.Stats().ReservedBytes >= reserved {
				t.Fatalf("the staging slot was not freed: %d reserved bytes before the last Release, %d after", reserved, d.Stats().ReservedBytes)
			}
			for i := range blocks {
				s.Release(got(i, blocks[i]).Key)
			}

			// Restart: NVMe holds the frames, decoded values are unchanged.
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			d, err = dram.New(raw*3/4, dram.WithChunkSize(64<<10), dram.WithHugePages(false))
			if err != nil {
				t.Fatal(err)
			}
			if nv, err = nvme.Open(dir, 4*raw); err != nil {
				t.Fatal(err)
			}
			cfg.DRAM, cfg.NVMe = d, nv
			if s, err = tiers.Open(ctx, cfg); err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if c.fitsAll {
				if used := nv.Stats().UsedBytes; used > raw*3/4 {
					t.Fatalf("NVMe holds %d bytes for %d raw: frames were not stored as they are", used, raw)
				}
			}
			b, err := s.Get(ctx, key(last), tiers.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b.Data, decoded) {
				t.Fatal("after a restart the block decodes to other values")
			}
			s.Release(key(last))
		})
	}
}

// TestCompressedDRAMReservation: a block written in place (the shared-memory
// data plane) is compressed at Commit, and its raw reservation freed.
func TestCompressedDRAMReservation(t *testing.T) {
	l, blocks := fixtureChunks(t)
	ctx := context.Background()
	d, err := dram.New(4<<20, dram.WithChunkSize(64<<10), dram.WithHugePages(false))
	if err != nil {
		t.Fatal(err)
	}
	s, err := tiers.Open(ctx, tiers.Config{DRAM: d, Logger: quietLogger(),
		Codecs: func(string) tiers.Codecs { return tiers.Codecs{DRAM: codec.Int8, NVMe: codec.Int8} }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	k := benchKey(1)
	r, err := s.Reserve(ctx, k, l)
	if err != nil {
		t.Fatal(err)
	}
	copy(r.Data, blocks[0])
	if err := s.Commit(ctx, r, tiers.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	st := d.Stats()
	if st.Blocks != 1 || st.UsedBytes >= l.Size() || st.ReservedBytes >= d.SlotSize(l.Size()) {
		t.Fatalf("after Commit: %+v; want one frame smaller than the %d-byte block, no raw slot left", st, l.Size())
	}
	b, err := s.Get(ctx, k, tiers.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if e := kveval.RelError(halfs(blocks[0]), halfs(b.Data)); e > 0.01 {
		t.Fatalf("relative error %.4f", e)
	}
	s.Release(k)
}

// BenchmarkCompressedDRAMGet measures Get+Release of real KV blocks (24 KiB,
// all layers, 16 tokens) with DRAM kept in each mode; the reader copies the
// bytes out. raw is the reference: the same Get without decoding. It also
// reports the DRAM bytes (slots) per raw byte.
func BenchmarkCompressedDRAMGet(b *testing.B) {
	l, blocks := fixtureChunks(b)
	ctx := context.Background()
	for _, m := range []codec.Mode{codec.Raw, codec.Lossless, codec.Int8, codec.Int4} {
		b.Run("mode="+m.String(), func(b *testing.B) {
			d, err := dram.New(int64(len(blocks))*l.Size()*2, dram.WithChunkSize(64<<10))
			if err != nil {
				b.Fatal(err)
			}
			s, err := tiers.Open(ctx, tiers.Config{DRAM: d, Logger: quietLogger(),
				Codecs: func(string) tiers.Codecs { return tiers.Codecs{DRAM: m, NVMe: m} }})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			for i, blk := range blocks {
				putBlock(b, s, i, l, blk)
			}
			reserved := float64(d.Stats().ReservedBytes)
			dst := make([]byte, l.Size())
			b.SetBytes(l.Size())
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				getCopy(b, s, benchKey(i%len(blocks)), dst)
				i++
			}
			b.ReportMetric(reserved/float64(int64(len(blocks))*l.Size()), "dram-bytes/raw-byte")
		})
	}
}

// TestCodecPolicyEachTierKeepsItsMode: with one namespace's DRAM and NVMe
// modes set apart in the one codec policy, the NVMe copy is a frame in the
// NVMe mode (compressed DRAM does not impose its own), and a block promoted
// back from NVMe is kept in DRAM's mode.
func TestCodecPolicyEachTierKeepsItsMode(t *testing.T) {
	l, blocks := fixtureChunks(t)
	cases := []struct{ dram, nvme codec.Mode }{
		{codec.Lossless, codec.Raw},
		{codec.Int8, codec.Lossless},
		{codec.Int8, codec.Int4},
		{codec.Raw, codec.Lossless},
		{codec.Lossless, codec.Lossless},
	}
	for _, c := range cases {
		t.Run(c.dram.String()+"-"+c.nvme.String(), func(t *testing.T) {
			ctx := context.Background()
			// DRAM holds about ten raw blocks, so the first of n puts leaves it.
			n := min(len(blocks), 64)
			d, err := dram.New(256<<10, dram.WithChunkSize(64<<10), dram.WithHugePages(false))
			if err != nil {
				t.Fatal(err)
			}
			nv, err := nvme.Open(t.TempDir(), 4*int64(n)*l.Size())
			if err != nil {
				t.Fatal(err)
			}
			s, err := tiers.Open(ctx, tiers.Config{DRAM: d, NVMe: nv, Logger: quietLogger(),
				Codecs: func(string) tiers.Codecs { return tiers.Codecs{DRAM: c.dram, NVMe: c.nvme} }})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			for i := range n {
				if err := s.Put(ctx, benchKey(i), l, blocks[i], tiers.PutOptions{Durable: true}); err != nil {
					t.Fatal(err)
				}
			}
			k := benchKey(0)
			_, frame, err := nv.GetFrame(ctx, k, nil)
			if err != nil {
				t.Fatal(err)
			}
			if h, err := codec.ParseHeader(frame); err != nil || h.Mode != c.nvme {
				t.Fatalf("NVMe frame in mode %v (%v), want %v", h.Mode, err, c.nvme)
			}
			b, err := s.Get(ctx, k, tiers.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if b.From != tiers.LevelNVMe {
				t.Fatalf("read from %v, want NVMe", b.From)
			}
			if !c.dram.Quantized() && !c.nvme.Quantized() && !bytes.Equal(b.Data, blocks[0]) {
				t.Fatal("lossless modes changed the block")
			}
			if err := s.Release(k); err != nil {
				t.Fatal(err)
			}
			// A quantized DRAM mode always takes a smaller slot (lossless may
			// not, on blocks this small), so DRAM keeps such blocks packed,
			// the one promoted from a frame in another mode included.
			st := s.Stats().Levels[0]
			if packed := st.UsedBytes < st.LogicalBytes; c.dram.Quantized() && !packed {
				t.Fatalf("DRAM uses %d bytes for %d decoded; want %v blocks packed", st.UsedBytes, st.LogicalBytes, c.dram)
			}
		})
	}
}
