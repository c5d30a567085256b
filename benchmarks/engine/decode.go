package engine

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/kvtier/kvtier/client"
	pb "github.com/kvtier/kvtier/proto/kvtier/v1"
	"github.com/kvtier/kvtier/tiers"
)

// DecodeOptions configure one decode-offload run.
type DecodeOptions struct {
	Mode    string  // "full" or "sparse"
	Policy  Policy  // sparse mode's block selection
	Budget  float64 // fraction of a request's blocks resident in the engine, (0, 1]
	Prefill int     // tokens prefilled per window (a multiple of 16)
	Recent  int     // completed blocks always resident besides the sink (default 1)
	// Progress, when set, is called after each window.
	Progress func(done, total int)
}

// DecodeRow is one decode-offload result (the JSON row of kvtier bench decode).
type DecodeRow struct {
	Model          string  `json:"model"`
	Mode           string  `json:"mode"`
	Policy         string  `json:"policy"`
	Budget         float64 `json:"budget"`
	Codec          string  `json:"codec"`
	Context        int     `json:"context"`
	Plane          string  `json:"plane"`
	Windows        int     `json:"windows"`
	TPOTMsResident float64 `json:"tpot_ms_resident"`
	TPOTMs         float64 `json:"tpot_ms"`
	OverheadPct    float64 `json:"overhead_pct"`
	// Medians of the per-step times (the means above carry the machine's
	// load spikes too).
	TPOTMsResidentP50 float64 `json:"tpot_ms_resident_p50"`
	TPOTMsP50         float64 `json:"tpot_ms_p50"`
	OverheadPctP50    float64 `json:"overhead_pct_p50"`
	StallMs           float64 `json:"stall_ms"` // per token
	BytesPerToken     float64 `json:"bytes_moved_per_token"`
	HitRate           float64 `json:"hit_rate"`
	NLL               float64 `json:"nll"`
	NLLResident       float64 `json:"nll_resident"`
	NLLIncreasePct    float64 `json:"nll_increase_pct"`
	Agreement         float64 `json:"token_agreement"`
	CodecRatio        float64 `json:"codec_ratio"`
	FetchGBps         float64 `json:"fetch_gbps"`
	CopyGBps          float64 `json:"copy_gbps"`
	FetchVsCopy       float64 `json:"fetch_time_vs_copy"`
	Measured          string  `json:"measured"`
}

// fetcher runs one batched fetch at a time on its own goroutine, so that
// the fetch for step t+1 overlaps step t's compute.
type fetcher struct {
	jobs chan fetchJob
	done chan fetchResult
}

type fetchJob struct {
	keys []*pb.Key
	dst  [][]byte
}

type fetchResult struct {
	err error
	dur time.Duration
}

func newFetcher(ctx context.Context, blocks Blocks) *fetcher {
	f := &fetcher{jobs: make(chan fetchJob), done: make(chan fetchResult, 1)}
	go func() {
		for j := range f.jobs {
			start := time.Now()
			err := blocks.GetBatch(ctx, j.keys, j.dst, client.GetOptions{})
			f.done <- fetchResult{err: err, dur: time.Since(start)}
		}
	}()
	return f
}

func (f *fetcher) close() { close(f.jobs) }

// decodeRun is the state of one offloaded window.
type decodeRun struct {
	m     *Model
	kc    *KVCache
	opts  DecodeOptions
	s     *Session
	chain []tiers.Hash
	limit int // blocks resident per layer (sink and recent included)

	resident [][]bool // per layer, per block
	next     [][]int  // per layer: the blocks the next step reads
	keys     []*pb.Key
	where    [][2]int // (layer, block) of each key
	dst      [][]byte
	copyBuf  []byte
	blockBuf []byte      // scratch of observeBlocks
	pending  bool        // a prefetch is in flight
	keyOf    [][]*pb.Key // per layer, per block: built once per window
	want     []bool      // scratch of queue
	mask     []bool      // scratch of Before (read by attention during the call only)
	mass     []float64   // scratch of After
	f        *fetcher
	err      error // a fetch failure inside Before (oracle), reported after the step

	fetchBytes, fetchedBlocks, hits, reads int
	fetchDur, copyDur, stall               time.Duration
}

