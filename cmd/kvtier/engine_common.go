package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/kvtier/kvtier/benchmarks/engine"
	"github.com/kvtier/kvtier/client"
)

// engineConn is the reference engine's connection to kvtier: a daemon
// started in this process unless a socket is given, a client, and the
// data plane blocks move on.
type engineConn struct {
	c      *client.Client
	blocks engine.Blocks
	plane  string
	close  func() error
}

func dialEngine(ctx context.Context, socket string, inline bool, session string) (*engineConn, error) {
	var closers []func() error
	closeAll := func() error {
		var err error
		for i := len(closers) - 1; i >= 0; i-- {
			err = errors.Join(err, closers[i]())
		}
		return err
	}
	if socket == "" {
		d, err := engine.StartDaemon(256<<20, "", 0)
		if err != nil {
			return nil, err
		}
		closers = append(closers, d.Close)
		socket = d.Socket
	}
	c, err := client.Dial(client.UnixTarget(socket))
	if err != nil {
		return nil, errors.Join(err, closeAll())
	}
	closers = append(closers, c.Close)
	ec := &engineConn{c: c, blocks: c, plane: "inline", close: closeAll}
	if !inline {
		shm, err := c.Attach(ctx, session)
		if err != nil {
			return nil, errors.Join(fmt.Errorf("shared memory: %w (use --inline)", err), closeAll())
		}
		closers = append(closers, shm.Close)
		ec.blocks, ec.plane = shm, "shm"
	}
	return ec, nil
}

// writeJSON prints rows as one indented JSON array.
func writeJSON(w io.Writer, rows any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rows)
}
