#!/usr/bin/env bash
# The container image's steps, run outside Docker (this machine has no Docker engine), and
# what must hold of the result. The steps are read from the Dockerfile itself
# (deploy/dockerfile_steps.py), with every absolute path moved under a temporary root:
#
#   1. the build context as .dockerignore leaves it (no .git: the commit comes from
#      EVENTIDE_GIT_COMMIT, as `docker build --build-arg` passes it), copied to ROOT/build/src;
#   2. the build stage's RUN, as written (`cargo install --locked --path . --root ...`),
#      in its WORKDIR;
#   3. the image: COPY --from=build of the binary to ROOT/image/usr/local/bin, the data
#      directory (what the image's RUN makes; no user is added to this machine), its ENV,
#      and, when this runs as root, its USER's uid and gid (setpriv) for everything below;
#   4. ENTRYPOINT + CMD started in its WORKDIR with that ENV (on a free port instead of 8080,
#      which another server may hold) and a first key made by deploy/bootstrap-key.sh as the
#      compose files do; then: the HEALTHCHECK command exits 0, `--version` names the commit,
#      a request with the key is answered and one without is refused, SIGTERM stops the
#      server with 0, and the HEALTHCHECK command then exits 1.
#
# Usage: deploy/check-image-steps.sh [--debug]
#   --debug   `cargo install --debug` (the dev profile): the same steps, a faster build
# Environment: CHECK_IMAGE_TARGET_DIR: a directory to keep the build's target in between runs
#   (the Dockerfile's cache mount); KEEP_ROOT=1 keeps the temporary root.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

debug=false
case "${1:-}" in
    --debug) debug=true ;;
    "") ;;
    *) echo "usage: $0 [--debug]" >&2; exit 2 ;;
esac

root=$(mktemp -d "${TMPDIR:-/tmp}/eventide-image.XXXXXX")
chmod 0755 "$root"
server_pid=
cleanup() {
    if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill -KILL "$server_pid" 2>/dev/null || true
    fi
    if [[ ${KEEP_ROOT:-} == 1 ]]; then
        echo "kept $root"
    else
        rm -rf "$root"
    fi
}
trap cleanup EXIT
fail() {
    echo "FAILED: $*" >&2
    if [[ -f $root/server.log ]]; then
        echo "--- the server's output:" >&2
        tail -n 40 "$root/server.log" >&2
    fi
    exit 1
}
step() { echo "== $*"; }

eval "$(python3 deploy/dockerfile_steps.py steps Dockerfile "$root")"

step "1. the build context (.dockerignore) into $BUILD_WORKDIR"
mkdir -p "$BUILD_WORKDIR"
files=$(python3 deploy/dockerfile_steps.py context Dockerfile "$repo" "$BUILD_WORKDIR")
echo "$files files"
[[ ! -e $BUILD_WORKDIR/.git ]] || fail "the build context holds .git"
[[ ! -e $BUILD_WORKDIR/target ]] || fail "the build context holds target/"
commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)

step "2. the build stage's RUN (EVENTIDE_GIT_COMMIT=$commit)"
if [[ -n ${CHECK_IMAGE_TARGET_DIR:-} ]]; then
    # The Dockerfile's cache mount of the target directory.
    mkdir -p "$CHECK_IMAGE_TARGET_DIR"
    ln -s "$(realpath "$CHECK_IMAGE_TARGET_DIR")" "$BUILD_WORKDIR/target"
fi
for command in "${BUILD_RUN[@]}"; do
    if $debug; then
        command="$command --debug"
    fi
    echo "\$ $command"
    started=$SECONDS
    (cd "$BUILD_WORKDIR" && EVENTIDE_GIT_COMMIT=$commit nice -n 19 bash -c "$command") ||
        fail "the build step failed"
    echo "built in $((SECONDS - started)) s"
done

