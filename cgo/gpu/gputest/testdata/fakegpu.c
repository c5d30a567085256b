// fakegpu: a fake GPU driver for kvtier's tests. It exports the subset of
// the CUDA driver API and of the HIP runtime that cgo/gpu binds, implemented
// over host memory, so the binding, the HBM tier and the Store's use of HBM
// run in CI without a GPU.
//
// Behaviour kept from the real drivers, because the code under test depends
// on it:
//   - CUDA calls that need a context fail with CUDA_ERROR_INVALID_CONTEXT
//     unless the calling thread made the primary context current; HIP calls
//     act on the calling thread's current device (0 until hipSetDevice).
//   - device memory is bounded per device (out of memory), device ranges of
//     copies are checked against live allocations, streams and events
//     against the current device.
//   - the legacy 32-bit CUDA symbols (cuMemAlloc, cuMemcpyHtoDAsync, ...)
//     exist but fail, so a binding that falls back to them is caught.
//   - device memory is a memfd mapping, so an IPC handle can be opened by
//     another process (through /proc/<pid>/fd). Unlike CUDA, the fake also
//     lets the exporting process open its own handle (a second mapping).
// Simplifications: copies run synchronously when queued; events record a
// monotonic clock; nothing is freed when a context's last reference goes
// (so tests can see leaks).
//
// Control (looked up with dlsym by gputest): fake_set_devices,
// fake_set_memory, fake_set_init_result, fake_fail, fake_calls, fake_stat.
// Environment (read at load): FAKEGPU_DEVICES, FAKEGPU_MEMORY (bytes).
//
// Variants (one API only, no _v2 aliases, a required or the optional
// symbols missing) are made by gputest at link time, with a version script
// that hides the symbols, so the source is compiled once.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

enum {
	E_OK = 0,
	E_INVALID_VALUE = 1,
	E_OUT_OF_MEMORY = 2,
	E_NOT_INITIALIZED = 3,
	E_INSUFFICIENT_DRIVER = 35, // HIP (and the CUDA runtime), not the CUDA driver
	E_DEVICE_UNAVAILABLE = 46,  // CUDA: exclusive-process mode
	E_SYSTEM_DRIVER_MISMATCH = 803,
	E_NO_DEVICE = 100,
	E_INVALID_DEVICE = 101,
	E_INVALID_CONTEXT = 201,
	E_INVALID_HANDLE = 400,
	E_ILLEGAL_ADDRESS = 700,
	E_ALREADY_REGISTERED = 712,
	E_NOT_REGISTERED = 713,
	E_NOT_SUPPORTED = 801,
};

#define MAXDEV 8
#define MB (1024ull * 1024ull)

enum { K_DEV = 0, K_HOST = 1, K_REG = 2, K_IPC = 3 };

typedef struct alloc {
	uintptr_t base;
	size_t size;
	int dev;
	int kind;
	int fd; // memfd of device memory, -1 otherwise
	uintptr_t origin; // K_IPC opened in this process: the exporter's base
	struct alloc *next;
} alloc_t;

typedef struct {
	int dev;
	int refs;
} ctx_t;

#define STREAM_MAGIC 0x5354524dU
#define EVENT_MAGIC 0x4556454eU
#define DEAD_MAGIC 0xdeadU

typedef struct {
	unsigned magic;
	int dev;
} stream_t;

typedef struct {
	unsigned magic;
	int dev;
	int recorded;
	struct timespec t;
} event_t;

typedef struct {
	char magic[8];
	int32_t pid;
	int32_t fd;
	uint64_t size;
	uint64_t base;
	char pad[32];
} ipc_t;

// All state below is guarded by mu.
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int g_ndev = 1;
static size_t g_mem = 256 * MB;
static int g_init_result = 0;
static int g_version = 0; // 0: the defaults (CUDA 12040, HIP 60241)
static long g_freed_imported;
static unsigned g_ctx_flags[MAXDEV]; // cuDevicePrimaryCtxSetFlags
static unsigned g_hip_flags[MAXDEV]; // hipSetDeviceFlags // device frees while this process still mapped their IPC export
static int g_inited = 0;
static alloc_t *g_allocs;
static size_t g_used[MAXDEV];
static ctx_t g_ctx[MAXDEV];
static long g_streams, g_events, g_pinned_copies, g_pageable_copies;

// Per-thread driver state.
static __thread ctx_t *t_ctx;  // CUDA current context
static __thread int t_hipdev;  // HIP current device

// ---- call counting and failure injection ----

#define MAXNAMES 160
static struct {
	char name[48];
	long calls;
	long skip;  // calls to let through before failing
	long times; // calls to fail (<0: forever)
	int code;
} g_names[MAXNAMES];
static int g_nnames;

static int slot_locked(const char *name) {
	for (int i = 0; i < g_nnames; i++) {
		if (strcmp(g_names[i].name, name) == 0) return i;
	}
	if (g_nnames == MAXNAMES) return -1;
	snprintf(g_names[g_nnames].name, sizeof(g_names[0].name), "%s", name);
	return g_nnames++;
}

// enter counts a call and returns the injected failure, if any.
static int enter(const char *name) {
	int rc = 0;
	pthread_mutex_lock(&mu);
	int i = slot_locked(name);
	if (i >= 0) {
		g_names[i].calls++;
		if (g_names[i].code != 0) {
			if (g_names[i].skip > 0) {
				g_names[i].skip--;
			} else if (g_names[i].times != 0) {
				if (g_names[i].times > 0) g_names[i].times--;
				rc = g_names[i].code;
			}
		}
	}
	pthread_mutex_unlock(&mu);
	return rc;
}

#define ENTRY(name)                            \
	do {                                   \
		int inj_ = enter(name);        \
		if (inj_ != 0) return inj_;    \
	} while (0)

