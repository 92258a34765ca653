"""The pipeline spec (`distill.yaml`): a validated pydantic model.

A bad spec fails when the definitions load, with a message that names the file and
the field, never as a stack trace from inside a run. Relative paths in the spec are
relative to the spec file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    create_model,
    model_serializer,
    model_validator,
)

from distill_assets.envrefs import ENV_REFERENCE, expand_env
from distill_assets.methods import METHODS
from distill_assets.metrics import metric_module, needs_reference
from distill_assets.metrics.base import NoSettings
from distill_assets.specbase import Name, StrictModel

SPEC_ENV = "DISTILL_SPEC"
STORAGE_ENV = "DISTILL_STORAGE_ROOT"
LOCAL_STORAGE_ENV = "DISTILL_LOCAL_ROOT"  # the local working folder when the storage root is an object-store URL


class SpecError(ValueError):
    """A spec that cannot be used; the message names the file and field."""


DEFAULT_REFUSAL_PATTERNS = [
    r"(?i)\bI(?:'m| am) (?:sorry|unable|not able)\b",
    r"(?i)\bI (?:cannot|can't|can not|won't) (?:help|assist|answer|provide|do)\b",
    r"(?i)\bas an (?:AI|artificial intelligence|language model)\b",
]
DEFAULT_LEAK_PATTERNS = [
    r"<\|[A-Za-z_]+\|>",  # chat special tokens: <|user|>, <|im_start|>, <|eot_id|>
    r"\[/?INST\]|</?s>|<(?:start|end)_of_turn>",  # Llama 2 and Gemma markers
    r"\{\{|\{%|%\}",  # an unrendered chat template
    r"(?m)^(?:system|user|assistant)\s*:",  # a role header the model wrote itself
]


class QualitySpec(StrictModel):
    """Bounds for the data-quality checks and switches for curation; every field has a default."""

    min_prompt_chars: int = Field(1, ge=1, description="shortest prompt accepted")
    max_prompt_chars: int = Field(4000, ge=1, description="longest prompt accepted (the teacher's context applies too)")
    max_completion_chars: int = Field(4000, ge=1, description="longest completion accepted")
    max_empty_rate: float = Field(0.05, ge=0, le=1, description="share of empty completions a partition may have")
    max_refusal_rate: float = Field(0.05, ge=0, le=1, description="share of refusals a partition may have")
    max_leak_rate: float = Field(0.01, ge=0, le=1, description="share with chat tokens or template leaks")
    max_duplicate_rate: float = Field(
        0.5, ge=0, le=1, description="share of prompts whose completion repeats another prompt's"
    )
    min_verifier_pass_rate: float = Field(0.5, ge=0, le=1, description="where the task has a verifier")
    min_kept_rate: float = Field(0.2, ge=0, le=1, description="share of completions curation must keep")
    refusal_patterns: list[str] = Field(default_factory=lambda: list(DEFAULT_REFUSAL_PATTERNS))
    leak_patterns: list[str] = Field(default_factory=lambda: list(DEFAULT_LEAK_PATTERNS))
    curate: bool = Field(True, description="false keeps every completion (checks still run)")
    drop_truncated: bool = Field(True, description="drop completions cut off at max_new_tokens")
    near_duplicate_threshold: float = Field(
        0.85, gt=0, le=1, description="MinHash Jaccard at which rows are near-duplicates"
    )
    shingle_words: int = Field(3, ge=1, description="words per shingle for near-duplicate detection")
    minhash_permutations: int = Field(64, ge=8, description="MinHash signature length")

    @model_validator(mode="after")
    def _patterns_compile(self) -> QualitySpec:
        for field in ("refusal_patterns", "leak_patterns"):
            for pattern in getattr(self, field):
                try:
                    re.compile(pattern)
                except re.error as err:
                    raise ValueError(f"{field}: {pattern!r} is not a valid regular expression ({err})") from None
        return self


DEFAULT_RUBRIC = (
    "You grade answers written for a training set. Score the answer from 0 to 10: 10 when it is correct, "
    "complete and answers only what was asked; 0 when it is wrong, a refusal or off topic. "
    "Reply with the score only, as `Score: N`."
)


class JudgeSpec(StrictModel):
    """LLM-as-judge: a configured teacher scores each completion against a rubric."""

    teacher: Name = Field(description="the teacher whose backend does the judging")
    rubric: str = DEFAULT_RUBRIC
    threshold: float = Field(7.0, ge=0, le=10, description="keep completions scored at least this (0 to 10)")
    max_new_tokens: int = Field(16, ge=1)
    max_failed_fraction: float = Field(
        0.0,
        ge=0,
        le=1,
        description="share of judge requests that may fail (after retries) with the step still succeeding; "
        "their rows are kept unjudged and counted. Above it the step fails, and a rerun resends only those",
    )


class MetricSpec(StrictModel):
    """One of a task's metrics: a registered name or a user's `package.module:function`, with its settings.

    The spec writes it as a name (`exact_match`) or a mapping whose other keys are the metric's
    settings (`{name: numeric, rel_tol: 0.01}`); it is dumped the same way.
    """

    name: str
    settings: SerializeAsAny[StrictModel] = NoSettings()

    @model_validator(mode="before")
    @classmethod
    def _settings_of_the_metric(cls, data):
        if isinstance(data, str):
            data = {"name": data}
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            raise ValueError("a metric is a name, or a mapping with `name` and the metric's settings")
        if isinstance(data.get("settings"), StrictModel):
            return data
        name, params = data["name"], {k: v for k, v in data.items() if k != "name"}
        module = metric_module(name)  # ValueError naming the unknown metric
        try:
            return {"name": name, "settings": module.Settings.model_validate(params)}
        except ValidationError as err:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or name}: {e['msg']}" for e in err.errors())
            raise ValueError(f"{name}: {problems}") from None

    @model_serializer
    def _flat(self) -> str | dict:
        settings = self.settings.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        return {"name": self.name, **settings} if settings else self.name


class TaskSpec(StrictModel):
    name: Name
    source: str = Field(description="JSONL, Parquet or CSV file, or a `datasets` directory")
    eval_source: str | None = Field(
        None, description="held-out prompts; without it, eval_size prompts are split from source"
    )
    prompt_field: str = "prompt"
    reference_field: str | None = Field("answer", description="the reference answer, if any")
    id_field: str | None = Field(None, description="a stable id column; by default the prompt's hash")
    metrics: list[MetricSpec] = Field(
        default_factory=lambda: [MetricSpec(name="exact_match")],
        min_length=1,
        description="how answers are scored, the first the headline (retention, routing, agreement): exact_match, "
        "normalized_match, numeric, contains, choice, token_f1, rouge_l, chrf, json_valid, judge, or "
        "`package.module:function`; settings in a mapping, e.g. {name: numeric, rel_tol: 0.01} (docs/metrics.md)",
    )
    eval_size: int = Field(200, ge=1)
    max_train_prompts: int | None = Field(
        None, ge=1, description="use only the first N training prompts (a sample, to try a spec or a slow teacher)"
    )
    system_prompt: str | None = None
    verifier: str | None = Field(
        None,
        description="a checker that accepts or rejects a completion: reference, or `package.module:function` "
        "(the demo's: distill_assets.demo.verifiers:dates, :reverse, :units)",
    )
    samples: int | None = Field(
        None,
        ge=1,
        description="completions per prompt for this task (default: the teacher's generation.n); "
        "with a verifier, rejection sampling keeps those it accepts",
    )
    judge: JudgeSpec | None = Field(None, description="LLM-as-judge scoring; optional")
    on_bad_input: Literal["fail", "quarantine"] = Field(
        "fail", description="fail names the file, line and field; quarantine sets bad rows aside and counts them"
    )
    quality: QualitySpec | None = Field(None, description="overrides the top-level `quality` block for this task")
    dev_size: int | None = Field(
        None,
        ge=0,
        description="training prompts held out as a dev split, disjoint from eval, on which teachers are scored "
        "for routing (default 100 with `routing: auto`, else 0)",
    )

    @model_validator(mode="before")
    @classmethod
    def _metrics_is_a_list(cls, data):
        if isinstance(data, dict) and "metric" in data:
            raise ValueError(
                f"metric: the field is `metrics`, a list whose first is the headline, e.g. metrics: [{data['metric']}]"
            )
        return data

    @model_validator(mode="after")
    def _metrics_fit_the_task(self) -> TaskSpec:
        names = [m.name for m in self.metrics]
        if len(set(names)) < len(names):
            raise ValueError(f"metrics: each metric once; {sorted({n for n in names if names.count(n) > 1})} repeat")
        if self.reference_field is None:
            for name in filter(needs_reference, names):
                raise ValueError(
                    f"metrics: {name} compares answers with a reference, but reference_field is null; "
                    "score a task without references with `judge` (and agreement with the teacher)"
                )
        return self

    @property
    def headline(self) -> MetricSpec:
        """The metric retention, routing and agreement use: the first listed."""
        return self.metrics[0]

    def needs_reference(self) -> bool:
        """Whether any of the task's metrics compares with a reference (its eval prompts then need one)."""
        return any(needs_reference(m.name) for m in self.metrics)

    @model_validator(mode="after")
    def _known_verifier(self) -> TaskSpec:
        if self.verifier is not None:
            from distill_assets.verifiers import check_verifier_name

            check_verifier_name(self.verifier)
        return self


