package load

import (
	"context"
	"encoding/binary"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/kvtier/kvtier/client"
	pb "github.com/kvtier/kvtier/proto/kvtier/v1"
)

// Target names (Row.Target).
const (
	KvtierShm    = "kvtier-shm"
	KvtierInline = "kvtier-inline"
	Redis        = "redis"
)

// Conn is one worker's connection to a target. Get reads key i into dst
// and returns the bytes read (ErrMiss wrapped when absent); Put stores it;
// Lookup asks for the cached prefix ending at key i (Redis: EXISTS).
type Conn interface {
	Get(ctx context.Context, i int, dst []byte) ([]byte, error)
	Put(ctx context.Context, i int, data []byte) error
	Lookup(ctx context.Context, i int) error
	Close() error
}

// Dialer opens one Conn to a target.
type Dialer func(ctx context.Context) (Conn, error)

// Namespace is where the load benchmark's blocks live in kvtier.
const Namespace = "bench-load"

// keys holds every key of the key space in each target's form, made once,
// so no operation allocates one.
type keys struct {
	pb     []*pb.Key
	hashes [][]byte
	redis  []string
}

func newKeys(n int) *keys {
	k := &keys{pb: make([]*pb.Key, n), hashes: make([][]byte, n), redis: make([]string, n)}
	for i := range n {
		h := make([]byte, 16)
		binary.LittleEndian.PutUint64(h, uint64(i)*0x9E3779B97F4A7C15+3)
		binary.LittleEndian.PutUint64(h[8:], uint64(i))
		k.hashes[i] = h
		k.pb[i] = &pb.Key{Namespace: Namespace, Hash: h, Layer: -1}
		k.redis[i] = Namespace + ":" + strconv.Itoa(i)
	}
	return k
}

// layoutFor is an fp16 layout of n bytes (one KV head of dimension 128:
// 512 bytes a token); n must be a multiple of 512.
func layoutFor(n int) (*pb.Layout, error) {
	if n <= 0 || n%512 != 0 || n/512 > 1<<20 {
		return nil, fmt.Errorf("%w: block size %d: want a positive multiple of 512", ErrInvalid, n)
	}
	return &pb.Layout{Dtype: pb.Dtype_DTYPE_FP16, Tokens: uint32(n / 512), KvHeads: 1, HeadDim: 128}, nil
}

type kvConn struct {
	c      *client.Client
	shm    *client.Shm // nil: inline
	keys   *keys
	layout *pb.Layout
	req    *pb.LookupRequest
	resp   *pb.LookupResponse
}

// KvtierDialer dials the daemon at target (client.Dial's form, with opts)
// for the shared-memory data plane (shm true) or the inline one.
func KvtierDialer(target string, shm bool, w *Workload, opts ...client.Option) Dialer {
	return func(ctx context.Context) (Conn, error) {
		c, err := client.Dial(target, opts...)
		if err != nil {
			return nil, err
		}
		kc := &kvConn{c: c, keys: w.keys, layout: w.layout, resp: new(pb.LookupResponse),
			req: &pb.LookupRequest{Namespace: Namespace, Layer: -1, HashSize: 16}}
		if shm {
			if kc.shm, err = c.Attach(ctx, Namespace); err != nil {
				c.Close()
				return nil, fmt.Errorf("load: attach: %w", err)
			}
		}
		return kc, nil
	}
}

func (k *kvConn) Get(ctx context.Context, i int, dst []byte) ([]byte, error) {
	var b client.Block
	var err error
	if k.shm != nil {
		b, err = k.shm.Get(ctx, k.keys.pb[i], dst, client.GetOptions{})
	} else {
		b, err = k.c.Get(ctx, k.keys.pb[i], dst, client.GetOptions{})
	}
	return b.Data, err
}

func (k *kvConn) Put(ctx context.Context, i int, data []byte) error {
	if k.shm != nil {
		return k.shm.Put(ctx, k.keys.pb[i], k.layout, data, client.PutOptions{})
	}
	return k.c.Put(ctx, k.keys.pb[i], k.layout, data, client.PutOptions{})
}

func (k *kvConn) Lookup(ctx context.Context, i int) error {
	k.req.PackedHashes = k.keys.hashes[i]
	return k.c.LookupInto(ctx, k.req, k.resp)
}

func (k *kvConn) Close() error {
	if k.shm != nil {
		k.shm.Close()
	}
	return k.c.Close()
}

type redisConn struct {
	r    *redis.Client
	keys *keys
}

// RedisDialer dials Redis at addr: a Unix socket path (starting with /)
// or host:port. Each Conn is one connection (pool of one), as a kvtier
// client is one channel.
func RedisDialer(addr string, w *Workload) Dialer {
	network := "tcp"
	if len(addr) > 0 && addr[0] == '/' {
		network = "unix"
	}
	return func(ctx context.Context) (Conn, error) {
		r := redis.NewClient(&redis.Options{Network: network, Addr: addr, PoolSize: 1, MinIdleConns: 1})
		if err := r.Ping(ctx).Err(); err != nil {
			r.Close()
			return nil, fmt.Errorf("load: redis %s: %w", addr, err)
		}
		return &redisConn{r: r, keys: w.keys}, nil
	}
}

func (c *redisConn) Get(ctx context.Context, i int, _ []byte) ([]byte, error) {
	b, err := c.r.Get(ctx, c.keys.redis[i]).Bytes()
	if err == redis.Nil {
		return nil, fmt.Errorf("%w: %s", ErrMiss, c.keys.redis[i])
	}
	return b, err
}

func (c *redisConn) Put(ctx context.Context, i int, data []byte) error {
	return c.r.Set(ctx, c.keys.redis[i], data, 0).Err()
}

func (c *redisConn) Lookup(ctx context.Context, i int) error {
	return c.r.Exists(ctx, c.keys.redis[i]).Err()
}

func (c *redisConn) Close() error { return c.r.Close() }