// RunDecode decodes the windows through kvtier with the options and
// compares with the reference run.
//
// The all-resident engine (full attention, no fetches, no codec) runs in
// lockstep, window by window and step by step, so its time per token and
// its predictions are measured in the same run and under the same load.
func (kc *KVCache) RunDecode(ctx context.Context, windows [][]int, opts DecodeOptions) (DecodeRow, error) {
	m := kc.m
	if opts.Recent <= 0 {
		opts.Recent = 1
	}
	if opts.Mode != "full" && opts.Mode != "sparse" {
		return DecodeRow{}, fmt.Errorf("%w: mode %q (full or sparse)", ErrInput, opts.Mode)
	}
	if opts.Mode == "sparse" && opts.Policy == nil {
		return DecodeRow{}, fmt.Errorf("%w: sparse mode needs a policy", ErrInput)
	}
	if !(opts.Budget > 0 && opts.Budget <= 1) {
		return DecodeRow{}, fmt.Errorf("%w: budget %v outside (0, 1]", ErrInput, opts.Budget)
	}
	if opts.Prefill <= 0 || opts.Prefill%BlockTokens != 0 {
		return DecodeRow{}, fmt.Errorf("%w: prefill %d must be a positive multiple of %d", ErrInput, opts.Prefill, BlockTokens)
	}
	for _, w := range windows {
		if len(w) <= opts.Prefill || len(w) > m.SeqLen {
			return DecodeRow{}, fmt.Errorf("%w: a %d-token window with %d prefilled (model length %d)", ErrInput, len(w), opts.Prefill, m.SeqLen)
		}
	}
	if len(windows) == 0 {
		return DecodeRow{}, fmt.Errorf("%w: no windows", ErrInput)
	}
	row := DecodeRow{Model: m.Name, Mode: opts.Mode, Budget: opts.Budget, Codec: kc.codec.Name, Windows: len(windows),
		Measured: "measured"}
	if opts.Policy != nil && opts.Mode == "sparse" {
		row.Policy = opts.Policy.Name()
	} else {
		row.Policy = "none"
	}
	f := newFetcher(ctx, kc.blocks)
	defer f.close()
	var steps, agree, preds int
	var stepDur, refDur time.Duration
	var stepTimes, refTimes []float64
	res := m.NewSession()
	var nll, nllRef float64
	var rawBytes, encBytes int
	for wi, w := range windows {
		row.Context = max(row.Context, len(w))
		r := &decodeRun{m: m, kc: kc, opts: opts, s: m.NewSession(), f: f}
		var err error
		if r.chain, err = kc.Chain(w); err != nil {
			return row, err
		}
		total := (len(w) + BlockTokens - 1) / BlockTokens
		r.limit = max(1+opts.Recent, int(math.Ceil(opts.Budget*float64(total))))
		if opts.Policy != nil {
			if err := opts.Policy.Reset(); err != nil {
				return row, err
			}
		}
		res.Reset()
		rlogits, err := res.Prefill(w[:opts.Prefill], nil)
		if err != nil {
			return row, err
		}
		logits, err := r.s.Prefill(w[:opts.Prefill], nil)
		if err != nil {
			return row, err
		}
		check := func(i int, logits, rlogits []float32) {
			nll += NLL(logits, w[opts.Prefill+i])
			nllRef += NLL(rlogits, w[opts.Prefill+i])
			if Argmax(logits) == Argmax(rlogits) {
				agree++
			}
			preds++
		}
		check(0, logits, rlogits)
		raw, enc, err := kc.Save(ctx, r.s, r.chain, 0, opts.Prefill/BlockTokens)
		if err != nil {
			return row, err
		}
		rawBytes, encBytes = rawBytes+raw, encBytes+enc
		if err := r.observeBlocks(0, opts.Prefill/BlockTokens); err != nil {
			return row, err
		}
		r.resident = make([][]bool, m.Layers)
		r.next = make([][]int, m.Layers)
		for l := range r.resident {
			r.resident[l] = make([]bool, total)
			for b := 0; b < opts.Prefill/BlockTokens; b++ {
				r.resident[l][b] = true // computed on the device
			}
		}
		if opts.Mode == "sparse" {
			r.s.Attn = r
		}
		for t := opts.Prefill; t < len(w)-1; t++ {
			start := time.Now()
			rlogits, err := res.Step(w[t])
			refDur += time.Since(start)
			refTimes = append(refTimes, float64(time.Since(start))/1e6)
			if err != nil {
				return row, err
			}
			start = time.Now()
			if t%BlockTokens == 0 && t > opts.Prefill {
				b := t/BlockTokens - 1
				raw, enc, err := kc.Save(ctx, r.s, r.chain, b, b+1)
				if err != nil {
					return row, err
				}
				rawBytes, encBytes = rawBytes+raw, encBytes+enc
				if err := r.observeBlocks(b, b+1); err != nil {
					return row, err
				}
				for l := range r.resident {
					r.resident[l][b] = true
				}
			}
			if err := r.beforeStep(ctx, f, t); err != nil {
				return row, err
			}
			logits, err = r.s.Step(w[t])
			if err == nil {
				err = r.err
			}
			if err != nil {
				return row, err
			}
			if opts.Mode == "sparse" {
				if _, ok := opts.Policy.(Oracle); !ok {
					if err := r.prefetch(f, t+1); err != nil {
						return row, err
					}
				}
			}
			stepDur += time.Since(start)
			stepTimes = append(stepTimes, float64(time.Since(start))/1e6)
			steps++
			check(t-opts.Prefill+1, logits, rlogits)
		}
		if r.pending {
			res := <-f.done
			if res.err != nil {
				return row, res.err
			}
		}
		row.StallMs += float64(r.stall) / 1e6
		row.BytesPerToken += float64(r.fetchBytes)
		if r.reads > 0 {
			row.HitRate += float64(r.hits) / float64(r.reads)
		}
		if r.fetchDur > 0 {
			row.FetchGBps += float64(r.fetchBytes)
			row.CopyGBps += float64(r.copyDur)
			row.FetchVsCopy += float64(r.fetchDur)
		}
		if opts.Progress != nil {
			opts.Progress(wi+1, len(windows))
		}
	}
	fetchBytes, copyNs, fetchNs := row.FetchGBps, row.CopyGBps, row.FetchVsCopy
	row.FetchGBps, row.CopyGBps, row.FetchVsCopy = 0, 0, 0
	if fetchNs > 0 && copyNs > 0 {
		row.FetchGBps = fetchBytes / fetchNs
		row.CopyGBps = fetchBytes / copyNs
		row.FetchVsCopy = fetchNs / copyNs
	}
	row.HitRate /= float64(len(windows))
	row.StallMs /= float64(steps)
	row.BytesPerToken /= float64(steps)
	row.TPOTMsResident = float64(refDur) / float64(steps) / 1e6
	row.TPOTMs = float64(stepDur) / float64(steps) / 1e6
	row.OverheadPct = 100 * (row.TPOTMs/row.TPOTMsResident - 1)
	row.TPOTMsResidentP50, row.TPOTMsP50 = pct(refTimes, 50), pct(stepTimes, 50)
	row.OverheadPctP50 = 100 * (row.TPOTMsP50/row.TPOTMsResidentP50 - 1)
	row.NLL, row.NLLResident = nll/float64(preds), nllRef/float64(preds)
	row.NLLIncreasePct = 100 * (row.NLL/row.NLLResident - 1)
	row.Agreement = float64(agree) / float64(preds)
	if encBytes > 0 {
		row.CodecRatio = float64(rawBytes) / float64(encBytes)
	}
	return row, nil
}

