// kvgpu: a vendor-neutral shim over the CUDA driver API (libcuda.so.1) and
// the HIP runtime (libamdhip64.so), both loaded with dlopen at run time. The
// few types and prototypes it needs are declared here; no GPU SDK header is
// included, so building needs only a C compiler.
//
// Every function returns a vendor status code (0 = success; CUDA and HIP use
// the same numbers for the codes kvgpu cares about) or one of the negative
// KVG_E* codes for failures of the shim itself.
#ifndef KVGPU_H
#define KVGPU_H

#include <stddef.h>
#include <stdint.h>

enum {
	KVG_VENDOR_ANY = 0,
	KVG_VENDOR_CUDA = 1,
	KVG_VENDOR_HIP = 2,
};

enum {
	KVG_ENOLIB = -1,   // the library could not be loaded
	KVG_ENOSYM = -2,   // a required symbol is missing
	KVG_ENOTSUP = -3,  // an optional symbol this call needs is missing
	KVG_EINVAL = -4,   // bad argument caught by the shim
	KVG_ENODEV = -5,   // the ordinal names no device
	KVG_ENOMEM = -6,   // host malloc failed
};

enum {
	KVG_H2D = 1,
	KVG_D2H = 2,
	KVG_D2D = 3,
};

#define KVG_IPC_HANDLE_SIZE 64

typedef struct kvg_dev kvg_dev;

// kvg_open loads path (vendor KVG_VENDOR_ANY detects it from the symbols),
// initializes the driver and binds device ordinal. On failure *out is NULL
// and msg holds a description.
int kvg_open(const char *path, int vendor, int ordinal, kvg_dev **out, char *msg, size_t msglen);
void kvg_close(kvg_dev *d);
int kvg_vendor(kvg_dev *d);
void kvg_lib_path(kvg_dev *d, char *buf, size_t len);
const char *kvg_error_name(kvg_dev *d, int code);

int kvg_device_count(kvg_dev *d, int *n);
int kvg_info(kvg_dev *d, char *name, int namelen, char *busid, int buslen, size_t *total, int *driver);
int kvg_mem_info(kvg_dev *d, size_t *free_bytes, size_t *total_bytes);

int kvg_alloc(kvg_dev *d, uint64_t *ptr, size_t n);
int kvg_free(kvg_dev *d, uint64_t ptr);
int kvg_host_alloc(kvg_dev *d, void **p, size_t n);
int kvg_host_free(kvg_dev *d, void *p);
int kvg_host_register(kvg_dev *d, void *p, size_t n);
int kvg_host_unregister(kvg_dev *d, void *p);

int kvg_stream_create(kvg_dev *d, uintptr_t *s);
int kvg_stream_destroy(kvg_dev *d, uintptr_t s);
int kvg_stream_sync(kvg_dev *d, uintptr_t s);
int kvg_event_create(kvg_dev *d, uintptr_t *e);
int kvg_event_destroy(kvg_dev *d, uintptr_t e);
int kvg_event_record(kvg_dev *d, uintptr_t e, uintptr_t s);
int kvg_event_sync(kvg_dev *d, uintptr_t e);
int kvg_event_elapsed(kvg_dev *d, float *ms, uintptr_t start, uintptr_t stop);

// Copies. host is the host side for H2D (source) and D2H (destination) and
// is ignored for D2D. When ev0 and ev1 are non-zero they are recorded around
// the copy. When wait is non-zero the stream is synchronized before return
// and, with both events, ms is the event-timed duration. (Returned by value
// so that Go passes no pointer and allocates nothing.)
typedef struct {
	int rc;
	float ms;
} kvg_copy_result;

kvg_copy_result kvg_copy(kvg_dev *d, int kind, uint64_t dptr, void *host, uint64_t dsrc, size_t n,
                         uintptr_t s, uintptr_t ev0, uintptr_t ev1, int wait);

// kvg_copy_repeat queues count copies of the same n bytes on s in one call
// (one context bind): for benchmarks, whose per-copy call overhead would
// otherwise be what small-block rows measure. On failure it synchronizes
// s before returning.
int kvg_copy_repeat(kvg_dev *d, int kind, uint64_t dptr, void *host, uint64_t dsrc, size_t n,
                    long count, uintptr_t s);

int kvg_ipc_get(kvg_dev *d, void *handle64, uint64_t ptr);
int kvg_ipc_open(kvg_dev *d, uint64_t *ptr, const void *handle64);
int kvg_ipc_close(kvg_dev *d, uint64_t ptr);

#endif
