# Shared set-up for scripts/test and scripts/demo (sourced, not run).
#
#   mw_setup_python    .venv with `pip install -e .[dev]`; skipped when pyproject.toml has not
#                      changed since the last install (hash kept in .venv/.machinewatch-installed)
#   mw_setup_servers   Debian packages mosquitto, victoria-metrics, influxdb (and faketime, for
#                      the wall-clock-jump test) when their binaries are missing; the servers'
#                      system services are kept stopped and disabled, because the tests start
#                      their own instances on free loopback ports
#
# Sets MW_ROOT (the repository), MW_VENV and MW_PY (the venv's python).
# Environment: PYTHON (interpreter for a new venv), MACHINEWATCH_VENV (venv path).

MW_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MW_VENV="${MACHINEWATCH_VENV:-$MW_ROOT/.venv}"
MW_PY="$MW_VENV/bin/python"
MW_STAMP="$MW_VENV/.machinewatch-installed"

mw_say() { printf '==> %s\n' "$*" >&2; }
mw_die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- privileges and apt

MW_APT_UPDATED=""

mw_as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        if [ -t 0 ]; then sudo "$@"; else sudo -n "$@"; fi
    else
        mw_die "need root to run: $* (not root, and sudo is not installed)"
    fi
}

# Install Debian packages without letting their services start (policy-rc.d answers 101 "action
# forbidden" to invoke-rc.d and deb-systemd-invoke), then make sure the services stay off.
mw_apt_install() {
    command -v apt-get >/dev/null 2>&1 \
        || mw_die "apt-get not found: install these packages by hand: $*"
    local policy=/usr/sbin/policy-rc.d created_policy=""
    if [ ! -e "$policy" ]; then
        mw_as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
        created_policy=1
    fi
    local status=0
    {
        if [ -z "$MW_APT_UPDATED" ]; then
            mw_say "apt-get update"
            mw_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
            MW_APT_UPDATED=1
        fi
        mw_say "apt-get install $*"
        mw_as_root env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -q --no-install-recommends "$@"
    } || status=$?
    if [ -n "$created_policy" ]; then
        mw_as_root rm -f "$policy"
    fi
    return "$status"
}

# Stop and disable a system service if it exists; the tests never use system instances.
mw_service_off() {
    local unit=$1
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        mw_as_root systemctl disable --now "$unit" >/dev/null 2>&1 || true
    elif [ -x "/etc/init.d/$unit" ]; then
        mw_as_root "/etc/init.d/$unit" stop >/dev/null 2>&1 || true
        if command -v update-rc.d >/dev/null 2>&1; then
            mw_as_root update-rc.d "$unit" disable >/dev/null 2>&1 || true
        fi
    fi
}

# ---------------------------------------------------------------- python

mw_find_python() {
    local candidate
    for candidate in "${PYTHON:-}" python3 python3.13 python3.12 python3.11; do
        [ -n "$candidate" ] || continue
        command -v "$candidate" >/dev/null 2>&1 || continue
        if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

mw_create_venv() {
    local python
    python="$(mw_find_python)" || mw_die "Python 3.11 or newer is required (set PYTHON=...)"
    mw_say "creating $MW_VENV with $python"
    if ! "$python" -m venv --clear "$MW_VENV" 2>/dev/null; then
        # Debian ships venv/ensurepip separately (python3-venv, python3.X-venv).
        local minor
        minor="$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
        mw_apt_install python3-venv "python$minor-venv"
        "$python" -m venv --clear "$MW_VENV"
    fi
}

mw_install_hash() {
    # pyproject.toml decides dependencies, entry points and package layout; the python version
    # is part of the key so a rebuilt venv always reinstalls.
    { cat "$MW_ROOT/pyproject.toml"; "$MW_PY" -V 2>&1; } | sha256sum | cut -d' ' -f1
}

mw_setup_python() {
    # A venv whose interpreter is gone (moved repo, removed Python) is rebuilt from scratch.
    if ! "$MW_PY" -c '' 2>/dev/null; then
        mw_create_venv
    fi
    local want
    want="$(mw_install_hash)"
    if [ -f "$MW_STAMP" ] && [ "$(cat "$MW_STAMP")" = "$want" ] \
        && "$MW_PY" -c 'import importlib.metadata as m; m.version("machinewatch")' 2>/dev/null; then
        return 0
    fi
    mw_say "pip install -e .[dev] into $MW_VENV (the first run downloads numba, scipy, ...)"
    local started=$SECONDS
    "$MW_PY" -m pip install --quiet --disable-pip-version-check --progress-bar off \
        -e "$MW_ROOT[dev]"
    echo "$want" >"$MW_STAMP"
    mw_say "installed in $((SECONDS - started)) s"
}

# ---------------------------------------------------------------- test servers

# binary name : Debian package : service name
MW_SERVERS=(
    "mosquitto:mosquitto:mosquitto"
    "victoria-metrics:victoria-metrics:victoria-metrics"
    "influxd:influxdb:influxdb"
    "faketime:faketime:faketime"
)

mw_has_binary() {
    command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]
}

mw_setup_servers() {
    local entry binary package service missing=() services=()
    for entry in "${MW_SERVERS[@]}"; do
        IFS=: read -r binary package service <<<"$entry"
        if ! mw_has_binary "$binary"; then
            missing+=("$package")
            services+=("$service")
        fi
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    mw_say "test servers missing: ${missing[*]}"
    mw_apt_install "${missing[@]}" \
        || mw_die "could not install ${missing[*]}; install them, or run with MACHINEWATCH_REQUIRE_SERVERS=0 to skip the server tests"
    for service in "${services[@]}"; do
        mw_service_off "$service"
    done
    for entry in "${MW_SERVERS[@]}"; do
        IFS=: read -r binary package service <<<"$entry"
        mw_has_binary "$binary" || mw_die "$package installed but $binary not found"
    done
}
