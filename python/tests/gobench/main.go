// Command gobench is the Go reference for the Python client's benchmark
// (python/tests/test_bench.py): it reads the same blocks from the same
// daemon in the same run with the Go client, on the shared-memory and the
// inline planes, and prints the throughput of each as JSON.
//
// The blocks must already be stored: key i is namespace -ns, layer -1, hash
// sha256("kvtier-bench-<i>")[:16]. A round reads -blocks blocks, split over
// -workers goroutines, into buffers allocated once; -rounds rounds are
// timed after one untimed warm-up round. The shared-memory plane is also
// read with one Shm.GetBatch of all the blocks per round (shm_batch).
package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/kvtier/kvtier/client"
	pb "github.com/kvtier/kvtier/proto/kvtier/v1"
)

func main() {
	sock := flag.String("socket", "", "daemon Unix socket")
	ns := flag.String("ns", "bench", "namespace")
	blocks := flag.Int("blocks", 64, "blocks per round")
	size := flag.Int("size", 256<<10, "block size in bytes")
	rounds := flag.Int("rounds", 20, "timed rounds")
	workers := flag.Int("workers", 4, "concurrent readers")
	flag.Parse()
	if err := run(*sock, *ns, *blocks, *size, *rounds, *workers); err != nil {
		fmt.Fprintln(os.Stderr, "gobench:", err)
		os.Exit(1)
	}
}

func key(ns string, i int) *pb.Key {
	h := sha256.Sum256([]byte(fmt.Sprintf("kvtier-bench-%d", i)))
	return &pb.Key{Namespace: ns, Hash: h[:16], Layer: -1}
}

type getFn func(ctx context.Context, k *pb.Key, dst []byte) error

// rate reads the blocks rounds times and returns bytes per second.
func rate(ctx context.Context, get getFn, keys []*pb.Key, bufs [][]byte, rounds, workers int) (float64, error) {
	round := func() error {
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		per := (len(keys) + workers - 1) / workers
		for w := 0; w < workers; w++ {
			lo, hi := w*per, min((w+1)*per, len(keys))
			if lo >= hi {
				break
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := lo; i < hi; i++ {
					if err := get(ctx, keys[i], bufs[i]); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		return <-errs
	}
	if err := round(); err != nil {
		return 0, err
	}
	start := time.Now()
	for r := 0; r < rounds; r++ {
		if err := round(); err != nil {
			return 0, err
		}
	}
	return float64(rounds*len(keys)*len(bufs[0])) / time.Since(start).Seconds(), nil
}

func run(sock, ns string, blocks, size, rounds, workers int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, err := client.Dial(sock)
	if err != nil {
		return err
	}
	defer c.Close()
	s, err := c.Attach(ctx, "gobench")
	if err != nil {
		return err
	}
	defer s.Close()
	keys := make([]*pb.Key, blocks)
	bufs := make([][]byte, blocks)
	for i := range keys {
		keys[i], bufs[i] = key(ns, i), make([]byte, size)
	}
	shm, err := rate(ctx, func(ctx context.Context, k *pb.Key, dst []byte) error {
		_, err := s.Get(ctx, k, dst, client.GetOptions{})
		return err
	}, keys, bufs, rounds, workers)
	if err != nil {
		return fmt.Errorf("shm: %w", err)
	}
	batch, err := batchRate(ctx, s, keys, bufs, rounds)
	if err != nil {
		return fmt.Errorf("shm batch: %w", err)
	}
	inline, err := rate(ctx, func(ctx context.Context, k *pb.Key, dst []byte) error {
		_, err := c.Get(ctx, k, dst, client.GetOptions{})
		return err
	}, keys, bufs, rounds, workers)
	if err != nil {
		return fmt.Errorf("inline: %w", err)
	}
	return json.NewEncoder(os.Stdout).Encode(map[string]float64{
		"shm_bytes_per_s": shm, "shm_batch_bytes_per_s": batch, "inline_bytes_per_s": inline,
	})
}

// batchRate reads all the blocks with one GetBatch per round and returns
// bytes per second (one untimed warm-up round first).
func batchRate(ctx context.Context, s *client.Shm, keys []*pb.Key, bufs [][]byte, rounds int) (float64, error) {
	if err := s.GetBatch(ctx, keys, bufs, client.GetOptions{}); err != nil {
		return 0, err
	}
	start := time.Now()
	for r := 0; r < rounds; r++ {
		if err := s.GetBatch(ctx, keys, bufs, client.GetOptions{}); err != nil {
			return 0, err
		}
	}
	return float64(rounds*len(keys)*len(bufs[0])) / time.Since(start).Seconds(), nil
}
