package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

func main() { os.Exit(soakMain(os.Args[1:], os.Stdout, os.Stderr)) }

func soakMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("soak", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		o       options
		bin     string
		dram    string
		nvme    string
		logPath string
	)
	fs.StringVar(&bin, "kvtier", "bin/kvtier", "the kvtier binary to run as the daemon")
	fs.IntVar(&o.clients, "clients", 64, "clients, half inline and half shared memory")
	fs.DurationVar(&o.duration, "duration", 10*time.Minute, "how long the load runs")
	fs.DurationVar(&o.interval, "interval", time.Minute, "time between samples")
	fs.IntVar(&o.keys, "keys", 4096, "size of the shared key space")
	fs.IntVar(&o.maxTok, "max-tokens", 128, "largest block in tokens of 4KiB (8 KV heads of 128 fp16)")
	fs.Float64Var(&o.rate, "rate", 10, "operations per second per client (0: unpaced)")
	fs.Uint64Var(&o.seed, "seed", 1, "random seed")
	fs.DurationVar(&o.opTime, "op-timeout", 30*time.Second, "an operation, or a sample's calls, taking longer than this is an error")
	fs.DurationVar(&o.settle, "settle", time.Minute, "longest wait, after the clients closed, for the daemon's goroutines and sockets to come back to their start")
	fs.StringVar(&dram, "dram-bytes", "256MiB", "the daemon's DRAM tier")
	fs.StringVar(&nvme, "nvme-bytes", "1GiB", "the daemon's NVMe tier")
	fs.StringVar(&logPath, "daemon-log", "", "file for the daemon's log (default: in the temporary directory, removed)")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	if o.clients < 1 || o.duration <= 0 || o.interval <= 0 || o.keys < 1 || o.maxTok < 1 || o.rate < 0 || o.opTime <= 0 {
		fmt.Fprintln(stderr, "soak: --clients, --duration, --interval, --keys, --max-tokens and --op-timeout must be positive, --rate not negative")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	dir, err := os.MkdirTemp("", "kvsoak")
	if err != nil {
		fmt.Fprintln(stderr, "soak:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	if logPath == "" {
		logPath = filepath.Join(dir, "daemon.log")
	}
	d, err := startDaemon(ctx, bin, dir, dram, nvme, logPath)
	if err != nil {
		fmt.Fprintln(stderr, "soak:", err)
		return 1
	}
	samples, c, err := run(ctx, d.target, o, stdout)
	derr := d.stop()
	if err != nil {
		fmt.Fprintln(stderr, "soak:", err)
		return 1
	}
	if derr != nil {
		fmt.Fprintln(stderr, "soak: the daemon:", derr)
		c.fail("daemon exit", derr)
	}
	fmt.Fprintf(stdout, "\noperations: ")
	for i, n := range opNames {
		fmt.Fprintf(stdout, "%s %d  ", n, c.ops[i].Load())
	}
	fmt.Fprintf(stdout, "\nexpected contention outcomes (not found, held): %d\nerrors: %d (wrong bytes: %d)\n", c.expected.Load(), c.errors.Load(), c.wrong.Load())
	for _, e := range c.firstErr {
		fmt.Fprintln(stdout, "  ", e)
	}
	bad := flat(samples)
	for _, b := range bad {
		fmt.Fprintln(stdout, "NOT FLAT:", b)
	}
	if c.errors.Load() > 0 || len(bad) > 0 {
		fmt.Fprintln(stdout, "soak: FAIL")
		return 1
	}
	fmt.Fprintln(stdout, "soak: ok (errors 0; goroutines, sockets, sessions, leases and pins back to their start; memory and files flat under load)")
	return 0
}

// daemonProc is a `kvtier serve` subprocess.
type daemonProc struct {
	target
	cmd  *exec.Cmd
	done chan error
	log  *os.File
}

func startDaemon(ctx context.Context, bin, dir, dram, nvme, logPath string) (*daemonProc, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	sock := filepath.Join(dir, "k.sock")
	metrics := "127.0.0.1:" + strconv.Itoa(port)
	cmd := exec.Command(bin, "serve",
		"--socket", sock,
		"--dram-bytes", dram,
		"--nvme-dir", filepath.Join(dir, "nvme"),
		"--nvme-bytes", nvme,
		"--metrics-addr", metrics,
		"--hbm", "off",
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	d := &daemonProc{target: target{socket: sock, metrics: "http://" + metrics + "/metrics", pid: cmd.Process.Pid}, cmd: cmd, done: make(chan error, 1), log: logf}
	go func() { d.done <- cmd.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
			break
		}
		select {
		case err := <-d.done:
			logf.Close()
			return nil, fmt.Errorf("the daemon exited at start (%v); its log is %s", err, logPath)
		case <-ctx.Done():
			_ = d.stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = d.stop()
			return nil, fmt.Errorf("the daemon did not listen on %s within 30s", sock)
		}
	}
	return d, nil
}

// stop sends SIGTERM and waits for a clean exit.
func (d *daemonProc) stop() error {
	defer d.log.Close()
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.done:
		return err
	case <-time.After(60 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.done
		return fmt.Errorf("did not stop within 60s of SIGTERM")
	}
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