// completed is the number of full blocks before position pos.
func completed(pos int) int { return pos / BlockTokens }

// observeBlocks hands the policy blocks [from, to) of every layer as the
// engine wrote them (sparse mode), for its key summaries.
func (r *decodeRun) observeBlocks(from, to int) error {
	if r.opts.Mode != "sparse" {
		return nil
	}
	for b := from; b < to; b++ {
		for l := 0; l < r.m.Layers; l++ {
			var err error
			if r.blockBuf, err = r.s.AppendBlock(r.blockBuf[:0], l, b*BlockTokens, BlockTokens); err != nil {
				return err
			}
			if err := r.opts.Policy.ObserveBlock(l, b, r.blockBuf); err != nil {
				return err
			}
		}
	}
	return nil
}

// plan fills r.next[l] with the blocks step pos reads in layer l (beyond
// the current partial block): the sink, the recent window, and the
// policy's picks, at most r.limit.
func (r *decodeRun) plan(l, pos int, q []float32) error {
	n := completed(pos)
	nx := r.next[l][:0]
	if n == 0 {
		r.next[l] = nx
		return nil
	}
	nx = append(nx, 0)
	firstRecent := max(1, n-r.opts.Recent)
	for b := firstRecent; b < n; b++ {
		nx = append(nx, b)
	}
	k := r.limit - len(nx)
	if k > 0 && firstRecent > 1 {
		cands := make([]int, 0, firstRecent-1)
		for b := 1; b < firstRecent; b++ {
			cands = append(cands, b)
		}
		if o, ok := r.opts.Policy.(Oracle); ok && q != nil {
			nx = o.SelectOracle(l, pos, q, r.s, cands, k, nx)
		} else if r.opts.Mode == "sparse" {
			var err error
			if nx, err = r.opts.Policy.Select(l, cands, k, nx); err != nil {
				return err
			}
		} else {
			for i := len(cands) - 1; i >= 0 && k > 0; i-- { // the most recent
				nx = append(nx, cands[i])
				k--
			}
		}
	}
	r.next[l] = nx
	return nil
}

