package daemon_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/kvtier/kvtier/daemon"
)

// TestNVMeHealthReported: the NVMe tier's disk-space and quarantine state
// reach Stats and /metrics.
func TestNVMeHealthReported(t *testing.T) {
	e := startEnv(t, envOptions{nvme: true, cfg: func(c *daemon.Config) { c.MetricsAddr = "127.0.0.1:0" }})
	st, err := e.cl.Stats(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, ts := range st.GetTiers() {
		if ts.GetName() != "nvme" {
			continue
		}
		found = true
		if ts.GetWritesStopped() || ts.GetFreeBytes() == 0 || ts.GetQuarantined() != 0 {
			t.Errorf("nvme stats %v: want writes going on, free space measured, nothing quarantined", ts)
		}
	}
	if !found {
		t.Fatalf("no nvme tier in %v", st)
	}
	resp, err := http.Get("http://" + e.srv.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`kvtier_tier_writes_stopped{name="nvme",tier="nvme"} 0`,
		`kvtier_tier_quarantined_total{name="nvme",tier="nvme"} 0`,
		`kvtier_tier_free_bytes{name="nvme",tier="nvme"} `,
		`kvtier_tier_writes_stopped{name="dram",tier="dram"} 0`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}
