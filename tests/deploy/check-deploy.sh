#!/usr/bin/env bash
# Checks the monitoring assets under deploy/ (run by CTest as deploy.monitoring):
#   - deploy/grafana/pgshift.json: valid JSON, provisionable (datasource variable, no
#     ${DS_...}/__inputs), every panel on the Prometheus datasource variable, a `migration`
#     variable (one dashboard for a fleet), every expr filtered by migration=~"$migration" and
#     instance=~"$instance", only metric names and labels from SPEC.md section 4, and every
#     expr valid PromQL (fed to `promtool check rules` as recording rules);
#   - deploy/grafana/provisioning/*: present and well-formed;
#   - deploy/prometheus/alerts.yml: `promtool check rules`, only SPEC metric names/labels,
#     every summary naming the migration;
#   - deploy/prometheus/alerts_test.yml: `promtool test rules`;
#   - deploy/prometheus/prometheus.example.yml: `promtool check config`, a migration label on
#     every static target.
# Usage: check-deploy.sh [PROJECT_SOURCE_DIR]
# Exit: 0 ok, 1 failure, 77 skipped (promtool or python3 missing; CTest SKIP_RETURN_CODE).
set -uo pipefail

root=${1:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
root=$(cd "$root" && pwd) || { echo "FAIL: no such directory: ${1:-}"; exit 1; }
dashboard=$root/deploy/grafana/pgshift.json
prov=$root/deploy/grafana/provisioning
rules=$root/deploy/prometheus/alerts.yml
rules_test=$root/deploy/prometheus/alerts_test.yml
prom_config=$root/deploy/prometheus/prometheus.example.yml

# Debian's python3 (a pyenv shim may shadow it on PATH).
if [ -x /usr/bin/python3 ]; then python=/usr/bin/python3
elif command -v python3 >/dev/null 2>&1; then python=$(command -v python3)
else echo "SKIP: python3 not installed"; exit 77; fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/pgshift-check-deploy.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT

failed=0
fail() { echo "FAIL: $*"; failed=1; }

for f in "$dashboard" "$rules" "$rules_test" "$prom_config" \
         "$prov/dashboards/pgshift.yaml" "$prov/datasources/prometheus.yaml"; do
  [ -f "$f" ] || fail "missing file ${f#"$root"/}"
done
[ "$failed" = 0 ] || exit 1

# ---------------------------------------------------------------- static checks (python)
"$python" - "$root" "$tmp/dashboard-exprs.rules.yml" <<'PY' || failed=1
import json, os, re, sys

root, rules_out = sys.argv[1], sys.argv[2]
errors = []
def err(msg): errors.append(msg)

# SPEC.md section 4: metric -> {label: allowed values or None (free)}.
STATES = {"starting", "copying", "streaming", "paused", "cutting_over", "rolling_back", "failed", "stopping"}
SPEC = {
    "pgshift_build_info": {"version": None},
    "pgshift_state": {"state": STATES},
    "pgshift_direction": {"direction": {"forward", "reverse"}},
    "pgshift_paused": {},
    "pgshift_lag_bytes": {},
    "pgshift_lag_seconds": {},
    "pgshift_source_lsn_bytes": {},
    "pgshift_received_lsn_bytes": {},
    "pgshift_applied_lsn_bytes": {},
    "pgshift_confirmed_lsn_bytes": {},
    "pgshift_wal_received_bytes_total": {},
    "pgshift_transactions_applied_total": {},
    "pgshift_changes_applied_total": {"op": {"insert", "update", "delete", "truncate"}},
    "pgshift_queue_changes": {},
    "pgshift_queue_bytes": {},
    "pgshift_errors_total": {"stage": {"source", "decode", "apply", "copy", "control"}},
    "pgshift_reconnects_total": {"endpoint": {"source", "target"}},
    "pgshift_copy_tables": {"state": {"pending", "copying", "done"}},
    "pgshift_copy_rows_total": {},
    "pgshift_copy_bytes_total": {},
    "pgshift_slot_retained_wal_bytes": {},
    "pgshift_cutover_write_downtime_seconds": {},
    # Beyond SPEC section 4 (README, Metrics):
    "pgshift_tables_not_replicated": {},
    "pgshift_schema_differences": {},
    "pgshift_spill_errors_total": {},
    "pgshift_apply_workers": {"state": {"idle", "waiting_dependency", "executing", "waiting_commit"}},
    "pgshift_apply_batches_in_flight": {},
    "pgshift_apply_batches_total": {},
    "pgshift_apply_batches_chained_total": {},
    "pgshift_apply_batches_one_round_trip_total": {},
    "pgshift_apply_batches_inline_total": {},
    "pgshift_apply_wait_seconds_total": {"stage": {"dispatch", "dependency", "commit"}},
    "pgshift_apply_retries_total": {"reason": {"conflict", "blocked"}},
    "pgshift_apply_statements_total": {},
    "pgshift_apply_rows_written_total": {},
    "pgshift_apply_compaction_fallbacks_total": {},
    "pgshift_verify_running": {},
    "pgshift_verify_tables": {"result": {"pending", "match", "mismatch", "error"}},
    "pgshift_verify_rows_compared": {},
}
HISTOGRAMS = {"pgshift_apply_latency_seconds": {}}
KNOWN = dict(SPEC)
for h, labels in HISTOGRAMS.items():   # classic histograms only exist as these series
    KNOWN[h + "_bucket"] = dict(labels, le=None)
    KNOWN[h + "_sum"] = dict(labels)
    KNOWN[h + "_count"] = dict(labels)
KNOWN["up"] = {}
# Added at scrape time: instance and job by Prometheus, migration by the scrape configuration
# (static_configs labels, or the relabeling of deploy/kubernetes' PodMonitor).
TARGET_LABELS = {"instance", "job", "migration"}

NAME_RE = re.compile(r'(?<![\w:$.])(pgshift_[A-Za-z0-9_:]*)(\s*\{([^{}]*)\})?')
UP_RE = re.compile(r'(?<![\w:$.])(up)(\s*\{([^{}]*)\})')
MATCHER_RE = re.compile(r'\s*([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')

def check_selectors(text, where, need_instance=False):
    """Checks every pgshift_* (and up{...}) selector in text; returns the metric names seen."""
    seen = []
    for m in list(NAME_RE.finditer(text)) + list(UP_RE.finditer(text)):
        name, sel = m.group(1), m.group(3)
        seen.append(name)
        if name not in KNOWN:
            hint = " (histograms are queried as _bucket/_sum/_count)" if name in HISTOGRAMS else ""
            err(f"{where}: unknown metric {name!r}: not in SPEC.md section 4{hint}")
            continue
        if need_instance and (sel is None or not re.search(r'\binstance\s*=~\s*"\$instance"', sel)):
            err(f'{where}: {name} is not filtered by {{instance=~"$instance"}}')
        if need_instance and (sel is None or not re.search(r'\bmigration\s*=~\s*"\$migration"', sel)):
            err(f'{where}: {name} is not filtered by {{migration=~"$migration"}}')
        if sel is None:
            continue
        pos, body = 0, sel.strip()
        while pos < len(body):
            mm = MATCHER_RE.match(body, pos)
            if not mm:
                err(f"{where}: cannot parse label matchers {{{sel}}} of {name}")
                break
            pos = mm.end()
            label, op, value = mm.groups()
            allowed = KNOWN[name]
            if label in TARGET_LABELS:
                continue
            if label not in allowed:
                err(f"{where}: {name} has no label {label!r} (SPEC labels: {sorted(allowed) or 'none'})")
            elif op in ("=", "!=") and allowed[label] is not None and value not in allowed[label]:
                err(f"{where}: {name}{{{label}={value!r}}}: value not in {sorted(allowed[label])}")
    return seen

# ---- dashboard
path = os.path.join(root, "deploy/grafana/pgshift.json")
raw = open(path, encoding="utf-8").read()
try:
    dash = json.loads(raw)
except ValueError as e:
    print(f"FAIL: deploy/grafana/pgshift.json is not valid JSON: {e}")
    sys.exit(1)
print("ok: deploy/grafana/pgshift.json is valid JSON")

DS = {"type": "prometheus", "uid": "${datasource}"}
if "${DS_" in raw:
    err("dashboard uses ${DS_...}: only resolved by the UI import flow, breaks file provisioning; use ${datasource}")
if "__inputs" in dash or "__requires" in dash:
    err("dashboard has __inputs/__requires (export-for-sharing format); use the datasource variable instead")
if dash.get("uid") != "pgshift-overview":
    err(f"dashboard uid is {dash.get('uid')!r}, expected 'pgshift-overview'")
if dash.get("schemaVersion") != 38:
    err(f"dashboard schemaVersion is {dash.get('schemaVersion')!r}, expected 38")
if dash.get("id") not in (None,):
    err("dashboard id must be null (Grafana assigns it on import/provisioning)")
variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
dsvar = variables.get("datasource")
if not dsvar or dsvar.get("type") != "datasource" or dsvar.get("query") != "prometheus":
    err("templating needs a variable 'datasource' of type datasource with query 'prometheus'")
mig = variables.get("migration")
if not mig or mig.get("type") != "query" or mig.get("datasource") != DS:
    err("templating needs a query variable 'migration' on the ${datasource} Prometheus datasource")
else:
    q = mig.get("query")
    q = q.get("query", "") if isinstance(q, dict) else (q or "")
    if not re.fullmatch(r"\s*label_values\(\s*pgshift_build_info\s*,\s*migration\s*\)\s*", q):
        err(f"migration variable query is {q!r}, expected label_values(pgshift_build_info, migration)")
    if not mig.get("includeAll") or not mig.get("multi") or mig.get("allValue") != ".*":
        err('migration variable needs includeAll and multi, with allValue ".*" (also matches targets without the label)')
inst = variables.get("instance")
if not inst or inst.get("type") != "query" or inst.get("datasource") != DS:
    err("templating needs a query variable 'instance' on the ${datasource} Prometheus datasource")
else:
    q = inst.get("query")
    q = q.get("query", "") if isinstance(q, dict) else (q or "")
    if not re.fullmatch(r'\s*label_values\(\s*pgshift_build_info\s*(\{\s*migration\s*=~\s*"\$migration"\s*\})?\s*,\s*instance\s*\)\s*', q):
        err(f'instance variable query is {q!r}, expected label_values(pgshift_build_info{{migration=~"$migration"}}, instance)')
for name, v in variables.items():
    for key in ("query", "definition"):
        q = v.get(key)
        q = q.get("query", "") if isinstance(q, dict) else q
        if isinstance(q, str):
            check_selectors(q, f"variable {name}.{key}")

def walk_panels(panels):
    for p in panels:
        yield p
        yield from walk_panels(p.get("panels", []))

ids, exprs = set(), []
panels = list(walk_panels(dash.get("panels", [])))
if not panels:
    err("dashboard has no panels")
for p in panels:
    title = f"panel {p.get('title')!r}"
    if p.get("id") in ids:
        err(f"{title}: duplicate panel id {p.get('id')}")
    ids.add(p.get("id"))
    if "gridPos" not in p:
        err(f"{title}: no gridPos")
    if p.get("type") == "row":
        if "datasource" in p and p["datasource"] != DS:
            err(f"{title}: row datasource is {p['datasource']!r}, expected {DS}")
        continue
    if p.get("datasource") != DS:
        err(f"{title}: datasource is {p.get('datasource')!r}, expected {DS}")
    targets = p.get("targets") or []
    if not targets:
        err(f"{title}: no targets")
    for t in targets:
        if "datasource" in t and t["datasource"] != DS:
            err(f"{title} target {t.get('refId')}: datasource is {t['datasource']!r}, expected {DS}")
        if not (t.get("expr") or "").strip():
            err(f"{title} target {t.get('refId')}: empty expr")

def collect_exprs(node, where):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "expr" and isinstance(v, str):
                exprs.append((where, v))
            else:
                sub = where
                if isinstance(node.get("title"), str) and k in ("targets",):
                    sub = f"panel {node['title']!r}"
                collect_exprs(v, sub)
    elif isinstance(node, list):
        for v in node:
            collect_exprs(v, where)
collect_exprs(dash.get("annotations", {}), "annotation")
collect_exprs(dash.get("panels", []), "dashboard")

names, before = set(), len(errors)
for where, e in exprs:
    seen = check_selectors(e, f"{where} expr {e!r}", need_instance=True)
    if not any(n.startswith("pgshift_") for n in seen):
        err(f"{where} expr {e!r} uses no pgshift_* metric")
    names.update(seen)
if len(errors) == before:
    print(f"ok: dashboard has {len(panels)} panels, {len(exprs)} exprs using {len(names)} SPEC metric names")

# All dashboard exprs as recording rules, so that promtool parses them as PromQL.
def concrete(e):
    e = re.sub(r"\$(?:\{__\w+\}|__\w+)", "5m", e)          # $__rate_interval, $__range, ...
    return re.sub(r"\$(?:\{\w+\}|\w+)", ".+", e)            # $instance
with open(rules_out, "w") as f:
    json.dump({"groups": [{"name": "dashboard-exprs", "rules": [
        {"record": f"dashboard:expr_{i}:" + (re.sub(r"[^a-z0-9]+", "_", w.lower()).strip("_") or "x"),
         "expr": concrete(e)} for i, (w, e) in enumerate(exprs)]}]}, f, indent=1)

# ---- alert rules and their tests: only SPEC names and labels
for rel in ("deploy/prometheus/alerts.yml", "deploy/prometheus/alerts_test.yml"):
    text = open(os.path.join(root, rel), encoding="utf-8").read()
    text = "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("#"))
    before = len(errors)
    seen = check_selectors(text, rel)
    if not seen:
        err(f"{rel}: no pgshift metric found")
    elif len(errors) == before:
        print(f"ok: {rel} uses {len(set(seen))} SPEC metric names")

# Alerts of a fleet: every summary names the migration (the scrape configuration's label).
text = open(os.path.join(root, "deploy/prometheus/alerts.yml"), encoding="utf-8").read()
alerts = re.findall(r"(?m)^\s*-\s*alert:\s*(\S+)", text)
summaries = re.findall(r"(?m)^\s*summary:\s*(.+)$", text)
if len(summaries) != len(alerts):
    err(f"deploy/prometheus/alerts.yml: {len(alerts)} alerts but {len(summaries)} summaries")
for alert, summary in zip(alerts, summaries):
    if "$labels.migration" not in summary:
        err(f"deploy/prometheus/alerts.yml: the summary of {alert} does not name {{{{ $labels.migration }}}}")
# ... and the example scrape configuration gives every static target that label.
text = open(os.path.join(root, "deploy/prometheus/prometheus.example.yml"), encoding="utf-8").read()
text = "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("#"))
if text.count("targets:") != len(re.findall(r"labels:\s*\{[^}]*\bmigration:", text)):
    err("deploy/prometheus/prometheus.example.yml: every static_configs entry needs labels: {migration: NAME}")

# ---- provisioning files (light structural checks; yaml module when available)
try:
    import yaml
except ImportError:
    yaml = None
before = len(errors)
for rel, key in (("deploy/grafana/provisioning/dashboards/pgshift.yaml", "providers"),
                 ("deploy/grafana/provisioning/datasources/prometheus.yaml", "datasources")):
    text = open(os.path.join(root, rel), encoding="utf-8").read()
    if yaml is None:
        if not re.search(r"(?m)^apiVersion:\s*1\s*$", text) or not re.search(rf"(?m)^{key}:", text):
            err(f"{rel}: expected apiVersion: 1 and {key}:")
        continue
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        err(f"{rel}: invalid YAML: {e}")
        continue
    if not isinstance(doc, dict) or doc.get("apiVersion") != 1 or not doc.get(key):
        err(f"{rel}: expected apiVersion: 1 and a non-empty {key} list")
    elif key == "providers":
        for p in doc[key]:
            if p.get("type") != "file" or not (p.get("options") or {}).get("path"):
                err(f"{rel}: provider {p.get('name')!r} needs type: file and options.path")
    else:
        if not any(d.get("type") == "prometheus" and d.get("url") for d in doc[key]):
            err(f"{rel}: no prometheus datasource with a url")
if len(errors) == before:
    print("ok: grafana provisioning files")

for e in errors:
    print(f"FAIL: {e}")
sys.exit(1 if errors else 0)
PY

# ------------------------------------------------------------------------- promtool
if ! command -v promtool >/dev/null 2>&1; then
  [ "$failed" = 0 ] || { echo "check-deploy: FAILED"; exit 1; }
  echo "SKIP: promtool not installed (Debian package 'prometheus'); static checks passed"
  exit 77
fi
to=""; command -v timeout >/dev/null 2>&1 && to="timeout 30"

run() {  # run DESCRIPTION CMD...: prints the tool's output only on failure
  local what=$1 out; shift
  if out=$($to "$@" 2>&1); then echo "ok: $what"
  else echo "$out" | sed 's/^/  | /'; fail "$what"; fi
}
echo "using $(promtool --version 2>&1 | head -n1)"
run "promtool check rules deploy/prometheus/alerts.yml" promtool check rules "$rules"
run "promtool test rules deploy/prometheus/alerts_test.yml" promtool test rules "$rules_test"
run "promtool check config deploy/prometheus/prometheus.example.yml" promtool check config "$prom_config"
if [ -s "$tmp/dashboard-exprs.rules.yml" ]; then
  run "dashboard exprs parse as PromQL (promtool check rules)" promtool check rules "$tmp/dashboard-exprs.rules.yml"
fi

if [ "$failed" = 0 ]; then echo "check-deploy: all checks passed"; exit 0; fi
echo "check-deploy: FAILED"; exit 1
