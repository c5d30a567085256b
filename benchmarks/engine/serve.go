package engine

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"time"
)

// Request is one serving request: a prompt and how many tokens to generate.
type Request struct {
	Prompt []int
	Gen    int
}

// Workload builds requests that share prefixes from texts (each at least
// 512 bytes):
//   - multi-round-chat: each conversation (one text) has rounds whose
//     prompt is the previous round's prompt plus its answer plus 48 new
//     tokens, starting at 96 tokens;
//   - long-doc-qa: one 384-token document (the first text) followed by a
//     32-token question (from the other texts), per request.
func Workload(name string, texts [][]byte, requests, gen int) ([]Request, error) {
	if len(texts) == 0 || requests <= 0 || gen <= 0 {
		return nil, fmt.Errorf("%w: workload needs texts, requests and tokens to generate", ErrInput)
	}
	var out []Request
	switch name {
	case "multi-round-chat":
		const first, step = 96, 48
		for r := 0; len(out) < requests; r++ {
			for _, t := range texts {
				n := first + r*(step+gen)
				if n+gen > 512 || n > len(t) {
					return out, fmt.Errorf("%w: %d requests need longer conversations than the model's 512 positions (use fewer requests or more texts)", ErrInput, requests)
				}
				out = append(out, Request{Prompt: Tokens(t[:n]), Gen: gen})
				if len(out) == requests {
					break
				}
			}
		}
	case "long-doc-qa":
		const doc, q = 384, 32
		if len(texts[0]) < doc || doc+q+gen > 512 {
			return nil, fmt.Errorf("%w: long-doc-qa needs a %d-byte document and %d positions", ErrInput, doc, doc+q+gen)
		}
		for i := 0; i < requests; i++ {
			src := texts[1+i%max(1, len(texts)-1)%len(texts)]
			off := (i / max(1, len(texts)-1) * q) % max(1, len(src)-q)
			p := append(Tokens(texts[0][:doc]), Tokens(src[off:off+q])...)
			out = append(out, Request{Prompt: p, Gen: gen})
		}
	default:
		return nil, fmt.Errorf("%w: workload %q (multi-round-chat, long-doc-qa)", ErrInput, name)
	}
	return out, nil
}

// Served is one request's measured service.
type Served struct {
	Prefill      time.Duration // lookup, load and prefill: TTFT without queueing
	TPOT         time.Duration // mean time per generated token after the first
	Service      time.Duration // prefill, generation and the puts
	CachedTokens int
	PromptTokens int
	Generated    int
}

// Serve runs the requests one after another on one engine, with kvtier
// (kc not nil: look up, load, compute the rest, save the new blocks) or
// recomputing every prompt (kc nil), and measures each.
func (m *Model) Serve(ctx context.Context, kc *KVCache, reqs []Request) ([]Served, error) {
	s := m.NewSession()
	out := make([]Served, 0, len(reqs))
	for _, rq := range reqs {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		start := time.Now()
		var logits []float32
		var sv Served
		sv.PromptTokens = len(rq.Prompt)
		if kc != nil {
			r, chain, err := kc.Prefill(ctx, s, rq.Prompt)
			if err != nil {
				return out, err
			}
			logits, sv.CachedTokens = r.Logits, r.CachedBlocks*BlockTokens
			sv.Prefill = time.Since(start)
			from := r.CachedBlocks
			if err := generate(s, logits, rq.Gen, &sv); err != nil {
				return out, err
			}
			if _, _, err := kc.Save(ctx, s, chain, from, len(chain)); err != nil {
				return out, err
			}
		} else {
			s.Reset()
			var err error
			if logits, err = s.Prefill(rq.Prompt, nil); err != nil {
				return out, err
			}
			sv.Prefill = time.Since(start)
			if err := generate(s, logits, rq.Gen, &sv); err != nil {
				return out, err
			}
		}
		sv.Service = time.Since(start)
		out = append(out, sv)
	}
	return out, nil
}

// generate decodes greedily after the first token up to gen tokens in all
// (or the model's length) and records the time per token.
func generate(s *Session, logits []float32, gen int, sv *Served) error {
	tok := Argmax(logits)
	start := time.Now()
	var err error
	for i := 1; i < gen && s.N < s.m.SeqLen; i++ {
		if logits, err = s.Step(tok); err != nil {
			return err
		}
		tok = Argmax(logits)
		sv.Generated++
	}
	if sv.Generated > 0 {
		sv.TPOT = time.Since(start) / time.Duration(sv.Generated)
	}
	return nil
}

