#!/usr/bin/env python3
"""Renders the Kubernetes manifests of a pgshift fleet from a values file.

One pgshift daemon per migration, each its own Deployment (replicas 1, strategy Recreate: two
daemons must never share a slot) with its configuration in a ConfigMap, the conninfos and the
control-plane token from a Secret, and one PodMonitor for the whole fleet whose relabeling adds
the `migration` label the Grafana dashboard and the alert rules select on.

Why a script and not a Helm chart or a Kustomize base: Debian 12 has no helm, and its kubectl
(kubernetes-client 1.20) carries a kustomize that cannot expand a list into objects; this needs
only python3 and python3-yaml and prints plain manifests for `kubectl apply -f -`.

    deploy/kubernetes/render.py values.yaml | kubectl apply -f -
    deploy/kubernetes/render.py --format json values.yaml   # one JSON List, for validators

deploy/kubernetes/values.example.yaml documents every key. Errors name the key and exit 2.
"""

import argparse
import copy
import hashlib
import json
import re
import sys

try:
    import yaml
except ImportError:  # pragma: no cover - depends on the machine
    sys.exit("render.py: PyYAML is missing (Debian: apt-get install python3-yaml)")

CONFIG_DIR = "/etc/pgshift/migration"        # the ConfigMap, read-only
TOKEN_DIR = "/run/secrets/pgshift"           # the Secret's api-token key, read-only
SPILL_DIR = "/var/lib/pgshift/spill"         # emptyDir: the only writable path (apply.spill_dir)
RUN_AS = 10001                               # the pgshift user of deploy/kubernetes/Containerfile
NAME_RE = re.compile(r"[a-z0-9_]{1,40}")     # pgshift's own rule for `name` (SPEC section 2)

TOP_KEYS = {"namespace", "image", "imagePullPolicy", "controlPort", "commonLabels", "defaults",
            "podMonitor", "migrations"}
MIGRATION_KEYS = {"name", "secretName", "resources", "spill", "terminationGracePeriodSeconds",
                  "nodeSelector", "tolerations", "podAnnotations", "config"}
DEFAULT_KEYS = MIGRATION_KEYS - {"name", "secretName"}
# Set by the renderer from the Deployment's layout: a values file may not change them.
RESERVED_CONFIG = {("name",), ("source",), ("target",), ("control", "listen"),
                   ("control", "token_file"), ("apply", "spill_dir")}

BUILTIN_DEFAULTS = {
    "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}},
    "spill": {"sizeLimit": "20Gi"},
    # SIGTERM: apply finishes (or rolls back) the transaction group in flight and the reader
    # reports the final durable position to the source; the systemd unit allows 90 s.
    "terminationGracePeriodSeconds": 120,
    "config": {"log": {"format": "json"}},
}


class ValuesError(Exception):
    pass


class Dumper(yaml.SafeDumper):
    """Plain YAML for people: no &anchors for repeated label maps, multi-line strings as blocks."""

    def ignore_aliases(self, data):
        return True


def _str(dumper, text):
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


Dumper.add_representer(str, _str)


