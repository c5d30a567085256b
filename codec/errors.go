package codec

import "errors"

// Errors returned by this package. They are wrapped with detail; test with errors.Is.
var (
	// ErrLayout: a layout field is out of range or unknown.
	ErrLayout = errors.New("codec: invalid layout")
	// ErrSize: the byte count does not match the layout.
	ErrSize = errors.New("codec: size does not match layout")
	// ErrCorrupt: a frame failed its checksum or is malformed. The bytes must not be used.
	ErrCorrupt = errors.New("codec: corrupt frame")
	// ErrMode: unknown or unsupported codec mode.
	ErrMode = errors.New("codec: unsupported mode")
)

// IsCorrupt reports whether err says that stored bytes are damaged.
func IsCorrupt(err error) bool { return errors.Is(err, ErrCorrupt) }
