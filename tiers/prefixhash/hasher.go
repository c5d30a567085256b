package prefixhash

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/fxamacker/cbor/v2"
	"github.com/zeebo/xxh3"

	"github.com/kvtier/kvtier/tiers"
)

// cborEnc encodes the CBOR modes with RFC 8949 core deterministic encoding.
// For the values hashed here (unsigned integers, byte and text strings,
// definite-length arrays, null) it is byte-identical to Python cbor2's
// canonical=True encoding that vLLM uses. Safe for concurrent use.
var cborEnc, cborEncErr = cbor.CoreDetEncOptions().UserBufferEncMode()

// cborBlock is one block's hash input in the CBOR modes:
// [parent digest bytes, [token ids], null | [extras]].
type cborBlock struct {
	_      struct{} `cbor:",toarray"`
	Parent []byte   // CBOR byte string
	Tokens []uint32 // CBOR array of unsigned integers
	Extras []string // nil encodes as CBOR null
}

// A Hasher computes prefix-hash chains for one Params. It keeps its scratch
// buffers between calls, so hashing allocates nothing per block beyond the
// returned digests. A Hasher is not safe for concurrent use: give each
// goroutine its own (they are cheap), or use the package-level Chain.
type Hasher struct {
	p    Params
	root tiers.Hash

	// Extras of block 0 and of later blocks, set once by NewHasher.
	extras0, extrasN []string // CBOR modes
	tail0, tailN     []byte   // XXH3 mode: encoded extras field

	// Scratch for one block, reused by every call (why a Hasher is not
	// safe for concurrent use).
	buf    bytes.Buffer // CBOR encoding of the block
	raw    []byte       // XXH3-mode encoding of the block
	parent [32]byte     // backing array of blk.Parent
	blk    cborBlock
}

// NewHasher validates p and returns a Hasher for it. The error wraps ErrInvalid.
func NewHasher(p Params) (*Hasher, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	h := &Hasher{p: p}
	if p.Algo == XXH3 {
		h.tail0 = appendXXH3Extras(nil, p, true)
		h.tailN = appendXXH3Extras(nil, p, false)
		// tail0 is never shorter than tailN.
		h.raw = make([]byte, 20+4*p.BlockTokens, 20+4*p.BlockTokens+len(h.tail0))
		binary.LittleEndian.PutUint32(h.raw[16:], uint32(p.BlockTokens))
		h.root = xxh3Hash(xxh3.HashString128(p.Seed))
		return h, nil
	}
	if cborEncErr != nil {
		return nil, fmt.Errorf("prefixhash: cbor encoder: %w", cborEncErr)
	}
	h.extras0 = p.extras(0)
	h.extrasN = p.extras(1)
	// Room for one block: array and string heads, the digest, at most 5
	// bytes per token id, and the extras.
	h.buf.Grow(16 + 32 + 5*p.BlockTokens + len(p.LoRA) + len(p.CacheSalt))
	if err := cborEnc.MarshalToBuffer(p.Seed, &h.buf); err != nil {
		return nil, fmt.Errorf("prefixhash: cbor seed: %w", err)
	}
	h.root = h.sum(h.buf.Bytes())
	return h, nil
}

// Params returns the parameters h was made with.
func (h *Hasher) Params() Params { return h.p }

// Root returns the root parent: the digest of the seed, parent of block 0
// (vLLM's NONE_HASH).
func (h *Hasher) Root() tiers.Hash { return h.root }

// AppendChain appends the digest of each full block of tokens, starting from
// the root, to dst and returns it. A trailing partial block is not hashed.
func (h *Hasher) AppendChain(dst []tiers.Hash, tokens []uint32) ([]tiers.Hash, error) {
	return h.Extend(dst, h.root, 0, tokens)
}

// Extend continues a chain: tokens are the blocks numbered blockIndex,
// blockIndex+1, ... of a request, and parent is the digest of block
// blockIndex-1 (Root() when blockIndex is 0). It appends one digest per full
// block of tokens to dst and returns it; a trailing partial block is not
// hashed. The block index matters only in that block 0 carries the cache salt.
//
// Errors wrap ErrInvalid: a parent whose length is not Algo.Size() (the zero
// Hash included) or a negative blockIndex. On error dst is returned unchanged.
func (h *Hasher) Extend(dst []tiers.Hash, parent tiers.Hash, blockIndex int, tokens []uint32) ([]tiers.Hash, error) {
	if err := h.checkParent(parent, blockIndex); err != nil {
		return dst, err
	}
	bt := h.p.BlockTokens
	n := len(tokens) / bt
	out := slices.Grow(dst, n)
	for k := range n {
		d, err := h.block(parent, blockIndex == 0 && k == 0, tokens[k*bt:(k+1)*bt])
		if err != nil {
			return dst, err
		}
		out = append(out, d)
		parent = d
	}
	return out, nil
}

