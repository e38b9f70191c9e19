"""Tests of lmjax.objectives.distillation against the references' formulas (torch / NumPy)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

# The reference is a test-only dependency (pyproject [test] extra): missing is an error, not a skip.
import torch  # noqa: E402

from lmjax.models import teacher_student  # noqa: E402
from lmjax.objectives import distillation  # noqa: E402

B, L, V, E = 2, 5, 7, 6
RNG = np.random.default_rng(0)
MASK = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
MLM_WEIGHTS = np.array([[0, 1, 0, 1, 0], [0, 0, 1, 0, 0]], np.float32)
TARGETS = RNG.integers(0, V, (B, L))


def _outputs(seed=0):
    rng = np.random.default_rng(seed)
    net = lambda: {  # noqa: E731
        "logits": jnp.asarray(rng.normal(size=(B, L, V)) * 2, jnp.float32),
        "hidden": jnp.asarray(rng.normal(size=(B, L, E)), jnp.float32),
    }
    return {"student": net(), "teacher": net()}


def _batch(**extra):
    return dict(
        inputs=jnp.ones((B, L), jnp.int32), attention_mask=jnp.asarray(MASK),
        mlm_targets=jnp.asarray(TARGETS), mlm_weights=jnp.asarray(MLM_WEIGHTS), **extra,
    )


def _reference_distiller_step(outputs, restrict_ce_to_mask, temperature=2.0, alphas=(5, 2, 1)):
    """distiller.py ``Distiller.step``'s loss, written with the same torch calls."""
    s_logits = torch.tensor(np.asarray(outputs["student"]["logits"]))
    t_logits = torch.tensor(np.asarray(outputs["teacher"]["logits"]))
    s_hidden = torch.tensor(np.asarray(outputs["student"]["hidden"]))
    t_hidden = torch.tensor(np.asarray(outputs["teacher"]["hidden"]))
    attention_mask = torch.tensor(MASK).bool()
    lm_labels = torch.tensor(np.where(MLM_WEIGHTS > 0, TARGETS, -100))
    if restrict_ce_to_mask:
        mask = (lm_labels > -1).unsqueeze(-1).expand_as(s_logits)
    else:
        mask = attention_mask.unsqueeze(-1).expand_as(s_logits)
    s_slct = torch.masked_select(s_logits, mask).view(-1, V)
    t_slct = torch.masked_select(t_logits, mask).view(-1, V)
    loss_ce = torch.nn.KLDivLoss(reduction="batchmean")(
        torch.log_softmax(s_slct / temperature, -1), torch.softmax(t_slct / temperature, -1)
    ) * temperature**2
    loss_mlm = torch.nn.CrossEntropyLoss(ignore_index=-100)(s_logits.view(-1, V),
                                                           lm_labels.view(-1))
    hmask = attention_mask.unsqueeze(-1).expand_as(s_hidden)
    s_h = torch.masked_select(s_hidden, hmask).view(-1, E)
    t_h = torch.masked_select(t_hidden, hmask).view(-1, E)
    loss_cos = torch.nn.CosineEmbeddingLoss()(s_h, t_h, s_h.new(s_h.size(0)).fill_(1))
    a_ce, a_mlm, a_cos = alphas
    total = a_ce * loss_ce + a_mlm * loss_mlm + a_cos * loss_cos
    return {k: float(v) for k, v in
            dict(loss=total, kl_loss=loss_ce, mlm_loss=loss_mlm, cos_loss=loss_cos).items()}


@pytest.mark.parametrize("restrict_ce_to_mask", [False, True])
def test_distilbert_loss_matches_the_reference_step(restrict_ce_to_mask):
    outputs = _outputs()
    loss, metrics = jax.jit(
        lambda o, b: distillation.distilbert_loss(o, b, restrict_ce_to_mask=restrict_ce_to_mask)
    )(outputs, _batch())
    ref = _reference_distiller_step(outputs, restrict_ce_to_mask)
    for name, value in ref.items():
        np.testing.assert_allclose(float(metrics[name]), value, rtol=1e-5, err_msg=name)
    assert loss.dtype == jnp.float32 and float(loss) == float(metrics["loss"])
    assert float(metrics["num_tokens"]) == MASK.sum()
    hits = (np.argmax(np.asarray(outputs["student"]["logits"]), -1) == TARGETS) * MLM_WEIGHTS
    assert float(metrics["accuracy"]) == pytest.approx(hits.sum() / MLM_WEIGHTS.sum())


def test_identical_networks_have_zero_kl_and_cosine_loss():
    outputs = _outputs()
    same = {"student": outputs["student"], "teacher": outputs["student"]}
    _, metrics = distillation.distilbert_loss(same, _batch())
    assert abs(float(metrics["kl_loss"])) < 1e-6
    assert abs(float(metrics["cos_loss"])) < 1e-6
    assert float(metrics["mlm_loss"]) > 0.1


