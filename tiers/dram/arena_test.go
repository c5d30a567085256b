package dram

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"testing"
	"unsafe"

	"github.com/kvtier/kvtier/codec"
	"github.com/kvtier/kvtier/tiers"
)

const (
	KiB = 1 << 10
	MiB = 1 << 20
)

var bg = context.Background()

func TestNew(t *testing.T) {
	tests := []struct {
		name     string
		capacity int64
		opts     []Option
		wantErr  error
		wantSize int64
	}{
		{name: "default chunk", capacity: 8 * MiB, wantSize: 8 * MiB},
		{name: "rounded down to a chunk", capacity: 8*MiB + 12345, wantSize: 8 * MiB},
		{name: "small chunk", capacity: 200 * KiB, opts: []Option{WithChunkSize(64 * KiB)}, wantSize: 192 * KiB},
		{name: "zero capacity", capacity: 0, wantErr: tiers.ErrInvalid},
		{name: "negative capacity", capacity: -1, wantErr: tiers.ErrInvalid},
		{name: "less than a chunk", capacity: MiB, wantErr: tiers.ErrInvalid},
		{name: "chunk not a power of two", capacity: 8 * MiB, opts: []Option{WithChunkSize(3 * MiB)}, wantErr: tiers.ErrInvalid},
		{name: "chunk too small", capacity: 8 * MiB, opts: []Option{WithChunkSize(4 * KiB)}, wantErr: tiers.ErrInvalid},
		{name: "chunk too large", capacity: 8 * MiB, opts: []Option{WithChunkSize(2 << 30)}, wantErr: tiers.ErrInvalid},
		{name: "empty name", capacity: 8 * MiB, opts: []Option{WithName("")}, wantErr: tiers.ErrInvalid},
		{name: "all options", capacity: 4 * MiB, opts: []Option{WithName("dram0"), WithHugePages(false), WithPrefault(true), WithChunkSize(MiB)}, wantSize: 4 * MiB},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, err := New(tc.capacity, tc.opts...)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("New: err %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			defer a.Close()
			st := a.Stats()
			if st.CapacityBytes != tc.wantSize || a.Size() != tc.wantSize || int64(len(a.Base())) != tc.wantSize {
				t.Fatalf("capacity %d, Size %d, len(Base) %d; want %d", st.CapacityBytes, a.Size(), len(a.Base()), tc.wantSize)
			}
			if st.UsedBytes != 0 || st.ReservedBytes != 0 || st.Blocks != 0 {
				t.Fatalf("new arena not empty: %+v", st)
			}
			if uintptr(unsafe.Pointer(&a.Base()[0]))%pageSize != 0 {
				t.Fatalf("base %p not page aligned", &a.Base()[0])
			}
			checkInvariants(t, keyedOf(a))
		})
	}
}

func TestName(t *testing.T) {
	a := newArena(t, 4*MiB, WithName("dram-test"))
	if got := a.Stats().Name; got != "dram-test" || a.Name() != "dram-test" {
		t.Fatalf("name %q", got)
	}
	_, _, err := a.Get(bg, testKey("ns", 1, 0), nil)
	if !errors.Is(err, tiers.ErrNotFound) {
		t.Fatalf("Get missing: %v", err)
	}
}

