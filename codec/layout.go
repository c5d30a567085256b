package codec

import (
	"fmt"
)

// DType is the element type of a KV block.
type DType uint8

// The element types a block may hold. The zero value is invalid so that a
// forgotten field is caught by Validate.
const (
	DTypeInvalid DType = iota
	FP16
	BF16
	FP32
	FP8 // any 1-byte float format (e4m3 or e5m2); stored and passed through losslessly
)

// Size returns the number of bytes per element, or 0 for an unknown dtype.
func (d DType) Size() int {
	switch d {
	case FP16, BF16:
		return 2
	case FP32:
		return 4
	case FP8:
		return 1
	}
	return 0
}

func (d DType) String() string {
	switch d {
	case FP16:
		return "fp16"
	case BF16:
		return "bf16"
	case FP32:
		return "fp32"
	case FP8:
		return "fp8"
	}
	return fmt.Sprintf("dtype(%d)", uint8(d))
}

// ParseDType parses the names printed by DType.String.
func ParseDType(s string) (DType, error) {
	switch s {
	case "fp16", "float16", "half":
		return FP16, nil
	case "bf16", "bfloat16":
		return BF16, nil
	case "fp32", "float32":
		return FP32, nil
	case "fp8", "float8":
		return FP8, nil
	}
	return DTypeInvalid, fmt.Errorf("%w: unknown dtype %q (want fp16, bf16, fp32 or fp8)", ErrLayout, s)
}

// Order says how K and V are arranged inside a block.
type Order uint8

const (
	// KVSeparate: all of K ([layers][kv_heads][tokens][head_dim]) then all of V
	// with the same shape. This is the default and the layout the codec assumes
	// when it groups keys per channel and values per token.
	KVSeparate Order = iota
	// KVInterleaved: per layer, K then V ([layers][2][kv_heads][tokens][head_dim]).
	KVInterleaved
	// KVUnspecified: the client did not say. The codec treats the block as
	// KVSeparate (see Effective), and the tiers keep the value as it was put
	// so that a Get returns it unchanged. It is numbered after the others
	// because KVSeparate is 0 in frames and index entries already on disk.
	KVUnspecified
)

// Effective returns the arrangement the codec uses for o: KVSeparate for
// KVUnspecified, o otherwise.
func (o Order) Effective() Order {
	if o == KVUnspecified {
		return KVSeparate
	}
	return o
}

func (o Order) String() string {
	switch o {
	case KVSeparate:
		return "kv_separate"
	case KVInterleaved:
		return "kv_interleaved"
	case KVUnspecified:
		return "kv_unspecified"
	}
	return fmt.Sprintf("order(%d)", uint8(o))
}

// Limits on a layout's dimensions. They bound the size of one block to 4 GiB
// and keep hostile headers from asking for absurd allocations.
const (
	MaxLayers   = 1024
	MaxTokens   = 1 << 16
	MaxKVHeads  = 1024
	MaxHeadDim  = 4096
	MaxBlockLen = 1 << 32
)

// Layout describes the tensor a block holds. It travels with every block:
// the codec needs it to quantize and a put whose byte count does not match
// Size() is rejected.
//
// A block holds K and V for Layers layers (1 for a per-layer block, the model's
// layer count for an "all layers" block), each of shape [KVHeads][Tokens][HeadDim].
type Layout struct {
	DType   DType
	Order   Order
	Layers  uint16 // 0 is read as 1
	KVHeads uint16
	HeadDim uint16
	Tokens  uint32
}

// NumLayers returns Layers, reading 0 as 1.
func (l Layout) NumLayers() int {
	if l.Layers == 0 {
		return 1
	}
	return int(l.Layers)
}

// Elems returns the number of elements in the block (K and V together).
func (l Layout) Elems() int64 {
	return 2 * int64(l.NumLayers()) * int64(l.KVHeads) * int64(l.Tokens) * int64(l.HeadDim)
}

// Size returns the block's length in bytes.
func (l Layout) Size() int64 { return l.Elems() * int64(l.DType.Size()) }

// Validate reports whether every field is in range. The error wraps ErrLayout
// and names the offending field.
func (l Layout) Validate() error {
	switch {
	case l.DType.Size() == 0:
		return fmt.Errorf("%w: dtype: unknown %v", ErrLayout, l.DType)
	case l.Order > KVUnspecified:
		return fmt.Errorf("%w: order: unknown %v", ErrLayout, l.Order)
	case l.Layers > MaxLayers:
		return fmt.Errorf("%w: layers: %d exceeds %d", ErrLayout, l.Layers, MaxLayers)
	case l.Tokens == 0 || l.Tokens > MaxTokens:
		return fmt.Errorf("%w: tokens: %d not in 1..%d", ErrLayout, l.Tokens, MaxTokens)
	case l.KVHeads == 0 || l.KVHeads > MaxKVHeads:
		return fmt.Errorf("%w: kv_heads: %d not in 1..%d", ErrLayout, l.KVHeads, MaxKVHeads)
	case l.HeadDim == 0 || l.HeadDim > MaxHeadDim:
		return fmt.Errorf("%w: head_dim: %d not in 1..%d", ErrLayout, l.HeadDim, MaxHeadDim)
	case l.Size() > MaxBlockLen:
		return fmt.Errorf("%w: %d bytes exceeds the %d-byte block limit", ErrLayout, l.Size(), int64(MaxBlockLen))
	}
	return nil
}

// CheckLen validates the layout and checks that n bytes is what it describes.
func (l Layout) CheckLen(n int) error {
	if err := l.Validate(); err != nil {
		return err
	}
	if int64(n) != l.Size() {
		return fmt.Errorf("%w: %d bytes given, layout %v needs %d", ErrSize, n, l, l.Size())
	}
	return nil
}

func (l Layout) String() string {
	return fmt.Sprintf("%v[layers=%d kv_heads=%d tokens=%d head_dim=%d %v]",
		l.DType, l.NumLayers(), l.KVHeads, l.Tokens, l.HeadDim, l.Order)
}
