package nvme

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/kvtier/kvtier/codec"
	"github.com/kvtier/kvtier/tiers"
)

func TestTierOps(t *testing.T) {
	ctx := context.Background()
	l1, l2 := testLayout(4), testLayout(9)
	k := testKey("model-a", 1)
	tests := []struct {
		name string
		run  func(t *testing.T, tr *Tier)
	}{
		{"put then get is bit-exact", func(t *testing.T, tr *Tier) {
			d := block(l1, 1)
			mustPut(t, tr, k, l1, d)
			mustGet(t, tr, k, l1, d)
			if s := tr.Stats(); s.Blocks != 1 || s.UsedBytes != frameLen(l1) {
				t.Fatalf("stats %+v, want 1 block of %d bytes", s, frameLen(l1))
			}
		}},
		{"get appends to dst", func(t *testing.T, tr *Tier) {
			d := block(l1, 2)
			mustPut(t, tr, k, l1, d)
			dst := append(make([]byte, 0, 3+len(d)), "abc"...)
			_, got, err := tr.Get(ctx, k, dst)
			if err != nil || string(got[:3]) != "abc" || !slices.Equal(got[3:], d) {
				t.Fatalf("Get = %d bytes, %v; want prefix kept and block appended", len(got), err)
			}
		}},
		{"replace with another layout", func(t *testing.T, tr *Tier) {
			mustPut(t, tr, k, l1, block(l1, 3))
			d := block(l2, 4)
			mustPut(t, tr, k, l2, d)
			mustGet(t, tr, k, l2, d)
			if s := tr.Stats(); s.Blocks != 1 || s.UsedBytes != frameLen(l2) {
				t.Fatalf("stats %+v, want 1 block of %d bytes", s, frameLen(l2))
			}
		}},
		{"delete", func(t *testing.T, tr *Tier) {
			mustPut(t, tr, k, l1, block(l1, 5))
			if err := tr.Delete(ctx, k); err != nil {
				t.Fatal(err)
			}
			if _, _, err := tr.Get(ctx, k, nil); !errors.Is(err, tiers.ErrNotFound) {
				t.Fatalf("Get after Delete: %v, want ErrNotFound", err)
			}
			if s := tr.Stats(); s.Blocks != 0 || s.UsedBytes != 0 {
				t.Fatalf("stats %+v, want empty", s)
			}
		}},
		{"delete missing is not an error", func(t *testing.T, tr *Tier) {
			if err := tr.Delete(ctx, k); err != nil {
				t.Fatal(err)
			}
		}},
		{"get missing", func(t *testing.T, tr *Tier) {
			if _, _, err := tr.Get(ctx, k, nil); !errors.Is(err, tiers.ErrNotFound) {
				t.Fatalf("got %v, want ErrNotFound", err)
			}
		}},
		{"length does not match layout", func(t *testing.T, tr *Tier) {
			err := tr.Put(ctx, k, l1, make([]byte, l1.Size()-1))
			if !errors.Is(err, tiers.ErrInvalid) || !errors.Is(err, codec.ErrSize) {
				t.Fatalf("got %v, want ErrInvalid wrapping codec.ErrSize", err)
			}
		}},
		{"invalid layout", func(t *testing.T, tr *Tier) {
			bad := codec.Layout{DType: codec.FP16, KVHeads: 1, HeadDim: 1}
			err := tr.Put(ctx, k, bad, nil)
			if !errors.Is(err, tiers.ErrInvalid) || !errors.Is(err, codec.ErrLayout) {
				t.Fatalf("got %v, want ErrInvalid wrapping codec.ErrLayout", err)
			}
		}},
		{"invalid key", func(t *testing.T, tr *Tier) {
			bad := tiers.Key{Namespace: "has space", Hash: k.Hash}
			if err := tr.Put(ctx, bad, l1, block(l1, 6)); !errors.Is(err, tiers.ErrInvalid) {
				t.Fatalf("Put: %v, want ErrInvalid", err)
			}
			if _, _, err := tr.Get(ctx, bad, nil); !errors.Is(err, tiers.ErrInvalid) {
				t.Fatalf("Get: %v, want ErrInvalid", err)
			}
			if err := tr.Delete(ctx, tiers.Key{Namespace: "ns"}); !errors.Is(err, tiers.ErrInvalid) {
				t.Fatalf("Delete: %v, want ErrInvalid", err)
			}
		}},
		{"namespaces and layers are distinct keys", func(t *testing.T, tr *Tier) {
			a, b, c := k, k, k
			b.Namespace = "model-b"
			c.Layer = 7
			for i, key := range []tiers.Key{a, b, c} {
				mustPut(t, tr, key, l1, block(l1, uint64(10+i)))
			}
			for i, key := range []tiers.Key{a, b, c} {
				mustGet(t, tr, key, l1, block(l1, uint64(10+i)))
			}
		}},
		{"canceled context does no I/O", func(t *testing.T, tr *Tier) {
			mustPut(t, tr, k, l1, block(l1, 7))
			cctx, cancel := context.WithCancel(ctx)
			cancel()
			if err := tr.Put(cctx, testKey("x", 2), l1, block(l1, 8)); !errors.Is(err, context.Canceled) {
				t.Fatalf("Put: %v", err)
			}
			if _, _, err := tr.Get(cctx, k, nil); !errors.Is(err, context.Canceled) {
				t.Fatalf("Get: %v", err)
			}
			if err := tr.Delete(cctx, k); !errors.Is(err, context.Canceled) {
				t.Fatalf("Delete: %v", err)
			}
			if err := tr.Scan(cctx, func(tiers.Key, tiers.Layout, int64) error { return nil }); !errors.Is(err, context.Canceled) {
				t.Fatalf("Scan: %v", err)
			}
			if s := tr.Stats(); s.Blocks != 1 {
				t.Fatalf("stats %+v, want the one block", s)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.run(t, openTest(t, t.TempDir(), 1<<30))
		})
	}
}

func TestCapacity(t *testing.T) {
	ctx := context.Background()
	l := testLayout(8) // 4 KiB blocks
	fl := frameLen(l)
	tr := openTest(t, t.TempDir(), 3*fl)
	for i := range 3 {
		mustPut(t, tr, testKey("ns", i), l, block(l, uint64(i)))
	}
	tests := []struct {
		name    string
		key     tiers.Key
		l       codec.Layout
		wantErr []error
	}{
		{"new block over capacity", testKey("ns", 3), l, []error{tiers.ErrFull}},
		{"replace of the same size fits", testKey("ns", 1), l, nil},
		{"replace with a larger block does not fit", testKey("ns", 1), testLayout(9), []error{tiers.ErrFull}},
		{"replace with a smaller block fits", testKey("ns", 2), testLayout(4), nil},
		{"block larger than the tier", testKey("ns", 5), testLayout(64), []error{tiers.ErrFull, tiers.ErrExhausted}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := accounting(tr)
			err := tr.Put(ctx, tc.key, tc.l, block(tc.l, 99))
			for _, want := range tc.wantErr {
				if !errors.Is(err, want) {
					t.Fatalf("Put: %v, want %v", err, want)
				}
			}
			if tc.wantErr == nil && err != nil {
				t.Fatalf("Put: %v", err)
			}
			s := accounting(tr)
			if s.UsedBytes > s.CapacityBytes {
				t.Fatalf("used %d exceeds capacity %d", s.UsedBytes, s.CapacityBytes)
			}
			if tc.wantErr != nil && s != before {
				t.Fatalf("failed Put changed stats: %+v → %+v", before, s)
			}
		})
	}
}

