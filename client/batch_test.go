package client_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kvtier/kvtier/client"
	"github.com/kvtier/kvtier/daemon"
	pb "github.com/kvtier/kvtier/proto/kvtier/v1"
	"github.com/kvtier/kvtier/tiers"
	"github.com/kvtier/kvtier/tiers/dram"
)

// startDaemon runs an in-process daemon with a shared DRAM arena on a
// Unix socket and returns a client dialled to it.
func startDaemon(t *testing.T) *client.Client {
	t.Helper()
	dir, err := os.MkdirTemp("", "kvtb")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	arena, err := dram.New(16<<20, dram.WithChunkSize(64<<10), dram.WithHugePages(false))
	if err != nil {
		t.Fatal(err)
	}
	store, err := tiers.Open(context.Background(), tiers.Config{DRAM: arena, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := daemon.New(daemon.Config{Socket: filepath.Join(dir, "d.sock"), Logger: log}, store, daemon.WithArena(arena))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	select {
	case <-srv.Ready():
	case err := <-done:
		t.Fatalf("daemon: %v", err)
	}
	c, err := client.Dial(client.UnixTarget(filepath.Join(dir, "d.sock")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("daemon did not stop")
		}
	})
	return c
}

var batchLayout = &pb.Layout{Dtype: pb.Dtype_DTYPE_FP16, Order: pb.KVOrder_KV_ORDER_SEPARATE, Layers: 1, KvHeads: 2, HeadDim: 32, Tokens: 16}

func batchKeys(n int) ([]*pb.Key, [][]byte) {
	keys := make([]*pb.Key, n)
	data := make([][]byte, n)
	for i := range keys {
		h := make([]byte, 16)
		h[0], h[1] = byte(i), byte(i>>8)
		keys[i] = &pb.Key{Namespace: "batch", Hash: h, Layer: int32(i % 3)}
		data[i] = bytes.Repeat([]byte{byte(i), byte(i * 7)}, 2048)
	}
	return keys, data
}

// getBatcher is GetBatch on either plane.
type getBatcher interface {
	GetBatch(ctx context.Context, keys []*pb.Key, dst [][]byte, opts client.GetOptions) error
	PutBatch(ctx context.Context, keys []*pb.Key, l *pb.Layout, data, parents [][]byte) error
}

func TestBatch(t *testing.T) {
	c := startDaemon(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	shm, err := c.Attach(ctx, "batch-test")
	if err != nil {
		t.Fatal(err)
	}
	defer shm.Close()
	planes := []struct {
		name string
		b    getBatcher
	}{{"inline", c}, {"shm", shm}}
	for _, put := range planes {
		for _, get := range planes {
			t.Run(put.name+"-put/"+get.name+"-get", func(t *testing.T) {
				keys, data := batchKeys(40)
				for _, k := range keys {
					k.Namespace = "b-" + put.name + "-" + get.name
				}
				if err := put.b.PutBatch(ctx, keys, batchLayout, data, nil); err != nil {
					t.Fatal(err)
				}
				dst := make([][]byte, len(keys))
				for round := range 3 { // buffers reused after the first round
					if err := get.b.GetBatch(ctx, keys, dst, client.GetOptions{}); err != nil {
						t.Fatalf("round %d: %v", round, err)
					}
					for i := range keys {
						if !bytes.Equal(dst[i], data[i]) {
							t.Fatalf("round %d block %d: wrong bytes", round, i)
						}
					}
				}
				// One missing block fails alone.
				missing := &pb.Key{Namespace: keys[0].Namespace, Hash: bytes.Repeat([]byte{0xee}, 16)}
				mixed := []*pb.Key{keys[0], missing, keys[1]}
				dst = make([][]byte, 3)
				err := get.b.GetBatch(ctx, mixed, dst, client.GetOptions{})
				var be *client.BatchError
				if !errors.As(err, &be) || be.Errs[0] != nil || be.Errs[2] != nil || status.Code(be.Errs[1]) != codes.NotFound {
					t.Fatalf("mixed batch: %v", err)
				}
				if !bytes.Equal(dst[0], data[0]) || !bytes.Equal(dst[2], data[1]) {
					t.Fatal("the found blocks of a mixed batch are wrong")
				}
				if err := get.b.GetBatch(ctx, keys, dst, client.GetOptions{}); status.Code(err) != codes.InvalidArgument {
					t.Fatalf("mismatched buffers: %v", err)
				}
			})
		}
	}
}

func TestGetBatchCancelled(t *testing.T) {
	c := startDaemon(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	shm, err := c.Attach(ctx, "batch-cancel")
	if err != nil {
		t.Fatal(err)
	}
	defer shm.Close()
	keys, data := batchKeys(8)
	if err := shm.PutBatch(ctx, keys, batchLayout, data, nil); err != nil {
		t.Fatal(err)
	}
	done, stop := context.WithCancel(ctx)
	stop()
	for _, b := range []getBatcher{c, shm} {
		if err := b.GetBatch(done, keys, make([][]byte, len(keys)), client.GetOptions{}); !isCanceled(err) {
			t.Fatalf("cancelled batch: %v", err)
		}
	}
}

func isCanceled(err error) bool {
	var be *client.BatchError
	if errors.As(err, &be) {
		for _, e := range be.Errs {
			if status.Code(e) != codes.Canceled {
				return false
			}
		}
		return true
	}
	return status.Code(err) == codes.Canceled
}
