package load

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/kvtier/kvtier/client"
)

func TestParseMix(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Mix
		ok   bool
	}{
		{"get=1", Mix{Get: 1}, true},
		{"get=0.8,put=0.1,lookup=0.1", Mix{0.8, 0.1, 0.1}, true},
		{"get=2, put=2", Mix{Get: 0.5, Put: 0.5}, true},
		{"lookup=3", Mix{Lookup: 1}, true},
		{"", Mix{}, false},
		{"get", Mix{}, false},
		{"get=-1,put=2", Mix{}, false},
		{"get=0", Mix{}, false},
		{"scan=1", Mix{}, false},
		{"get=x", Mix{}, false},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseMix(tc.in)
			if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrInvalid)) {
				t.Fatalf("err %v, want ok=%v", err, tc.ok)
			}
			if tc.ok && (math.Abs(got.Get-tc.want.Get) > 1e-12 || math.Abs(got.Put-tc.want.Put) > 1e-12 || math.Abs(got.Lookup-tc.want.Lookup) > 1e-12) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func FuzzParseMix(f *testing.F) {
	for _, s := range []string{"get=1", "get=0.8,put=0.1,lookup=0.1", "put=1e308,get=1e308", "get=NaN", ",,="} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseMix(s)
		if err != nil {
			return
		}
		sum := m.Get + m.Put + m.Lookup
		if math.IsNaN(sum) || math.Abs(sum-1) > 1e-9 || m.Get < 0 || m.Put < 0 || m.Lookup < 0 {
			t.Fatalf("ParseMix(%q) = %+v", s, m)
		}
	})
}

