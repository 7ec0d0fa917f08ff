#!/usr/bin/env bash
# check-deploy.sh - validate every file under deploy/ with the tool made for it, then prove
# each check can fail: a copy of deploy/ with one file broken per target must be refused.
#
#   docker/Dockerfile          hadolint
#   kubernetes/ (kustomize)    kubectl kustomize, kubernetes-validate --strict (which has no
#                              schema for the ServiceMonitor CRD: checked here instead), and the
#                              drain settings (probes, preStop, grace > shutdown_timeout)
#   terraform/                 python-hcl2 (parse), checkov (scan), the NLB settings
#   systemd/switchyard.service systemd-analyze verify (any warning fails)
#   prometheus/alerts.yml      promtool check rules, promtool test rules
#   grafana/switchyard.json    JSON shape, every query parsed by promtool
#   every switchyard.toml      switchyard check
#
# Whether the dashboard and alerts query only metrics the proxy exports is checked by the
# Rust test ops::the_dashboard_and_alerts_query_only_metrics_the_proxy_exports.
# The tools come from scripts/install-deps.sh. Run from anywhere; exits non-zero on failure.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --quiet --bin switchyard
switchyard_bin=$PWD/target/debug/switchyard
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

say() { printf 'check-deploy: %s\n' "$*" >&2; }

check_docker() { # DIR
    hadolint --no-color "$1/docker/Dockerfile"
}

