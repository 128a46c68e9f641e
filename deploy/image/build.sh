#!/bin/sh
# Builds the project's image (the Dockerfile at the root) with docker or podman.
#
#   deploy/image/build.sh            (make image; IMAGE, BASE_IMAGE and ORACLE_INSTANT_CLIENT_URL
#                                     from the environment)
#
# BASE_IMAGE unset: python:3.11-slim-bookworm; where it is neither on the machine nor can be pulled,
# the stand-in from Debian's packages (base-image.sh), built first if missing. Where the machine
# trusts certificate authorities of its own (/usr/local/share/ca-certificates: a network that
# inspects TLS), podman's build gets the machine's certificate folder, read-only, so pip inside the
# build trusts what the machine trusts; the image keeps its own.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
. "$here/engine.sh"
image=${IMAGE:-patronload:latest}
official=python:3.11-slim-bookworm
standin=${STANDIN_BASE_IMAGE:-localhost/patronload-base:bookworm}
base=${BASE_IMAGE:-}
if [ -z "$base" ]; then
    if $ENGINE image inspect "$official" >/dev/null 2>&1 || $ENGINE pull -q "$official" >/dev/null 2>&1; then
        base=$official
    else
        echo "$official cannot be pulled here: building on the stand-in $standin" >&2
        $ENGINE image inspect "$standin" >/dev/null 2>&1 || sh "$here/base-image.sh" "$standin"
        base=$standin
    fi
fi
set -- --network host --build-arg "BASE_IMAGE=$base" \
    --build-arg "ORACLE_INSTANT_CLIENT_URL=${ORACLE_INSTANT_CLIENT_URL:-}" -t "$image"
if [ "$ENGINE" = podman ] && ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
    set -- "$@" --volume /etc/ssl/certs:/etc/ssl/certs:ro
fi
started=$(date +%s)
$ENGINE build "$@" .
# What earlier builds left untagged (the replaced image, the build stage): only this project's.
$ENGINE image prune --force --filter label=org.opencontainers.image.title=patronload >/dev/null
echo "built $image on $base with $ENGINE in $(( $(date +%s) - started )) s"
