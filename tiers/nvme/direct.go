package nvme

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	badger "github.com/dgraph-io/badger/v4"
)

// Direct reads.
//
// Badger v4 reads the value log only through mmap. For a cold, randomly
// placed frame that means page faults served by the kernel's read-around
// (a window sized by the device's read_ahead_kb, centred on the fault), at
// about a third of what one O_DIRECT pread of the same bytes achieves (see
// BenchmarkRead, order=random). So Get reads the frame itself: it takes the
// value pointer (file id, offset, length) from the Badger item, preads that
// range of the value log file with O_DIRECT into an aligned buffer, checks
// that the entry there is the key and version Badger returned, and decodes
// the frame from it.
//
// Badger does not export the value pointer. Its Item keeps it in the
// unexported fields vptr ([]byte, a native-endian {Fid, Len, Offset uint32})
// and meta (bit 1: value is in the value log); their offsets are looked up
// once by reflection and the path is disabled when they are missing or of
// another type. The value log entry format (meta, userMeta, uvarint key
// length, uvarint value length, uvarint expiry, key+8-byte version, value,
// CRC-32C) and file naming (%06d.vlog) are Badger v4's. Anything unexpected
// (a field missing, a file gone, an entry that is not this key at this
// version) falls back to Badger's own read, so a Badger change costs speed,
// never correctness; TestDirectReads fails if the path stops being taken.
var itemFields = func() (f struct {
	vptr, meta uintptr
	ok         bool
}) {
	t := reflect.TypeFor[badger.Item]()
	v, ok1 := t.FieldByName("vptr")
	m, ok2 := t.FieldByName("meta")
	f.ok = ok1 && ok2 && v.Type == reflect.TypeFor[[]byte]() && m.Type.Kind() == reflect.Uint8
	f.vptr, f.meta = v.Offset, m.Offset
	return f
}()

const (
	badgerBitValuePointer = 1 << 1
	badgerVptrLen         = 12
	badgerMaxHeader       = 22
	directAlign           = 4096
	// maxOpenVlogs bounds the value log files kept open for direct reads.
	maxOpenVlogs = 64
)

// errDirectMiss: the direct path cannot serve this read; use Badger's.
var errDirectMiss = errors.New("nvme: direct read not possible")

// errDirectRetry: the value log file is gone (value-log GC moved the frame
// after the lookup); look the key up again.
var errDirectRetry = errors.New("nvme: value log file gone, retry")

// errTruncated: the value log file ends before the entry Badger points to.
var errTruncated = errors.New("nvme: value log file shorter than the entry")

type valuePointer struct{ fid, len, offset uint32 }

// valuePointerOf returns where item's value lives in the value log.
func valuePointerOf(item *badger.Item) (valuePointer, bool) {
	if !itemFields.ok {
		return valuePointer{}, false
	}
	p := unsafe.Pointer(item)
	if *(*byte)(unsafe.Add(p, itemFields.meta))&badgerBitValuePointer == 0 {
		return valuePointer{}, false
	}
	b := *(*[]byte)(unsafe.Add(p, itemFields.vptr))
	if len(b) != badgerVptrLen {
		return valuePointer{}, false
	}
	return valuePointer{
		fid:    binary.NativeEndian.Uint32(b[0:]),
		len:    binary.NativeEndian.Uint32(b[4:]),
		offset: binary.NativeEndian.Uint32(b[8:]),
	}, true
}

// vlogSizes returns the size of each value log file in dir, by file id
// (Badger v4's %06d.vlog naming), or nil when dir cannot be read.
func vlogSizes(dir string) map[uint32]int64 {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	sizes := make(map[uint32]int64)
	for _, e := range ents {
		var fid uint32
		if n, err := fmt.Sscanf(e.Name(), "%06d.vlog", &fid); err != nil || n != 1 || e.Name() != fmt.Sprintf("%06d.vlog", fid) {
			continue
		}
		if info, err := e.Info(); err == nil {
			sizes[fid] = info.Size()
		}
	}
	return sizes
}

// directReader reads value log entries with direct I/O.
type directReader struct {
	dir   string
	mu    sync.Mutex          // protects files
	files map[uint32]*os.File // open value log files, by id
	bufs  readBufs            // page-aligned read buffers, off the Go heap
	reads atomic.Int64        // reads served
	off   atomic.Bool         // the file system refused O_DIRECT: every read goes through Badger
}

