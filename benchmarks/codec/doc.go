// Package codecbench measures the codec: compression ratio, reconstruction
// and attention error, and single-core encode/decode throughput per mode, on
// real KV dumps (package kvfile) or synthetic KV with outlier channels. It
// also measures the disk's sequential O_DIRECT read bandwidth in the same run,
// the link a decoded NVMe block must outrun. cmd/kvtier's "bench codec" is a
// thin wrapper around Run and the writers here.
//
// Caveats: throughput is measured on one goroutine (GOMAXPROCS does not
// change it) as bytes per second of the measuring thread's CPU time where
// the OS reports it (Linux), else of wall-clock time. A busy machine still
// reads low (other work shares the core's caches), so the run also measures
// memcpy of the largest input the same way, as the reference. The disk
// figure needs a filesystem that supports O_DIRECT (not tmpfs) and Linux;
// elsewhere it is reported as unavailable.
package codecbench