def merge(base, override):
    """Deep merge of mappings; override wins, lists are replaced."""
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def quantity_bytes(text, where):
    """A Kubernetes memory quantity (512Mi, 1G, 1073741824) in bytes."""
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([KMGTPE]i?|k)?", str(text))
    if not m:
        raise ValuesError(f"{where}: {text!r} is not a memory quantity (e.g. 512Mi, 2Gi)")
    units = {None: 1, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15,
             "E": 10**18, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
    return int(float(m.group(1)) * units[m.group(2)])


def check_keys(mapping, allowed, where):
    if not isinstance(mapping, dict):
        raise ValuesError(f"{where}: expected a mapping, got {type(mapping).__name__}")
    unknown = sorted(set(mapping) - allowed)
    if unknown:
        raise ValuesError(f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")


def pgshift_config(name, settings, port):
    """The pgshift YAML of one migration: the values' config plus the keys the pod layout fixes."""
    config = settings.get("config") or {}
    if not isinstance(config, dict):
        raise ValuesError(f"migrations[{name}].config: expected a mapping")
    for path in sorted(RESERVED_CONFIG):
        node, present = config, True
        for part in path:
            if isinstance(node, dict) and part in node:
                node = node[part]
            else:
                present = False
                break
        if present:
            raise ValuesError(f"migrations[{name}].config.{'.'.join(path)} is set by the renderer "
                              f"(conninfos come from the Secret, paths from the pod layout)")
    fixed = {
        "name": name,
        "source": {"conninfo": "${PGSHIFT_SOURCE_CONNINFO}"},
        "target": {"conninfo": "${PGSHIFT_TARGET_CONNINFO}"},
        "control": {"listen": f"0.0.0.0:{port}", "token_file": f"{TOKEN_DIR}/api-token"},
        "apply": {"spill_dir": SPILL_DIR},
    }
    out = merge(fixed, config)
    # Key order as in config/pgshift.example.yaml, for people reading the ConfigMap.
    order = ["name", "source", "target", "tables", "initial_copy", "schema", "apply", "control",
             "cutover", "reconnect", "log"]
    return {k: out[k] for k in order if k in out} | {k: v for k, v in out.items() if k not in order}


def render(values):
    check_keys(values, TOP_KEYS, "values")
    image = values.get("image")
    if not isinstance(image, str) or not image.strip():
        raise ValuesError("values.image: required (the image built from deploy/kubernetes/Containerfile)")
    namespace = values.get("namespace", "pgshift")
    port = values.get("controlPort", 8187)
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValuesError(f"values.controlPort: {port!r} is not a port number")
    common = values.get("commonLabels") or {}
    defaults = values.get("defaults") or {}
    check_keys(defaults, DEFAULT_KEYS, "values.defaults")
    defaults = merge(BUILTIN_DEFAULTS, defaults)
    migrations = values.get("migrations")
    if not isinstance(migrations, list) or not migrations:
        raise ValuesError("values.migrations: required, a non-empty list")

    docs, seen = [], set()
    for i, m in enumerate(migrations):
        check_keys(m, MIGRATION_KEYS, f"values.migrations[{i}]")
        name = m.get("name")
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            raise ValuesError(f"values.migrations[{i}].name: {name!r} must match [a-z0-9_]{{1,40}} "
                              "(it names the slot, publication and origins)")
        if name in seen:
            raise ValuesError(f"values.migrations[{i}].name: {name!r} appears twice: two daemons "
                              "would fight over one replication slot")
        seen.add(name)
        settings = merge(defaults, {k: v for k, v in m.items() if k in DEFAULT_KEYS})
        docs += render_migration(name, m, settings, values, namespace, port, common)

    pm = merge({"enabled": True, "interval": "15s", "labels": {}}, values.get("podMonitor") or {})
    check_keys(pm, {"enabled", "interval", "labels"}, "values.podMonitor")
    if pm["enabled"]:
        docs.append(pod_monitor(namespace, pm, common))
    return docs


def render_migration(name, m, settings, values, namespace, port, common):
    obj = "pgshift-" + name.replace("_", "-")
    secret = m.get("secretName", obj)
    selector = {"app.kubernetes.io/name": "pgshift", "pgshift.io/migration": name}
    labels = {**common, **selector, "app.kubernetes.io/instance": obj,
              "app.kubernetes.io/component": "migration", "app.kubernetes.io/managed-by": "pgshift-render"}

    config = pgshift_config(name, settings, port)
    config_text = (f"# Rendered by deploy/kubernetes/render.py for migration {name}: edit the values file.\n"
                   + yaml.dump(config, Dumper=Dumper, sort_keys=False, default_flow_style=False))
    grace = settings["terminationGracePeriodSeconds"]
    if not isinstance(grace, int) or grace < 30:
        raise ValuesError(f"migrations[{name}].terminationGracePeriodSeconds: {grace!r}: at least 30, "
                          "so that the final flush is not cut short by SIGKILL")
    resources = settings["resources"]
    limit = (resources.get("limits") or {}).get("memory")
    if limit is not None:
        queue = (config.get("apply") or {}).get("max_queue_bytes", 268435456)
        if isinstance(queue, int) and quantity_bytes(limit, f"migrations[{name}].resources.limits.memory") \
                < queue + 256 * 2**20:
            raise ValuesError(f"migrations[{name}].resources.limits.memory: {limit} leaves less than 256Mi "
                              f"beyond apply.max_queue_bytes ({queue}): the pod would be OOM-killed under load")
    spill = settings["spill"] or {}
    check_keys(spill, {"sizeLimit", "medium"}, f"migrations[{name}].spill")

    configmap = {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": obj, "namespace": namespace, "labels": labels},
        "data": {"pgshift.yaml": config_text},
    }
    annotations = dict(settings.get("podAnnotations") or {})
    # A changed configuration rolls the pod (Recreate: the old daemon stops before the new one starts).
    annotations["pgshift.io/config-sha256"] = hashlib.sha256(config_text.encode()).hexdigest()
    container = {
        "name": "pgshift",
        "image": values["image"],
        "imagePullPolicy": values.get("imagePullPolicy", "IfNotPresent"),
        "args": ["run", "--config", f"{CONFIG_DIR}/pgshift.yaml"],
        "env": [
            {"name": "PGSHIFT_SOURCE_CONNINFO",
             "valueFrom": {"secretKeyRef": {"name": secret, "key": "source-conninfo"}}},
            {"name": "PGSHIFT_TARGET_CONNINFO",
             "valueFrom": {"secretKeyRef": {"name": secret, "key": "target-conninfo"}}},
        ],
        # The control plane and /metrics share one listener (control.listen).
        "ports": [{"name": "metrics", "containerPort": port, "protocol": "TCP"}],
        # /livez answers without a database round trip; /readyz is 503 until streaming with both
        # servers connected (during the initial copy too), which keeps the pod out of "ready" but
        # never restarts it.
        "livenessProbe": {"httpGet": {"path": "/livez", "port": "metrics"},
                          "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 6},
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "metrics"},
                           "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3},
        "resources": resources,
        "securityContext": {
            "runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS,
            "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "api-token", "mountPath": TOKEN_DIR, "readOnly": True},
            {"name": "spill", "mountPath": SPILL_DIR},
        ],
    }
    pod_spec = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": grace,
        "securityContext": {"runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS,
                            "fsGroup": RUN_AS, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": [
            {"name": "config", "configMap": {"name": obj}},
            {"name": "api-token", "secret": {"secretName": secret, "defaultMode": 0o440,
                                             "items": [{"key": "api-token", "path": "api-token"}]}},
            {"name": "spill", "emptyDir": spill},
        ],
    }
    for key in ("nodeSelector", "tolerations"):
        if settings.get(key):
            pod_spec[key] = settings[key]
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": obj, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": 1,
            # Never two daemons at once: the old pod is gone before the new one starts.
            "strategy": {"type": "Recreate"},
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": selector},
            "template": {"metadata": {"labels": labels, "annotations": annotations}, "spec": pod_spec},
        },
    }
    return [configmap, deployment]


