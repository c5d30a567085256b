//go:build amd64 && !purego

#include "textflag.h"

// AVX2 + F16C kernels of the quantized modes (fp16 blocks). Each one is the
// vector form of a Go loop in quant_k.go or quant_v.go and rounds exactly as
// that loop does (no fused multiply-add); simd_amd64.go documents the
// arguments and the callers check every length before the call.

// func cpuid(eaxArg, ecxArg uint32) (eax, ebx, ecx, edx uint32)
TEXT ·cpuid(SB), NOSPLIT, $0-24
	MOVL eaxArg+0(FP), AX
	MOVL ecxArg+4(FP), CX
	CPUID
	MOVL AX, eax+8(FP)
	MOVL BX, ebx+12(FP)
	MOVL CX, ecx+16(FP)
	MOVL DX, edx+20(FP)
	RET

// func xgetbv() (eax, edx uint32)
TEXT ·xgetbv(SB), NOSPLIT, $0-8
	MOVL $0, CX
	XGETBV
	MOVL AX, eax+0(FP)
	MOVL DX, edx+4(FP)
	RET

// func f16to32AVX(dst *float32, src *byte, n int) (special uint32)
TEXT ·f16to32AVX(SB), NOSPLIT, $0-28
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	MOVL $0x7c007c00, AX
	MOVD AX, X4
	VPBROADCASTD X4, X4
	VPXOR X5, X5, X5

f16loop:
	VMOVDQU (SI), X0
	VCVTPH2PS X0, Y1
	VMOVUPS Y1, (DI)
	VPAND X4, X0, X2
	VPCMPEQW X4, X2, X2
	VPOR X2, X5, X5
	ADDQ $16, SI
	ADDQ $32, DI
	SUBQ $8, CX
	JNZ f16loop
	VPMOVMSKB X5, AX
	MOVL AX, special+24(FP)
	VZEROUPPER
	RET

// func statsRowsAVX(rows *float32, D, n int, mn, mx *int32, e *float32)
TEXT ·statsRowsAVX(SB), NOSPLIT, $0-48
	MOVQ rows+0(FP), SI
	MOVQ D+8(FP), DX
	MOVQ n+16(FP), CX
	MOVQ mn+24(FP), R8
	MOVQ mx+32(FP), R9
	MOVQ e+40(FP), R10

statsrow:
	XORQ BX, BX

statschunk:
	VMOVUPS (SI)(BX*4), Y0
	VPSRAD $31, Y0, Y1
	VPSRLD $1, Y1, Y1
	VPXOR Y0, Y1, Y1
	VPMINSD (R8)(BX*4), Y1, Y2
	VMOVDQU Y2, (R8)(BX*4)
	VPMAXSD (R9)(BX*4), Y1, Y3
	VMOVDQU Y3, (R9)(BX*4)
	VMULPS Y0, Y0, Y4
	VADDPS (R10)(BX*4), Y4, Y4
	VMOVUPS Y4, (R10)(BX*4)
	ADDQ $8, BX
	CMPQ BX, DX
	JB statschunk
	LEAQ (SI)(DX*4), SI
	DECQ CX
	JNZ statsrow
	VZEROUPPER
	RET

// func quantRowsAVX(codes *byte, rows *float32, D, n int, a, inv *float32, m *int32)
TEXT ·quantRowsAVX(SB), NOSPLIT, $0-56
	MOVQ codes+0(FP), DI
	MOVQ rows+8(FP), SI
	MOVQ D+16(FP), DX
	MOVQ n+24(FP), CX
	MOVQ a+32(FP), R8
	MOVQ inv+40(FP), R9
	MOVQ m+48(FP), R10
	MOVL $0x3f000000, AX
	MOVD AX, X6
	VBROADCASTSS X6, Y6
	VPXOR Y7, Y7, Y7

qrow:
	XORQ BX, BX

qchunk:
	VMOVUPS (SI)(BX*4), Y0
	VSUBPS (R8)(BX*4), Y0, Y0
	VMULPS (R9)(BX*4), Y0, Y0
	VADDPS Y6, Y0, Y0
	VCVTTPS2DQ Y0, Y0
	VPMAXSD Y7, Y0, Y0
	VPMINSD (R10)(BX*4), Y0, Y0
	VEXTRACTI128 $1, Y0, X1
	VPACKUSDW X1, X0, X0
	VPACKUSWB X0, X0, X0
	VMOVQ X0, (DI)(BX*1)
	ADDQ $8, BX
	CMPQ BX, DX
	JB qchunk
	LEAQ (SI)(DX*4), SI
	ADDQ DX, DI
	DECQ CX
	JNZ qrow
	VZEROUPPER
	RET

// func dequantRowsAVX(out *byte, codes *byte, D, n int, a, s *float32)
TEXT ·dequantRowsAVX(SB), NOSPLIT, $0-48
	MOVQ out+0(FP), DI
	MOVQ codes+8(FP), SI
	MOVQ D+16(FP), DX
	MOVQ n+24(FP), CX
	MOVQ a+32(FP), R8
	MOVQ s+40(FP), R9

