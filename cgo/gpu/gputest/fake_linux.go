//go:build cgo

package gputest

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdlib.h>

typedef int (*fail_fn)(const char *, long, long, int);
typedef long (*count_fn)(const char *);
typedef void (*setint_fn)(int);
typedef void (*setsize_fn)(size_t);
typedef int (*getint_fn)(void);

static void *fake_open(const char *path) { return dlopen(path, RTLD_NOW | RTLD_LOCAL); }
static void *fake_sym(void *h, const char *name) { return dlsym(h, name); }
static int call_fail(void *f, const char *n, long skip, long times, int code) { return ((fail_fn)f)(n, skip, times, code); }
static long call_count(void *f, const char *n) { return ((count_fn)f)(n); }
static void call_setint(void *f, int v) { ((setint_fn)f)(v); }
static void call_setsize(void *f, size_t v) { ((setsize_fn)f)(v); }
static int call_getint(void *f) { return ((getint_fn)f)(); }
*/
import "C"

import (
	"slices"
	"testing"
	"unsafe"
)

// BuildFake builds the fake device library (the variant the flags select)
// into t.TempDir(), loads it, and returns its controls. The test is skipped
// when no C compiler is present, or fails under CI.
func BuildFake(t testing.TB, flags ...Flag) *Fake {
	t.Helper()
	var hide []string
	for _, f := range flags {
		h, ok := hidden[f]
		if !ok {
			t.Fatalf("unknown fake variant %q", f)
		}
		hide = append(hide, h...)
	}
	slices.Sort(hide)
	hide = slices.Compact(hide)
	path := build(t, "libfakegpu.so", fakeSource, nil, hide)
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	h := C.fake_open(cpath)
	if h == nil {
		t.Fatalf("dlopen %s: %s", path, C.GoString(C.dlerror()))
	}
	c := &cfake{}
	for _, s := range []struct {
		name string
		dst  *unsafe.Pointer
	}{
		{"fake_fail", &c.fail_}, {"fake_calls", &c.calls_}, {"fake_stat", &c.stat_},
		{"fake_set_devices", &c.devices_}, {"fake_set_memory", &c.memory_}, {"fake_set_init_result", &c.init_},
		{"fake_set_driver_version", &c.version_},
		{"fake_set_thread_ctx", &c.setCtx_}, {"fake_thread_ctx", &c.ctx_},
		{"fake_set_thread_hipdev", &c.setHipdev_}, {"fake_thread_hipdev", &c.hipdev_},
	} {
		cn := C.CString(s.name)
		*s.dst = C.fake_sym(h, cn)
		C.free(unsafe.Pointer(cn))
		if *s.dst == nil {
			t.Fatalf("fake library lacks %s", s.name)
		}
	}
	// The handle is kept open (and never closed) so the library's state
	// lives as long as the process.
	f := &Fake{Path: path, ctl: c}
	// Tests start from the documented defaults, whatever FAKEGPU_* the
	// environment holds for runs that use the fake as a stand-in driver.
	f.SetDevices(1)
	f.SetMemory(DefaultMemory)
	return f
}

// RequireCgo returns at once: this build has cgo on Linux. In other builds
// it skips the test, or fails it under CI.
func RequireCgo(t testing.TB) {}

// cfake calls the fake's control functions through dlsym'd pointers.
type cfake struct {
	fail_, calls_, stat_, devices_, memory_, init_, version_ unsafe.Pointer
	setCtx_, ctx_, setHipdev_, hipdev_                       unsafe.Pointer
}

func (c *cfake) fail(name string, skip, times int64, code int) {
	cn := C.CString(name)
	defer C.free(unsafe.Pointer(cn))
	C.call_fail(c.fail_, cn, C.long(skip), C.long(times), C.int(code))
}

func (c *cfake) calls(name string) int64 {
	cn := C.CString(name)
	defer C.free(unsafe.Pointer(cn))
	return int64(C.call_count(c.calls_, cn))
}

func (c *cfake) stat(name string) int64 {
	cn := C.CString(name)
	defer C.free(unsafe.Pointer(cn))
	return int64(C.call_count(c.stat_, cn))
}

func (c *cfake) setDevices(n int)       { C.call_setint(c.devices_, C.int(n)) }
func (c *cfake) setMemory(n int64)      { C.call_setsize(c.memory_, C.size_t(n)) }
func (c *cfake) setInitResult(code int) { C.call_setint(c.init_, C.int(code)) }
func (c *cfake) setDriverVersion(v int) { C.call_setint(c.version_, C.int(v)) }

// The thread controls act on the calling OS thread: callers lock it.
func (c *cfake) setThreadCtx(dev int)    { C.call_setint(c.setCtx_, C.int(dev)) }
func (c *cfake) threadCtx() int          { return int(C.call_getint(c.ctx_)) }
func (c *cfake) setThreadHIPDev(dev int) { C.call_setint(c.setHipdev_, C.int(dev)) }
func (c *cfake) threadHIPDev() int       { return int(C.call_getint(c.hipdev_)) }