// fake_fail makes the named entry point return code after letting skip
// calls through, for times calls (times < 0: every call). code 0 clears.
EXPORT int fake_fail(const char *name, long skip, long times, int code) {
	pthread_mutex_lock(&mu);
	int i = slot_locked(name);
	if (i >= 0) {
		g_names[i].skip = skip;
		g_names[i].times = times;
		g_names[i].code = code;
	}
	pthread_mutex_unlock(&mu);
	return i >= 0 ? 0 : -1;
}

EXPORT long fake_calls(const char *name) {
	long n = 0;
	pthread_mutex_lock(&mu);
	for (int i = 0; i < g_nnames; i++) {
		if (strcmp(g_names[i].name, name) == 0) n = g_names[i].calls;
	}
	pthread_mutex_unlock(&mu);
	return n;
}

EXPORT void fake_set_devices(int n) {
	pthread_mutex_lock(&mu);
	g_ndev = n < 0 ? 0 : (n > MAXDEV ? MAXDEV : n);
	pthread_mutex_unlock(&mu);
}

EXPORT void fake_set_memory(size_t bytes) {
	pthread_mutex_lock(&mu);
	g_mem = bytes;
	pthread_mutex_unlock(&mu);
}

// fake_set_driver_version sets what cuDriverGetVersion and
// hipDriverGetVersion report (0: the defaults). The HIP IPC flag rule
// follows it: ROCm 5 (HIP major 5) accepts only flags 0 in
// hipIpcOpenMemHandle, HIP 6 only hipIpcMemLazyEnablePeerAccess (1).
EXPORT void fake_set_driver_version(int v) {
	pthread_mutex_lock(&mu);
	g_version = v;
	pthread_mutex_unlock(&mu);
}

static int version_or(int def) {
	pthread_mutex_lock(&mu);
	int v = g_version ? g_version : def;
	pthread_mutex_unlock(&mu);
	return v;
}

// hip_major reads HIP's version numbers: major*10000000+minor*100000+patch
// (ROCm's hipDriverGetVersion), or major*10000+minor*10+... (older style).
static int hip_major(int v) { return v >= 10000000 ? v / 10000000 : v / 10000; }

EXPORT void fake_set_init_result(int code) {
	pthread_mutex_lock(&mu);
	g_init_result = code;
	pthread_mutex_unlock(&mu);
}

static long count_kind_locked(int kind) {
	long n = 0;
	for (alloc_t *a = g_allocs; a; a = a->next) n += a->kind == kind;
	return n;
}

// fake_stat reports live resources and copy counters: "allocs", "host",
// "registered", "ipc", "streams", "events", "pinned_copies",
// "pageable_copies", "ctx_refs", "used0".."used7". -1 for an unknown name.
EXPORT long fake_stat(const char *name) {
	long v = -1;
	pthread_mutex_lock(&mu);
	if (strcmp(name, "allocs") == 0) v = count_kind_locked(K_DEV);
	else if (strcmp(name, "host") == 0) v = count_kind_locked(K_HOST);
	else if (strcmp(name, "registered") == 0) v = count_kind_locked(K_REG);
	else if (strcmp(name, "ipc") == 0) v = count_kind_locked(K_IPC);
	else if (strcmp(name, "streams") == 0) v = g_streams;
	else if (strcmp(name, "events") == 0) v = g_events;
	else if (strcmp(name, "pinned_copies") == 0) v = g_pinned_copies;
	else if (strcmp(name, "pageable_copies") == 0) v = g_pageable_copies;
	else if (strcmp(name, "freed_imported") == 0) v = g_freed_imported;
	else if (strcmp(name, "ctx_flags") == 0) v = g_ctx_flags[0];
	else if (strcmp(name, "hip_flags") == 0) v = g_hip_flags[0];
	else if (strcmp(name, "registered_bytes") == 0) {
		v = 0;
		for (alloc_t *a = g_allocs; a; a = a->next) {
			if (a->kind == K_REG) v += (long)a->size;
		}
	}
	else if (strcmp(name, "ctx_refs") == 0) {
		v = 0;
		for (int i = 0; i < MAXDEV; i++) v += g_ctx[i].refs;
	} else if (strncmp(name, "used", 4) == 0 && name[4] >= '0' && name[4] < '0' + MAXDEV && name[5] == 0) {
		v = (long)g_used[name[4] - '0'];
	}
	pthread_mutex_unlock(&mu);
	return v;
}

__attribute__((constructor)) static void fake_load(void) {
	const char *s = getenv("FAKEGPU_DEVICES");
	if (s && *s) fake_set_devices(atoi(s));
	s = getenv("FAKEGPU_MEMORY");
	if (s && *s) fake_set_memory((size_t)strtoull(s, NULL, 10));
}

// ---- core, shared by both APIs ----

static alloc_t *find_locked(uintptr_t p, size_t n, int kind) {
	for (alloc_t *a = g_allocs; a; a = a->next) {
		if (a->kind != kind) continue;
		if (p >= a->base && p - a->base < a->size && n <= a->size - (p - a->base)) return a;
	}
	return NULL;
}

static int overlaps_locked(uintptr_t p, size_t n, int kind) {
	for (alloc_t *a = g_allocs; a; a = a->next) {
		if (a->kind == kind && p < a->base + a->size && a->base < p + n) return 1;
	}
	return 0;
}

static void unlink_locked(alloc_t *x) {
	for (alloc_t **pp = &g_allocs; *pp; pp = &(*pp)->next) {
		if (*pp == x) {
			*pp = x->next;
			return;
		}
	}
}

