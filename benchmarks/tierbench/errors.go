package tierbench

import "errors"

// Errors returned by this package, wrapped with detail; test with errors.Is.
var (
	// ErrInvalid: a configuration the benchmark cannot run.
	ErrInvalid = errors.New("tierbench: invalid configuration")
	// ErrUnsupported: the file system does not support O_DIRECT (tmpfs),
	// or the platform has no O_DIRECT.
	ErrUnsupported = errors.New("tierbench: O_DIRECT unsupported")
)
