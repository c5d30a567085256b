package daemon_test

import (
	"context"
	"testing"

	"github.com/kvtier/kvtier/client"
	pb "github.com/kvtier/kvtier/proto/kvtier/v1"
)

// BenchmarkShmGetBatch measures a decode step's fetch as the reference
// engine makes it (48 blocks of 8 KiB with one Shm.GetBatch, in process),
// next to a plain copy of the same bytes.
func BenchmarkShmGetBatch(b *testing.B) {
	e := startEnv(b, envOptions{})
	ctx := context.Background()
	const n = 48
	keys := make([]*pb.Key, n)
	src := make([][]byte, n)
	dst := make([][]byte, n)
	for i := range keys {
		keys[i] = keyOf("bench", i)
		src[i] = blockData(keys[i], smallSize)
		dst[i] = make([]byte, smallSize)
	}
	if err := e.cl.PutBatch(ctx, keys, smallLayout(), src, nil); err != nil {
		b.Fatal(err)
	}
	s, err := e.cl.Attach(ctx, "bench")
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	b.Run("blocks=48x8KiB/GetBatch", func(b *testing.B) {
		b.SetBytes(n * smallSize)
		b.ReportAllocs()
		for b.Loop() {
			if err := s.GetBatch(ctx, keys, dst, client.GetOptions{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("blocks=48x8KiB/ref=memcpy", func(b *testing.B) {
		b.SetBytes(n * smallSize)
		for b.Loop() {
			for i := range src {
				copy(dst[i], src[i])
			}
		}
	})
}