func TestPutGetSizes(t *testing.T) {
	const chunk = 2 * MiB
	a := newArena(t, 20*MiB)
	tests := []struct {
		name string
		n    int64
	}{
		{"tiny", 2},
		{"under a page", 4094},
		{"one page", 4096},
		{"page plus two", 4098},
		{"64KiB", 64 * KiB},
		{"odd 100000", 100000},
		{"odd 300000", 300000},
		{"1MiB", MiB},
		{"one chunk", chunk},
		{"3MiB plus a page", 3*MiB + 4*KiB},
		{"5MiB", 5 * MiB},
		{"largest class", maxClassChunks * chunk},
		{"dedicated run", maxClassChunks*chunk + 8*KiB},
		{"whole arena", 20 * MiB},
	}
	dataBuf := make([]byte, a.Size())
	getBuf := make([]byte, 0, a.Size()+6)
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k := testKey("sizes", i, int16(i%3)-1)
			l := layoutFor(t, tc.n)
			data := dataBuf[:tc.n]
			fill(data, uint64(i+1))
			if err := a.Put(bg, k, l, data); err != nil {
				t.Fatalf("Put: %v", err)
			}
			gotL, got, err := a.Get(bg, k, append(getBuf[:0], "prefix"...))
			if err != nil || gotL != l || !bytes.Equal(got[:6], []byte("prefix")) || !bytes.Equal(got[6:], data) {
				t.Fatalf("Get: layout %v (want %v), err %v, %d bytes, equal %v", gotL, l, err, len(got), bytes.Equal(got[6:], data))
			}
			vl, slot, view, err := a.View(k)
			if err != nil || vl != l || !bytes.Equal(view, data) || cap(view) != len(view) {
				t.Fatalf("View: %v, layout %v, equal %v, cap %d", err, vl, bytes.Equal(view, data), cap(view))
			}
			if slot.Offset%pageSize != 0 || slot.Len != tc.n || !a.Validate(slot) {
				t.Fatalf("slot %+v: not aligned, wrong length or not valid", slot)
			}
			if &a.Base()[slot.Offset] != &view[0] {
				t.Fatalf("view does not start at Base()[%d]", slot.Offset)
			}
			slotSize := a.SlotSize(tc.n)
			if slotSize < tc.n || slotSize%pageSize != 0 {
				t.Fatalf("SlotSize(%d) = %d", tc.n, slotSize)
			}
			if st := a.Stats(); st.UsedBytes != tc.n || st.ReservedBytes != slotSize || st.Blocks != 1 {
				t.Fatalf("stats %+v, want used %d reserved %d", st, tc.n, slotSize)
			}
			checkInvariants(t, a)
			if err := a.Delete(bg, k); err != nil {
				t.Fatalf("Delete: %v", err)
			}
			if st := a.Stats(); st.UsedBytes != 0 || st.ReservedBytes != 0 || st.Blocks != 0 {
				t.Fatalf("stats after delete %+v", st)
			}
			if a.Validate(slot) {
				t.Fatalf("slot %+v still valid after delete", slot)
			}
			checkInvariants(t, a)
		})
	}
}

func TestFullAndTooLarge(t *testing.T) {
	const chunk = 64 * KiB
	a := newArena(t, 8*chunk, WithChunkSize(chunk))
	l := layoutFor(t, chunk)
	data := make([]byte, chunk)
	for i := 0; i < 8; i++ {
		if err := a.Put(bg, testKey("full", i, 0), l, data); err != nil {
			t.Fatalf("Put %d: %v", i, err)
		}
	}
	err := a.Put(bg, testKey("full", 8, 0), l, data)
	if !errors.Is(err, tiers.ErrFull) || errors.Is(err, ErrTooLarge) {
		t.Fatalf("Put into a full arena: %v, want ErrFull", err)
	}
	if _, _, err := a.Reserve(layoutFor(t, 4*KiB)); !errors.Is(err, tiers.ErrFull) {
		t.Fatalf("Reserve of another class in a full arena: %v, want ErrFull", err)
	}
	if st := a.Stats(); st.ReservedBytes != st.CapacityBytes || st.UsedBytes != 8*chunk || st.Blocks != 8 {
		t.Fatalf("stats of a full arena: %+v", st)
	}
	big := layoutFor(t, 8*chunk+2)
	if _, _, err := a.Reserve(big); !errors.Is(err, ErrTooLarge) || !errors.Is(err, tiers.ErrFull) {
		t.Fatalf("Reserve larger than the arena: %v, want ErrTooLarge wrapping ErrFull", err)
	}
	if a.SlotSize(8*chunk+2) != 0 || a.MaxBlockLen() != 8*chunk {
		t.Fatalf("SlotSize of a too-large block %d, MaxBlockLen %d", a.SlotSize(8*chunk+2), a.MaxBlockLen())
	}
	// A failed Put leaves nothing behind; a freed slot is usable again.
	if err := a.Delete(bg, testKey("full", 3, 0)); err != nil {
		t.Fatal(err)
	}
	if err := a.Put(bg, testKey("full", 8, 0), l, data); err != nil {
		t.Fatalf("Put after a delete: %v", err)
	}
	checkInvariants(t, a)
}

