// Package kveval measures how much a codec's loss changes a KV block: the
// relative error and cosine similarity of the decoded keys and values, and the
// error it causes in attention (output error and the KL divergence of the
// attention distribution) for given queries. It is evaluation code, used by
// the codec's tests, the codec benchmark and the tiers' tests; nothing on the
// data path imports it.
//
// It works on float32 slices; SplitKV converts a block (fp16, bf16 or fp32)
// and separates its keys from its values whatever the block's K/V order.
//
// Errors wrap the codec's sentinels (codec.ErrSize, codec.ErrLayout,
// codec.ErrMode), since what is wrong is always the shape of a codec layout.
//
// Caveats: every call allocates its result; the functions are meant for
// tests and benchmarks, not hot paths.
package kveval
