// Validates rendered Kubernetes manifests (a JSON List from deploy/kubernetes/render.py --format json)
// offline: every object against the Kubernetes API JSON schemas shipped by the npm packages
// kubernetes-models (core and apps API) and @kubernetes-models/prometheus-operator (PodMonitor),
// then the checks the API server makes beyond the schema and the fleet contract of issue 12.
//
// The schemas alone miss what the API server rejects at admission: a container without an image
// (the OpenAPI schema marks `image` optional for higher-level controllers), a selector that does
// not match the pod template's labels, mounts of undeclared volumes. Those are checked here too.
//
// Usage: node validate.mjs MANIFESTS.json [--expect-deployments N]
// Prints one line per object; exit 0 when everything passes, 1 otherwise, 2 on bad usage.
import { readFileSync } from "node:fs";

const models = {
  "v1/ConfigMap": () => import("kubernetes-models/v1/ConfigMap").then((m) => m.ConfigMap),
  "v1/Secret": () => import("kubernetes-models/v1/Secret").then((m) => m.Secret),
  "v1/Service": () => import("kubernetes-models/v1/Service").then((m) => m.Service),
  "apps/v1/Deployment": () => import("kubernetes-models/apps/v1/Deployment").then((m) => m.Deployment),
  "monitoring.coreos.com/v1/PodMonitor": () =>
    import("@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor").then((m) => m.PodMonitor),
};

const args = process.argv.slice(2);
let file = null;
let expectDeployments = null;
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--expect-deployments") expectDeployments = Number(args[++i]);
  else if (!file) file = args[i];
  else { console.error(`unexpected argument ${args[i]}`); process.exit(2); }
}
if (!file) { console.error("usage: node validate.mjs MANIFESTS.json [--expect-deployments N]"); process.exit(2); }

const list = JSON.parse(readFileSync(file, "utf8"));
const items = list.kind === "List" ? list.items : [list];
const errors = [];
const err = (where, msg) => errors.push(`${where}: ${msg}`);
const nameOf = (o) => `${o?.kind ?? "?"} ${o?.metadata?.namespace ?? "-"}/${o?.metadata?.name ?? "?"}`;

// DNS-1123 names, label keys and values as the API server checks them.
const DNS1123 = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;
const LABEL_NAME = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
const matches = (selector, labels) =>
  Object.entries(selector ?? {}).every(([k, v]) => (labels ?? {})[k] === v);

function checkMetadata(o, where) {
  const md = o.metadata ?? {};
  if (!md.name) err(where, "metadata.name is required");
  else if (md.name.length > 253 || !DNS1123.test(md.name)) err(where, `metadata.name ${md.name} is not a DNS-1123 name`);
  if (o.kind === "Deployment" && md.name && md.name.length > 63) err(where, "a Deployment name longer than 63 characters cannot name its pods");
  if (!md.namespace) err(where, "metadata.namespace is required (every object is namespaced)");
  for (const [k, v] of Object.entries(md.labels ?? {})) {
    if (!LABEL_NAME.test(k)) err(where, `label key ${k} is invalid`);
    if (typeof v !== "string" || v.length > 63 || !LABEL_VALUE.test(v)) err(where, `label ${k}=${v} has an invalid value`);
  }
}

