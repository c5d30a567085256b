// Command soak runs kvtier under a long mixed load and reports whether the
// daemon's resources stay flat: it starts its own `kvtier serve` (DRAM and
// NVMe tiers in a temporary directory, a Unix socket), then runs clients
// (64 by default) on both data planes, half inline (gRPC streams) and half
// shared memory, each doing a random mix of put, get, lookup and delete on
// a shared key space with random block sizes, for a bounded time (10
// minutes by default). Every interval (a minute by default) it prints the
// daemon's resident memory, goroutines, open files, shared-memory sessions
// and leases, pinned blocks, operations and errors.
//
// Every block's bytes are a function of its key, so each get is checked
// against what was put; a wrong byte is an error. Expected outcomes of
// contention are not errors: a get or delete of a block another client
// deleted (NOT_FOUND), a delete of a block someone holds
// (FAILED_PRECONDITION). Anything else is, and so is an operation, or a
// sample's calls, that takes longer than --op-timeout (30 s).
//
// It exits 1 when any error was seen, or when the daemon did not stay flat
// (see flat): after the clients closed its goroutines, sockets, sessions,
// leases and pins must come back to the start (it waits up to a minute for
// idle workers to exit), and under load its RSS, Go heap and files must
// stop growing after the first third of the run.
//
// Run: make soak, or make soak SOAKFLAGS="-duration 2m -interval 20s".
package main
