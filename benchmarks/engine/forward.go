package engine

import (
	"fmt"
	"math"

	"github.com/kvtier/kvtier/codec"
)

// BlockTokens is the number of tokens in one KV block.
const BlockTokens = 16

// Attention lets a caller see and steer a decode step's attention, layer
// by layer (the decode-offload benchmark's policies use it).
type Attention interface {
	// Before is called with layer l's rotated query ([heads][headDim]) at
	// position pos; it returns which blocks of the cache attention may read
	// (mask[b] for block b), or nil for all. The block holding pos is
	// always read.
	Before(l, pos int, q []float32) []bool
	// After is called with the attention probabilities, [heads][pos+1]
	// (zero for unread tokens).
	After(l, pos int, probs []float32)
}

// Session is one request's state: the KV cache and scratch buffers. It is
// not safe for concurrent use.
type Session struct {
	m *Model
	// K and V are per layer [kvHeads][SeqLen][headDim], rounded to float16
	// precision unless ExactKV.
	K, V [][]float32
	// N is the number of positions in the cache.
	N int
	// ExactKV keeps float32 keys and values (the fixture check uses it).
	ExactKV bool
	// Attn, when set, sees and steers Step's attention.
	Attn Attention

	x, xb, xb2, q, k, v, hb, hb2, att, logits []float32
	cap                                       int // batch rows the scratch holds
}

// NewSession returns an empty session.
func (m *Model) NewSession() *Session {
	s := &Session{m: m}
	kv := m.KVHeads * m.SeqLen * m.HeadDim()
	s.K, s.V = make([][]float32, m.Layers), make([][]float32, m.Layers)
	for l := range s.K {
		s.K[l], s.V[l] = make([]float32, kv), make([]float32, kv)
	}
	s.att = make([]float32, m.Heads*m.SeqLen)
	s.logits = make([]float32, m.Vocab)
	return s
}

// Model returns the session's model.
func (s *Session) Model() *Model { return s.m }

// Reset empties the cache.
func (s *Session) Reset() { s.N = 0 }

// Truncate drops cached positions from n on.
func (s *Session) Truncate(n int) {
	if n < s.N {
		s.N = max(n, 0)
	}
}

func (s *Session) grow(n int) {
	if n <= s.cap {
		return
	}
	c := s.m.Config
	s.cap = n
	s.x = make([]float32, n*c.Dim)
	s.xb = make([]float32, n*c.Dim)
	s.xb2 = make([]float32, n*c.Dim)
	s.q = make([]float32, n*c.Dim)
	s.k = make([]float32, n*c.KVDim())
	s.v = make([]float32, n*c.KVDim())
	s.hb = make([]float32, n*c.Hidden)
	s.hb2 = make([]float32, n*c.Hidden)
}

// Prefill runs tokens at positions N, N+1, … as one batch and returns the
// logits of the last one (valid until the next call). allLogits, when not
// nil, receives every position's logits ([len(tokens)][vocab]).
func (s *Session) Prefill(tokens []int, allLogits []float32) ([]float32, error) {
	return s.forward(tokens, allLogits)
}

// Step runs one token at position N and returns its logits (valid until
// the next call).
func (s *Session) Step(token int) ([]float32, error) {
	return s.forward([]int{token}, nil)
}

func (s *Session) forward(tokens []int, allLogits []float32) ([]float32, error) {
	c := s.m.Config
	n := len(tokens)
	switch {
	case n == 0:
		return nil, fmt.Errorf("%w: no tokens", ErrInput)
	case s.N+n > c.SeqLen:
		return nil, fmt.Errorf("%w: %d+%d positions exceed the model's %d", ErrInput, s.N, n, c.SeqLen)
	case allLogits != nil && len(allLogits) < n*c.Vocab:
		return nil, fmt.Errorf("%w: logits buffer holds %d values, need %d", ErrInput, len(allLogits), n*c.Vocab)
	}
	for _, t := range tokens {
		if t < 0 || t >= c.Vocab {
			return nil, fmt.Errorf("%w: token %d outside the vocabulary [0,%d)", ErrInput, t, c.Vocab)
		}
	}
	s.grow(n)
	dim, kvd, hd := c.Dim, c.KVDim(), c.HeadDim()
	x := s.x[:n*dim]
	for i, t := range tokens {
		copy(x[i*dim:(i+1)*dim], s.m.Embedding[t*dim:(t+1)*dim])
	}
	for l := range s.m.Weights {
		w := &s.m.Weights[l]
		xb := s.xb[:n*dim]
		for i := 0; i < n; i++ {
			rmsnorm(xb[i*dim:(i+1)*dim], x[i*dim:(i+1)*dim], w.AttNorm)
		}
		q, k, v := s.q[:n*dim], s.k[:n*kvd], s.v[:n*kvd]
		matmul(q, xb, w.Wq, n, dim, dim)
		matmul(k, xb, w.Wk, n, dim, kvd)
		matmul(v, xb, w.Wv, n, dim, kvd)
		for i := 0; i < n; i++ {
			pos := s.N + i
			s.m.rope(q[i*dim:(i+1)*dim], pos)
			s.m.rope(k[i*kvd:(i+1)*kvd], pos)
			for h := 0; h < c.KVHeads; h++ {
				dk := s.K[l][(h*c.SeqLen+pos)*hd : (h*c.SeqLen+pos+1)*hd]
				dv := s.V[l][(h*c.SeqLen+pos)*hd : (h*c.SeqLen+pos+1)*hd]
				copy(dk, k[i*kvd+h*hd:i*kvd+(h+1)*hd])
				copy(dv, v[i*kvd+h*hd:i*kvd+(h+1)*hd])
				if !s.ExactKV {
					roundHalf(dk)
					roundHalf(dv)
				}
			}
		}
		xb2 := s.xb2[:n*dim]
		for i := 0; i < n; i++ {
			s.attend(l, s.N+i, q[i*dim:(i+1)*dim], xb2[i*dim:(i+1)*dim], n == 1)
		}
		matmul(xb, xb2, w.Wo, n, dim, dim)
		for i := range x {
			x[i] += xb[i]
		}
		for i := 0; i < n; i++ {
			rmsnorm(xb[i*dim:(i+1)*dim], x[i*dim:(i+1)*dim], w.FFNNorm)
		}
		hb, hb2 := s.hb[:n*c.Hidden], s.hb2[:n*c.Hidden]
		matmul(hb, xb, w.W1, n, dim, c.Hidden)
		matmul(hb2, xb, w.W3, n, dim, c.Hidden)
		for i, g := range hb {
			hb[i] = g / (1 + float32(math.Exp(float64(-g)))) * hb2[i]
		}
		matmul(xb, hb, w.W2, n, c.Hidden, dim)
		for i := range x {
			x[i] += xb[i]
		}
	}
	s.N += n
	first := n - 1
	if allLogits != nil {
		first = 0
	}
	for i := first; i < n; i++ {
		rmsnorm(s.xb[:dim], x[i*dim:(i+1)*dim], s.m.FinalNorm)
		out := s.logits
		if allLogits != nil {
			out = allLogits[i*c.Vocab : (i+1)*c.Vocab]
		}
		matmul(out, s.xb[:dim], s.m.Embedding, 1, dim, c.Vocab)
		if allLogits != nil && i == n-1 {
			copy(s.logits, out)
		}
	}
	return s.logits, nil
}

