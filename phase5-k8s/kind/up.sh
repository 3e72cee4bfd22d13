#!/usr/bin/env bash
# FerrisEats on a local kind cluster, for those with Docker:
#
#     phase5-k8s/kind/up.sh          # create (or reuse) the cluster, build, load, apply, wait
#     curl -s http://127.0.0.1:8080/menu
#     kind delete cluster --name ferriseats
#
# Needs docker, kind and kubectl. Installs KEDA (the consumers' ScaledObjects) and
# metrics-server (the HPAs' CPU readings) from their release manifests.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "${here}/../.." && pwd)"
cluster=ferriseats
image=ferriseats:0.1.0
keda_version=2.16.1
metrics_server_version=0.7.2

for tool in docker kind kubectl; do
    command -v "${tool}" > /dev/null || { echo "up.sh: ${tool} is not installed" >&2; exit 1; }
done

if ! kind get clusters | grep -qx "${cluster}"; then
    kind create cluster --config "${here}/cluster.yaml" --wait 120s
fi
kubectl config use-context "kind-${cluster}"

docker build -f "${root}/phase5-k8s/docker/Dockerfile" -t "${image}" "${root}"
kind load docker-image "${image}" --name "${cluster}"

kubectl apply --server-side -f "https://github.com/kedacore/keda/releases/download/v${keda_version}/keda-${keda_version}.yaml"
kubectl apply -f "https://github.com/kubernetes-sigs/metrics-server/releases/download/v${metrics_server_version}/components.yaml"
# kind's kubelets serve self-signed certificates.
kubectl -n kube-system patch deployment metrics-server --type=json \
    -p '[{"op":"add","path":"/spec/template/spec/containers/0/args/-","value":"--kubelet-insecure-tls"}]'
kubectl -n keda wait --for=condition=Available deployment --all --timeout=180s

# The base reads phase 3's dashboard and alerts from phase3-observability/deploy/.
kubectl kustomize --load-restrictor LoadRestrictionsNone "${root}/phase5-k8s/deploy/overlays/kind" \
    | kubectl apply --server-side -f -
kubectl -n ferriseats rollout status statefulset --timeout=300s
kubectl -n ferriseats rollout status deployment --timeout=300s
echo "up.sh: FerrisEats is up: curl -s http://127.0.0.1:8080/menu"