static int core_alloc(int dev, size_t n, uintptr_t *out) {
	*out = 0;
	if (n == 0) return E_INVALID_VALUE;
	pthread_mutex_lock(&mu);
	if (g_used[dev] + n > g_mem) {
		pthread_mutex_unlock(&mu);
		return E_OUT_OF_MEMORY;
	}
	g_used[dev] += n;
	pthread_mutex_unlock(&mu);
	int fd = (int)syscall(SYS_memfd_create, "fakegpu", 1u /* MFD_CLOEXEC */);
	void *p;
	if (fd >= 0 && ftruncate(fd, (off_t)n) == 0) {
		p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	} else {
		if (fd >= 0) close(fd);
		fd = -1;
		p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	}
	alloc_t *a = malloc(sizeof(*a));
	if (p == MAP_FAILED || a == NULL) {
		if (p != MAP_FAILED) munmap(p, n);
		if (fd >= 0) close(fd);
		free(a);
		pthread_mutex_lock(&mu);
		g_used[dev] -= n;
		pthread_mutex_unlock(&mu);
		return E_OUT_OF_MEMORY;
	}
	*a = (alloc_t){.base = (uintptr_t)p, .size = n, .dev = dev, .kind = K_DEV, .fd = fd};
	pthread_mutex_lock(&mu);
	a->next = g_allocs;
	g_allocs = a;
	pthread_mutex_unlock(&mu);
	*out = (uintptr_t)p;
	return E_OK;
}

static int core_free(int dev, uintptr_t p, int kind) {
	pthread_mutex_lock(&mu);
	alloc_t *a = find_locked(p, 0, kind);
	if (a == NULL || a->base != p || (kind == K_DEV && a->dev != dev)) {
		pthread_mutex_unlock(&mu);
		return E_INVALID_VALUE;
	}
	unlink_locked(a);
	if (kind == K_DEV) {
		g_used[a->dev] -= a->size;
		// Freeing an exported allocation while an importer still maps it
		// is undefined behaviour on a real driver: count it.
		for (alloc_t *b = g_allocs; b; b = b->next) {
			if (b->kind == K_IPC && b->origin == a->base) {
				g_freed_imported++;
				break;
			}
		}
	}
	pthread_mutex_unlock(&mu);
	if (kind != K_REG) munmap((void *)a->base, a->size);
	if (a->fd >= 0) close(a->fd);
	free(a);
	return E_OK;
}

static int core_host_alloc(void **pp, size_t n) {
	*pp = NULL;
	if (n == 0) return E_INVALID_VALUE;
	void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	alloc_t *a = malloc(sizeof(*a));
	if (p == MAP_FAILED || a == NULL) {
		if (p != MAP_FAILED) munmap(p, n);
		free(a);
		return E_OUT_OF_MEMORY;
	}
	*a = (alloc_t){.base = (uintptr_t)p, .size = n, .dev = -1, .kind = K_HOST, .fd = -1};
	pthread_mutex_lock(&mu);
	a->next = g_allocs;
	g_allocs = a;
	pthread_mutex_unlock(&mu);
	*pp = p;
	return E_OK;
}

static int core_register(void *p, size_t n) {
	if (p == NULL || n == 0) return E_INVALID_VALUE;
	alloc_t *a = malloc(sizeof(*a));
	if (a == NULL) return E_OUT_OF_MEMORY;
	pthread_mutex_lock(&mu);
	if (overlaps_locked((uintptr_t)p, n, K_REG) || overlaps_locked((uintptr_t)p, n, K_HOST)) {
		pthread_mutex_unlock(&mu);
		free(a);
		return E_ALREADY_REGISTERED;
	}
	*a = (alloc_t){.base = (uintptr_t)p, .size = n, .dev = -1, .kind = K_REG, .fd = -1, .next = g_allocs};
	g_allocs = a;
	pthread_mutex_unlock(&mu);
	return E_OK;
}

static int core_unregister(void *p) {
	pthread_mutex_lock(&mu);
	alloc_t *a = find_locked((uintptr_t)p, 0, K_REG);
	int ok = a != NULL && a->base == (uintptr_t)p;
	pthread_mutex_unlock(&mu);
	if (!ok) return E_NOT_REGISTERED;
	return core_free(-1, (uintptr_t)p, K_REG);
}

static int dev_range_ok_locked(uintptr_t p, size_t n) {
	return find_locked(p, n, K_DEV) != NULL || find_locked(p, n, K_IPC) != NULL;
}

static int stream_ok(void *s, int dev) {
	stream_t *st = s;
	if (st == NULL) return 1; // the default stream
	return st->magic == STREAM_MAGIC && st->dev == dev;
}

// core_copy validates and performs a copy. kind: 1 H2D, 2 D2H, 3 D2D.
static int core_copy(int dev, void *dst, const void *src, size_t n, int kind, void *s) {
	if (!stream_ok(s, dev)) return E_INVALID_HANDLE;
	if (n == 0) return E_OK;
	if (dst == NULL || src == NULL) return E_INVALID_VALUE;
	pthread_mutex_lock(&mu);
	int ok = 1;
	const void *host = NULL;
	switch (kind) {
	case 1:
		ok = dev_range_ok_locked((uintptr_t)dst, n);
		host = src;
		break;
	case 2:
		ok = dev_range_ok_locked((uintptr_t)src, n);
		host = dst;
		break;
	case 3:
		ok = dev_range_ok_locked((uintptr_t)dst, n) && dev_range_ok_locked((uintptr_t)src, n);
		break;
	default:
		ok = 0;
	}
	if (ok && host != NULL) {
		if (find_locked((uintptr_t)host, n, K_HOST) || find_locked((uintptr_t)host, n, K_REG)) {
			g_pinned_copies++;
		} else {
			g_pageable_copies++;
		}
	}
	pthread_mutex_unlock(&mu);
	if (!ok) return E_INVALID_VALUE;
	memmove(dst, src, n);
	return E_OK;
}

static int core_stream_create(int dev, void **out) {
	stream_t *s = malloc(sizeof(*s));
	if (s == NULL) return E_OUT_OF_MEMORY;
	s->magic = STREAM_MAGIC;
	s->dev = dev;
	pthread_mutex_lock(&mu);
	g_streams++;
	pthread_mutex_unlock(&mu);
	*out = s;
	return E_OK;
}

