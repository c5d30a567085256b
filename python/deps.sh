#!/usr/bin/env bash
# Installs the Debian packages the Python client's tests need, when missing
# (make py-deps). Debian's own python3 is used: /usr/bin/python3.
set -euo pipefail
py=${PY:-/usr/bin/python3}
pkgs=(python3 python3-grpcio python3-protobuf python3-numpy python3-torch python3-pytest python3-cbor2
	python3-xxhash protobuf-compiler protobuf-compiler-grpc)
if [[ -x $py ]] && command -v protoc >/dev/null && command -v grpc_python_plugin >/dev/null &&
	"$py" -c 'import grpc, google.protobuf, numpy, torch, pytest, cbor2, xxhash' 2>/dev/null; then
	exit 0
fi
echo "py-deps: installing ${pkgs[*]}" >&2
sudo=""
if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${pkgs[@]}"
