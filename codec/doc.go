// Package codec owns the bytes of a block: its Layout (dtype, layers, kv
// heads, head dim, tokens, K/V order), the frame format blocks are stored in
// (a versioned header with the layout and a CRC-32C checksum over header and
// payload), and the codecs that fill a frame's payload.
//
// Decode never returns bytes whose checksum does not match, and never
// panics or allocates without bound on hostile input: damaged frames are
// errors wrapping ErrCorrupt.
package codec
