package engine

import "errors"

// Sentinel errors; wrapped with %w so errors.Is works.
var (
	// ErrModel: a model file that is not a well-formed model.
	ErrModel = errors.New("engine: bad model file")
	// ErrInput: tokens, positions or options the engine cannot run.
	ErrInput = errors.New("engine: bad input")
)
