package codecbench

import "errors"

// Errors returned by this package, wrapped with detail; test with errors.Is.
var (
	// ErrInput: an input file cannot be used (wrong shapes or tensors).
	ErrInput = errors.New("codecbench: unusable input")
	// ErrDiskUnsupported: O_DIRECT reads are not available here.
	ErrDiskUnsupported = errors.New("codecbench: O_DIRECT disk read unsupported")
)
