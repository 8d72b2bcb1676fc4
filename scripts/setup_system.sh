#!/usr/bin/env bash
# Installs the Debian packages the project needs, only those that are missing.
# Usage: scripts/setup_system.sh [--test]   (--test adds what the test suite needs: chromium)
set -euo pipefail

# festival + festvox-*: the corpus's heldout_synth split (models/corpus/festival.py); these three
# are Debian's English voices.
# flite (with libflite1): the corpus's second training engine (models/corpus/flite.py).
want=(espeak-ng libespeak-ng1 libportaudio2 libasound2 sox python3-venv python3-dev
      festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts flite)
if [[ "${1:-}" == "--test" ]]; then
    want+=(chromium fonts-dejavu-core alsa-utils)
fi

missing=()
for pkg in "${want[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done

if ((${#missing[@]} == 0)); then
    exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
    SUDO=sudo
else
    SUDO=
fi
echo "setup: installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
