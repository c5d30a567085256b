package daemon_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/kvtier/kvtier/client"
	pb "github.com/kvtier/kvtier/proto/kvtier/v1"
	"github.com/kvtier/kvtier/tiers"
)

// BenchmarkLookup measures a Lookup of an n-block chain, all cached, through
// the daemon (one client, Unix socket, packed hashes) next to the store's
// own lookups (the reference: what the RPC adds): via=store-packed is
// LookupPacked on the same bytes, what the daemon calls; via=store is
// Lookup on a []tiers.Hash. cpu-µs/op is the process's CPU time per call,
// client and daemon together: at many concurrent clients it, not the
// latency of one, bounds the calls a second.
func BenchmarkLookup(b *testing.B) {
	for _, n := range []int{64, 1024, 8192} {
		e := startEnv(b, envOptions{dramCap: int64(n)*4096 + 8<<20})
		ctx := context.Background()
		s, err := e.cl.Attach(ctx, "load")
		if err != nil {
			b.Fatal(err)
		}
		l := &pb.Layout{Dtype: pb.Dtype_DTYPE_FP8, Tokens: 16, KvHeads: 1, HeadDim: 8}
		packed := make([]byte, 0, 16*n)
		hs := make([]tiers.Hash, n)
		for i := range n {
			h := hashOf(i)
			packed = append(packed, h...)
			hs[i], _ = tiers.HashFromBytes(h)
			if err := s.Put(ctx, &pb.Key{Namespace: "b", Hash: h}, l, make([]byte, 256), client.PutOptions{}); err != nil {
				b.Fatal(err)
			}
		}
		s.Close()
		store := e.srv.Store()
		levels := make([]tiers.Level, n)
		req := &pb.LookupRequest{Namespace: "b", PackedHashes: packed, HashSize: 16}
		resp := new(pb.LookupResponse) // reused, as a caller looking up in a loop would
		for _, v := range []struct {
			via    string
			lookup func() (int, error)
		}{
			{"rpc", func() (int, error) {
				err := e.cl.LookupInto(ctx, req, resp)
				return int(resp.GetCachedBlocks()), err
			}},
			{"store-packed", func() (int, error) { return store.LookupPacked(ctx, "b", 0, packed, 16, levels) }},
			{"store", func() (int, error) { return store.Lookup(ctx, "b", 0, hs, levels) }},
		} {
			b.Run(fmt.Sprintf("blocks=%d/via=%s", n, v.via), func(b *testing.B) {
				b.SetBytes(int64(len(packed)))
				b.ReportAllocs()
				cpu := processCPU()
				for b.Loop() {
					if got, err := v.lookup(); err != nil || got != n {
						b.Fatal(got, err)
					}
				}
				if cpu > 0 {
					b.ReportMetric(float64((processCPU()-cpu).Nanoseconds())/1e3/float64(b.N), "cpu-µs/op")
				}
			})
		}
		e.stop()
	}
}

// BenchmarkGet measures one client's Gets of 1 MiB blocks on each data
// plane, in process (the load benchmarks in benchmarks/load run the daemon
// as its own process, with Redis as the reference).
func BenchmarkGet(b *testing.B) {
	e := startEnv(b, envOptions{dramCap: 64 << 20})
	ctx := context.Background()
	const size = 1 << 20
	k := keyOf("get", 1)
	if err := e.cl.Put(ctx, k, mibLayout(), blockData(k, size), client.PutOptions{}); err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, size)
	b.Run("size=1MiB/plane=inline", func(b *testing.B) {
		b.SetBytes(size)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := e.cl.Get(ctx, k, buf, client.GetOptions{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("size=1MiB/plane=shm", func(b *testing.B) {
		s, err := e.cl.Attach(ctx, "bench")
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		b.SetBytes(size)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := s.Get(ctx, k, buf, client.GetOptions{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("size=1MiB/ref=memcpy", func(b *testing.B) {
		src := blockData(k, size)
		b.SetBytes(size)
		for b.Loop() {
			copy(buf, src)
		}
	})
}

// BenchmarkPut measures one client's Puts of 1 MiB blocks on each data
// plane, in process, with memcpy as the reference.
func BenchmarkPut(b *testing.B) {
	e := startEnv(b, envOptions{dramCap: 64 << 20})
	ctx := context.Background()
	const size = 1 << 20
	data := blockData(keyOf("put", 0), size)
	// Distinct keys cycle through 32 MiB, so DRAM evicts and puts do the
	// full work (a put of a cached block only refreshes it).
	key := func(i int) *pb.Key { return keyOf("put", i) }
	b.Run("size=1MiB/plane=inline", func(b *testing.B) {
		b.SetBytes(size)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if err := e.cl.Put(ctx, key(i), mibLayout(), data, client.PutOptions{}); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("size=1MiB/plane=shm", func(b *testing.B) {
		s, err := e.cl.Attach(ctx, "bench")
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		b.SetBytes(size)
		b.ReportAllocs()
		i := 1 << 20
		for b.Loop() {
			if err := s.Put(ctx, key(i), mibLayout(), data, client.PutOptions{}); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("size=1MiB/ref=memcpy", func(b *testing.B) {
		dst := make([]byte, size)
		b.SetBytes(size)
		for b.Loop() {
			copy(dst, data)
		}
	})
}
