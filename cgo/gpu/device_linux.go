//go:build cgo

package gpu

/*
#cgo LDFLAGS: -ldl
#include <stdlib.h>
#include "kvgpu.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
	"unsafe"
)

// Open loads the GPU driver and binds one device. It tries the CUDA driver
// API, then the HIP runtime, unless WithLibraryPath or WithVendor narrow the
// search. When no library loads or no device is present, the error wraps
// ErrUnavailable.
func Open(opts ...Option) (Device, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if o.ordinal < 0 {
		return nil, fmt.Errorf("%w: %w: device ordinal %d", ErrUnavailable, ErrInvalid, o.ordinal)
	}
	type candidate struct {
		path   string
		vendor Vendor
	}
	var cands []candidate
	switch {
	case o.path != "":
		cands = append(cands, candidate{o.path, o.vendor})
	default:
		if o.vendor == VendorAny || o.vendor == VendorCUDA {
			for _, p := range cudaLibraries {
				cands = append(cands, candidate{p, VendorCUDA})
			}
		}
		if o.vendor == VendorAny || o.vendor == VendorHIP {
			for _, p := range hipCandidates(os.Getenv) {
				cands = append(cands, candidate{p, VendorHIP})
			}
		}
	}
	var (
		tried    []string
		firstErr error // the first dlopen failure, for its detail
		found    error // the first failure of a library that did load
	)
	for _, c := range cands {
		d, err := openOne(c.path, c.vendor, o.ordinal)
		if err == nil {
			return d, nil
		}
		if errors.Is(err, errNoLibrary) {
			tried = append(tried, c.path)
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		if found == nil {
			found = err
		}
	}
	if found != nil {
		return nil, found
	}
	return nil, fmt.Errorf("%w: no GPU driver library (tried %s; %v)", ErrUnavailable, strings.Join(tried, ", "), firstErr)
}

var errNoLibrary = errors.New("not loadable")

func openOne(path string, vendor Vendor, ordinal int) (*device, error) {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var (
		cd  *C.kvg_dev
		msg [512]C.char
	)
	rc := C.kvg_open(cpath, C.int(vendor), C.int(ordinal), &cd, &msg[0], C.size_t(len(msg)))
	detail := C.GoString(&msg[0])
	switch rc {
	case 0:
	case C.KVG_ENOLIB:
		return nil, fmt.Errorf("%w: %s", errNoLibrary, detail)
	case C.KVG_ENOSYM:
		return nil, fmt.Errorf("%w: %w: %s", ErrUnavailable, ErrMissingSymbol, detail)
	case C.KVG_ENODEV:
		return nil, fmt.Errorf("%w: %s: %s", ErrUnavailable, path, detail)
	case C.KVG_EINVAL:
		return nil, fmt.Errorf("%w: %w: %s", ErrUnavailable, ErrInvalid, detail)
	case C.KVG_ENOMEM:
		return nil, fmt.Errorf("%w: %w: %s", ErrUnavailable, ErrOutOfMemory, detail)
	default:
		// A driver status from init or device lookup; the library stays
		// loaded, so its error names are not reachable without a device.
		de := &DriverError{Vendor: vendor, Op: "open " + detail, Code: int(rc)}
		return nil, fmt.Errorf("%w: %s: %w", ErrUnavailable, path, de)
	}
	d := &device{c: cd}
	d.info.Vendor = Vendor(C.kvg_vendor(cd))
	d.info.Ordinal = ordinal
	d.info.Library = path
	var file [4096]C.char
	if C.kvg_lib_path(cd, &file[0], C.size_t(len(file))); file[0] != 0 {
		d.info.Library = C.GoString(&file[0])
	}
	var (
		name   [256]C.char
		busID  [64]C.char
		total  C.size_t
		driver C.int
	)
	if rc := C.kvg_info(cd, &name[0], C.int(len(name)), &busID[0], C.int(len(busID)), &total, &driver); rc != 0 {
		err := d.err("info", rc)
		C.kvg_close(cd)
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	d.info.Name = C.GoString(&name[0])
	d.info.PCIBusID = C.GoString(&busID[0])
	d.info.TotalMem = int64(total)
	d.info.DriverVersion = int(driver)
	return d, nil
}

// device implements Device over the C shim.
type device struct {
	info Info // immutable after Open

	// mu guards c and closed: calls hold it shared for the length of the
	// driver call, Close holds it exclusively, so the context is never
	// released under an in-flight call.
	mu     sync.RWMutex
	c      *C.kvg_dev
	closed bool
}

var _ Device = (*device)(nil)

// err converts a shim status into an error; nil for 0.
func (d *device) err(op string, rc C.int) error {
	switch rc {
	case 0:
		return nil
	case C.KVG_ENOTSUP:
		return fmt.Errorf("%w: %s", ErrNotSupported, op)
	case C.KVG_EINVAL:
		return fmt.Errorf("%w: %s", ErrInvalid, op)
	case C.KVG_ENOMEM:
		return fmt.Errorf("%w: %s: host allocation", ErrOutOfMemory, op)
	}
	e := &DriverError{Vendor: d.info.Vendor, Op: op, Code: int(rc)}
	if s := C.kvg_error_name(d.c, rc); s != nil {
		e.Name = C.GoString(s)
	}
	return e
}

// enter takes the shared lock; the caller must call d.mu.RUnlock when
// enter returns nil.
func (d *device) enter() error {
	d.mu.RLock()
	if d.closed {
		d.mu.RUnlock()
		return ErrClosed
	}
	return nil
}

func (d *device) Info() Info { return d.info }

func (d *device) MemInfo() (free, total int64, err error) {
	if err := d.enter(); err != nil {
		return 0, 0, err
	}
	defer d.mu.RUnlock()
	var f, t C.size_t
	if rc := C.kvg_mem_info(d.c, &f, &t); rc != 0 {
		return 0, 0, d.err("mem info", rc)
	}
	return int64(f), int64(t), nil
}

func (d *device) Alloc(n int64) (DevPtr, error) {
	if n <= 0 {
		return 0, fmt.Errorf("%w: alloc of %d bytes", ErrInvalid, n)
	}
	if err := d.enter(); err != nil {
		return 0, err
	}
	defer d.mu.RUnlock()
	var p C.uint64_t
	if rc := C.kvg_alloc(d.c, &p, C.size_t(n)); rc != 0 {
		return 0, fmt.Errorf("%w (%d bytes)", d.err("alloc", rc), n)
	}
	return DevPtr(p), nil
}

func (d *device) Free(p DevPtr) error {
	if p == 0 {
		return nil
	}
	if err := d.enter(); err != nil {
		return err
	}
	defer d.mu.RUnlock()
	return d.err("free", C.kvg_free(d.c, C.uint64_t(p)))
}

func (d *device) AllocHost(n int) ([]byte, error) {
	if n <= 0 {
		return nil, fmt.Errorf("%w: host alloc of %d bytes", ErrInvalid, n)
	}
	if err := d.enter(); err != nil {
		return nil, err
	}
	defer d.mu.RUnlock()
	var p unsafe.Pointer
	if rc := C.kvg_host_alloc(d.c, &p, C.size_t(n)); rc != 0 {
		return nil, fmt.Errorf("%w (%d bytes)", d.err("host alloc", rc), n)
	}
	if p == nil {
		return nil, fmt.Errorf("%w: host alloc returned NULL", ErrOutOfMemory)
	}
	return unsafe.Slice((*byte)(p), n), nil
}

func (d *device) FreeHost(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	if err := d.enter(); err != nil {
		return err
	}
	defer d.mu.RUnlock()
	return d.err("host free", C.kvg_host_free(d.c, unsafe.Pointer(&b[0])))
}

func (d *device) RegisterHost(b []byte) (func() error, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: register of an empty range", ErrInvalid)
	}
	if err := d.enter(); err != nil {
		return nil, err
	}
	defer d.mu.RUnlock()
	p := unsafe.Pointer(&b[0])
	if rc := C.kvg_host_register(d.c, p, C.size_t(len(b))); rc != 0 {
		return nil, fmt.Errorf("%w (%d bytes)", d.err("host register", rc), len(b))
	}
	var once sync.Once
	var uerr error
	return func() error {
		once.Do(func() {
			if uerr = d.enter(); uerr != nil {
				return
			}
			defer d.mu.RUnlock()
			uerr = d.err("host unregister", C.kvg_host_unregister(d.c, p))
		})
		return uerr
	}, nil
}

func (d *device) NewStream() (Stream, error) {
	if err := d.enter(); err != nil {
		return nil, err
	}
	defer d.mu.RUnlock()
	s := &stream{d: d}
	if rc := C.kvg_stream_create(d.c, &s.h); rc != 0 {
		return nil, d.err("stream create", rc)
	}
	if rc := C.kvg_event_create(d.c, &s.ev0); rc != 0 {
		C.kvg_stream_destroy(d.c, s.h)
		return nil, d.err("event create", rc)
	}
	if rc := C.kvg_event_create(d.c, &s.ev1); rc != 0 {
		C.kvg_event_destroy(d.c, s.ev0)
		C.kvg_stream_destroy(d.c, s.h)
		return nil, d.err("event create", rc)
	}
	return s, nil
}

func (d *device) NewEvent() (Event, error) {
	if err := d.enter(); err != nil {
		return nil, err
	}
	defer d.mu.RUnlock()
	e := &event{d: d}
	if rc := C.kvg_event_create(d.c, &e.h); rc != 0 {
		return nil, d.err("event create", rc)
	}
	return e, nil
}

func (d *device) IPCHandle(p DevPtr) (IPCHandle, error) {
	var h IPCHandle
	if p == 0 {
		return h, fmt.Errorf("%w: IPC handle of a null pointer", ErrInvalid)
	}
	if err := d.enter(); err != nil {
		return h, err
	}
	defer d.mu.RUnlock()
	var buf [C.KVG_IPC_HANDLE_SIZE]byte
	if rc := C.kvg_ipc_get(d.c, unsafe.Pointer(&buf[0]), C.uint64_t(p)); rc != 0 {
		return h, d.err("ipc get handle", rc)
	}
	copy(h[:], buf[:])
	return h, nil
}

func (d *device) OpenIPCHandle(h IPCHandle) (DevPtr, error) {
	if err := d.enter(); err != nil {
		return 0, err
	}
	defer d.mu.RUnlock()
	var p C.uint64_t
	if rc := C.kvg_ipc_open(d.c, &p, unsafe.Pointer(&h[0])); rc != 0 {
		return 0, d.err("ipc open handle", rc)
	}
	return DevPtr(p), nil
}

func (d *device) CloseIPCHandle(p DevPtr) error {
	if err := d.enter(); err != nil {
		return err
	}
	defer d.mu.RUnlock()
	return d.err("ipc close handle", C.kvg_ipc_close(d.c, C.uint64_t(p)))
}

func (d *device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	C.kvg_close(d.c)
	d.c = nil
	return nil
}

// stream implements Stream. Its fields are set at creation; closed is only
// touched by the goroutine that uses the stream.
type stream struct {
	d        *device
	h        C.uintptr_t
	ev0, ev1 C.uintptr_t // timing events for the waiting copies
	closed   bool
}

var _ Stream = (*stream)(nil)

func (s *stream) copy(op string, kind C.int, dptr DevPtr, host []byte, dsrc DevPtr, n int64, wait bool) (time.Duration, error) {
	if s.closed {
		return 0, ErrClosed
	}
	if n < 0 {
		return 0, fmt.Errorf("%w: %s of %d bytes", ErrInvalid, op, n)
	}
	if n == 0 {
		return 0, nil
	}
	if dptr == 0 || (kind == C.KVG_D2D && dsrc == 0) {
		return 0, fmt.Errorf("%w: %s with a null device pointer", ErrInvalid, op)
	}
	if err := s.d.enter(); err != nil {
		return 0, err
	}
	defer s.d.mu.RUnlock()
	var hp unsafe.Pointer
	if host != nil {
		hp = unsafe.Pointer(&host[0])
	}
	// Only a waiting copy is timed; an asynchronous one gets no events and ms 0.
	var ev0, ev1 C.uintptr_t
	var w C.int
	if wait {
		ev0, ev1, w = s.ev0, s.ev1, 1
	}
	r := C.kvg_copy(s.d.c, kind, C.uint64_t(dptr), hp, C.uint64_t(dsrc), C.size_t(n), s.h, ev0, ev1, w)
	if r.rc != 0 {
		return 0, s.d.err(op, r.rc)
	}
	return msDuration(float32(r.ms)), nil
}

func (s *stream) CopyH2DAsync(dst DevPtr, src []byte) error {
	_, err := s.copy("copy h2d", C.KVG_H2D, dst, src, 0, int64(len(src)), false)
	return err
}

func (s *stream) CopyD2HAsync(dst []byte, src DevPtr) error {
	_, err := s.copy("copy d2h", C.KVG_D2H, src, dst, 0, int64(len(dst)), false)
	return err
}

func (s *stream) CopyD2DAsync(dst, src DevPtr, n int64) error {
	_, err := s.copy("copy d2d", C.KVG_D2D, dst, nil, src, n, false)
	return err
}

func (s *stream) CopyH2D(dst DevPtr, src []byte) (time.Duration, error) {
	return s.copy("copy h2d", C.KVG_H2D, dst, src, 0, int64(len(src)), true)
}

func (s *stream) CopyD2H(dst []byte, src DevPtr) (time.Duration, error) {
	return s.copy("copy d2h", C.KVG_D2H, src, dst, 0, int64(len(dst)), true)
}

func (s *stream) CopyD2D(dst, src DevPtr, n int64) (time.Duration, error) {
	return s.copy("copy d2d", C.KVG_D2D, dst, nil, src, n, true)
}

func (s *stream) QueueRepeat(dir CopyDir, dst DevPtr, host []byte, src DevPtr, n int64, count int) error {
	if s.closed {
		return ErrClosed
	}
	switch {
	case n <= 0 || count < 0:
		return fmt.Errorf("%w: %d copies of %d bytes", ErrInvalid, count, n)
	case dir != H2D && dir != D2H && dir != D2D:
		return fmt.Errorf("%w: copy direction %d", ErrInvalid, dir)
	case dir != D2D && int64(len(host)) < n:
		return fmt.Errorf("%w: %d-byte host buffer for %d-byte copies", ErrInvalid, len(host), n)
	case (dir != D2H && dst == 0) || (dir != H2D && src == 0):
		return fmt.Errorf("%w: repeated copy with a null device pointer", ErrInvalid)
	case count == 0:
		return nil
	}
	if err := s.d.enter(); err != nil {
		return err
	}
	defer s.d.mu.RUnlock()
	var hp unsafe.Pointer
	if dir != D2D {
		hp = unsafe.Pointer(&host[0])
	}
	// The shim's device-side arguments: H2D and D2D write dst, D2H reads
	// src through the first pointer.
	dptr, dsrc := dst, src
	if dir == D2H {
		dptr, dsrc = src, 0
	}
	rc := C.kvg_copy_repeat(s.d.c, C.int(dir), C.uint64_t(dptr), hp, C.uint64_t(dsrc), C.size_t(n), C.long(count), s.h)
	return s.d.err("copy repeat", rc)
}

func (s *stream) Record(e Event) error {
	if s.closed {
		return ErrClosed
	}
	ev, ok := e.(*event)
	if !ok || ev.d != s.d {
		return fmt.Errorf("%w: event from another device", ErrInvalid)
	}
	if ev.closed {
		return ErrClosed
	}
	if err := s.d.enter(); err != nil {
		return err
	}
	defer s.d.mu.RUnlock()
	return s.d.err("event record", C.kvg_event_record(s.d.c, ev.h, s.h))
}

func (s *stream) Sync() error {
	if s.closed {
		return ErrClosed
	}
	if err := s.d.enter(); err != nil {
		return err
	}
	defer s.d.mu.RUnlock()
	return s.d.err("stream sync", C.kvg_stream_sync(s.d.c, s.h))
}

func (s *stream) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	if err := s.d.enter(); err != nil {
		return err
	}
	defer s.d.mu.RUnlock()
	// Finish queued work first: destroying a stream with copies in flight
	// would let them run against memory the caller may free next.
	err := s.d.err("stream sync", C.kvg_stream_sync(s.d.c, s.h))
	err = errors.Join(err,
		s.d.err("event destroy", C.kvg_event_destroy(s.d.c, s.ev0)),
		s.d.err("event destroy", C.kvg_event_destroy(s.d.c, s.ev1)),
		s.d.err("stream destroy", C.kvg_stream_destroy(s.d.c, s.h)))
	return err
}

// event implements Event; like a stream it is used by one goroutine at a time.
type event struct {
	d      *device
	h      C.uintptr_t
	closed bool
}

var _ Event = (*event)(nil)

func (e *event) Sync() error {
	if e.closed {
		return ErrClosed
	}
	if err := e.d.enter(); err != nil {
		return err
	}
	defer e.d.mu.RUnlock()
	return e.d.err("event sync", C.kvg_event_sync(e.d.c, e.h))
}

func (e *event) Since(start Event) (time.Duration, error) {
	st, ok := start.(*event)
	if !ok || st.d != e.d {
		return 0, fmt.Errorf("%w: event from another device", ErrInvalid)
	}
	if e.closed || st.closed {
		return 0, ErrClosed
	}
	if err := e.d.enter(); err != nil {
		return 0, err
	}
	defer e.d.mu.RUnlock()
	var ms C.float
	if rc := C.kvg_event_elapsed(e.d.c, &ms, st.h, e.h); rc != 0 {
		return 0, e.d.err("event elapsed", rc)
	}
	return msDuration(float32(ms)), nil
}

func (e *event) Close() error {
	if e.closed {
		return nil
	}
	e.closed = true
	if err := e.d.enter(); err != nil {
		return err
	}
	defer e.d.mu.RUnlock()
	return e.d.err("event destroy", C.kvg_event_destroy(e.d.c, e.h))
}
