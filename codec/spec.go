package codec

import (
	"fmt"
	"strconv"
	"strings"
)

// ParseSpec parses a mode name with optional "+flag" suffixes into Options:
// "int4", "int3+ec", "int4+clip+lz4". Flags: ec (Entropy), lz4 (LZ4), clip
// (Clip), uniform (UniformKeyBits), out (Outliers = DefaultOutliers) and
// out=F (Outliers = F). Flags on raw or lossless are an error.
func ParseSpec(s string) (Options, error) {
	parts := strings.Split(strings.TrimSpace(s), "+")
	m, err := ParseMode(parts[0])
	if err != nil {
		return Options{}, err
	}
	o := Options{Mode: m}
	for _, f := range parts[1:] {
		if !m.Quantized() {
			return o, fmt.Errorf("%w: flag %q needs a quantized mode", ErrMode, f)
		}
		switch f {
		case "ec":
			o.Entropy = true
		case "lz4":
			o.LZ4 = true
		case "clip":
			o.Clip = true
		case "uniform":
			o.UniformKeyBits = true
		case "out":
			o.Outliers = DefaultOutliers
		default:
			if v, ok := strings.CutPrefix(f, "out="); ok {
				x, err := strconv.ParseFloat(v, 64)
				if err != nil || !(x >= 0 && x <= MaxOutliers) {
					return o, fmt.Errorf("%w: outlier fraction %q not in [0, %v]", ErrMode, v, MaxOutliers)
				}
				o.Outliers = x
				continue
			}
			return o, fmt.Errorf("%w: unknown flag %q in %q (want ec, lz4, clip, uniform, out, out=F)", ErrMode, f, s)
		}
	}
	return o, nil
}

// Spec returns the name ParseSpec reads back (mode and flags; group sizes,
// boost and parallelism are not part of it).
func (o Options) Spec() string {
	s := o.Mode.String()
	if !o.Mode.Quantized() {
		return s
	}
	if o.Entropy {
		s += "+ec"
	}
	if o.LZ4 {
		s += "+lz4"
	}
	if o.Clip {
		s += "+clip"
	}
	if o.UniformKeyBits {
		s += "+uniform"
	}
	switch {
	case o.Outliers == DefaultOutliers:
		s += "+out"
	case o.Outliers != 0:
		s += "+out=" + strconv.FormatFloat(o.Outliers, 'g', -1, 64)
	}
	return s
}
