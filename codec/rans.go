package codec

import (
	"encoding/binary"
	"fmt"
)

// A static rANS entropy coder over byte symbols (Duda's asymmetric numeral
// systems, byte-wise renormalisation as in ryg_rans). The model is one
// frequency table per stream, quantised to ransTotal and stored before the
// stream. Used by the entropy-coded quantized modes.

const (
	ransBits  = 12
	ransTotal = 1 << ransBits
	ransLow   = 1 << 23 // lower bound of the normalised state
)

// ransModel is a normalised frequency table and its decoding tables.
type ransModel struct {
	freq [256]uint32
	cum  [256]uint32
	sym  [ransTotal]uint8 // slot → symbol
}

// build normalises counts (over symbols that occur) to sum to ransTotal, each
// occurring symbol keeping a frequency of at least 1. n is the number of samples.
func (m *ransModel) build(counts *[256]uint32, n int) {
	var sum uint32
	best, bestF := 0, uint32(0)
	for s := 0; s < 256; s++ {
		c := counts[s]
		if c == 0 {
			m.freq[s] = 0
			continue
		}
		f := uint32(uint64(c) * ransTotal / uint64(n))
		if f == 0 {
			f = 1
		}
		m.freq[s] = f
		sum += f
		if f > bestF {
			best, bestF = s, f
		}
	}
	// Fix the total on the most frequent symbol; if that is not enough, take
	// from the others one at a time (only possible with many rare symbols).
	for sum != ransTotal {
		if sum < ransTotal {
			m.freq[best] += ransTotal - sum
			sum = ransTotal
			break
		}
		over := sum - ransTotal
		if m.freq[best] > over {
			m.freq[best] -= over
			sum = ransTotal
			break
		}
		for s := 0; s < 256 && sum > ransTotal; s++ {
			if m.freq[s] > 1 {
				m.freq[s]--
				sum--
			}
		}
	}
	m.finish()
}

// finish fills cum from freq.
func (m *ransModel) finish() {
	var c uint32
	for s := 0; s < 256; s++ {
		m.cum[s] = c
		c += m.freq[s]
	}
}

// fillSlots builds the slot → symbol table used by the decoder.
func (m *ransModel) fillSlots() {
	for s := 0; s < 256; s++ {
		c, f := m.cum[s], m.freq[s]
		for i := c; i < c+f; i++ {
			m.sym[i] = uint8(s)
		}
	}
}

// appendTable writes the model: first symbol, count-1, then count uvarint frequencies.
func (m *ransModel) appendTable(dst []byte) []byte {
	lo, hi := usedSymbols(&m.freq)
	dst = append(dst, uint8(lo), uint8(hi-lo))
	for s := lo; s <= hi; s++ {
		dst = binary.AppendUvarint(dst, uint64(m.freq[s]))
	}
	return dst
}

// readTable parses a table written by appendTable and prepares decoding.
func (m *ransModel) readTable(b []byte) (int, error) {
	if len(b) < 2 {
		return 0, fmt.Errorf("%w: short rANS table", ErrCorrupt)
	}
	lo, n := int(b[0]), int(b[1])+1
	if lo+n > 256 {
		return 0, fmt.Errorf("%w: rANS table spans symbols %d+%d", ErrCorrupt, lo, n)
	}
	m.freq = [256]uint32{}
	off := 2
	var sum uint64
	for s := lo; s < lo+n; s++ {
		f, k := binary.Uvarint(b[off:])
		if k <= 0 || f > ransTotal {
			return 0, fmt.Errorf("%w: rANS frequency", ErrCorrupt)
		}
		off += k
		m.freq[s] = uint32(f)
		sum += f
	}
	if sum != ransTotal {
		return 0, fmt.Errorf("%w: rANS frequencies sum to %d", ErrCorrupt, sum)
	}
	m.finish()
	m.fillSlots()
	return off, nil
}

// ransEncode encodes syms with model m. It writes the stream backwards ending
// at buf's end and returns the stream (a suffix of buf). buf must hold at
// least 4 + 2·len(syms) bytes, the worst case with 12-bit frequencies; it
// returns nil when buf is too small.
func ransEncode(buf []byte, syms []uint8, m *ransModel) []byte {
	p := len(buf)
	x := uint32(ransLow)
	for i := len(syms) - 1; i >= 0; i-- {
		s := syms[i]
		f := m.freq[s]
		xmax := ((ransLow >> ransBits) << 8) * f
		for x >= xmax {
			if p == 0 {
				return nil
			}
			p--
			buf[p] = byte(x)
			x >>= 8
		}
		x = (x/f)<<ransBits + x%f + m.cum[s]
	}
	if p < 4 {
		return nil
	}
	p -= 4
	binary.LittleEndian.PutUint32(buf[p:], x)
	return buf[p:]
}

// ransDecode decodes len(out) symbols from stream with model m (after
// readTable). The stream must be consumed exactly and end in the initial state.
func ransDecode(out []uint8, stream []byte, m *ransModel) error {
	if len(stream) < 4 {
		return fmt.Errorf("%w: short rANS stream", ErrCorrupt)
	}
	x := binary.LittleEndian.Uint32(stream)
	p := 4
	if x < ransLow {
		return fmt.Errorf("%w: rANS state", ErrCorrupt)
	}
	for i := range out {
		slot := x & (ransTotal - 1)
		s := m.sym[slot]
		out[i] = s
		x = m.freq[s]*(x>>ransBits) + slot - m.cum[s]
		for x < ransLow {
			if p >= len(stream) {
				return fmt.Errorf("%w: rANS stream ends early", ErrCorrupt)
			}
			x = x<<8 | uint32(stream[p])
			p++
		}
	}
	if p != len(stream) || x != ransLow {
		return fmt.Errorf("%w: rANS stream does not end cleanly", ErrCorrupt)
	}
	return nil
}
