package prefetch

import "errors"

// ErrTrace: a trace file that cannot be replayed.
var ErrTrace = errors.New("bench prefetch: bad trace")

// ErrConfig: replay settings that cannot work.
var ErrConfig = errors.New("bench prefetch: bad config")
