#!/usr/bin/env bash
# Unit (issue 12): the Kubernetes fleet of deploy/kubernetes. Renders values.example.yaml (three
# migrations) with render.py and validates every object offline against the Kubernetes API JSON
# schemas of the npm packages kubernetes-models and @kubernetes-models/prometheus-operator
# (tests/deploy/kubernetes/validate.mjs), plus what the API server checks beyond the schema and
# the fleet contract (one Deployment per migration, Recreate, probes, Secrets, non-root,
# read-only root with the spill emptyDir at apply.spill_dir, PodMonitor with the migration label).
# Then shows the validation can fail: each of a list of broken manifests (a removed selector,
# image, container name, PodMonitor selector, ...) must be rejected with its own message, and
# render.py must refuse broken values files. Last, each rendered pgshift.yaml must be accepted
# by the real configuration loader (`pgshift check`, with the servers unreachable).
# Usage: kubernetes.sh PGSHIFT_BINARY
# Exit: 0 ok, 1 failure, 77 skipped (node, python3-yaml or the npm packages are missing:
# scripts/install-deps.sh installs them).
set -euo pipefail
bin=${1:?usage: kubernetes.sh PGSHIFT_BINARY}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
render=$root/deploy/kubernetes/render.py
values=$root/deploy/kubernetes/values.example.yaml
validator=$here/kubernetes/validate.mjs

