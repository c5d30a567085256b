package slab

import "errors"

var (
	// ErrUnsupported: direct I/O is not available on this platform or file system.
	ErrUnsupported = errors.New("slab: direct I/O unsupported")
	// ErrArgument: a slot index, buffer alignment or length is out of range.
	ErrArgument = errors.New("slab: invalid argument")
)