func TestReopen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	type blk struct {
		k    tiers.Key
		l    codec.Layout
		data []byte
	}
	var want []blk // in write order
	put := func(tr *Tier, b blk) {
		mustPut(t, tr, b.k, b.l, b.data)
		want = slices.DeleteFunc(want, func(o blk) bool { return o.k == b.k })
		want = append(want, b)
	}
	tr, err := Open(dir, 1<<30, smallOpts(t)...)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		l := testLayout(uint32(1 + i%7*16))
		put(tr, blk{testKey(fmt.Sprintf("ns-%d", i%3), i), l, block(l, uint64(i))})
	}
	for _, i := range []int{3, 17, 25} { // rewrite some
		l := testLayout(5)
		put(tr, blk{testKey(fmt.Sprintf("ns-%d", i%3), i), l, block(l, uint64(1000+i))})
	}
	for _, i := range []int{4, 18} {
		k := testKey(fmt.Sprintf("ns-%d", i%3), i)
		if err := tr.Delete(ctx, k); err != nil {
			t.Fatal(err)
		}
		want = slices.DeleteFunc(want, func(o blk) bool { return o.k == k })
	}
	before := accounting(tr)
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}

	tr = openTest(t, dir, 1<<30)
	after := tr.Stats()
	if after.Blocks != before.Blocks || after.UsedBytes != before.UsedBytes || after.Blocks != int64(len(want)) {
		t.Fatalf("stats after reopen %+v, before %+v, want %d blocks", after, before, len(want))
	}
	var scanned []tiers.Key
	err = tr.Scan(ctx, func(k tiers.Key, l tiers.Layout, size int64) error {
		i := slices.IndexFunc(want, func(b blk) bool { return b.k == k })
		if i < 0 || want[i].l != l || size != frameLen(l) {
			return fmt.Errorf("scan: unexpected %v %v %d", k, l, size)
		}
		scanned = append(scanned, k)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var wantKeys []tiers.Key
	for _, b := range want {
		wantKeys = append(wantKeys, b.k)
	}
	if !slices.Equal(scanned, wantKeys) {
		t.Fatalf("Scan order %v\nwant write order %v", scanned, wantKeys)
	}
	for _, b := range want {
		mustGet(t, tr, b.k, b.l, b.data)
	}
	// New writes after reopen sort after the old ones.
	l := testLayout(3)
	k := testKey("late", 1)
	mustPut(t, tr, k, l, block(l, 1))
	var last tiers.Key
	if err := tr.Scan(ctx, func(k tiers.Key, _ tiers.Layout, _ int64) error { last = k; return nil }); err != nil {
		t.Fatal(err)
	}
	if last != k {
		t.Fatalf("new write is not the last scanned: %v", last)
	}
}

// TestWritesAfterReopenWin checks that writes after a restart supersede
// the versions written before it: the store picks Badger's commit
// timestamps, and must go on from the newest one on disk.
func TestWritesAfterReopenWin(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	l := testLayout(4)
	kept, replaced, deleted := testKey("ns", 1), testKey("ns", 2), testKey("ns", 3)
	tr, err := Open(dir, 1<<30, smallOpts(t)...)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 { // many versions before the restart
		for _, k := range []tiers.Key{kept, replaced, deleted} {
			mustPut(t, tr, k, l, block(l, uint64(i)))
		}
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	tr, err = Open(dir, 1<<30, smallOpts(t)...)
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, tr, replaced, l, block(l, 1000))
	if err := tr.Delete(ctx, deleted); err != nil {
		t.Fatal(err)
	}
	check := func(tr *Tier) {
		t.Helper()
		mustGet(t, tr, kept, l, block(l, 49))
		mustGet(t, tr, replaced, l, block(l, 1000))
		if _, _, err := tr.Get(ctx, deleted, nil); !errors.Is(err, tiers.ErrNotFound) {
			t.Fatalf("deleted block: %v, want ErrNotFound", err)
		}
	}
	check(tr)
	if err := tr.CollectGarbage(ctx); err != nil {
		t.Fatal(err)
	}
	check(tr)
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	check(openTest(t, dir, 1<<30))
}

func TestScanBatches(t *testing.T) {
	ctx := context.Background()
	tr := openTest(t, t.TempDir(), 1<<30)
	l := testLayout(1)
	const n = 2500 // more than two scan batches
	for i := range n {
		mustPut(t, tr, testKey("ns", i), l, block(l, uint64(i)))
	}
	var i int
	err := tr.Scan(ctx, func(k tiers.Key, _ tiers.Layout, _ int64) error {
		if k != testKey("ns", i) {
			return fmt.Errorf("scan item %d is %v", i, k)
		}
		i++
		if i == 1500 {
			// fn may call the tier.
			return tr.Delete(ctx, testKey("ns", 0))
		}
		return nil
	})
	if err != nil || i != n {
		t.Fatalf("Scan visited %d of %d: %v", i, n, err)
	}
	stop := errors.New("stop")
	if err := tr.Scan(ctx, func(tiers.Key, tiers.Layout, int64) error { return stop }); err != stop {
		t.Fatalf("Scan did not return fn's error: %v", err)
	}
}

func TestClosed(t *testing.T) {
	ctx := context.Background()
	base := runtime.NumGoroutine()
	tr, err := Open(t.TempDir(), 1<<20, smallOpts(t)...)
	if err != nil {
		t.Fatal(err)
	}
	n := runtime.NumGoroutine() - base
	t.Logf("Open started %d goroutines (Badger's and the GC loop)", n)
	if n > 20 {
		t.Errorf("Open started %d goroutines", n)
	}
	l := testLayout(1)
	mustPut(t, tr, testKey("ns", 1), l, block(l, 1))
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	checks := map[string]error{
		"Put":    tr.Put(ctx, testKey("ns", 1), l, block(l, 1)),
		"Delete": tr.Delete(ctx, testKey("ns", 1)),
		"Sync":   tr.Sync(),
		"Scan":   tr.Scan(ctx, func(tiers.Key, tiers.Layout, int64) error { return nil }),
		"GC":     tr.CollectGarbage(ctx),
		"Close":  tr.Close(),
	}
	_, _, checks["Get"] = tr.Get(ctx, testKey("ns", 1), nil)
	for name, err := range checks {
		if !errors.Is(err, tiers.ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
	if !waitFor(5*time.Second, func() bool { return runtime.NumGoroutine() <= base }) {
		t.Errorf("%d goroutines left after Close (had %d)", runtime.NumGoroutine(), base)
	}
}

func TestOpenErrors(t *testing.T) {
	foreign := t.TempDir()
	db, err := badger.Open(badger.DefaultOptions(foreign).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(txn *badger.Txn) error { return txn.Set([]byte("k"), []byte("v")) }); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	notDir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notDir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		dir  string
		cap  int64
		opts []Option
		want error
	}{
		{"zero capacity", t.TempDir(), 0, nil, tiers.ErrInvalid},
		{"bad discard ratio", t.TempDir(), 1 << 20, []Option{WithDiscardRatio(1)}, tiers.ErrInvalid},
		{"tiny value log", t.TempDir(), 1 << 20, []Option{WithValueLogFileSize(1 << 10)}, tiers.ErrInvalid},
		{"foreign badger database", foreign, 1 << 20, nil, ErrFormat},
		{"path is a file", notDir, 1 << 20, nil, ErrStore},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr, err := Open(tc.dir, tc.cap, append(smallOpts(t), tc.opts...)...)
			if err == nil {
				tr.Close()
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("Open: %v, want %v", err, tc.want)
			}
		})
	}
	// A directory Badger holds cannot be opened twice.
	dir := t.TempDir()
	openTest(t, dir, 1<<20)
	if tr, err := Open(dir, 1<<20, smallOpts(t)...); err == nil {
		tr.Close()
		t.Fatal("second Open of a directory in use succeeded")
	}
}

