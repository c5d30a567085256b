//go:build amd64 && !purego

#include "textflag.h"

// func dotI8AVX(q *float32, x *byte, n int) float32
// n is a positive multiple of 16. Four accumulators over 32 values per
// iteration hide the FMA latency; a 16-value step finishes.
TEXT ·dotI8AVX(SB), NOSPLIT, $0-28
	MOVQ q+0(FP), SI
	MOVQ x+8(FP), DI
	MOVQ n+16(FP), CX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y6, Y6, Y6
	VXORPS Y7, Y7, Y7

loop32:
	CMPQ CX, $32
	JL   tail16
	VPMOVSXBD (DI), Y2
	VPMOVSXBD 8(DI), Y3
	VPMOVSXBD 16(DI), Y4
	VPMOVSXBD 24(DI), Y5
	VCVTDQ2PS Y2, Y2
	VCVTDQ2PS Y3, Y3
	VCVTDQ2PS Y4, Y4
	VCVTDQ2PS Y5, Y5
	VFMADD231PS (SI), Y2, Y0
	VFMADD231PS 32(SI), Y3, Y1
	VFMADD231PS 64(SI), Y4, Y6
	VFMADD231PS 96(SI), Y5, Y7
	ADDQ $32, DI
	ADDQ $128, SI
	SUBQ $32, CX
	JMP  loop32

tail16:
	CMPQ CX, $16
	JL   done1
	VPMOVSXBD (DI), Y2
	VPMOVSXBD 8(DI), Y3
	VCVTDQ2PS Y2, Y2
	VCVTDQ2PS Y3, Y3
	VFMADD231PS (SI), Y2, Y0
	VFMADD231PS 32(SI), Y3, Y1

done1:
	VADDPS       Y6, Y0, Y0
	VADDPS       Y7, Y1, Y1
	VADDPS       Y1, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPS       X1, X0, X0
	VHADDPS      X0, X0, X0
	VHADDPS      X0, X0, X0
	VZEROUPPER
	MOVSS        X0, ret+24(FP)
	RET

#define HSUM(Y, X, off) \
	VEXTRACTF128 $1, Y, X12; \
	VADDPS       X12, X, X; \
	VHADDPS      X, X, X; \
	VHADDPS      X, X, X; \
	MOVSS        X, off(DX)

// func dotI8x4AVX(dst *[4]float32, q *float32, x *byte, n int)
// q holds four vectors of n values back to back; n is a positive multiple
// of 16. Two accumulators per vector (16 values per iteration).
TEXT ·dotI8x4AVX(SB), NOSPLIT, $0-32
	MOVQ dst+0(FP), DX
	MOVQ q+8(FP), SI
	MOVQ x+16(FP), DI
	MOVQ n+24(FP), CX
	MOVQ CX, R8
	SHLQ $2, R8
	LEAQ (SI)(R8*1), R9
	LEAQ (R9)(R8*1), R10
	LEAQ (R10)(R8*1), R11
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	VXORPS Y4, Y4, Y4
	VXORPS Y5, Y5, Y5
	VXORPS Y6, Y6, Y6
	VXORPS Y7, Y7, Y7

loop4:
	VPMOVSXBD (DI), Y8
	VPMOVSXBD 8(DI), Y9
	VCVTDQ2PS Y8, Y8
	VCVTDQ2PS Y9, Y9
	VFMADD231PS (SI), Y8, Y0
	VFMADD231PS 32(SI), Y9, Y4
	VFMADD231PS (R9), Y8, Y1
	VFMADD231PS 32(R9), Y9, Y5
	VFMADD231PS (R10), Y8, Y2
	VFMADD231PS 32(R10), Y9, Y6
	VFMADD231PS (R11), Y8, Y3
	VFMADD231PS 32(R11), Y9, Y7
	ADDQ $16, DI
	ADDQ $64, SI
	ADDQ $64, R9
	ADDQ $64, R10
	ADDQ $64, R11
	SUBQ $16, CX
	JNZ  loop4

	VADDPS Y4, Y0, Y0
	VADDPS Y5, Y1, Y1
	VADDPS Y6, Y2, Y2
	VADDPS Y7, Y3, Y3
	HSUM(Y0, X0, 0)
	HSUM(Y1, X1, 4)
	HSUM(Y2, X2, 8)
	HSUM(Y3, X3, 12)
	VZEROUPPER
	RET
