// Package e2e tests the kvtier binary end to end: it builds cmd/kvtier once,
// runs `kvtier serve` as a subprocess on a private Unix socket, and drives it
// with the client commands and with helper client processes that it kills.
// The tests need Linux (shared memory, SO_PEERCRED); they skip elsewhere.
package e2e