// Destroyed streams and events are marked, not freed, so a later use is
// detected instead of reading freed memory.
static int core_stream_destroy(int dev, void *h) {
	stream_t *s = h;
	if (s == NULL || s->magic != STREAM_MAGIC || s->dev != dev) return E_INVALID_HANDLE;
	s->magic = DEAD_MAGIC;
	pthread_mutex_lock(&mu);
	g_streams--;
	pthread_mutex_unlock(&mu);
	return E_OK;
}

static int core_event_create(int dev, void **out) {
	event_t *e = calloc(1, sizeof(*e));
	if (e == NULL) return E_OUT_OF_MEMORY;
	e->magic = EVENT_MAGIC;
	e->dev = dev;
	pthread_mutex_lock(&mu);
	g_events++;
	pthread_mutex_unlock(&mu);
	*out = e;
	return E_OK;
}

static int core_event_destroy(void *h) {
	event_t *e = h;
	if (e == NULL || e->magic != EVENT_MAGIC) return E_INVALID_HANDLE;
	e->magic = DEAD_MAGIC;
	pthread_mutex_lock(&mu);
	g_events--;
	pthread_mutex_unlock(&mu);
	return E_OK;
}

static int core_event_record(int dev, void *h, void *s) {
	event_t *e = h;
	if (e == NULL || e->magic != EVENT_MAGIC || e->dev != dev || !stream_ok(s, dev)) return E_INVALID_HANDLE;
	clock_gettime(CLOCK_MONOTONIC, &e->t);
	e->recorded = 1;
	return E_OK;
}

static int core_event_ok(void *h) {
	event_t *e = h;
	return e != NULL && e->magic == EVENT_MAGIC;
}

static int core_elapsed(float *ms, void *a, void *b) {
	event_t *x = a, *y = b;
	if (ms == NULL) return E_INVALID_VALUE;
	if (!core_event_ok(x) || !core_event_ok(y) || !x->recorded || !y->recorded) return E_INVALID_HANDLE;
	double d = (double)(y->t.tv_sec - x->t.tv_sec) * 1e3 + (double)(y->t.tv_nsec - x->t.tv_nsec) / 1e6;
	*ms = (float)d;
	return E_OK;
}

static int core_mem_info(int dev, size_t *f, size_t *t) {
	if (f == NULL || t == NULL) return E_INVALID_VALUE;
	pthread_mutex_lock(&mu);
	*t = g_mem;
	*f = g_mem > g_used[dev] ? g_mem - g_used[dev] : 0;
	pthread_mutex_unlock(&mu);
	return E_OK;
}

static int core_ipc_get(void *out, uintptr_t p) {
	if (out == NULL) return E_INVALID_VALUE;
	pthread_mutex_lock(&mu);
	alloc_t *a = find_locked(p, 0, K_DEV);
	ipc_t h;
	memset(&h, 0, sizeof(h));
	int rc = E_OK;
	if (a == NULL) {
		rc = E_INVALID_VALUE;
	} else if (a->fd < 0) {
		rc = E_NOT_SUPPORTED;
	} else {
		memcpy(h.magic, "KVFAKIPC", 8);
		h.pid = (int32_t)getpid();
		h.fd = a->fd;
		h.size = a->size;
		h.base = a->base;
	}
	pthread_mutex_unlock(&mu);
	if (rc == E_OK) memcpy(out, &h, sizeof(h));
	return rc;
}

static int core_ipc_open(int dev, uintptr_t *out, const void *in) {
	ipc_t h;
	memcpy(&h, in, sizeof(h));
	*out = 0;
	if (memcmp(h.magic, "KVFAKIPC", 8) != 0 || h.size == 0) return E_INVALID_VALUE;
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/fd/%d", (int)h.pid, (int)h.fd);
	int fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0) return E_INVALID_VALUE;
	void *p = mmap(NULL, h.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		close(fd);
		return E_OUT_OF_MEMORY;
	}
	alloc_t *a = malloc(sizeof(*a));
	if (a == NULL) {
		munmap(p, h.size);
		close(fd);
		return E_OUT_OF_MEMORY;
	}
	*a = (alloc_t){.base = (uintptr_t)p, .size = h.size, .dev = dev, .kind = K_IPC, .fd = fd,
	               .origin = h.pid == (int32_t)getpid() ? (uintptr_t)h.base : 0};
	pthread_mutex_lock(&mu);
	a->next = g_allocs;
	g_allocs = a;
	pthread_mutex_unlock(&mu);
	*out = (uintptr_t)p;
	return E_OK;
}

static const char *error_name(int code) {
	switch (code) {
	case E_OK: return "SUCCESS";
	case E_INVALID_VALUE: return "ERROR_INVALID_VALUE";
	case E_OUT_OF_MEMORY: return "ERROR_OUT_OF_MEMORY";
	case E_NOT_INITIALIZED: return "ERROR_NOT_INITIALIZED";
	case E_INSUFFICIENT_DRIVER: return "ERROR_INSUFFICIENT_DRIVER";
	case E_DEVICE_UNAVAILABLE: return "ERROR_DEVICE_UNAVAILABLE";
	case E_SYSTEM_DRIVER_MISMATCH: return "ERROR_SYSTEM_DRIVER_MISMATCH";
	case E_NO_DEVICE: return "ERROR_NO_DEVICE";
	case E_INVALID_DEVICE: return "ERROR_INVALID_DEVICE";
	case E_INVALID_CONTEXT: return "ERROR_INVALID_CONTEXT";
	case E_INVALID_HANDLE: return "ERROR_INVALID_HANDLE";
	case E_ILLEGAL_ADDRESS: return "ERROR_ILLEGAL_ADDRESS";
	case E_ALREADY_REGISTERED: return "ERROR_HOST_MEMORY_ALREADY_REGISTERED";
	case E_NOT_REGISTERED: return "ERROR_HOST_MEMORY_NOT_REGISTERED";
	case E_NOT_SUPPORTED: return "ERROR_NOT_SUPPORTED";
	}
	return NULL;
}

