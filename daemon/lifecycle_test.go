package daemon_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/kvtier/kvtier/client"
	"github.com/kvtier/kvtier/daemon"
	pb "github.com/kvtier/kvtier/proto/kvtier/v1"
)

// TestRestartWarmNVMe: blocks put without waiting for NVMe are flushed at
// shutdown and found on NVMe after a restart.
func TestRestartWarmNVMe(t *testing.T) {
	dir := t.TempDir()
	e := startEnv(t, envOptions{nvme: true, nvmeDir: dir})
	ctx := ctxT(t)
	const n = 20
	for i := range n {
		k := keyOf("warm", i)
		if err := e.cl.Put(ctx, k, smallLayout(), blockData(k, smallSize), client.PutOptions{Durable: i == 0}); err != nil {
			t.Fatal(err)
		}
	}
	e.stop()
	if _, err := os.Stat(e.socket); !os.IsNotExist(err) {
		t.Errorf("socket left behind after shutdown: %v", err)
	}
	e2 := startEnv(t, envOptions{nvme: true, nvmeDir: dir})
	for i := range n {
		k := keyOf("warm", i)
		b, err := e2.cl.Get(ctx, k, nil, client.GetOptions{})
		if err != nil {
			t.Fatalf("block %d after restart: %v", i, err)
		}
		if b.From != pb.Tier_TIER_NVME {
			t.Errorf("block %d came from %v, want NVMe", i, b.From)
		}
		checkData(t, k, b.Data)
	}
}

// TestShutdownEndsSessions: a daemon with a shared-memory session, a pin
// stream and a hint stream open and a pin held still shuts down promptly.
func TestShutdownEndsSessions(t *testing.T) {
	e := startEnv(t, envOptions{})
	ctx := ctxT(t)
	k := keyOf("s", 1)
	if err := e.cl.Put(ctx, k, smallLayout(), blockData(k, smallSize), client.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	s, err := e.cl.Attach(ctx, "held")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Pin(ctx, k, client.GetOptions{}); err != nil { // opens a PinStream too
		t.Fatal(err)
	}
	// An idle Hint stream does not hold shutdown up either.
	if _, err := e.cl.API().Hint(ctx); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	e.stop()
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("shutdown took %v with a session open", d)
	}
	if _, err := s.Pin(ctx, k, client.GetOptions{}); err == nil {
		t.Error("Pin after shutdown succeeded")
	}
}

func TestHealthAndReflection(t *testing.T) {
	tokens := writeTokens(t)
	e := startEnv(t, envOptions{cfg: func(c *daemon.Config) { c.TokensFile = tokens }})
	ctx := ctxT(t)
	// Health needs no token.
	h := grpc_health_v1.NewHealthClient(e.cl.Conn())
	for _, svc := range []string{"", "kvtier.v1.KVTierService"} {
		resp, err := h.Check(ctx, &grpc_health_v1.HealthCheckRequest{Service: svc})
		if err != nil || resp.GetStatus() != grpc_health_v1.HealthCheckResponse_SERVING {
			t.Errorf("health %q: %v %v", svc, resp, err)
		}
	}
	if _, err := e.cl.Stats(ctx); status.Code(err) != codes.Unauthenticated {
		t.Errorf("Stats without a token: %v", err)
	}
	// Reflection needs no token either, and lists the service.
	rc, err := reflectionpb.NewServerReflectionClient(e.cl.Conn()).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := rc.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	if !slices.Contains(names, "kvtier.v1.KVTierService") || !slices.Contains(names, "grpc.health.v1.Health") {
		t.Errorf("reflection lists %v", names)
	}
	// Both sockets are private to the daemon's user.
	for _, p := range []string{e.socket, filepath.Join(e.dir, ".d.sock.fd")} {
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
			t.Errorf("%s: %v %v, want a socket with mode 0600", p, fi.Mode(), err)
		}
	}
}

