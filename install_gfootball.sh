#!/usr/bin/env bash
# Install Google Research Football (gfootball 2.10.2) for a2po_grf.py.
# Idempotent: does nothing when `import gfootball` already works. Non-interactive, fails loudly.
# The PyPI sdist compiles a C++ engine (~9 minutes on 2 cores); it needs the Debian packages below.
set -euo pipefail
PY="${PYTHON:-python}"
if "$PY" -c "import gfootball.env" >/dev/null 2>&1; then
  echo "gfootball already installed: $("$PY" -c 'import gfootball, os; print(os.path.dirname(gfootball.__file__))')"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends cmake build-essential libgl1-mesa-dev libsdl2-dev \
  libsdl2-image-dev libsdl2-ttf-dev libsdl2-gfx-dev libboost-all-dev libdirectfb-dev
"$PY" -m pip install psutil six wheel setuptools
# --no-build-isolation: the build imports psutil; nice: the compile is long and the machine is shared.
nice -n 19 "$PY" -m pip install --no-build-isolation gfootball==2.10.2
"$PY" -c "import gfootball.env; print('gfootball installed OK')"
