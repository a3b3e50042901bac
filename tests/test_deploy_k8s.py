"""deploy/k8s, the Dockerfile and compose.yaml: what an operator relies on, checked offline.

kustomize is not needed: the kustomization here only lists files (and names the image), so the
"render" is its ``resources`` list, each file loaded with yaml. Core manifests go through
kubernetes-validate's strict schemas (unknown fields fail); the KEDA ScaledObject is a custom
resource without a schema there, so its fields are checked by hand.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from prometheus_client import CollectorRegistry

from watcher import config, mounts
from watcher.metrics import Metrics

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "compose.yaml"
# A recent release; the schemas ship inside kubernetes-validate.
KUBERNETES_VERSION = "1.33"
CUSTOM_KINDS = {"ScaledObject"}  # no schema in kubernetes-validate (it only warns on them)
WORKLOAD_KINDS = ("Deployment", "CronJob")
PEAK_BYTES = 500 * 1000**2  # the per-pod peak the resources are sized for
_QUANTITY = {"": 1, "k": 1000, "M": 1000**2, "G": 1000**3, "Ki": 1024, "Mi": 1024**2,
             "Gi": 1024**3}

Resource = dict[str, Any]


# -- the rendered kustomization --------------------------------------------------------------------

def kustomization() -> dict[str, Any]:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


@pytest.fixture(scope="module")
def resources() -> list[Resource]:
    docs = []
    for name in kustomization()["resources"]:
        docs += [doc for doc in yaml.safe_load_all((K8S / name).read_text()) if doc]
    return docs


def one(resources: list[Resource], kind: str, name: str | None = None) -> Resource:
    found = [r for r in resources if r["kind"] == kind
             and (name is None or r["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def workloads(resources: list[Resource]) -> list[Resource]:
    return [r for r in resources if r["kind"] in WORKLOAD_KINDS]


def cronjob(resources: list[Resource], command: str) -> Resource:
    return one(resources, "CronJob", f"thumbgen-{command}")


def pod_spec(workload: Resource) -> dict[str, Any]:
    if workload["kind"] == "CronJob":
        return workload["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return workload["spec"]["template"]["spec"]


def pod_labels(workload: Resource) -> dict[str, str]:
    if workload["kind"] == "CronJob":
        return workload["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    return workload["spec"]["template"]["metadata"]["labels"]


def container(workload: Resource) -> dict[str, Any]:
    containers = pod_spec(workload)["containers"]
    assert len(containers) == 1, workload["metadata"]["name"]
    return containers[0]


def env_of(workload: Resource, resources: list[Resource]) -> dict[str, str]:
    """The container's environment as Kubernetes builds it: envFrom first, then env wins.
    Entries filled from elsewhere at run time (``valueFrom``) are left out."""
    env: dict[str, str] = {}
    c = container(workload)
    for source in c.get("envFrom", []):
        assert "configMapRef" in source, source
        env.update(one(resources, "ConfigMap", source["configMapRef"]["name"])["data"])
    for item in c.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
    return env


def settings_of(workload: Resource, resources: list[Resource], tmp_path: Path) -> config.Settings:
    """What the daemon or the job would load from its manifest alone (no config file)."""
    empty = tmp_path / "empty.toml"
    empty.touch()
    return config.load(config_file=empty, env=env_of(workload, resources))


def port_number(c: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    assert port in named, f"port {port!r} is not a named port of the container"
    return named[port]


def quantity(text: str | int) -> float:
    """A Kubernetes quantity (``512Mi``, ``1Gi``, ``500m``, ``2``) as a number."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(m|k|M|G|Ki|Mi|Gi)?", str(text))
    assert match, text
    value, unit = float(match.group(1)), match.group(2) or ""
    return value / 1000 if unit == "m" else value * _QUANTITY[unit]


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# -- the manifests are what the API server accepts ---------------------------------------------------

def test_the_kustomization_lists_every_manifest_and_nothing_missing() -> None:
    listed = kustomization()["resources"]
    for name in listed:
        assert (K8S / name).is_file(), name
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert on_disk == set(listed), "a manifest is not in kustomization.yaml, or the reverse"


def test_core_manifests_pass_strict_schema_validation(resources: list[Resource]) -> None:
    problems = []
    for doc in resources:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            if doc["kind"] not in CUSTOM_KINDS:
                problems.append(f"{name}: no schema for {doc['apiVersion']}")
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            problems.append(f"{name}: {path}: {exc.message}")
    assert not problems, "\n".join(problems)
    kinds = {doc["kind"] for doc in resources}
    assert {"Deployment", "ConfigMap", "PersistentVolumeClaim", "Service", "CronJob",
            "ScaledObject"} <= kinds


