//go:build cgo

// kvgpu shim: dlopen/dlsym of the CUDA driver API or the HIP runtime, and C
// wrappers that call through the function-pointer table (cgo cannot call a
// function pointer itself).
//
// Thread binding: the CUDA current context and the HIP current device are
// per OS thread, and a goroutine may run each cgo call on a different thread.
// Every wrapper therefore makes the device current (cuCtxSetCurrent of the
// retained primary context, or hipSetDevice) on the calling thread before the
// driver call, inside the same C call, so nothing can run in between, and
// restores the thread's previous context or device when it returns (BIND's
// cleanup), so another CUDA or HIP user in the process that runs on the
// same OS thread keeps its own. These calls only read and write
// thread-local state in the driver and cost tens of nanoseconds, far less
// than a copy.
//
// Scheduling: the primary context is asked for CU_CTX_SCHED_BLOCKING_SYNC
// (HIP: hipDeviceScheduleBlockingSync) before it is retained, so a thread
// waiting in cuStreamSynchronize sleeps instead of spinning a core: a
// daemon with four copy lanes does not burn four cores.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvgpu.h"

typedef int res_t; // CUresult / hipError_t
typedef struct {
	char reserved[KVG_IPC_HANDLE_SIZE];
} ipc_handle_t; // CUipcMemHandle / hipIpcMemHandle_t

// Flags (values from the vendor documentation).
#define CU_STREAM_NON_BLOCKING 0x1
#define CU_EVENT_DEFAULT 0x0
#define CU_MEMHOSTALLOC_PORTABLE 0x1
#define CU_MEMHOSTREGISTER_PORTABLE 0x1
#define CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS 0x1
#define CU_CTX_SCHED_BLOCKING_SYNC 0x4
#define HIP_DEVICE_SCHEDULE_BLOCKING_SYNC 0x4
#define HIP_STREAM_NON_BLOCKING 0x1
#define HIP_EVENT_DEFAULT 0x0
#define HIP_HOST_MALLOC_PORTABLE 0x1
#define HIP_HOST_REGISTER_PORTABLE 0x1
// hipIpcMemLazyEnablePeerAccess: 0x1 since HIP 6.0; ROCm 5 defined it as 0
// and its hipIpcOpenMemHandle rejects any other value (HIP 6.0 changelog).
#define HIP_IPC_MEM_LAZY_ENABLE_PEER_ACCESS 0x1
#define HIP5_IPC_MEM_LAZY_ENABLE_PEER_ACCESS 0x0
#define HIP_MEMCPY_H2D 1 // hipMemcpyHostToDevice
#define HIP_MEMCPY_D2H 2 // hipMemcpyDeviceToHost
#define HIP_MEMCPY_D2D 3 // hipMemcpyDeviceToDevice