class GenerationSpec(StrictModel):
    max_new_tokens: int = Field(64, ge=1)
    temperature: float = Field(0.0, ge=0.0, description="0 is greedy decoding")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int = 0
    batch_size: int = Field(64, ge=1)
    n: int = Field(1, ge=1, description="completions per prompt (a sample_index column tells them apart)")
    top_logprobs: int = Field(
        0, ge=0, le=20, description="keep each generated token's top-k log-probabilities; 0 is off"
    )
    stop: list[str] = Field(
        default_factory=list,
        description="strings that end a completion (not kept in it), e.g. ['\\n'] for a few-shot base model",
    )

    @model_validator(mode="after")
    def _samples_differ(self) -> GenerationSpec:
        if self.n > 1 and self.temperature == 0.0:
            raise ValueError("n: n > 1 needs temperature > 0 (greedy decoding gives n identical completions)")
        return self


Backend = Literal["transformers", "vllm", "openai"]
ENV_VAR = r"^[A-Za-z_][A-Za-z0-9_]*$"


class TeacherPodSpec(StrictModel):
    """Generation in a Kubernetes pod of its own, through Dagster's PipesK8sClient (a GPU node per teacher)."""

    image: str = Field(description="an image with this project installed (the code location's image)")
    namespace: str | None = Field(None, description="defaults to the client's (the run pod's) namespace")
    gpus: int = Field(1, ge=0, le=64, description="nvidia.com/gpu the pod requests")
    node_selector: dict[str, str] = Field(default_factory=dict, description="e.g. a GPU model label")
    env_secrets: list[str] = Field(default_factory=list, description="secrets mounted as env (API keys, S3)")


