"""Teacher generation in a pod of its own through Dagster Pipes (`PipesK8sClient`).

A teacher whose spec has a `k8s:` block (image, GPUs, node selector) generates in a
Kubernetes pod that `dagster-k8s`'s PipesK8sClient starts, watches and streams logs from:
a 70B teacher gets a GPU node, while the run pod stays small. The pod runs
`distill_assets.generate_entrypoint`, which reads the task's curated inputs from the artifact
store and writes the completions back to it, so the store must be one both pods reach (an
object-store URL). The same entrypoint runs under `PipesSubprocessClient`; the tests use that.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import dagster as dg

from distill_assets.k8s_deploy import GPU_TOLERATION, gpu_resources
from distill_assets.spec import LOCAL_STORAGE_ENV, SPEC_ENV, STORAGE_ENV, TaskSpec, TeacherPodSpec, TeacherSpec
from resources.storage import ArtifactStore, partition_file_stem, scan_frame

PASSED_ENV = (SPEC_ENV, STORAGE_ENV, LOCAL_STORAGE_ENV, "DISTILL_GPUS_PER_STEP")


def entrypoint_args(teacher: TeacherSpec, task: TaskSpec, out: str) -> list[str]:
    return ["-m", "distill_assets.generate_entrypoint", "--teacher", teacher.name, "--task", task.name, "--out", out]


def k8s_run_kwargs(pod: TeacherPodSpec, args: list[str], env: dict[str, str]) -> dict[str, Any]:
    """PipesK8sClient.run's arguments: the image, the command, and a pod spec asking for the GPUs."""
    base_pod_spec: dict[str, Any] = {
        # PipesK8sClient fills in the first container's image, command and env; we add resources.
        "containers": [{"name": "dagster-pipes-execution", "resources": gpu_resources(pod.gpus)}],
        "restart_policy": "Never",
    }
    if pod.gpus:
        base_pod_spec["tolerations"] = [GPU_TOLERATION]
    if pod.node_selector:
        base_pod_spec["node_selector"] = dict(pod.node_selector)
    if pod.env_secrets:
        base_pod_spec["containers"][0]["env_from"] = [{"secret_ref": {"name": s}} for s in pod.env_secrets]
    return {
        "image": pod.image,
        "command": ["python", *args],
        "namespace": pod.namespace,
        "env": env,
        "base_pod_spec": base_pod_spec,
    }


def generate_in_pod(
    context: dg.AssetExecutionContext,
    teacher: TeacherSpec,
    task: TaskSpec,
    store: ArtifactStore,
    client: dg.PipesClient | None = None,
) -> dg.Output:
    """Run generation for one teacher x task through Pipes: the frame the child wrote, with its metadata."""
    out = store.url("pipes", "synthetic_completions", f"{partition_file_stem(context.partition_key)}.parquet")
    args = entrypoint_args(teacher, task, str(out))
    env = {name: os.environ[name] for name in PASSED_ENV if name in os.environ}
    if isinstance(client, dg.PipesSubprocessClient):
        kwargs: dict[str, Any] = {"command": [sys.executable, *args], "env": env}
    else:
        if teacher.k8s is None:
            raise ValueError(f"teachers.{teacher.name}.k8s: needed to run generation through PipesK8sClient")
        if not store.is_remote:
            context.log.warning(f"artifact root {store.root} is local: the pod must mount it at the same path")
        from dagster_k8s import PipesK8sClient

        client = client or PipesK8sClient()
        kwargs = k8s_run_kwargs(teacher.k8s, args, env)
    result = client.run(context=context, **kwargs).get_materialize_result()
    # An Output, not a bare frame: Dagster yields what a Pipes session reported, so the step is a generator.
    return dg.Output(scan_frame(out), metadata=dict(result.metadata or {}))  # streamed into the asset's frame
