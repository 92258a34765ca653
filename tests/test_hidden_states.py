"""Feature distillation (method hidden_states) on the tiny teacher, and the loss-term diagnostics every method logs."""

import json
import shutil

import pytest
import torch
import yaml
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

from distill_assets import training
from distill_assets.methods.hidden_states import even_layer_map, layer_map
from distill_assets.methods.hidden_states_trainer import TeacherStates, feature_loss
from distill_assets.spec import SpecError, load_spec
from distill_assets.template_check import check_same_vocabulary
from distill_assets.training import _LogCallback, build_student_base, loss_term_imbalance, train_student
from tests.test_methods import method_spec, training_frame  # noqa: F401  (the tiny spec and its training set)

CPU = torch.device("cpu")
TRAINING = {"max_steps": 6, "per_device_train_batch_size": 8, "learning_rate": 0.01, "logging_steps": 1,
            "max_length": 64, "warmup_ratio": 0.0, "lr_scheduler_type": "constant"}  # fmt: skip


def arch(teacher, hidden_size: int, layers: int = 1) -> dict:
    return {"architecture": {"hidden_size": hidden_size, "num_hidden_layers": layers, "num_attention_heads": 2},
            "tokenizer": str(teacher)}  # fmt: skip


@pytest.fixture(scope="module")
def feature_spec(method_spec, tiny_teacher, tmp_path_factory):  # noqa: F811
    """The methods' spec with hidden_states students: narrower than the teacher, as wide, with LoRA, cosine."""
    data = yaml.safe_load((method_spec.base_dir / "distill.yaml").read_text())
    data["students"] = [
        {"name": "s_feat", "base": arch(tiny_teacher, 16), "method": "hidden_states", "training": TRAINING},
        {"name": "s_feat_wide", "base": arch(tiny_teacher, 32, layers=2), "method": "hidden_states",
         "hidden_states": {"loss": "cosine", "layers": [[0, 0], [2, 1]], "alpha": 0.3}, "training": TRAINING},
        {"name": "s_feat_lora", "base": arch(tiny_teacher, 16), "method": "hidden_states", "training": TRAINING,
         "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}},
    ]  # fmt: skip
    path = method_spec.base_dir / "feature.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_spec(path)


def test_even_layer_map_spaces_student_blocks_over_the_teachers_last_to_last():
    assert even_layer_map(2, 10) == [(1, 5), (2, 10)]
    assert even_layer_map(4, 6) == [(1, 2), (2, 3), (3, 5), (4, 6)]  # halves round up
    assert even_layer_map(1, 1) == [(1, 1)]
    assert even_layer_map(3, 1) == [(1, 1), (2, 1), (3, 1)]  # a deeper student: never the embeddings by default


def test_explicit_layers_are_checked_against_both_depths():
    assert layer_map([(0, 0), (2, 7)], 2, 10, "where") == [(0, 0), (2, 7)]
    assert layer_map(None, 2, 10, "where") == [(1, 5), (2, 10)]
    with pytest.raises(ValueError, match=r"students\.s\.hidden_states\.layers: \[3, 1\] is past"):
        layer_map([(3, 1)], 2, 10, "students.s.hidden_states.layers")
    with pytest.raises(ValueError, match="teacher 10"):
        layer_map([(1, 11)], 2, 10, "where")


def test_feature_loss_is_relative_squared_error_or_cosine_distance_over_masked_tokens():
    teacher = torch.tensor([[[2.0, 0.0], [0.0, 4.0], [9.0, 9.0]]])
    student = torch.tensor([[[1.0, 0.0], [0.0, 4.0], [0.0, 0.0]]])
    mask = torch.tensor([[True, True, False]])  # the padded third token is left out
    assert feature_loss(student, teacher, mask, "mse").item() == pytest.approx(1.0 / 20.0)
    assert feature_loss(torch.zeros_like(teacher), teacher * 1000, mask, "mse").item() == pytest.approx(1.0)
    assert feature_loss(student, teacher, mask, "cosine").item() == pytest.approx(0.0, abs=1e-6)
    orthogonal = torch.tensor([[[0.0, 1.0], [1.0, 0.0], [0.0, 0.0]]])
    assert feature_loss(orthogonal, teacher, mask, "cosine").item() == pytest.approx(1.0)
    assert feature_loss(student, teacher, torch.zeros_like(mask), "mse").item() == 0.0


@pytest.mark.parametrize("name", ["s_feat", "s_feat_wide", "s_feat_lora"])
def test_hidden_states_trains_logs_its_terms_and_saves_a_plain_causal_lm(name, feature_spec, training_frame, tmp_path):  # noqa: F811
    student = feature_spec.student(name)
    out = tmp_path / name
    lines = []
    metrics = train_student(student, feature_spec, training_frame, out, CPU, log=lines.append)
    history = metrics["loss_history"]
    assert len(history) == 6 and min(h["loss"] for h in history[-2:]) < history[0]["loss"], history
    alpha = student.method_settings().alpha
    for entry in history:  # the logged loss is the weighted sum of the two logged terms
        assert entry["loss"] == pytest.approx((1 - alpha) * entry["ce"] + alpha * entry["feature"], rel=1e-4)
    assert set(metrics["first_loss_terms"]) == set(metrics["final_loss_terms"]) == {"ce", "feature"}
    assert metrics["final_loss_terms"]["feature"] < metrics["first_loss_terms"]["feature"]
    assert any("(ce " in line and "feature " in line for line in lines)
    assert json.loads((out / "training_metrics.json").read_text())["final_loss_terms"] == metrics["final_loss_terms"]
    # The projections were the trainer's: the checkpoint holds exactly the student's own weights.
    base, _ = build_student_base(student, feature_spec)
    base.save_pretrained(tmp_path / "base")
    with safe_open(out / "model.safetensors", "pt") as saved, safe_open(tmp_path / "base/model.safetensors", "pt") as b:
        assert set(saved.keys()) == set(b.keys())
    model, info = AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    assert not any("lora" in n for n, _ in model.named_parameters())


def test_projections_train_where_the_widths_differ(feature_spec, training_frame, tmp_path, monkeypatch):  # noqa: F811
    from distill_assets.methods import hidden_states_trainer

    seen = {}
    original = hidden_states_trainer.HiddenStatesTrainer.create_optimizer

    def spy(self, model=None):
        optimizer = original(self, model)
        seen["projection"] = [p.detach().clone() for p in self.projections.parameters()]
        seen["trainer"] = self
        return optimizer

    monkeypatch.setattr(hidden_states_trainer.HiddenStatesTrainer, "create_optimizer", spy)
    train_student(feature_spec.student("s_feat"), feature_spec, training_frame, tmp_path / "s", CPU, log=lambda _: None)
    after = list(seen["trainer"].projections.parameters())
    assert [p.shape for p in after] == [torch.Size([32, 16])] * 2  # one per teacher, 16 -> 32 wide
    assert all(not torch.equal(a, b) for a, b in zip(after, seen["projection"]))  # the optimizer stepped them


def test_another_tokenizer_is_a_clear_error_naming_both(feature_spec, training_frame, tiny_teacher, tmp_path):  # noqa: F811
    other_dir = tmp_path / "other_tokenizer"
    shutil.copytree(tiny_teacher, other_dir)
    other = AutoTokenizer.from_pretrained(other_dir)
    other.add_tokens(["<extra>"])
    other.save_pretrained(other_dir)
    with pytest.raises(ValueError, match="another vocabulary") as error:
        check_same_vocabulary(AutoTokenizer.from_pretrained(tiny_teacher), other, "teacher_a")
    assert str(tiny_teacher) in str(error.value) and str(other_dir) in str(error.value)
    student = feature_spec.student("s_feat")
    student = student.model_copy(update={"base": student.base.model_copy(update={"tokenizer": str(other_dir)})})
    with pytest.raises(ValueError, match=r"students.s_feat.method: teacher 'teacher_a'.*another vocabulary"):
        train_student(student, feature_spec, training_frame, tmp_path / "s", CPU, log=lambda _: None)


def test_spec_errors_name_the_field(feature_spec, tmp_path):
    data = yaml.safe_load((feature_spec.base_dir / "feature.yaml").read_text())
    data["students"][0]["launcher"] = {"kind": "torchrun", "nproc_per_node": 2}
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError, match=r"s_feat\.launcher\.nproc_per_node"):
        load_spec(tmp_path / "a.yaml")
    data = yaml.safe_load((feature_spec.base_dir / "feature.yaml").read_text())
    data["students"][0]["hidden_states"] = {"loss": "l1"}
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError, match="hidden_states"):
        load_spec(tmp_path / "b.yaml")
    data["students"][0]["hidden_states"] = {"layers": [[1, -1]]}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError, match=r"hidden_states\.layers"):
        load_spec(tmp_path / "c.yaml")
    data["students"][0]["hidden_states"] = {}
    data["teachers"][1] |= {"backend": "openai", "base_urls": ["http://127.0.0.1:8000/v1"]}
    (tmp_path / "d.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError, match=r"s_feat\.method: hidden_states loads each teacher.*teachers\.teacher_b"):
        load_spec(tmp_path / "d.yaml")


def test_imbalance_warns_when_one_term_is_over_100x_the_other_in_the_first_steps():
    steps = [{"step": i, "loss": 1.0, "ce": 2.3, "kd": 0.01} for i in range(1, 6)]
    warning = loss_term_imbalance(steps, ["ce", "kd"])
    assert warning and "230x" in warning and "first 3 logged steps" in warning and "ce 2.3" in warning
    assert loss_term_imbalance([{**s, "kd": 0.05} for s in steps], ["ce", "kd"]) is None  # 46x: fine
    assert loss_term_imbalance(steps, ["ce"]) is None  # one term (sft, on_policy): nothing to balance
    assert loss_term_imbalance([{**s, "kd": 0.0} for s in steps], ["ce", "kd"]).startswith("loss terms differ by an")
    late = [{"step": i, "ce": 2.3, "kd": 1.0 if i <= 3 else 1e-4} for i in range(1, 9)]
    assert loss_term_imbalance(late, ["ce", "kd"]) is None  # only the first steps count
    assert loss_term_imbalance([], ["ce", "kd"]) is None


def test_the_log_callback_records_terms_and_warns_once():
    lines = []
    callback = _LogCallback(lines.append, max_steps=10, terms={"ce": "ce", "kd": "kl"})

    class State:
        global_step = 0

    for step in range(1, 6):
        State.global_step = step
        callback.on_log(None, State, None, logs={"loss": 1.2, "ce": 2.3, "kl": 0.001, "grad_norm": 1.0})
    callback.on_train_end(None, State, None)
    assert callback.history[0] == {"step": 1, "loss": 1.2, "ce": 2.3, "kd": 0.001}
    assert "loss 1.2000 (ce 2.3000, kd 0.0010)" in lines[0]
    warnings = [line for line in lines if line.startswith("WARNING")]
    assert len(warnings) == 1 and "2,300x" in warnings[0] and callback.warning in warnings[0]


def test_the_warning_is_recorded_in_the_checkpoints_metrics(feature_spec, training_frame, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setattr(training, "IMBALANCE_RATIO", 1.0)  # any two unequal terms now differ "too much"
    metrics = train_student(feature_spec.student("s_feat"), feature_spec, training_frame, tmp_path / "s", CPU, print)
    written = json.loads((tmp_path / "s" / "training_metrics.json").read_text())
    assert metrics["loss_warning"] and written["loss_warning"] == metrics["loss_warning"]
    assert written["loss_warning"].startswith("loss terms differ by")


def test_teacher_states_are_computed_once_per_row_and_kept_within_the_budget(tiny_teacher):
    teacher = AutoModelForCausalLM.from_pretrained(tiny_teacher).eval()
    ids = torch.tensor([[5, 6, 7, 0], [8, 9, 0, 0], [5, 6, 7, 8]])
    mask = (ids != 0).long()
    with torch.no_grad():
        direct = teacher(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    states = TeacherStates(budget_bytes=2**20)
    first = states.batch(teacher, [1, 0], ids[:2], mask[:2], [10, 11])
    again = states.batch(teacher, [1, 0], ids[[1, 2, 0]], mask[[1, 2, 0]], [11, 12, 10])  # 11, 10 kept; 12 new
    assert (states.computed, states.reused) == (3, 2)
    for layer, j in ((1, 0), (0, 1)):
        real = mask.bool()
        torch.testing.assert_close(first[j][:2][real[:2]], direct[layer][:2][real[:2]])
        order = [1, 2, 0]
        torch.testing.assert_close(again[j][real[order]], direct[layer][order][real[order]])
        assert (again[j][~real[order]] == 0).all()  # padding stays zero
    none_kept = TeacherStates(budget_bytes=0)
    none_kept.batch(teacher, [1], ids, mask, [0, 1, 2])
    none_kept.batch(teacher, [1], ids, mask, [0, 1, 2])
    assert (none_kept.computed, none_kept.reused, none_kept.used) == (6, 0, 0)
