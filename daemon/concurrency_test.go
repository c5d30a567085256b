package daemon_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kvtier/kvtier/client"
	"github.com/kvtier/kvtier/codec"
	pb "github.com/kvtier/kvtier/proto/kvtier/v1"
)

// TestMixedClients runs 64 clients doing puts, gets, lookups, deletes and
// stats on both data planes at once, over a DRAM tier small enough to
// evict, and checks every byte read and that nothing leaks. The packed run
// keeps DRAM compressed (lossless) with blocks that compress to one 4 KiB
// slot, so reads share and free staging slots under the same churn.
func TestMixedClients(t *testing.T) {
	for _, packed := range []bool{false, true} {
		t.Run(fmt.Sprintf("packed=%v", packed), func(t *testing.T) { testMixedClients(t, packed) })
	}
}

// mixedData is a block's content in TestMixedClients: with packed, a
// 256-byte pattern repeated, which lossless shrinks to well under 4 KiB.
func mixedData(k *pb.Key, packed bool) []byte {
	if !packed {
		return blockData(k, smallSize)
	}
	return bytes.Repeat(blockData(k, 256), smallSize/256)
}

func testMixedClients(t *testing.T, packed bool) {
	const (
		clients = 64
		blocks  = 96 // distinct keys, shared by all clients
	)
	ops := 40
	if testing.Short() {
		ops = 10
	}
	// 64 × 8 KiB slots fit many times over; 2 MiB makes eviction happen.
	o := envOptions{dramCap: 2 << 20}
	if packed {
		o.dramCodec = codec.Lossless
	}
	e := startEnv(t, o)
	ctx := ctxT(t)
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := mixedClient(ctx, e, c, ops, blocks, packed); err != nil {
				errs <- fmt.Errorf("client %d: %w", c, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	eventually(t, "no pins, leases or stray reservations", func() bool {
		st := stats(t, e.cl)
		d := dramStats(st)
		if st.GetPinnedBlocks() != 0 || st.GetLeases() != 0 || st.GetSessions() != 0 {
			return false
		}
		if packed { // every block a frame in one 4 KiB slot; no staging slot left
			return d.GetUsedBytes() < d.GetBlocks()*4096 && d.GetReservedBytes() == d.GetBlocks()*4096
		}
		return d.GetUsedBytes() == d.GetBlocks()*smallSize
	})
}

func mixedClient(ctx context.Context, e *testEnv, id, ops, blocks int, packed bool) error {
	c, err := client.Dial(client.UnixTarget(e.socket))
	if err != nil {
		return err
	}
	defer c.Close()
	var shm *client.Shm
	if id%2 == 0 { // half the clients also use shared memory
		if shm, err = c.Attach(ctx, fmt.Sprintf("mixed-%d", id)); err != nil {
			return fmt.Errorf("Attach: %w", err)
		}
		defer shm.Close()
	}
	rng := rand.New(rand.NewPCG(uint64(id), 7))
	buf := make([]byte, smallSize)
	for range ops {
		k := keyOf("mixed", rng.IntN(blocks))
		// Missing blocks and pinned-block conflicts are expected under churn.
		okErr := func(err error) error {
			switch status.Code(err) {
			case codes.OK, codes.NotFound, codes.FailedPrecondition:
				return nil
			}
			return err
		}
		switch op := rng.IntN(10); {
		case op < 3:
			data := mixedData(k, packed)
			if shm != nil && op == 0 {
				err = shm.Put(ctx, k, smallLayout(), data, client.PutOptions{Parent: hashOf(-1)})
			} else {
				err = c.Put(ctx, k, smallLayout(), data, client.PutOptions{})
			}
			if err := okErr(err); err != nil {
				return fmt.Errorf("put: %w", err)
			}
		case op < 7:
			var b client.Block
			if shm != nil && op < 5 {
				b, err = shm.Get(ctx, k, buf, client.GetOptions{})
			} else {
				b, err = c.Get(ctx, k, buf, client.GetOptions{})
			}
			if err := okErr(err); err != nil {
				return fmt.Errorf("get: %w", err)
			}
			if err == nil {
				if want := mixedData(k, packed); string(b.Data) != string(want) {
					return fmt.Errorf("get %x: wrong bytes", k.GetHash())
				}
			}
		case op < 8:
			hs := make([][]byte, 8)
			for i := range hs {
				hs[i] = hashOf(rng.IntN(blocks))
			}
			resp, err := c.LookupHashes(ctx, "mixed", 0, hs)
			if err != nil {
				return fmt.Errorf("lookup: %w", err)
			}
			if int(resp.GetCachedBlocks()) != len(resp.GetTiers()) || resp.GetTotalBlocks() != 8 {
				return fmt.Errorf("lookup: inconsistent answer %v", resp)
			}
		case op < 9:
			if err := okErr(c.Delete(ctx, k)); err != nil {
				return fmt.Errorf("delete: %w", err)
			}
		default:
			st, err := c.Stats(ctx)
			if err != nil {
				return fmt.Errorf("stats: %w", err)
			}
			if len(st.GetTiers()) == 0 || st.GetTiers()[0].GetTier() != pb.Tier_TIER_DRAM {
				return fmt.Errorf("stats: %v", st)
			}
		}
	}
	return nil
}
