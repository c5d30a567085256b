package daemon

import (
	"fmt"
	"math"
	"unicode/utf8"

	"github.com/kvtier/kvtier/codec"
	pb "github.com/kvtier/kvtier/proto/kvtier/v1"
	"github.com/kvtier/kvtier/tiers"
	"github.com/kvtier/kvtier/tiers/prefixhash"
)

// Request validation: every function here turns protobuf fields into store
// types, or returns a *FieldError naming the offending field by its path in
// the request. None of them panics, whatever the input (see FuzzValidate).

// Limits on request fields the store does not bound itself.
const (
	// MaxChainBlocks bounds the blocks of one Lookup or hint chain.
	MaxChainBlocks = 1 << 20
	// maxNameLen bounds free-form names (client names, request ids).
	maxNameLen = 256
)

func validateNamespace(field, ns string) error {
	if p := tiers.NamespaceProblem(ns); p != "" {
		return fieldErr(field, "%s", p)
	}
	return nil
}

func validateLayer(field string, layer int32) (int16, error) {
	if layer < tiers.AllLayers || layer > tiers.MaxLayer {
		return 0, fieldErr(field, "%d not in -1..%d", layer, tiers.MaxLayer)
	}
	return int16(layer), nil
}

func hashFromBytes(field string, b []byte) (tiers.Hash, error) {
	if len(b) != 16 && len(b) != 32 {
		return tiers.Hash{}, fieldErr(field, "%d bytes, want 16 or 32", len(b))
	}
	return tiers.HashFromBytes(b)
}

// parentFromBytes accepts an empty parent (none).
func parentFromBytes(field string, b []byte) (tiers.Hash, error) {
	if len(b) == 0 {
		return tiers.Hash{}, nil
	}
	return hashFromBytes(field, b)
}

// keyFromProto validates a Key; field is its path ("key", "header.key").
func keyFromProto(field string, k *pb.Key) (tiers.Key, error) {
	if k == nil {
		return tiers.Key{}, fieldErr(field, "required")
	}
	if err := validateNamespace(field+".namespace", k.GetNamespace()); err != nil {
		return tiers.Key{}, err
	}
	h, err := hashFromBytes(field+".hash", k.GetHash())
	if err != nil {
		return tiers.Key{}, err
	}
	layer, err := validateLayer(field+".layer", k.GetLayer())
	if err != nil {
		return tiers.Key{}, err
	}
	return tiers.Key{Namespace: k.GetNamespace(), Hash: h, Layer: layer}, nil
}

func dtypeFromProto(field string, d pb.Dtype) (codec.DType, error) {
	switch d {
	case pb.Dtype_DTYPE_FP16:
		return codec.FP16, nil
	case pb.Dtype_DTYPE_BF16:
		return codec.BF16, nil
	case pb.Dtype_DTYPE_FP32:
		return codec.FP32, nil
	case pb.Dtype_DTYPE_FP8:
		return codec.FP8, nil
	case pb.Dtype_DTYPE_UNSPECIFIED:
		return 0, fieldErr(field, "required (fp16, bf16, fp32 or fp8)")
	}
	return 0, fieldErr(field, "unknown value %d", int32(d))
}

func dtypeToProto(d codec.DType) pb.Dtype {
	switch d {
	case codec.FP16:
		return pb.Dtype_DTYPE_FP16
	case codec.BF16:
		return pb.Dtype_DTYPE_BF16
	case codec.FP32:
		return pb.Dtype_DTYPE_FP32
	case codec.FP8:
		return pb.Dtype_DTYPE_FP8
	}
	return pb.Dtype_DTYPE_UNSPECIFIED
}

