// Package gpu is kvtier's native binding to GPU memory: the CUDA driver API
// (libcuda.so.1) or the HIP runtime (libamdhip64.so), loaded with dlopen at
// run time behind one Device interface.
//
// It owns: loading and binding the driver (a C shim, kvgpu_linux.c, that
// declares the few types and prototypes it needs, so building needs only a
// C compiler and no GPU SDK); device and pinned host allocations; host
// registration; streams, events and event-timed copies; IPC handles.
// Telemetry (NVML) lives in cgo/nvmlinfo, the fake device library used by
// tests in cgo/gpu/gputest.
//
// # Availability
//
// Open returns an error wrapping ErrUnavailable when there is no driver
// library, no device, a library missing a required symbol, or when the
// binary was built with CGO_ENABLED=0 or for another OS. Callers treat that
// as "no GPU" and run without the HBM tier. Optional symbols fall back: the
// _v2 CUDA entry points whose ABI equals the unversioned one
// (cuMemHostRegister, cuDevicePrimaryCtxRelease, cuStreamDestroy,
// cuEventDestroy, cuEventElapsedTime, cuIpcOpenMemHandle) fall back to the
// unversioned names; those whose _v2 changed the ABI (cuMemAlloc, cuMemFree,
// cuMemGetInfo, cuDeviceTotalMem, cuMemcpy*Async) are required, because the
// unversioned symbols take 32-bit arguments. IPC and error names are
// optional (ErrNotSupported, numeric codes).
//
// # Threads
//
// The CUDA current context and the HIP current device are per OS thread,
// and goroutines move between threads. Every C wrapper makes the device
// current on the calling thread (cuCtxSetCurrent of the primary context,
// or hipSetDevice) immediately before its driver call, in the same cgo
// call, so no runtime.LockOSThread is needed and any goroutine may use a
// Device, and puts the thread's previous context (device) back before it
// returns, so another CUDA or HIP user in the process keeps its own. The
// cost is a few thread-local loads and stores in the driver per call.
//
// # Scheduling
//
// Open asks for blocking synchronization (CU_CTX_SCHED_BLOCKING_SYNC on
// the primary context, hipDeviceScheduleBlockingSync) before the context
// is made, so a goroutine waiting for a copy sleeps in the driver instead
// of spinning a core. When another user in the process activated the
// primary context first, its flags stay.
//
// # Caveats
//
//   - Asynchronous copies (Stream.*Async) hand the host address to the
//     driver after the cgo call returns, so their host memory must be outside
//     the Go heap (AllocHost, or an mmap'd arena) and stay valid and
//     untouched until Stream.Sync. The waiting copies (CopyH2D, CopyD2H,
//     CopyD2D) synchronize inside the cgo call and accept Go memory.
//   - A slice from AllocHost is valid until FreeHost; RegisterHost's range
//     must be unregistered before it is unmapped.
//   - A Stream or Event is used by one goroutine at a time.
//   - Device calls are not cancellable: a copy runs to completion once
//     queued. Callers check their context before starting one.
//   - The driver library stays loaded for the life of the process.
package gpu