class TeacherSpec(StrictModel):
    name: Name
    backend: Backend = Field("transformers", description="transformers (local), vllm (GPU) or openai (HTTP)")
    model: str = Field(description="a local Hugging Face directory or a hub id; for openai, the served model name")
    revision: str | None = None
    tasks: list[Name] | None = Field(
        None,
        description="tasks routed to this teacher; with `routing: auto`, the tasks it may be routed (default: all)",
    )
    prompt_template: str | dict[Name, str] | None = Field(
        None,
        description="how this teacher sees each prompt, with {prompt} in it, e.g. 'Q: {prompt}\\nA:'; "
        "or one per task (task name -> template; tasks not named get the bare prompt), as few-shot prompts are",
    )
    mode: Literal["chat", "completion"] | None = Field(
        None,
        description="chat: prompts as chat messages (the model's chat template; an endpoint's /chat/completions); "
        "completion: the rendered prompt_template as raw text (a base model; an endpoint's /completions). "
        "Default: completion for a local model without a chat template, else chat",
    )
    generation: GenerationSpec = GenerationSpec()
    # OpenAI-compatible endpoints (backend: openai) only:
    base_urls: list[str] = Field(default_factory=list, description="replicas, e.g. http://host:8000/v1")
    api_key_env: str | None = Field(None, pattern=ENV_VAR, description="environment variable holding the API key")
    concurrency: int = Field(16, ge=1, le=4096, description="requests in flight at once")
    timeout_s: float = Field(120.0, gt=0, description="per-request timeout")
    max_retries: int = Field(5, ge=0, le=100, description="retries of a failed request before it counts as failed")
    extra_body: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="server-specific fields sent with every request, e.g. {repeat_penalty: 1.0} for llama.cpp's "
        "server, whose defaults (repeat_penalty 1.1, top_k 40, min_p 0.05) make temperature 0 not greedy",
    )
    k8s: TeacherPodSpec | None = Field(None, description="generate in its own Kubernetes pod (PipesK8sClient)")

    @model_validator(mode="after")
    def _template_has_prompt(self) -> TeacherSpec:
        templates = self.prompt_template if isinstance(self.prompt_template, dict) else {"": self.prompt_template}
        for task, template in templates.items():
            if template is not None and "{prompt}" not in template:
                where = f"prompt_template.{task}" if task else "prompt_template"
                raise ValueError(f"{where}: must contain {{prompt}}, where each prompt goes")
        return self

    def render(self, prompt: str, task: str | None = None) -> str:
        """The prompt as this teacher sees it on a task (its prompt_template, or the task's, applied)."""
        template = self.prompt_template
        if isinstance(template, dict):
            template = template.get(task) if task is not None else None
        return template.replace("{prompt}", prompt) if template else prompt

    @model_validator(mode="after")
    def _backend_fields(self) -> TeacherSpec:
        if self.backend == "openai":
            if not self.base_urls:
                raise ValueError("base_urls: backend 'openai' needs at least one endpoint, e.g. http://host:8000/v1")
            for url in self.base_urls:
                if not url.startswith(("http://", "https://")) and not ENV_REFERENCE.match(url):
                    raise ValueError(f"base_urls: {url!r} is not an http(s) URL (or a ${{VARIABLE}} holding one)")
        else:
            for field in ("base_urls", "api_key_env", "extra_body"):
                if getattr(self, field):
                    raise ValueError(f"{field}: only used with backend 'openai', not {self.backend!r}")
        return self

    def endpoints(self) -> list[str]:
        """base_urls with `${VARIABLE}` references read from the environment (when the backend is built)."""
        return [expand_env(url, field=f"teachers.{self.name}.base_urls") for url in self.base_urls]

    def version(self) -> str:
        """A hash of everything that changes what this teacher generates."""
        payload = self.model_dump(include={"backend", "model", "revision", "generation"})
        payload["generation"].pop("batch_size")  # batching does not change greedy outputs
        # Fields added later enter only when set, so the versions of existing specs stay the same.
        if not payload["generation"]["stop"]:
            payload["generation"].pop("stop")
        if self.prompt_template is not None:
            payload["prompt_template"] = self.prompt_template
        if self.mode is not None:
            payload["mode"] = self.mode
        if self.extra_body:
            payload["extra_body"] = self.extra_body
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]

    def identity(self) -> str:
        """What generates, for the generation cache's keys (sampling settings are keyed apart).

        An endpoint's model name does not say which weights answer (two servers may both serve
        "llama"), so an openai teacher's identity holds its endpoints: base_urls as written, in
        any order. A `${VARIABLE}` stays the reference, not its value, so a server started on a
        free port each run (`distill_assets.serve`) keeps its answers; and the identity can be
        computed where the variable is unset (the UI, the daemon).
        """
        include = {"backend", "model", "revision"} | ({"extra_body"} if self.extra_body else set())
        payload = self.model_dump(include=include)
        if self.backend == "openai":
            payload["endpoints"] = sorted({url.rstrip("/") for url in self.base_urls})
        return json.dumps(payload, sort_keys=True)


