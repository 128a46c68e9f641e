# Sourced by the image scripts (which set here, their folder): ENGINE is the container engine to use, docker when its daemon
# answers, else podman; CONTAINER_ENGINE overrides. For podman, the project's containers.conf
# when runc is installed and no CONTAINERS_CONF is set.
if [ -n "${CONTAINER_ENGINE:-}" ]; then
    ENGINE=$CONTAINER_ENGINE
elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    ENGINE=docker
elif command -v podman >/dev/null 2>&1; then
    ENGINE=podman
else
    echo "no container engine: install docker or podman (Debian: apt-get install podman runc)" >&2
    exit 2
fi
if [ "$ENGINE" = podman ] && [ -z "${CONTAINERS_CONF:-}" ] && command -v runc >/dev/null 2>&1; then
    CONTAINERS_CONF="$here/containers.conf"
    export CONTAINERS_CONF
fi
