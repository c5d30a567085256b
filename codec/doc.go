// Package codec owns the bytes of a block: its Layout (dtype, layers, kv
// heads, head dim, tokens, K/V order), the frame format blocks are stored in
// (a versioned header with the layout and a CRC-32C checksum over header and
// payload), and the codecs that fill a frame's payload: raw, lossless (the
// top byte of every element Huffman-coded, the rest stored; or byte-plane
// shuffle + lz4 where that is smaller) and quantized (int8, int4, int3,
// int2). What quantization costs (relative error, per-vector cosine,
// attention-output error and KL given queries) is measured by
// internal/kveval, outside the data path.
//
// Decode never returns bytes whose checksum does not match, and never
// panics or allocates without bound on hostile input: damaged frames are
// errors wrapping ErrCorrupt. Allocation is bounded by the header's
// validated raw length (the layout size, at most 4 GiB).
//
// A block is described by a Layout (dtype, order, layers, KV heads, tokens,
// head_dim). Quantization works on units, one [tokens][head_dim] matrix of K
// or V per layer and head: keys per channel over groups of tokens, values per
// token over groups of channels (KIVI), asymmetric min/max with the group
// bounds coded on a 255-step grid of the unit's range, and key bits moved to
// the channels where keys, and so queries, are large. Options.Entropy swaps
// the group codes for a uniform quantizer and a rANS coder (smaller, slower);
// Options.Outliers stores a few extreme values apart so that their groups'
// ranges shrink (quant_out.go). quant.go documents the payload; frame.go the
// frame; lossless.go the lossless payload.
//
// Speed: on amd64 CPUs with AVX2 and F16C, fp16 blocks whose head_dim (and
// value group) are multiples of 8 run vector kernels (simd_amd64.s) for the
// conversions, statistics, quantization and dequantization, and fp16
// lossless decode runs its Huffman loop in assembly; elsewhere, and with the
// purego build tag, the same loops run in Go. Both produce the same bytes
// (tested). With the kernels the fixed-rate modes encode and decode at
// > 1 GB/s per core and lossless decodes at > 2 GB/s (encode ≈ 0.9); the Go
// loops reach 0.4–0.9 GB/s. Entropy, Clip and Outliers cost encode time.
//
// Buffers: Encode appends to dst and Decode appends to dst; size them with
// MaxFrameLen and Layout.Size and neither allocates (temporary buffers come
// from a pool). The result aliases dst. Options.Parallelism and
// DecodeParallel spread a block's units over goroutines and do allocate.
//
// Caveats: fp8 blocks are always stored losslessly (a quantized mode on an
// fp8 block yields a Lossless frame). Quantized modes map NaN to 0 and clamp
// infinities, so a block with non-finite values does not round-trip. Decoding
// a frame from another architecture may differ in the last bit of a quantized
// value (float rounding), never in the lossless modes. Ratios hold for blocks
// with many tokens: per-unit bounds cost 5 bytes per key channel and the group
// bounds 2 bytes per group, so a 16-token block pays about 2 bits per value.
package codec
