#!/usr/bin/env bash
# The test command (README, "Tests"): `cargo test --workspace`, with any extra arguments.
#
# Beyond Rust and a C/C++ compiler, building the Kafka bridge needs CMake: the
# cloudevents-sdk Kafka binding builds librdkafka from its bundled sources with it. When
# `cmake` is missing, it is installed for this user from PyPI (no root needed).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cmake >/dev/null 2>&1; then
  echo "cmake not found: installing it from PyPI (python3 -m pip install --user cmake)" >&2
  python3 -m pip install --user --quiet --disable-pip-version-check 'cmake>=3.18,<4' \
    || python3 -m pip install --quiet --disable-pip-version-check 'cmake>=3.18,<4'
  PATH="$(python3 -m site --user-base)/bin:$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
  export PATH
  cmake --version | head -1
fi

exec cargo test --workspace "$@"
