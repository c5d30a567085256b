package daemon_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kvtier/kvtier/client"
	pb "github.com/kvtier/kvtier/proto/kvtier/v1"
)

// longChain is long enough that its packed request takes the daemon's
// one-copy decode path (requests of 16 KiB and more).
const longChain = 1100

// putChain stores blocks 0..n-1 of namespace ns, tiny ones.
func putChain(t *testing.T, e *testEnv, ns string, n int) []byte {
	t.Helper()
	ctx := ctxT(t)
	s, err := e.cl.Attach(ctx, "chain")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	l := &pb.Layout{Dtype: pb.Dtype_DTYPE_FP8, Tokens: 16, KvHeads: 1, HeadDim: 8}
	packed := make([]byte, 0, 16*n)
	for i := range n {
		h := hashOf(i)
		packed = append(packed, h...)
		if err := s.Put(ctx, &pb.Key{Namespace: ns, Hash: h, Layer: -1}, l, make([]byte, 256), client.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return packed
}

// TestLookupLongChains looks up long chains through the daemon: the
// request decoded in one copy into a pooled buffer, the response encoded
// in one pass, and the buffer recycled between calls.
func TestLookupLongChains(t *testing.T) {
	e := startEnv(t, envOptions{dramCap: longChain*4096 + 8<<20})
	packed := putChain(t, e, "long", longChain)
	missAt := func(i int) []byte {
		p := slices.Clone(packed)
		copy(p[16*i:], hashOf(-1))
		return p
	}
	wide := make([]byte, 0, 32*longChain) // the same digests, twice as long: none cached
	for i := range longChain {
		wide = append(append(wide, hashOf(i)...), hashOf(i)...)
	}
	for _, tc := range []struct {
		name          string
		req           *pb.LookupRequest
		cached, total uint32
		code          codes.Code
		field         string
	}{
		{"all cached", &pb.LookupRequest{Namespace: "long", Layer: -1, PackedHashes: packed, HashSize: 16}, longChain, longChain, codes.OK, ""},
		{"a miss", &pb.LookupRequest{Namespace: "long", Layer: -1, PackedHashes: missAt(1000), HashSize: 16}, 1000, longChain, codes.OK, ""},
		{"other layer", &pb.LookupRequest{Namespace: "long", Layer: 0, PackedHashes: packed, HashSize: 16}, 0, longChain, codes.OK, ""},
		{"32-byte hashes", &pb.LookupRequest{Namespace: "long", Layer: -1, PackedHashes: wide, HashSize: 32}, 0, longChain, codes.OK, ""},
		{"and hashes", &pb.LookupRequest{Namespace: "long", Layer: -1, PackedHashes: packed, HashSize: 16, Hashes: [][]byte{hashOf(0)}}, 0, 0, codes.InvalidArgument, "hashes"},
		{"ragged", &pb.LookupRequest{Namespace: "long", Layer: -1, PackedHashes: packed[:len(packed)-1], HashSize: 16}, 0, 0, codes.InvalidArgument, "packed_hashes"},
		{"bad hash size", &pb.LookupRequest{Namespace: "long", Layer: -1, PackedHashes: packed, HashSize: 20}, 0, 0, codes.InvalidArgument, "hash_size"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := e.cl.Lookup(ctxT(t), tc.req)
			if status.Code(err) != tc.code || (tc.field != "" && !strings.Contains(err.Error(), tc.field)) {
				t.Fatalf("Lookup: %v; want %v naming %q", err, tc.code, tc.field)
			}
			if err != nil {
				return
			}
			if resp.GetCachedBlocks() != tc.cached || resp.GetTotalBlocks() != tc.total || len(resp.GetTiers()) != int(tc.cached) {
				t.Fatalf("Lookup = %d of %d, %d tiers; want %d of %d", resp.GetCachedBlocks(), resp.GetTotalBlocks(), len(resp.GetTiers()), tc.cached, tc.total)
			}
			for i, tier := range resp.GetTiers() {
				if tier != pb.Tier_TIER_DRAM {
					t.Fatalf("tiers[%d] = %v", i, tier)
				}
			}
		})
	}
	t.Run("concurrent", func(t *testing.T) {
		// Requests of different chains share the pooled buffers in turn:
		// each answer must be its own request's.
		ctx := context.Background()
		var wg sync.WaitGroup
		errs := make(chan string, 8)
		for g := range 8 {
			wg.Go(func() {
				for i := range 10 {
					miss := 100*g + i
					resp, err := e.cl.Lookup(ctx, &pb.LookupRequest{Namespace: "long", Layer: -1, PackedHashes: missAt(miss), HashSize: 16})
					if err != nil || int(resp.GetCachedBlocks()) != miss {
						errs <- fmt.Sprintf("lookup with a miss at %d: %d cached, %v", miss, resp.GetCachedBlocks(), err)
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for msg := range errs {
			t.Error(msg)
		}
	})
}
