package client_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/kvtier/kvtier/client"
	pb "github.com/kvtier/kvtier/proto/kvtier/v1"
)

// TestShmGetBatchOneLease: a shared-memory GetBatch holds one lease per
// PinBlocks call, also past the daemon's 4096 keys per call, and leaves
// nothing pinned once its deferred release is flushed.
func TestShmGetBatchOneLease(t *testing.T) {
	c := startDaemon(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	shm, err := c.Attach(ctx, "one-lease")
	if err != nil {
		t.Fatal(err)
	}
	defer shm.Close()
	keys, data := batchKeys(3)
	if err := c.PutBatch(ctx, keys, batchLayout, data, nil); err != nil {
		t.Fatal(err)
	}
	stats := func() *pb.StatsResponse {
		st, err := c.API().Stats(ctx, &pb.StatsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	for _, n := range []int{3, 4096 + 5} { // one call; two calls
		many := make([]*pb.Key, n)
		for i := range many {
			many[i] = keys[i%len(keys)]
		}
		dst := make([][]byte, n)
		if err := shm.GetBatch(ctx, many, dst, client.GetOptions{}); err != nil {
			t.Fatalf("%d keys: %v", n, err)
		}
		for i := range dst {
			if !bytes.Equal(dst[i], data[i%len(keys)]) {
				t.Fatalf("%d keys: block %d: wrong bytes", n, i)
			}
		}
		calls := uint32((n + 4095) / 4096)
		if st := stats(); st.GetLeases() > calls {
			t.Errorf("%d keys: %d leases held, want at most %d", n, st.GetLeases(), calls)
		}
		if err := shm.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		// A delayed flush may have taken the release just before Flush:
		// give its call time to land.
		deadline := time.Now().Add(5 * time.Second)
		st := stats()
		for (st.GetLeases() != 0 || st.GetPinnedBlocks() != 0) && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
			st = stats()
		}
		if st.GetLeases() != 0 || st.GetPinnedBlocks() != 0 {
			t.Errorf("%d keys: after flush, leases %d pinned %d", n, st.GetLeases(), st.GetPinnedBlocks())
		}
	}
}