def test_strict_validation_does_reject_an_unknown_field(resources: list[Resource]) -> None:
    """The check above means something: a misspelt container field fails."""
    deployment = json.loads(json.dumps(one(resources, "Deployment")))
    container(deployment)["readOnlyRootFileSystem"] = True  # capital S: not a Kubernetes field
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_every_object_carries_the_app_label(resources: list[Resource]) -> None:
    for doc in resources:
        assert doc["metadata"]["labels"]["app"] == "thumbgen", doc["metadata"]["name"]


def test_one_image_for_the_daemon_and_the_jobs(resources: list[Resource]) -> None:
    """`images:` in the kustomization rewrites every container, so they all name that image."""
    (image,) = kustomization()["images"]
    for workload in workloads(resources):
        assert container(workload)["image"].split(":")[0] == image["name"]


# -- the daemon --------------------------------------------------------------------------------------

def test_the_deployment_runs_several_daemons_that_its_service_selects(
        resources: list[Resource]) -> None:
    deployment, service = one(resources, "Deployment"), one(resources, "Service")
    assert deployment["spec"]["replicas"] >= 2
    assert container(deployment).get("args", ["run"]) == ["run"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert matches(selector, pod_labels(deployment))
    assert matches(service["spec"]["selector"], pod_labels(deployment))
    for job in ("backup", "cleanup"):  # job pods are neither replicas nor scrape targets
        labels = pod_labels(cronjob(resources, job))
        assert not matches(selector, labels) and not matches(service["spec"]["selector"], labels)


def test_probes_ask_livez_and_readyz_on_the_daemons_port(
        resources: list[Resource], tmp_path: Path) -> None:
    deployment = one(resources, "Deployment")
    c, settings = container(deployment), settings_of(deployment, resources, tmp_path)
    assert settings.http_host == "0.0.0.0"  # the kubelet probes from outside the loopback
    for probe, path in (("livenessProbe", "/livez"), ("readinessProbe", "/readyz"),
                        ("startupProbe", "/livez")):
        get = c[probe]["httpGet"]
        assert get["path"] == path, probe
        assert port_number(c, get["port"]) == settings.http_port, probe
    # /livez waits 60 s before it fails; the kubelet should not restart on one slow answer
    liveness = c["livenessProbe"]
    assert liveness["failureThreshold"] >= 2 and liveness["timeoutSeconds"] >= 2
    assert liveness["periodSeconds"] * liveness["failureThreshold"] <= 120
    # start-up imports onnxruntime: the startup probe allows at least a minute for it
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60


def test_the_service_and_its_scrape_annotations_reach_the_metrics_port(
        resources: list[Resource], tmp_path: Path) -> None:
    deployment, service = one(resources, "Deployment"), one(resources, "Service")
    port = settings_of(deployment, resources, tmp_path).http_port
    (service_port,) = service["spec"]["ports"]
    assert port_number(container(deployment), service_port["targetPort"]) == port
    notes = service["metadata"]["annotations"]
    assert notes["prometheus.io/scrape"] == "true"
    assert int(notes["prometheus.io/port"]) == port
    assert notes["prometheus.io/path"] == "/metrics"


def test_the_grace_period_outlasts_the_shutdown_timeout(
        resources: list[Resource], tmp_path: Path) -> None:
    deployment = one(resources, "Deployment")
    timeout = settings_of(deployment, resources, tmp_path).shutdown_timeout
    assert pod_spec(deployment)["terminationGracePeriodSeconds"] > timeout


def test_resources_are_sized_for_the_peak_and_workers_for_the_cpu_limit(
        resources: list[Resource], tmp_path: Path) -> None:
    deployment = one(resources, "Deployment")
    res = container(deployment)["resources"]
    assert quantity(res["requests"]["memory"]) >= PEAK_BYTES
    assert quantity(res["limits"]["memory"]) >= quantity(res["requests"]["memory"])
    assert quantity(res["limits"]["cpu"]) >= quantity(res["requests"]["cpu"])
    # WORKERS=0 would count the node's cores, not the pod's: it must be set, within the limit
    settings = settings_of(deployment, resources, tmp_path)
    assert 1 <= settings.workers <= quantity(res["limits"]["cpu"])


def test_a_network_volume_is_polled(resources: list[Resource], tmp_path: Path) -> None:
    """inotify does not see other nodes' writes on a ReadWriteMany volume: the mode polls on the
    filesystems the PVC's comment names (auto by their mountinfo type), every few seconds."""
    settings = settings_of(one(resources, "Deployment"), resources, tmp_path)
    assert settings.watch_mode in ("auto", "polling") and settings.poll_interval <= 5
    if settings.watch_mode == "auto":
        for fstype in ("nfs", "nfs4", "ceph", "cifs", "smb3"):  # NFS, EFS, CephFS, Azure Files
            mountinfo = tmp_path / f"mountinfo-{fstype}"
            mountinfo.write_text(f"36 25 0:40 / {tmp_path} rw - {fstype} server:/export rw\n")
            assert mounts.choose("auto", tmp_path / "produtos", mountinfo).mode == "polling"


@pytest.mark.parametrize("name", ["THUMBGEN_GRADIO_TOKEN", "THUMBGEN_UI_TOKEN"])
def test_each_secret_setting_comes_from_an_optional_secret(resources: list[Resource],
                                                          name: str) -> None:
    deployment = one(resources, "Deployment")
    token = [e for e in container(deployment)["env"] if e["name"] == name]
    assert len(token) == 1
    ref = token[0]["valueFrom"]["secretKeyRef"]
    assert ref["optional"] is True and ref["name"] and ref["key"]
    assert name not in one(resources, "ConfigMap")["data"]


# -- backups and cleanup --------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["backup", "cleanup"])
def test_a_cronjob_runs_each_job_once_for_the_cluster(
        resources: list[Resource], tmp_path: Path, command: str) -> None:
    deployment, job = one(resources, "Deployment"), cronjob(resources, command)
    assert settings_of(deployment, resources, tmp_path).scheduler_enabled is False
    assert job["spec"]["concurrencyPolicy"] == "Forbid"
    c = container(job)
    assert "command" not in c  # the image's ENTRYPOINT, thumbgen
    assert c["args"] == [command]
    assert c["image"] == container(deployment)["image"]
    assert c.get("envFrom") == container(deployment)["envFrom"]
    assert pod_spec(job)["restartPolicy"] in ("Never", "OnFailure")
    # the schedule is a cron expression the daemon itself would accept
    config.OPTIONS_BY_KEY["BACKUP_SCHEDULE"].parse(job["spec"]["schedule"])


# -- security and storage, for every pod ------------------------------------------------------------------

def test_every_pod_runs_non_root_read_only_and_without_privileges(
        resources: list[Resource]) -> None:
    for workload in workloads(resources):
        name, spec, c = workload["metadata"]["name"], pod_spec(workload), container(workload)
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert pod["runAsUser"] > 0 and pod["runAsGroup"] > 0 and pod["fsGroup"] > 0, name
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", name
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True, name
        assert sc["allowPrivilegeEscalation"] is False, name
        assert sc.get("privileged", False) is False, name
        assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add"), name
        assert spec["automountServiceAccountToken"] is False, name
        # the read-only root needs a writable /tmp
        volumes = {v["name"]: v for v in spec["volumes"]}
        tmp = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
        assert len(tmp) == 1 and "emptyDir" in volumes[tmp[0]["name"]], name


def test_the_jobs_share_the_daemons_security_context(resources: list[Resource]) -> None:
    deployment = one(resources, "Deployment")
    for job in ("backup", "cleanup"):
        workload = cronjob(resources, job)
        assert pod_spec(workload)["securityContext"] == pod_spec(deployment)["securityContext"]
        assert container(workload)["securityContext"] == container(deployment)["securityContext"]


def test_every_pod_mounts_the_one_rwx_claim_at_base_path(
        resources: list[Resource], tmp_path: Path) -> None:
    pvc = one(resources, "PersistentVolumeClaim")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    for workload in workloads(resources):
        spec, c = pod_spec(workload), container(workload)
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"]
                  for v in spec["volumes"] if "persistentVolumeClaim" in v}
        mounts = [m for m in c["volumeMounts"] if m["name"] in claims]
        assert len(mounts) == 1, workload["metadata"]["name"]
        assert claims[mounts[0]["name"]] == pvc["metadata"]["name"]
        assert not mounts[0].get("readOnly") and not mounts[0].get("subPath")
        base = settings_of(workload, resources, tmp_path).base_path
        assert Path(mounts[0]["mountPath"]) == base, workload["metadata"]["name"]


