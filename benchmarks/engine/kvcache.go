package engine

import (
	"context"
	"fmt"

	"github.com/kvtier/kvtier/client"
	pb "github.com/kvtier/kvtier/proto/kvtier/v1"
	"github.com/kvtier/kvtier/tiers"
	"github.com/kvtier/kvtier/tiers/prefixhash"
)

// Blocks is the part of the Go client the engine moves blocks with:
// *client.Shm (shared memory) and *client.Client (inline) both are.
type Blocks interface {
	PutBatch(ctx context.Context, keys []*pb.Key, l *pb.Layout, data, parents [][]byte) error
	GetBatch(ctx context.Context, keys []*pb.Key, dst [][]byte, opts client.GetOptions) error
}

var (
	_ Blocks = (*client.Shm)(nil)
	_ Blocks = (*client.Client)(nil)
)

// KVCache keeps a model's KV in kvtier: per-layer 16-token blocks keyed by
// the chained prefix hash of the request's tokens (xxh3, seeded with the
// namespace). Not safe for concurrent use.
type KVCache struct {
	m      *Model
	c      *client.Client
	blocks Blocks
	ns     string
	params prefixhash.Params
	codec  *Codec
	layout *pb.Layout

	// Scratch reused across calls.
	keys    []*pb.Key
	data    [][]byte
	parents [][]byte
	hashes  [][]byte
}

// NewKVCache returns a cache in namespace ns moving blocks through blocks
// (lookups go through c). cd, when not nil, is applied to every block
// before it is stored: what is loaded back is what its decoder returns.
func NewKVCache(m *Model, c *client.Client, blocks Blocks, ns string, cd *Codec) *KVCache {
	if cd == nil {
		cd = &Codec{Name: "none", None: true}
	}
	return &KVCache{
		m: m, c: c, blocks: blocks, ns: ns, codec: cd,
		params: prefixhash.Params{Algo: prefixhash.XXH3, Seed: ns, BlockTokens: BlockTokens},
		layout: &pb.Layout{Dtype: pb.Dtype_DTYPE_FP16, Order: pb.KVOrder_KV_ORDER_SEPARATE, Layers: 1,
			KvHeads: uint32(m.KVHeads), HeadDim: uint32(m.HeadDim()), Tokens: BlockTokens},
	}
}

// Layout is the blocks' layout.
func (kc *KVCache) Layout() *pb.Layout { return kc.layout }

// Chain returns the prefix hashes of the full blocks of tokens.
func (kc *KVCache) Chain(tokens []int) ([]tiers.Hash, error) {
	u := make([]uint32, len(tokens))
	for i, t := range tokens {
		u[i] = uint32(t)
	}
	return prefixhash.Chain(kc.params, u)
}

// Key is block b's key at layer l.
func (kc *KVCache) Key(chain []tiers.Hash, b, l int) *pb.Key {
	return &pb.Key{Namespace: kc.ns, Hash: chain[b].Bytes(), Layer: int32(l)}
}

// Save puts blocks [from, to) of every layer of s (whose cache holds the
// tokens chain was computed from), applying the codec to each block and
// writing the codec's output back into s. It returns the bytes sent and
// the bytes the blocks take once encoded.
func (kc *KVCache) Save(ctx context.Context, s *Session, chain []tiers.Hash, from, to int) (raw, encoded int, err error) {
	if from < 0 || to > len(chain) || to*BlockTokens > s.N {
		return 0, 0, fmt.Errorf("%w: save blocks [%d,%d) of a %d-block chain, %d positions cached", ErrInput, from, to, len(chain), s.N)
	}
	kc.keys, kc.parents = kc.keys[:0], kc.parents[:0]
	kc.data = grow2(kc.data, (to-from)*kc.m.Layers)
	lay := kc.m.BlockLayout(BlockTokens)
	i := 0
	for b := from; b < to; b++ {
		var parent []byte
		if b > 0 {
			parent = chain[b-1].Bytes()
		}
		for l := 0; l < kc.m.Layers; l++ {
			buf, err := s.AppendBlock(kc.data[i][:0], l, b*BlockTokens, BlockTokens)
			if err != nil {
				return raw, encoded, err
			}
			kc.data[i] = buf
			i++
			e, err := kc.codec.RoundTrip(lay, buf)
			if err != nil {
				return raw, encoded, err
			}
			if !kc.codec.None {
				if err := s.SetBlock(l, b*BlockTokens, BlockTokens, buf); err != nil {
					return raw, encoded, err
				}
			}
			raw += len(buf)
			encoded += e
			kc.keys = append(kc.keys, kc.Key(chain, b, l))
			kc.parents = append(kc.parents, parent)
		}
	}
	return raw, encoded, kc.blocks.PutBatch(ctx, kc.keys, kc.layout, kc.data, kc.parents)
}

