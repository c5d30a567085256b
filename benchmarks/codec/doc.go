// Package codecbench measures the codec: compression ratio, reconstruction
// and attention error, and single-core encode/decode throughput per mode, on
// real KV dumps (package kvfile) or synthetic KV with outlier channels. It
// also measures the disk's sequential O_DIRECT read bandwidth in the same run,
// the link a decoded NVMe block must outrun. cmd/kvtier's "bench codec" is a
// thin wrapper around Run and the writers here.
//
// Caveats: throughput is measured on one goroutine (GOMAXPROCS does not
// change it) and is wall-clock time, so a busy machine reads low. The disk
// figure needs a filesystem that supports O_DIRECT (not tmpfs) and Linux;
// elsewhere it is reported as unavailable.
package codecbench