typedef struct {
	// CUDA driver API. Pointer-sized arguments use the _v2 ABI
	// (CUdeviceptr = unsigned long long, sizes = size_t).
	res_t (*cuInit)(unsigned int);
	res_t (*cuDriverGetVersion)(int *);
	res_t (*cuDeviceGetCount)(int *);
	res_t (*cuDeviceGet)(int *, int);
	res_t (*cuDeviceGetName)(char *, int, int);
	res_t (*cuDeviceGetPCIBusId)(char *, int, int);
	res_t (*cuDeviceTotalMem)(size_t *, int);
	res_t (*cuDevicePrimaryCtxRetain)(void **, int);
	res_t (*cuDevicePrimaryCtxRelease)(int);
	res_t (*cuCtxSetCurrent)(void *);
	res_t (*cuCtxGetCurrent)(void **);
	res_t (*cuDevicePrimaryCtxSetFlags)(int, unsigned int);
	res_t (*cuMemGetInfo)(size_t *, size_t *);
	res_t (*cuMemAlloc)(unsigned long long *, size_t);
	res_t (*cuMemFree)(unsigned long long);
	res_t (*cuMemHostAlloc)(void **, size_t, unsigned int);
	res_t (*cuMemFreeHost)(void *);
	res_t (*cuMemHostRegister)(void *, size_t, unsigned int);
	res_t (*cuMemHostUnregister)(void *);
	res_t (*cuMemcpyHtoDAsync)(unsigned long long, const void *, size_t, void *);
	res_t (*cuMemcpyDtoHAsync)(void *, unsigned long long, size_t, void *);
	res_t (*cuMemcpyDtoDAsync)(unsigned long long, unsigned long long, size_t, void *);
	res_t (*cuStreamCreate)(void **, unsigned int);
	res_t (*cuStreamDestroy)(void *);
	res_t (*cuStreamSynchronize)(void *);
	res_t (*cuEventCreate)(void **, unsigned int);
	res_t (*cuEventDestroy)(void *);
	res_t (*cuEventRecord)(void *, void *);
	res_t (*cuEventSynchronize)(void *);
	res_t (*cuEventElapsedTime)(float *, void *, void *);
	res_t (*cuIpcGetMemHandle)(ipc_handle_t *, unsigned long long);
	res_t (*cuIpcOpenMemHandle)(unsigned long long *, ipc_handle_t, unsigned int);
	res_t (*cuIpcCloseMemHandle)(unsigned long long);
	res_t (*cuGetErrorName)(res_t, const char **);

	// HIP runtime.
	res_t (*hipInit)(unsigned int);
	res_t (*hipDriverGetVersion)(int *);
	res_t (*hipGetDeviceCount)(int *);
	res_t (*hipSetDevice)(int);
	res_t (*hipGetDevice)(int *);
	res_t (*hipSetDeviceFlags)(unsigned int);
	res_t (*hipDeviceGet)(int *, int);
	res_t (*hipDeviceGetName)(char *, int, int);
	res_t (*hipDeviceGetPCIBusId)(char *, int, int);
	res_t (*hipDeviceTotalMem)(size_t *, int);
	res_t (*hipMemGetInfo)(size_t *, size_t *);
	res_t (*hipMalloc)(void **, size_t);
	res_t (*hipFree)(void *);
	res_t (*hipHostMalloc)(void **, size_t, unsigned int);
	res_t (*hipHostFree)(void *);
	res_t (*hipHostRegister)(void *, size_t, unsigned int);
	res_t (*hipHostUnregister)(void *);
	res_t (*hipMemcpyAsync)(void *, const void *, size_t, int, void *);
	res_t (*hipStreamCreateWithFlags)(void **, unsigned int);
	res_t (*hipStreamDestroy)(void *);
	res_t (*hipStreamSynchronize)(void *);
	res_t (*hipEventCreateWithFlags)(void **, unsigned int);
	res_t (*hipEventDestroy)(void *);
	res_t (*hipEventRecord)(void *, void *);
	res_t (*hipEventSynchronize)(void *);
	res_t (*hipEventElapsedTime)(float *, void *, void *);
	res_t (*hipIpcGetMemHandle)(ipc_handle_t *, void *);
	res_t (*hipIpcOpenMemHandle)(void **, ipc_handle_t, unsigned int);
	res_t (*hipIpcCloseMemHandle)(void *);
	const char *(*hipGetErrorName)(res_t);
} fns_t;

struct kvg_dev {
	void *lib;
	int vendor;
	int ordinal;
	int cudev;  // CUdevice / hipDevice_t
	void *ctx;  // retained CUDA primary context
	unsigned hip_ipc_flags; // hipIpcOpenMemHandle's flags for this runtime
	fns_t f;
};

// sym looks name up, then fb when it is not NULL. It returns NULL when
// neither is exported.
static void *sym(void *lib, const char *name, const char *fb) {
	void *p = dlsym(lib, name);
	if (p == NULL && fb != NULL) {
		p = dlsym(lib, fb);
	}
	return p;
}

#define REQ(field, name, fb)                                                        \
	do {                                                                        \
		*(void **)(&d->f.field) = sym(d->lib, name, fb);                    \
		if (d->f.field == NULL) {                                           \
			snprintf(msg, msglen, "required symbol %s missing from %s", \
			         name, path);                                       \
			return KVG_ENOSYM;                                          \
		}                                                                   \
	} while (0)
#define OPT(field, name, fb) (*(void **)(&d->f.field) = sym(d->lib, name, fb))