def test_distilbert_loss_weights_and_padding():
    outputs = _outputs(1)
    _, metrics = distillation.distilbert_loss(outputs, _batch())
    loss, _ = distillation.distilbert_loss(
        outputs, _batch(), temperature=1.0, alpha_ce=1.0, alpha_mlm=0.0, alpha_cos=0.0
    )
    s = np.asarray(outputs["student"]["logits"], np.float64)
    t = np.asarray(outputs["teacher"]["logits"], np.float64)
    log_s = s - np.log(np.exp(s).sum(-1, keepdims=True))
    log_t = t - np.log(np.exp(t).sum(-1, keepdims=True))
    kl = (np.exp(log_t) * (log_t - log_s)).sum(-1)
    np.testing.assert_allclose(float(loss), (kl * MASK).sum() / MASK.sum(), rtol=1e-5)
    # Changing the logits at padded positions changes nothing.
    padded = jax.tree.map(lambda x: x.at[1, 3:].set(100.0), outputs)
    _, again = distillation.distilbert_loss(padded, _batch())
    np.testing.assert_allclose(float(again["loss"]), float(metrics["loss"]), rtol=1e-6)
    with pytest.raises(ValueError, match="mlm_targets"):
        distillation.distilbert_loss(outputs, {"inputs": jnp.ones((B, L), jnp.int32)})


def _per_layer_outputs(seed, n_s=2, n_t=4, heads=3, width=4):
    rng = np.random.default_rng(seed)
    f = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)  # noqa: E731
    student = {
        "attention_scores": f(n_s, B, heads, L, L),
        "hidden_states": f(n_s + 1, B, L, 3),
        "fit_hidden_states": f(n_s + 1, B, L, width),
        "logits": f(B, L, V),
    }
    teacher = {
        "attention_scores": f(n_t, B, heads, L, L),
        "hidden_states": f(n_t + 1, B, L, width),
        "logits": f(B, L, V),
    }
    return {"student": student, "teacher": teacher}


def test_tinybert_intermediate_loss_matches_the_reference_formula():
    outputs = _per_layer_outputs(0)
    loss, metrics = jax.jit(distillation.tinybert_loss)(outputs, {"inputs": jnp.ones((B, L)),
                                                                  "attention_mask": MASK})
    s, t = jax.tree.map(np.asarray, outputs["student"]), jax.tree.map(np.asarray,
                                                                       outputs["teacher"])
    # general_distill.py: the -10000 extended mask, then entries <= -100 zeroed, then MSELoss.
    extended = (1.0 - MASK[:, None, None, :]) * -10000.0
    att = 0.0
    for i, j in enumerate((1, 3)):  # k = 2: teacher layers i*k + k - 1
        sa, ta = s["attention_scores"][i] + extended, t["attention_scores"][j] + extended
        sa, ta = np.where(sa <= -100, 0, sa), np.where(ta <= -100, 0, ta)
        att += np.mean((sa - ta) ** 2)
    rep = sum(
        np.mean((s["fit_hidden_states"][i] - t["hidden_states"][j]) ** 2)
        for i, j in enumerate((0, 2, 4))  # rep 0 = embeddings, then teacher reps i*k
    )
    np.testing.assert_allclose(float(metrics["att_loss"]), att, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["rep_loss"]), rep, rtol=1e-5)
    np.testing.assert_allclose(float(loss), att + rep, rtol=1e-5)
    assert float(metrics["accuracy"]) == 0.0 and float(metrics["num_tokens"]) == MASK.sum()


def test_tinybert_identical_networks_give_zero_and_layer_counts_must_divide():
    outputs = _per_layer_outputs(1, n_s=2, n_t=2, width=4)
    same_student = dict(
        outputs["teacher"], fit_hidden_states=outputs["teacher"]["hidden_states"]
    )
    loss, _ = distillation.tinybert_loss(
        {"student": same_student, "teacher": outputs["teacher"]}, {"inputs": jnp.ones((B, L))}
    )
    assert float(loss) == 0.0
    with pytest.raises(ValueError, match="divide"):
        distillation.tinybert_loss(_per_layer_outputs(2, n_s=3, n_t=4), {"inputs": MASK})
    with pytest.raises(ValueError, match="per_layer_outputs"):
        distillation.tinybert_loss(_outputs(), {"inputs": MASK})


