// Package client is the Go client of the kvtier daemon, used by the kvtier
// command's client subcommands, the load benchmarks and Go engines.
//
// Dial connects over the Unix socket ("unix:///run/kvtier.sock", or a path)
// or TCP ("host:port", with TLS or WithInsecure). A Client moves block bytes
// inline, in gRPC messages of at most 1 MiB. On the Unix socket,
// Client.Attach opens a shared-memory session (Shm): the daemon's DRAM
// arena is mapped into this process and block bytes are copied straight
// in and out of it.
//
// Caveats:
//   - Keys and layouts are the API's protobuf messages (package kvtierv1).
//   - Pinned.Data and Reservation.Data alias the shared arena: valid until
//     Release / Commit / Abort, never after, and only while the Shm is open.
//     Writing to Pinned.Data corrupts the cached block.
//   - Shm.Get copies the block out and trusts the copy when it finished
//     within the pin lease's lifetime (measured from before the request was
//     sent); the release is then sent later, with the next pin or after a
//     short idle delay. A copy that took longer is confirmed by a
//     synchronous release, and rejected if the lease had expired.
//   - Errors are gRPC status errors: use status.Code(err).
package client