# -- configuration ---------------------------------------------------------------------------------------

def test_every_setting_is_a_real_key_and_loads(resources: list[Resource], tmp_path: Path) -> None:
    data = one(resources, "ConfigMap")["data"]
    for workload in workloads(resources):
        names = set(data) | {e["name"] for e in container(workload).get("env", [])}
        for name in names:
            assert name.startswith(config.ENV_PREFIX), name
            assert name.removeprefix(config.ENV_PREFIX) in config.OPTIONS_BY_KEY, name
        settings_of(workload, resources, tmp_path)  # raises ConfigError naming a bad key
    assert all(isinstance(value, str) for value in data.values()), "ConfigMap values are text"


def test_the_scaledobject_scales_the_deployment_on_an_exported_metric(
        resources: list[Resource]) -> None:
    scaled, deployment = one(resources, "ScaledObject"), one(resources, "Deployment")
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert spec["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
    assert 2 <= spec["minReplicaCount"] <= deployment["spec"]["replicas"] <= spec["maxReplicaCount"]
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "prometheus"
    query = trigger["metadata"]["query"]
    registry = CollectorRegistry()
    Metrics(registry)
    exported = {family.name for family in registry.collect()}
    named = set(re.findall(r"\bthumbgen_[a-z0-9_]+", query))
    assert "thumbgen_queue_depth" in named and named <= exported, named - exported
    assert float(trigger["metadata"]["threshold"]) > 0


# -- Dockerfile and compose.yaml --------------------------------------------------------------------------

def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments left out."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [(op.upper(), args) for op, args in
            (line.split(None, 1) for line in lines if line and line[0] != "#")]


