"""The backend a teacher's spec names, and the same behind the generation cache.

Every place that asks a teacher something (generation, teacher evaluation, the judge, a
generation pod) opens it with `cached_teacher`, so a question already answered is never
sent again, whichever asset asks it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from distill_assets.generation import teacher_identity
from resources.backends import TeacherBackend
from resources.cached_backend import CachedBackend, GenerationStats
from resources.generation_cache import open_generation_cache

if TYPE_CHECKING:
    import torch

    from distill_assets.spec import Spec, TeacherSpec


class Placement(Protocol):
    """Where a local model runs (the accelerator resource is one)."""

    dtype: str  # as configured: 'auto' lets vLLM take the checkpoint's own

    def torch_device(self) -> torch.device: ...

    def torch_dtype(self) -> torch.dtype: ...


def build_backend(teacher: TeacherSpec, spec: Spec, placement: Placement) -> TeacherBackend:
    """The backend a teacher's spec names, loaded and ready (imports each engine only when used)."""
    if teacher.backend == "transformers":
        from resources.transformers_backend import TransformersBackend

        return TransformersBackend.load(
            spec.model_path(teacher.model),
            placement.torch_device(),
            placement.torch_dtype(),
            batch_size=teacher.generation.batch_size,
            revision=teacher.revision,
        )
    if teacher.backend == "vllm":
        from resources.vllm_backend import VLLMBackend

        return VLLMBackend.load(spec.model_path(teacher.model), dtype=placement.dtype, revision=teacher.revision)
    if teacher.backend == "openai":
        from resources.http_backend import HttpBackend
        from resources.retry import RetryPolicy

        return HttpBackend(
            base_urls=teacher.endpoints(),
            model=teacher.model,
            api_key=HttpBackend.api_key_from_env(teacher.api_key_env),
            concurrency=teacher.concurrency,
            timeout_s=teacher.timeout_s,
            retry=RetryPolicy(max_retries=teacher.max_retries),
            name=teacher.name,
            extra_body=teacher.extra_body,
        )
    raise ValueError(f"teachers.{teacher.name}.backend: unknown backend {teacher.backend!r}")


@contextmanager
def cached_teacher(
    teacher: TeacherSpec,
    spec: Spec,
    placement: Placement,
    cache_path: Path,
    report: Callable[[GenerationStats], None] | None = None,
) -> Iterator[CachedBackend]:
    """The teacher behind the generation cache; the model is loaded only if the cache lacks an answer.

    The cache is SQLite at `cache_path`, or Postgres when DISTILL_CACHE_URL names one (`open_generation_cache`).
    """
    cache = open_generation_cache(cache_path)
    backend = CachedBackend(
        lambda: build_backend(teacher, spec, placement), cache, teacher_identity(teacher, spec), report=report
    )
    try:
        yield backend
    finally:
        backend.close()
        cache.close()
