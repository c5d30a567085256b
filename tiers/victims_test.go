package tiers

import (
	"context"
	"testing"
)

// victimList is a VictimSource that names fixed keys in order.
type victimList []Key

func (v victimList) Victims(_ Level, fn func(Key) bool) {
	for _, k := range v {
		if fn(k) {
			return
		}
	}
}

func TestEvictionByVictimSource(t *testing.T) {
	for _, tc := range []struct {
		name    string
		source  func(keys []Key) victimList
		evicted int // index of the block that must leave DRAM
	}{
		{"named block first", func(k []Key) victimList { return victimList{k[2]} }, 2},
		{"skips bad, unknown and pinned keys", func(k []Key) victimList {
			return victimList{{Namespace: "", Hash: k[0].Hash}, testKey("v", 99), k[1], k[3]}
		}, 3},
		{"falls back to LRU", func(k []Key) victimList { return victimList{k[1], testKey("v", 98)} }, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			ts := newTestStore(t, 4, 64, 0)
			keys := make([]Key, 4)
			for i := range keys {
				keys[i] = testKey("v", i)
				if err := ts.Put(ctx, keys[i], testLayout, content(keys[i], testBlock, 0), PutOptions{Durable: true}); err != nil {
					t.Fatal(err)
				}
			}
			b := mustGet(t, ts.Store, keys[1], content(keys[1], testBlock, 0)) // pinned from here on
			ts.SetVictims(tc.source(keys))
			k := testKey("v", 50)
			if err := ts.Put(ctx, k, testLayout, content(k, testBlock, 0), PutOptions{}); err != nil {
				t.Fatal(err)
			}
			for i, key := range keys {
				if in := ts.has(key, inDRAM); in == (i == tc.evicted) {
					t.Errorf("block %d in DRAM: %v", i, in)
				}
				if !ts.has(key, inNVMe) {
					t.Errorf("block %d lost its NVMe copy", i)
				}
			}
			if err := ts.Release(b.Key); err != nil {
				t.Fatal(err)
			}
			ts.SetVictims(nil)
			ts.check(t)
		})
	}
}
