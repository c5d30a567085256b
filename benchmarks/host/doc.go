// Package host describes the machine a benchmark ran on: CPU model and
// cores, memory, the disk and file system under a directory, and the GPU
// (through NVML, package cgo/nvmlinfo, when a driver is found). Every
// result of `kvtier bench tiers` and `kvtier bench load` carries one, so a
// figure is never read without the machine that produced it.
//
// Caveats: the CPU, memory and disk fields come from /proc and /sys on
// Linux and are left empty elsewhere; an unknown field is empty, never
// guessed. On a virtual machine the disk model is whatever the hypervisor
// reports. The GPU is described only when NVML loads (cgo builds with an
// NVIDIA driver); Describe never fails because of a missing GPU.
package host