func TestReplace(t *testing.T) {
	a := newArena(t, 8*MiB, WithChunkSize(64*KiB))
	k := testKey("replace", 1, 5)
	tests := []struct {
		name string
		n    int64
	}{
		{"first", 64 * KiB},
		{"same size", 64 * KiB},
		{"other class", 12 * KiB},
		{"large", MiB},
		{"back to small", 8 * KiB},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := layoutFor(t, tc.n)
			data := make([]byte, tc.n)
			fill(data, uint64(100+i))
			if err := a.Put(bg, k, l, data); err != nil {
				t.Fatal(err)
			}
			gotL, got, err := a.Get(bg, k, nil)
			if err != nil || gotL != l || !bytes.Equal(got, data) {
				t.Fatalf("Get after replace: %v, layout %v", err, gotL)
			}
			if st := a.Stats(); st.Blocks != 1 || st.UsedBytes != tc.n || st.ReservedBytes != a.SlotSize(tc.n) {
				t.Fatalf("stats %+v", st)
			}
			checkInvariants(t, a)
		})
	}
}

func TestDelete(t *testing.T) {
	a := newArena(t, 4*MiB)
	k := testKey("del", 1, 0)
	if err := a.Delete(bg, k); err != nil {
		t.Fatalf("Delete of a missing key: %v", err)
	}
	l := layoutFor(t, 8*KiB)
	if err := a.Put(bg, k, l, make([]byte, 8*KiB)); err != nil {
		t.Fatal(err)
	}
	if err := a.Delete(bg, k); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.Get(bg, k, nil); !errors.Is(err, tiers.ErrNotFound) {
		t.Fatalf("Get after Delete: %v", err)
	}
	if _, _, _, err := a.View(k); !errors.Is(err, tiers.ErrNotFound) {
		t.Fatalf("View after Delete: %v", err)
	}
	if err := a.Delete(bg, k); err != nil {
		t.Fatalf("second Delete: %v", err)
	}
	if err := a.Delete(bg, tiers.Key{}); !errors.Is(err, tiers.ErrInvalid) {
		t.Fatalf("Delete of an invalid key: %v", err)
	}
	checkInvariants(t, a)
}

