package kvfile

import "errors"

// Errors returned by this package, wrapped with detail; test with errors.Is.
var (
	// ErrFormat: the sidecar or the data file is malformed or inconsistent.
	ErrFormat = errors.New("kvfile: malformed dump")
	// ErrNoTensor: the dump has no tensor of the requested name.
	ErrNoTensor = errors.New("kvfile: no such tensor")
)
