#!/bin/sh
# A stand-in for python:3.11-slim-bookworm made from Debian's own packages, for a machine that
# reaches Debian's archive but no registry of base images: bookworm with python3 (3.11), pip and
# venv, Python's EXTERNALLY-MANAGED marker removed and python/pip in /usr/local/bin, as the
# official image has them. Needs mmdebstrap (apt-get install mmdebstrap).
#
#   deploy/image/base-image.sh [TAG]        (make base-image)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
. "$here/engine.sh"
tag=${1:-${STANDIN_BASE_IMAGE:-localhost/patronload-base:bookworm}}
command -v mmdebstrap >/dev/null || { echo "mmdebstrap is needed: apt-get install mmdebstrap" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mmdebstrap --quiet --variant=required --include=python3,python3-pip,python3-venv,ca-certificates \
    --customize-hook='rm -f "$1"/usr/lib/python3.*/EXTERNALLY-MANAGED' \
    --customize-hook='ln -sf /usr/bin/python3 "$1/usr/local/bin/python"; ln -sf /usr/bin/pip3 "$1/usr/local/bin/pip"' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
    bookworm "$work/base.tar"
$ENGINE import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' "$work/base.tar" "$tag" >/dev/null
echo "built $tag (build the project's image on it: make image BASE_IMAGE=$tag)"
