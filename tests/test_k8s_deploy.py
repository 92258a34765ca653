"""The Kubernetes deployment, checked offline: Helm values, GPU tags, the step executor, PipesK8sClient arguments.

Nothing here starts a cluster. The values are rendered into the dagster.yaml the chart
writes and validated with Dagster's and dagster-k8s's config schemas; the generation
entrypoint a PipesK8sClient pod would run is run here through PipesSubprocessClient.
"""

import copy
import inspect
import json
import sys
from typing import ClassVar

import dagster as dg
import polars as pl
import pytest
import yaml
from dagster_k8s import PipesK8sClient, k8s_job_executor
from dagster_k8s.job import get_user_defined_k8s_config
from dagster_k8s.pipes import build_pod_body
from kubernetes.client import ApiClient

from distill_assets.definitions import build_definitions
from distill_assets.k8s_deploy import VALUES_PATH, executor, gpu_op_tags, validate_values
from distill_assets.pipes_generation import entrypoint_args, generate_in_pod, k8s_run_kwargs
from distill_assets.spec import TeacherPodSpec, load_spec
from resources.storage import ArtifactStore
from tests.conftest import PROJECT_DIR, shrunken_spec


def values() -> dict:
    return yaml.safe_load(VALUES_PATH.read_text())


def test_helm_values_render_to_a_valid_instance(tmp_path):
    instance = validate_values(values(), tmp_path)
    assert instance["run_launcher"]["class"] == "K8sRunLauncher"
    assert "postgres" in instance["storage"]
    assert instance["concurrency"]["pools"]["default_limit"] >= 1
    rendered = yaml.safe_load((tmp_path / "dagster.yaml").read_text())
    assert rendered == instance


@pytest.mark.parametrize(
    ("path", "bad", "message"),
    [
        (("runLauncher", "config", "k8sRunLauncher", "loadInclusterConfig"), "yes", "load_incluster_config"),
        (("postgresql", "service", "port"), "five", "port|five"),
        (("dagster-user-deployments", "deployments", 0, "includeConfigInLaunchedRuns", "enabled"), False, "env"),
    ],
)
def test_bad_values_are_rejected(tmp_path, path, bad, message):
    broken = copy.deepcopy(values())
    node = broken
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = bad
    with pytest.raises(Exception, match=message):
        validate_values(broken, tmp_path)


