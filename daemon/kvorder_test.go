package daemon_test

import (
	"fmt"
	"testing"

	"github.com/kvtier/kvtier/client"
	"github.com/kvtier/kvtier/codec"
	pb "github.com/kvtier/kvtier/proto/kvtier/v1"
)

// TestGetReturnsPutOrder: a Get returns the KV order that was put, unset
// included, on both data planes, from DRAM (raw and as frames) and from NVMe
// after a restart (the frame and the index carry it).
func TestGetReturnsPutOrder(t *testing.T) {
	orders := []pb.KVOrder{pb.KVOrder_KV_ORDER_UNSPECIFIED, pb.KVOrder_KV_ORDER_SEPARATE, pb.KVOrder_KV_ORDER_INTERLEAVED}
	for _, tc := range []struct {
		name string
		mode codec.Mode
	}{
		{"dram=raw", codec.Raw},
		{"dram=lossless", codec.Lossless},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			e := startEnv(t, envOptions{nvme: true, nvmeDir: dir, dramCodec: tc.mode})
			ctx := ctxT(t)
			s, err := e.cl.Attach(ctx, "order")
			if err != nil {
				t.Fatalf("Attach: %v", err)
			}
			type put struct {
				key   *pb.Key
				order pb.KVOrder
			}
			var puts []put
			for i, o := range orders {
				l := smallLayout()
				l.Order = o
				ki, ks := keyOf("order", 2*i), keyOf("order", 2*i+1)
				if err := e.cl.Put(ctx, ki, l, blockData(ki, smallSize), client.PutOptions{Durable: true}); err != nil {
					t.Fatalf("inline Put %v: %v", o, err)
				}
				if err := s.Put(ctx, ks, l, blockData(ks, smallSize), client.PutOptions{Durable: true}); err != nil {
					t.Fatalf("shm Put %v: %v", o, err)
				}
				puts = append(puts, put{ki, o}, put{ks, o})
			}
			check := func(where string, get func(*pb.Key) (client.Block, error), from pb.Tier) {
				t.Helper()
				for _, p := range puts {
					b, err := get(p.key)
					if err != nil {
						t.Fatalf("%s Get %x: %v", where, p.key.Hash, err)
					}
					checkData(t, p.key, b.Data)
					if b.From != from {
						t.Errorf("%s Get %x: from %v, want %v", where, p.key.Hash, b.From, from)
					}
					if got := b.Layout.GetOrder(); got != p.order {
						t.Errorf("%s Get of a block put with order %v returned %v", where, p.order, got)
					}
				}
			}
			check("inline/DRAM", func(k *pb.Key) (client.Block, error) { return e.cl.Get(ctx, k, nil, client.GetOptions{}) }, pb.Tier_TIER_DRAM)
			check("shm/DRAM", func(k *pb.Key) (client.Block, error) { return s.Get(ctx, k, nil, client.GetOptions{}) }, pb.Tier_TIER_DRAM)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			e.stop()

			// A restart starts with an empty DRAM tier: the next Gets read
			// the NVMe frames (each plane's first read comes from NVMe).
			for _, plane := range []string{"inline", "shm"} {
				e2 := startEnv(t, envOptions{nvme: true, nvmeDir: dir, dramCodec: tc.mode})
				get := func(k *pb.Key) (client.Block, error) { return e2.cl.Get(ctx, k, nil, client.GetOptions{}) }
				if plane == "shm" {
					s2, err := e2.cl.Attach(ctx, "order2")
					if err != nil {
						t.Fatalf("Attach: %v", err)
					}
					defer s2.Close()
					get = func(k *pb.Key) (client.Block, error) { return s2.Get(ctx, k, nil, client.GetOptions{}) }
				}
				check(fmt.Sprintf("%s/NVMe", plane), get, pb.Tier_TIER_NVME)
				e2.stop()
			}
		})
	}
}
