# Shared by the scripts: find Python 3.13 and keep the project venv (.venv) up to date.
# Source it; it defines ROOT, VENV and ensure_venv.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MAJORDOME_VENV:-$ROOT/.venv}"

_log() { echo "majordome: $*" >&2; }

find_python313() {
    local candidate
    for candidate in "$(command -v python3.13 || true)" /root/.pyenv/versions/3.13.0/bin/python3.13; do
        [[ -n "$candidate" && -x "$candidate" ]] || continue
        if "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    _log "Python 3.13 is required (Home Assistant 2025.4): install it, e.g. with pyenv."
    return 1
}

# The venv's requirements: Home Assistant 2025.4's lane, unless scripts/newest runs us in
# another lane (it sets both MAJORDOME_VENV and MAJORDOME_REQUIREMENTS).
REQUIREMENTS="${MAJORDOME_REQUIREMENTS:-$ROOT/requirements_test.txt}"

# Create the venv and install its requirements, again only when that file changed.
ensure_venv() {
    local stamp="$VENV/.majordome-requirements" want
    want="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)"
    if [[ -x "$VENV/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        return 0
    fi
    if [[ ! -x "$VENV/bin/python" ]]; then
        local python
        python="$(find_python313)" || return 1
        _log "creating $VENV (first run: Home Assistant installs in a few minutes)"
        "$python" -m venv "$VENV"
    fi
    "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2
    "$VENV/bin/python" -m pip install --quiet -r "$REQUIREMENTS" >&2
    echo "$want" > "$stamp"
}

# Serialise the setup scripts per cache: two test runs starting at once must not
# install into the same venv together. Without flock(1), run unlocked.
lock_cache() {
    local cache="$1" name="$2"
    mkdir -p "$cache"
    command -v flock >/dev/null || return 0
    exec 9>"$cache/.$name.lock"
    flock 9
}

# A Python >= 3.14.2 on the host (Home Assistant 2026.11's minimum), if there is one.
host_python314() {
    local candidate
    for candidate in python3.14 python3; do
        candidate="$(command -v "$candidate" || true)"
        [[ -n "$candidate" ]] || continue
        if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 14, 2))' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

# Whether scripts/newest can run here: a Python >= 3.14.2 on the host, or root to make one.
newest_available() {
    host_python314 >/dev/null || [[ "$(id -u)" -eq 0 ]]
}
