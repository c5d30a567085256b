package nvme

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/kvtier/kvtier/codec"
	"github.com/kvtier/kvtier/tiers"
	"github.com/kvtier/kvtier/tiers/nvme/internal/slab"
)

// Benchmarks: the NVMe tier (Badger) against the disk it sits on, in one run.
//
//	raw-odirect    O_DIRECT pwrite/pread of n-byte chunks, one at a time:
//	               the physical reference.
//	slab-odirect   the alternative store: frames (codec, CRC) in fixed slots
//	               of one O_DIRECT file (internal/slab).
//	nvme           the tier. Writes end with Sync inside the timed region.
//	nvme-cold      the tier's reads (direct reads, the default) after the
//	               data set was evicted from the page cache (see dropCache);
//	               every pass over the set starts cold. resident-MB reports
//	               what the eviction left cached.
//	nvme-cold-mmap the same with WithDirectReads(false): Badger's own read,
//	               through its memory mapping of the value log.
//	nvme-warm-mmap WithDirectReads(false) with the data set in the page
//	               cache: a memory figure, not a disk one.
//
// Reads visit a 256 MiB data set (at least 16 blocks) in write order
// (order=seq) or in a fixed shuffled order (order=random), the same for
// every store. Writes append.
//
// Directory: $KVTIER_BENCH_DIR if set (put it on the NVMe to measure),
// otherwise the test's temporary directory.
//
//	go test -run '^$' -bench . -benchtime 2s ./tiers/nvme/
var benchSizes = []int{64 << 10, 256 << 10, 1 << 20, 4 << 20}

// readSetBytes is the data set each read benchmark cycles through.
const readSetBytes = 256 << 20

func setCount(n int) int { return max(16, readSetBytes/n) }

// benchLayout is an fp16 block of n bytes (8 KV heads × 128 dims: 4 KiB a token).
func benchLayout(n int) codec.Layout {
	return codec.Layout{DType: codec.FP16, KVHeads: 8, HeadDim: 128, Tokens: uint32(n / 4096)}
}

func benchDir(b *testing.B) string {
	root := os.Getenv("KVTIER_BENCH_DIR")
	if root == "" {
		return b.TempDir()
	}
	dir, err := os.MkdirTemp(root, "nvme-bench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func benchTier(b *testing.B, dir string, opts ...Option) *Tier {
	opts = append([]Option{
		WithGCInterval(0), WithGCAfterBytes(0),
		WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil)), slog.LevelWarn),
	}, opts...)
	tr, err := Open(dir, 1<<40, opts...)
	if err != nil {
		b.Fatal(err)
	}
	return tr
}

func alignedBuf(b *testing.B, n int) []byte {
	buf, free, err := slab.AlignedBuffer(n)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { free() })
	return buf
}

func openRawDirect(b *testing.B, path string) *os.File {
	f, err := openDirectFile(path)
	if err != nil {
		b.Skipf("O_DIRECT unavailable: %v", err)
	}
	b.Cleanup(func() { f.Close() })
	return f
}

