"""Kubernetes: the GPU request on GPU-pool assets, the step executor, and the Helm values checked offline.

On a cluster (deploy/k8s/values.yaml) the Dagster Helm chart's K8sRunLauncher starts one pod
per run, and with DISTILL_EXECUTOR=k8s Dagster's `k8s_job_executor` starts one pod per step;
each GPU-pool asset's `dagster-k8s/config` op tag makes its pod request `nvidia.com/gpu`.
Nothing here talks to a cluster: `render_instance` turns the Helm values into the
dagster.yaml the chart writes (after its templates, the parts we set), and
`validate_values` checks it with Dagster's and dagster-k8s's own config schemas.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dagster as dg
import yaml

EXECUTOR_ENV = "DISTILL_EXECUTOR"  # "k8s": one pod per step; unset: Dagster's default (multiprocess)
GPUS_ENV = "DISTILL_GPUS_PER_STEP"  # nvidia.com/gpu per GPU-pool step pod (default 1)
VALUES_PATH = Path(__file__).resolve().parent.parent / "deploy" / "k8s" / "values.yaml"


def gpu_resources(gpus: int) -> dict[str, Any]:
    """A container's `resources` asking for `gpus` GPUs (empty for none)."""
    quantity = str(gpus)  # a Kubernetes quantity
    return {"limits": {"nvidia.com/gpu": quantity}, "requests": {"nvidia.com/gpu": quantity}} if gpus else {}


GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}  # the GPU nodes' taint


def gpu_op_tags(gpus: int | None = None) -> dict[str, Any]:
    """The op tag that makes a step pod request GPUs and tolerate the GPU nodes' taint."""
    gpus = gpus if gpus is not None else int(os.environ.get(GPUS_ENV, "1"))
    if gpus == 0:  # the work runs elsewhere (an HTTP endpoint, a pod of its own): no GPU for this step
        return {"dagster-k8s/config": {"container_config": {}}}
    return {
        "dagster-k8s/config": {
            "container_config": {"resources": gpu_resources(gpus)},
            "pod_spec_config": {"tolerations": [GPU_TOLERATION]},
        }
    }


def executor() -> dg.ExecutorDefinition | None:
    """`k8s_job_executor` when DISTILL_EXECUTOR=k8s (on the cluster), else None: Dagster's default executor."""
    kind = os.environ.get(EXECUTOR_ENV, "")
    if kind in ("", "default", "multiprocess"):
        return None
    if kind != "k8s":
        raise ValueError(f"${EXECUTOR_ENV}: {kind!r} is not one of k8s, multiprocess")
    from dagster_k8s import k8s_job_executor

    # Pools already serialise the GPU steps; max_concurrent bounds the pods one run starts.
    return k8s_job_executor.configured({"max_concurrent": 8, "step_k8s_config": {"container_config": {}}})