// EngineRow is one kvtier bench engine result.
type EngineRow struct {
	Scenario   string  `json:"scenario"`
	Workload   string  `json:"workload"`
	Cache      string  `json:"cache"`
	QPS        float64 `json:"qps"`
	Requests   int     `json:"requests"`
	TTFTp50    float64 `json:"ttft_p50_ms"`
	TTFTp90    float64 `json:"ttft_p90_ms"`
	TTFTp99    float64 `json:"ttft_p99_ms"`
	TPOTp50    float64 `json:"tpot_p50_ms"`
	TPOTp99    float64 `json:"tpot_p99_ms"`
	TokensPerS float64 `json:"tokens_per_s"`
	HitRate    float64 `json:"hit_rate"`
	SLATTFTms  float64 `json:"sla_ttft_ms,omitempty"`
	Measured   string  `json:"measured"`
}

// Summarize turns measured services into a row. Queueing: "single-stream"
// has none (one request at a time); "offline" submits everything at time
// zero; "server" draws Poisson arrivals at qps (seeded) and queues them
// FIFO on the one engine, each starting at max(arrival, previous end) with
// its measured service time.
func Summarize(scenario string, sv []Served, qps float64, seed uint64) (EngineRow, error) {
	if len(sv) == 0 {
		return EngineRow{}, fmt.Errorf("%w: no requests served", ErrInput)
	}
	row := EngineRow{Scenario: scenario, QPS: qps, Requests: len(sv), Measured: "measured (service times); queueing replayed"}
	ttft := make([]float64, len(sv))
	tpot := make([]float64, 0, len(sv))
	var clock, arrival float64 // seconds
	var tokens, cached, prompt int
	rng := rand.New(rand.NewPCG(seed, 1))
	for i, s := range sv {
		wait := 0.0
		switch scenario {
		case "single-stream":
			clock += s.Service.Seconds()
		case "offline":
			wait = clock
			clock += s.Service.Seconds()
		case "server":
			if qps <= 0 {
				return row, fmt.Errorf("%w: server scenario needs a positive qps", ErrInput)
			}
			arrival += rng.ExpFloat64() / qps
			startAt := math.Max(arrival, clock)
			wait = startAt - arrival
			clock = startAt + s.Service.Seconds()
		default:
			return row, fmt.Errorf("%w: scenario %q (single-stream, server, offline)", ErrInput, scenario)
		}
		ttft[i] = (wait + s.Prefill.Seconds()) * 1e3
		if s.Generated > 0 {
			tpot = append(tpot, float64(s.TPOT)/1e6)
		}
		tokens += s.Generated + 1
		cached += s.CachedTokens
		prompt += s.PromptTokens
	}
	row.TTFTp50, row.TTFTp90, row.TTFTp99 = pct(ttft, 50), pct(ttft, 90), pct(ttft, 99)
	row.TPOTp50, row.TPOTp99 = pct(tpot, 50), pct(tpot, 99)
	row.TokensPerS = float64(tokens) / clock // to the last completion
	row.HitRate = float64(cached) / float64(prompt)
	return row, nil
}

// MaxQPS finds the highest arrival rate whose p99 TTFT is within sla (by
// bisection over the replayed queue); qps 0 when none is (the requests'
// own TTFTs exceed it, without queueing).
func MaxQPS(sv []Served, sla time.Duration, seed uint64) (EngineRow, error) {
	var total time.Duration
	for _, s := range sv {
		total += s.Service
	}
	if len(sv) == 0 || total == 0 {
		return EngineRow{}, fmt.Errorf("%w: no requests served", ErrInput)
	}
	lo, hi := 0.0, 2*float64(len(sv))/total.Seconds() // twice the saturation rate
	var best EngineRow
	for range 40 {
		mid := (lo + hi) / 2
		r, err := Summarize("server", sv, mid, seed)
		if err != nil {
			return r, err
		}
		if r.TTFTp99 <= float64(sla)/1e6 {
			lo, best = mid, r
		} else {
			hi = mid
		}
	}
	if best.Requests == 0 {
		// No rate meets it: one request's own prefill exceeds the SLA.
		// Report the unloaded latencies at qps 0.
		best, err := Summarize("single-stream", sv, 0, seed)
		best.Scenario, best.QPS = "server", 0
		best.SLATTFTms = float64(sla) / 1e6
		return best, err
	}
	best.SLATTFTms = float64(sla) / 1e6
	return best, nil
}

func pct(v []float64, p float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}
