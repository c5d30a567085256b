package dram

import (
	"fmt"
	"math/bits"

	"github.com/kvtier/kvtier/tiers"
)

// Limits and defaults for the options.
const (
	DefaultChunkSize = 2 << 20 // one x86 huge page
	MinChunkSize     = 64 << 10
	MaxChunkSize     = 1 << 30
	DefaultName      = "dram"
)

// Option configures New.
type Option func(*options)

type options struct {
	chunkSize int64
	name      string
	hugePages bool
	prefault  bool
}

func defaultOptions() options {
	return options{chunkSize: DefaultChunkSize, name: DefaultName, hugePages: true}
}

// WithChunkSize sets the granule in which the arena is handed to size
// classes: a power of two from MinChunkSize to MaxChunkSize. Default
// DefaultChunkSize. The arena's capacity is rounded down to a multiple of it.
func WithChunkSize(n int64) Option { return func(o *options) { o.chunkSize = n } }

// WithName names the tier in Stats and error messages, and names the memfd
// (visible in /proc/PID/fd and /proc/PID/maps). Default DefaultName.
func WithName(name string) Option { return func(o *options) { o.name = name } }

// WithHugePages asks the kernel to back the arena with transparent huge
// pages (madvise MADV_HUGEPAGE). Best effort: it is silently ignored where
// the kernel does not allow huge pages for shared memory
// (/sys/kernel/mm/transparent_hugepage/shmem_enabled). Default on.
func WithHugePages(on bool) Option { return func(o *options) { o.hugePages = on } }

// WithPrefault allocates every page of the arena and maps it writable in
// New (fallocate + MADV_POPULATE_WRITE on Linux), so New fails fast when the
// memory is not there and the first puts do not pay page faults. Without it
// pages are allocated on first touch. Default off.
func WithPrefault(on bool) Option { return func(o *options) { o.prefault = on } }

func (o *options) validate() error {
	if o.chunkSize < MinChunkSize || o.chunkSize > MaxChunkSize || bits.OnesCount64(uint64(o.chunkSize)) != 1 {
		return fmt.Errorf("%w: dram: chunk size %d is not a power of two in %d..%d",
			tiers.ErrInvalid, o.chunkSize, MinChunkSize, MaxChunkSize)
	}
	if o.name == "" || len(o.name) > 200 {
		return fmt.Errorf("%w: dram: name must be 1..200 bytes", tiers.ErrInvalid)
	}
	return nil
}