def render_instance(values: dict, namespace: str = "dagster", release: str = "dagster") -> dict:
    """The dagster.yaml the chart renders from these values (storage, run launcher, coordinator, pools)."""
    pg = values["postgresql"]
    launcher = values["runLauncher"]
    if launcher["type"] != "K8sRunLauncher":
        raise ValueError(f"runLauncher.type: expected K8sRunLauncher, got {launcher['type']!r}")
    k8s = launcher["config"]["k8sRunLauncher"]
    run_k8s = k8s.get("runK8sConfig", {})
    keys = {"containerConfig": "container_config", "podSpecConfig": "pod_spec_config",
            "podTemplateSpecMetadata": "pod_template_spec_metadata", "jobSpecConfig": "job_spec_config",
            "jobMetadata": "job_metadata"}  # fmt: skip
    launcher_config = {
        "load_incluster_config": k8s.get("loadInclusterConfig", True),
        "job_namespace": k8s.get("jobNamespace") or namespace,
        "image_pull_policy": k8s.get("imagePullPolicy", "Always"),
        "service_account_name": release,
        "dagster_home": values.get("global", {}).get("dagsterHome", "/opt/dagster/dagster_home"),
        "instance_config_map": f"{release}-instance",
        "postgres_password_secret": values.get("global", {}).get(
            "postgresqlSecretName", f"{release}-postgresql-secret"
        ),
        **({"env_secrets": [s["name"] for s in k8s["envSecrets"]]} if k8s.get("envSecrets") else {}),
        **({"env_vars": k8s["envVars"]} if k8s.get("envVars") else {}),
        **({"run_k8s_config": {keys[k]: v for k, v in run_k8s.items()}} if run_k8s else {}),
    }
    instance: dict[str, Any] = {
        "storage": {
            "postgres": {
                "postgres_db": {
                    "username": pg["postgresqlUsername"],
                    "password": {"env": "DAGSTER_PG_PASSWORD"},  # the chart mounts it from the secret
                    "hostname": pg["postgresqlHost"],
                    "db_name": pg["postgresqlDatabase"],
                    "port": pg["service"]["port"],
                }
            }
        },
        "run_launcher": {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": launcher_config},
        "telemetry": {"enabled": values.get("telemetry", {}).get("enabled", True)},
    }
    coordinator = values.get("dagsterDaemon", {}).get("runCoordinator", {})
    if coordinator.get("enabled"):
        instance["run_coordinator"] = {"module": "dagster.core.run_coordinator", "class": "QueuedRunCoordinator"}
    concurrency = values.get("concurrency", {})
    pools, runs = concurrency.get("pools", {}), concurrency.get("runs", {})
    instance["concurrency"] = {
        **({"pools": {"default_limit": pools["defaultLimit"], "granularity": pools.get("granularity", "op")}}
           if "defaultLimit" in pools else {}),
        **({"runs": {"max_concurrent_runs": runs["maxConcurrentRuns"]}} if "maxConcurrentRuns" in runs else {}),
    }  # fmt: skip
    return instance


def user_deployment_env(values: dict, name: str = "distill") -> dict[str, str]:
    deployment = next(d for d in values["dagster-user-deployments"]["deployments"] if d["name"] == name)
    env = deployment.get("env") or {}
    return dict(env) if isinstance(env, dict) else {e["name"]: e["value"] for e in env if "value" in e}


def validate_values(values: dict, workdir: Path) -> dict:
    """Render and check the values with Dagster's own schemas; the rendered dagster.yaml on success."""
    # Dagster 1.13 has no public API that validates an instance file offline; these are the functions
    # DagsterInstance itself calls on dagster.yaml, so the check is exactly what a cluster would apply.
    from dagster._config import validate_config  # checks a config value against a schema
    from dagster._core.instance.config import dagster_instance_config  # reads and validates dagster.yaml
    from dagster._core.storage.config import pg_config  # the Postgres storage block's schema
    from dagster_k8s import K8sRunLauncher

    instance = render_instance(values)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "dagster.yaml").write_text(yaml.safe_dump(instance, sort_keys=False))
    dagster_instance_config(str(workdir))  # the whole instance file, as DagsterInstance reads it
    for label, schema, config in (
        ("runLauncher.config.k8sRunLauncher", K8sRunLauncher.config_type(), instance["run_launcher"]["config"]),
        ("postgresql", pg_config(), instance["storage"]["postgres"]),
    ):
        result = validate_config(schema, config)
        if not result.success:
            raise ValueError(f"{label}: " + "; ".join(e.message for e in result.errors))
    env = user_deployment_env(values)
    deployment = next(d for d in values["dagster-user-deployments"]["deployments"] if d["name"] == "distill")
    if not deployment.get("includeConfigInLaunchedRuns", {}).get("enabled"):
        raise ValueError("dagster-user-deployments: includeConfigInLaunchedRuns must be enabled (run pods need env)")
    for required in ("DISTILL_STORAGE_ROOT", EXECUTOR_ENV):
        if required not in env:
            raise ValueError(f"dagster-user-deployments.distill.env: {required} is missing")
    return instance