// Block returns the digest of one block given its parent (see Extend).
// len(block) must be BlockTokens; the error wraps ErrInvalid otherwise.
func (h *Hasher) Block(parent tiers.Hash, blockIndex int, block []uint32) (tiers.Hash, error) {
	if err := h.checkParent(parent, blockIndex); err != nil {
		return tiers.Hash{}, err
	}
	if len(block) != h.p.BlockTokens {
		return tiers.Hash{}, invalidf("block: %d token ids, want %d", len(block), h.p.BlockTokens)
	}
	return h.block(parent, blockIndex == 0, block)
}

func (h *Hasher) checkParent(parent tiers.Hash, blockIndex int) error {
	if want := h.p.Algo.Size(); parent.Len() != want {
		return invalidf("parent: %d-byte digest, %s needs %d", parent.Len(), h.p.Algo, want)
	}
	if blockIndex < 0 {
		return invalidf("block index: %d is negative", blockIndex)
	}
	return nil
}

// block hashes one full block; first says whether it is block 0.
func (h *Hasher) block(parent tiers.Hash, first bool, toks []uint32) (tiers.Hash, error) {
	if h.p.Algo == XXH3 {
		// h.raw holds the count at [16:20], set by NewHasher; fill in the
		// parent, the token ids and the extras field.
		b := h.raw
		parent.AppendTo(b[:0])
		tb := b[20 : 20+4*len(toks)]
		for i, t := range toks {
			binary.LittleEndian.PutUint32(tb[4*i:], t)
		}
		tail := h.tailN
		if first {
			tail = h.tail0
		}
		n := 20 + 4*len(toks)
		n += copy(b[n:cap(b)], tail)
		return xxh3Hash(xxh3.Hash128(b[:n])), nil
	}

	h.blk.Parent = parent.AppendTo(h.parent[:0])
	h.blk.Tokens = toks
	h.blk.Extras = h.extrasN
	if first {
		h.blk.Extras = h.extras0
	}
	h.buf.Reset()
	err := cborEnc.MarshalToBuffer(&h.blk, &h.buf)
	h.blk.Tokens = nil // do not keep the caller's slice alive
	if err != nil {
		return tiers.Hash{}, fmt.Errorf("prefixhash: cbor block: %w", err)
	}
	return h.sum(h.buf.Bytes()), nil
}

// sum hashes b with the CBOR mode's hash function.
func (h *Hasher) sum(b []byte) tiers.Hash {
	if h.p.Algo == SHA256CBOR {
		d := sha256.Sum256(b)
		return mustHash(d[:])
	}
	return xxh3Hash(xxh3.Hash128(b))
}

// xxh3Hash returns the canonical (big-endian) form of an XXH3-128 digest.
func xxh3Hash(u xxh3.Uint128) tiers.Hash {
	d := u.Bytes()
	return mustHash(d[:])
}

// mustHash wraps a 16- or 32-byte digest; every caller passes one, so
// HashFromBytes cannot fail here.
func mustHash(d []byte) tiers.Hash {
	hh, _ := tiers.HashFromBytes(d)
	return hh
}

// appendXXH3Extras appends the XXH3-mode extras field (see doc.go): a flags
// byte, then each present string as a uint32 LE length and its bytes.
func appendXXH3Extras(b []byte, p Params, first bool) []byte {
	const (
		flagLoRA = 1 << 0
		flagSalt = 1 << 1
	)
	var flags byte
	if p.LoRA != "" {
		flags |= flagLoRA
	}
	if first && p.CacheSalt != "" {
		flags |= flagSalt
	}
	b = append(b, flags)
	if flags&flagLoRA != 0 {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(p.LoRA)))
		b = append(b, p.LoRA...)
	}
	if flags&flagSalt != 0 {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(p.CacheSalt)))
		b = append(b, p.CacheSalt...)
	}
	return b
}

// Chain returns the digest of each full block of tokens under p, from the
// root; nil when there is no full block. Safe for concurrent use. Errors wrap
// ErrInvalid.
func Chain(p Params, tokens []uint32) ([]tiers.Hash, error) {
	return AppendChain(nil, p, tokens)
}

// AppendChain is Chain appending to dst. On error dst is returned unchanged.
func AppendChain(dst []tiers.Hash, p Params, tokens []uint32) ([]tiers.Hash, error) {
	h, err := NewHasher(p)
	if err != nil {
		return dst, err
	}
	return h.AppendChain(dst, tokens)
}
