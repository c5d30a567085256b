// Package scripts holds kvtier's shell scripts (gpu-check.sh, run by
// `make gpu-check`) and the Go tests that run them against stub tools: a
// stub go, nvidia-smi and gpulink, so the script's failure paths are tested
// on a machine without a GPU. There is no Go API here.
package scripts