python=/usr/bin/python3   # Debian's, with python3-yaml (a pyenv shim may shadow it on PATH)
[ -x "$python" ] || python=$(command -v python3 || true)
[ -n "$python" ] && "$python" -c "import yaml" 2>/dev/null || { echo "SKIP: python3 with PyYAML (python3-yaml) not installed"; exit 77; }
command -v node >/dev/null || { echo "SKIP: node not installed (scripts/install-deps.sh)"; exit 77; }
[ -d "$here/kubernetes/node_modules/kubernetes-models" ] && [ -d "$here/kubernetes/node_modules/@kubernetes-models/prometheus-operator" ] ||
  { echo "SKIP: npm packages missing: npm ci --prefix tests/deploy/kubernetes (scripts/install-deps.sh does it)"; exit 77; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/pgshift-k8s.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

# ------------------------------------------------------------------ render and validate
"$python" "$render" --format json "$values" > "$tmp/fleet.json" || fail "render.py --format json failed"
"$python" "$render" "$values" > "$tmp/fleet.yaml" || fail "render.py (yaml) failed"
"$python" - "$tmp/fleet.json" "$tmp/fleet.yaml" <<'PY' || fail "the YAML and JSON renders differ"
import json, sys, yaml
assert json.load(open(sys.argv[1]))["items"] == list(yaml.safe_load_all(open(sys.argv[2])))
PY
node "$validator" "$tmp/fleet.json" --expect-deployments 3 || fail "the rendered fleet does not validate"
echo "ok: 3 migrations render to valid manifests (YAML and JSON renders identical)"

# ------------------------------------------------------------------ broken manifests are rejected
# mutate NAME EXPECTED-MESSAGE PYTHON-STATEMENT: applies the statement to the render (objects in
# `items`; d = the first Deployment, c = its container, pm = the PodMonitor, cm = the first
# ConfigMap) and requires validate.mjs to fail with a line containing EXPECTED-MESSAGE.
mutate() {
  local name=$1 expected=$2 code=$3 out rc=0
  "$python" - "$tmp/fleet.json" "$tmp/broken.json" "$code" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
items = doc["items"]
d = next(o for o in items if o["kind"] == "Deployment")
c = d["spec"]["template"]["spec"]["containers"][0]
pm = next(o for o in items if o["kind"] == "PodMonitor")
cm = next(o for o in items if o["kind"] == "ConfigMap")
exec(sys.argv[3])
json.dump(doc, open(sys.argv[2], "w"))
PY
  out=$(node "$validator" "$tmp/broken.json" --expect-deployments 3 2>&1) || rc=$?
  [ "$rc" = 1 ] || { echo "$out"; fail "$name: validate.mjs exited $rc, expected 1"; }
  grep "^FAIL: " <<<"$out" | grep -qF -- "$expected" ||
    { echo "$out"; fail "$name: no FAIL line containing '$expected'"; }
  echo "ok: rejected: $name ($(grep "^FAIL: " <<<"$out" | grep -F -- "$expected" | head -1 | cut -c7-))"
}
mutate "Deployment without selector" "must have required property selector" 'del d["spec"]["selector"]'
mutate "Deployment without template" "must have required property template" 'del d["spec"]["template"]'
mutate "container without image" "image is required" 'del c["image"]'
mutate "container without name" "must have required property name" 'del c["name"]'
mutate "containerPort as a string" "containerPort must be integer" 'c["ports"][0]["containerPort"] = "8187"'
mutate "env var without name" "must have required property name" 'del c["env"][0]["name"]'
mutate "PodMonitor without selector" "must have required property selector" 'del pm["spec"]["selector"]'
mutate "ConfigMap without name" "metadata.name is required" 'del cm["metadata"]["name"]'
mutate "selector not matching the pod labels" "does not match" 'd["spec"]["selector"]["matchLabels"]["pgshift.io/migration"] = "other"'
mutate "two replicas" "must be 1" 'd["spec"]["replicas"] = 2'
mutate "RollingUpdate" "Recreate" 'd["spec"]["strategy"] = {"type": "RollingUpdate"}'
mutate "writable root filesystem" "readOnlyRootFilesystem" 'c["securityContext"]["readOnlyRootFilesystem"] = False'
mutate "no spill volume" "not a writable emptyDir mount" 'c["volumeMounts"] = [m for m in c["volumeMounts"] if m["name"] != "spill"]'
mutate "liveness on /readyz" "livenessProbe must be an httpGet of /livez" 'c["livenessProbe"]["httpGet"]["path"] = "/readyz"'
mutate "conninfo inline" "PGSHIFT_SOURCE_CONNINFO must come from a Secret" 'c["env"][0] = {"name": "PGSHIFT_SOURCE_CONNINFO", "value": "host=db"}'
mutate "short grace period" "terminationGracePeriodSeconds" 'd["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 5'
mutate "a Deployment missing" "2 Deployments, expected 3" 'items.remove(d)'
mutate "PodMonitor without the migration label" "migration label" 'pm["spec"]["podMetricsEndpoints"][0]["relabelings"] = []'
mutate "PodMonitor without jobLabel" 'does not give job="pgshift"' 'del pm["spec"]["jobLabel"]'

# ------------------------------------------------------------------ broken values are refused
# refuse NAME EXPECTED-MESSAGE VALUES-YAML: render.py must exit 2 naming the problem.
refuse() {
  local out rc=0
  printf '%s\n' "$3" > "$tmp/values.yaml"
  out=$("$python" "$render" "$tmp/values.yaml" 2>&1 >/dev/null) || rc=$?
  [ "$rc" = 2 ] && grep -qF -- "$2" <<<"$out" || { echo "$out"; fail "$1: render.py exit $rc, expected 2 and '$2'"; }
  echo "ok: refused: $1"
}
refuse "no image" "values.image: required" 'migrations: [{name: a}]'
refuse "no migrations" "values.migrations: required" 'image: x'
refuse "a bad name" "must match [a-z0-9_]{1,40}" $'image: x\nmigrations: [{name: Shop}]'
refuse "a name twice" "appears twice" $'image: x\nmigrations: [{name: a}, {name: a}]'
refuse "an unknown key" "unknown key(s) replicas" $'image: x\nmigrations: [{name: a, replicas: 2}]'
refuse "a reserved config key" "config.apply.spill_dir is set by the renderer" \
  $'image: x\nmigrations: [{name: a, config: {apply: {spill_dir: /tmp}}}]'
refuse "a conninfo in values" "config.source is set by the renderer" \
  $'image: x\nmigrations: [{name: a, config: {source: {conninfo: "host=db password=secret"}}}]'
refuse "memory limit below the queue" "leaves less than 256Mi beyond apply.max_queue_bytes" \
  $'image: x\nmigrations: [{name: a, resources: {limits: {memory: 512Mi}}, config: {apply: {max_queue_bytes: 536870912}}}]'
refuse "a short grace period" "at least 30" $'image: x\nmigrations: [{name: a, terminationGracePeriodSeconds: 10}]'

# ------------------------------------------------------------------ the real loader accepts each config
# Paths of the pod layout are moved under $tmp; the servers are unreachable (port 1), so check
# must report only the connections: exit 1, and not 78 (an invalid file) or any config problem.
[ -x "$bin" ] || fail "no pgshift binary at $bin"
mkdir -p "$tmp/spill" "$tmp/secrets"
echo "k8s-test-token" > "$tmp/secrets/api-token"
"$python" - "$tmp/fleet.json" "$tmp" <<'PY'
import json, sys
tmp = sys.argv[2]
for o in json.load(open(sys.argv[1]))["items"]:
    if o["kind"] == "ConfigMap":
        text = o["data"]["pgshift.yaml"].replace("/var/lib/pgshift/spill", tmp + "/spill") \
                                        .replace("/run/secrets/pgshift", tmp + "/secrets")
        open(f"{tmp}/{o['metadata']['name']}.yaml", "w").write(text)
PY
configs=("$tmp"/pgshift-*.yaml)
[ "${#configs[@]}" = 3 ] || fail "expected 3 rendered configurations, found ${#configs[@]}"
for f in "${configs[@]}"; do
  rc=0
  PGSHIFT_SOURCE_CONNINFO="host=127.0.0.1 port=1 dbname=x user=x connect_timeout=2" \
  PGSHIFT_TARGET_CONNINFO="host=127.0.0.1 port=1 dbname=y user=y connect_timeout=2" \
    timeout 30 "$bin" check --json --config "$f" > "$tmp/check.json" 2>"$tmp/check.err" || rc=$?
  [ "$rc" = 1 ] || { cat "$tmp/check.err" "$tmp/check.json"; fail "$(basename "$f"): pgshift check exited $rc, expected 1 (unreachable servers only)"; }
  "$python" - "$tmp/check.json" <<'PY' || { cat "$tmp/check.json"; fail "$(basename "$f"): problems other than the unreachable servers"; }
import json, sys
problems = json.load(open(sys.argv[1]))["problems"]
other = [p for p in problems if p["code"] != "connect"]
assert problems and not other, other
PY
done
echo "ok: pgshift's configuration loader accepts the 3 rendered configurations"
# ... and refuses a typo that render.py passes through (config keys are pgshift's to check).
printf '%s\n' 'image: x' 'migrations: [{name: typo, config: {apply: {wrkers: 2}}}]' > "$tmp/values.yaml"
"$python" "$render" --format json "$tmp/values.yaml" |
  "$python" -c 'import json, sys; print(json.load(sys.stdin)["items"][0]["data"]["pgshift.yaml"])' |
  sed -e "s|/var/lib/pgshift/spill|$tmp/spill|" -e "s|/run/secrets/pgshift|$tmp/secrets|" > "$tmp/typo.yaml"
rc=0
PGSHIFT_SOURCE_CONNINFO=host=x PGSHIFT_TARGET_CONNINFO=host=y timeout 30 "$bin" check --config "$tmp/typo.yaml" >"$tmp/check.out" 2>&1 || rc=$?
[ "$rc" = 78 ] && grep -q "wrkers" "$tmp/check.out" || { cat "$tmp/check.out"; fail "a rendered config with apply.wrkers: check exited $rc, expected 78 naming the key"; }
echo "ok: a rendered config with a misspelt key (apply.wrkers) is refused by the loader (exit 78)"
echo "kubernetes: all checks passed"