func openSlab(b *testing.B, path string, slotSize int64, slots int) *slab.File {
	s, err := slab.Open(path, slotSize, slots)
	if errors.Is(err, slab.ErrUnsupported) {
		b.Skip(err)
	}
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

func roundUp(n, a int) int { return (n + a - 1) &^ (a - 1) }

func BenchmarkWrite(b *testing.B) {
	ctx := context.Background()
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("size=%d", n), func(b *testing.B) {
			l := benchLayout(n)
			data := block(l, 1)
			b.Run("raw-odirect", func(b *testing.B) {
				f := openRawDirect(b, filepath.Join(benchDir(b), "raw"))
				buf := alignedBuf(b, n)
				copy(buf, data)
				b.SetBytes(int64(n))
				b.ReportAllocs()
				b.ResetTimer()
				for i := range b.N {
					if _, err := f.WriteAt(buf[:n], int64(i)*int64(n)); err != nil {
						b.Fatal(err)
					}
				}
				if err := f.Sync(); err != nil {
					b.Fatal(err)
				}
			})
			b.Run("slab-odirect", func(b *testing.B) {
				slot := roundUp(codec.MaxFrameLen(l, codec.Raw), slab.Align)
				s := openSlab(b, filepath.Join(benchDir(b), "slab"), int64(slot), b.N)
				buf := alignedBuf(b, slot)
				b.SetBytes(int64(n))
				b.ReportAllocs()
				b.ResetTimer()
				for i := range b.N {
					frame, err := codec.Encode(buf[:0], l, data, codec.Options{Mode: codec.Raw})
					if err != nil {
						b.Fatal(err)
					}
					if err := s.WriteSlot(i, buf[:roundUp(len(frame), slab.Align)]); err != nil {
						b.Fatal(err)
					}
				}
				if err := s.Sync(); err != nil {
					b.Fatal(err)
				}
			})
			tr := benchTier(b, benchDir(b))
			defer tr.Close()
			var next int
			b.Run("nvme", func(b *testing.B) {
				b.SetBytes(int64(n))
				b.ReportAllocs()
				b.ResetTimer()
				for range b.N {
					if err := tr.Put(ctx, testKey("bench", next), l, data); err != nil {
						b.Fatal(err)
					}
					next++
				}
				if err := tr.Sync(); err != nil {
					b.Fatal(err)
				}
			})
		})
	}
}

func BenchmarkRead(b *testing.B) {
	ctx := context.Background()
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("size=%d", n), func(b *testing.B) {
			l := benchLayout(n)
			data := block(l, 2)
			k := setCount(n)

			// The data set, k blocks, in every store.
			rawDir := benchDir(b)
			raw := openRawDirect(b, filepath.Join(rawDir, "raw"))
			rawBuf := alignedBuf(b, n)
			copy(rawBuf, data)
			for i := range k {
				if _, err := raw.WriteAt(rawBuf[:n], int64(i)*int64(n)); err != nil {
					b.Fatal(err)
				}
			}
			slot := roundUp(codec.MaxFrameLen(l, codec.Raw), slab.Align)
			sl := openSlab(b, filepath.Join(rawDir, "slab"), int64(slot), k)
			slabBuf := alignedBuf(b, slot)
			frame, err := codec.Encode(slabBuf[:0], l, data, codec.Options{Mode: codec.Raw})
			if err != nil {
				b.Fatal(err)
			}
			for i := range k {
				if err := sl.WriteSlot(i, slabBuf[:roundUp(len(frame), slab.Align)]); err != nil {
					b.Fatal(err)
				}
			}
			if err := errors.Join(raw.Sync(), sl.Sync()); err != nil {
				b.Fatal(err)
			}
			type tierSet struct {
				dir string
				tr  *Tier
			}
			var ts [2]tierSet // direct reads on, off
			for j, direct := range []bool{true, false} {
				ts[j].dir = benchDir(b)
				ts[j].tr = benchTier(b, ts[j].dir, WithDirectReads(direct))
				defer ts[j].tr.Close()
				for i := range k {
					if err := ts[j].tr.Put(ctx, testKey("bench", i), l, data); err != nil {
						b.Fatal(err)
					}
				}
				if err := ts[j].tr.Sync(); err != nil {
					b.Fatal(err)
				}
			}
			dst := make([]byte, 0, n)

			for _, order := range []string{"seq", "random"} {
				perm := make([]int, k)
				for i := range perm {
					perm[i] = i
				}
				if order == "random" {
					r := rand.New(rand.NewPCG(uint64(n), 7))
					r.Shuffle(k, func(i, j int) { perm[i], perm[j] = perm[j], perm[i] })
				}
				b.Run("order="+order, func(b *testing.B) {
					b.Run("raw-odirect", func(b *testing.B) {
						b.SetBytes(int64(n))
						b.ReportAllocs()
						for i := range b.N {
							if _, err := raw.ReadAt(rawBuf[:n], int64(perm[i%k])*int64(n)); err != nil {
								b.Fatal(err)
							}
						}
					})
					b.Run("slab-odirect", func(b *testing.B) {
						b.SetBytes(int64(n))
						b.ReportAllocs()
						for i := range b.N {
							if err := sl.ReadSlot(perm[i%k], slabBuf); err != nil {
								b.Fatal(err)
							}
							h, err := codec.ParseHeader(slabBuf)
							if err != nil {
								b.Fatal(err)
							}
							if _, dst, err = codec.Decode(dst[:0], slabBuf[:h.FrameLen()]); err != nil {
								b.Fatal(err)
							}
						}
					})
					for _, v := range []struct {
						name string
						set  int
						cold bool
					}{
						{"nvme-cold", 0, true},
						{"nvme-cold-mmap", 1, true},
						{"nvme-warm-mmap", 1, false},
					} {
						tr, dir := ts[v.set].tr, ts[v.set].dir
						get := func(b *testing.B, i int) {
							var err error
							if _, dst, err = tr.Get(ctx, testKey("bench", i), dst[:0]); err != nil {
								b.Fatal(err)
							}
						}
						b.Run(v.name, func(b *testing.B) {
							var resident int64
							prepare := func() {
								if v.cold {
									resident = max(resident, dropCache(dir))
									return
								}
								for i := range k {
									get(b, i)
								}
							}
							prepare()
							b.SetBytes(int64(n))
							b.ReportAllocs()
							b.ResetTimer()
							for i := range b.N {
								if i > 0 && i%k == 0 && v.cold {
									b.StopTimer()
									prepare()
									b.StartTimer()
								}
								get(b, perm[i%k])
							}
							b.StopTimer()
							if v.cold {
								b.ReportMetric(float64(resident)/(1<<20), "resident-MB")
							}
						})
					}
				})
			}
		})
	}
}

