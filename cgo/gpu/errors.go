package gpu

import (
	"errors"
	"fmt"
)

// Errors returned by this package, wrapped with detail; test with errors.Is.
var (
	// ErrUnavailable: there is no usable GPU: no driver library, no device,
	// a library without a required symbol, or a build without cgo. Callers
	// treat it as "run without the HBM tier", not as a failure.
	ErrUnavailable = errors.New("gpu: unavailable")
	// ErrMissingSymbol: the library lacks a symbol kvtier needs. Open's
	// error wraps both this and ErrUnavailable.
	ErrMissingSymbol = errors.New("gpu: required symbol missing")
	// ErrOutOfMemory: the device (or pinned host memory) is exhausted.
	ErrOutOfMemory = errors.New("gpu: out of memory")
	// ErrInvalid: a bad argument (size, pointer, handle, foreign stream).
	ErrInvalid = errors.New("gpu: invalid argument")
	// ErrNotSupported: the loaded driver lacks an optional feature (IPC).
	ErrNotSupported = errors.New("gpu: not supported by this driver")
	// ErrClosed: the device, stream or event was closed.
	ErrClosed = errors.New("gpu: closed")
	// ErrDriver: any other error the driver reported; the DriverError
	// that wraps it carries the code and name.
	ErrDriver = errors.New("gpu: driver error")
)

// Status codes kvtier interprets. CUDA and HIP share the low numbers;
// the codes that mean "no usable GPU here" differ between the two.
const (
	codeInvalidValue   = 1
	codeOutOfMemory    = 2
	codeNotInitialized = 3
	codeNoDevice       = 100
	codeInvalidDevice  = 101
	codeNotSupported   = 801

	// CUDA driver API only.
	cuStubLibrary          = 34  // CUDA_ERROR_STUB_LIBRARY: the toolkit's stub libcuda
	cuDeviceUnavailable    = 46  // CUDA_ERROR_DEVICE_UNAVAILABLE: exclusive-process mode, busy
	cuSystemDriverMismatch = 803 // CUDA_ERROR_SYSTEM_DRIVER_MISMATCH: libcuda and kernel module differ
	cuCompatNotSupported   = 804 // CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE: forward-compat driver on a device it does not support

	// HIP runtime only (35 is not a CUDA driver code: it is the CUDA
	// runtime's and HIP's "insufficient driver").
	hipInsufficientDriver = 35 // hipErrorInsufficientDriver
)

// unavailable reports whether code, from vendor v, means there is no usable
// GPU here rather than a failed call.
func unavailable(v Vendor, code int) bool {
	switch code {
	case codeNoDevice, codeInvalidDevice, codeNotInitialized:
		return true
	}
	switch v {
	case VendorCUDA:
		switch code {
		case cuStubLibrary, cuDeviceUnavailable, cuSystemDriverMismatch, cuCompatNotSupported:
			return true
		}
	case VendorHIP:
		return code == hipInsufficientDriver
	}
	return false
}

// DriverError is an error status from a driver call.
type DriverError struct {
	Vendor Vendor
	Op     string // the kvtier operation, e.g. "alloc"
	Code   int    // the vendor's status code
	Name   string // the vendor's name for Code, when the driver exports one
}

func (e *DriverError) Error() string {
	name := e.Name
	if name == "" {
		name = fmt.Sprintf("error %d", e.Code)
	}
	return fmt.Sprintf("gpu: %s: %s: %s", e.Vendor, e.Op, name)
}

// Unwrap maps the status to this package's sentinels.
func (e *DriverError) Unwrap() error {
	switch e.Code {
	case codeOutOfMemory:
		return ErrOutOfMemory
	case codeInvalidValue:
		return ErrInvalid
	case codeNotSupported:
		return ErrNotSupported
	}
	if unavailable(e.Vendor, e.Code) {
		return ErrUnavailable
	}
	return ErrDriver
}