static int ndev(void) {
	pthread_mutex_lock(&mu);
	int n = g_ndev;
	pthread_mutex_unlock(&mu);
	return n;
}

static int init_result(void) {
	pthread_mutex_lock(&mu);
	int rc = g_init_result;
	if (rc == 0 && g_ndev == 0) rc = E_NO_DEVICE;
	if (rc == 0) g_inited = 1;
	pthread_mutex_unlock(&mu);
	return rc;
}

static int inited(void) {
	pthread_mutex_lock(&mu);
	int v = g_inited;
	pthread_mutex_unlock(&mu);
	return v;
}

// ==================== CUDA driver API ====================

typedef unsigned long long CUdeviceptr;

// CTX checks that the calling thread has a current context and sets dev.
#define CTX(dev)                                              \
	int dev;                                              \
	do {                                                  \
		if (!inited()) return E_NOT_INITIALIZED;      \
		if (t_ctx == NULL || t_ctx->refs <= 0)        \
			return E_INVALID_CONTEXT;             \
		dev = t_ctx->dev;                             \
	} while (0)

EXPORT int cuInit(unsigned flags) {
	ENTRY("cuInit");
	if (flags != 0) return E_INVALID_VALUE;
	return init_result();
}

EXPORT int cuDriverGetVersion(int *v) {
	ENTRY("cuDriverGetVersion");
	if (v == NULL) return E_INVALID_VALUE;
	*v = version_or(12040);
	return E_OK;
}

EXPORT int cuDeviceGetCount(int *n) {
	ENTRY("cuDeviceGetCount");
	if (!inited()) return E_NOT_INITIALIZED;
	if (n == NULL) return E_INVALID_VALUE;
	*n = ndev();
	return E_OK;
}

EXPORT int cuDeviceGet(int *d, int ordinal) {
	ENTRY("cuDeviceGet");
	if (!inited()) return E_NOT_INITIALIZED;
	if (d == NULL) return E_INVALID_VALUE;
	if (ordinal < 0 || ordinal >= ndev()) return E_INVALID_DEVICE;
	*d = ordinal;
	return E_OK;
}

EXPORT int cuDeviceGetName(char *name, int len, int d) {
	ENTRY("cuDeviceGetName");
	if (d < 0 || d >= ndev()) return E_INVALID_DEVICE;
	if (name == NULL || len <= 0) return E_INVALID_VALUE;
	snprintf(name, (size_t)len, "Fake GPU %d", d);
	return E_OK;
}

EXPORT int cuDeviceGetPCIBusId(char *bus, int len, int d) {
	ENTRY("cuDeviceGetPCIBusId");
	if (d < 0 || d >= ndev()) return E_INVALID_DEVICE;
	if (bus == NULL || len <= 0) return E_INVALID_VALUE;
	snprintf(bus, (size_t)len, "0000:%02x:00.0", 0x10 + d);
	return E_OK;
}

EXPORT int cuDeviceTotalMem_v2(size_t *bytes, int d) {
	ENTRY("cuDeviceTotalMem_v2");
	if (d < 0 || d >= ndev()) return E_INVALID_DEVICE;
	if (bytes == NULL) return E_INVALID_VALUE;
	pthread_mutex_lock(&mu);
	*bytes = g_mem;
	pthread_mutex_unlock(&mu);
	return E_OK;
}

EXPORT int cuDevicePrimaryCtxRetain(void **ctx, int d) {
	ENTRY("cuDevicePrimaryCtxRetain");
	if (!inited()) return E_NOT_INITIALIZED;
	if (d < 0 || d >= ndev()) return E_INVALID_DEVICE;
	if (ctx == NULL) return E_INVALID_VALUE;
	pthread_mutex_lock(&mu);
	g_ctx[d].dev = d;
	g_ctx[d].refs++;
	pthread_mutex_unlock(&mu);
	*ctx = &g_ctx[d];
	return E_OK;
}

static int ctx_release(int d) {
	if (d < 0 || d >= ndev()) return E_INVALID_DEVICE;
	pthread_mutex_lock(&mu);
	int rc = g_ctx[d].refs > 0 ? E_OK : E_INVALID_CONTEXT;
	if (rc == E_OK) g_ctx[d].refs--;
	pthread_mutex_unlock(&mu);
	return rc;
}

EXPORT int cuCtxSetCurrent(void *ctx) {
	ENTRY("cuCtxSetCurrent");
	ctx_t *c = ctx;
	if (c != NULL && (c < &g_ctx[0] || c >= &g_ctx[MAXDEV])) return E_INVALID_CONTEXT;
	t_ctx = c;
	return E_OK;
}

EXPORT int cuCtxGetCurrent(void **ctx) {
	ENTRY("cuCtxGetCurrent");
	if (ctx == NULL) return E_INVALID_VALUE;
	*ctx = t_ctx;
	return E_OK;
}

static int ctx_set_flags(int d, unsigned flags) {
	if (d < 0 || d >= ndev()) return E_INVALID_DEVICE;
	pthread_mutex_lock(&mu);
	g_ctx_flags[d] = flags;
	pthread_mutex_unlock(&mu);
	return E_OK;
}

EXPORT int cuDevicePrimaryCtxSetFlags_v2(int d, unsigned flags) { ENTRY("cuDevicePrimaryCtxSetFlags_v2"); return ctx_set_flags(d, flags); }
EXPORT int cuDevicePrimaryCtxSetFlags(int d, unsigned flags) { ENTRY("cuDevicePrimaryCtxSetFlags"); return ctx_set_flags(d, flags); }