func TestSyncAndStats(t *testing.T) {
	tr := openTest(t, t.TempDir(), 1<<30, WithSyncWrites(false))
	l := testLayout(64)
	for i := range 8 {
		mustPut(t, tr, testKey("ns", i), l, block(l, uint64(i)))
	}
	if err := tr.Sync(); err != nil {
		t.Fatal(err)
	}
	s := tr.Stats()
	if s.Name != "nvme" || s.Blocks != 8 || s.UsedBytes != 8*frameLen(l) || s.ReservedBytes < s.UsedBytes || s.Corrupt != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// TestDirectReads checks that Get takes the direct path (so a Badger
// upgrade that moves Item's fields is noticed) and that both paths return
// the same bytes.
func TestDirectReads(t *testing.T) {
	if !directIOSupported {
		t.Skip("no direct I/O here")
	}
	if !itemFields.ok {
		t.Fatal("badger.Item no longer has the vptr and meta fields direct reads use")
	}
	dir := t.TempDir()
	tr := openTest(t, dir, 1<<30)
	ls := []codec.Layout{testLayout(1), testLayout(9), testLayout(256)}
	for i, l := range ls {
		mustPut(t, tr, testKey("ns", i), l, block(l, uint64(i)))
	}
	d := tr.st.(*badgerStore).direct
	for i, l := range ls {
		before := d.reads.Load()
		mustGet(t, tr, testKey("ns", i), l, block(l, uint64(i)))
		if d.reads.Load() != before+1 {
			t.Fatalf("block %d was not read directly", i)
		}
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	tr = openTest(t, dir, 1<<30, WithDirectReads(false))
	if tr.st.(*badgerStore).direct != nil {
		t.Fatal("direct reads on despite WithDirectReads(false)")
	}
	for i, l := range ls {
		mustGet(t, tr, testKey("ns", i), l, block(l, uint64(i)))
	}
}

func TestEntryValue(t *testing.T) {
	key := []byte("\x01key")
	const version = 42
	entry := func(klen, vlen int, keyBytes []byte, ts uint64) []byte {
		b := []byte{0, 0}
		b = binary.AppendUvarint(b, uint64(klen))
		b = binary.AppendUvarint(b, uint64(vlen))
		b = binary.AppendUvarint(b, 0)
		b = append(b, keyBytes...)
		b = binary.BigEndian.AppendUint64(b, math.MaxUint64-ts)
		b = append(b, bytes.Repeat([]byte{7}, vlen)...)
		return append(b, 1, 2, 3, 4) // checksum, not checked
	}
	tests := []struct {
		name  string
		entry []byte
		ok    bool
	}{
		{"valid", entry(len(key)+8, 100, key, version), true},
		{"other version", entry(len(key)+8, 100, key, version+1), false},
		{"other key", entry(len(key)+8, 100, []byte("\x01kez"), version), false},
		{"key length off", entry(len(key)+9, 100, key, version), false},
		{"value length off", entry(len(key)+8, 100, key, version)[:50], false},
		{"empty", nil, false},
		{"bad varint", bytes.Repeat([]byte{0xff}, 30), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, ok := entryValue(tc.entry, key, version)
			if ok != tc.ok || (ok && (len(v) != 100 || v[0] != 7)) {
				t.Fatalf("entryValue = %d bytes, %v; want ok=%v", len(v), ok, tc.ok)
			}
		})
	}
}

// TestFramesChargedByLength stores one block as a lossless frame (as the
// Store does in that NVMe mode) and one with Put (a raw frame), and checks
// that both come back bit-exact and that capacity is charged the frame
// length, not the block length.
func TestFramesChargedByLength(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	tr := openTest(t, dir, 1<<30)
	l := testLayout(64)
	zeros := make([]byte, l.Size()) // compresses well
	frame, err := codec.Encode(nil, l, zeros, codec.Options{Mode: codec.Lossless})
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.PutFrame(ctx, testKey("packed", 1), frame); err != nil {
		t.Fatal(err)
	}
	mustPut(t, tr, testKey("plain", 1), l, zeros)
	sizes := map[string]int64{}
	if err := tr.Scan(ctx, func(k tiers.Key, _ tiers.Layout, size int64) error {
		sizes[k.Namespace] = size
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if sizes["plain"] != frameLen(l) || sizes["packed"] >= sizes["plain"] {
		t.Fatalf("frame sizes %v; want plain %d and packed smaller", sizes, frameLen(l))
	}
	if s := tr.Stats(); s.UsedBytes != sizes["plain"]+sizes["packed"] {
		t.Fatalf("used %d, frames %v", s.UsedBytes, sizes)
	}
	mustGet(t, tr, testKey("packed", 1), l, zeros)
	mustGet(t, tr, testKey("plain", 1), l, zeros)
}

// TestReopenRepairs: a meta whose frame is missing and a frame with no meta
// (what a crash between Badger's value log and LSM could leave, or a bug)
// are removed when the tier reopens; the other blocks are untouched. The
// first repair needs the block's key, which the index no longer keeps: it
// is read back from the meta key.
func TestReopenRepairs(t *testing.T) {
	dir := t.TempDir()
	tr, err := Open(dir, 1<<30, smallOpts(t)...)
	if err != nil {
		t.Fatal(err)
	}
	l := testLayout(4)
	for i := range 6 {
		mustPut(t, tr, testKey("ns", i), l, block(l, uint64(i)))
	}
	var kb [keyBufLen]byte
	noFrame := testKey("ns", 2).AppendBinary(kb[:0])
	// Delete block 2's frame but keep its meta; delete block 4's meta but
	// keep its frame.
	tr.mu.Lock()
	seq4 := tr.idx.at(tr.idx.find(testKey("ns", 4).AppendBinary(nil))).seq
	tr.mu.Unlock()
	if err := tr.st.write([]op{
		{key: dataKey(noFrame), del: true},
		{key: metaKey(seq4, testKey("ns", 4).AppendBinary(nil)), del: true},
	}); err != nil {
		t.Fatal(err)
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	tr = openTest(t, dir, 1<<30)
	if st := tr.Stats(); st.Blocks != 4 || st.UsedBytes != 4*frameLen(l) {
		t.Fatalf("after reopen: %+v, want 4 blocks", st)
	}
	for i := range 6 {
		_, _, err := tr.Get(context.Background(), testKey("ns", i), nil)
		if gone := i == 2 || i == 4; gone != errors.Is(err, tiers.ErrNotFound) {
			t.Fatalf("block %d: %v", i, err)
		}
	}
	// Both halves are gone from Badger too.
	var left int
	err = tr.st.scan(context.Background(), nil, nil, false, func(key, _ []byte) error {
		if bk := key[1:]; key[0] == prefixMeta {
			_, bk, _ = parseMetaKey(key)
			if string(bk) == string(noFrame) {
				left++
			}
		} else if key[0] == prefixData && string(bk) == string(testKey("ns", 4).AppendBinary(nil)) {
			left++
		}
		return nil
	})
	if err != nil || left != 0 {
		t.Fatalf("%d repaired keys left in Badger (%v)", left, err)
	}
}
