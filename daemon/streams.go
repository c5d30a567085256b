package daemon

import (
	"fmt"
	"io"
)

// received is one message (or the final error) from a client stream.
type received[T any] struct {
	msg *T
	err error
}

// recvLoop calls recv in its own goroutine and delivers what it gets, so a
// long-lived stream handler can wait for a message and for shutdown at
// once. It stops after the first error, or when done is closed (the
// handler returned: gRPC then ends the stream, so recv returns).
func recvLoop[T any](recv func() (*T, error), done <-chan struct{}) <-chan received[T] {
	ch := make(chan received[T])
	go func() {
		for {
			m, err := recv()
			select {
			case ch <- received[T]{m, err}:
			case <-done:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return ch
}

// nextMsg waits for a stream's next message or for shutdown. It returns
// the message; or nil and nil when the client ended the stream (io.EOF);
// or nil and the error, ErrShuttingDown when the daemon is stopping.
func nextMsg[T any](msgs <-chan received[T], stopping <-chan struct{}, what string) (*T, error) {
	select {
	case <-stopping:
		return nil, fmt.Errorf("%w: %s ended", ErrShuttingDown, what)
	case r := <-msgs:
		if r.err == io.EOF {
			return nil, nil
		}
		if r.err != nil {
			return nil, r.err
		}
		return r.msg, nil
	}
}