func TestWorkloadGen(t *testing.T) {
	mix, _ := ParseMix("get=0.6,put=0.2,lookup=0.2")
	w, err := NewWorkload(mix, 4096, 100, 0.75, 7)
	if err != nil {
		t.Fatal(err)
	}
	const n = 20000
	var kinds [3]int
	gets, misses := 0, 0
	a, b := w.gen(1), w.gen(1)
	for range n {
		k, key := a.next()
		k2, key2 := b.next()
		if k != k2 || key != key2 {
			t.Fatal("the same seed and worker drew different operations")
		}
		kinds[k]++
		if k == OpGet {
			gets++
			if key >= w.Keys {
				misses++
			}
		} else if key >= w.Keys {
			t.Fatalf("op %d on unstored key %d", k, key)
		}
	}
	near := func(got int, share float64, total int) bool {
		return math.Abs(float64(got)/float64(total)-share) < 0.02
	}
	if !near(kinds[OpGet], 0.6, n) || !near(kinds[OpPut], 0.2, n) || !near(kinds[OpLookup], 0.2, n) || !near(misses, 0.25, gets) {
		t.Fatalf("kinds %v, %d of %d gets missed", kinds, misses, gets)
	}
	for _, bad := range []struct {
		block, keys int
		hit         float64
	}{{1000, 10, 1}, {4096, 0, 1}, {4096, 10, 1.5}, {1 << 30, 100, 1}} {
		if _, err := NewWorkload(mix, bad.block, bad.keys, bad.hit, 1); !errors.Is(err, ErrInvalid) {
			t.Errorf("NewWorkload(%d, %d, %g): %v", bad.block, bad.keys, bad.hit, err)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"sweep", Config{Scenario: Sweep}, true},
		{"server rate", Config{Scenario: Server, QPS: 100}, true},
		{"server max", Config{Scenario: Server, FindMax: true}, true},
		{"server without rate", Config{Scenario: Server}, false},
		{"unknown", Config{Scenario: "batch"}, false},
		{"level zero", Config{Scenario: Sweep, Levels: []int{1, 0}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.EnsureDefaults()
			if err := tc.cfg.Validate(); (err == nil) != tc.ok {
				t.Fatalf("Validate: %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// TestRun runs each scenario briefly against the daemon on both planes
// (and Redis when installed) and checks the rows.
func TestRun(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a daemon")
	}
	e := setup(t)
	ctx := context.Background()
	mix, _ := ParseMix("get=0.8,put=0.1,lookup=0.1")
	w, err := NewWorkload(mix, 64<<10, 64, 0.9, 3)
	if err != nil {
		t.Fatal(err)
	}
	target := client.UnixTarget(e.socket)
	targets := []Target{{KvtierShm, KvtierDialer(target, true, w)}, {KvtierInline, KvtierDialer(target, false, w)}}
	if e.redisOK == nil {
		targets = append(targets, Target{Redis, RedisDialer(e.redisSk, w)})
	} else {
		t.Log(e.redisOK)
	}
	for _, tg := range targets {
		if err := w.Load(ctx, tg.Dial); err != nil {
			t.Fatalf("%s: %v", tg.Name, err)
		}
	}
	for _, tc := range []struct {
		cfg  Config
		rows int
	}{
		{Config{Scenario: SingleStream, Iterations: 50}, 1},
		{Config{Scenario: Sweep, Levels: []int{1, 4}, Iterations: 80}, 2},
		{Config{Scenario: Offline, Concurrency: 4, Iterations: 80}, 1},
		{Config{Scenario: Server, QPS: 400, Concurrency: 4, Duration: 200 * time.Millisecond}, 1},
		{Config{Scenario: Server, FindMax: true, SLAP99: 50 * time.Millisecond, Concurrency: 4, Duration: 100 * time.Millisecond}, 1},
	} {
		t.Run(tc.cfg.Scenario, func(t *testing.T) {
			rows, err := Run(ctx, tc.cfg, w, targets, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(rows) != tc.rows*len(targets) {
				t.Fatalf("%d rows, want %d", len(rows), tc.rows*len(targets))
			}
			for _, r := range rows {
				if r.Errors != 0 || r.OpsPerS <= 0 || r.P50US <= 0 || r.P99US < r.P50US || r.P999US < r.P99US || r.BlockBytes != 64<<10 {
					t.Errorf("implausible row %+v", r)
				}
				if tc.cfg.Iterations > 0 && r.Ops != int64(tc.cfg.Iterations) {
					t.Errorf("%s: %d ops, want %d", r.Target, r.Ops, tc.cfg.Iterations)
				}
				if r.FromSchedule != (r.Scenario == Server || r.Scenario == ServerMax) {
					t.Errorf("%s %s: from_schedule %v", r.Target, r.Scenario, r.FromSchedule)
				}
			}
			if e.redisOK == nil && len(Ratios(rows)) != 2*tc.rows {
				t.Errorf("ratios %+v", Ratios(rows))
			}
			var table strings.Builder
			if err := WriteTable(&table, rows, nil); err != nil || !strings.Contains(table.String(), tc.cfg.Scenario[:4]) {
				t.Fatalf("table %v:\n%s", err, table.String())
			}
			if err := Plot(t.TempDir()+"/l.png", rows, "test"); err != nil {
				t.Fatal(err)
			}
		})
	}
	// An interrupted run returns what it finished.
	cctx, cancel := context.WithCancel(ctx)
	var rows []Row
	go func() { time.Sleep(300 * time.Millisecond); cancel() }()
	rows, err = Run(cctx, Config{Scenario: Sweep, Levels: []int{1, 2, 4, 8}, Duration: 200 * time.Millisecond}, w, targets[:1], nil, nil)
	if !errors.Is(err, context.Canceled) || len(rows) == 0 || len(rows) == 4 {
		t.Fatalf("interrupted sweep: %d rows, %v", len(rows), err)
	}
}

func TestStartRedisMissing(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	if _, err := StartRedis(context.Background()); !errors.Is(err, ErrNoRedis) {
		t.Fatalf("StartRedis without redis-server: %v", err)
	}
}
