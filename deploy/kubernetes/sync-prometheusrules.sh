#!/usr/bin/env bash
# Regenerates the PrometheusRule manifests from the Prometheus rule files, so the compose stack
# and Kubernetes run the same rules:
#
#   deploy/prometheus/alerts.yml     -> deploy/kubernetes/prometheusrule-alerts.yaml
#   deploy/prometheus/recording.yml  -> deploy/kubernetes/prometheusrule-recording.yaml
#
# Usage: deploy/kubernetes/sync-prometheusrules.sh           rewrite the manifests
#        deploy/kubernetes/sync-prometheusrules.sh --check   exit 1 if they are out of date
#
# The rule file's `groups:` document becomes `spec:` with its text indented, comments included;
# only the leading comment block of the source is replaced by a "generated" header.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
rules_dir="$here/../prometheus"
check=false
case "${1:-}" in
  --check) check=true ;;
  "") ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

render() {
  local name="$1" source="$2"
  cat <<HEADER
# Generated from deploy/prometheus/${source} by deploy/kubernetes/sync-prometheusrules.sh.
# Do not edit: change the source file and run the script again.
#
# A Prometheus only loads PrometheusRules matching its ruleSelector: add the label it expects,
# e.g. \`release: kube-prometheus-stack\` for that chart's defaults.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: ${name}
  labels:
    app.kubernetes.io/name: fedgate
    app.kubernetes.io/component: monitoring
spec:
HEADER
  # Skip the leading comment block and blank lines, then indent non-empty lines by two spaces.
  awk 'started || !/^(#.*)?$/ { started = 1; if (length($0)) print "  " $0; else print "" }' \
    "$rules_dir/$source"
}

status=0
for pair in "fedgate-alerts:alerts.yml:prometheusrule-alerts.yaml" \
            "fedgate-recording:recording.yml:prometheusrule-recording.yaml"; do
  IFS=: read -r name source target <<<"$pair"
  if $check; then
    if ! diff -u "$here/$target" <(render "$name" "$source") >/dev/null; then
      echo "deploy/kubernetes/$target is out of date with deploy/prometheus/$source;" \
           "run deploy/kubernetes/sync-prometheusrules.sh" >&2
      status=1
    fi
  else
    render "$name" "$source" >"$here/$target"
  fi
done
exit "$status"