func TestInvalidInput(t *testing.T) {
	a := newArena(t, 4*MiB)
	good := layoutFor(t, 8*KiB)
	k := testKey("inv", 1, 0)
	tests := []struct {
		name string
		k    tiers.Key
		l    tiers.Layout
		n    int
		want []error
	}{
		{"short data", k, good, 8*KiB - 2, []error{tiers.ErrInvalid, codec.ErrSize}},
		{"long data", k, good, 8*KiB + 2, []error{tiers.ErrInvalid, codec.ErrSize}},
		{"bad dtype", k, tiers.Layout{KVHeads: 1, HeadDim: 1, Tokens: 1}, 2, []error{tiers.ErrInvalid, codec.ErrLayout}},
		{"zero tokens", k, tiers.Layout{DType: codec.FP16, KVHeads: 1, HeadDim: 1}, 0, []error{tiers.ErrInvalid, codec.ErrLayout}},
		{"zero key", tiers.Key{}, good, 8 * KiB, []error{tiers.ErrInvalid}},
		{"bad namespace", tiers.Key{Namespace: "a b", Hash: k.Hash}, good, 8 * KiB, []error{tiers.ErrInvalid}},
		{"bad layer", tiers.Key{Namespace: "ns", Hash: k.Hash, Layer: -2}, good, 8 * KiB, []error{tiers.ErrInvalid}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := a.Put(bg, tc.k, tc.l, make([]byte, tc.n))
			for _, w := range tc.want {
				if !errors.Is(err, w) {
					t.Fatalf("Put: %v, want %v", err, w)
				}
			}
			if st := a.Stats(); st.Blocks != 0 || st.ReservedBytes != 0 {
				t.Fatalf("a rejected Put left %+v", st)
			}
		})
	}
	if _, _, err := a.Reserve(tiers.Layout{}); !errors.Is(err, codec.ErrLayout) || !errors.Is(err, tiers.ErrInvalid) {
		t.Fatalf("Reserve of a zero layout: %v", err)
	}
	if _, _, err := a.Get(bg, tiers.Key{}, nil); !errors.Is(err, tiers.ErrInvalid) {
		t.Fatalf("Get of the zero key: %v", err)
	}
	if _, _, _, err := a.View(tiers.Key{}); !errors.Is(err, tiers.ErrInvalid) {
		t.Fatalf("View of the zero key: %v", err)
	}
	ctx, cancel := context.WithCancel(bg)
	cancel()
	if err := a.Put(ctx, k, good, make([]byte, 8*KiB)); !errors.Is(err, context.Canceled) {
		t.Fatalf("Put with a canceled context: %v", err)
	}
	if _, _, err := a.Get(ctx, k, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("Get with a canceled context: %v", err)
	}
	if err := a.Delete(ctx, k); !errors.Is(err, context.Canceled) {
		t.Fatalf("Delete with a canceled context: %v", err)
	}
}

