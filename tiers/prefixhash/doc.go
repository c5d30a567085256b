// Package prefixhash computes block identities: a chain of digests over the
// token ids of a request, one per full block,
//
//	h_0 = H(root, tokens of block 0, extras_0)
//	h_i = H(h_{i-1}, tokens of block i, extras_i)
//
// so that a block's digest names the whole prefix ending with it. A trailing
// partial block is not hashed. The package owns the hash modes (Algo), their
// parameters (Params) and the chain computation (Hasher, Chain); the digests
// are tiers.Hash values used in tiers.Key.
//
// # Extras
//
// Extra keys are the LoRA adapter name, on every block, and the cache salt,
// on block 0 only, in that order. An empty string means "none"; a block with
// neither has no extras (CBOR null in the CBOR modes). Multimodal hashes and
// prompt embeddings, which vLLM also puts into extras, are not supported.
//
// # Modes
//
// xxh3 (XXH3, the default) is fast and not vLLM compatible. Digests are
// 16 bytes, the XXH3-128 value in big-endian canonical form (Hi then Lo, as
// xxhash's digest() and xxh3.Uint128.Bytes return it). The root is
// XXH3-128 of the seed's UTF-8 bytes, without any framing. Block i hashes
// XXH3-128 (seed 0, default secret) of this byte string:
//
//	parent    16 bytes   digest of block i-1 (the root for block 0)
//	n          4 bytes   number of token ids, uint32 little-endian
//	tokens   4*n bytes   each token id, uint32 little-endian
//	flags      1 byte    bit 0: LoRA present; bit 1: cache salt present
//	                     (block 0 only); other bits zero
//	[lora]   4+len bytes if bit 0: byte length uint32 LE, then the name
//	[salt]   4+len bytes if bit 1: byte length uint32 LE, then the salt
//
// Every field is fixed-size or length-prefixed, so distinct inputs give
// distinct byte strings; in particular a LoRA name and a cache salt with the
// same text are told apart by the flags (unlike the vLLM modes, where both
// become the one-element extras list on block 0).
//
// sha256_cbor (SHA256CBOR) and xxhash_cbor (XXHashCBOR) reproduce vLLM's
// block hashes byte for byte. H is SHA-256 (32-byte digest) or XXH3-128
// (16-byte digest, big-endian canonical form) applied to canonical CBOR
// (RFC 8949 core deterministic encoding; identical to Python cbor2's
// canonical encoding for these values). The root is H(cbor(seed)), the seed
// as a CBOR text string. vLLM's root is that of its PYTHONHASHSEED when set;
// without it vLLM uses os.urandom(32), which no one else can reproduce, so
// matching vLLM needs PYTHONHASHSEED set and passed as the seed. Block i hashes
//
//	cbor([parent, [token ids], extras])
//
// where parent is the whole parent digest as a CBOR byte string, token ids
// are CBOR unsigned integers, and extras is CBOR null or an array of CBOR
// text strings. vLLM's KV events carry a block's digest as its last 8 bytes
// read big-endian: tiers.Hash.EventID.
//
// # Caveats
//
// A Hasher reuses internal buffers and is not safe for concurrent use; Chain
// and AppendChain make their own and are. Returned digests are values and
// stay valid forever; no call keeps a reference to the caller's tokens.
// Hashes from different modes, seeds, block sizes or extras never mix in a
// chain: a parent passed to Extend must come from the same Params.
package prefixhash
