//go:build amd64 && !purego

#include "textflag.h"

// func dotI8AVX(q *float32, x *byte, n int) float32
// n is a positive multiple of 16.
TEXT ·dotI8AVX(SB), NOSPLIT, $0-28
	MOVQ q+0(FP), SI
	MOVQ x+8(FP), DI
	MOVQ n+16(FP), CX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1

loop1:
	VPMOVSXBD (DI), Y2
	VPMOVSXBD 8(DI), Y3
	VCVTDQ2PS Y2, Y2
	VCVTDQ2PS Y3, Y3
	VFMADD231PS (SI), Y2, Y0
	VFMADD231PS 32(SI), Y3, Y1
	ADDQ $16, DI
	ADDQ $64, SI
	SUBQ $16, CX
	JNZ  loop1

	VADDPS       Y1, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPS       X1, X0, X0
	VHADDPS      X0, X0, X0
	VHADDPS      X0, X0, X0
	VZEROUPPER
	MOVSS        X0, ret+24(FP)
	RET

#define HSUM(Y, X, off) \
	VEXTRACTF128 $1, Y, X5; \
	VADDPS       X5, X, X; \
	VHADDPS      X, X, X; \
	VHADDPS      X, X, X; \
	MOVSS        X, off(DX)

// func dotI8x4AVX(dst *[4]float32, q *float32, x *byte, n int)
// q holds four vectors of n values back to back; n is a positive multiple of 8.
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

loop4:
	VPMOVSXBD (DI), Y4
	VCVTDQ2PS Y4, Y4
	VFMADD231PS (SI), Y4, Y0
	VFMADD231PS (R9), Y4, Y1
	VFMADD231PS (R10), Y4, Y2
	VFMADD231PS (R11), Y4, Y3
	ADDQ $8, DI
	ADDQ $32, SI
	ADDQ $32, R9
	ADDQ $32, R10
	ADDQ $32, R11
	SUBQ $8, CX
	JNZ  loop4

	HSUM(Y0, X0, 0)
	HSUM(Y1, X1, 4)
	HSUM(Y2, X2, 8)
	HSUM(Y3, X3, 12)
	VZEROUPPER
	RET