func TestReserveCommitAbort(t *testing.T) {
	const n = 16 * KiB
	l := layoutFor(t, n)
	type step func(t *testing.T, a *keyed, s tiers.Slot, view []byte) error
	commit := func(k tiers.Key) step {
		return func(t *testing.T, a *keyed, s tiers.Slot, view []byte) error { return a.Commit(k, l, s) }
	}
	abort := func(t *testing.T, a *keyed, s tiers.Slot, view []byte) error { return a.Abort(s) }
	k1, k2 := testKey("rca", 1, 0), testKey("rca", 2, 0)
	tests := []struct {
		name    string
		steps   []step
		want    []error // per step; nil is success
		visible bool    // k1 readable at the end
		live    bool    // the slot is still reserved or committed at the end
	}{
		{name: "commit", steps: []step{commit(k1)}, want: []error{nil}, visible: true, live: true},
		{name: "abort", steps: []step{abort}, want: []error{nil}},
		{name: "double commit", steps: []step{commit(k1), commit(k2)}, want: []error{nil, ErrNotReserved}, visible: true, live: true},
		{name: "double commit same key", steps: []step{commit(k1), commit(k1)}, want: []error{nil, ErrNotReserved}, visible: true, live: true},
		{name: "commit after abort", steps: []step{abort, commit(k1)}, want: []error{nil, ErrNotReserved}},
		{name: "abort after commit", steps: []step{commit(k1), abort}, want: []error{nil, ErrNotReserved}, visible: true, live: true},
		{name: "double abort", steps: []step{abort, abort}, want: []error{nil, ErrNotReserved}},
		{
			name: "wrong layout size then commit",
			steps: []step{
				func(t *testing.T, a *keyed, s tiers.Slot, _ []byte) error { return a.Commit(k1, layoutFor(t, 2*n), s) },
				commit(k1),
			},
			want:    []error{codec.ErrSize, nil},
			visible: true, live: true,
		},
		{
			name: "tampered length larger than the slot",
			steps: []step{
				func(t *testing.T, a *keyed, s tiers.Slot, _ []byte) error {
					s.Len = 2 * n
					return a.Commit(k1, layoutFor(t, 2*n), s)
				},
				abort,
			},
			want: []error{tiers.ErrInvalid, nil},
		},
		{
			name: "invalid layout",
			steps: []step{
				func(t *testing.T, a *keyed, s tiers.Slot, _ []byte) error { return a.Commit(k1, tiers.Layout{}, s) },
				abort,
			},
			want: []error{codec.ErrLayout, nil},
		},
		{
			name: "invalid key",
			steps: []step{
				func(t *testing.T, a *keyed, s tiers.Slot, _ []byte) error { return a.Commit(tiers.Key{}, l, s) },
				commit(k1),
			},
			want:    []error{tiers.ErrInvalid, nil},
			visible: true, live: true,
		},
		{
			name: "stale generation",
			steps: []step{func(t *testing.T, a *keyed, s tiers.Slot, _ []byte) error {
				s.Gen--
				return a.Commit(k1, l, s)
			}, abort},
			want: []error{ErrNotReserved, nil},
		},
		{
			name: "generation beyond 30 bits",
			steps: []step{func(t *testing.T, a *keyed, s tiers.Slot, _ []byte) error {
				s.Gen += 1 << (32 - genShift)
				return a.Commit(k1, l, s)
			}, abort},
			want: []error{ErrNotReserved, nil},
		},
		{
			name: "offset inside the slot",
			steps: []step{func(t *testing.T, a *keyed, s tiers.Slot, _ []byte) error {
				s.Offset += pageSize
				s.Len -= pageSize
				return a.Abort(s)
			}, abort},
			want: []error{ErrNotReserved, nil},
		},
		{
			name: "unaligned offset",
			steps: []step{func(t *testing.T, a *keyed, s tiers.Slot, _ []byte) error {
				s.Offset++
				return a.Abort(s)
			}, commit(k1)},
			want:    []error{ErrNotReserved, nil},
			visible: true, live: true,
		},
		{
			name: "offset past the end",
			steps: []step{func(t *testing.T, a *keyed, s tiers.Slot, _ []byte) error {
				s.Offset = a.Size()
				return a.Abort(s)
			}, abort},
			want: []error{ErrNotReserved, nil},
		},
		{
			name: "zero slot",
			steps: []step{func(t *testing.T, a *keyed, s tiers.Slot, _ []byte) error {
				return a.Commit(k1, l, tiers.Slot{Len: n})
			}, abort},
			want: []error{ErrNotReserved, nil},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := newArena(t, 4*MiB, WithChunkSize(64*KiB))
			s, view, err := a.Reserve(l)
			if err != nil {
				t.Fatal(err)
			}
			if int64(len(view)) != n || cap(view) != len(view) || s.Len != n || s.Gen == 0 || !a.Validate(s) {
				t.Fatalf("Reserve: slot %+v, view %d/%d bytes", s, len(view), cap(view))
			}
			if st := a.Stats(); st.ReservedBytes != n || st.UsedBytes != 0 || st.Blocks != 0 {
				t.Fatalf("stats with one reservation: %+v", st)
			}
			fill(view, 7)
			for i, st := range tc.steps {
				err := st(t, a, s, view)
				if w := tc.want[i]; w == nil && err != nil || w != nil && !errors.Is(err, w) {
					t.Fatalf("step %d: %v, want %v", i, err, w)
				}
				if errors.Is(err, ErrNotReserved) && !errors.Is(err, tiers.ErrInvalid) {
					t.Fatalf("ErrNotReserved does not wrap ErrInvalid: %v", err)
				}
				checkInvariants(t, a)
			}
			_, got, err := a.Get(bg, k1, nil)
			if tc.visible != (err == nil) {
				t.Fatalf("Get k1: %v, want visible %v", err, tc.visible)
			}
			if tc.visible {
				if _, cerr := check(got); cerr != nil {
					t.Fatal(cerr)
				}
			}
			if a.Validate(s) != tc.live {
				t.Fatalf("Validate = %v, want %v", !tc.live, tc.live)
			}
			if !tc.live {
				if st := a.Stats(); st.ReservedBytes != 0 || st.Blocks != 0 {
					t.Fatalf("stats after abort %+v", st)
				}
			}
		})
	}
}