// The _v2 entry points of these CUDA functions change the ABI (64-bit
// CUdeviceptr and size_t), so they have no fallback: the unversioned symbols
// take 32-bit arguments. Those whose _v2 changed only the semantics fall back
// to the unversioned name.
static int bind_cuda(kvg_dev *d, const char *path, char *msg, size_t msglen) {
	REQ(cuInit, "cuInit", NULL);
	REQ(cuDeviceGetCount, "cuDeviceGetCount", NULL);
	REQ(cuDeviceGet, "cuDeviceGet", NULL);
	REQ(cuDeviceGetName, "cuDeviceGetName", NULL);
	REQ(cuDeviceTotalMem, "cuDeviceTotalMem_v2", NULL);
	REQ(cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain", NULL);
	REQ(cuDevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2", "cuDevicePrimaryCtxRelease");
	REQ(cuCtxSetCurrent, "cuCtxSetCurrent", NULL);
	REQ(cuMemGetInfo, "cuMemGetInfo_v2", NULL);
	REQ(cuMemAlloc, "cuMemAlloc_v2", NULL);
	REQ(cuMemFree, "cuMemFree_v2", NULL);
	REQ(cuMemHostAlloc, "cuMemHostAlloc", NULL);
	REQ(cuMemFreeHost, "cuMemFreeHost", NULL);
	REQ(cuMemHostRegister, "cuMemHostRegister_v2", "cuMemHostRegister");
	REQ(cuMemHostUnregister, "cuMemHostUnregister", NULL);
	REQ(cuMemcpyHtoDAsync, "cuMemcpyHtoDAsync_v2", NULL);
	REQ(cuMemcpyDtoHAsync, "cuMemcpyDtoHAsync_v2", NULL);
	REQ(cuMemcpyDtoDAsync, "cuMemcpyDtoDAsync_v2", NULL);
	REQ(cuStreamCreate, "cuStreamCreate", NULL);
	REQ(cuStreamDestroy, "cuStreamDestroy_v2", "cuStreamDestroy");
	REQ(cuStreamSynchronize, "cuStreamSynchronize", NULL);
	REQ(cuEventCreate, "cuEventCreate", NULL);
	REQ(cuEventDestroy, "cuEventDestroy_v2", "cuEventDestroy");
	REQ(cuEventRecord, "cuEventRecord", NULL);
	REQ(cuEventSynchronize, "cuEventSynchronize", NULL);
	REQ(cuEventElapsedTime, "cuEventElapsedTime_v2", "cuEventElapsedTime");
	OPT(cuDriverGetVersion, "cuDriverGetVersion", NULL);
	OPT(cuDeviceGetPCIBusId, "cuDeviceGetPCIBusId", NULL);
	OPT(cuIpcGetMemHandle, "cuIpcGetMemHandle", NULL);
	OPT(cuIpcOpenMemHandle, "cuIpcOpenMemHandle_v2", "cuIpcOpenMemHandle");
	OPT(cuIpcCloseMemHandle, "cuIpcCloseMemHandle", NULL);
	OPT(cuGetErrorName, "cuGetErrorName", NULL);
	OPT(cuCtxGetCurrent, "cuCtxGetCurrent", NULL);
	OPT(cuDevicePrimaryCtxSetFlags, "cuDevicePrimaryCtxSetFlags_v2", "cuDevicePrimaryCtxSetFlags");
	return 0;
}

static int bind_hip(kvg_dev *d, const char *path, char *msg, size_t msglen) {
	REQ(hipInit, "hipInit", NULL);
	REQ(hipGetDeviceCount, "hipGetDeviceCount", NULL);
	REQ(hipSetDevice, "hipSetDevice", NULL);
	REQ(hipDeviceGet, "hipDeviceGet", NULL);
	REQ(hipDeviceGetName, "hipDeviceGetName", NULL);
	REQ(hipDeviceTotalMem, "hipDeviceTotalMem", NULL);
	REQ(hipMemGetInfo, "hipMemGetInfo", NULL);
	REQ(hipMalloc, "hipMalloc", NULL);
	REQ(hipFree, "hipFree", NULL);
	REQ(hipHostMalloc, "hipHostMalloc", "hipHostAlloc");
	REQ(hipHostFree, "hipHostFree", NULL);
	REQ(hipHostRegister, "hipHostRegister", NULL);
	REQ(hipHostUnregister, "hipHostUnregister", NULL);
	REQ(hipMemcpyAsync, "hipMemcpyAsync", NULL);
	REQ(hipStreamCreateWithFlags, "hipStreamCreateWithFlags", NULL);
	REQ(hipStreamDestroy, "hipStreamDestroy", NULL);
	REQ(hipStreamSynchronize, "hipStreamSynchronize", NULL);
	REQ(hipEventCreateWithFlags, "hipEventCreateWithFlags", NULL);
	REQ(hipEventDestroy, "hipEventDestroy", NULL);
	REQ(hipEventRecord, "hipEventRecord", NULL);
	REQ(hipEventSynchronize, "hipEventSynchronize", NULL);
	REQ(hipEventElapsedTime, "hipEventElapsedTime", NULL);
	OPT(hipDriverGetVersion, "hipDriverGetVersion", NULL);
	OPT(hipDeviceGetPCIBusId, "hipDeviceGetPCIBusId", NULL);
	OPT(hipIpcGetMemHandle, "hipIpcGetMemHandle", NULL);
	OPT(hipIpcOpenMemHandle, "hipIpcOpenMemHandle", NULL);
	OPT(hipIpcCloseMemHandle, "hipIpcCloseMemHandle", NULL);
	OPT(hipGetErrorName, "hipGetErrorName", NULL);
	OPT(hipGetDevice, "hipGetDevice", NULL);
	OPT(hipSetDeviceFlags, "hipSetDeviceFlags", NULL);
	return 0;
}

// bind_guard remembers the calling thread's context (CUDA) or device
// (HIP) from before bind, to put back when the wrapper returns.
typedef struct {
	kvg_dev *d;
	void *prev_ctx;
	int prev_dev;
	int restore;
} bind_guard;

// bind makes d's device current on the calling thread and records in g
// what to restore.
static inline int bind(kvg_dev *d, bind_guard *g) {
	int rc;
	g->d = d;
	g->restore = 0;
	if (d->vendor == KVG_VENDOR_CUDA) {
		int known = d->f.cuCtxGetCurrent != NULL && d->f.cuCtxGetCurrent(&g->prev_ctx) == 0;
		if ((rc = d->f.cuCtxSetCurrent(d->ctx)) != 0) return rc;
		g->restore = known && g->prev_ctx != d->ctx;
		return 0;
	}
	int known = d->f.hipGetDevice != NULL && d->f.hipGetDevice(&g->prev_dev) == 0;
	if ((rc = d->f.hipSetDevice(d->ordinal)) != 0) return rc;
	g->restore = known && g->prev_dev != d->ordinal;
	return 0;
}

// unbind restores what bind replaced (the cleanup of BIND's guard).
static inline void unbind(bind_guard *g) {
	if (!g->restore) return;
	if (g->d->vendor == KVG_VENDOR_CUDA) {
		(void)g->d->f.cuCtxSetCurrent(g->prev_ctx);
	} else {
		(void)g->d->f.hipSetDevice(g->prev_dev);
	}
}

// BIND binds d for the rest of the calling function and restores the
// thread's previous binding however the function returns.
#define BIND(d)                                                              \
	bind_guard guard_ __attribute__((cleanup(unbind))) = {0, NULL, 0, 0}; \
	do {                                                                 \
		int rc_ = bind(d, &guard_);                                  \
		if (rc_ != 0) return rc_;                                    \
	} while (0)

#define IS_CUDA(d) ((d)->vendor == KVG_VENDOR_CUDA)

// STEP makes one driver call of open_device; on failure it names the call
// in msg and returns its status.
#define STEP(call, what)                                      \
	do {                                                  \
		if ((rc = (call)) != 0) {                     \
			snprintf(msg, msglen, "%s", what);    \
			return rc;                            \
		}                                             \
	} while (0)

static int open_device(kvg_dev *d, int ordinal, char *msg, size_t msglen) {
	int rc, n = 0, cuda = IS_CUDA(d);
	STEP(cuda ? d->f.cuInit(0) : d->f.hipInit(0), cuda ? "cuInit" : "hipInit");
	STEP(kvg_device_count(d, &n), cuda ? "cuDeviceGetCount" : "hipGetDeviceCount");
	if (ordinal >= n) {
		snprintf(msg, msglen, "device %d requested, %d present", ordinal, n);
		return KVG_ENODEV;
	}
	STEP(cuda ? d->f.cuDeviceGet(&d->cudev, ordinal) : d->f.hipDeviceGet(&d->cudev, ordinal),
	     cuda ? "cuDeviceGet" : "hipDeviceGet");
	if (cuda) {
		// Waits block instead of spinning. The flags cannot change once
		// another user activated the primary context: then it keeps its
		// own, which is not an error.
		if (d->f.cuDevicePrimaryCtxSetFlags != NULL) {
			(void)d->f.cuDevicePrimaryCtxSetFlags(d->cudev, CU_CTX_SCHED_BLOCKING_SYNC);
		}
		STEP(d->f.cuDevicePrimaryCtxRetain(&d->ctx, d->cudev), "cuDevicePrimaryCtxRetain");
	} else if (d->f.hipSetDeviceFlags != NULL) {
		// hipSetDeviceFlags acts on the current device; restore it after.
		int prev = 0, known = d->f.hipGetDevice != NULL && d->f.hipGetDevice(&prev) == 0;
		if (d->f.hipSetDevice(ordinal) == 0) {
			(void)d->f.hipSetDeviceFlags(HIP_DEVICE_SCHEDULE_BLOCKING_SYNC);
			if (known && prev != ordinal) (void)d->f.hipSetDevice(prev);
		}
	}
	return 0;
}

#undef STEP

// hip_major returns the HIP runtime's major version: from
// hipDriverGetVersion (ROCm reports major*10000000 + minor*100000 + patch;
// older runtimes major*10000 + ...), else from a versioned library name
// (libamdhip64.so.5), else 6.
static int hip_major(kvg_dev *d, const char *path) {
	int v = 0;
	if (d->f.hipDriverGetVersion != NULL && d->f.hipDriverGetVersion(&v) == 0 && v > 0) {
		return v >= 10000000 ? v / 10000000 : v / 10000;
	}
	const char *so = strstr(path, ".so.");
	if (so != NULL && so[4] >= '1' && so[4] <= '9') {
		return atoi(so + 4);
	}
	return 6;
}

int kvg_open(const char *path, int vendor, int ordinal, kvg_dev **out, char *msg, size_t msglen) {
	*out = NULL;
	msg[0] = 0;
	if (ordinal < 0) {
		snprintf(msg, msglen, "negative device ordinal %d", ordinal);
		return KVG_EINVAL;
	}
	kvg_dev *d = calloc(1, sizeof(*d));
	if (d == NULL) {
		snprintf(msg, msglen, "out of host memory");
		return KVG_ENOMEM;
	}
	d->ordinal = ordinal;
	dlerror();
	d->lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (d->lib == NULL) {
		const char *e = dlerror();
		snprintf(msg, msglen, "%s", e ? e : path);
		free(d);
		return KVG_ENOLIB;
	}
	if (vendor == KVG_VENDOR_ANY) {
		if (dlsym(d->lib, "cuInit") != NULL) {
			vendor = KVG_VENDOR_CUDA;
		} else if (dlsym(d->lib, "hipInit") != NULL) {
			vendor = KVG_VENDOR_HIP;
		} else {
			snprintf(msg, msglen, "%s exports neither cuInit nor hipInit", path);
			dlclose(d->lib);
			free(d);
			return KVG_ENOSYM;
		}
	}
	d->vendor = vendor;
	int rc = vendor == KVG_VENDOR_CUDA ? bind_cuda(d, path, msg, msglen) : bind_hip(d, path, msg, msglen);
	if (rc != 0) {
		// Nothing was called yet: the library can go.
		dlclose(d->lib);
		free(d);
		return rc;
	}
	rc = open_device(d, ordinal, msg, msglen);
	if (rc != 0) {
		// Leave the library loaded on purpose: a driver that started
		// threads in its init must not be unmapped under them.
		free(d);
		return rc;
	}
	if (vendor == KVG_VENDOR_HIP) {
		d->hip_ipc_flags = hip_major(d, path) >= 6 ? HIP_IPC_MEM_LAZY_ENABLE_PEER_ACCESS
		                                          : HIP5_IPC_MEM_LAZY_ENABLE_PEER_ACCESS;
	}
	*out = d;
	return 0;
}

// kvg_close releases the primary context. The library stays loaded for the
// life of the process (unloading a GPU driver is not safe).
void kvg_close(kvg_dev *d) {
	if (d == NULL) return;
	if (IS_CUDA(d) && d->ctx != NULL) {
		d->f.cuDevicePrimaryCtxRelease(d->cudev);
	}
	free(d);
}

int kvg_vendor(kvg_dev *d) { return d->vendor; }

// kvg_lib_path writes the file the driver library was loaded from (dladdr
// of its init symbol), or an empty string when the loader does not say.
void kvg_lib_path(kvg_dev *d, char *buf, size_t len) {
	Dl_info info;
	void *fn = IS_CUDA(d) ? (void *)d->f.cuInit : (void *)d->f.hipInit;
	buf[0] = 0;
	if (fn != NULL && dladdr(fn, &info) != 0 && info.dli_fname != NULL) {
		snprintf(buf, len, "%s", info.dli_fname);
	}
}

const char *kvg_error_name(kvg_dev *d, int code) {
	const char *s = NULL;
	if (IS_CUDA(d)) {
		if (d->f.cuGetErrorName == NULL || d->f.cuGetErrorName(code, &s) != 0) {
			return NULL;
		}
		return s;
	}
	if (d->f.hipGetErrorName == NULL) return NULL;
	return d->f.hipGetErrorName(code);
}

int kvg_device_count(kvg_dev *d, int *n) {
	return IS_CUDA(d) ? d->f.cuDeviceGetCount(n) : d->f.hipGetDeviceCount(n);
}

int kvg_info(kvg_dev *d, char *name, int namelen, char *busid, int buslen, size_t *total, int *driver) {
	int rc;
	name[0] = 0;
	busid[0] = 0;
	*driver = 0;
	if (IS_CUDA(d)) {
		if ((rc = d->f.cuDeviceGetName(name, namelen, d->cudev)) != 0) return rc;
		if ((rc = d->f.cuDeviceTotalMem(total, d->cudev)) != 0) return rc;
		if (d->f.cuDeviceGetPCIBusId != NULL && d->f.cuDeviceGetPCIBusId(busid, buslen, d->cudev) != 0) busid[0] = 0;
		if (d->f.cuDriverGetVersion != NULL && d->f.cuDriverGetVersion(driver) != 0) *driver = 0;
		return 0;
	}
	if ((rc = d->f.hipDeviceGetName(name, namelen, d->cudev)) != 0) return rc;
	if ((rc = d->f.hipDeviceTotalMem(total, d->cudev)) != 0) return rc;
	if (d->f.hipDeviceGetPCIBusId != NULL && d->f.hipDeviceGetPCIBusId(busid, buslen, d->ordinal) != 0) busid[0] = 0;
	if (d->f.hipDriverGetVersion != NULL && d->f.hipDriverGetVersion(driver) != 0) *driver = 0;
	return 0;
}

int kvg_mem_info(kvg_dev *d, size_t *free_bytes, size_t *total_bytes) {
	BIND(d);
	return IS_CUDA(d) ? d->f.cuMemGetInfo(free_bytes, total_bytes) : d->f.hipMemGetInfo(free_bytes, total_bytes);
}

int kvg_alloc(kvg_dev *d, uint64_t *ptr, size_t n) {
	BIND(d);
	if (IS_CUDA(d)) {
		unsigned long long p = 0;
		int rc = d->f.cuMemAlloc(&p, n);
		*ptr = p;
		return rc;
	}
	void *p = NULL;
	int rc = d->f.hipMalloc(&p, n);
	*ptr = (uint64_t)(uintptr_t)p;
	return rc;
}

int kvg_free(kvg_dev *d, uint64_t ptr) {
	BIND(d);
	return IS_CUDA(d) ? d->f.cuMemFree(ptr) : d->f.hipFree((void *)(uintptr_t)ptr);
}

int kvg_host_alloc(kvg_dev *d, void **p, size_t n) {
	BIND(d);
	return IS_CUDA(d) ? d->f.cuMemHostAlloc(p, n, CU_MEMHOSTALLOC_PORTABLE)
	                  : d->f.hipHostMalloc(p, n, HIP_HOST_MALLOC_PORTABLE);
}

int kvg_host_free(kvg_dev *d, void *p) {
	BIND(d);
	return IS_CUDA(d) ? d->f.cuMemFreeHost(p) : d->f.hipHostFree(p);
}

int kvg_host_register(kvg_dev *d, void *p, size_t n) {
	BIND(d);
	return IS_CUDA(d) ? d->f.cuMemHostRegister(p, n, CU_MEMHOSTREGISTER_PORTABLE)
	                  : d->f.hipHostRegister(p, n, HIP_HOST_REGISTER_PORTABLE);
}

int kvg_host_unregister(kvg_dev *d, void *p) {
	BIND(d);
	return IS_CUDA(d) ? d->f.cuMemHostUnregister(p) : d->f.hipHostUnregister(p);
}

int kvg_stream_create(kvg_dev *d, uintptr_t *s) {
	void *h = NULL;
	BIND(d);
	int rc = IS_CUDA(d) ? d->f.cuStreamCreate(&h, CU_STREAM_NON_BLOCKING)
	                    : d->f.hipStreamCreateWithFlags(&h, HIP_STREAM_NON_BLOCKING);
	*s = (uintptr_t)h;
	return rc;
}

int kvg_stream_destroy(kvg_dev *d, uintptr_t s) {
	BIND(d);
	return IS_CUDA(d) ? d->f.cuStreamDestroy((void *)s) : d->f.hipStreamDestroy((void *)s);
}

static inline int stream_sync(kvg_dev *d, void *s) {
	return IS_CUDA(d) ? d->f.cuStreamSynchronize(s) : d->f.hipStreamSynchronize(s);
}

int kvg_stream_sync(kvg_dev *d, uintptr_t s) {
	BIND(d);
	return stream_sync(d, (void *)s);
}

int kvg_event_create(kvg_dev *d, uintptr_t *e) {
	void *h = NULL;
	BIND(d);
	int rc = IS_CUDA(d) ? d->f.cuEventCreate(&h, CU_EVENT_DEFAULT)
	                    : d->f.hipEventCreateWithFlags(&h, HIP_EVENT_DEFAULT);
	*e = (uintptr_t)h;
	return rc;
}

int kvg_event_destroy(kvg_dev *d, uintptr_t e) {
	BIND(d);
	return IS_CUDA(d) ? d->f.cuEventDestroy((void *)e) : d->f.hipEventDestroy((void *)e);
}

static inline int event_record(kvg_dev *d, uintptr_t e, uintptr_t s) {
	return IS_CUDA(d) ? d->f.cuEventRecord((void *)e, (void *)s) : d->f.hipEventRecord((void *)e, (void *)s);
}

int kvg_event_record(kvg_dev *d, uintptr_t e, uintptr_t s) {
	BIND(d);
	return event_record(d, e, s);
}

int kvg_event_sync(kvg_dev *d, uintptr_t e) {
	BIND(d);
	return IS_CUDA(d) ? d->f.cuEventSynchronize((void *)e) : d->f.hipEventSynchronize((void *)e);
}

static inline int event_elapsed(kvg_dev *d, float *ms, uintptr_t a, uintptr_t b) {
	return IS_CUDA(d) ? d->f.cuEventElapsedTime(ms, (void *)a, (void *)b)
	                  : d->f.hipEventElapsedTime(ms, (void *)a, (void *)b);
}

int kvg_event_elapsed(kvg_dev *d, float *ms, uintptr_t start, uintptr_t stop) {
	BIND(d);
	return event_elapsed(d, ms, start, stop);
}

// enqueue queues one asynchronous copy on st; the device must be bound.
static inline int enqueue(kvg_dev *d, int kind, uint64_t dptr, void *host, uint64_t dsrc, size_t n, void *st) {
	switch (kind) {
	case KVG_H2D:
		return IS_CUDA(d) ? d->f.cuMemcpyHtoDAsync(dptr, host, n, st)
		                  : d->f.hipMemcpyAsync((void *)(uintptr_t)dptr, host, n, HIP_MEMCPY_H2D, st);
	case KVG_D2H:
		return IS_CUDA(d) ? d->f.cuMemcpyDtoHAsync(host, dptr, n, st)
		                  : d->f.hipMemcpyAsync(host, (const void *)(uintptr_t)dptr, n, HIP_MEMCPY_D2H, st);
	case KVG_D2D:
		return IS_CUDA(d) ? d->f.cuMemcpyDtoDAsync(dptr, dsrc, n, st)
		                  : d->f.hipMemcpyAsync((void *)(uintptr_t)dptr, (const void *)(uintptr_t)dsrc, n, HIP_MEMCPY_D2D, st);
	}
	return KVG_EINVAL;
}

static int copy_wait(kvg_dev *d, int kind, uint64_t dptr, void *host, uint64_t dsrc, size_t n,
                     uintptr_t s, uintptr_t ev0, uintptr_t ev1, int wait, float *ms) {
	int rc;
	void *st = (void *)s;
	BIND(d);
	if (ev0 != 0 && (rc = event_record(d, ev0, s)) != 0) return rc;
	if ((rc = enqueue(d, kind, dptr, host, dsrc, n, st)) == KVG_EINVAL) return rc;
	if (rc == 0 && ev1 != 0) {
		rc = event_record(d, ev1, s);
	}
	if (rc != 0) {
		// Do not return while a copy that may touch the caller's memory
		// could still be queued.
		if (wait) (void)stream_sync(d, st);
		return rc;
	}
	if (!wait) return 0;
	if ((rc = stream_sync(d, st)) != 0) return rc;
	if (ev0 != 0 && ev1 != 0) {
		return event_elapsed(d, ms, ev0, ev1);
	}
	return 0;
}

kvg_copy_result kvg_copy(kvg_dev *d, int kind, uint64_t dptr, void *host, uint64_t dsrc, size_t n,
                         uintptr_t s, uintptr_t ev0, uintptr_t ev1, int wait) {
	kvg_copy_result r = {0, 0};
	r.rc = copy_wait(d, kind, dptr, host, dsrc, n, s, ev0, ev1, wait, &r.ms);
	return r;
}

int kvg_copy_repeat(kvg_dev *d, int kind, uint64_t dptr, void *host, uint64_t dsrc, size_t n,
                    long count, uintptr_t s) {
	int rc = 0;
	void *st = (void *)s;
	BIND(d);
	for (long i = 0; i < count; i++) {
		if ((rc = enqueue(d, kind, dptr, host, dsrc, n, st)) != 0) {
			// Nothing queued may run against memory the caller frees next.
			(void)stream_sync(d, st);
			return rc;
		}
	}
	return 0;
}

int kvg_ipc_get(kvg_dev *d, void *handle64, uint64_t ptr) {
	BIND(d);
	if (IS_CUDA(d)) {
		if (d->f.cuIpcGetMemHandle == NULL) return KVG_ENOTSUP;
		return d->f.cuIpcGetMemHandle((ipc_handle_t *)handle64, ptr);
	}
	if (d->f.hipIpcGetMemHandle == NULL) return KVG_ENOTSUP;
	return d->f.hipIpcGetMemHandle((ipc_handle_t *)handle64, (void *)(uintptr_t)ptr);
}

int kvg_ipc_open(kvg_dev *d, uint64_t *ptr, const void *handle64) {
	ipc_handle_t h;
	memcpy(&h, handle64, sizeof(h));
	BIND(d);
	if (IS_CUDA(d)) {
		if (d->f.cuIpcOpenMemHandle == NULL) return KVG_ENOTSUP;
		unsigned long long p = 0;
		int rc = d->f.cuIpcOpenMemHandle(&p, h, CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS);
		*ptr = p;
		return rc;
	}
	if (d->f.hipIpcOpenMemHandle == NULL) return KVG_ENOTSUP;
	void *p = NULL;
	int rc = d->f.hipIpcOpenMemHandle(&p, h, d->hip_ipc_flags);
	*ptr = (uint64_t)(uintptr_t)p;
	return rc;
}

int kvg_ipc_close(kvg_dev *d, uint64_t ptr) {
	BIND(d);
	if (IS_CUDA(d)) {
		if (d->f.cuIpcCloseMemHandle == NULL) return KVG_ENOTSUP;
		return d->f.cuIpcCloseMemHandle(ptr);
	}
	if (d->f.hipIpcCloseMemHandle == NULL) return KVG_ENOTSUP;
	return d->f.hipIpcCloseMemHandle((void *)(uintptr_t)ptr);
}