// fake_set_thread_ctx makes device dev's primary context current on the
// calling thread (-1: none), as another CUDA user in the process would;
// fake_thread_ctx reports the calling thread's current context's device
// (-1: none). HIP: fake_set_thread_hipdev and fake_thread_hipdev.
EXPORT void fake_set_thread_ctx(int dev) { t_ctx = dev < 0 || dev >= MAXDEV ? NULL : &g_ctx[dev]; }
EXPORT int fake_thread_ctx(void) { return t_ctx == NULL ? -1 : (int)(t_ctx - g_ctx); }
EXPORT void fake_set_thread_hipdev(int dev) { t_hipdev = dev; }
EXPORT int fake_thread_hipdev(void) { return t_hipdev; }

EXPORT int cuMemGetInfo_v2(size_t *f, size_t *t) {
	ENTRY("cuMemGetInfo_v2");
	CTX(dev);
	return core_mem_info(dev, f, t);
}

EXPORT int cuMemAlloc_v2(CUdeviceptr *p, size_t n) {
	ENTRY("cuMemAlloc_v2");
	CTX(dev);
	if (p == NULL) return E_INVALID_VALUE;
	uintptr_t u;
	int rc = core_alloc(dev, n, &u);
	*p = u;
	return rc;
}

EXPORT int cuMemFree_v2(CUdeviceptr p) {
	ENTRY("cuMemFree_v2");
	CTX(dev);
	return core_free(dev, (uintptr_t)p, K_DEV);
}

EXPORT int cuMemHostAlloc(void **p, size_t n, unsigned flags) {
	ENTRY("cuMemHostAlloc");
	CTX(dev);
	(void)dev;
	(void)flags;
	if (p == NULL) return E_INVALID_VALUE;
	return core_host_alloc(p, n);
}

EXPORT int cuMemFreeHost(void *p) {
	ENTRY("cuMemFreeHost");
	CTX(dev);
	(void)dev;
	return core_free(-1, (uintptr_t)p, K_HOST);
}

static int host_register(void *p, size_t n) {
	CTX(dev);
	(void)dev;
	return core_register(p, n);
}

EXPORT int cuMemHostUnregister(void *p) {
	ENTRY("cuMemHostUnregister");
	CTX(dev);
	(void)dev;
	return core_unregister(p);
}

EXPORT int cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void *src, size_t n, void *s) {
	ENTRY("cuMemcpyHtoDAsync_v2");
	CTX(dev);
	return core_copy(dev, (void *)(uintptr_t)dst, src, n, 1, s);
}

EXPORT int cuMemcpyDtoHAsync_v2(void *dst, CUdeviceptr src, size_t n, void *s) {
	ENTRY("cuMemcpyDtoHAsync_v2");
	CTX(dev);
	return core_copy(dev, dst, (const void *)(uintptr_t)src, n, 2, s);
}

EXPORT int cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t n, void *s) {
	ENTRY("cuMemcpyDtoDAsync_v2");
	CTX(dev);
	return core_copy(dev, (void *)(uintptr_t)dst, (const void *)(uintptr_t)src, n, 3, s);
}

EXPORT int cuStreamCreate(void **s, unsigned flags) {
	ENTRY("cuStreamCreate");
	CTX(dev);
	(void)flags;
	if (s == NULL) return E_INVALID_VALUE;
	return core_stream_create(dev, s);
}

static int stream_destroy(void *s) {
	CTX(dev);
	return core_stream_destroy(dev, s);
}

EXPORT int cuStreamSynchronize(void *s) {
	ENTRY("cuStreamSynchronize");
	CTX(dev);
	return stream_ok(s, dev) ? E_OK : E_INVALID_HANDLE;
}

EXPORT int cuEventCreate(void **e, unsigned flags) {
	ENTRY("cuEventCreate");
	CTX(dev);
	(void)flags;
	if (e == NULL) return E_INVALID_VALUE;
	return core_event_create(dev, e);
}

static int event_destroy(void *e) {
	CTX(dev);
	(void)dev;
	return core_event_destroy(e);
}

EXPORT int cuEventRecord(void *e, void *s) {
	ENTRY("cuEventRecord");
	CTX(dev);
	return core_event_record(dev, e, s);
}

EXPORT int cuEventSynchronize(void *e) {
	ENTRY("cuEventSynchronize");
	CTX(dev);
	(void)dev;
	return core_event_ok(e) ? E_OK : E_INVALID_HANDLE;
}

static int event_elapsed(float *ms, void *a, void *b) {
	CTX(dev);
	(void)dev;
	return core_elapsed(ms, a, b);
}

EXPORT int cuIpcGetMemHandle(void *h, CUdeviceptr p) {
	ENTRY("cuIpcGetMemHandle");
	CTX(dev);
	(void)dev;
	return core_ipc_get(h, (uintptr_t)p);
}

typedef struct {
	char reserved[64];
} cu_ipc_t;

static int ipc_open(CUdeviceptr *p, cu_ipc_t h, unsigned flags) {
	CTX(dev);
	// cuIpcOpenMemHandle requires CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS.
	if (flags != 0x1) return E_INVALID_VALUE;
	if (p == NULL) return E_INVALID_VALUE;
	uintptr_t u;
	int rc = core_ipc_open(dev, &u, h.reserved);
	*p = u;
	return rc;
}

EXPORT int cuIpcCloseMemHandle(CUdeviceptr p) {
	ENTRY("cuIpcCloseMemHandle");
	CTX(dev);
	(void)dev;
	return core_free(-1, (uintptr_t)p, K_IPC);
}

EXPORT int cuGetErrorName(int code, const char **s) {
	if (s == NULL) return E_INVALID_VALUE;
	const char *n = error_name(code);
	if (n == NULL) return E_INVALID_VALUE;
	static __thread char buf[64];
	snprintf(buf, sizeof(buf), "CUDA_%s", n);
	*s = buf;
	return E_OK;
}

