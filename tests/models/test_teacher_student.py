"""Tests of lmjax.models.teacher_student: configs, the frozen teacher, student init from teacher."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from lmjax import models
from lmjax.models import bert, distilbert, teacher_student, tinybert

TEACHER = dict(
    family="bert", vocab_size=64, max_len=16, num_layers=4, embed_dim=32, num_heads=4,
    mlp_dim=48, scan_layers=False,
)
STUDENT = dict(
    family="distilbert", vocab_size=64, max_len=16, num_layers=2, embed_dim=32, num_heads=4,
    mlp_dim=48, scan_layers=False,
)
CONFIG = teacher_student.TeacherStudentConfig(teacher=TEACHER, student=STUDENT)
IDS = jax.random.randint(jax.random.key(0), (2, 6), 1, 64)
MASK = jnp.array([[1] * 6, [1] * 4 + [0] * 2])
TYPES = jnp.array([[0] * 3 + [1] * 3, [0] * 6])


@pytest.fixture(scope="module")
def params():
    model = teacher_student.TeacherStudent(CONFIG)
    return nn.unbox(model.init(jax.random.key(1), IDS)["params"])


def test_presets():
    tiny = teacher_student.PRESETS["bert-tiny-to-distilbert-tiny"]
    t, s = tiny.teacher_config(), tiny.student_config()
    assert isinstance(t, bert.BERTConfig) and isinstance(s, distilbert.DistilBERTConfig)
    assert (t.num_layers, s.num_layers, t.embed_dim, s.embed_dim) == (4, 2, 128, 128)
    assert t.vocab_size == s.vocab_size == 2048
    base = teacher_student.PRESETS["bert-base-to-distilbert"]
    assert teacher_student.count_params(base) == bert.count_params(
        bert.PRESETS["base"]
    ) + distilbert.count_params(distilbert.PRESETS["base"])
    four = teacher_student.PRESETS["bert-base-to-tinybert-4l"]
    assert four.per_layer_outputs and four.student_config() == tinybert.PRESETS["4l-312"]


def test_config_is_hashable_and_round_trips_through_config_dict():
    assert CONFIG.teacher[0] == ("family", "bert")
    hash(CONFIG)
    cfg = models.config_dict("teacher_student", "bert-tiny-to-distilbert-tiny")
    assert models.make_config(cfg) == teacher_student.PRESETS["bert-tiny-to-distilbert-tiny"]
    as_config_dict = teacher_student.TeacherStudentConfig(
        teacher=ml_collections.ConfigDict(TEACHER), student=STUDENT
    )
    assert as_config_dict.teacher_config() == CONFIG.teacher_config()
    built = models.build({"family": "teacher_student", "teacher": TEACHER, "student": STUDENT})
    assert isinstance(built, teacher_student.TeacherStudent)


def test_config_validation():
    with pytest.raises(ValueError, match="vocab_size"):
        teacher_student.TeacherStudentConfig(teacher=TEACHER, student=dict(STUDENT, vocab_size=65))
    with pytest.raises(ValueError, match="family"):
        teacher_student.TeacherStudentConfig(teacher={"num_layers": 2}, student=STUDENT)
    with pytest.raises(ValueError, match="num_heads"):
        teacher_student.TeacherStudentConfig(teacher=TEACHER, student=dict(STUDENT, num_heads=5))
    with pytest.raises(ValueError, match="per-layer"):
        teacher_student.TeacherStudentConfig(
            teacher=dict(family="gpt", vocab_size=64), student=STUDENT, per_layer_outputs=True
        )


def test_params_are_teacher_and_student_trees(params):
    assert set(params) == {"teacher", "student"}
    bert_shapes = bert.param_shapes(CONFIG.teacher_config())
    assert jax.tree.map(lambda x: x.shape, params["teacher"]) == jax.tree.map(
        lambda x: x.shape, bert_shapes
    )
    student_shapes = distilbert.param_shapes(CONFIG.student_config())
    assert jax.tree.map(lambda x: x.shape, params["student"]) == jax.tree.map(
        lambda x: x.shape, student_shapes
    )


def test_outputs_are_each_networks_own_and_the_teacher_is_deterministic(params):
    model = teacher_student.TeacherStudent(CONFIG)
    out = model.apply(
        {"params": params}, IDS, token_type_ids=TYPES, attention_mask=MASK, deterministic=False,
        rngs={"dropout": jax.random.key(5)},
    )
    teacher = bert.BERT(CONFIG.teacher_config()).apply(
        {"params": params["teacher"]}, IDS, token_type_ids=TYPES, attention_mask=MASK
    )
    for name in teacher:
        np.testing.assert_array_equal(out["teacher"][name], teacher[name])
    student_eval = distilbert.DistilBERT(CONFIG.student_config()).apply(
        {"params": params["student"]}, IDS, attention_mask=MASK
    )
    # The student ran with dropout (its default rate 0.1), so it differs from its eval output.
    assert not np.allclose(out["student"]["logits"], student_eval["logits"], atol=1e-3)
    eval_out = model.apply({"params": params}, IDS, token_type_ids=TYPES, attention_mask=MASK)
    np.testing.assert_array_equal(eval_out["student"]["logits"], student_eval["logits"])


def test_no_gradient_reaches_the_teacher(params):
    model = teacher_student.TeacherStudent(CONFIG)

    def loss(p):
        out = model.apply({"params": p}, IDS, attention_mask=MASK)
        return jnp.sum((out["student"]["logits"] - out["teacher"]["logits"]) ** 2)

    grads = jax.jit(jax.grad(loss))(params)
    assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in jax.tree.leaves(grads["teacher"]))
    assert any(float(jnp.max(jnp.abs(g))) > 0.0 for g in jax.tree.leaves(grads["student"]))


def test_student_params_from_teacher(params):
    student = teacher_student.student_params_from_teacher(CONFIG, params["teacher"])
    # 4 -> 2 layers: teacher layers (0, 3); unscanned student layout from the student config.
    for j, i in enumerate((0, 3)):
        jax.tree.map(np.testing.assert_array_equal, student["encoder"][f"layers_{j}"],
                     params["teacher"]["encoder"][f"layers_{i}"])
    np.testing.assert_array_equal(student["token_embed"]["embedding"],
                                  params["teacher"]["token_embed"]["embedding"])
    model = teacher_student.TeacherStudent(CONFIG)
    model.apply({"params": {"teacher": params["teacher"], "student": student}}, IDS)
    chosen = teacher_student.student_params_from_teacher(CONFIG, params["teacher"], layers=(1, 2))
    jax.tree.map(np.testing.assert_array_equal, chosen["encoder"]["layers_0"],
                 params["teacher"]["encoder"]["layers_1"])
    tiny_tinybert = teacher_student.PRESETS["bert-tiny-to-tinybert-tiny"]
    assert teacher_student.student_params_from_teacher(tiny_tinybert, params["teacher"]) is None


def test_per_layer_outputs_for_tinybert():
    config = teacher_student.TeacherStudentConfig(
        teacher=TEACHER,
        student=dict(STUDENT, family="tinybert", embed_dim=24, num_heads=4, mlp_dim=40,
                     teacher_dim=32),
        per_layer_outputs=True,
    )
    model = teacher_student.TeacherStudent(config)
    variables = model.init(jax.random.key(0), IDS)
    out = model.apply(variables, IDS, attention_mask=MASK)
    assert out["teacher"]["hidden_states"].shape == (5, 2, 6, 32)
    assert out["teacher"]["attention_scores"].shape == (4, 2, 4, 6, 6)
    assert out["student"]["fit_hidden_states"].shape == (3, 2, 6, 32)
    assert out["student"]["attention_scores"].shape == (2, 2, 4, 6, 6)
    # The BERT teacher's tree is unchanged by running it with per-layer outputs.
    assert jax.tree.structure(nn.unbox(variables["params"]["teacher"])) == jax.tree.structure(
        bert.param_shapes(config.teacher_config())
    )
    assert dataclasses.asdict(config.teacher_config())["num_layers"] == 4
