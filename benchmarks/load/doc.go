// Package load holds kvtier's load benchmarks, run against a `kvtier serve`
// subprocess on a Unix socket (built from cmd/kvtier on first use):
//
//   - BenchmarkGet: 1 MiB Gets by 4 concurrent clients through the
//     shared-memory data plane, the inline (gRPC) data plane, and — the
//     reference, in the same run — Redis 7 GET of the same values over a
//     Unix socket (Debian's redis-server, started by the benchmark with
//     persistence off; skipped with a message when it is not installed),
//     plus a 4-goroutine memcpy of the same bytes as the physical limit.
//     Each reports MB/s; the parent logs the ratios.
//   - BenchmarkLookup: the longest cached prefix of an 8192-block chain,
//     sent as packed hashes and as token ids, by 16 concurrent clients and
//     by one, back to back, and by 16 at 800 and 1600 lookups/s in all
//     (open loop). Each reports p50 and p99 latency from sending, the open
//     loop also from each request's due time (sched-p50-µs, sched-p99-µs),
//     and the CPU per call of the daemon and of the clients.
//
// Run: go test -run '^$' -bench . -benchtime 3s ./benchmarks/load
package load
