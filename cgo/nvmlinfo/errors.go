package nvmlinfo

import "errors"

// Errors returned by this package, wrapped with detail; test with errors.Is.
var (
	// ErrUnavailable: no NVML library, NVML failed to initialize, or the
	// requested device is not there. It means "no NVIDIA GPU telemetry".
	ErrUnavailable = errors.New("nvmlinfo: NVML unavailable")
	// ErrClosed: the Reader was closed.
	ErrClosed = errors.New("nvmlinfo: reader closed")
)
