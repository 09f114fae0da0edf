#!/bin/sh
# The credentials a Driftless deployment needs, made with openssl (nothing is ever committed to Git):
#
#   deploy/make-credentials.sh OUT_DIR NAME [NAME...]
#
# NAME: the DNS names (or IP addresses) hosts reach the reconciler at, e.g.
# driftless-reconciler.driftless.svc for the Kubernetes files. OUT_DIR receives (mode 0600 unless said):
#
#   join-token       the hosts' join token: `driftless reconcile --token-file`, `driftless host --token-file`
#   ca.crt, ca.key   a CA of your own (ca.crt is public, 0644: hosts trust it with --control-ca)
#   reconciler.crt   the reconciler's certificate for NAME..., signed by the CA (0644), and its key
#   reconciler.key   (`driftless reconcile --tls-cert reconciler.crt --tls-key reconciler.key`)
#
# An existing OUT_DIR/ca.key is never overwritten. Keep ca.key offline once the certificate is made.
# deploy/README.md shows how the files become Kubernetes Secrets or systemd credentials.
set -eu

if [ $# -lt 2 ]; then
    echo "usage: $0 OUT_DIR NAME [NAME...]   (NAME: DNS name or IP hosts reach the reconciler at)" >&2
    exit 2
fi
out=$1
shift
umask 077
mkdir -p "$out"
if [ -e "$out/ca.key" ]; then
    echo "error: $out/ca.key exists; choose another OUT_DIR (credentials are never overwritten)" >&2
    exit 1
fi

san=""
for name in "$@"; do
    case "$name" in
        *[!0-9.]*) entry="DNS:$name" ;;  # not only digits and dots: a DNS name
        *) entry="IP:$name" ;;
    esac
    san="${san:+$san,}$entry"
done

# the join token: 32 random bytes, URL-safe
openssl rand -base64 32 | tr -d '\n=' | tr '+/' '-_' > "$out/join-token"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -subj "/CN=driftless CA" -keyout "$out/ca.key" -out "$out/ca.crt" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null

openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$1" \
    -keyout "$out/reconciler.key" -out "$out/reconciler.csr" 2>/dev/null
printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n' "$san" > "$out/reconciler.ext"
openssl x509 -req -in "$out/reconciler.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" -CAcreateserial \
    -days 825 -sha256 -extfile "$out/reconciler.ext" -out "$out/reconciler.crt" 2>/dev/null
rm -f "$out/reconciler.csr" "$out/reconciler.ext" "$out/ca.srl"
chmod 0644 "$out/ca.crt" "$out/reconciler.crt"

echo "wrote $out: join-token, ca.crt, ca.key, reconciler.crt and reconciler.key ($san)"
