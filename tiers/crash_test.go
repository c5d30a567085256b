package tiers_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kvtier/kvtier/codec"
	"github.com/kvtier/kvtier/tiers"
	"github.com/kvtier/kvtier/tiers/dram"
	"github.com/kvtier/kvtier/tiers/nvme"
)

// crashLayout is a 64 KiB block: one layer, 8 KV heads, 16 tokens, head dim 128, fp16.
var crashLayout = tiers.Layout{DType: codec.FP16, Layers: 1, KVHeads: 8, HeadDim: 128, Tokens: 16}

func crashKey(i int) tiers.Key {
	var b [32]byte
	binary.BigEndian.PutUint64(b[:], uint64(i))
	binary.BigEndian.PutUint64(b[8:], uint64(i)*0x9E3779B97F4A7C15)
	h, _ := tiers.HashFromBytes(b[:])
	return tiers.Key{Namespace: "crash/model", Hash: h, Layer: int16(i % 4)}
}

// crashBytes is block i's content, derived from i so that any mix-up or
// torn write shows.
func crashBytes(i int) []byte { return crashBytesOf(i, int(crashLayout.Size())) }

func crashBytesOf(i, n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(uint64(i), 99))
	for j := 0; j < len(b); j += 8 {
		binary.LittleEndian.PutUint64(b[j:], r.Uint64())
	}
	return b
}

func openCrashStore(t testing.TB, dir string) *tiers.Store {
	t.Helper()
	d, err := dram.New(4 << 20)
	if err != nil {
		t.Fatal(err)
	}
	n, err := nvme.Open(dir, 256<<20)
	if err != nil {
		d.Close()
		t.Fatal(err)
	}
	s, err := tiers.Open(context.Background(), tiers.Config{
		DRAM: d, NVMe: n,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// crashChild is the writer the test kills: it puts blocks from first on,
// every other one durable, and prints "D i" once durable put i returned.
func crashChild(t *testing.T) {
	dir := os.Getenv("KVTIER_CRASH_DIR")
	first, _ := strconv.Atoi(os.Getenv("KVTIER_CRASH_FIRST"))
	s := openCrashStore(t, dir)
	ctx := context.Background()
	deadline := time.Now().Add(60 * time.Second)
	for i := first; time.Now().Before(deadline); i++ {
		durable := i%2 == 0
		if err := s.Put(ctx, crashKey(i), crashLayout, crashBytes(i), tiers.PutOptions{Durable: durable}); err != nil {
			fmt.Printf("E %d %v\n", i, err)
			os.Exit(3)
		}
		if durable {
			fmt.Printf("D %d\n", i)
		}
	}
	os.Exit(0)
}

// TestCrashDurablePuts runs a writer as a subprocess, kills it with SIGKILL
// mid-load, reopens its NVMe folder and checks that every durable put it
// acknowledged is readable bit-exact, and that nothing else read back is
// wrong: a block is either its own bytes or a miss. Three rounds share the
// folder, so recovery of a recovered store is tested too.
func TestCrashDurablePuts(t *testing.T) {
	if os.Getenv("KVTIER_CRASH_CHILD") == "1" {
		crashChild(t)
		return
	}
	if testing.Short() {
		t.Skip("spawns writers; skipped in -short")
	}
	dir := t.TempDir()
	acked := map[int]bool{}
	next := 0
	for round, killAfter := range []int{10, 25, 40} {
		last := runCrashRound(t, dir, next, killAfter, acked)
		s := openCrashStore(t, dir)
		ctx := context.Background()
		found, misses := 0, 0
		for i := 0; i <= last; i++ {
			b, err := s.Get(ctx, crashKey(i), tiers.GetOptions{})
			if errors.Is(err, tiers.ErrNotFound) {
				if acked[i] {
					t.Fatalf("round %d: durable put %d acknowledged before the kill is lost", round, i)
				}
				misses++
				continue
			}
			if err != nil {
				t.Fatalf("round %d: get %d: %v", round, i, err)
			}
			if !bytes.Equal(b.Data, crashBytes(i)) {
				t.Fatalf("round %d: block %d read back with wrong bytes", round, i)
			}
			found++
			s.Release(b.Key)
		}
		if st := s.Stats(); st.Corrupt != 0 {
			t.Logf("round %d: %d corrupt copies were found and dropped", round, st.Corrupt)
		}
		t.Logf("round %d: killed after %d durable acks; %d blocks read back intact, %d non-durable lost", round, killAfter, found, misses)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		next = last + 1
	}
}

// runCrashRound starts a writer at block first, kills it after killAfter
// durable acks, records the acks and returns the highest block it may have
// started writing.
func runCrashRound(t *testing.T, dir string, first, killAfter int, acked map[int]bool) int {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashDurablePuts$", "-test.v=false")
	cmd.Env = append(os.Environ(), "KVTIER_CRASH_CHILD=1", "KVTIER_CRASH_DIR="+dir, "KVTIER_CRASH_FIRST="+strconv.Itoa(first))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	n, last := 0, first
	killed := false
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		i, err := strconv.Atoi(f[1])
		if err != nil {
			continue
		}
		switch f[0] {
		case "D":
			acked[i] = true
			n++
			last = max(last, i+1) // i+1 may have been mid-put when killed
		case "E":
			t.Fatalf("writer failed: %s\n%s", sc.Text(), stderr.String())
		}
		if n == killAfter && !killed {
			cmd.Process.Signal(syscall.SIGKILL)
			killed = true
		}
	}
	cmd.Wait()
	if !killed {
		t.Fatalf("writer exited before %d durable acks (%d); stderr:\n%s", killAfter, n, stderr.String())
	}
	return last + 1
}
