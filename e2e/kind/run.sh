#!/usr/bin/env bash
# The kind e2e (`make e2e-kind`): a real cluster, the real images, the chart, MinIO as S3.
#
#   1. create a kind cluster (reused if it exists);
#   2. build the Dockerfile's two targets (operator, feedpod), derive the e2e images (see README.md),
#      and load them into kind;
#   3. install MinIO and create the lake's bucket;
#   4. deploy the replay exchange (`svoe replay serve`, which routes by subscription);
#   5. install charts/svoe (operator, CRD, RBAC, the feed ServiceAccount);
#   6. apply a DataFeed (2 shards), wait until `kubectl wait --for=condition=Ready` passes;
#   7. poll `svoe lake stats` (in the cluster) until MinIO holds the captures' reference counts;
#   8. delete the DataFeed, check the pods drain and go and that the counts are unchanged.
#
# Needs: docker (a running engine), kind, kubectl, helm (`make helm` puts one in .tools/), the
# project's virtualenv (`make setup`) and the captures (CAPTURES, default ../shared/captures).
# Environment: KIND_CLUSTER (default svoe-e2e), KEEP_CLUSTER=1 keeps the cluster afterwards.
set -euo pipefail
cd "$(dirname "$0")/../.."

CLUSTER=${KIND_CLUSTER:-svoe-e2e}
NS=svoe-e2e
EXCHANGE=BINANCE_FUTURES
CAPTURES=${CAPTURES:-${SVOE_CAPTURES:-../shared/captures}}
PY=.venv/bin/python
HELM=${HELM:-$(command -v helm || echo .tools/helm)}
HERE=e2e/kind

die() { echo "e2e/kind: $*" >&2; exit 1; }
step() { echo; echo "=== $*"; }

docker info >/dev/null 2>&1 || die "needs a running Docker engine (docker info failed); see $HERE/README.md"
command -v kind >/dev/null || die "needs kind (https://kind.sigs.k8s.io) on PATH"
command -v kubectl >/dev/null || die "needs kubectl on PATH"
[ -x "$HELM" ] || command -v "$HELM" >/dev/null || die "needs helm: run 'make helm' or put helm on PATH"
[ -x "$PY" ] || die "needs the project's virtualenv: run 'make setup'"
[ -f "$CAPTURES/$EXCHANGE.0" ] || die "no $EXCHANGE capture in $CAPTURES; set CAPTURES"

WORK=$(mktemp -d -t svoe-kind-e2e-XXXXXX)
KUBECTL=(kubectl --context "kind-$CLUSTER")
k() { "${KUBECTL[@]}" -n "$NS" "$@"; }

cleanup() {
    local code=$?
    if [ "$code" -ne 0 ] && "${KUBECTL[@]}" get ns "$NS" >/dev/null 2>&1; then
        echo "--- diagnostics ---" >&2
        k get datafeeds,pods,svc -o wide >&2 || true
        k describe datafeeds >&2 || true
        k logs deploy/svoe-operator --tail=200 >&2 || true
        k logs deploy/exchange --tail=50 >&2 || true
        for pod in $(k get pods -l app.kubernetes.io/component=feed -o name 2>/dev/null); do
            k logs "$pod" --all-containers --tail=50 >&2 || true
        done
    fi
    rm -rf "$WORK"
    if [ "${KEEP_CLUSTER:-0}" != 1 ]; then
        kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
    else
        echo "kept the cluster: kind delete cluster --name $CLUSTER"
    fi
    exit "$code"
}
trap cleanup EXIT

step "1. kind cluster $CLUSTER"
kind get clusters 2>/dev/null | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER" --wait 180s
"${KUBECTL[@]}" create namespace "$NS" --dry-run=client -o yaml | "${KUBECTL[@]}" apply -f -

