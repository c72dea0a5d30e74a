# Shared helpers for the provisioning scripts: paths, timed steps, one-line failures.
# Sourced, not run.

# Versions (why these: ci/README.md).
DAGGER_VERSION=v0.18.19
DAGGER_ZIP_SHA256=8b3943e7ac2b8327c4f01e43241682c873651736e426189f94605860e7035de9
DAGGER_GO_SDK_ZIP_SHA256=c95aa47fe872fe064511e11cf9ae8f116c73d422600d73654322712dd1b4a00d

CI_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$CI_DIR")
# Machine-local, kept across runs: binaries and images cached by version or recipe hash.
CACHE_DIR=${VLLM_CI_CACHE:-/var/cache/vllm-ci}
# This run's state: engine state, registry storage, logs, pids.
STATE_DIR=${VLLM_CI_STATE:-/var/lib/vllm-ci}
LOG_DIR=$STATE_DIR/logs
REGISTRY_ADDR=${VLLM_CI_REGISTRY:-127.0.0.1:5000}
REGISTRY_ADDR=${REGISTRY_ADDR%%/*}
ENGINE_SOCK=${VLLM_CI_ENGINE_SOCK:-/run/dagger/engine.sock}  # another for a second engine (tests)

export _EXPERIMENTAL_DAGGER_RUNNER_HOST=unix://$ENGINE_SOCK
export _EXPERIMENTAL_DAGGER_CLI_BIN=/usr/local/bin/dagger
export DAGGER_NO_UPDATE_CHECK=1 DO_NOT_TRACK=1

mkdir -p "$CACHE_DIR" "$LOG_DIR"

# step NAME CMD...: run CMD with its output in $LOG_DIR/NAME.log, say how long it took,
# and on failure print one line naming the step and the log to read.
step() {
    local name=$1; shift
    local log=$LOG_DIR/$name.log start=$SECONDS
    echo "--- $name"
    if "$@" >"$log" 2>&1; then
        echo "    ok: $name ($((SECONDS - start)) s)"
        # A step tells its caller what it had to repair on lines starting with "notice:".
        grep '^notice:' "$log" | sed 's/^/    /' || true
    else
        local rc=$?
        tail -n 15 "$log" | sed 's/^/    | /' >&2
        echo "ci: step '$name' failed (exit $rc); read $log" >&2
        exit 1
    fi
}

# goproxy: the first entry of the Go toolchain's own proxy setting.
goproxy() { go env GOPROXY | cut -d, -f1; }

# fetch_verified URL FILE SHA256: download once and check the pinned hash.
fetch_verified() {
    local url=$1 file=$2 want=$3
    if [ ! -f "$file" ] || ! echo "$want  $file" | sha256sum -c --quiet - >/dev/null 2>&1; then
        curl -fsSL --retry 3 -o "$file.part" "$url"
        mv "$file.part" "$file"
    fi
    echo "$want  $file" | sha256sum -c --quiet - || { echo "hash mismatch for $url" >&2; return 1; }
}

# engine_ready: a client call answers (a socket file alone is not readiness).
engine_ready() { [ -S "$ENGINE_SOCK" ] && timeout 20 /usr/local/bin/dagger core version --silent 2>/dev/null | grep -q "$DAGGER_VERSION"; }
