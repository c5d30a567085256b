package load

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// Proc is a server process a benchmark started (a kvtier daemon or Redis),
// listening on a Unix socket in its own temporary directory.
type Proc struct {
	Socket string
	dir    string
	cmd    *exec.Cmd
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// StartDaemon starts `bin serve` on a Unix socket in a fresh temporary
// directory, with serve's defaults except: the socket, the NVMe tier's
// directory (in the temporary directory), no metrics listener, and extra
// flags appended. It returns once the socket exists.
func StartDaemon(ctx context.Context, bin string, extra ...string) (*Proc, error) {
	dir, err := os.MkdirTemp("", "kvtier-load-")
	if err != nil {
		return nil, err
	}
	p := &Proc{Socket: filepath.Join(dir, "kvtier.sock"), dir: dir}
	args := append([]string{"serve", "--socket", p.Socket, "--nvme-dir", filepath.Join(dir, "nvme"),
		"--metrics-addr", "", "--log-level", "warn"}, extra...)
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stderr = os.Stderr
	if err := p.start(ctx); err != nil {
		return nil, fmt.Errorf("load: kvtier serve: %w", err)
	}
	return p, nil
}

// ErrNoRedis means redis-server is not installed.
var ErrNoRedis = errors.New("load: redis-server not found; install it (Debian: apt-get install -y redis-server) to compare with Redis")

// StartRedis starts Debian's redis-server on a Unix socket, persistence off.
func StartRedis(ctx context.Context) (*Proc, error) {
	path, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, ErrNoRedis
	}
	dir, err := os.MkdirTemp("", "kvtier-redis-")
	if err != nil {
		return nil, err
	}
	p := &Proc{Socket: filepath.Join(dir, "redis.sock"), dir: dir}
	p.cmd = exec.Command(path, "--port", "0", "--unixsocket", p.Socket, "--unixsocketperm", "700",
		"--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning", "--dir", dir)
	if err := p.start(ctx); err != nil {
		return nil, fmt.Errorf("load: redis-server: %w", err)
	}
	return p, nil
}

func (p *Proc) start(ctx context.Context) error {
	if err := p.cmd.Start(); err != nil {
		os.RemoveAll(p.dir)
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		if _, err := os.Stat(p.Socket); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			p.Close()
			return fmt.Errorf("no socket at %s: %w", p.Socket, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Close stops the process (SIGTERM, then SIGKILL after 30 s) and removes
// its directory.
func (p *Proc) Close() {
	if p == nil || p.cmd == nil || p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
	os.RemoveAll(p.dir)
}
