#!/usr/bin/env bash
# The Secrets of the Kubernetes deployment: CURVE keys (one client key per pod identity) and
# the web server's token, made once into KEYDIR (never overwritten) and printed as manifests:
#
#   deploy/k8s/make-secrets.sh ~/framepipe-keys | kubectl apply -f -
#
# KEYDIR holds every secret: keep it off the cluster's nodes and out of git.
set -euo pipefail
dir=${1:?usage: make-secrets.sh KEYDIR}
namespace=${NAMESPACE:-framepipe}

# pod identity → its role (allowed_clients/<role>/<identity>.key on the servers)
identities="publisher:publisher ventilator:ventilator sink:sink recorder-frames:recorder
recorder-results:recorder worker:worker web-viewer:viewer web-operator:operator"

if [ ! -f "$dir/server.key" ]; then
    clients=()
    for pair in $identities; do clients+=(--client "${pair#*:}:${pair%%:*}"); done
    framepipe keys generate "$dir" "${clients[@]}" >/dev/null
fi
if [ ! -f "$dir/web.token" ]; then
    (umask 077 && python3 -c 'import secrets; print(secrets.token_hex(32))' >"$dir/web.token")
fi

secret() { kubectl create secret generic "$1" --namespace "$namespace" --dry-run=client -o yaml "${@:2}"; echo ---; }

public=(--from-file=server.key="$dir/server.key")
for pair in $identities; do
    id=${pair%%:*} role=${pair#*:}
    public+=(--from-file="$id.key=$dir/allowed_clients/$role/$id.key")
done
secret framepipe-public-keys "${public[@]}"
secret framepipe-server-secret --from-file=server.key_secret="$dir/server.key_secret"
for pair in $identities; do
    id=${pair%%:*}
    secret "framepipe-key-$id" --from-file=key_secret="$dir/$id.key_secret"
done
secret framepipe-web-token --from-file=token="$dir/web.token"
