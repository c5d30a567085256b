// Package kvfile reads the KV-cache dumps in codec/testdata/kv, copied from
// ../shared/testdata/kv ("tinylm-kv-dump/1"): a raw little-endian tensor file kv-pNN.bin and a JSON
// sidecar kv-pNN.json that names every tensor's dtype, shape, dims, offset and
// length.
//
// It imports only the standard library so that tests and benchmarks anywhere in
// the module can use it.
//
// Caveats: a File holds the whole .bin in memory; the byte slices that
// File.Raw returns alias File.Data and stay valid as long as the File does.
// Only float16 and float32 tensors are understood.
package kvfile