class ArchitectureSpec(StrictModel):
    hidden_size: int = Field(ge=8)
    num_hidden_layers: int = Field(ge=1)
    num_attention_heads: int = Field(4, ge=1)
    intermediate_size: int | None = None

    @model_validator(mode="after")
    def _heads_divide(self) -> ArchitectureSpec:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError("hidden_size must be a multiple of num_attention_heads")
        return self


class StudentBase(StrictModel):
    """What a student starts from: a pre-trained model, a Llama built from scratch, or another student."""

    model: str | None = Field(None, description="a pre-trained model: local directory or hub id")
    architecture: ArchitectureSpec | None = Field(None, description="build a Llama from scratch")
    tokenizer: str | None = Field(None, description="tokenizer for a from-scratch student")
    student: Name | None = Field(
        None,
        description="another student of this spec: start from its trained checkpoint and tokenizer "
        "(a staged student, e.g. SFT, then on-policy)",
    )

    @model_validator(mode="after")
    def _one_of(self) -> StudentBase:
        if sum(x is not None for x in (self.model, self.architecture, self.student)) != 1:
            raise ValueError("give exactly one of `model`, `architecture` or `student`")
        if self.architecture is not None and self.tokenizer is None:
            raise ValueError("a student built from `architecture` needs a `tokenizer` path or id")
        if self.student is not None and self.tokenizer is not None:
            raise ValueError("`tokenizer`: a student built on another student takes that student's tokenizer")
        return self


