#!/usr/bin/env bash
# Set up a development/CI machine: system packages (when root), a virtualenv in .venv, the project
# with its test extras, and the example components. Idempotent; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
# git: the GitOps source; skopeo: a real OCI client in the tests; docker-registry: CNCF distribution,
# the benchmark reference; curl, jq, openssl: used by the README walkthrough, hooks and TLS tests
command -v git >/dev/null || need_apt+=(git)
command -v skopeo >/dev/null || need_apt+=(skopeo)
command -v curl >/dev/null || need_apt+=(curl)
command -v jq >/dev/null || need_apt+=(jq)
command -v openssl >/dev/null || need_apt+=(openssl)
# node and npm: componentize-js builds the JavaScript example component (examples/standard/js-hello)
command -v node >/dev/null || need_apt+=(nodejs)
command -v npm >/dev/null || need_apt+=(npm)
[ -x /usr/bin/docker-registry ] || need_apt+=(docker-registry)
# wrk: the benchmarks' HTTP load (hack/bench/registry.py, s3.py): a C client, so the load costs the servers little
command -v wrk >/dev/null || need_apt+=(wrk)
# postgresql: the reconciler's replicated state store (tests start private clusters on loopback);
# age: encrypts secret values kept in Git (the reconciler decrypts with pyrage)
[ -x /usr/lib/postgresql/15/bin/initdb ] || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
command -v age >/dev/null || need_apt+=(age)
# haproxy: the host's native data path (docs/host.md "Data path"; `driftless host --data-path python` without it)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need_apt+=(haproxy)
# chromium: the dashboard's browser test (tests/test_dashboard.py, Playwright on Debian's build)
command -v chromium >/dev/null || need_apt+=(chromium)
# iproute2, iptables: the multi-site lab's namespaces and cuts (hack/lab); faketime: its clock skew
command -v ip >/dev/null || need_apt+=(iproute2)
command -v iptables >/dev/null || need_apt+=(iptables)
command -v faketime >/dev/null || need_apt+=(faketime)
# the install test (tests/test_install.py): systemd-analyze checks the units; mmdebstrap and umoci build
# the container image from Debian (deploy/image/build.sh)
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
command -v mmdebstrap >/dev/null || need_apt+=(mmdebstrap)
command -v umoci >/dev/null || need_apt+=(umoci)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing ${need_apt[*]} with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    # keep packages' own services (postgresql's cluster) from starting: tests start private ones
    policy=/usr/sbin/policy-rc.d
    [ -e "$policy" ] || { printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; trap 'rm -f /usr/sbin/policy-rc.d' EXIT; }
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    echo "setup: please install ${need_apt[*]} (Debian: sudo apt-get install ${need_apt[*]})" >&2
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv" >&2
  "$PY" -m venv .venv
fi
. .venv/bin/activate
stamp=.venv/.driftless-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing driftless and its test dependencies into .venv" >&2
  python -m pip install -q --upgrade pip >/dev/null
  python -m pip install -q -e ".[test]" 2>&1 | grep -v -e "^WARNING: Location" -e "^$" >&2 || true
  python -c "import driftless, wasmtime, oras, aiohttp" || { echo "setup: installation failed" >&2; exit 1; }
  touch "$stamp"
fi
if [ -f hack/build-components.py ]; then
  python hack/build-components.py >/dev/null
fi
# the example built by a standard toolchain (componentize-py) that `driftless up` serves; cached by
# source hash, so only the first setup of a machine pays for it
if [ -f hack/build-standard-components.py ]; then
  python hack/build-standard-components.py --only py-hello >/dev/null ||
    echo "setup: could not build the componentize-py example (driftless up will serve the others)" >&2
fi