func TestGenerations(t *testing.T) {
	const chunk = 64 * KiB
	a := newArena(t, 4*chunk, WithChunkSize(chunk))
	l := layoutFor(t, 8*KiB)
	s1, _, err := a.Reserve(l)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Abort(s1); err != nil {
		t.Fatal(err)
	}
	s2, _, err := a.Reserve(l)
	if err != nil {
		t.Fatal(err)
	}
	if s2.Offset != s1.Offset || s2.Gen == s1.Gen {
		t.Fatalf("reuse of %+v gave %+v: want the same offset with a new generation", s1, s2)
	}
	if a.Validate(s1) || !a.Validate(s2) {
		t.Fatalf("Validate(stale) = %v, Validate(live) = %v", a.Validate(s1), a.Validate(s2))
	}
	if err := a.Commit(testKey("gen", 1, 0), l, s2); err != nil {
		t.Fatal(err)
	}
	if !a.Validate(s2) {
		t.Fatal("committed slot not valid")
	}
	if err := a.Commit(testKey("gen", 2, 0), l, s1); !errors.Is(err, ErrNotReserved) {
		t.Fatalf("Commit of a stale reservation over a committed slot: %v", err)
	}
	if err := a.Delete(bg, testKey("gen", 1, 0)); err != nil {
		t.Fatal(err)
	}
	if a.Validate(s2) {
		t.Fatal("deleted slot still valid")
	}
	// The chunk is released and carved by another class: the slot at the
	// same offset still gets a generation never seen there before.
	s3, _, err := a.Reserve(layoutFor(t, 24*KiB))
	if err != nil {
		t.Fatal(err)
	}
	if s3.Offset != s1.Offset || s3.Gen == s1.Gen || s3.Gen == s2.Gen {
		t.Fatalf("recarved slot %+v after %+v and %+v", s3, s1, s2)
	}
	stale := s2
	stale.Len = s3.Len
	if a.Validate(stale) || !a.Validate(s3) {
		t.Fatal("Validate after recarving")
	}
	if tooLong := (tiers.Slot{Offset: s3.Offset, Len: 2 * chunk, Gen: s3.Gen}); a.Validate(tooLong) {
		t.Fatal("Validate accepts a length beyond the slot")
	}
	if err := a.Abort(s3); err != nil {
		t.Fatal(err)
	}
	// Wraparound skips 0.
	if nextGen(maxGen) != 1 || nextGen(0) != 1 || nextGen(5) != 6 {
		t.Fatal("nextGen")
	}
	checkInvariants(t, a)
}

func TestChunkReuseAcrossClasses(t *testing.T) {
	const chunk = 64 * KiB
	a := newArena(t, 16*chunk, WithChunkSize(chunk))
	rounds := []struct {
		name  string
		n     int64
		count int // blocks that fit in the empty arena
	}{
		{"4KiB", 4 * KiB, 256},
		{"192KiB spans of 3 chunks", 192 * KiB, 5},
		{"20KiB", 20 * KiB, 16 * 3}, // 3 slots per chunk
		{"one dedicated run", 16 * chunk, 1},
		{"64KiB", 64 * KiB, 16},
	}
	for r, rc := range rounds {
		t.Run(rc.name, func(t *testing.T) {
			l := layoutFor(t, rc.n)
			data := make([]byte, rc.n)
			var keys []tiers.Key
			for i := 0; ; i++ {
				k := testKey("reuse", r*1000+i, 0)
				fill(data, uint64(i))
				err := a.Put(bg, k, l, data)
				if errors.Is(err, tiers.ErrFull) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				keys = append(keys, k)
			}
			if len(keys) != rc.count {
				t.Fatalf("%d blocks of %d bytes fit, want %d", len(keys), rc.n, rc.count)
			}
			checkInvariants(t, a)
			for i, k := range keys {
				_, got, err := a.Get(bg, k, nil)
				if err != nil {
					t.Fatal(err)
				}
				if seed, err := check(got); err != nil || seed != uint64(i) {
					t.Fatalf("block %d: seed %d, %v", i, seed, err)
				}
				if err := a.Delete(bg, k); err != nil {
					t.Fatal(err)
				}
			}
			if st := a.Stats(); st.ReservedBytes != 0 || st.UsedBytes != 0 || st.Blocks != 0 || a.nFreeChunks != a.nChunks {
				t.Fatalf("after freeing everything: %+v, %d of %d chunks free", st, a.nFreeChunks, a.nChunks)
			}
			checkInvariants(t, a)
		})
	}
}