check_kubernetes() { # DIR
    local dir=$1 target out
    for target in base overlays/example; do
        out=$work/rendered-${target//\//-}.yaml
        kubectl kustomize "$dir/kubernetes/$target" >"$out"
        kubernetes-validate --strict --quiet "$out"
        python3 - "$out" <<'EOF'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
kinds = {d["kind"]: d for d in docs}
for kind in ["Deployment", "Service", "PodDisruptionBudget", "ConfigMap", "Secret", "ServiceMonitor"]:
    assert kind in kinds, f"no {kind} rendered"
dep = kinds["Deployment"]["spec"]["template"]["spec"]
c = dep["containers"][0]
for probe, path in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")]:
    assert c.get(probe, {}).get("httpGet", {}).get("path") == path, f"{probe} must GET {path}"
stop = c["lifecycle"]["preStop"]["exec"]["command"]
assert stop[0] == "sleep", "preStop must sleep before SIGTERM"
grace = dep["terminationGracePeriodSeconds"]
config = kinds["ConfigMap"]["data"]["switchyard.toml"]
import re, tomllib
server = tomllib.loads(config)["server"]
m = re.fullmatch(r"(\d+)s", server.get("shutdown_timeout", "30s"))
assert m, "shutdown_timeout in whole seconds"
need = int(m.group(1)) + int(stop[1])
assert grace > need, f"terminationGracePeriodSeconds {grace} must exceed preStop + shutdown_timeout ({need})"
secret_keys = set(kinds["Secret"].get("data", {}))
for var in re.findall(r'_env\s*=\s*"([A-Z0-9_]+)"', config):
    assert var in secret_keys, f"{var} (config) is not in the Secret"
svc_ports = {p["name"] for p in kinds["Service"]["spec"]["ports"]}
for ep in kinds["ServiceMonitor"]["spec"]["endpoints"]:
    assert ep["port"] in svc_ports, f"ServiceMonitor port {ep['port']} is not a Service port"
sel = kinds["ServiceMonitor"]["spec"]["selector"]["matchLabels"]
labels = kinds["Service"]["metadata"].get("labels", {})
assert all(labels.get(k) == v for k, v in sel.items()), "ServiceMonitor selects no Service"
assert kinds["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= \
    kinds["Deployment"]["spec"]["template"]["metadata"]["labels"].items(), "PDB selects no pod"
EOF
    done
}

check_terraform() { # DIR
    local dir=$1
    python3 - "$dir/terraform" <<'EOF'
import sys, glob, hcl2
root = sys.argv[1]
files = sorted(glob.glob(f"{root}/**/*.tf", recursive=True))
assert files, "no .tf files"
def plain(v):
    """python-hcl2's versions differ: values in one-element lists (older, and checkov's
    bc-python-hcl2), strings with their quotes (newer). Both become plain values."""
    if isinstance(v, list) and len(v) == 1:
        v = v[0]
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [plain(x) for x in v]
    if isinstance(v, str) and len(v) >= 2 and v[0] == v[-1] == '"':
        return v[1:-1]
    return v
parsed = {}
for f in files:
    with open(f) as fh:
        doc = hcl2.load(fh)
    parsed[f] = {k: [plain(b) for b in blocks] for k, blocks in doc.items()}
module = {}
for f, doc in parsed.items():
    if "/modules/ecs-fargate-nlb/" in f:
        for key, blocks in doc.items():
            module.setdefault(key, []).extend(blocks)
def resource(kind, name="this"):
    for block in module.get("resource", []):
        if kind in block and name in block[kind]:
            return block[kind][name]
    raise AssertionError(f"no resource {kind}.{name}")
def default(var):
    for block in module.get("variable", []):
        if var in block:
            return block[var].get("default")
    raise AssertionError(f"no variable {var}")
assert resource("aws_lb")["load_balancer_type"] == "network"
tg = resource("aws_lb_target_group")
assert tg["protocol"] == "TCP" and tg["target_type"] == "ip", "TCP target group with IP targets"
hc = tg["health_check"]
assert hc["path"] == "/readyz" and "admin_port" in str(hc["port"]), "health check on the admin port's /readyz"
assert "tcp_idle_timeout_seconds" in resource("aws_lb_listener"), "listener idle timeout"
assert default("idle_timeout_seconds") > 350, "idle timeout above the 350 s default"
for f, doc in parsed.items():
    if "/examples/" in f:
        assert any("switchyard" in m for m in doc.get("module", [])), f"{f} uses the module"
EOF
    checkov -d "$dir/terraform" --framework terraform --quiet --compact --skip-download >"$work/checkov.log" 2>&1 || {
        cat "$work/checkov.log" >&2
        return 1
    }
}

check_systemd() { # DIR
    local unit=$work/switchyard.service out
    # verify checks that ExecStart exists: point it at the binary just built.
    sed "s#/usr/local/bin/switchyard#$switchyard_bin#" "$1/systemd/switchyard.service" >"$unit"
    out=$(systemd-analyze verify "$unit" 2>&1) || { echo "$out" >&2; return 1; }
    # verify exits 0 on unknown keys and bad values ("ignoring"): any output is a failure.
    if [[ -n $out ]]; then
        echo "$out" >&2
        return 1
    fi
    local key
    for key in '^DynamicUser=yes' '^ProtectSystem=strict' '^NoNewPrivileges=yes' '^LimitNOFILE=' '^ExecReload=.*kill -HUP'; do
        grep -q -- "$key" "$unit" || { echo "switchyard.service lacks $key" >&2; return 1; }
    done
}

check_prometheus() { # DIR
    promtool check rules "$1/prometheus/alerts.yml"
    promtool test rules "$1/prometheus/alerts_test.yml"
    python3 - "$1/prometheus/alerts.yml" <<'EOF'
import sys, yaml
for group in yaml.safe_load(open(sys.argv[1]))["groups"]:
    for rule in group["rules"]:
        url = rule.get("annotations", {}).get("runbook_url", "")
        assert "#runbook-" in url, f"{rule.get('alert')} has no runbook link into the README"
EOF
}

check_grafana() { # DIR
    python3 - "$1/grafana/switchyard.json" "$work/dashboard-rules.yml" <<'EOF'
import sys, json
dash = json.load(open(sys.argv[1]))
ids, exprs = set(), []
for panel in dash["panels"]:
    assert panel["id"] not in ids, f"duplicate panel id {panel['id']}"
    ids.add(panel["id"])
    if panel["type"] == "row":
        continue
    assert panel.get("targets"), f"panel {panel['title']!r} has no query"
    for t in panel["targets"]:
        exprs.append(t["expr"])
# Each query as a recording rule, Grafana's variables replaced, for promtool to parse.
with open(sys.argv[2], "w") as out:
    out.write("groups:\n  - name: dashboard\n    rules:\n")
    for i, e in enumerate(exprs):
        e = e.replace("$__rate_interval", "5m").replace("$__range", "1h").replace("$job", ".*")
        out.write(f"      - record: dashboard:query_{i}\n        expr: {json.dumps(e)}\n")
EOF
    promtool check rules "$work/dashboard-rules.yml" >/dev/null
}

check_configs() { # DIR
    local config
    while IFS= read -r -d '' config; do
        # Secrets come from the environment in these configs: give every *_env a value.
        env $(grep -o '_env = "[A-Z0-9_]*"' "$config" | sed 's/.*"\(.*\)"/\1=placeholder/' | sort -u) \
            "$switchyard_bin" check -c "$config" >/dev/null
    done < <(find "$1" -name '*.toml' -print0)
}

targets=(docker kubernetes terraform systemd prometheus grafana configs)
for t in "${targets[@]}"; do
    say "$t"
    "check_$t" deploy
done

# Each check must refuse a broken file: break one per target in a copy and expect failure.
break_file() { # TARGET DIR
    local d=$2
    case $1 in
    docker) sed -i 's/^USER 10001:10001/USER root/; s/apt-get install -y --no-install-recommends/apt-get install -y/' "$d/docker/Dockerfile" ;;
    kubernetes) sed -i 's/terminationGracePeriodSeconds: 60/terminationGracePeriodSeconds: 20/' "$d/kubernetes/base/deployment.yaml" ;;
    terraform) sed -i 's/protocol             = "TCP"/protocol             = "HTTP"/' "$d/terraform/modules/ecs-fargate-nlb/main.tf" ;;
    systemd) sed -i 's/^ProtectSystem=strict/ProtectSystem=strikt/' "$d/systemd/switchyard.service" ;;
    prometheus) sed -i 's/> 0.9$/> 0.99/' "$d/prometheus/alerts.yml" ;;
    grafana) sed -i 's/sum by (kind) (rate(switchyard_errors_total/sum by (kind) (rate(switchyard_errors_total)/' "$d/grafana/switchyard.json" ;;
    configs) sed -i 's/^active = "old"/active = "nowhere"/' "$d/kubernetes/overlays/example/switchyard.toml" ;;
    esac
}
for t in "${targets[@]}"; do
    copy=$work/broken-$t
    cp -r deploy "$copy"
    break_file "$t" "$copy"
    if diff -rq deploy "$copy" >/dev/null; then
        say "self-test: breaking $t changed nothing"
        exit 1
    fi
    # Not in an `if`: there bash would ignore `set -e` inside the check.
    set +e
    (
        set -e
        "check_$t" "$copy"
    ) >"$work/broken.log" 2>&1
    status=$?
    set -e
    if ((status == 0)); then
        say "self-test: a broken $t file passed its check"
        exit 1
    fi
    say "self-test: a broken $t file is refused: $(grep -v '^\s*$' "$work/broken.log" | tail -n 1)"
done
say "every deploy/ file passed"