class TrainingSpec(StrictModel):
    max_steps: int = Field(1000, ge=1)
    per_device_train_batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    lr_scheduler_type: str = Field(
        "cosine", description="a transformers scheduler: cosine, linear, constant_with_warmup, warmup_stable_decay, ..."
    )
    lr_scheduler_kwargs: dict[str, float | int | str] = Field(
        default_factory=dict, description="its own settings, e.g. {num_decay_steps: 200} for warmup_stable_decay"
    )
    weight_decay: float = Field(0.01, ge=0)
    max_length: int = Field(256, ge=8)
    seed: int = 0
    logging_steps: int = Field(50, ge=1)


class LoraSpec(StrictModel):
    """PEFT LoRA adapters instead of full fine-tuning; merged into the weights before the checkpoint is saved."""

    r: int = Field(8, ge=1, description="adapter rank")
    alpha: int = Field(16, ge=1, description="scaling numerator (the update is scaled by alpha / r)")
    dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the adapter input")
    target_modules: list[str] | None = Field(
        None,
        min_length=1,
        description="module names that get adapters; by default every linear layer of the student's architecture "
        "but its output head (PEFT's all-linear)",
    )


class LauncherSpec(StrictModel):
    """How student training runs: in the Dagster step, or as a data-parallel job through Dagster Pipes."""

    kind: Literal["in_process", "torchrun", "accelerate"] = Field(
        "in_process", description="in_process, or an external `torchrun` / `accelerate launch` job (Dagster Pipes)"
    )
    nproc_per_node: int = Field(1, ge=1, le=64, description="processes on this node: one per GPU (gloo on CPU)")
    extra_args: list[str] = Field(default_factory=list, description="passed to the launcher before the module")


MethodName = Literal[tuple(METHODS)]  # the registered methods: sft, on_policy, offline_logits


class _StudentFields(StrictModel):
    name: Name
    base: StudentBase
    method: MethodName = Field("sft", description=" | ".join(METHODS))
    lora: LoraSpec | None = Field(None, description="train LoRA adapters (PEFT) instead of every weight")
    training: TrainingSpec = TrainingSpec()
    launcher: LauncherSpec = LauncherSpec()

    @model_validator(mode="after")
    def _one_method_block(self) -> StudentSpec:
        for method in METHODS:
            if method != self.method and getattr(self, method) is not None:
                raise ValueError(
                    f"{method}: settings for method {method!r}, but the student's method is {self.method!r}"
                )
        return self

    def method_settings(self) -> StrictModel:
        """The settings block of the student's method, its defaults where the spec gives none."""
        return getattr(self, self.method) or METHODS[self.method].Settings()

    def method_label(self) -> str:
        """The method as the run metadata, the report and the model card name it, e.g. `sft + LoRA`."""
        return self.method + (" + LoRA" if self.lora else "")


# One optional settings block per registered method, named after it (e.g. `offline_logits: {alpha: 0.5}`).
StudentSpec = create_model(
    "StudentSpec",
    __base__=_StudentFields,
    __module__=__name__,
    __doc__="A student: its base, its method with that method's settings block, LoRA, training and launcher.",
    **{
        name: (method.Settings | None, Field(None, description=f"settings of method {name}"))
        for name, method in METHODS.items()
    },
)


class EvaluationSpec(StrictModel):
    max_new_tokens: int = Field(32, ge=1)
    batch_size: int = Field(64, ge=1)
    latency_requests: int = Field(20, ge=2, description="batch-1 requests timed per model")
    throughput_batch_size: int = Field(64, ge=1)
    throughput_prompts: int = Field(256, ge=1, description="prompts generated in batches to time throughput")
    hourly_price_usd: float = Field(1.0, ge=0, description="hardware price used for cost figures")


class ExportSpec(StrictModel):
    """What the training set's exports under the artifact root's exports/ hold beside its text."""

    logprobs: bool = Field(
        False, description="also write the teachers' top-k log-probabilities to training_set_logprobs.parquet"
    )


