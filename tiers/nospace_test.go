package tiers

import (
	"context"
	"fmt"
	"testing"
)

// TestStoreNVMeOutOfSpace: when the NVMe tier refuses writes for lack of
// disk space, puts go on (DRAM copies NVMe cannot take are dropped to make
// room, not kept until puts fail), DRAM serves what it holds, and
// demotions resume once the tier takes writes again.
func TestStoreNVMeOutOfSpace(t *testing.T) {
	ctx := context.Background()
	ts := newTestStore(t, 4, 64, 0)
	setErr := func(err error) {
		ts.nvme.mu.Lock()
		ts.nvme.putErr = err
		ts.nvme.mu.Unlock()
	}
	setErr(fmt.Errorf("%w: test disk full", ErrNoSpace))
	const n = 20
	for i := range n {
		k := testKey("s", i)
		if err := ts.Put(ctx, k, testLayout, content(k, testBlock, 0), PutOptions{}); err != nil {
			t.Fatalf("put %d with NVMe out of space: %v", i, err)
		}
	}
	k := testKey("s", n-1)
	b := mustGet(t, ts.Store, k, content(k, testBlock, 0))
	if err := ts.Release(b.Key); err != nil {
		t.Fatal(err)
	}
	if st := ts.Stats(); st.Levels[1].Blocks != 0 {
		t.Fatalf("NVMe holds blocks it refused: %+v", st.Levels[1])
	}
	ts.check(t)

	setErr(nil)
	for i := n; i < 2*n; i++ {
		k := testKey("s", i)
		if err := ts.Put(ctx, k, testLayout, content(k, testBlock, 0), PutOptions{}); err != nil {
			t.Fatalf("put %d after space came back: %v", i, err)
		}
	}
	if err := ts.Store.Close(); err != nil {
		t.Fatal(err)
	}
	if st := ts.Stats(); st.Levels[1].Blocks == 0 {
		t.Fatalf("no block reached NVMe after space came back: %+v", st)
	}
}

// TestStoreCloseNVMeOutOfSpace: Close does not fail because NVMe has no
// room for the DRAM blocks it lacks; they are dropped (and logged).
func TestStoreCloseNVMeOutOfSpace(t *testing.T) {
	ctx := context.Background()
	ts := newTestStore(t, 8, 64, 0)
	ts.nvme.mu.Lock()
	ts.nvme.putErr = fmt.Errorf("%w: test disk full", ErrNoSpace)
	ts.nvme.mu.Unlock()
	for i := range 4 {
		k := testKey("c", i)
		if err := ts.Put(ctx, k, testLayout, content(k, testBlock, 0), PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := ts.Store.Close(); err != nil {
		t.Fatalf("Close with NVMe out of space: %v", err)
	}
}