// queue adds layer l's planned blocks that are not resident to the fetch
// list, and makes the planned set the resident one.
func (r *decodeRun) queue(l, pos int) {
	n := completed(pos)
	res := r.resident[l]
	if pos%BlockTokens == 0 && n > 0 {
		res[n-1] = true // the block just completed was computed on the device
	}
	want := r.want[:0]
	for range res {
		want = append(want, false)
	}
	r.want = want
	for _, b := range r.next[l] {
		want[b] = true
		r.reads++
		if res[b] {
			r.hits++
			continue
		}
		r.keys = append(r.keys, r.key(l, b))
		r.where = append(r.where, [2]int{l, b})
	}
	for b := 0; b < n; b++ {
		res[b] = want[b]
	}
}

// startFetch sends the queued keys to the fetcher.
func (r *decodeRun) startFetch(f *fetcher) {
	r.dst = grow2(r.dst, len(r.keys))
	f.jobs <- fetchJob{keys: r.keys, dst: r.dst}
	r.pending = true
}

// finishFetch waits for the fetch in flight and writes the blocks into
// the session.
func (r *decodeRun) finishFetch(f *fetcher) error {
	if !r.pending {
		return nil
	}
	start := time.Now()
	res := <-f.done
	r.stall += time.Since(start)
	r.pending = false
	if res.err != nil {
		return res.err
	}
	r.fetchDur += res.dur
	// The reference: a plain copy of the same bytes.
	cstart := time.Now()
	off := 0
	for _, d := range r.dst[:len(r.keys)] {
		if len(r.copyBuf) < off+len(d) {
			r.copyBuf = append(r.copyBuf, make([]byte, off+len(d)-len(r.copyBuf))...)
		}
		off += copy(r.copyBuf[off:], d)
	}
	r.copyDur += time.Since(cstart)
	for i, lb := range r.where {
		d := r.dst[i]
		if err := r.s.SetBlock(lb[0], lb[1]*BlockTokens, BlockTokens, d); err != nil {
			return err
		}
		r.fetchBytes += len(d)
		r.fetchedBlocks++
	}
	r.keys, r.where = r.keys[:0], r.where[:0]
	return nil
}