def pod_monitor(namespace, pm, common):
    return {
        "apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor",
        "metadata": {"name": "pgshift", "namespace": namespace,
                     "labels": {**common, "app.kubernetes.io/name": "pgshift", **pm["labels"]}},
        "spec": {
            # job="pgshift" (the pods' app.kubernetes.io/name), as the alert rules expect;
            # the default would be "<namespace>/pgshift".
            "jobLabel": "app.kubernetes.io/name",
            "selector": {"matchLabels": {"app.kubernetes.io/name": "pgshift"}},
            "podMetricsEndpoints": [{
                "port": "metrics", "path": "/metrics", "interval": pm["interval"],
                # The dashboard's $migration variable and the alerts' summaries use this label.
                "relabelings": [{"sourceLabels": ["__meta_kubernetes_pod_label_pgshift_io_migration"],
                                 "targetLabel": "migration", "action": "replace"}],
            }],
        },
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("values", help="values file (YAML), see values.example.yaml")
    parser.add_argument("--format", choices=("yaml", "json"), default="yaml",
                        help="yaml: documents for kubectl apply; json: one List object")
    args = parser.parse_args(argv)
    try:
        with open(args.values, encoding="utf-8") as f:
            values = yaml.safe_load(f)
        docs = render(values if values is not None else {})
    except (OSError, yaml.YAMLError) as e:
        print(f"render.py: {args.values}: {e}", file=sys.stderr)
        return 2
    except ValuesError as e:
        print(f"render.py: {args.values}: {e}", file=sys.stderr)
        return 2
    if args.format == "json":
        json.dump({"apiVersion": "v1", "kind": "List", "items": docs}, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(yaml.dump_all(docs, Dumper=Dumper, sort_keys=False, default_flow_style=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
