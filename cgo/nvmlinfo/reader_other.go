//go:build !linux || !cgo

package nvmlinfo

import "fmt"

// Reader reads one device's telemetry. In this build there is no NVML.
type Reader struct{}

// Open always fails in this build (NVML needs cgo on Linux).
func Open(opts ...Option) (*Reader, error) {
	return nil, fmt.Errorf("%w: built without cgo or not on linux", ErrUnavailable)
}

// Read reports ErrUnavailable.
func (r *Reader) Read() (Telemetry, error) { return Telemetry{}, ErrUnavailable }

// Close does nothing.
func (r *Reader) Close() error { return nil }

// Monitor reads every device's telemetry. In this build there is no NVML.
type Monitor struct{}

// OpenMonitor always fails in this build (NVML needs cgo on Linux).
func OpenMonitor(opts ...Option) (*Monitor, error) {
	return nil, fmt.Errorf("%w: built without cgo or not on linux", ErrUnavailable)
}

// ReadAll reports ErrUnavailable.
func (m *Monitor) ReadAll() ([]Telemetry, error) { return nil, ErrUnavailable }

// Close does nothing.
func (m *Monitor) Close() error { return nil }