// Cached returns how many leading blocks of chain are cached in every layer.
func (kc *KVCache) Cached(ctx context.Context, chain []tiers.Hash) (int, error) {
	kc.hashes = kc.hashes[:0]
	for _, h := range chain {
		kc.hashes = append(kc.hashes, h.Bytes())
	}
	n := len(chain)
	for l := 0; l < kc.m.Layers && n > 0; l++ {
		resp, err := kc.c.LookupHashes(ctx, kc.ns, int32(l), kc.hashes[:n])
		if err != nil {
			return 0, err
		}
		n = min(n, int(resp.GetCachedBlocks()))
	}
	return n, nil
}

// Load fetches blocks [from, to) of every layer in one batch into s's cache
// (s.N is not changed) and returns the bytes moved.
func (kc *KVCache) Load(ctx context.Context, s *Session, chain []tiers.Hash, from, to int) (int, error) {
	if from < 0 || to > len(chain) || from > to {
		return 0, fmt.Errorf("%w: load blocks [%d,%d) of a %d-block chain", ErrInput, from, to, len(chain))
	}
	kc.keys = kc.keys[:0]
	for b := from; b < to; b++ {
		for l := 0; l < kc.m.Layers; l++ {
			kc.keys = append(kc.keys, kc.Key(chain, b, l))
		}
	}
	kc.data = grow2(kc.data, len(kc.keys))
	if err := kc.blocks.GetBatch(ctx, kc.keys, kc.data, client.GetOptions{}); err != nil {
		return 0, err
	}
	moved, i := 0, 0
	for b := from; b < to; b++ {
		for l := 0; l < kc.m.Layers; l++ {
			if err := s.SetBlock(l, b*BlockTokens, BlockTokens, kc.data[i]); err != nil {
				return moved, err
			}
			moved += len(kc.data[i])
			i++
		}
	}
	return moved, nil
}

func grow2(b [][]byte, n int) [][]byte {
	if cap(b) < n {
		nb := make([][]byte, n)
		copy(nb, b[:cap(b)])
		return nb
	}
	return b[:n]
}

// PrefillResult is what a prefill through the cache did.
type PrefillResult struct {
	Logits       []float32 // the last position's (valid until the session's next call)
	CachedBlocks int       // blocks loaded instead of computed
	Computed     int       // tokens computed
	BytesLoaded  int
}

// Prefill runs a new request: it looks up the longest cached prefix of
// tokens, loads those blocks, computes only the rest (at least the last
// token, whose logits are needed) and returns the last logits. Call Save
// afterwards to cache the blocks it computed.
func (kc *KVCache) Prefill(ctx context.Context, s *Session, tokens []int) (PrefillResult, []tiers.Hash, error) {
	s.Reset()
	chain, err := kc.Chain(tokens)
	if err != nil {
		return PrefillResult{}, nil, err
	}
	n, err := kc.Cached(ctx, chain)
	if err != nil {
		return PrefillResult{}, nil, err
	}
	if n*BlockTokens >= len(tokens) {
		n-- // keep one token to compute
	}
	var r PrefillResult
	if n > 0 {
		if r.BytesLoaded, err = kc.Load(ctx, s, chain, 0, n); err != nil {
			return r, chain, err
		}
		s.N = n * BlockTokens
	}
	r.CachedBlocks, r.Computed = n, len(tokens)-n*BlockTokens
	r.Logits, err = s.Prefill(tokens[n*BlockTokens:], nil)
	return r, chain, err
}