// attend computes one position's attention output into out.
func (s *Session) attend(l, pos int, q, out []float32, step bool) {
	c := s.m.Config
	hd := c.HeadDim()
	var mask []bool
	if step && s.Attn != nil {
		mask = s.Attn.Before(l, pos, q)
	}
	cur := pos / BlockTokens
	scale := float32(1 / math.Sqrt(float64(hd)))
	group := c.Heads / c.KVHeads
	for h := 0; h < c.Heads; h++ {
		kh := h / group
		qh := q[h*hd : (h+1)*hd]
		att := s.att[h*c.SeqLen : h*c.SeqLen+pos+1]
		K := s.K[l][kh*c.SeqLen*hd:]
		mx := float32(math.Inf(-1))
		for t := 0; t <= pos; t++ {
			if b := t / BlockTokens; mask != nil && b != cur && (b >= len(mask) || !mask[b]) {
				att[t] = float32(math.Inf(-1))
				continue
			}
			a := dot(qh, K[t*hd:(t+1)*hd]) * scale
			att[t] = a
			mx = max(mx, a)
		}
		var sum float32
		for t := range att {
			e := float32(math.Exp(float64(att[t] - mx)))
			att[t] = e
			sum += e
		}
		o := out[h*hd : (h+1)*hd]
		clear(o)
		V := s.V[l][kh*c.SeqLen*hd:]
		inv := 1 / sum
		for t := range att {
			att[t] *= inv
			if p := att[t]; p != 0 {
				axpy(o, p, V[t*hd:(t+1)*hd])
			}
		}
	}
	if step && s.Attn != nil {
		// Hand over [heads][pos+1] packed.
		packed := s.att[:0]
		for h := 0; h < c.Heads; h++ {
			packed = append(packed, s.att[h*c.SeqLen:h*c.SeqLen+pos+1]...)
		}
		s.Attn.After(l, pos, packed)
	}
}

func (m *Model) rope(v []float32, pos int) {
	hd := m.HeadDim()
	cs, sn := m.cos[pos*hd/2:(pos+1)*hd/2], m.sin[pos*hd/2:(pos+1)*hd/2]
	for h := 0; h+hd <= len(v); h += hd {
		for i := 0; i < hd/2; i++ {
			a, b := v[h+2*i], v[h+2*i+1]
			v[h+2*i] = a*cs[i] - b*sn[i]
			v[h+2*i+1] = a*sn[i] + b*cs[i]
		}
	}
}

func rmsnorm(out, x, w []float32) {
	var ss float32
	for _, v := range x {
		ss += v * v
	}
	inv := float32(1 / math.Sqrt(float64(ss/float32(len(x))+1e-5)))
	for i, v := range x {
		out[i] = v * inv * w[i]
	}
}

func roundHalf(v []float32) {
	for i, f := range v {
		v[i] = codec.HalfToFloat32(codec.Float32ToHalf(f))
	}
}

// Argmax returns the index of the largest value (greedy sampling).
func Argmax(v []float32) int {
	best := 0
	for i, f := range v {
		if f > v[best] {
			best = i
		}
	}
	return best
}

// NLL returns −log softmax(logits)[target] in nats.
func NLL(logits []float32, target int) float64 {
	mx := logits[0]
	for _, f := range logits {
		mx = max(mx, f)
	}
	var sum float64
	for _, f := range logits {
		sum += math.Exp(float64(f - mx))
	}
	return math.Log(sum) - float64(logits[target]-mx)
}