// beforeStep makes the blocks step pos reads resident. Full mode: the
// non-resident blocks are dropped (poisoned with NaN, so a block not
// fetched shows in the logits) and fetched in one batch, waited for.
// Sparse mode: the prefetch sent after the previous step is awaited
// (oracle: layers fetch at the step itself, in Before).
func (r *decodeRun) beforeStep(ctx context.Context, f *fetcher, pos int) error {
	if r.opts.Mode == "sparse" {
		if r.pending {
			return r.finishFetch(f)
		}
		if _, ok := r.opts.Policy.(Oracle); ok {
			return nil
		}
		// First step of a window: plan and fetch synchronously.
		if err := r.prefetch(f, pos); err != nil {
			return err
		}
		return r.finishFetch(f)
	}
	n := completed(pos)
	for l := 0; l < r.m.Layers; l++ {
		if err := r.plan(l, pos, nil); err != nil {
			return err
		}
		r.queue(l, pos)
		// Everything completed is read: count the rest as misses.
		for b := 0; b < n; b++ {
			if r.resident[l][b] {
				continue
			}
			r.reads++
			r.poison(l, b)
			r.keys = append(r.keys, r.key(l, b))
			r.where = append(r.where, [2]int{l, b})
		}
	}
	if len(r.keys) == 0 {
		return nil
	}
	r.startFetch(f)
	return r.finishFetch(f)
}

// prefetch plans every layer's blocks for step pos and starts fetching
// the missing ones.
func (r *decodeRun) prefetch(f *fetcher, pos int) error {
	for l := 0; l < r.m.Layers; l++ {
		if err := r.plan(l, pos, nil); err != nil {
			return err
		}
		r.queue(l, pos)
	}
	if len(r.keys) > 0 {
		r.startFetch(f)
	}
	return nil
}

// key returns block b's key at layer l, built once per window.
func (r *decodeRun) key(l, b int) *pb.Key {
	if r.keyOf == nil {
		r.keyOf = make([][]*pb.Key, r.m.Layers)
		for i := range r.keyOf {
			r.keyOf[i] = make([]*pb.Key, len(r.chain))
		}
	}
	if r.keyOf[l][b] == nil {
		r.keyOf[l][b] = r.kc.Key(r.chain, b, l)
	}
	return r.keyOf[l][b]
}

func (r *decodeRun) poison(l, b int) {
	c := r.m.Config
	hd := c.HeadDim()
	nan := float32(math.NaN())
	for _, kv := range [2][]float32{r.s.K[l], r.s.V[l]} {
		for h := 0; h < c.KVHeads; h++ {
			d := kv[(h*c.SeqLen+b*BlockTokens)*hd : (h*c.SeqLen+(b+1)*BlockTokens)*hd]
			for i := range d {
				d[i] = nan
			}
		}
	}
}

// Before implements Attention for sparse mode: the mask of the planned
// blocks (the oracle plans and fetches here, synchronously).
func (r *decodeRun) Before(l, pos int, q []float32) []bool {
	if _, ok := r.opts.Policy.(Oracle); !ok {
		if err := r.opts.Policy.ObserveQuery(l, pos, q); err != nil && r.err == nil {
			r.err = err
		}
	} else if err := r.plan(l, pos, q); err != nil {
		if r.err == nil {
			r.err = err
		}
	} else {
		r.queue(l, pos)
		if len(r.keys) > 0 {
			// An error here surfaces as NaN logits: the blocks stay poisoned.
			for _, lb := range r.where {
				r.poison(lb[0], lb[1])
			}
			r.startFetch(r.f)
			if err := r.finishFetch(r.f); err != nil && r.err == nil {
				r.err = err
				r.keys, r.where = r.keys[:0], r.where[:0]
			}
		}
	}
	mask := r.mask[:0]
	for range completed(pos) + 1 {
		mask = append(mask, false)
	}
	r.mask = mask
	for _, b := range r.next[l] {
		mask[b] = true
	}
	return mask
}

// After implements Attention: the mass of each block read, for the policy.
func (r *decodeRun) After(l, pos int, probs []float32) {
	n := pos/BlockTokens + 1
	mass := r.mass[:0]
	for range n {
		mass = append(mass, -1)
	}
	r.mass = mass
	for _, b := range r.next[l] {
		mass[b] = 0
	}
	mass[n-1] = 0
	heads := len(probs) / (pos + 1)
	for h := 0; h < heads; h++ {
		for t, p := range probs[h*(pos+1) : (h+1)*(pos+1)] {
			if b := t / BlockTokens; mass[b] >= 0 {
				mass[b] += float64(p)
			}
		}
	}
	if err := r.opts.Policy.Observe(l, pos, mass); err != nil && r.err == nil {
		r.err = err
	}
}