// BenchmarkTierOverhead measures Put and Get of small blocks where the disk
// does not dominate: index, codec, Badger transaction costs.
func BenchmarkTierOverhead(b *testing.B) {
	ctx := context.Background()
	l := benchLayout(64 << 10)
	data := block(l, 3)
	tr := benchTier(b, benchDir(b), WithDirectReads(false))
	defer tr.Close()
	keys := make([]tiers.Key, 1024)
	for i := range keys {
		keys[i] = testKey("bench", i)
		if err := tr.Put(ctx, keys[i], l, data); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("get-warm", func(b *testing.B) {
		dst := make([]byte, 0, len(data))
		b.SetBytes(int64(len(data)))
		b.ReportAllocs()
		for i := range b.N {
			var err error
			if _, dst, err = tr.Get(ctx, keys[i%len(keys)], dst[:0]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("memcpy", func(b *testing.B) { // the reference for get-warm
		dst := make([]byte, len(data))
		b.SetBytes(int64(len(data)))
		b.ReportAllocs()
		for range b.N {
			copy(dst, data)
		}
	})
}

// BenchmarkReadPaired measures the tier's cold reads against the disk
// under them, interleaved: each iteration reads one block through the tier
// and, as the reference, n bytes with one O_DIRECT pread at the same place
// of the same value log file (the entry's offset rounded down to 4 KiB), in
// alternating order, and times each read on its own. Both therefore see the
// same disk, the same file extents and, on a virtual disk, the same host
// cache state at the same moment: their ratio is what the tier itself costs
// (key lookup in Badger, the entry's unaligned ends, CRC check, copy out).
// Both read with O_DIRECT (the tier's direct reads, its default, which
// TestDirectReads holds it to), so no byte read comes from the page cache;
// Badger's keys (memtable and tables) stay in memory, as in a running
// daemon. Blocks are visited in a shuffled order. ns/op is the time of both
// reads.
//
// Reported: each side's throughput over all its reads (raw-MB/s,
// nvme-MB/s) and their ratio (nvme/raw); and, robust to the bursts a shared
// disk has, each side's median read time (raw-p50-µs, nvme-p50-µs) and the
// ratio of those (nvme/raw-p50), the figure for the ≥ 0.7× target.
func BenchmarkReadPaired(b *testing.B) {
	ctx := context.Background()
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("size=%d", n), func(b *testing.B) {
			l := benchLayout(n)
			data := block(l, 4)
			k := setCount(n)
			tr := benchTier(b, benchDir(b), WithDirectReads(true))
			defer tr.Close()
			for i := range k {
				if err := tr.Put(ctx, testKey("bench", i), l, data); err != nil {
					b.Fatal(err)
				}
			}
			if err := tr.Sync(); err != nil {
				b.Fatal(err)
			}
			where := vlogPlaces(b, tr, k)
			rawBuf := alignedBuf(b, n)
			perm := rand.New(rand.NewPCG(uint64(n), 9)).Perm(k)
			dst := make([]byte, 0, n)
			tRaw := make([]time.Duration, 0, b.N)
			tTier := make([]time.Duration, 0, b.N)
			readRaw := func(i int) {
				t0 := time.Now()
				if _, err := where[i].f.ReadAt(rawBuf, where[i].off); err != nil {
					b.Fatal(err)
				}
				tRaw = append(tRaw, time.Since(t0))
			}
			readTier := func(i int) {
				t0 := time.Now()
				var err error
				if _, dst, err = tr.Get(ctx, testKey("bench", i), dst[:0]); err != nil {
					b.Fatal(err)
				}
				tTier = append(tTier, time.Since(t0))
			}
			b.ResetTimer()
			for i := range b.N {
				blk := perm[i%k]
				if i%2 == 0 {
					readRaw(blk)
					readTier(blk)
				} else {
					readTier(blk)
					readRaw(blk)
				}
			}
			b.StopTimer()
			sumRaw, sumTier := sumDur(tRaw), sumDur(tTier)
			mbps := func(d time.Duration) float64 { return float64(n) * float64(b.N) / d.Seconds() / 1e6 }
			b.ReportMetric(mbps(sumRaw), "raw-MB/s")
			b.ReportMetric(mbps(sumTier), "nvme-MB/s")
			b.ReportMetric(sumRaw.Seconds()/sumTier.Seconds(), "nvme/raw")
			p50Raw, p50Tier := median(tRaw), median(tTier)
			b.ReportMetric(float64(p50Raw.Nanoseconds())/1e3, "raw-p50-µs")
			b.ReportMetric(float64(p50Tier.Nanoseconds())/1e3, "nvme-p50-µs")
			b.ReportMetric(p50Raw.Seconds()/p50Tier.Seconds(), "nvme/raw-p50")
		})
	}
}

// vlogPlace is where a block's value log entry starts, rounded down to the
// direct I/O alignment, in a file opened with O_DIRECT.
type vlogPlace struct {
	f   *os.File
	off int64
}

// vlogPlaces looks up where blocks 0..k-1 of tr ("bench" keys) live in the
// value log. It skips the benchmark where direct reads are unavailable.
func vlogPlaces(b *testing.B, tr *Tier, k int) []vlogPlace {
	bs, ok := tr.st.(*badgerStore)
	if !ok || bs.direct == nil {
		b.Skip("direct reads unavailable here")
	}
	where := make([]vlogPlace, k)
	err := bs.db.View(func(txn *badger.Txn) error {
		var kb [keyBufLen]byte
		for i := range where {
			item, err := txn.Get(dataKey(testKey("bench", i).AppendBinary(kb[:0])))
			if err != nil {
				return err
			}
			vp, ok := valuePointerOf(item)
			if !ok {
				return fmt.Errorf("block %d has no value pointer", i)
			}
			f, err := bs.direct.file(vp.fid)
			if err != nil {
				return err
			}
			where[i] = vlogPlace{f: f, off: int64(vp.offset) &^ (directAlign - 1)}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return where
}

func sumDur(ds []time.Duration) (t time.Duration) {
	for _, d := range ds {
		t += d
	}
	return t
}

// median sorts ds and returns its middle element.
func median(ds []time.Duration) time.Duration {
	slices.Sort(ds)
	return ds[len(ds)/2]
}
