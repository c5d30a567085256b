package daemon_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kvtier/kvtier/client"
	"github.com/kvtier/kvtier/daemon"
	"github.com/kvtier/kvtier/prefetch"
	pb "github.com/kvtier/kvtier/proto/kvtier/v1"
	"github.com/kvtier/kvtier/tiers"
)

// TestHintStagesNVMeBeforeFirstGet: after a restart a request's blocks are
// on NVMe only; its request_arrived hint brings them into DRAM, so the
// engine's first Get is a DRAM hit. Dropping the stream finishes the request.
func TestHintStagesNVMeBeforeFirstGet(t *testing.T) {
	dir := t.TempDir()
	e := startEnv(t, envOptions{nvme: true, nvmeDir: dir})
	ctx := ctxT(t)
	const n = 12
	hashes := make([][]byte, n)
	for i := range n {
		k := keyOf("pf", i)
		hashes[i] = k.GetHash()
		if err := e.cl.Put(ctx, k, smallLayout(), blockData(k, smallSize), client.PutOptions{Durable: true}); err != nil {
			t.Fatal(err)
		}
	}
	e.stop()

	var pf *prefetch.Prefetcher
	e2 := startEnv(t, envOptions{nvme: true, nvmeDir: dir, cfg: func(c *daemon.Config) { c.MetricsAddr = "127.0.0.1:0" }, hints: func(st *tiers.Store) daemon.Hints {
		p, err := prefetch.New(prefetch.Config{Store: st, Workers: 2, Logger: discardLogger()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		pf = p
		return p
	}})
	st, err := e2.cl.API().Hint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&pb.HintRequest{Id: 7, Ack: true, Hint: &pb.HintRequest_RequestArrived{RequestArrived: &pb.RequestArrivedHint{
		RequestId: "req-1", Namespace: "pf", Layer: 0, Hashes: hashes,
	}}}); err != nil {
		t.Fatal(err)
	}
	ack, err := st.Recv()
	if err != nil || ack.GetId() != 7 || ack.GetBlocksScheduled() != n {
		t.Fatalf("ack %v, %v; want id 7 with %d blocks", ack, err, n)
	}
	deadline := time.Now().Add(10 * time.Second)
	for pf.Stats().Staged < n {
		if time.Now().After(deadline) {
			t.Fatalf("staging did not finish: %+v", pf.Stats())
		}
		time.Sleep(time.Millisecond)
	}
	for i := range n {
		k := keyOf("pf", i)
		b, err := e2.cl.Get(ctx, k, nil, client.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if b.From != pb.Tier_TIER_DRAM {
			t.Errorf("block %d came from %v, want DRAM", i, b.From)
		}
		checkData(t, k, b.Data)
	}
	// A layer_query ranks the staged blocks by their key summaries and
	// schedules a plan; a malformed one ends the stream INVALID_ARGUMENT.
	q := make([]float32, 4*64)
	for i := range q {
		q[i] = float32(i%7) - 3
	}
	if err := st.Send(&pb.HintRequest{Id: 8, Ack: true, Hint: &pb.HintRequest_LayerQuery{LayerQuery: &pb.LayerQueryHint{
		RequestId: "req-1", Layer: 0, Step: 1, QHeads: 4, KvHeads: 2, HeadDim: 64, Query: q,
	}}}); err != nil {
		t.Fatal(err)
	}
	if ack, err := st.Recv(); err != nil || ack.GetId() != 8 || ack.GetBlocksScheduled() != 3 {
		t.Fatalf("layer_query ack %v, %v; want 3 blocks (25%% of %d)", ack, err, n)
	}
	resp, err := http.Get("http://" + e2.srv.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		fmt.Sprintf(`kvtier_prefetch_blocks_total{outcome="staged"} %d`, n),
		fmt.Sprintf(`kvtier_prefetch_bytes_moved_total %d`, n*smallSize),
		`kvtier_prefetch_requests 1`,
		`kvtier_hints_total{kind="request_arrived",result="ok"} 1`,
		`kvtier_hints_total{kind="layer_query",result="ok"} 1`,
		`kvtier_prefetch_plans_total 1`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if err := st.CloseSend(); err != nil {
		t.Fatal(err)
	}
	for pf.Stats().Requests != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the dropped stream's request is still active: %+v", pf.Stats())
		}
		time.Sleep(time.Millisecond)
	}
}
