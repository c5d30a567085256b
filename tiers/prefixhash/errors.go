package prefixhash

import (
	"fmt"

	"github.com/kvtier/kvtier/tiers"
)

// ErrInvalid is returned (wrapped, with the field named) for bad parameters,
// a parent digest of the wrong length, a negative block index or a block of
// the wrong size. It is tiers.ErrInvalid itself, so errors.Is works with
// either name and the daemon maps it to one gRPC code.
var ErrInvalid = tiers.ErrInvalid

// invalidf returns an error wrapping ErrInvalid, prefixed with the package name.
func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: prefixhash: "+format, append([]any{ErrInvalid}, args...)...)
}
