package prefetch

import "errors"

// ErrInvalid: a hint or a call whose arguments cannot be right (sizes that
// do not match, an unknown request). The daemon maps it to INVALID_ARGUMENT.
var ErrInvalid = errors.New("prefetch: invalid argument")
