"""Teachers without a chat template: raw prompts (`mode: completion`), stop strings, over every backend."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from distill_assets.generation import generate_completions, prompt_mode, teacher_prompt
from distill_assets.spec import SpecError, TaskSpec, TeacherSpec, load_spec
from resources.backends import Request, SamplingParams
from resources.generation_cache import request_key
from resources.http_backend import HttpBackend, parse_completion
from resources.transformers_backend import TransformersBackend
from tests.conftest import without_chat_template
from tests.generate_child import demo_prompts
from tests.openai_server import FakeTeacher, OpenAIServer

TASK = TaskSpec(name="reverse", source="-", system_prompt=None)
FEW_SHOT = "Reverse: abc\nAnswer: cba\n\nReverse: {prompt}\nAnswer:"


@pytest.fixture(scope="module")
def base_model(tmp_path_factory, tiny_teacher) -> Path:
    """The tiny teacher without its chat template."""
    return without_chat_template(tiny_teacher, tmp_path_factory.mktemp("models") / "base_model")


def test_a_local_model_without_chat_template_is_prompted_with_raw_text(spec_file, base_model, tiny_teacher):
    spec = load_spec(spec_file)
    base = TeacherSpec(name="base", model=str(base_model), prompt_template=FEW_SHOT)
    assert prompt_mode(base, spec) == "completion"
    assert prompt_mode(TeacherSpec(name="chat", model=str(tiny_teacher)), spec) == "chat"
    assert prompt_mode(base.model_copy(update={"mode": "chat"}), spec) == "chat"  # the spec's word wins
    served = TeacherSpec(name="served", backend="openai", model="m", base_urls=["http://h/v1"])
    assert prompt_mode(served, spec) == "chat"
    assert teacher_prompt(base, TASK, "xyz", "completion") == FEW_SHOT.replace("{prompt}", "xyz")
    with_system = TASK.model_copy(update={"system_prompt": "Be brief."})
    assert teacher_prompt(base, with_system, "xyz", "completion").startswith("Be brief.\n\nReverse: abc")
    assert teacher_prompt(base, with_system, "xyz", "chat") == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": FEW_SHOT.replace("{prompt}", "xyz")},
    ]


def test_transformers_backend_cuts_at_the_stop_string_with_its_tokens_and_logprobs(base_model):
    backend = TransformersBackend.load(str(base_model), torch.device("cpu"), torch.float32, batch_size=4)
    prompts = ["Reverse: abcdef\nAnswer:", "Reverse: hello\nAnswer:"]
    free = backend.complete([Request(p) for p in prompts], SamplingParams(max_new_tokens=12, top_logprobs=3))
    assert all(len(c.top_logprobs) == c.num_tokens for c in free)
    # Stop at a character each free-running answer writes after its start (the tokenizer is per character).
    stop = next(ch for ch in free[0].text[2:] if ch.strip())
    cut = backend.complete(
        [Request(p) for p in prompts], SamplingParams(max_new_tokens=12, top_logprobs=3, stop=(stop,))
    )
    for before, after in zip(free, cut):
        expected = before.text.split(stop)[0]
        assert after.text == expected
        if stop in before.text:
            assert after.finish_reason == "stop"
            assert after.num_tokens == len(expected) == len(after.top_logprobs)
            assert after.top_logprobs == before.top_logprobs.head(after.num_tokens)


def test_chat_prompts_to_a_model_without_chat_template_fail_with_the_fix(base_model):
    backend = TransformersBackend.load(str(base_model), torch.device("cpu"), torch.float32)
    with pytest.raises(ValueError, match=r"no chat template.*mode: completion.*prompt_template"):
        backend.complete([Request([{"role": "user", "content": "hi"}])], SamplingParams(max_new_tokens=2))


def test_http_backend_sends_raw_prompts_to_completions_and_reads_their_logprobs():
    teacher = FakeTeacher()
    with OpenAIServer(teacher) as server:
        backend = HttpBackend([server.url], model="base", concurrency=4)
        params = SamplingParams(max_new_tokens=32, top_logprobs=3, stop=("|",))
        raw, chat = backend.complete([Request("lmn|opq"), Request([{"role": "user", "content": "lmn|opq"}])], params)
    assert teacher.endpoints == {"/v1/completions": 1, "/v1/chat/completions": 1}
    for completion in (raw, chat):  # the fake answers the prompt reversed, cut before the stop string
        assert completion.ok and completion.text == "qpo"
        assert len(completion.top_logprobs) == 3
        step = completion.top_logprobs.entries()[0]
        assert step[0].token == "q" and [t.logprob for t in step] == sorted((t.logprob for t in step), reverse=True)


def test_generation_in_completion_mode_caches_apart_from_chat(tmp_path):
    teacher = TeacherSpec(name="base", backend="openai", model="m", base_urls=["http://h/v1"], prompt_template=FEW_SHOT)
    params = SamplingParams(max_new_tokens=8)
    raw_key = request_key("t", teacher_prompt(teacher, TASK, "abc", "completion"), params, 0)
    chat_key = request_key("t", teacher_prompt(teacher, TASK, "abc", "chat"), params, 0)
    stop_key = request_key("t", teacher_prompt(teacher, TASK, "abc", "completion"), SamplingParams(8, stop=("\n",)), 0)
    assert len({raw_key, chat_key, stop_key}) == 3
    with OpenAIServer(FakeTeacher()) as server:
        served = teacher.model_copy(update={"base_urls": [server.url], "mode": "completion"})
        backend = HttpBackend([server.url], model="m")
        frame = generate_completions(backend, demo_prompts(3), served, TASK, mode="completion")
    # The fake reverses what it was sent: the few-shot template went out as one raw prompt.
    assert frame["completion"].to_list() == [FEW_SHOT.replace("{prompt}", p)[::-1][:64] for p in frame["prompt"]]


def test_a_prompt_template_per_task(spec_file):
    data = yaml.safe_load(spec_file.read_text())
    task = data["tasks"][0]["name"]
    data["teachers"][0]["prompt_template"] = {task: "Examples...\nQ: {prompt}\nA:"}
    spec_file.write_text(yaml.safe_dump(data))
    teacher = load_spec(spec_file).teachers[0]
    assert teacher.render("x", task) == "Examples...\nQ: x\nA:"
    assert teacher.render("x", "another_task") == "x"  # tasks not named get the bare prompt
    data["teachers"][0]["prompt_template"] = {"nope": "{prompt}"}
    spec_file.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError, match="prompt_template: unknown task 'nope'"):
        load_spec(spec_file)
    data["teachers"][0]["prompt_template"] = {task: "no placeholder"}
    spec_file.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError, match=f"prompt_template.{task}: must contain"):
        load_spec(spec_file)


def test_extra_body_reaches_the_server_and_a_listed_stop_token_is_not_kept():
    seen = []

    def answer(messages, body):
        seen.append(body)
        return "12", "stop", [[("1", -0.1)], [("2", -0.2)]]

    with OpenAIServer(FakeTeacher(answer=answer)) as server:
        backend = HttpBackend([server.url], model="m", extra_body={"repeat_penalty": 1.0})
        backend.complete([Request("x")], SamplingParams(max_new_tokens=4))
    assert seen[0]["repeat_penalty"] == 1.0
    # llama.cpp lists the token of the stop string it cut ("\n" here) although the text leaves it out
    payload = {"choices": [{"text": "12", "finish_reason": "stop", "logprobs": {
        "tokens": ["1", "2", "\n"], "top_logprobs": [{"1": -0.1}, {"2": -0.2}, {"\n": -0.3}]}}]}  # fmt: skip
    completion = parse_completion(payload)
    assert completion.top_logprobs.tokens == (("1",), ("2",))
