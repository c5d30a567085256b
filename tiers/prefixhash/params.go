package prefixhash

import "unicode/utf8"

// DefaultSeed is kvtier's seed when none is given: a fixed string, so that
// kvtier's own chains are stable across restarts. It is not vLLM's: vLLM
// roots its chains in os.urandom(32), new in every process, unless
// PYTHONHASHSEED is set, and then in the hash of that value, which is the
// Seed to give to match it.
const DefaultSeed = "vllm-none-hash"

// Limits on Params.
const (
	// MaxBlockTokens bounds Params.BlockTokens.
	MaxBlockTokens = 1 << 20
	// MaxStringLen bounds the byte length of Seed, LoRA and CacheSalt.
	MaxStringLen = 4096
)

// Params says how to hash a chain of blocks. The zero value is not valid
// (BlockTokens must be set); Algo's zero value is XXH3.
type Params struct {
	Algo Algo
	// Seed is hashed into the root parent, the parent of block 0. Any valid
	// UTF-8 string, the empty string included. To match vLLM, the value of
	// its PYTHONHASHSEED (without it, vLLM's root is random per process).
	Seed string
	// BlockTokens is the number of token ids per block, 1..MaxBlockTokens.
	BlockTokens int
	// LoRA is the adapter name, hashed into every block; "" means none.
	LoRA string
	// CacheSalt is the tenant's cache salt, hashed into block 0 only; "" means none.
	CacheSalt string
}

// Validate checks p; the error wraps ErrInvalid and names the field.
// Strings must be valid UTF-8 because the CBOR modes encode them as CBOR
// text strings, as vLLM does with Python str values.
func (p Params) Validate() error {
	if !p.Algo.valid() {
		return invalidf("algo: unknown value %d", uint8(p.Algo))
	}
	if p.BlockTokens < 1 || p.BlockTokens > MaxBlockTokens {
		return invalidf("block tokens: %d not in 1..%d", p.BlockTokens, MaxBlockTokens)
	}
	for _, f := range [...]struct{ name, v string }{
		{"seed", p.Seed}, {"lora", p.LoRA}, {"cache salt", p.CacheSalt},
	} {
		if len(f.v) > MaxStringLen {
			return invalidf("%s: %d bytes, at most %d", f.name, len(f.v), MaxStringLen)
		}
		if !utf8.ValidString(f.v) {
			return invalidf("%s: not valid UTF-8", f.name)
		}
	}
	return nil
}

// extras returns the extra keys of block i: [LoRA] on every block, then
// [CacheSalt] on block 0 only; nil (CBOR null) when there are none.
func (p Params) extras(i int) []string {
	var e []string
	if p.LoRA != "" {
		e = append(e, p.LoRA)
	}
	if i == 0 && p.CacheSalt != "" {
		e = append(e, p.CacheSalt)
	}
	return e
}
