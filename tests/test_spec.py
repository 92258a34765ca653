import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from distill_assets.spec import SpecError, load_spec
from tests.conftest import PROJECT_DIR


def write(tmp_path: Path, data) -> Path:
    path = tmp_path / "distill.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def test_demo_spec_loads_and_routes_every_task():
    spec = load_spec(PROJECT_DIR / "distill.yaml")
    assert spec.routing_mode == "auto"  # measured on the dev split: both teachers are candidates for every task
    assert all(spec.candidates(t.name) == ["teacher_a", "teacher_b"] for t in spec.tasks)
    assert {s.method for s in spec.students} >= {"sft", "offline_logits"}
    assert Path(spec.resolve(spec.teachers[0].model)).is_dir()


def test_valid_shrunken_spec(spec_file):
    spec = load_spec(spec_file)
    assert spec.base_dir == spec_file.parent
    assert spec.storage_path() == spec_file.parent / "artifacts"


def test_storage_root_from_environment(spec_file, monkeypatch, tmp_path):
    monkeypatch.setenv("DISTILL_STORAGE_ROOT", str(tmp_path / "elsewhere"))
    assert load_spec(spec_file).storage_path() == tmp_path / "elsewhere"


def _error(tmp_path, data) -> str:
    with pytest.raises(SpecError) as err:
        load_spec(write(tmp_path, data))
    return str(err.value)


def test_error_names_file_and_field_of_a_bad_value(tmp_path, spec_file):
    data = yaml.safe_load(spec_file.read_text())
    data["teachers"][1]["generation"]["temperature"] = -1
    message = _error(tmp_path, data)
    assert str(tmp_path / "distill.yaml") in message
    assert "teachers.teacher_b.generation.temperature" in message


def test_unknown_task_in_teacher(tmp_path, spec_file):
    data = yaml.safe_load(spec_file.read_text())
    data["teachers"][0]["tasks"].append("poetry")
    assert "teachers.teacher_a.tasks: unknown task 'poetry'" in _error(tmp_path, data)


def test_task_routed_twice_and_task_not_routed(tmp_path, spec_file):
    data = yaml.safe_load(spec_file.read_text())
    data["teachers"][1]["tasks"] = ["dates"]
    message = _error(tmp_path, data)
    assert "already routed to 'teacher_a'" in message


def test_unrouted_task(tmp_path, spec_file):
    data = yaml.safe_load(spec_file.read_text())
    data["teachers"][1]["tasks"] = ["units"]
    data["teachers"][0]["tasks"] = ["dates"]
    assert "no teacher is routed task(s) ['reverse']" in _error(tmp_path, data)


def test_missing_and_unknown_fields(tmp_path, spec_file):
    data = yaml.safe_load(spec_file.read_text())
    del data["teachers"][0]["model"]
    data["students"][0]["trainig"] = {}
    message = _error(tmp_path, data)
    assert "teachers.teacher_a.model: Field required" in message
    assert "students.student_m.trainig: Extra inputs are not permitted" in message


def test_student_needs_exactly_one_base(tmp_path, spec_file):
    data = yaml.safe_load(spec_file.read_text())
    data["students"][0]["base"]["model"] = "meta-llama/Llama-3.2-1B-Instruct"
    assert "students.student_m.base: give exactly one of `model`, `architecture` or `student`" in _error(tmp_path, data)


def test_duplicate_names(tmp_path, spec_file):
    data = yaml.safe_load(spec_file.read_text())
    data["students"][1]["name"] = "student_m"
    assert "students: duplicate name(s) ['student_m']" in _error(tmp_path, data)


def test_not_yaml_and_missing_file(tmp_path):
    assert "not valid YAML" in _error(tmp_path, "tasks: [unclosed")
    assert "expected a mapping" in _error(tmp_path, "- just a list")
    with pytest.raises(SpecError, match="spec file not found"):
        load_spec(tmp_path / "nope.yaml")


def test_teacher_version_changes_with_what_changes_outputs(spec_file):
    spec = load_spec(spec_file)
    teacher = spec.teachers[0]
    hotter = teacher.model_copy(update={"generation": teacher.generation.model_copy(update={"temperature": 0.7})})
    bigger_batch = teacher.model_copy(update={"generation": teacher.generation.model_copy(update={"batch_size": 999})})
    assert teacher.version() != hotter.version()
    assert teacher.version() == bigger_batch.version()


def test_openai_teacher_needs_base_urls(tmp_path, spec_file):
    data = yaml.safe_load(spec_file.read_text())
    data["teachers"][0] |= {"backend": "openai", "model": "meta-llama/Llama-3.1-70B-Instruct"}
    assert "teachers.teacher_a: base_urls: backend 'openai' needs at least one endpoint" in _error(tmp_path, data)
    data["teachers"][0]["base_urls"] = ["localhost:8000/v1"]
    assert "base_urls: 'localhost:8000/v1' is not an http(s) URL" in _error(tmp_path, data)
    data["teachers"][0] |= {"base_urls": ["http://127.0.0.1:8000/v1"], "api_key_env": "TEACHER_KEY"}
    teacher = load_spec(write(tmp_path, data)).teacher("teacher_a")
    assert teacher.concurrency == 16 and teacher.max_retries == 5 and teacher.timeout_s > 0