// Entry points whose _v2 kept the ABI: the real driver exports both names.
EXPORT int cuDevicePrimaryCtxRelease_v2(int d) { ENTRY("cuDevicePrimaryCtxRelease_v2"); return ctx_release(d); }
EXPORT int cuMemHostRegister_v2(void *p, size_t n, unsigned f) { (void)f; ENTRY("cuMemHostRegister_v2"); return host_register(p, n); }
EXPORT int cuStreamDestroy_v2(void *s) { ENTRY("cuStreamDestroy_v2"); return stream_destroy(s); }
EXPORT int cuEventDestroy_v2(void *e) { ENTRY("cuEventDestroy_v2"); return event_destroy(e); }
EXPORT int cuEventElapsedTime_v2(float *ms, void *a, void *b) { ENTRY("cuEventElapsedTime_v2"); return event_elapsed(ms, a, b); }
EXPORT int cuIpcOpenMemHandle_v2(CUdeviceptr *p, cu_ipc_t h, unsigned f) { ENTRY("cuIpcOpenMemHandle_v2"); return ipc_open(p, h, f); }
EXPORT int cuDevicePrimaryCtxRelease(int d) { ENTRY("cuDevicePrimaryCtxRelease"); return ctx_release(d); }
EXPORT int cuMemHostRegister(void *p, size_t n, unsigned f) { (void)f; ENTRY("cuMemHostRegister"); return host_register(p, n); }
EXPORT int cuStreamDestroy(void *s) { ENTRY("cuStreamDestroy"); return stream_destroy(s); }
EXPORT int cuEventDestroy(void *e) { ENTRY("cuEventDestroy"); return event_destroy(e); }
EXPORT int cuEventElapsedTime(float *ms, void *a, void *b) { ENTRY("cuEventElapsedTime"); return event_elapsed(ms, a, b); }
EXPORT int cuIpcOpenMemHandle(CUdeviceptr *p, cu_ipc_t h, unsigned f) { ENTRY("cuIpcOpenMemHandle"); return ipc_open(p, h, f); }

// Legacy entry points with 32-bit arguments. A binding must never use
// them; they fail so that a wrong fallback shows up in tests.
EXPORT int cuMemAlloc(unsigned *p, unsigned n) { (void)p; (void)n; ENTRY("cuMemAlloc"); return E_NOT_SUPPORTED; }
EXPORT int cuMemFree(unsigned p) { (void)p; ENTRY("cuMemFree"); return E_NOT_SUPPORTED; }
EXPORT int cuMemGetInfo(unsigned *f, unsigned *t) { (void)f; (void)t; ENTRY("cuMemGetInfo"); return E_NOT_SUPPORTED; }
EXPORT int cuDeviceTotalMem(unsigned *b, int d) { (void)b; (void)d; ENTRY("cuDeviceTotalMem"); return E_NOT_SUPPORTED; }
EXPORT int cuMemcpyHtoDAsync(unsigned d, const void *s, unsigned n, void *st) { (void)d; (void)s; (void)n; (void)st; ENTRY("cuMemcpyHtoDAsync"); return E_NOT_SUPPORTED; }
EXPORT int cuMemcpyDtoHAsync(void *d, unsigned s, unsigned n, void *st) { (void)d; (void)s; (void)n; (void)st; ENTRY("cuMemcpyDtoHAsync"); return E_NOT_SUPPORTED; }
EXPORT int cuMemcpyDtoDAsync(unsigned d, unsigned s, unsigned n, void *st) { (void)d; (void)s; (void)n; (void)st; ENTRY("cuMemcpyDtoDAsync"); return E_NOT_SUPPORTED; }


// ==================== HIP runtime ====================

#define HIPDEV(dev)                                      \
	int dev = t_hipdev;                              \
	do {                                             \
		if (!inited()) return E_NOT_INITIALIZED; \
		if (dev >= ndev()) return E_NO_DEVICE;   \
	} while (0)

EXPORT int hipInit(unsigned flags) {
	ENTRY("hipInit");
	if (flags != 0) return E_INVALID_VALUE;
	return init_result();
}

EXPORT int hipDriverGetVersion(int *v) {
	ENTRY("hipDriverGetVersion");
	if (v == NULL) return E_INVALID_VALUE;
	*v = version_or(60241);
	return E_OK;
}

EXPORT int hipGetDeviceCount(int *n) {
	ENTRY("hipGetDeviceCount");
	if (n == NULL) return E_INVALID_VALUE;
	*n = ndev();
	return *n == 0 ? E_NO_DEVICE : E_OK;
}

EXPORT int hipSetDevice(int d) {
	ENTRY("hipSetDevice");
	if (d < 0 || d >= ndev()) return E_INVALID_DEVICE;
	t_hipdev = d;
	return E_OK;
}

EXPORT int hipGetDevice(int *d) {
	ENTRY("hipGetDevice");
	if (d == NULL) return E_INVALID_VALUE;
	*d = t_hipdev;
	return E_OK;
}

EXPORT int hipSetDeviceFlags(unsigned flags) {
	ENTRY("hipSetDeviceFlags");
	int d = t_hipdev;
	if (d < 0 || d >= ndev()) return E_INVALID_DEVICE;
	pthread_mutex_lock(&mu);
	g_hip_flags[d] = flags;
	pthread_mutex_unlock(&mu);
	return E_OK;
}

EXPORT int hipDeviceGet(int *d, int ordinal) {
	ENTRY("hipDeviceGet");
	if (d == NULL) return E_INVALID_VALUE;
	if (ordinal < 0 || ordinal >= ndev()) return E_INVALID_DEVICE;
	*d = ordinal;
	return E_OK;
}

EXPORT int hipDeviceGetName(char *name, int len, int d) {
	ENTRY("hipDeviceGetName");
	if (d < 0 || d >= ndev()) return E_INVALID_DEVICE;
	if (name == NULL || len <= 0) return E_INVALID_VALUE;
	snprintf(name, (size_t)len, "Fake HIP GPU %d", d);
	return E_OK;
}