step "3. the image: the binary, the data directory, ENV, USER $RUNTIME_USER"
mkdir -p "$(dirname "$RUNTIME_COPY_TO")" "$RUNTIME_VOLUME" "$RUNTIME_WORKDIR" "$root/keys"
cp "$RUNTIME_COPY_FROM" "$RUNTIME_COPY_TO"
chmod 0755 "$root/image" "$root/image/usr" "$root/image/usr/local" "$root/image/usr/local/bin"
as_user=()
owner=$(id -u)
if [[ $(id -u) == 0 ]]; then
    uid=${RUNTIME_USER%%:*}
    gid=${RUNTIME_USER#*:}
    as_user=(setpriv --reuid="$uid" --regid="$gid" --clear-groups --no-new-privs)
    owner=$uid
    chown "$uid:$gid" "$RUNTIME_VOLUME"
else
    echo "(not root: the server runs as $(id -un), not as the image's USER)"
fi
chmod 0700 "$RUNTIME_VOLUME"
deploy/bootstrap-key.sh "$root/keys/admin-key" "$owner"
chmod 0755 "$root/keys"
key=$(cat "$root/keys/admin-key")
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
environment=(
    env -i "PATH=$(dirname "$RUNTIME_COPY_TO"):/usr/sbin:/usr/bin:/sbin:/bin" "HOME=$RUNTIME_WORKDIR"
)
for pair in "${RUNTIME_ENV[@]}"; do
    if [[ $pair == EVENTIDE_ADDR=* ]]; then
        pair="${pair%:*}:$port"
    fi
    environment+=("$pair")
done
in_image() { (cd "$RUNTIME_WORKDIR" && "${as_user[@]}" "${environment[@]}" "$@"); }
http_status() { # URL [KEY]: the status of a GET
    python3 - "$@" <<'EOF'
import sys, urllib.request, urllib.error
request = urllib.request.Request(sys.argv[1])
if len(sys.argv) > 2:
    request.add_header("Authorization", "Bearer " + sys.argv[2])
try:
    print(urllib.request.urlopen(request, timeout=10).status)
except urllib.error.HTTPError as error:
    print(error.code)
EOF
}

version=$(in_image "${RUNTIME_ENTRYPOINT[@]}" --version)
echo "$version"
[[ $version == "eventide "*"(commit $commit)" ]] || fail "--version does not name commit $commit"

step "4. ${RUNTIME_ENTRYPOINT[*]} ${RUNTIME_CMD[*]} (port $port), the HEALTHCHECK ${RUNTIME_HEALTHCHECK[*]}"
# exec: the process started is the server itself, which the SIGTERM below reaches.
(cd "$RUNTIME_WORKDIR" && exec "${as_user[@]}" "${environment[@]}" \
    EVENTIDE_BOOTSTRAP_KEY_FILE="$root/keys/admin-key" \
    "${RUNTIME_ENTRYPOINT[@]}" "${RUNTIME_CMD[@]}") >"$root/server.log" 2>&1 &
server_pid=$!
healthy=false
for _ in $(seq 60); do
    if in_image "${RUNTIME_HEALTHCHECK[@]}" >/dev/null 2>&1; then
        healthy=true
        break
    fi
    kill -0 "$server_pid" 2>/dev/null || fail "the server exited"
    sleep 0.5
done
$healthy || fail "the HEALTHCHECK command did not pass within 30 s"
in_image "${RUNTIME_HEALTHCHECK[@]}" --ready || fail "health --ready"
base=http://127.0.0.1:$port
[[ $(http_status "$base/events?limit=1" "$key") == 200 ]] || fail "GET /events with the bootstrap key"
[[ $(http_status "$base/events?limit=1") == 401 ]] || fail "GET /events without a key is not refused"
echo "answered: /health 200, /events 200 with the key, 401 without"
if [[ $(id -u) == 0 ]]; then
    owners=$(find "$RUNTIME_VOLUME" -mindepth 1 -printf '%u\n' | sort -u | tr '\n' ' ')
    [[ $owners == "${RUNTIME_USER%%:*} " ]] || fail "files in the data directory owned by: $owners"
    echo "the data directory's files belong to uid ${RUNTIME_USER%%:*}"
fi

step "SIGTERM"
kill -TERM "$server_pid"
status=0
wait "$server_pid" || status=$?
server_pid=
[[ $status == 0 ]] || fail "the server exited with $status after SIGTERM"
status=0
in_image "${RUNTIME_HEALTHCHECK[@]}" 2>/dev/null || status=$?
[[ $status == 1 ]] || fail "the HEALTHCHECK command exited $status with the server down (not 1)"
echo "stopped with 0; the HEALTHCHECK command then exits 1"
echo "check-image-steps: all passed"