step "2. images"
# The replay exchange's certificate (for its Service name) and the CA the feed pods must trust.
"$PY" - "$WORK" "$NS" <<'EOF'
import sys
import trustme
work, ns = sys.argv[1], sys.argv[2]
ca = trustme.CA(organization_name="svoe kind e2e")
cert = ca.issue_cert(f"exchange.{ns}.svc", f"exchange.{ns}.svc.cluster.local", "exchange")
ca.cert_pem.write_to_path(f"{work}/exchange-ca.pem")
cert.cert_chain_pems[0].write_to_path(f"{work}/tls.crt")
cert.private_key_pem.write_to_path(f"{work}/tls.key")
EOF
docker build --target operator -t svoe-operator:e2e .
docker build --target feedpod -t svoe-feedpod:e2e .
mkdir -p "$WORK/exchange/captures"
cp "$CAPTURES/README.md" "$CAPTURES/$EXCHANGE".* "$WORK/exchange/captures/"
docker build -f "$HERE/exchange.Dockerfile" -t svoe-e2e-exchange:e2e "$WORK/exchange"
MINIO_IMAGE=$(sed -n 's/^ *image: *\(.*minio.*\)$/\1/p' "$HERE/manifests/minio.yaml" | head -1)
docker pull "$MINIO_IMAGE"
kind load docker-image --name "$CLUSTER" svoe-operator:e2e svoe-feedpod:e2e svoe-e2e-exchange:e2e "$MINIO_IMAGE"

step "3. MinIO"
k apply -f "$HERE/manifests/minio.yaml"
k rollout status deploy/minio --timeout=180s
k delete job create-bucket --ignore-not-found
k apply -f "$HERE/manifests/create-bucket.yaml"
k wait --for=condition=complete job/create-bucket --timeout=180s

step "4. replay exchange"
k create secret tls exchange-tls --cert="$WORK/tls.crt" --key="$WORK/tls.key" --dry-run=client -o yaml | k apply -f -
# The CA the feed pods trust for it: the operator mounts this ConfigMap (values.yaml feedCaConfigMap).
k create configmap exchange-ca --from-file=ca.crt="$WORK/exchange-ca.pem" --dry-run=client -o yaml | k apply -f -
k apply -f "$HERE/manifests/exchange.yaml"
k rollout status deploy/exchange --timeout=180s

step "5. charts/svoe"
"$HELM" upgrade --install svoe charts/svoe --namespace "$NS" --values "$HERE/values.yaml" --wait --timeout 300s
k rollout status deploy/svoe-operator --timeout=180s

step "6. DataFeed"
k delete datafeed futures --ignore-not-found --wait=true
k apply -f "$HERE/manifests/datafeed.yaml"
k wait --for=condition=Ready datafeed/futures --timeout=300s
k get datafeed futures
k get pods -l svoe.io/datafeed=futures -o wide

step "7. objects in MinIO"
EXPECTED=$("$PY" -c "
import json, sys
from svoe.replay import reference_counts
print(json.dumps({c: n for c, n in reference_counts(sys.argv[1])[sys.argv[2]].items() if n}, sort_keys=True))
" "$CAPTURES" "$EXCHANGE")
lake_totals() {
    k delete pod lake-stats --ignore-not-found --wait=true >/dev/null
    k run lake-stats --image=svoe-feedpod:e2e --image-pull-policy=Never --restart=Never --quiet \
        --env=AWS_ENDPOINT_URL="http://minio.$NS.svc:9000" --env=AWS_ACCESS_KEY_ID=svoe-e2e \
        --env=AWS_SECRET_ACCESS_KEY=svoe-e2e-secret --env=AWS_DEFAULT_REGION=us-east-1 \
        --command -- svoe lake stats s3://svoe-e2e/kind --json >/dev/null
    k wait --for=jsonpath='{.status.phase}'=Succeeded pod/lake-stats --timeout=120s >/dev/null
    k logs lake-stats | "$PY" -c "
import json, sys
counts = json.load(sys.stdin).get(sys.argv[1], {})
print(json.dumps({c: sum(s.values()) for c, s in counts.items() if sum(s.values())}, sort_keys=True))
" "$EXCHANGE"
}
echo "expecting $EXPECTED"
got=""
for _ in $(seq 1 40); do
    got=$(lake_totals)
    echo "MinIO holds $got"
    [ "$got" = "$EXPECTED" ] && break
    sleep 10
done
[ "$got" = "$EXPECTED" ] || die "MinIO holds $got, expected the reference counts $EXPECTED"

step "8. delete the DataFeed: drain, stop, lose nothing"
k delete datafeed futures --wait=true
for _ in $(seq 1 90); do
    [ -z "$(k get pods -l svoe.io/datafeed=futures -o name)" ] && break
    sleep 2
done
[ -z "$(k get pods -l svoe.io/datafeed=futures -o name)" ] || die "the feed pods did not go within 180s"
got=$(lake_totals)
[ "$got" = "$EXPECTED" ] || die "after the deletion MinIO holds $got, expected $EXPECTED"
echo
echo "kind e2e passed: the DataFeed became Ready and MinIO holds exactly the reference counts $EXPECTED"
