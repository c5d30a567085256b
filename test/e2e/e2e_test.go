package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kvtier/kvtier/client"
	pb "github.com/kvtier/kvtier/proto/kvtier/v1"
)

// kvtierBin is the binary under test, built once by TestMain.
var kvtierBin string

func TestMain(m *testing.M) {
	if h := os.Getenv("KVTIER_E2E_HELPER"); h != "" {
		os.Exit(helperMain(h))
	}
	if runtime.GOOS != "linux" {
		fmt.Println("e2e: skipped: needs Linux")
		os.Exit(0)
	}
	dir, err := os.MkdirTemp("", "kvtier-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	kvtierBin = filepath.Join(dir, "kvtier")
	args := []string{"build", "-o", kvtierBin}
	if raceEnabled { // race-check the daemon too when the tests run with -race
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, "github.com/kvtier/kvtier/cmd/kvtier")...)
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building kvtier:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// daemonProc is a running `kvtier serve`.
type daemonProc struct {
	t      *testing.T
	cmd    *exec.Cmd
	socket string
	data   string
	log    *bytes.Buffer
	waited chan error
}

// startDaemon runs kvtier serve with small tiers on a fresh socket (or the
// given data directory, to test restarts). extraEnv is added to its environment.
func startDaemon(t *testing.T, data string, extraEnv []string, args ...string) *daemonProc {
	t.Helper()
	sockDir, err := os.MkdirTemp("", "kvt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	if data == "" {
		data = t.TempDir()
	}
	d := &daemonProc{t: t, socket: filepath.Join(sockDir, "kvtier.sock"), data: data, log: &bytes.Buffer{}, waited: make(chan error, 1)}
	all := append([]string{"serve", "--socket", d.socket, "--nvme-dir", data, "--nvme-bytes", "256MiB",
		"--metrics-addr", "", "--hbm", "off"}, args...)
	d.cmd = exec.Command(kvtierBin, all...)
	d.cmd.Env = append(os.Environ(), extraEnv...)
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.waited <- d.cmd.Wait() }()
	t.Cleanup(func() {
		if err := d.stop(syscall.SIGTERM); err != nil {
			t.Errorf("kvtier serve exited with %v", err)
		}
		if strings.Contains(d.log.String(), "DATA RACE") || strings.Contains(d.log.String(), "panic:") {
			t.Errorf("kvtier serve:\n%s", d.log)
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(d.socket); err == nil {
			break
		}
		select {
		case err := <-d.waited:
			d.waited <- err
			t.Fatalf("kvtier serve exited: %v\n%s", err, d.log)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("kvtier serve did not create its socket\n%s", d.log)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return d
}

// stop signals the daemon and waits for it; it returns the exit error.
func (d *daemonProc) stop(sig syscall.Signal) error {
	if d.cmd.ProcessState == nil {
		_ = d.cmd.Process.Signal(sig)
	}
	select {
	case err := <-d.waited:
		d.waited <- err
		return err
	case <-time.After(60 * time.Second):
		_ = d.cmd.Process.Kill()
		d.t.Errorf("kvtier serve did not exit after %v\n%s", sig, d.log)
		return fmt.Errorf("timeout")
	}
}

type result struct {
	code   int
	stdout string
	stderr string
}

// cli runs a client command against d.
func (d *daemonProc) cli(t *testing.T, stdin []byte, args ...string) result {
	t.Helper()
	if len(args) > 0 && args[0] != "serve" {
		args = append([]string{args[0], "--socket", d.socket}, args[1:]...)
	}
	return runKvtier(t, stdin, args...)
}

func runKvtier(t *testing.T, stdin []byte, args ...string) result {
	t.Helper()
	cmd := exec.Command(kvtierBin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("kvtier %v: %v", args, err)
	}
	return result{code, out.String(), errb.String()}
}

func hexHash(i int) string { return fmt.Sprintf("%032x", i+1) }

// block is fp16 × 16 tokens × 2 heads × 64 dims = 8 KiB.
var layoutArgs = []string{"--dtype", "fp16", "--tokens", "16", "--kv-heads", "2", "--head-dim", "64"}

const blockSize = 8192

func blockBytes(i int) []byte {
	b := make([]byte, blockSize)
	for j := range b {
		b[j] = byte(i*31 + j*7)
	}
	return b
}

func writeBlock(t *testing.T, i int) string {
	p := filepath.Join(t.TempDir(), "blk")
	if err := os.WriteFile(p, blockBytes(i), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func keyArgs(i int) []string {
	return []string{"--ns", "e2e", "--hash", hexHash(i), "--layer", "0"}
}

type statsOut struct {
	Tiers []struct {
		Tier          string `json:"tier"`
		Name          string `json:"name"`
		CapacityBytes int64  `json:"capacity_bytes"`
		UsedBytes     int64  `json:"used_bytes"`
		Blocks        int64  `json:"blocks"`
	} `json:"tiers"`
	PinnedBlocks int64 `json:"pinned_blocks"`
	Leases       int64 `json:"shm_leases"`
	Sessions     int64 `json:"shm_sessions"`
}

func (d *daemonProc) stats(t *testing.T) statsOut {
	t.Helper()
	r := d.cli(t, nil, "stats", "--json")
	if r.code != 0 {
		t.Fatalf("stats: exit %d: %s", r.code, r.stderr)
	}
	var s statsOut
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil {
		t.Fatalf("stats --json: %v: %q", err, r.stdout)
	}
	if strings.Count(strings.TrimSpace(r.stdout), "\n") != 0 {
		t.Errorf("stats --json printed more than one line: %q", r.stdout)
	}
	return s
}

func (s statsOut) tier(name string) (capacity, used, blocks int64) {
	for _, t := range s.Tiers {
		if t.Tier == name {
			return t.CapacityBytes, t.UsedBytes, t.Blocks
		}
	}
	return -1, -1, -1
}

func TestCLIRoundTrips(t *testing.T) {
	// The DRAM size comes from the environment, to check KVTIER_* variables.
	d := startDaemon(t, "", []string{"KVTIER_DRAM_BYTES=48MiB"})
	for _, plane := range []string{"inline", "shm"} {
		t.Run(plane, func(t *testing.T) {
			var extra []string
			base := 0
			if plane == "shm" {
				extra, base = []string{"--shm"}, 100
			}
			for i := base; i < base+3; i++ {
				args := append(append(append([]string{"put"}, keyArgs(i)...), layoutArgs...), extra...)
				if r := d.cli(t, nil, append(args, writeBlock(t, i))...); r.code != 0 {
					t.Fatalf("put %d: exit %d: %s", i, r.code, r.stderr)
				}
			}
			// get to a file and to stdout.
			out := filepath.Join(t.TempDir(), "out")
			if r := d.cli(t, nil, append(append([]string{"get"}, keyArgs(base)...), append(extra, "-o", out)...)...); r.code != 0 {
				t.Fatalf("get -o: exit %d: %s", r.code, r.stderr)
			}
			if got, _ := os.ReadFile(out); !bytes.Equal(got, blockBytes(base)) {
				t.Error("get -o wrote other bytes than were put")
			}
			r := d.cli(t, nil, append(append([]string{"get"}, keyArgs(base+1)...), extra...)...)
			if r.code != 0 || r.stdout != string(blockBytes(base+1)) {
				t.Errorf("get to stdout: exit %d, %d bytes: %s", r.code, len(r.stdout), r.stderr)
			}
			// lookup: the first three are cached, the fourth is not.
			hashes := []string{hexHash(base), hexHash(base + 1), hexHash(base + 2), hexHash(base + 50), hexHash(base)}
			r = d.cli(t, nil, "lookup", "--ns", "e2e", "--layer", "0", "--hashes", strings.Join(hashes, ","))
			want := fmt.Sprintf("3\n%s dram\n%s dram\n%s dram\n", hashes[0], hashes[1], hashes[2])
			if r.code != 0 || r.stdout != want {
				t.Errorf("lookup: exit %d, %q, want %q (%s)", r.code, r.stdout, want, r.stderr)
			}
		})
	}
	// put from stdin.
	args := append(append([]string{"put"}, keyArgs(200)...), layoutArgs...)
	if r := d.cli(t, blockBytes(200), append(args, "-")...); r.code != 0 {
		t.Fatalf("put -: exit %d: %s", r.code, r.stderr)
	}
	s := d.stats(t)
	if c, used, n := s.tier("dram"); c != 48<<20 || used != 7*blockSize || n != 7 {
		t.Errorf("stats dram: capacity %d used %d blocks %d; want %d, %d, 7", c, used, n, 48<<20, 7*blockSize)
	}
	if c, _, _ := s.tier("nvme"); c != 256<<20 {
		t.Errorf("stats nvme capacity %d", c)
	}
	if r := d.cli(t, nil, "stats"); r.code != 0 || !strings.Contains(r.stdout, "dram") {
		t.Errorf("stats: exit %d: %q", r.code, r.stdout)
	}
	if err := d.stop(syscall.SIGINT); err != nil {
		t.Errorf("kvtier serve after SIGINT: %v\n%s", err, d.log)
	}
}

func TestCLIErrors(t *testing.T) {
	d := startDaemon(t, "", nil, "--dram-bytes", "32MiB")
	blk := writeBlock(t, 1)
	for _, tc := range []struct {
		name string
		args []string
		code int
		msg  string // in stderr
	}{
		{"get not cached", append([]string{"get"}, keyArgs(1)...), 1, "NOT_FOUND"},
		{"wrong layout size", append(append(append([]string{"put"}, keyArgs(1)...), "--dtype", "fp16", "--tokens", "8", "--kv-heads", "2", "--head-dim", "64"), blk), 1, "INVALID_ARGUMENT"},
		{"wrong layout size, shared memory", append(append(append([]string{"put", "--shm"}, keyArgs(3)...), "--dtype", "fp16", "--tokens", "8", "--kv-heads", "2", "--head-dim", "64"), blk), 1, "put"},
		{"unknown dtype", append(append(append([]string{"put"}, keyArgs(1)...), "--dtype", "int4", "--tokens", "16", "--kv-heads", "2", "--head-dim", "64"), blk), 2, "dtype"},
		{"missing layer", []string{"get", "--ns", "e2e", "--hash", hexHash(1)}, 2, "--layer"},
		{"bad hash", []string{"get", "--ns", "e2e", "--hash", "abc", "--layer", "0"}, 2, "--hash"},
		{"bad namespace", []string{"get", "--ns", "a b", "--hash", hexHash(1), "--layer", "0"}, 1, "INVALID_ARGUMENT"},
		{"unknown flag", []string{"stats", "--bogus"}, 2, "bogus"},
		{"missing file", append(append([]string{"put"}, keyArgs(1)...), layoutArgs...), 2, "missing"},
		{"lookup without hashes", []string{"lookup", "--ns", "e2e"}, 2, "--hashes"},
		{"durable put", append(append(append([]string{"put"}, keyArgs(2)...), append(layoutArgs, "--durable")...), blk), 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := d.cli(t, nil, tc.args...)
			if r.code != tc.code || !strings.Contains(r.stderr, tc.msg) {
				t.Errorf("exit %d, stderr %q; want %d and %q", r.code, r.stderr, tc.code, tc.msg)
			}
		})
	}
	// No daemon at the socket: exit 1 with the code.
	r := runKvtier(t, nil, "stats", "--socket", filepath.Join(t.TempDir(), "none.sock"), "--timeout", "2s")
	if r.code != 1 || !strings.Contains(r.stderr, "UNAVAILABLE") {
		t.Errorf("stats without a daemon: exit %d, %q", r.code, r.stderr)
	}
	if r := runKvtier(t, nil, "serve", "-h"); r.code != 0 || !strings.Contains(r.stdout, "KVTIER_DRAM_BYTES") || !strings.Contains(r.stdout, "--nvme-dir") {
		t.Errorf("serve -h: exit %d, %q", r.code, r.stdout)
	}
	if r := runKvtier(t, nil, "serve", "--addr", "127.0.0.1:0", "--socket", ""); r.code != 2 || !strings.Contains(r.stderr, "insecure") {
		t.Errorf("serve on TCP without TLS: exit %d, %q", r.code, r.stderr)
	}
}

func TestRestartWarmNVMe(t *testing.T) {
	data := t.TempDir()
	d := startDaemon(t, data, nil, "--dram-bytes", "32MiB")
	for i := range 5 {
		args := append(append([]string{"put"}, keyArgs(i)...), layoutArgs...)
		if i == 0 {
			args = append(args, "--durable")
		}
		if r := d.cli(t, nil, append(args, writeBlock(t, i))...); r.code != 0 {
			t.Fatalf("put: %s", r.stderr)
		}
	}
	if err := d.stop(syscall.SIGTERM); err != nil {
		t.Fatalf("kvtier serve after SIGTERM: %v\n%s", err, d.log)
	}
	if !strings.Contains(d.log.String(), "daemon: stopped") {
		t.Errorf("no clean stop in the log:\n%s", d.log)
	}
	d2 := startDaemon(t, data, nil, "--dram-bytes", "32MiB")
	if _, _, n := d2.stats(t).tier("nvme"); n != 5 {
		t.Errorf("NVMe holds %d blocks after restart, want 5", n)
	}
	hashes := []string{hexHash(0), hexHash(1), hexHash(2), hexHash(3), hexHash(4)}
	r := d2.cli(t, nil, "lookup", "--ns", "e2e", "--layer", "0", "--hashes", strings.Join(hashes, ","))
	if r.code != 0 || !strings.HasPrefix(r.stdout, "5\n") || !strings.Contains(r.stdout, hashes[4]+" nvme") {
		t.Errorf("lookup after restart: %q %s", r.stdout, r.stderr)
	}
	for i := range 5 {
		r := d2.cli(t, nil, append([]string{"get"}, keyArgs(i)...)...)
		if r.code != 0 || r.stdout != string(blockBytes(i)) {
			t.Errorf("get %d after restart: exit %d %s", i, r.code, r.stderr)
		}
	}
	if _, _, n := d2.stats(t).tier("dram"); n != 5 {
		t.Errorf("DRAM holds %d blocks after the gets promoted them, want 5", n)
	}
}

// TestKilledClients kills client processes mid-stream and while holding pins.
func TestKilledClients(t *testing.T) {
	d := startDaemon(t, "", nil, "--dram-bytes", "32MiB")
	args := append(append([]string{"put"}, keyArgs(1)...), layoutArgs...)
	if r := d.cli(t, nil, append(args, writeBlock(t, 1))...); r.code != 0 {
		t.Fatalf("put: %s", r.stderr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := client.Dial(client.UnixTarget(d.socket))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	dramOf := func() (reserved, blocks uint64, st *pb.StatsResponse) {
		st, err := c.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, ts := range st.GetTiers() {
			if ts.GetTier() == pb.Tier_TIER_DRAM {
				return ts.GetReservedBytes(), ts.GetBlocks(), st
			}
		}
		return 0, 0, st
	}
	baseReserved, _, _ := dramOf()
	for _, tc := range []struct {
		name  string
		check func() bool
	}{
		{"mid-stream", func() bool {
			res, blocks, _ := dramOf()
			return res == baseReserved && blocks == 1
		}},
		{"holding-pins", func() bool {
			res, _, st := dramOf()
			return st.GetPinnedBlocks() == 0 && st.GetLeases() == 0 && st.GetSessions() == 0 && res == baseReserved
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := startHelper(t, tc.name, d.socket)
			if _, _, st := dramOf(); tc.name == "holding-pins" && (st.GetPinnedBlocks() != 1 || st.GetLeases() != 4) {
				t.Errorf("before the kill: pinned %d leases %d, want 1 and 4", st.GetPinnedBlocks(), st.GetLeases())
			}
			if err := h.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			_ = h.Wait()
			deadline := time.Now().Add(20 * time.Second)
			for !tc.check() {
				if time.Now().After(deadline) {
					_, _, st := dramOf()
					t.Fatalf("the killed client's state was not released: %v", st)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
	if _, err := c.Get(ctx, &pb.Key{Namespace: "e2e", Hash: hashBytes(2), Layer: 0}, nil, client.GetOptions{}); status.Code(err) != codes.NotFound {
		t.Errorf("the half-written block: %v, want NotFound", err)
	}
	if err := c.Delete(ctx, &pb.Key{Namespace: "e2e", Hash: hashBytes(1), Layer: 0}); err != nil {
		t.Errorf("Delete of the block the killed client had pinned: %v", err)
	}
}

func hashBytes(i int) []byte {
	h := make([]byte, 16)
	for j, v := 15, i+1; j >= 0 && v > 0; j, v = j-1, v>>8 {
		h[j] = byte(v)
	}
	return h
}

// startHelper runs this test binary as a client process that does what
// kind says and then prints "ready" and waits to be killed.
func startHelper(t *testing.T, kind, socket string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "KVTIER_E2E_HELPER="+kind, "KVTIER_E2E_SOCKET="+socket)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("helper %s: %q %v", kind, line, err)
	}
	go io.Copy(io.Discard, out)
	return cmd
}

// helperMain is the helper client process.
func helperMain(kind string) int {
	ctx := context.Background()
	c, err := client.Dial(client.UnixTarget(os.Getenv("KVTIER_E2E_SOCKET")))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	switch kind {
	case "mid-stream":
		st, err := c.API().Put(ctx)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		l := &pb.Layout{Dtype: pb.Dtype_DTYPE_FP16, Tokens: 1024, KvHeads: 8, HeadDim: 128} // 4 MiB
		if err := st.Send(&pb.PutRequest{Header: &pb.PutHeader{Key: &pb.Key{Namespace: "e2e", Hash: hashBytes(2)}, Layout: l}, Data: make([]byte, 1<<20)}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		// Wait until the daemon holds the reservation.
		for {
			s, err := c.Stats(ctx)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			if s.GetTiers()[0].GetReservedBytes() > 4<<20 {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
	case "holding-pins":
		s, err := c.Attach(ctx, "helper")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		k := &pb.Key{Namespace: "e2e", Hash: hashBytes(1)}
		for range 3 {
			if _, err := s.Pin(ctx, k, client.GetOptions{}); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
		}
		if _, err := s.Reserve(ctx, &pb.Key{Namespace: "e2e", Hash: hashBytes(3)}, &pb.Layout{Dtype: pb.Dtype_DTYPE_FP16, Tokens: 16, KvHeads: 2, HeadDim: 64}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	default:
		fmt.Fprintln(os.Stderr, "unknown helper", kind)
		return 1
	}
	fmt.Println("ready")
	time.Sleep(time.Hour)
	return 0
}