// layoutFromProto validates a Layout; every check names the field.
func layoutFromProto(field string, l *pb.Layout) (codec.Layout, error) {
	if l == nil {
		return codec.Layout{}, fieldErr(field, "required")
	}
	dt, err := dtypeFromProto(field+".dtype", l.GetDtype())
	if err != nil {
		return codec.Layout{}, err
	}
	var order codec.Order
	switch l.GetOrder() {
	case pb.KVOrder_KV_ORDER_UNSPECIFIED:
		order = codec.KVUnspecified
	case pb.KVOrder_KV_ORDER_SEPARATE:
		order = codec.KVSeparate
	case pb.KVOrder_KV_ORDER_INTERLEAVED:
		order = codec.KVInterleaved
	default:
		return codec.Layout{}, fieldErr(field+".order", "unknown value %d", int32(l.GetOrder()))
	}
	if l.GetLayers() > codec.MaxLayers {
		return codec.Layout{}, fieldErr(field+".layers", "%d exceeds %d", l.GetLayers(), codec.MaxLayers)
	}
	if v := l.GetKvHeads(); v == 0 || v > codec.MaxKVHeads {
		return codec.Layout{}, fieldErr(field+".kv_heads", "%d not in 1..%d", v, codec.MaxKVHeads)
	}
	if v := l.GetHeadDim(); v == 0 || v > codec.MaxHeadDim {
		return codec.Layout{}, fieldErr(field+".head_dim", "%d not in 1..%d", v, codec.MaxHeadDim)
	}
	if v := l.GetTokens(); v == 0 || v > codec.MaxTokens {
		return codec.Layout{}, fieldErr(field+".tokens", "%d not in 1..%d", v, codec.MaxTokens)
	}
	out := codec.Layout{
		DType: dt, Order: order,
		Layers: uint16(l.GetLayers()), KVHeads: uint16(l.GetKvHeads()),
		HeadDim: uint16(l.GetHeadDim()), Tokens: l.GetTokens(),
	}
	if err := out.Validate(); err != nil {
		return codec.Layout{}, fieldErr(field, "%v", err)
	}
	return out, nil
}

func layoutToProto(l codec.Layout) *pb.Layout {
	order := pb.KVOrder_KV_ORDER_SEPARATE
	switch l.Order {
	case codec.KVInterleaved:
		order = pb.KVOrder_KV_ORDER_INTERLEAVED
	case codec.KVUnspecified:
		order = pb.KVOrder_KV_ORDER_UNSPECIFIED
	}
	return &pb.Layout{
		Dtype: dtypeToProto(l.DType), Order: order, Layers: uint32(l.Layers),
		KvHeads: uint32(l.KVHeads), HeadDim: uint32(l.HeadDim), Tokens: l.Tokens,
	}
}

func tierToProto(l tiers.Level) pb.Tier {
	switch l {
	case tiers.LevelHBM:
		return pb.Tier_TIER_HBM
	case tiers.LevelDRAM:
		return pb.Tier_TIER_DRAM
	case tiers.LevelNVMe:
		return pb.Tier_TIER_NVME
	}
	return pb.Tier_TIER_UNSPECIFIED
}

// promoteFromProto reads a promote field: HBM or (anything else valid) DRAM.
func promoteFromProto(field string, t pb.Tier) (tiers.Level, error) {
	switch t {
	case pb.Tier_TIER_HBM:
		return tiers.LevelHBM, nil
	case pb.Tier_TIER_UNSPECIFIED, pb.Tier_TIER_DRAM:
		return tiers.LevelDRAM, nil
	case pb.Tier_TIER_NVME:
		return 0, fieldErr(field, "cannot promote to NVMe")
	}
	return 0, fieldErr(field, "unknown value %d", int32(t))
}

func hashParamsFromProto(field string, p *pb.HashParams) (prefixhash.Params, error) {
	if p == nil {
		return prefixhash.Params{}, fieldErr(field, "required with token_ids")
	}
	var out prefixhash.Params
	switch p.GetAlgo() {
	case pb.HashAlgo_HASH_ALGO_UNSPECIFIED, pb.HashAlgo_HASH_ALGO_XXH3:
		out.Algo = prefixhash.XXH3
	case pb.HashAlgo_HASH_ALGO_SHA256_CBOR:
		out.Algo = prefixhash.SHA256CBOR
	case pb.HashAlgo_HASH_ALGO_XXHASH_CBOR:
		out.Algo = prefixhash.XXHashCBOR
	default:
		return out, fieldErr(field+".algo", "unknown value %d", int32(p.GetAlgo()))
	}
	out.Seed = prefixhash.DefaultSeed
	if p.Seed != nil {
		out.Seed = p.GetSeed()
	}
	if v := p.GetBlockTokens(); v == 0 || v > prefixhash.MaxBlockTokens {
		return out, fieldErr(field+".block_tokens", "%d not in 1..%d", v, prefixhash.MaxBlockTokens)
	}
	out.BlockTokens = int(p.GetBlockTokens())
	out.LoRA = p.GetLora()
	out.CacheSalt = p.GetCacheSalt()
	for _, f := range [...]struct{ name, v string }{
		{"seed", out.Seed}, {"lora", out.LoRA}, {"cache_salt", out.CacheSalt},
	} {
		if len(f.v) > prefixhash.MaxStringLen {
			return out, fieldErr(field+"."+f.name, "%d bytes, at most %d", len(f.v), prefixhash.MaxStringLen)
		}
		if !utf8.ValidString(f.v) {
			return out, fieldErr(field+"."+f.name, "not valid UTF-8")
		}
	}
	if err := out.Validate(); err != nil {
		return out, fieldErr(field, "%v", err)
	}
	return out, nil
}