def test_http_fields_on_a_local_teacher_and_bad_values_are_named(tmp_path, spec_file):
    data = yaml.safe_load(spec_file.read_text())
    data["teachers"][1]["base_urls"] = ["http://127.0.0.1:8000/v1"]
    assert "teachers.teacher_b: base_urls: only used with backend 'openai'" in _error(tmp_path, data)
    data = yaml.safe_load(spec_file.read_text())
    data["teachers"][1] |= {"backend": "openai", "base_urls": ["http://x/v1"], "concurrency": 0}
    assert "teachers.teacher_b.concurrency" in _error(tmp_path, data)
    data["teachers"][1] |= {"concurrency": 4, "api_key_env": "not a variable"}
    assert "teachers.teacher_b.api_key_env" in _error(tmp_path, data)
    data["teachers"][1] |= {"api_key_env": None, "api_key": "sk-literal"}
    assert "teachers.teacher_b.api_key: Extra inputs are not permitted" in _error(tmp_path, data)


def test_sampling_fields(tmp_path, spec_file):
    data = yaml.safe_load(spec_file.read_text())
    data["teachers"][0]["generation"] |= {"n": 4, "temperature": 0.0}
    assert "teachers.teacher_a.generation: n: n > 1 needs temperature > 0" in _error(tmp_path, data)
    data["teachers"][0]["generation"] |= {"temperature": 0.8, "top_logprobs": 50}
    assert "teachers.teacher_a.generation.top_logprobs" in _error(tmp_path, data)
    data["teachers"][0]["generation"]["top_logprobs"] = 5
    teacher = load_spec(write(tmp_path, data)).teacher("teacher_a")
    assert (teacher.generation.n, teacher.generation.top_logprobs) == (4, 5)


def test_method_and_its_settings_block(tmp_path, spec_file):
    assert load_spec(spec_file).student("student_m").method_label() == "sft"  # the default method
    data = yaml.safe_load(spec_file.read_text())
    data["students"][0] |= {"method": "on_policy", "on_policy": {"teacher": "teacher_b", "beta": 0.2}}
    data["students"][0]["lora"] = {"r": 4}
    student = load_spec(write(tmp_path, data)).student("student_m")
    settings = student.method_settings()
    assert (student.method, settings.teacher, settings.beta) == ("on_policy", "teacher_b", 0.2)
    assert settings.temperature == 1.0  # the default of a field the block leaves out
    assert student.method_label() == "on_policy + LoRA"


def test_unknown_method_and_bad_method_blocks_are_named(tmp_path, spec_file):
    data = yaml.safe_load(spec_file.read_text())
    data["students"][0]["method"] = "dpo"
    message = _error(tmp_path, data)
    assert "students.student_m.method: Input should be 'sft', 'on_policy', 'offline_logits', " in message
    data["students"][0] |= {"method": "on_policy", "on_policy": {"teacher": "teacher_a", "beta": 2}}
    assert "students.student_m.on_policy.beta" in _error(tmp_path, data)
    data["students"][0]["on_policy"] = {"teacher": "teacher_a", "betta": 0.5}
    assert "students.student_m.on_policy.betta: Extra inputs are not permitted" in _error(tmp_path, data)
    data["students"][0]["on_policy"] = {"teacher": "teacher_a"}
    data["students"][0]["offline_logits"] = {"alpha": 0.5}
    message = _error(tmp_path, data)
    assert "offline_logits: settings for method 'offline_logits', but the student's method is 'on_policy'" in message


def test_method_checks_against_the_teachers(tmp_path, spec_file):
    data = yaml.safe_load(spec_file.read_text())
    data["students"][0]["method"] = "offline_logits"
    assert "set teachers.teacher_a.generation.top_logprobs" in _error(tmp_path, data)
    for teacher in data["teachers"]:
        teacher["generation"]["top_logprobs"] = 3
    load_spec(write(tmp_path, data))
    data["teachers"][1] |= {"backend": "openai", "base_urls": ["http://127.0.0.1:8000/v1"]}
    message = _error(tmp_path, data)
    assert "students.student_m.method: offline_logits needs token ids, which teachers.teacher_b" in message

    data["students"][0]["method"] = "on_policy"
    assert "students.student_m.on_policy.teacher: name the teacher to load" in _error(tmp_path, data)
    data["students"][0]["on_policy"] = {"teacher": "teacher_c"}
    assert "students.student_m.on_policy.teacher: unknown teacher 'teacher_c'" in _error(tmp_path, data)
    data["students"][0]["on_policy"] = {"teacher": "teacher_b"}
    assert "on_policy.teacher: on-policy distillation loads the teacher locally" in _error(tmp_path, data)
    data["students"][0]["on_policy"] = {"teacher": "teacher_a"}
    assert load_spec(write(tmp_path, data)).student("student_m").method_settings().teacher == "teacher_a"


def test_the_spec_imports_method_settings_without_torch_or_trl():
    # The spec imports every method file for its settings; their trainers load torch and trl only when built.
    heavy = "{'torch', 'trl', 'datasets', 'transformers'}"
    code = f"import sys, distill_assets.spec; print(sorted({heavy} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_DIR, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr[-2000:]