class Spec(StrictModel):
    # `routing` is the spec's key for routing_mode; by name too, for a spec dumped and validated again
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    storage_root: str = Field(
        "artifacts", description=f"artifact root: a path or an object-store URL (s3://...); ${STORAGE_ENV} overrides it"
    )
    tasks: list[TaskSpec] = Field(min_length=1)
    teachers: list[TeacherSpec] = Field(min_length=1)
    students: list[StudentSpec] = Field(min_length=1)
    routing_mode: Literal["fixed", "auto"] = Field(
        "fixed",
        alias="routing",  # the spec's key; routing.Routing is the task -> teacher decision
        description="fixed: teachers[].tasks assign each task; auto: the teacher best on each task's dev split "
        "(the routing_table asset) generates its data",
    )
    evaluation: EvaluationSpec = EvaluationSpec()
    quality: QualitySpec = QualitySpec()
    exports: ExportSpec = ExportSpec()
    base_dir: Path = Field(Path("."), exclude=True, description="set to the spec file's folder")

    @model_validator(mode="after")
    def _consistent(self) -> Spec:
        for kind, items in (("tasks", self.tasks), ("teachers", self.teachers), ("students", self.students)):
            names = [i.name for i in items]
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{kind}: duplicate name(s) {dupes}")
        tasks = {t.name for t in self.tasks}
        auto = self.routing_mode == "auto"
        routed: dict[str, str] = {}
        for teacher in self.teachers:
            if isinstance(teacher.prompt_template, dict):
                for task in set(teacher.prompt_template) - tasks:
                    raise ValueError(
                        f"teachers.{teacher.name}.prompt_template: unknown task {task!r}; tasks are {sorted(tasks)}"
                    )
            if teacher.tasks is None and not auto:
                raise ValueError(f"teachers.{teacher.name}.tasks: list the tasks routed to it (or set `routing: auto`)")
            for task in teacher.tasks or []:
                if task not in tasks:
                    raise ValueError(f"teachers.{teacher.name}.tasks: unknown task {task!r}; tasks are {sorted(tasks)}")
                if task in routed and not auto:
                    raise ValueError(
                        f"teachers.{teacher.name}.tasks: task {task!r} is already routed to {routed[task]!r}"
                    )
                routed.setdefault(task, teacher.name)
        teachers = {t.name for t in self.teachers}
        for task in self.tasks:
            if task.judge and task.judge.teacher not in teachers:
                raise ValueError(f"tasks.{task.name}.judge.teacher: unknown teacher {task.judge.teacher!r}")
            for judge in (m.settings for m in task.metrics if m.name == "judge"):
                if judge.teacher not in teachers:
                    raise ValueError(f"tasks.{task.name}.metrics.judge.teacher: unknown teacher {judge.teacher!r}")
            for name in self.candidates(task.name) if auto else [routed.get(task.name)]:
                if name and (task.samples or 1) > 1 and self.teacher(name).generation.temperature == 0:
                    raise ValueError(
                        f"tasks.{task.name}.samples: {task.samples} samples per prompt need a sampling teacher; "
                        f"set teachers.{name}.generation.temperature above 0"
                    )
            if auto and self.dev_size(task.name) < 1 and len(self.candidates(task.name)) > 1:
                raise ValueError(f"tasks.{task.name}.dev_size: `routing: auto` scores teachers on a dev split of 1+")
        missing = sorted(t for t in tasks if not self.candidates(t))
        if missing:
            raise ValueError(f"teachers: no teacher is routed task(s) {missing}; add them to a teacher's `tasks`")
        self._check_stages()
        for student in self.students:
            self._check_method(student)
        return self

    def _check_stages(self) -> None:
        """Each `base.student` names another student of the spec, and no chain of them comes back to itself."""
        names = [s.name for s in self.students]
        for student in self.students:
            base = student.base.student
            if base is None:
                continue
            where = f"students.{student.name}.base.student"
            if base == student.name:
                raise ValueError(f"{where}: a student cannot start from itself")
            if base not in names:
                raise ValueError(f"{where}: unknown student {base!r}; students are {sorted(names)}")
        for student in self.students:
            chain = [student.name]
            while (base := self.student(chain[-1]).base.student) is not None:
                if base in chain:
                    cycle = " -> ".join([*chain[chain.index(base) :], base])
                    raise ValueError(f"students: staged students form a cycle: {cycle}")
                chain.append(base)

    # Lookups and path resolution -------------------------------------------------
    def task(self, name: str) -> TaskSpec:
        return next(t for t in self.tasks if t.name == name)

    def teacher(self, name: str) -> TeacherSpec:
        return next(t for t in self.teachers if t.name == name)

    def student(self, name: str) -> StudentSpec:
        return next(s for s in self.students if s.name == name)

    def stages(self, name: str) -> list[StudentSpec]:
        """The student's stages, first to last: the students it is built on (base.student, and so on), then itself.

        One stage for a student built from a model or an architecture; the first stage's base
        is the model the whole chain starts from.
        """
        chain = [self.student(name)]
        while chain[0].base.student is not None:
            chain.insert(0, self.student(chain[0].base.student))
        return chain

    def students_by_stage(self) -> list[list[str]]:
        """Student names grouped by stage: first those built from a model or architecture, then those built on
        them, and so on; each group in spec order."""
        depth = {s.name: len(self.stages(s.name)) for s in self.students}
        return [[n for n in depth if depth[n] == d] for d in range(1, max(depth.values()) + 1)]

    def quality_for(self, task: str) -> QualitySpec:
        """The task's own `quality` block if it has one, else the top-level one."""
        return self.task(task).quality or self.quality

    def candidates(self, task: str) -> list[str]:
        """The teachers that may generate a task's data (exactly one with `routing: fixed`)."""
        return [
            t.name
            for t in self.teachers
            if (t.tasks is None and self.routing_mode == "auto") or task in (t.tasks or [])
        ]

    def dev_size(self, task: str) -> int:
        size = self.task(task).dev_size
        return size if size is not None else (100 if self.routing_mode == "auto" else 0)

    def _check_method(self, student: StudentSpec) -> None:
        """What the student's method needs from the spec (captured logprobs, a local teacher): its own `check`."""
        METHODS[student.method].check(self, student)

    def resolve(self, path_or_id: str) -> str:
        """A path relative to the spec file if it exists there, else the string as given (a hub id)."""
        candidate = self.base_dir / path_or_id
        return str(candidate.resolve()) if candidate.exists() else path_or_id

    def model_path(self, path_or_id: str) -> str:
        """A model to load: `resolve`d, with a GGUF file converted once into a checkpoint beside it."""
        resolved = self.resolve(path_or_id)
        if resolved.endswith(".gguf"):
            from distill_assets.gguf import convert

            return str(convert(resolved))
        return resolved

    def resolve_path(self, path: str) -> Path:
        return (self.base_dir / path).resolve()

    def storage_path(self) -> Path:
        """The local artifact folder: the root itself, or for an object-store root its local working copy."""
        root = self.storage_location()
        if is_url(root):
            return Path(os.environ.get(LOCAL_STORAGE_ENV) or local_cache_for(root))
        return Path(root)

    def storage_location(self) -> str:
        """The artifact root: a resolved local path, or an fsspec URL (s3://bucket/prefix, gs://..., memory://...)."""
        root = os.environ.get(STORAGE_ENV) or self.storage_root
        return root if is_url(root) else str(self.resolve_path(root.removeprefix("file://")))