func TestLargeBlocks(t *testing.T) {
	const chunk = 64 * KiB
	a := newArena(t, 32*chunk, WithChunkSize(chunk))
	const n = 600 * KiB // > 8 chunks: a dedicated run of 10 chunks
	if got := a.SlotSize(n); got != 10*chunk {
		t.Fatalf("SlotSize(%d) = %d, want %d", n, got, 10*chunk)
	}
	l := layoutFor(t, n)
	data := make([]byte, n)
	for i := 0; i < 3; i++ {
		fill(data, uint64(i))
		if err := a.Put(bg, testKey("large", i, 0), l, data); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Put(bg, testKey("large", 3, 0), l, data); !errors.Is(err, tiers.ErrFull) {
		t.Fatalf("fourth large block: %v", err)
	}
	if st := a.Stats(); st.ReservedBytes != 30*chunk || st.UsedBytes != 3*n {
		t.Fatalf("stats %+v", st)
	}
	// Small blocks use the two chunks left.
	small := layoutFor(t, 32*KiB)
	for i := 0; i < 4; i++ {
		if err := a.Put(bg, testKey("small", i, 0), small, make([]byte, 32*KiB)); err != nil {
			t.Fatalf("small block %d: %v", i, err)
		}
	}
	checkInvariants(t, a)
	// Freeing the middle run leaves 10 free chunks: not enough for 16 contiguous.
	if err := a.Delete(bg, testKey("large", 1, 0)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.Reserve(layoutFor(t, 16*chunk)); !errors.Is(err, tiers.ErrFull) || errors.Is(err, ErrTooLarge) {
		t.Fatalf("16-chunk block with 10 contiguous free: %v", err)
	}
	for i := 0; i < 3; i++ {
		_, got, err := a.Get(bg, testKey("large", i, 0), nil)
		if i == 1 {
			if !errors.Is(err, tiers.ErrNotFound) {
				t.Fatalf("deleted block: %v", err)
			}
			continue
		}
		if seed, cerr := check(got); err != nil || cerr != nil || seed != uint64(i) {
			t.Fatalf("large block %d: %v %v", i, err, cerr)
		}
		if err := a.Delete(bg, testKey("large", i, 0)); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 4; i++ {
		if err := a.Delete(bg, testKey("small", i, 0)); err != nil {
			t.Fatal(err)
		}
	}
	whole := layoutFor(t, 32*chunk)
	s, view, err := a.Reserve(whole)
	if err != nil || int64(len(view)) != a.Size() || s.Offset != 0 {
		t.Fatalf("whole-arena block after freeing everything: %v", err)
	}
	if err := a.Abort(s); err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, a)
}

// TestFillFreeCycles churns mixed sizes through a small arena and checks that
// nothing leaks: after every cycle the structures agree, and at the end the
// whole arena is one free run again.
func TestFillFreeCycles(t *testing.T) {
	const chunk = 64 * KiB
	a := newArena(t, 64*chunk, WithChunkSize(chunk))
	sizes := []int64{4 * KiB, 6 * KiB, 20 * KiB, 64 * KiB, 72 * KiB, 136 * KiB, 300 * KiB, 520 * KiB, 700 * KiB}
	rng := rand.New(rand.NewPCG(1, 2))
	live := map[tiers.Key]uint64{}
	var pending []tiers.Slot
	next := 0
	cycles := 30
	if testing.Short() || raceEnabled {
		cycles = 10
	}
	for c := 0; c < cycles; c++ {
		full := 0
		for full < 5 {
			n := sizes[rng.IntN(len(sizes))]
			l := layoutFor(t, n)
			if rng.IntN(8) == 0 { // some reservations stay outstanding for a while
				s, view, err := a.Reserve(l)
				if errors.Is(err, tiers.ErrFull) {
					full++
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				fill(view, uint64(next))
				pending = append(pending, s)
				next++
				continue
			}
			k := testKey("cycle", next, 0)
			data := make([]byte, n)
			fill(data, uint64(next))
			if err := a.Put(bg, k, l, data); errors.Is(err, tiers.ErrFull) {
				full++
				continue
			} else if err != nil {
				t.Fatal(err)
			}
			live[k] = uint64(next)
			next++
		}
		checkInvariants(t, a)
		for k, seed := range live {
			if rng.IntN(2) == 0 {
				continue
			}
			_, got, err := a.Get(bg, k, nil)
			if s, cerr := check(got); err != nil || cerr != nil || s != seed {
				t.Fatalf("%v: %v %v", k, err, cerr)
			}
			if err := a.Delete(bg, k); err != nil {
				t.Fatal(err)
			}
			delete(live, k)
		}
		for len(pending) > 0 && rng.IntN(3) != 0 {
			s := pending[len(pending)-1]
			pending = pending[:len(pending)-1]
			if rng.IntN(2) == 0 {
				if err := a.Abort(s); err != nil {
					t.Fatal(err)
				}
				continue
			}
			k := testKey("cycle", next, 1)
			next++
			if err := a.Commit(k, layoutFor(t, s.Len), s); err != nil {
				t.Fatal(err)
			}
			_, got, _ := a.Get(bg, k, nil)
			seed, err := check(got)
			if err != nil {
				t.Fatal(err)
			}
			live[k] = seed
		}
		checkInvariants(t, a)
	}
	for k := range live {
		if err := a.Delete(bg, k); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range pending {
		if err := a.Abort(s); err != nil {
			t.Fatal(err)
		}
	}
	if st := a.Stats(); st.ReservedBytes != 0 || st.UsedBytes != 0 || st.Blocks != 0 || a.nFreeChunks != a.nChunks {
		t.Fatalf("leak after %d cycles: %+v, %d of %d chunks free", cycles, st, a.nFreeChunks, a.nChunks)
	}
	checkInvariants(t, a)
	s, _, err := a.Reserve(layoutFor(t, a.Size()))
	if err != nil {
		t.Fatalf("whole-arena block after the cycles: %v", err)
	}
	_ = a.Abort(s)
}

func TestClose(t *testing.T) {
	arena, err := New(4 * MiB)
	if err != nil {
		t.Fatal(err)
	}
	a := keyedOf(arena)
	k := testKey("close", 1, 0)
	l := layoutFor(t, 8*KiB)
	if err := a.Put(bg, k, l, make([]byte, 8*KiB)); err != nil {
		t.Fatal(err)
	}
	_, slot, _, _ := a.View(k)
	res, _, _ := a.Reserve(l)
	if err := a.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	checks := []struct {
		name string
		err  error
	}{
		{"Put", a.Put(bg, k, l, make([]byte, 8*KiB))},
		{"Get", func() error { _, _, err := a.Get(bg, k, nil); return err }()},
		{"View", func() error { _, _, _, err := a.View(k); return err }()},
		{"Delete", a.Delete(bg, k)},
		{"Reserve", func() error { _, _, err := a.Reserve(l); return err }()},
		{"Commit", a.Commit(k, l, res)},
		{"Abort", a.Abort(res)},
		{"Close", a.Close()},
	}
	for _, c := range checks {
		if !errors.Is(c.err, tiers.ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", c.name, c.err)
		}
	}
	if a.Validate(slot) || a.Base() != nil || a.File() != nil {
		t.Error("Validate, Base or File still usable after Close")
	}
	if st := a.Stats(); st.CapacityBytes != 4*MiB {
		t.Errorf("Stats after Close: %+v", st)
	}
}