def dockerfile_final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    return instructions[last_from:]


def dockerfile_values(op: str) -> list[str]:
    return [args for o, args in dockerfile_final_stage() if o == op]


def _stage_names() -> set[str]:
    return {args.split()[-1] for op, args in dockerfile_instructions()
            if op == "FROM" and " AS " in args.upper()}


def healthcheck_command() -> list[str]:
    (check,) = dockerfile_values("HEALTHCHECK")
    return json.loads(check[check.index("CMD") + 3:])


def test_the_image_runs_the_console_script_as_a_non_root_user(
        resources: list[Resource]) -> None:
    (base,) = dockerfile_values("FROM")
    # Debian's bookworm-slim: make image builds against a stand-in made from Debian's packages
    assert base.split()[0] == "debian:bookworm-slim"
    assert all(args.split()[0] == base.split()[0]
               for op, args in dockerfile_instructions() if op == "FROM"
               and args.split()[0] not in _stage_names()), "every stage starts from that base"
    user = dockerfile_values("USER")[-1]
    uid = user.split(":")[0]
    assert uid not in ("root", "0") and uid.isdigit(), "a numeric uid lets the kubelet check it"
    # the Kubernetes pods run as the image's user
    for workload in workloads(resources):
        assert pod_spec(workload)["securityContext"]["runAsUser"] == int(uid)
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert json.loads(dockerfile_values("ENTRYPOINT")[-1]) == ["thumbgen"]
    assert "thumbgen" in scripts
    assert json.loads(dockerfile_values("CMD")[-1]) == ["run"]
    env = " ".join(dockerfile_values("ENV"))
    assert "THUMBGEN_HTTP_HOST=0.0.0.0" in env
    assert "THUMBGEN_MODEL_PATH=" in env
    assert "models fetch" in DOCKERFILE.read_text()  # the model is baked in at build time


def test_the_image_healthcheck_passes_on_200_and_fails_on_503() -> None:
    command = healthcheck_command()
    assert command[0] == "python"
    with _stub_server() as (port, answers):
        env = {**os.environ, "THUMBGEN_HTTP_PORT": str(port), "http_proxy": "http://127.0.0.9:9"}
        argv = [sys.executable, *command[1:]]
        answers["/livez"] = 200
        assert subprocess.run(argv, env=env, capture_output=True, timeout=20).returncode == 0
        answers["/livez"] = 503
        assert subprocess.run(argv, env=env, capture_output=True, timeout=20).returncode != 0


def test_the_build_context_keeps_what_the_build_copies() -> None:
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    kept = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for op, args in dockerfile_instructions():
        if op == "COPY" and "--from" not in args:
            for source in shlex.split(args)[:-1]:
                assert source.rstrip("/") in kept, f"COPY {source} is left out of the context"


def test_compose_runs_one_hardened_service_with_the_data_folders(tmp_path: Path) -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    assert len(services) == 1
    (service,) = services.values()
    # the image's HEALTHCHECK is the one (podman-compose 1.0.3 garbles a CMD list)
    assert "healthcheck" not in service and healthcheck_command()
    assert any(str(p).endswith(":8080") for p in service["ports"])
    mounted = {v.split(":")[1] for v in service["volumes"]}
    for folder in ("produtos", "backgrounds", "thumbnails-prontas"):
        assert f"/data/{folder}" in mounted, folder
    assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
    # a key without a value is passed through from compose's own environment
    env = {k: str(v) for k, v in service["environment"].items()
           if v is not None and "${" not in str(v)}
    empty = tmp_path / "empty.toml"
    empty.touch()
    config.load(config_file=empty, env=env)  # every variable is a valid setting


class _Stub(http.server.BaseHTTPRequestHandler):
    answers: dict[str, int] = {}

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self.send_response(self.answers.get(self.path, 404))
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def _stub_server() -> Iterator[tuple[int, dict[str, int]]]:
    """An HTTP server on 127.0.0.1 answering each path with the status set in ``answers``."""
    handler = type("Handler", (_Stub,), {"answers": {}})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1], handler.answers
    finally:
        server.shutdown()
        server.server_close()
