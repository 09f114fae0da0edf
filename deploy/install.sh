#!/bin/sh
# Install Driftless on a machine (VM, bare metal, edge box) as systemd services, from a wheel:
#
#   deploy/install.sh [--wheel FILE] [--prefix DIR] ROLE...        ROLE: registry, reconciler, host
#
# - the wheel (built from this checkout with `pip wheel --no-deps` when --wheel is not given) goes into
#   its own virtual environment, /opt/driftless, and /usr/local/bin/driftless points to its CLI;
# - each ROLE's unit (deploy/systemd/driftless-ROLE.service, hardened: a dedicated user,
#   ProtectSystem=strict, NoNewPrivileges, credentials through LoadCredential) goes to
#   /etc/systemd/system, its dedicated user is made (systemd-sysusers), and /etc/driftless/ROLE.env
#   (settings, not secrets) is written once, never overwritten;
# - nothing is started: put the credentials the unit names in /etc/driftless (deploy/README.md), then
#   `systemctl enable --now driftless-ROLE`.
#
# --prefix DIR installs under DIR instead of / (a staging root: no user is made, systemd is not told);
# tests/test_install.py installs that way and checks the result.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
prefix=""
wheel=""
roles=""
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix=${2:?--prefix needs a directory}; shift 2 ;;
        --wheel) wheel=${2:?--wheel needs a file}; shift 2 ;;
        registry|reconciler|host) roles="$roles $1"; shift ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "error: unknown argument $1 (roles: registry, reconciler, host)" >&2; exit 2 ;;
    esac
done
if [ -z "$roles" ]; then
    echo "usage: $0 [--wheel FILE] [--prefix DIR] ROLE...   (ROLE: registry, reconciler, host)" >&2
    exit 2
fi
if [ -z "$prefix" ] && [ "$(id -u)" != 0 ]; then
    echo "error: installing into / needs root (or give --prefix DIR)" >&2
    exit 1
fi
command -v python3 >/dev/null || { echo "error: python3 (3.11 or newer) is needed: apt-get install python3 python3-venv" >&2; exit 1; }
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || echo "warning: hosts serve through HAProxy (their native data path): apt-get install haproxy, or run them with --data-path python" >&2
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    { echo "error: python3 is $(python3 -V 2>&1); Driftless needs 3.11 or newer" >&2; exit 1; }

opt="$prefix/opt/driftless"
if [ -z "$wheel" ]; then
    out=$(mktemp -d)
    trap 'rm -rf "$out"' EXIT
    echo "install: building the wheel from $(dirname "$here")" >&2
    python3 -m pip wheel -q --no-deps -w "$out" "$(dirname "$here")" >&2
    wheel=$(ls "$out"/driftless-*.whl)
fi
[ -f "$wheel" ] || { echo "error: no wheel at $wheel" >&2; exit 1; }

echo "install: $wheel into $opt" >&2
python3 -m venv "$opt"
"$opt/bin/python" -m pip install -q --upgrade "$wheel" >&2
install -d -m 0755 "$prefix/usr/local/bin"
ln -sf /opt/driftless/bin/driftless "$prefix/usr/local/bin/driftless"

install -d -m 0755 "$prefix/etc/systemd/system" "$prefix/usr/lib/sysusers.d"
install -m 0644 "$here/systemd/driftless.sysusers.conf" "$prefix/usr/lib/sysusers.d/driftless.conf"
install -d -m 0700 "$prefix/etc/driftless"
for role in $roles; do
    install -m 0644 "$here/systemd/driftless-$role.service" "$prefix/etc/systemd/system/"
    env="$prefix/etc/driftless/$role.env"
    if [ ! -e "$env" ]; then
        case $role in
            registry) printf '%s\n' '# driftless-registry settings (no secrets here; credentials: see the unit)' \
                '#DRIFTLESS_REGISTRY_LISTEN=0.0.0.0:5000' '#DRIFTLESS_REGISTRY_OPTIONS=--auth-failure-limit 10' > "$env" ;;
            reconciler) printf '%s\n' '# driftless-reconciler settings (no secrets here; credentials: see the unit)' \
                'DRIFTLESS_REPO=https://git.example.internal/platform/manifests.git' \
                'DRIFTLESS_REGISTRY=https://registry.example.internal:5000' \
                '#DRIFTLESS_RECONCILER_LISTEN=0.0.0.0:8443' \
                '#DRIFTLESS_RECONCILE_OPTIONS=--state postgresql://driftless@db.example.internal/driftless --advertise https://THIS-MACHINE:8443' > "$env" ;;
            host) printf '%s\n' '# driftless-host settings (no secrets here; credentials: see the unit)' \
                'DRIFTLESS_CONTROL=https://reconciler.example.internal:8443' \
                'DRIFTLESS_LISTEN=0.0.0.0:8081' 'DRIFTLESS_LABELS=--label=tier=edge' > "$env" ;;
        esac
        chmod 0644 "$env"
    fi
done

if [ -n "$prefix" ]; then
    echo "install: staged under $prefix (no user made, systemd not told)" >&2
    exit 0
fi
systemd-sysusers /usr/lib/sysusers.d/driftless.conf 2>/dev/null || {
    # without systemd-sysusers: the same users with useradd
    for role in $roles; do
        id "driftless-$role" >/dev/null 2>&1 || useradd --system --home-dir "/var/lib/driftless-$role" \
            --shell /usr/sbin/nologin "driftless-$role"
    done
}
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
fi
for role in $roles; do
    echo "install: driftless-$role: edit /etc/driftless/$role.env, put the credentials its unit names in /etc/driftless" \
         "(mode 0600), then: systemctl enable --now driftless-$role" >&2
done