drow:
	XORQ BX, BX

dchunk:
	VPMOVZXBD (SI)(BX*1), Y0
	VCVTDQ2PS Y0, Y0
	VMULPS (R9)(BX*4), Y0, Y0
	VADDPS (R8)(BX*4), Y0, Y0
	VCVTPS2PH $0, Y0, X0
	VMOVDQU X0, (DI)(BX*2)
	ADDQ $8, BX
	CMPQ BX, DX
	JB dchunk
	ADDQ DX, SI
	LEAQ (DI)(DX*2), DI
	DECQ CX
	JNZ drow
	VZEROUPPER
	RET

// func minMaxGroupsAVX(x *float32, ng, gs int, mn, mx *int32)
TEXT ·minMaxGroupsAVX(SB), NOSPLIT, $0-40
	MOVQ x+0(FP), SI
	MOVQ ng+8(FP), CX
	MOVQ gs+16(FP), DX
	MOVQ mn+24(FP), R8
	MOVQ mx+32(FP), R9

mmgroup:
	VMOVUPS (SI), Y0
	VPSRAD $31, Y0, Y1
	VPSRLD $1, Y1, Y1
	VPXOR Y0, Y1, Y2
	VMOVDQA Y2, Y3
	MOVQ $8, BX
	CMPQ BX, DX
	JAE mmreduce

mminner:
	VMOVUPS (SI)(BX*4), Y0
	VPSRAD $31, Y0, Y1
	VPSRLD $1, Y1, Y1
	VPXOR Y0, Y1, Y1
	VPMINSD Y1, Y2, Y2
	VPMAXSD Y1, Y3, Y3
	ADDQ $8, BX
	CMPQ BX, DX
	JB mminner

mmreduce:
	VEXTRACTI128 $1, Y2, X4
	VPMINSD X4, X2, X2
	VPSHUFD $0x4e, X2, X4
	VPMINSD X4, X2, X2
	VPSHUFD $0xb1, X2, X4
	VPMINSD X4, X2, X2
	VMOVD X2, (R8)
	VEXTRACTI128 $1, Y3, X4
	VPMAXSD X4, X3, X3
	VPSHUFD $0x4e, X3, X4
	VPMAXSD X4, X3, X3
	VPSHUFD $0xb1, X3, X4
	VPMAXSD X4, X3, X3
	VMOVD X3, (R9)
	LEAQ (SI)(DX*4), SI
	ADDQ $4, R8
	ADDQ $4, R9
	DECQ CX
	JNZ mmgroup
	VZEROUPPER
	RET

// func quantGroupsAVX(codes *byte, x *float32, ng, gs int, a, inv *float32, m int32)
TEXT ·quantGroupsAVX(SB), NOSPLIT, $0-52
	MOVQ codes+0(FP), DI
	MOVQ x+8(FP), SI
	MOVQ ng+16(FP), CX
	MOVQ gs+24(FP), DX
	MOVQ a+32(FP), R8
	MOVQ inv+40(FP), R9
	MOVL m+48(FP), AX
	MOVD AX, X7
	VPBROADCASTD X7, Y7
	MOVL $0x3f000000, AX
	MOVD AX, X6
	VBROADCASTSS X6, Y6
	VPXOR Y8, Y8, Y8

qggroup:
	VBROADCASTSS (R8), Y4
	VBROADCASTSS (R9), Y5
	XORQ BX, BX

qgchunk:
	VMOVUPS (SI)(BX*4), Y0
	VSUBPS Y4, Y0, Y0
	VMULPS Y5, Y0, Y0
	VADDPS Y6, Y0, Y0
	VCVTTPS2DQ Y0, Y0
	VPMAXSD Y8, Y0, Y0
	VPMINSD Y7, Y0, Y0
	VEXTRACTI128 $1, Y0, X1
	VPACKUSDW X1, X0, X0
	VPACKUSWB X0, X0, X0
	VMOVQ X0, (DI)(BX*1)
	ADDQ $8, BX
	CMPQ BX, DX
	JB qgchunk
	LEAQ (SI)(DX*4), SI
	ADDQ DX, DI
	ADDQ $4, R8
	ADDQ $4, R9
	DECQ CX
	JNZ qggroup
	VZEROUPPER
	RET

// func dequantGroupsAVX(out *byte, codes *byte, ng, gs int, a, s *float32)
TEXT ·dequantGroupsAVX(SB), NOSPLIT, $0-48
	MOVQ out+0(FP), DI
	MOVQ codes+8(FP), SI
	MOVQ ng+16(FP), CX
	MOVQ gs+24(FP), DX
	MOVQ a+32(FP), R8
	MOVQ s+40(FP), R9

dggroup:
	VBROADCASTSS (R8), Y4
	VBROADCASTSS (R9), Y5
	XORQ BX, BX

