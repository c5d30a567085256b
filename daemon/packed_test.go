package daemon_test

import (
	"bytes"
	"testing"

	"github.com/kvtier/kvtier/client"
	"github.com/kvtier/kvtier/codec"
	pb "github.com/kvtier/kvtier/proto/kvtier/v1"
)

// TestCompressedDRAMPlanes runs both data planes over a store that keeps
// DRAM compressed (lossless): blocks put on either plane read back exactly
// on either, a shared-memory pin reads the decoded staging slot in place,
// and once every pin is released no staging slot is left.
func TestCompressedDRAMPlanes(t *testing.T) {
	e := startEnv(t, envOptions{dramCodec: codec.Lossless})
	ctx := ctxT(t)
	s, err := e.cl.Attach(ctx, "packed")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Compressible fp16: the high byte of every value takes few values.
	compressible := func(k *pb.Key) []byte {
		b := blockData(k, 1<<20)
		for i := 1; i < len(b); i += 2 {
			b[i] &= 7
		}
		return b
	}
	kIn, kShm := keyOf("p", 1), keyOf("p", 2)
	if err := e.cl.Put(ctx, kIn, mibLayout(), compressible(kIn), client.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, kShm, mibLayout(), compressible(kShm), client.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	st := stats(t, e.cl)
	var dramUsed, dramLogical uint64
	for _, tier := range st.GetTiers() {
		if tier.GetName() == "dram" {
			dramUsed, dramLogical = tier.GetUsedBytes(), tier.GetLogicalBytes()
		}
	}
	if dramUsed == 0 || dramUsed >= 2<<20 || dramLogical != 2<<20 {
		t.Fatalf("DRAM holds %d bytes (%d decoded) for two 1 MiB blocks; want them compressed", dramUsed, dramLogical)
	}
	for _, k := range []*pb.Key{kIn, kShm} {
		want := compressible(k)
		b, err := e.cl.Get(ctx, k, nil, client.GetOptions{})
		if err != nil || !bytes.Equal(b.Data, want) {
			t.Fatalf("inline Get %x: %v", k.GetHash(), err)
		}
		b, err = s.Get(ctx, k, nil, client.GetOptions{})
		if err != nil || !bytes.Equal(b.Data, want) {
			t.Fatalf("shm Get %x: %v", k.GetHash(), err)
		}
		p1, err := s.Pin(ctx, k, client.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		p2, err := s.Pin(ctx, k, client.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(p1.Data, want) || p1.Slot.GetOffset() != p2.Slot.GetOffset() {
			t.Fatalf("pinned views: equal %v, offsets %d and %d (want one shared staging slot)",
				bytes.Equal(p1.Data, want), p1.Slot.GetOffset(), p2.Slot.GetOffset())
		}
		if err := p1.Release(ctx); err != nil {
			t.Fatal(err)
		}
		if err := p2.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, "no pins and no staging slot", func() bool {
		st := stats(t, e.cl)
		for _, tier := range st.GetTiers() {
			// A staging slot left behind would reserve a whole 1 MiB
			// block beyond the frames (whose slots waste under 1/8 each).
			if tier.GetName() == "dram" && tier.GetReservedBytes() >= tier.GetUsedBytes()+1<<20 {
				return false
			}
		}
		return st.GetPinnedBlocks() == 0 && st.GetLeases() == 0
	})
}
