package dram

// prefault writes to every page of a new mapping (whose bytes are zero
// already) so that it is allocated and mapped writable now.
func prefault(mem []byte) {
	for i := 0; i < len(mem); i += pageSize {
		mem[i] = 0
	}
}