def test_every_gpu_pool_asset_requests_a_gpu():
    defs = build_definitions(PROJECT_DIR / "distill.yaml")
    gpu_assets = 0
    for assets_def in defs.assets:
        node = assets_def.node_def
        if node.pool != "gpu":
            continue
        gpu_assets += 1
        config = get_user_defined_k8s_config(node.tags)  # dagster-k8s parses and validates the tag
        assert int(config.container_config["resources"]["limits"]["nvidia.com/gpu"]) >= 1, node.name
        assert config.pod_spec_config["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert gpu_assets == 5  # generation, training, teacher and student evaluation, efficiency


def test_no_gpu_is_requested_for_a_step_whose_work_runs_elsewhere():
    assert get_user_defined_k8s_config({"dagster-k8s/config": json.dumps(gpu_op_tags(0)["dagster-k8s/config"])})


def test_executor_is_k8s_only_when_asked(monkeypatch):
    monkeypatch.delenv("DISTILL_EXECUTOR", raising=False)
    assert executor() is None
    monkeypatch.setenv("DISTILL_EXECUTOR", "k8s")
    assert executor().name == k8s_job_executor.name
    defs = build_definitions(PROJECT_DIR / "distill.yaml")
    assert defs.resolve_job_def("__ASSET_JOB").executor_def.name == "k8s"
    monkeypatch.setenv("DISTILL_EXECUTOR", "slurm")
    with pytest.raises(ValueError, match="DISTILL_EXECUTOR"):
        executor()


def test_pipes_k8s_client_arguments_make_a_valid_gpu_pod():
    pod = TeacherPodSpec(image="registry.example.com/distill:0.1.0", gpus=4, node_selector={"gpu": "h100"},
                         env_secrets=["teacher-api"])  # fmt: skip
    kwargs = k8s_run_kwargs(pod, ["-m", "distill_assets.generate_entrypoint"], {"DISTILL_STORAGE_ROOT": "s3://b/p"})
    inspect.signature(PipesK8sClient.run).bind(PipesK8sClient(), context=None, **kwargs)  # the client takes them
    # The pod the client would create, built by dagster-k8s into kubernetes' own V1Pod model.
    pod_body = build_pod_body("p", kwargs["image"], kwargs["command"], kwargs["env"], None, kwargs["base_pod_spec"])
    spec = pod_body.spec
    container = spec.containers[0]
    assert container.image == pod.image
    assert container.command[:3] == ["python", "-m", "distill_assets.generate_entrypoint"]
    assert container.resources.limits == {"nvidia.com/gpu": "4"} == container.resources.requests
    assert spec.node_selector == {"gpu": "h100"} and spec.tolerations[0].key == "nvidia.com/gpu"
    assert container.env_from[0].secret_ref.name == "teacher-api"
    assert ("DISTILL_STORAGE_ROOT", "s3://b/p") in [(e.name, e.value) for e in container.env]
    assert ApiClient().sanitize_for_serialization(pod_body)["spec"]["restartPolicy"] == "Never"


def test_generation_entrypoint_through_pipes(spec_file, monkeypatch):
    """The pod's program, run as a subprocess: it reads the inputs from the store and reports back."""
    monkeypatch.setenv("DISTILL_SPEC", str(spec_file))
    spec = load_spec(spec_file)
    defs = build_definitions(spec_file)
    store: ArtifactStore = defs.resources["store"]
    teacher, task = spec.teacher("teacher_a"), spec.task("dates")

    @dg.asset(name="synthetic_completions", partitions_def=dg.StaticPartitionsDefinition(["dates|teacher_a"]))
    def in_pipes(context: dg.AssetExecutionContext):
        return generate_in_pod(context, teacher, task, store, client=dg.PipesSubprocessClient())

    with dg.DagsterInstance.ephemeral() as instance:
        inputs = dg.materialize(
            list(defs.assets),
            selection=[dg.AssetKey(k) for k in ("curated_inputs", "eval_set", "dev_set")],
            partition_key="dates", resources=dict(defs.resources), instance=instance,
        )  # fmt: skip
        assert inputs.success
        result = dg.materialize([in_pipes], partition_key="dates|teacher_a", instance=instance,
                                resources={"io_manager": defs.resources["io_manager"]})  # fmt: skip
        assert result.success
        metadata = instance.get_latest_materialization_event(
            dg.AssetKey("synthetic_completions")
        ).asset_materialization.metadata
    frame = result.output_for_node("synthetic_completions").collect()  # the pod's file, streamed
    assert frame.height == 12 and set(frame["teacher"]) == {"teacher_a"}
    assert metadata["completions"].value == 12 and metadata["generated_in"].value == "pipes"
    assert entrypoint_args(teacher, task, "x")[-2:] == ["--out", "x"]


class LocalPodClient:
    """Stands in for PipesK8sClient without a cluster: builds the pod as dagster-k8s would, runs its command here."""

    pods: ClassVar[list] = []

    def run(self, *, context, image, command, namespace, env, base_pod_spec):
        self.pods.append(build_pod_body("p", image, command, env, None, base_pod_spec))
        local = [sys.executable, *command[1:]]  # the pod's `python`, as this interpreter
        return dg.PipesSubprocessClient().run(context=context, command=local, env=env)


def test_generation_asset_takes_the_pipes_k8s_path(tmp_path, tiny_teacher, monkeypatch):
    import dagster_k8s

    data = shrunken_spec(tmp_path, tiny_teacher)
    data["teachers"][0]["k8s"] = {"image": "registry.example.com/distill:0.1.0", "gpus": 2}
    spec_path = tmp_path / "distill.yaml"
    spec_path.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("DISTILL_SPEC", str(spec_path))
    monkeypatch.setattr(dagster_k8s, "PipesK8sClient", LocalPodClient)
    defs = build_definitions(spec_path)
    with dg.DagsterInstance.ephemeral() as instance:
        for keys, partition in (
            (["curated_inputs", "eval_set", "dev_set"], "units"),
            (["synthetic_completions"], "units|teacher_a"),
        ):
            result = dg.materialize(
                list(defs.assets), selection=[dg.AssetKey(k) for k in keys], partition_key=partition,
                resources=dict(defs.resources), instance=instance,
            )  # fmt: skip
            assert result.success
        event = instance.get_latest_materialization_event(dg.AssetKey("synthetic_completions"))
    assert event.asset_materialization.metadata["generated_in"].value == "pipes"
    assert LocalPodClient.pods[-1].spec.containers[0].resources.limits == {"nvidia.com/gpu": "2"}
    frame = pl.read_parquet(
        load_spec(spec_path).storage_path() / "frames/synthetic_completions/units__teacher_a.parquet"
    )
    assert frame.height == 12 and set(frame["teacher"]) == {"teacher_a"}