def is_url(root: str) -> bool:
    """An fsspec URL (s3://, gs://, az://, memory://), not a local path; file:// counts as local."""
    return "://" in root and not root.startswith("file://")


def local_cache_for(url: str) -> Path:
    """Where an object-store root keeps what needs a local file system (SQLite cache, checkpoints in training)."""
    return Path.home() / ".cache" / "distill" / hashlib.sha256(url.encode()).hexdigest()[:12]


def _field_path(loc: tuple, data: dict) -> str:
    """Render a pydantic location with list items named, e.g. teachers.teacher_a.generation."""
    parts: list[str] = []
    node = data
    for key in loc:
        if isinstance(key, int) and isinstance(node, list) and key < len(node):
            item = node[key]
            name = item.get("name") if isinstance(item, dict) else None
            parts.append(str(name) if name else f"[{key}]")
            node = item
        else:
            parts.append(str(key))
            node = node.get(key) if isinstance(node, dict) else None
    return ".".join(parts)


def load_spec(path: str | os.PathLike) -> Spec:
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: spec file not found (set ${SPEC_ENV} or pass the path)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SpecError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return Spec.model_validate({**data, "base_dir": path.resolve().parent})
    except ValidationError as err:
        lines = []
        for e in err.errors():
            where = _field_path(e["loc"], data) or "(top level)"
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(f"  {where}: {msg}")
        raise SpecError(f"{path}: invalid spec\n" + "\n".join(lines)) from None


def default_spec_path() -> Path:
    return Path(os.environ.get(SPEC_ENV) or Path(__file__).resolve().parent.parent / "distill.yaml")
