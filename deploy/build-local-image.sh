#!/usr/bin/env bash
# Build deploy/Dockerfile with podman on a machine with no registry, run the container, check it.
#
#   deploy/build-local-image.sh          the CPU image: build, run on a free port, check, stop
#   deploy/build-local-image.sh cuda     deploy/Dockerfile.cuda up to its torch install (--target torch)
#
# Why this way (../shared/notes/containers.md has the measurements):
# - no registry is reachable, so the base image is a Debian bookworm rootfs made with debootstrap
#   from the machine's own apt mirror and imported (made once: skipped when it exists);
# - the default OCI runtime (crun) fails on these hosts' cgroups, so builds use chroot isolation
#   and the container runs with runc and cgroupfs, on the host network;
# - pip inside the build reaches PyPI with the host's certificates; torch comes from the host's
#   wheel folder (TORCH_FIND_LINKS), since download.pytorch.org is not reachable.
# - the build context is the committed tree (git archive HEAD), not the working tree: a working
#   tree shared by several people may hold half-made edits; SOURCE=worktree builds the files as
#   they are. The Dockerfiles themselves are read from the working tree.
# Environment: BASE_IMAGE, IMAGE, TORCH_INDEX, TORCH_FIND_LINKS, SOURCE=head|worktree,
# KEEP_IMAGE=1 (keep the built image).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
MODE=${1:-cpu}
BASE_IMAGE=${BASE_IMAGE:-localhost/debian-py:bookworm}
TORCH_INDEX=${TORCH_INDEX:-https://pypi.org/simple}
# the host's CPU torch wheel for the CPU image; the CUDA check takes PyPI's torch (a CUDA build)
if [[ $MODE == cuda ]]; then TORCH_FIND_LINKS=${TORCH_FIND_LINKS-}; else TORCH_FIND_LINKS=${TORCH_FIND_LINKS-/opt/wheels}; fi
SOURCE=${SOURCE:-head}
NICE=(nice -n 10)
LIMITS=(--ulimit nofile=1024:1024 --ulimit nproc=4096:4096)
PODMAN_RUN=(podman --runtime runc --cgroup-manager=cgroupfs)

log() { printf '[build-local-image] %s\n' "$*" >&2; }
now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }

install_tools() {
    local missing=()
    for tool in podman runc debootstrap; do
        command -v "$tool" >/dev/null || missing+=("$tool")
    done
    if ((${#missing[@]})); then
        log "installing ${missing[*]} (apt-get)"
        "${NICE[@]}" apt-get update -q >&2
        DEBIAN_FRONTEND=noninteractive "${NICE[@]}" apt-get install -y -q podman runc debootstrap >&2
    fi
}

make_base() {
    if podman image exists "$BASE_IMAGE"; then
        log "base image $BASE_IMAGE exists: kept"
        return
    fi
    local mirror rootfs t0
    mirror=$(grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' \
             | grep -v security | head -n 1)
    mirror=${mirror:-http://deb.debian.org/debian}
    rootfs=$(mktemp -d /var/tmp/codeassist-rootfs.XXXXXX)
    t0=$(now)
    log "making $BASE_IMAGE with debootstrap from $mirror"
    "${NICE[@]}" debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$rootfs" "$mirror" >&2
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | "${NICE[@]}" podman import - "$BASE_IMAGE" >&2
    rm -rf "$rootfs"
    log "base image made in $(since "$t0") s"
}

CONTEXT=
cleanup() {
    if [[ -n ${CONTAINER:-} ]]; then
        "${PODMAN_RUN[@]}" rm -f "$CONTAINER" >/dev/null 2>&1 || true
    fi
    [[ -n ${KEYS:-} ]] && rm -rf "$KEYS"
    [[ -n $CONTEXT ]] && rm -rf "$CONTEXT"
    return 0
}
trap cleanup EXIT

make_context() {  # BUILD_CONTEXT: HEAD's files, or the working tree itself
    if [[ $SOURCE == worktree ]]; then
        BUILD_CONTEXT=$ROOT
        return
    fi
    [[ -n $CONTEXT ]] || CONTEXT=$(mktemp -d /var/tmp/codeassist-context.XXXXXX)
    git -C "$ROOT" archive --format=tar HEAD | tar -x -C "$CONTEXT"
    log "build context: HEAD $(git -C "$ROOT" rev-parse --short HEAD)"
    BUILD_CONTEXT=$CONTEXT
}

build() {  # build DOCKERFILE TAG [extra podman build args...]
    local dockerfile=$1 tag=$2 t0
    shift 2
    make_context
    t0=$(now)
    local mounts=(-v /etc/ssl/certs:/etc/ssl/certs:ro)
    [[ -f /etc/pip.conf ]] && mounts+=(-v /etc/pip.conf:/etc/pip.conf:ro)
    [[ -n $TORCH_FIND_LINKS && -d $TORCH_FIND_LINKS ]] && mounts+=(-v "$TORCH_FIND_LINKS:$TORCH_FIND_LINKS:ro")
    log "building $tag from $dockerfile"
    # --layers=false: no per-instruction cache images left behind (disk is short here);
    # --format docker: the OCI format drops HEALTHCHECK
    "${NICE[@]}" podman build --isolation chroot --layers=false --format docker "${LIMITS[@]}" "${mounts[@]}" \
        --build-arg BASE="$BASE_IMAGE" --build-arg TORCH_INDEX="$TORCH_INDEX" \
        --build-arg TORCH_FIND_LINKS="$TORCH_FIND_LINKS" \
        -f "$ROOT/$dockerfile" -t "$tag" "$@" "$BUILD_CONTEXT" >&2
    echo "build_seconds $tag $(since "$t0")"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

run_and_check() {
    local image=$1 port key t0 body status url
    port=$(free_port)
    key=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')
    KEYS=$(mktemp -d /var/tmp/codeassist-keys.XXXXXX)
    printf '%s\n' "$key" >"$KEYS/api-keys"
    chmod 755 "$KEYS" && chmod 644 "$KEYS/api-keys"  # the container's user (10001) reads it
    CONTAINER=codeassist-check-$port
    # the image's own entrypoint, on a free loopback port of the host network
    # (podman logs that it cannot reach systemd for the image's HEALTHCHECK timer: harmless here)
    "${PODMAN_RUN[@]}" run -d --name "$CONTAINER" --network host "${LIMITS[@]}" \
        -v "$KEYS:/run/secrets/codeassist:ro" -e CODEASSIST_PORT="$port" "$image" \
        --host 127.0.0.1 --port "$port" --api-key-file /run/secrets/codeassist/api-keys >/dev/null
    t0=$(now)
    url=http://127.0.0.1:$port
    body=
    for _ in $(seq 240); do  # up to 2 minutes for the model to load
        body=$(curl -s --max-time 2 "$url/health" || true)
        [[ $body == *'"model_loaded":true'* ]] && break
        [[ $("${PODMAN_RUN[@]}" inspect -f '{{.State.Running}}' "$CONTAINER") == true ]] || break
        sleep 0.5
    done
    echo "health $body"
    if [[ $body != *'"model_loaded":true'* ]]; then
        log "the server did not become healthy; its log:"
        "${PODMAN_RUN[@]}" logs "$CONTAINER" 2>&1 | tail -n 30 >&2 || true
        return 1
    fi
    echo "ready_seconds $(since "$t0")"
    # the image's own HEALTHCHECK, run once (podman schedules it with systemd timers, absent here)
    echo "healthcheck $("${PODMAN_RUN[@]}" healthcheck run "$CONTAINER" 2>/dev/null && echo healthy || echo unhealthy)"
    body=$(curl -s --max-time 30 -w '\n%{http_code}' "$url/complete" -H "Authorization: Bearer $key" \
           -H 'Content-Type: application/json' -d '{"code": "def fibonacci(n):", "max_tokens": 16}')
    status=${body##*$'\n'}
    echo "complete $status ${body%$'\n'*}"
    [[ $status == 200 && $body == *'"completion":'* ]] || return 1
    status=$(curl -s --max-time 10 -o /dev/null -w '%{http_code}' "$url/complete" \
             -H 'Content-Type: application/json' -d '{"code": "def f(n):", "max_tokens": 4}')
    echo "no_key $status"
    [[ $status == 401 ]] || return 1
    "${PODMAN_RUN[@]}" stop -t 10 "$CONTAINER" >/dev/null
    echo "exit_code $("${PODMAN_RUN[@]}" inspect -f '{{.State.ExitCode}}' "$CONTAINER")"
    "${PODMAN_RUN[@]}" rm "$CONTAINER" >/dev/null
    echo "stopped $CONTAINER"
    CONTAINER=
}

install_tools
make_base
case $MODE in
    cpu)
        IMAGE=${IMAGE:-localhost/codeassist:cpu-check}
        build deploy/Dockerfile "$IMAGE"
        run_and_check "$IMAGE"
        [[ ${KEEP_IMAGE:-0} == 1 ]] || podman rmi -f "$IMAGE" >/dev/null
        ;;
    cuda)
        IMAGE=${IMAGE:-localhost/codeassist:cuda-torch-check}
        build deploy/Dockerfile.cuda "$IMAGE" --target torch
        podman run --rm --runtime runc --cgroup-manager=cgroupfs --network host "${LIMITS[@]}" "$IMAGE" \
            python -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
        [[ ${KEEP_IMAGE:-0} == 1 ]] || podman rmi -f "$IMAGE" >/dev/null
        ;;
    *)
        log "unknown mode $MODE: use cpu or cuda"
        exit 2
        ;;
esac
echo "ok $MODE"