def test_tinybert_prediction_loss_is_soft_cross_entropy():
    outputs = _per_layer_outputs(3)
    s = np.asarray(outputs["student"]["logits"], np.float64) / 2.0
    t = np.asarray(outputs["teacher"]["logits"], np.float64) / 2.0
    p_t = np.exp(t) / np.exp(t).sum(-1, keepdims=True)
    log_p_s = s - np.log(np.exp(s).sum(-1, keepdims=True))
    per_token = -(p_t * log_p_s).sum(-1)
    batch = {"inputs": jnp.ones((B, L)), "attention_mask": MASK}
    loss, metrics = distillation.tinybert_loss(outputs, batch, stage="prediction",
                                               temperature=2.0)
    np.testing.assert_allclose(float(loss), (per_token * MASK).sum() / MASK.sum(), rtol=1e-5)
    assert float(metrics["pred_loss"]) == float(loss)
    # class_mean reproduces the reference's (- p_t * log p_s).mean() over [tokens, V].
    masked = dict(batch, mlm_weights=MLM_WEIGHTS, mlm_targets=TARGETS)
    loss, metrics = distillation.tinybert_loss(outputs, masked, stage="prediction",
                                               temperature=2.0, class_mean=True)
    rows = MLM_WEIGHTS.astype(bool)
    np.testing.assert_allclose(float(loss), np.mean(-(p_t * log_p_s)[rows]), rtol=1e-5)
    assert 0.0 <= float(metrics["accuracy"]) <= 1.0


def test_objective_factories():
    objective = distillation.distillation_objective(
        "distilbert", mask_id=3, vocab_size=V, special_ids=(0, 1, 2, 3)
    )
    assert objective.model_inputs == ("inputs", "token_type_ids", "attention_mask")
    inputs = jnp.asarray(RNG.integers(4, V, (B, L)), jnp.int32)
    batch = objective.corrupt(jax.random.key(0), {"inputs": inputs, "attention_mask": MASK})
    assert {"mlm_targets", "mlm_weights", "token_type_ids"} <= set(batch)
    np.testing.assert_array_equal(batch["mlm_targets"], inputs)
    assert float(batch["mlm_weights"].sum()) >= 1

    general = distillation.distillation_objective("tinybert_intermediate")
    batch = general.corrupt(jax.random.key(0), {"inputs": inputs})
    np.testing.assert_array_equal(batch["inputs"], inputs)  # unmasked text
    assert set(batch) == {"inputs", "token_type_ids", "attention_mask"}
    assert general.name == "tinybert_intermediate"
    pred = distillation.distillation_objective(
        "tinybert_prediction", loss_options={"temperature": 3.0}
    )
    outputs = _per_layer_outputs(4)
    expected, _ = distillation.tinybert_loss(outputs, batch, stage="prediction", temperature=3.0)
    np.testing.assert_allclose(pred.loss(outputs, batch)[0], expected)
    with pytest.raises(ValueError, match="kind"):
        distillation.distillation_objective("minilm")
    with pytest.raises(ValueError, match="mask=False"):
        distillation.distillation_objective("tinybert_intermediate", mask_id=3)


TINY_TEACHER = dict(family="bert", vocab_size=64, max_len=16, num_layers=4, embed_dim=16,
                    num_heads=2, mlp_dim=32, scan_layers=False)


@pytest.mark.parametrize("kind", ["distilbert", "tinybert_intermediate"])
def test_gradients_reach_the_student_only(kind):
    student = (
        dict(family="distilbert", vocab_size=64, max_len=16, num_layers=2, embed_dim=16,
             num_heads=2, mlp_dim=32, scan_layers=False)
        if kind == "distilbert"
        else dict(family="tinybert", vocab_size=64, max_len=16, num_layers=2, embed_dim=8,
                  num_heads=2, mlp_dim=16, teacher_dim=16, scan_layers=False)
    )
    config = teacher_student.TeacherStudentConfig(
        teacher=TINY_TEACHER, student=student, per_layer_outputs=kind != "distilbert"
    )
    model = teacher_student.TeacherStudent(config)
    masking = dict(mask_id=3, vocab_size=64, special_ids=(0, 1, 2, 3))
    objective = distillation.distillation_objective(kind, **(masking if kind == "distilbert"
                                                             else {}))
    inputs = jnp.asarray(RNG.integers(4, 64, (2, 8)), jnp.int32)
    batch = objective.corrupt(jax.random.key(1), {
        "inputs": inputs, "attention_mask": jnp.array([[1] * 8, [1] * 5 + [0] * 3])})
    params = nn.unbox(model.init(jax.random.key(0), inputs)["params"])

    def loss(p):
        out = model.apply({"params": p}, **{k: batch[k] for k in objective.model_inputs},
                          deterministic=False, rngs={"dropout": jax.random.key(2)})
        return objective.loss(out, batch)[0]

    value, grads = jax.jit(jax.value_and_grad(loss))(params)
    assert np.isfinite(float(value)) and float(value) > 0
    assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in jax.tree.leaves(grads["teacher"]))
    # The intermediate stage trains the embeddings, layers and fit_dense (not the MLM head).
    trained = (
        grads["student"]
        if kind == "distilbert"
        else {k: grads["student"][k] for k in ("token_embed", "embed_norm", "encoder", "fit_dense")}
    )
    assert all(float(jnp.max(jnp.abs(g))) > 0.0 for g in jax.tree.leaves(trained))