// chainSpec is a chain of block hashes given one of three ways.
type chainSpec struct {
	hashes    [][]byte
	packed    []byte
	hashSize  uint32
	tokens    []uint32
	params    *pb.HashParams
	hasPacked bool
}

// packedBlocks validates a chain given as packed hashes and returns its
// number of blocks.
func packedBlocks(c chainSpec) (int, error) {
	if c.hashSize != 16 && c.hashSize != 32 {
		return 0, fieldErr("hash_size", "%d, want 16 or 32 with packed_hashes", c.hashSize)
	}
	if len(c.packed)%int(c.hashSize) != 0 {
		return 0, fieldErr("packed_hashes", "%d bytes is not a multiple of hash_size %d", len(c.packed), c.hashSize)
	}
	n := len(c.packed) / int(c.hashSize)
	if n > MaxChainBlocks {
		return 0, fieldErr("packed_hashes", "%d blocks, at most %d", n, MaxChainBlocks)
	}
	return n, nil
}

// appendChain validates a chain and appends its hashes to dst. Exactly one
// of the three forms may be non-empty; an empty chain is valid.
func appendChain(dst []tiers.Hash, c chainSpec) ([]tiers.Hash, error) {
	forms := 0
	for _, n := range []int{len(c.hashes), len(c.packed), len(c.tokens)} {
		if n > 0 {
			forms++
		}
	}
	if forms > 1 {
		return dst, fieldErr("hashes", "give only one of hashes, packed_hashes and token_ids")
	}
	switch {
	case len(c.hashes) > 0:
		if len(c.hashes) > MaxChainBlocks {
			return dst, fieldErr("hashes", "%d blocks, at most %d", len(c.hashes), MaxChainBlocks)
		}
		for i, b := range c.hashes {
			h, err := hashFromBytes(fmt.Sprintf("hashes[%d]", i), b)
			if err != nil {
				return dst, err
			}
			// One chain, one hash function: sizes may not mix.
			if len(b) != len(c.hashes[0]) {
				return dst, fieldErr(fmt.Sprintf("hashes[%d]", i), "%d bytes, but hashes[0] has %d: a chain's hashes are all 16 or all 32 bytes", len(b), len(c.hashes[0]))
			}
			dst = append(dst, h)
		}
	case len(c.packed) > 0:
		n, err := packedBlocks(c)
		if err != nil {
			return dst, err
		}
		for i := 0; i < n; i++ {
			h, _ := tiers.HashFromBytes(c.packed[i*int(c.hashSize) : (i+1)*int(c.hashSize)])
			dst = append(dst, h)
		}
	case len(c.tokens) > 0:
		p, err := hashParamsFromProto("hash_params", c.params)
		if err != nil {
			return dst, err
		}
		if len(c.tokens)/p.BlockTokens > MaxChainBlocks {
			return dst, fieldErr("token_ids", "%d blocks, at most %d", len(c.tokens)/p.BlockTokens, MaxChainBlocks)
		}
		out, err := prefixhash.AppendChain(dst, p, c.tokens)
		if err != nil {
			return dst, fieldErr("token_ids", "%v", err)
		}
		dst = out
	default:
		if c.hasPacked && c.hashSize != 0 && c.hashSize != 16 && c.hashSize != 32 {
			return dst, fieldErr("hash_size", "%d, want 16 or 32", c.hashSize)
		}
	}
	return dst, nil
}

// leaseTTL validates a requested lease lifetime in milliseconds.
func leaseTTL(field string, ms uint32, def, max int64) (int64, error) {
	if ms == 0 {
		return def, nil
	}
	if int64(ms) > max {
		return 0, fieldErr(field, "%d ms exceeds the maximum %d ms", ms, max)
	}
	return int64(ms), nil
}

func clampUint32(n int64) uint32 {
	if n < 0 {
		return 0
	}
	if n > math.MaxUint32 {
		return math.MaxUint32
	}
	return uint32(n)
}

func validateName(field, s string) error {
	if len(s) > maxNameLen {
		return fieldErr(field, "%d bytes, at most %d", len(s), maxNameLen)
	}
	if !utf8.ValidString(s) {
		return fieldErr(field, "not valid UTF-8")
	}
	return nil
}