func newDirectReader(dir string) *directReader {
	if !itemFields.ok || !directIOSupported {
		return nil
	}
	return &directReader{dir: dir, files: make(map[uint32]*os.File)}
}

// path returns the name of value log file fid (Badger v4's naming).
func (r *directReader) path(fid uint32) string {
	return filepath.Join(r.dir, fmt.Sprintf("%06d.vlog", fid))
}

func (r *directReader) file(fid uint32) (*os.File, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if f, ok := r.files[fid]; ok {
		return f, nil
	}
	f, err := openDirect(r.path(fid))
	if errors.Is(err, syscall.EINVAL) {
		r.off.Store(true) // e.g. tmpfs
	}
	if err != nil {
		return nil, err
	}
	if len(r.files) >= maxOpenVlogs {
		// Close the oldest file: the lowest id. os.File defers the close
		// until concurrent reads of it return.
		oldest := uint32(math.MaxUint32)
		for id := range r.files {
			oldest = min(oldest, id)
		}
		r.files[oldest].Close()
		delete(r.files, oldest)
	}
	r.files[fid] = f
	return f, nil
}

// read preads the entry vp points to, checks that it holds key at version,
// and calls fn with its value (valid during the call only).
func (r *directReader) read(vp valuePointer, key []byte, version uint64, fn func([]byte) error) error {
	if r.off.Load() {
		return errDirectMiss
	}
	f, err := r.file(vp.fid)
	if errors.Is(err, fs.ErrNotExist) {
		return errDirectRetry
	}
	if err != nil {
		return errDirectMiss
	}
	start := int64(vp.offset) &^ (directAlign - 1)
	end := (int64(vp.offset) + int64(vp.len) + directAlign - 1) &^ (directAlign - 1)
	rb, err := r.bufs.get(int(end - start))
	if err != nil {
		return errDirectMiss
	}
	defer r.bufs.put(rb)
	buf := rb.b[:end-start]
	n, err := f.ReadAt(buf, start)
	need := int(int64(vp.offset) + int64(vp.len) - start)
	if n < need {
		if err == nil || errors.Is(err, io.EOF) {
			return errTruncated
		}
		return errDirectMiss
	}
	entry := buf[int64(vp.offset)-start : need]
	val, ok := entryValue(entry, key, version)
	if !ok {
		return errDirectMiss
	}
	r.reads.Add(1)
	return fn(val)
}

// entryValue checks that entry is a Badger value log entry for key at
// version and returns its value. It never panics on damaged bytes.
func entryValue(entry, key []byte, version uint64) ([]byte, bool) {
	if len(entry) < 2+3 {
		return nil, false
	}
	h := 2 // meta, userMeta
	klen, n := binary.Uvarint(entry[h:min(len(entry), badgerMaxHeader)])
	if n <= 0 {
		return nil, false
	}
	h += n
	vlen, n := binary.Uvarint(entry[h:min(len(entry), badgerMaxHeader)])
	if n <= 0 {
		return nil, false
	}
	h += n
	if _, n = binary.Uvarint(entry[h:min(len(entry), badgerMaxHeader)]); n <= 0 {
		return nil, false
	}
	h += n
	if klen != uint64(len(key))+8 || uint64(h)+klen+vlen+4 != uint64(len(entry)) {
		return nil, false
	}
	k := entry[h : h+int(klen)]
	if !bytes.Equal(k[:len(key)], key) || binary.BigEndian.Uint64(k[len(key):]) != math.MaxUint64-version {
		return nil, false
	}
	return entry[h+int(klen) : h+int(klen)+int(vlen)], true
}

// closeDeleted closes the files value-log GC has deleted: an open
// descriptor would keep their blocks allocated.
func (r *directReader) closeDeleted() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, f := range r.files {
		if _, err := os.Stat(r.path(id)); errors.Is(err, fs.ErrNotExist) {
			f.Close()
			delete(r.files, id)
		}
	}
}

func (r *directReader) close() {
	r.bufs.close()
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, f := range r.files {
		f.Close()
		delete(r.files, id)
	}
}