func TestMetrics(t *testing.T) {
	e := startEnv(t, envOptions{cfg: func(c *daemon.Config) { c.MetricsAddr = "127.0.0.1:0" }})
	ctx := ctxT(t)
	k := keyOf("m", 1)
	if err := e.cl.Put(ctx, k, smallLayout(), blockData(k, smallSize), client.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.cl.Get(ctx, k, nil, client.GetOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.cl.Get(ctx, keyOf("m", 2), nil, client.GetOptions{}); status.Code(err) != codes.NotFound {
		t.Fatal(err)
	}
	s, err := e.cl.Attach(ctx, "metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Get(ctx, k, nil, client.GetOptions{}); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + e.srv.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`kvtier_tier_used_bytes{name="dram",tier="dram"} 8192`,
		`kvtier_tier_blocks{name="dram",tier="dram"} 1`,
		`kvtier_tier_capacity_bytes{name="dram",tier="dram"} 3.3554432e+07`,
		`kvtier_tier_hits_total{name="dram",tier="dram"} 2`,
		`kvtier_misses_total 1`,
		`kvtier_tier_evictions_total{name="dram",tier="dram"} 0`,
		`kvtier_tier_promotions_total{name="dram",tier="dram"} 0`,
		`kvtier_data_plane_bytes_total{direction="in",plane="inline"} 8192`,
		`kvtier_data_plane_bytes_total{direction="out",plane="inline"} 8192`,
		`kvtier_data_plane_bytes_total{direction="out",plane="shm"} 8192`,
		`kvtier_rpc_duration_seconds_count{code="OK",method="Put"} 1`,
		`kvtier_rpc_duration_seconds_count{code="NotFound",method="Get"} 1`,
		`kvtier_shm_sessions 1`,
		`go_goroutines`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// TestTLS: TCP with TLS and required client certificates.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	ca, caKey := newCert(t, nil, nil, "kvtier test CA", true)
	srvCert, srvKey := newCert(t, ca, caKey, "127.0.0.1", false)
	cliCert, cliKey := newCert(t, ca, caKey, "engine", false)
	write := func(name string, blocks ...*pem.Block) string {
		p := filepath.Join(dir, name)
		var b []byte
		for _, bl := range blocks {
			b = append(b, pem.EncodeToMemory(bl)...)
		}
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caPath := write("ca.pem", certPEM(ca))
	e := startEnv(t, envOptions{cfg: func(c *daemon.Config) {
		c.Addr = "127.0.0.1:0"
		c.TLSCert = write("srv.pem", certPEM(srvCert))
		c.TLSKey = write("srv.key", keyPEM(t, srvKey))
		c.TLSClientCA = caPath
	}})
	ctx := ctxT(t)
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	pair := tls.Certificate{Certificate: [][]byte{cliCert.Raw}, PrivateKey: cliKey}
	good, err := client.Dial(e.srv.TCPAddr(), client.WithTLS(&tls.Config{RootCAs: roots, Certificates: []tls.Certificate{pair}}))
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	k := keyOf("tls", 1)
	if err := good.Put(ctx, k, mibLayout(), blockData(k, 1<<20), client.PutOptions{}); err != nil {
		t.Fatalf("Put over TLS: %v", err)
	}
	b, err := good.Get(ctx, k, nil, client.GetOptions{})
	if err != nil {
		t.Fatalf("Get over TLS: %v", err)
	}
	checkData(t, k, b.Data)
	noCert, err := client.Dial(e.srv.TCPAddr(), client.WithTLS(&tls.Config{RootCAs: roots}))
	if err != nil {
		t.Fatal(err)
	}
	defer noCert.Close()
	if _, err := noCert.Stats(ctx); err == nil {
		t.Error("a client without a certificate was served")
	}
	if _, err := client.Dial(e.srv.TCPAddr()); err == nil {
		t.Error("Dial of a TCP target without TLS or WithInsecure succeeded")
	}
}

func newCert(t *testing.T, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, cn string, isCA bool) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IsCA:         isCA, BasicConstraintsValid: true,
	}
	if ip := net.ParseIP(cn); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, key
}

func certPEM(c *x509.Certificate) *pem.Block { return &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw} }

func keyPEM(t *testing.T, k *ecdsa.PrivateKey) *pem.Block {
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return &pem.Block{Type: "EC PRIVATE KEY", Bytes: der}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  daemon.Config
		ok   bool
	}{
		{"socket", daemon.Config{Socket: "/tmp/x.sock"}, true},
		{"nothing", daemon.Config{}, false},
		{"long socket", daemon.Config{Socket: "/" + strings.Repeat("s", 120)}, false},
		{"tcp without tls", daemon.Config{Addr: "127.0.0.1:0"}, false},
		{"tcp insecure", daemon.Config{Addr: "127.0.0.1:0", Insecure: true}, true},
		{"tcp tls", daemon.Config{Addr: "127.0.0.1:0", TLSCert: "c", TLSKey: "k"}, true},
		{"cert without key", daemon.Config{Addr: "127.0.0.1:0", TLSCert: "c"}, false},
		{"client ca without tls", daemon.Config{Addr: "127.0.0.1:0", Insecure: true, TLSClientCA: "ca"}, false},
		{"insecure without addr", daemon.Config{Socket: "/tmp/x.sock", Insecure: true}, false},
		{"small messages", daemon.Config{Socket: "/tmp/x.sock", MaxMessageBytes: 1 << 20}, false},
		{"ttl over max", daemon.Config{Socket: "/tmp/x.sock", LeaseTTL: time.Hour, MaxLeaseTTL: time.Minute}, false},
		{"bad mode", daemon.Config{Socket: "/tmp/x.sock", SocketMode: 0o4777}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.cfg
			c.EnsureDefaults()
			if err := c.Validate(); (err == nil) != tc.ok {
				t.Errorf("Validate = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}
