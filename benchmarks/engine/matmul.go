package engine

// matmul computes out[n][o] = x[n][in] · W[o][in]ᵀ. Each weight row is
// read once per four input rows.
func matmul(out, x, w []float32, n, in, o int) {
	i := 0
	for ; i+4 <= n; i += 4 {
		x0, x1, x2, x3 := x[i*in:(i+1)*in], x[(i+1)*in:(i+2)*in], x[(i+2)*in:(i+3)*in], x[(i+3)*in:(i+4)*in]
		for r := 0; r < o; r++ {
			wr := w[r*in : (r+1)*in]
			var s0, s1, s2, s3 float32
			for j, wv := range wr {
				s0 += wv * x0[j]
				s1 += wv * x1[j]
				s2 += wv * x2[j]
				s3 += wv * x3[j]
			}
			out[i*o+r], out[(i+1)*o+r], out[(i+2)*o+r], out[(i+3)*o+r] = s0, s1, s2, s3
		}
	}
	for ; i < n; i++ {
		xi := x[i*in : (i+1)*in]
		for r := 0; r < o; r++ {
			out[i*o+r] = dot(w[r*in:(r+1)*in], xi)
		}
	}
}

// dot is the inner product of two equal-length vectors.
func dot(a, b []float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float32
	j := 0
	for ; j+4 <= len(a); j += 4 {
		s0 += a[j] * b[j]
		s1 += a[j+1] * b[j+1]
		s2 += a[j+2] * b[j+2]
		s3 += a[j+3] * b[j+3]
	}
	for ; j < len(a); j++ {
		s0 += a[j] * b[j]
	}
	return (s0 + s1) + (s2 + s3)
}

// axpy computes y += a·x.
func axpy(y []float32, a float32, x []float32) {
	x = x[:len(y)]
	for i := range y {
		y[i] += a * x[i]
	}
}