EXPORT int hipDeviceGetPCIBusId(char *bus, int len, int d) {
	ENTRY("hipDeviceGetPCIBusId");
	if (d < 0 || d >= ndev()) return E_INVALID_DEVICE;
	if (bus == NULL || len <= 0) return E_INVALID_VALUE;
	snprintf(bus, (size_t)len, "0000:%02x:00.0", 0x20 + d);
	return E_OK;
}

EXPORT int hipDeviceTotalMem(size_t *bytes, int d) {
	ENTRY("hipDeviceTotalMem");
	if (d < 0 || d >= ndev()) return E_INVALID_DEVICE;
	if (bytes == NULL) return E_INVALID_VALUE;
	pthread_mutex_lock(&mu);
	*bytes = g_mem;
	pthread_mutex_unlock(&mu);
	return E_OK;
}

EXPORT int hipMemGetInfo(size_t *f, size_t *t) {
	ENTRY("hipMemGetInfo");
	HIPDEV(dev);
	return core_mem_info(dev, f, t);
}

EXPORT int hipMalloc(void **p, size_t n) {
	ENTRY("hipMalloc");
	HIPDEV(dev);
	if (p == NULL) return E_INVALID_VALUE;
	uintptr_t u;
	int rc = core_alloc(dev, n, &u);
	*p = (void *)u;
	return rc;
}

EXPORT int hipFree(void *p) {
	ENTRY("hipFree");
	HIPDEV(dev);
	if (p == NULL) return E_OK;
	return core_free(dev, (uintptr_t)p, K_DEV);
}

EXPORT int hipHostMalloc(void **p, size_t n, unsigned flags) {
	ENTRY("hipHostMalloc");
	HIPDEV(dev);
	(void)dev;
	(void)flags;
	if (p == NULL) return E_INVALID_VALUE;
	return core_host_alloc(p, n);
}

EXPORT int hipHostFree(void *p) {
	ENTRY("hipHostFree");
	HIPDEV(dev);
	(void)dev;
	return core_free(-1, (uintptr_t)p, K_HOST);
}

EXPORT int hipHostRegister(void *p, size_t n, unsigned flags) {
	ENTRY("hipHostRegister");
	HIPDEV(dev);
	(void)dev;
	(void)flags;
	return core_register(p, n);
}

EXPORT int hipHostUnregister(void *p) {
	ENTRY("hipHostUnregister");
	HIPDEV(dev);
	(void)dev;
	return core_unregister(p);
}

EXPORT int hipMemcpyAsync(void *dst, const void *src, size_t n, int kind, void *s) {
	ENTRY("hipMemcpyAsync");
	HIPDEV(dev);
	if (kind < 1 || kind > 3) return E_INVALID_VALUE;
	return core_copy(dev, dst, src, n, kind, s);
}

EXPORT int hipStreamCreateWithFlags(void **s, unsigned flags) {
	ENTRY("hipStreamCreateWithFlags");
	HIPDEV(dev);
	(void)flags;
	if (s == NULL) return E_INVALID_VALUE;
	return core_stream_create(dev, s);
}

EXPORT int hipStreamDestroy(void *s) {
	ENTRY("hipStreamDestroy");
	HIPDEV(dev);
	return core_stream_destroy(dev, s);
}

EXPORT int hipStreamSynchronize(void *s) {
	ENTRY("hipStreamSynchronize");
	HIPDEV(dev);
	return stream_ok(s, dev) ? E_OK : E_INVALID_HANDLE;
}

EXPORT int hipEventCreateWithFlags(void **e, unsigned flags) {
	ENTRY("hipEventCreateWithFlags");
	HIPDEV(dev);
	(void)flags;
	if (e == NULL) return E_INVALID_VALUE;
	return core_event_create(dev, e);
}

EXPORT int hipEventDestroy(void *e) {
	ENTRY("hipEventDestroy");
	return core_event_destroy(e);
}

EXPORT int hipEventRecord(void *e, void *s) {
	ENTRY("hipEventRecord");
	HIPDEV(dev);
	return core_event_record(dev, e, s);
}

EXPORT int hipEventSynchronize(void *e) {
	ENTRY("hipEventSynchronize");
	return core_event_ok(e) ? E_OK : E_INVALID_HANDLE;
}

EXPORT int hipEventElapsedTime(float *ms, void *a, void *b) {
	ENTRY("hipEventElapsedTime");
	return core_elapsed(ms, a, b);
}

typedef struct {
	char reserved[64];
} hip_ipc_t;

EXPORT int hipIpcGetMemHandle(hip_ipc_t *h, void *p) {
	ENTRY("hipIpcGetMemHandle");
	HIPDEV(dev);
	(void)dev;
	return core_ipc_get(h, (uintptr_t)p);
}

EXPORT int hipIpcOpenMemHandle(void **p, hip_ipc_t h, unsigned flags) {
	ENTRY("hipIpcOpenMemHandle");
	HIPDEV(dev);
	// ROCm 5 defined hipIpcMemLazyEnablePeerAccess as 0 and rejects any
	// other value; HIP 6 made it 0x1.
	if (flags != (hip_major(version_or(60241)) < 6 ? 0u : 0x1u)) return E_INVALID_VALUE;
	if (p == NULL) return E_INVALID_VALUE;
	uintptr_t u;
	int rc = core_ipc_open(dev, &u, h.reserved);
	*p = (void *)u;
	return rc;
}

EXPORT int hipIpcCloseMemHandle(void *p) {
	ENTRY("hipIpcCloseMemHandle");
	HIPDEV(dev);
	(void)dev;
	return core_free(-1, (uintptr_t)p, K_IPC);
}

EXPORT const char *hipGetErrorName(int code) {
	static __thread char buf[64];
	const char *n = error_name(code);
	if (n == NULL) return "hipErrorUnknown";
	snprintf(buf, sizeof(buf), "hip_%s", n);
	return buf;
}

