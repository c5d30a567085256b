package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/credentials/local"
	"google.golang.org/grpc/status"

	pb "github.com/kvtier/kvtier/proto/kvtier/v1"
)

// MaxChunkBytes is the largest data chunk the daemon accepts in one message.
const MaxChunkBytes = 1 << 20

// Option configures Dial.
type Option func(*options)

type options struct {
	token    string
	tls      *tls.Config
	insecure bool
	chunk    int
	extra    []grpc.DialOption
}

// WithToken sends a bearer token with every call.
func WithToken(tok string) Option { return func(o *options) { o.token = tok } }

// WithTLS uses TLS for a TCP target (add a client certificate to cfg when the
// daemon asks for one).
func WithTLS(cfg *tls.Config) Option { return func(o *options) { o.tls = cfg } }

// WithInsecure allows a TCP target without TLS (a daemon started with --insecure).
func WithInsecure() Option { return func(o *options) { o.insecure = true } }

// WithChunkBytes sets the chunk size of inline Puts (at most MaxChunkBytes).
func WithChunkBytes(n int) Option { return func(o *options) { o.chunk = n } }

// WithDialOptions adds raw gRPC dial options.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.extra = append(o.extra, opts...) }
}

// Client is a connection to a kvtier daemon. It is safe for concurrent use.
type Client struct {
	conn  *grpc.ClientConn
	api   pb.KVTierServiceClient
	unix  bool
	chunk int
}

// IsUnixTarget reports whether target names a Unix socket: "unix:..." or a
// path (containing a slash, or ending in ".sock").
func IsUnixTarget(target string) bool {
	return strings.HasPrefix(target, "unix:") || strings.HasPrefix(target, "unix-abstract:") ||
		strings.Contains(target, "/") || strings.HasSuffix(target, ".sock")
}

// UnixTarget turns a socket path into a gRPC target.
func UnixTarget(path string) string {
	if strings.HasPrefix(path, "unix:") {
		return path
	}
	if filepath.IsAbs(path) {
		return "unix://" + path
	}
	return "unix:" + path
}

// Dial connects to the daemon at target: a Unix socket ("unix:///path",
// "unix:relative/path" or a bare path) or a TCP "host:port", which needs
// WithTLS or WithInsecure. The connection is made lazily, on the first call.
func Dial(target string, opts ...Option) (*Client, error) {
	o := options{chunk: MaxChunkBytes}
	for _, f := range opts {
		f(&o)
	}
	if o.chunk <= 0 || o.chunk > MaxChunkBytes {
		return nil, fmt.Errorf("client: chunk size %d not in 1..%d", o.chunk, MaxChunkBytes)
	}
	c := &Client{chunk: o.chunk, unix: IsUnixTarget(target)}
	var creds credentials.TransportCredentials
	secure := true
	switch {
	case c.unix:
		target = UnixTarget(target)
		creds = local.NewCredentials()
	case o.tls != nil:
		creds = credentials.NewTLS(o.tls)
	case o.insecure:
		creds = insecure.NewCredentials()
		secure = false
	default:
		return nil, errors.New("client: a TCP target needs TLS (WithTLS) or WithInsecure")
	}
	dopts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(8<<20),
			grpc.MaxCallSendMsgSize(64<<20),
		),
		grpc.WithInitialWindowSize(8 << 20),
		grpc.WithInitialConnWindowSize(32 << 20),
		grpc.WithWriteBufferSize(256 << 10),
		grpc.WithReadBufferSize(256 << 10),
	}
	if o.token != "" {
		dopts = append(dopts, grpc.WithPerRPCCredentials(bearer{tok: o.token, secure: secure}))
	}
	dopts = append(dopts, o.extra...)
	conn, err := grpc.NewClient(target, dopts...)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	c.conn = conn
	c.api = pb.NewKVTierServiceClient(conn)
	return c, nil
}

// bearer sends "authorization: Bearer <token>".
type bearer struct {
	tok    string
	secure bool
}

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.tok}, nil
}

func (b bearer) RequireTransportSecurity() bool { return b.secure }

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Conn returns the underlying connection (for health checks, reflection).
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

// API returns the raw generated client.
func (c *Client) API() pb.KVTierServiceClient { return c.api }

// PutOptions modify Put.
type PutOptions struct {
	// Parent is the hash of the chain's previous block (nil for none).
	Parent []byte
	// Durable waits until the block's NVMe copy is on stable storage.
	Durable bool
}

