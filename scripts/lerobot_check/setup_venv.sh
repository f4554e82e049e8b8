#!/usr/bin/env bash
# Build (or reuse) the separate venv that holds LeRobot's own v3.0 dataset reader, used by
# src/clap_train/test/test_data_lerobot_reader.py to check that our converter's output is
# readable by LeRobot itself. Prints the venv's path on its last line.
#
# Why a separate venv: lerobot 0.4.4 pins torch<2.11 and torchvision, which cannot sit beside the
# project's torch 2.13 CPU. So it is installed with --no-deps plus the packages its dataset reader
# needs, torch pinned to the project's 2.13.0 (the CPU wheel the machines carry; facts:
# shared/notes/style.md). ~1.5 GB, a minute or two. Outside the repository by default, so nothing
# of it reaches git; CLAP_LEROBOT_VENV chooses another place.
set -euo pipefail
VENV="${CLAP_LEROBOT_VENV:-$HOME/.cache/clap/venv-lerobot}"
STAMP="$VENV/.clap-lerobot-ready"
INSTALLED="$VENV/.clap-lerobot-installed"
if [[ ! -f "$INSTALLED" ]]; then
  mkdir -p "$(dirname "$VENV")"
  python3.11 -m venv "$VENV"
  PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
  "${PIP[@]}" "torch==2.13.0" 2>&1 | grep -v 'is ignored' || true
  "${PIP[@]}" --no-deps "lerobot==0.4.4"
  "${PIP[@]}" "torch==2.13.0" "datasets==4.8.5" "huggingface-hub==0.35.3" accelerate "av==15.1.0" pillow \
    "torchcodec==0.13.0" pyarrow pandas jsonlines packaging "draccus==0.10.0" einops termcolor imageio \
    deepdiff pyyaml 2>&1 | grep -v -E 'is ignored|requires|incompatible' || true
  touch "$INSTALLED"
fi
# torchcodec dlopens FFmpeg by its plain sonames; PyAV's wheel carries FFmpeg 7 under hashed
# names. Link the plain names to them, and every other library of the wheel under its own name
# (FFmpeg's libraries find their dependencies, e.g. libdrm-<hash>, through $ORIGIN, which is
# the folder of the link). LD_LIBRARY_PATH is set to this folder by the check. Cheap: redone
# on every call, so a folder from an older version of this script is replaced.
LIBS="$VENV/ffmpeg-libs"
AVLIBS="$VENV/lib/python3.11/site-packages/av.libs"
rm -rf "$LIBS.tmp" && mkdir -p "$LIBS.tmp"
for f in "$AVLIBS"/*.so*; do
  ln -sf "$f" "$LIBS.tmp/$(basename "$f")"
done
for f in "$AVLIBS"/lib{avcodec,avdevice,avfilter,avformat,avutil,swresample,swscale}-*.so.*; do
  base="$(basename "$f")"; name="${base%%-*}"; rest="${base#*.so.}"; major="${rest%%.*}"
  ln -sf "$f" "$LIBS.tmp/$name.so.$major"
done
rm -rf "$LIBS" && mv "$LIBS.tmp" "$LIBS"
# The check runs after the links exist: torchcodec loads FFmpeg when it is imported.
if [[ ! -f "$STAMP" ]]; then
  LD_LIBRARY_PATH="$LIBS" "$VENV/bin/python" -c \
    "import torch, datasets, torchcodec, av, pandas; assert torch.__version__.startswith('2.13.0')"
  touch "$STAMP"
fi
echo "$VENV"
