// fakenvml: the NVML entry points cgo/nvmlinfo reads, over fixed values, for
// tests on machines without an NVIDIA driver. go-nvml loads it with
// RTLD_GLOBAL and calls the functions directly.
//
// Configuration is read from the environment at every nvmlInit_v2:
//   FAKENVML_INIT     return code of nvmlInit_v2 (default 0)
//   FAKENVML_DEVICES  number of devices (default 1)
//   FAKENVML_NOTSUP   non-empty: PCIe and utilization queries return
//                     NVML_ERROR_NOT_SUPPORTED (as on some virtual GPUs)
// Build with -DFAKE_NO_PCIE to leave the PCIe link symbols out (an old
// driver), which the reader must notice without calling them.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXPORT __attribute__((visibility("default")))

enum {
	NVML_SUCCESS = 0,
	NVML_ERROR_UNINITIALIZED = 1,
	NVML_ERROR_INVALID_ARGUMENT = 2,
	NVML_ERROR_NOT_SUPPORTED = 3,
	NVML_ERROR_NOT_FOUND = 6,
	NVML_ERROR_INSUFFICIENT_SIZE = 7,
	NVML_ERROR_DRIVER_NOT_LOADED = 9,
};

#define MAXDEV 4

typedef struct {
	int index;
} dev_t_;

typedef struct {
	unsigned long long total, free, used;
} memory_t;

typedef struct {
	unsigned int gpu, memory;
} util_t;

typedef struct {
	char busIdLegacy[16];
	unsigned int domain, bus, device, pciDeviceId, pciSubSystemId;
	char busId[32];
} pci_t;

static dev_t_ devs[MAXDEV] = {{0}, {1}, {2}, {3}};
static int ndev = 1, inited = 0, notsup = 0;

static int getenv_int(const char *name, int def) {
	const char *s = getenv(name);
	return (s && *s) ? atoi(s) : def;
}

EXPORT int nvmlInit_v2(void) {
	int rc = getenv_int("FAKENVML_INIT", 0);
	if (rc != 0) return rc;
	ndev = getenv_int("FAKENVML_DEVICES", 1);
	if (ndev < 0) ndev = 0;
	if (ndev > MAXDEV) ndev = MAXDEV;
	const char *s = getenv("FAKENVML_NOTSUP");
	notsup = s && *s;
	inited++;
	return NVML_SUCCESS;
}

EXPORT int nvmlShutdown(void) {
	if (inited == 0) return NVML_ERROR_UNINITIALIZED;
	inited--;
	return NVML_SUCCESS;
}

EXPORT const char *nvmlErrorString(int r) {
	switch (r) {
	case NVML_SUCCESS: return "Success";
	case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
	case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
	case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
	case NVML_ERROR_NOT_FOUND: return "Not Found";
	case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
	}
	return "Unknown Error";
}

static dev_t_ *check(void *h) {
	if (inited == 0) return NULL;
	dev_t_ *d = h;
	if (d < &devs[0] || d >= &devs[ndev]) return NULL;
	return d;
}

EXPORT int nvmlDeviceGetCount_v2(unsigned int *n) {
	if (inited == 0) return NVML_ERROR_UNINITIALIZED;
	if (n == NULL) return NVML_ERROR_INVALID_ARGUMENT;
	*n = (unsigned)ndev;
	return NVML_SUCCESS;
}

EXPORT int nvmlDeviceGetHandleByIndex_v2(unsigned int i, void **h) {
	if (inited == 0) return NVML_ERROR_UNINITIALIZED;
	if (h == NULL || i >= (unsigned)ndev) return NVML_ERROR_INVALID_ARGUMENT;
	*h = &devs[i];
	return NVML_SUCCESS;
}

// Devices sit on buses 0x10, 0x11, ...: the fake CUDA library reports the
// same bus ids, so a device opened there finds its NVML twin.
EXPORT int nvmlDeviceGetHandleByPciBusId_v2(const char *id, void **h) {
	unsigned dom, bus, dv, fn;
	if (inited == 0) return NVML_ERROR_UNINITIALIZED;
	if (id == NULL || h == NULL || sscanf(id, "%x:%x:%x.%x", &dom, &bus, &dv, &fn) != 4) return NVML_ERROR_INVALID_ARGUMENT;
	if (dom != 0 || dv != 0 || fn != 0 || bus < 0x10 || bus >= 0x10 + (unsigned)ndev) return NVML_ERROR_NOT_FOUND;
	*h = &devs[bus - 0x10];
	return NVML_SUCCESS;
}

EXPORT int nvmlDeviceGetName(void *h, char *name, unsigned int len) {
	dev_t_ *d = check(h);
	if (d == NULL || name == NULL) return NVML_ERROR_INVALID_ARGUMENT;
	if (len < 16) return NVML_ERROR_INSUFFICIENT_SIZE;
	snprintf(name, len, "Fake NVML GPU %d", d->index);
	return NVML_SUCCESS;
}

EXPORT int nvmlDeviceGetPciInfo_v3(void *h, pci_t *p) {
	dev_t_ *d = check(h);
	if (d == NULL || p == NULL) return NVML_ERROR_INVALID_ARGUMENT;
	memset(p, 0, sizeof(*p));
	p->bus = 0x10 + (unsigned)d->index;
	snprintf(p->busId, sizeof(p->busId), "00000000:%02X:00.0", p->bus);
	snprintf(p->busIdLegacy, sizeof(p->busIdLegacy), "0000:%02X:00.0", p->bus);
	return NVML_SUCCESS;
}

EXPORT int nvmlDeviceGetMemoryInfo(void *h, memory_t *m) {
	dev_t_ *d = check(h);
	if (d == NULL || m == NULL) return NVML_ERROR_INVALID_ARGUMENT;
	m->total = 80ull << 30;
	m->used = (1ull << 30) * (unsigned)(d->index + 1);
	m->free = m->total - m->used;
	return NVML_SUCCESS;
}

EXPORT int nvmlDeviceGetUtilizationRates(void *h, util_t *u) {
	dev_t_ *d = check(h);
	if (d == NULL || u == NULL) return NVML_ERROR_INVALID_ARGUMENT;
	if (notsup) return NVML_ERROR_NOT_SUPPORTED;
	u->gpu = 37;
	u->memory = 12;
	return NVML_SUCCESS;
}

#ifndef FAKE_NO_PCIE
static int link(void *h, unsigned int *v, unsigned int val) {
	dev_t_ *d = check(h);
	if (d == NULL || v == NULL) return NVML_ERROR_INVALID_ARGUMENT;
	if (notsup) return NVML_ERROR_NOT_SUPPORTED;
	*v = val;
	return NVML_SUCCESS;
}

// The link trained down at idle (gen 1), as real GPUs do; its maximum is
// gen 5 x16.
EXPORT int nvmlDeviceGetCurrPcieLinkGeneration(void *h, unsigned int *v) { return link(h, v, 1); }
EXPORT int nvmlDeviceGetCurrPcieLinkWidth(void *h, unsigned int *v) { return link(h, v, 16); }
EXPORT int nvmlDeviceGetMaxPcieLinkGeneration(void *h, unsigned int *v) { return link(h, v, 5); }
EXPORT int nvmlDeviceGetMaxPcieLinkWidth(void *h, unsigned int *v) { return link(h, v, 16); }
#endif