dgchunk:
	VPMOVZXBD (SI)(BX*1), Y0
	VCVTDQ2PS Y0, Y0
	VMULPS Y5, Y0, Y0
	VADDPS Y4, Y0, Y0
	VCVTPS2PH $0, Y0, X0
	VMOVDQU X0, (DI)(BX*2)
	ADDQ $8, BX
	CMPQ BX, DX
	JB dgchunk
	ADDQ DX, SI
	LEAQ (DI)(DX*2), DI
	ADDQ $4, R8
	ADDQ $4, R9
	DECQ CX
	JNZ dggroup
	VZEROUPPER
	RET

// Huffman: 32 symbols per iteration, 8 from each of 4 streams (huff.go):
// symbol 4m+j comes from stream j. The four streams' bit buffers (R8–R11)
// and valid-bit counts (BX, DX, SI, DI) stay in registers and their steps
// are interleaved so that four table-lookup chains are in flight; a
// stream's byte position lives in its state {bits, avail, pos, lim uint64;
// base *byte} (40 bytes at R13). The loop stops before an iteration whose
// refills could read past a stream (pos > lim) or after iters iterations,
// and returns the iterations done. A table entry (R12) is the code length |
// symbol<<8; entries go to syms, then the symbols are merged with the low
// bytes at lo into the output pairs.

#define HSYM(bits, avail, slot) \
	MOVL bits, AX; \
	ANDL $0x7ff, AX; \
	MOVWLZX (R12)(AX*2), CX; \
	MOVW CX, syms-64+2*(slot)(SP); \
	SHRQ CX, bits; \
	SUBB CX, avail

#define HSYM4(m) \
	HSYM(R8, BX, 4*(m)); \
	HSYM(R9, DX, 4*(m)+1); \
	HSYM(R10, SI, 4*(m)+2); \
	HSYM(R11, DI, 4*(m)+3)

#define HREFILL(j, bits, avail) \
	MOVQ (j*40+32)(R13), AX; \
	ADDQ (j*40+16)(R13), AX; \
	MOVQ (AX), AX; \
	MOVQ avail, CX; \
	SHLQ CX, AX; \
	ORQ AX, bits; \
	MOVQ $63, CX; \
	SUBQ avail, CX; \
	SHRQ $3, CX; \
	ADDQ CX, (j*40+16)(R13); \
	ORQ $56, avail

#define HREFILL4 \
	HREFILL(0, R8, BX); \
	HREFILL(1, R9, DX); \
	HREFILL(2, R10, SI); \
	HREFILL(3, R11, DI)

// HMERGE: 8 output pairs at AX+2k from syms at off and 8 low bytes at CX+k.
#define HMERGE(off, k) \
	MOVOU syms-64+off(SP), X0; \
	PAND X7, X0; \
	MOVQ k(CX), X1; \
	PUNPCKLBW X6, X1; \
	POR X1, X0; \
	MOVOU X0, (2*k)(AX)

#define HROOM(j) \
	MOVQ (j*40+16)(R13), AX; \
	CMPQ AX, (j*40+24)(R13); \
	JA hdone

// func hufDecode32(tab *uint16, st *[4]hufState, out *byte, lo *byte, iters int) (done int)
TEXT ·hufDecode32(SB), NOSPLIT, $88-48
	MOVQ tab+0(FP), R12
	MOVQ st+8(FP), R13
	MOVQ out+16(FP), AX
	MOVQ AX, outp-72(SP)
	MOVQ lo+24(FP), AX
	MOVQ AX, lop-80(SP)
	MOVQ iters+32(FP), AX
	MOVQ AX, cnt-88(SP)
	MOVQ 0(R13), R8
	MOVQ 8(R13), BX
	MOVQ 40(R13), R9
	MOVQ 48(R13), DX
	MOVQ 80(R13), R10
	MOVQ 88(R13), SI
	MOVQ 120(R13), R11
	MOVQ 128(R13), DI
	PXOR X6, X6
	PCMPEQW X7, X7
	PSLLW $8, X7

hloop:
	HROOM(0)
	HROOM(1)
	HROOM(2)
	HROOM(3)
	HREFILL4
	HSYM4(0)
	HSYM4(1)
	HSYM4(2)
	HSYM4(3)
	HREFILL4
	HSYM4(4)
	HSYM4(5)
	HSYM4(6)
	HSYM4(7)
	MOVQ outp-72(SP), AX
	MOVQ lop-80(SP), CX
	HMERGE(0, 0)
	HMERGE(16, 8)
	HMERGE(32, 16)
	HMERGE(48, 24)
	ADDQ $64, outp-72(SP)
	ADDQ $32, lop-80(SP)
	DECQ cnt-88(SP)
	JNZ hloop

hdone:
	MOVQ R8, 0(R13)
	MOVQ BX, 8(R13)
	MOVQ R9, 40(R13)
	MOVQ DX, 48(R13)
	MOVQ R10, 80(R13)
	MOVQ SI, 88(R13)
	MOVQ R11, 120(R13)
	MOVQ DI, 128(R13)
	MOVQ iters+32(FP), AX
	SUBQ cnt-88(SP), AX
	MOVQ AX, done+40(FP)
	RET