// Put stores data as the block key with layout l, inline.
func (c *Client) Put(ctx context.Context, key *pb.Key, l *pb.Layout, data []byte, opts PutOptions) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // on an early return, the daemon sees the stream cancelled and stores nothing
	st, err := c.api.Put(ctx)
	if err != nil {
		return err
	}
	first := &pb.PutRequest{Header: &pb.PutHeader{Key: key, Layout: l, ParentHash: opts.Parent, Durable: opts.Durable}}
	n := min(len(data), c.chunk)
	first.Data = data[:n]
	if err := st.Send(first); err != nil {
		return recvErr(st, err)
	}
	msg := &pb.PutRequest{}
	for off := n; off < len(data); off += c.chunk {
		msg.Data = data[off:min(off+c.chunk, len(data))]
		if err := st.Send(msg); err != nil {
			return recvErr(st, err)
		}
	}
	_, err = st.CloseAndRecv()
	return err
}

// recvErr returns the server's status when Send failed because the server
// ended the stream (Send only says io.EOF then).
func recvErr(st grpc.ClientStream, err error) error {
	if err == io.EOF {
		if rerr := st.RecvMsg(&pb.PutResponse{}); rerr != nil {
			return rerr
		}
		return status.Error(codes.Internal, "client: stream ended early")
	}
	return err
}

// Block is a block read by Get.
type Block struct {
	Layout *pb.Layout
	From   pb.Tier // fastest tier that held it
	Data   []byte
}

// GetOptions modify Get.
type GetOptions struct {
	// Promote: pb.Tier_TIER_HBM also copies the block into HBM.
	Promote pb.Tier
}

// Get reads a block inline, appending its bytes to dst[:0] (pass a buffer
// to reuse it: the chunks are copied straight into it from gRPC's receive
// buffers). A block that is not cached is a NOT_FOUND status.
func (c *Client) Get(ctx context.Context, key *pb.Key, dst []byte, opts GetOptions) (Block, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := c.api.Get(ctx, &pb.GetRequest{Key: key, Promote: opts.Promote}, grpc.ForceCodecV2(getWire{protoWire}))
	if err != nil {
		return Block{}, err
	}
	chunk := getChunk{dst: dst[:0]}
	for first := true; ; first = false {
		if err := st.RecvMsg(&chunk); err != nil {
			if err == io.EOF {
				break
			}
			return Block{}, err
		}
		if first && chunk.layout == nil {
			return Block{}, status.Error(codes.Internal, "client: the first Get message carried no layout")
		}
	}
	if chunk.layout == nil {
		return Block{}, status.Error(codes.Internal, "client: Get stream carried no block")
	}
	if uint64(len(chunk.dst)) != chunk.total {
		return Block{}, status.Errorf(codes.Internal, "client: Get stream carried %d bytes of %d", len(chunk.dst), chunk.total)
	}
	return Block{Layout: chunk.layout, From: chunk.from, Data: chunk.dst}, nil
}

// Lookup sends a raw LookupRequest.
func (c *Client) Lookup(ctx context.Context, req *pb.LookupRequest) (*pb.LookupResponse, error) {
	return c.api.Lookup(ctx, req, lookupCall)
}

// LookupInto is Lookup answering into resp, whose tiers slice it reuses:
// a caller that looks up long chains over and over keeps one response per
// goroutine and allocates nothing per block. resp must not be in use
// elsewhere; on error its contents are undefined.
func (c *Client) LookupInto(ctx context.Context, req *pb.LookupRequest, resp *pb.LookupResponse) error {
	return c.conn.Invoke(ctx, pb.KVTierService_Lookup_FullMethodName, req, resp, lookupCall)
}

// LookupHashes finds the longest cached prefix of a chain of block hashes,
// all of one size (16 or 32 bytes); it sends them packed.
func (c *Client) LookupHashes(ctx context.Context, ns string, layer int32, hashes [][]byte) (*pb.LookupResponse, error) {
	req := &pb.LookupRequest{Namespace: ns, Layer: layer}
	if len(hashes) > 0 {
		size := len(hashes[0])
		packed := make([]byte, 0, size*len(hashes))
		for _, h := range hashes {
			if len(h) != size {
				// Mixed sizes: send them unpacked and let the daemon say what is wrong.
				req.Hashes = hashes
				packed = nil
				break
			}
			packed = append(packed, h...)
		}
		if packed != nil {
			req.PackedHashes, req.HashSize = packed, uint32(size)
		}
	}
	return c.api.Lookup(ctx, req, lookupCall)
}

// Delete removes a block.
func (c *Client) Delete(ctx context.Context, key *pb.Key) error {
	_, err := c.api.Delete(ctx, &pb.DeleteRequest{Key: key})
	return err
}

// Stats returns the daemon's statistics.
func (c *Client) Stats(ctx context.Context) (*pb.StatsResponse, error) {
	return c.api.Stats(ctx, &pb.StatsRequest{})
}