function checkDeployment(d, where, configMaps) {
  const spec = d.spec ?? {};
  const pod = spec.template?.spec ?? {};
  if (spec.replicas !== 1) err(where, `spec.replicas is ${spec.replicas}, must be 1 (one daemon per slot)`);
  if (spec.strategy?.type !== "Recreate") err(where, "spec.strategy.type must be Recreate (never two daemons on one slot)");
  const sel = spec.selector?.matchLabels;
  if (!sel || Object.keys(sel).length === 0) err(where, "spec.selector.matchLabels is required");
  else if (!matches(sel, spec.template?.metadata?.labels)) err(where, "spec.selector does not match spec.template.metadata.labels");
  if (!(pod.terminationGracePeriodSeconds >= 30)) err(where, "spec.template.spec.terminationGracePeriodSeconds must be at least 30 (final flush)");
  if (pod.securityContext?.runAsNonRoot !== true) err(where, "pod securityContext.runAsNonRoot must be true");
  const volumes = new Map((pod.volumes ?? []).map((v) => [v.name, v]));
  const containers = pod.containers ?? [];
  if (containers.length !== 1) err(where, `expected one container, found ${containers.length}`);
  for (const [i, c] of containers.entries()) {
    const cw = `${where} container ${c.name ?? i}`;
    if (typeof c.image !== "string" || c.image.trim() === "") err(cw, "image is required");
    const sc = c.securityContext ?? {};
    if (sc.readOnlyRootFilesystem !== true) err(cw, "securityContext.readOnlyRootFilesystem must be true");
    if (sc.allowPrivilegeEscalation !== false) err(cw, "securityContext.allowPrivilegeEscalation must be false");
    if (sc.runAsNonRoot === false || (sc.runAsUser ?? pod.securityContext?.runAsUser) === 0) err(cw, "must not run as root");
    const metrics = (c.ports ?? []).find((p) => p.name === "metrics");
    if (!metrics) err(cw, "a port named metrics is required (PodMonitor, probes)");
    for (const [probe, path] of [["livenessProbe", "/livez"], ["readinessProbe", "/readyz"]]) {
      const get = c[probe]?.httpGet;
      if (!get || get.path !== path || (get.port !== "metrics" && get.port !== metrics?.containerPort)) {
        err(cw, `${probe} must be an httpGet of ${path} on the metrics port`);
      }
    }
    for (const env of ["PGSHIFT_SOURCE_CONNINFO", "PGSHIFT_TARGET_CONNINFO"]) {
      const e = (c.env ?? []).find((x) => x.name === env);
      if (!e?.valueFrom?.secretKeyRef?.name || !e.valueFrom.secretKeyRef.key) err(cw, `${env} must come from a Secret (secretKeyRef)`);
    }
    const mounts = new Map();
    for (const m of c.volumeMounts ?? []) {
      if (!volumes.has(m.name)) err(cw, `volumeMount ${m.name} names no volume`);
      mounts.set(m.mountPath, m);
    }
    // The configuration: a ConfigMap of this render, mounted where --config points.
    const configArg = (c.args ?? [])[(c.args ?? []).indexOf("--config") + 1];
    const configMount = [...mounts.values()].find((m) => configArg?.startsWith(m.mountPath + "/"));
    const configVolume = configMount && volumes.get(configMount.name);
    if (!configVolume?.configMap?.name) { err(cw, `--config ${configArg} is not on a ConfigMap volume`); continue; }
    const cm = configMaps.get(configVolume.configMap.name);
    const key = configArg.slice(configMount.mountPath.length + 1);
    const text = cm?.data?.[key];
    if (typeof text !== "string") { err(cw, `ConfigMap ${configVolume.configMap.name} with key ${key} is not in the render`); continue; }
    // The spill directory: a writable emptyDir mounted exactly at apply.spill_dir.
    const spill = /^\s+spill_dir:\s*"?([^"\s#]+)"?/m.exec(text)?.[1];
    const spillMount = spill && mounts.get(spill);
    if (!spill) err(cw, "the configuration sets no apply.spill_dir (a read-only root has no other writable place)");
    else if (!spillMount || spillMount.readOnly || !volumes.get(spillMount.name)?.emptyDir) err(cw, `apply.spill_dir ${spill} is not a writable emptyDir mount`);
    // The token: a file of a Secret volume, since listen is not loopback.
    const token = /^\s+token_file:\s*"?([^"\s#]+)"?/m.exec(text)?.[1];
    const tokenMount = token && [...mounts.values()].find((m) => token.startsWith(m.mountPath + "/"));
    if (!tokenMount || !volumes.get(tokenMount.name)?.secret?.secretName) err(cw, `control.token_file ${token} is not on a Secret volume`);
  }
}

const configMaps = new Map();
for (const o of items) if (o?.kind === "ConfigMap") configMaps.set(o.metadata?.name, o);

const seen = new Set();
const deployments = [];
for (const o of items) {
  const where = nameOf(o);
  const load = models[`${o?.apiVersion}/${o?.kind}`];
  if (!load) { err(where, `apiVersion ${o?.apiVersion} kind ${o?.kind} is not one this validator knows`); continue; }
  const before = errors.length;
  const Model = await load();
  try {
    new Model(o).validate();
  } catch (e) {
    for (const line of String(e.message).split(/,\s*(?=data\/)/)) err(where, `schema: ${line}`);
  }
  checkMetadata(o, where);
  const id = `${o.kind}/${o.metadata?.namespace}/${o.metadata?.name}`;
  if (seen.has(id)) err(where, "rendered twice");
  seen.add(id);
  if (o.kind === "Deployment") { deployments.push(o); checkDeployment(o, where, configMaps); }
  if (o.kind === "PodMonitor") {
    const ep = o.spec?.podMetricsEndpoints ?? [];
    if (!ep.some((e) => e.port === "metrics" && (e.relabelings ?? []).some((r) => r.targetLabel === "migration"))) {
      err(where, "needs an endpoint on port metrics whose relabelings set the migration label");
    }
  }
  if (errors.length === before) console.log(`ok: ${where} (${o.apiVersion})`);
}

// Every Deployment is scraped by a PodMonitor of the render.
for (const d of deployments) {
  const labels = d.spec?.template?.metadata?.labels;
  const monitored = items.some((o) => o?.kind === "PodMonitor" && o.metadata?.namespace === d.metadata?.namespace &&
    o.spec?.selector?.matchLabels && matches(o.spec.selector.matchLabels, labels));
  if (!monitored) err(nameOf(d), "no PodMonitor of this render selects its pods");
  // The alert rules select up{job="pgshift"}: the PodMonitor's jobLabel must name a pod label
  // whose value is pgshift (the operator's default job is "<namespace>/<podmonitor>").
  for (const pm of items.filter((o) => o?.kind === "PodMonitor")) {
    if (labels?.[pm.spec?.jobLabel] !== "pgshift") err(nameOf(pm), `jobLabel ${pm.spec?.jobLabel} does not give job="pgshift" for ${nameOf(d)} (the alert rules select it)`);
  }
  if (!labels?.["pgshift.io/migration"]) err(nameOf(d), "pod label pgshift.io/migration (the migration label of its metrics) is missing");
}
const perMigration = new Set(deployments.map((d) => d.spec?.template?.metadata?.labels?.["pgshift.io/migration"]));
if (perMigration.size !== deployments.length) err("render", "two Deployments for one migration");
if (expectDeployments !== null && deployments.length !== expectDeployments) {
  err("render", `${deployments.length} Deployments, expected ${expectDeployments} (one per migration)`);
}

for (const e of errors) console.log(`FAIL: ${e}`);
console.log(errors.length ? `${errors.length} problem(s) in ${items.length} objects` : `all ${items.length} objects valid`);
process.exit(errors.length ? 1 : 0);
