"""Mesh, rules and sharded training on 8 fake CPU devices (XLA_FLAGS in tests/conftest.py).

The proofs: the same 5 train steps give the same losses on one device and on the (8,1,1), (2,4,1)
and (2,2,2) meshes; named parameters get the PartitionSpecs the rules say; bad meshes and rules
are errors that name the problem.
"""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from lmjax import axes
from lmjax.train import mesh as mesh_lib
from lmjax.train import optimizers
from lmjax.train import state as state_lib


def _mesh_spec(data, fsdp, tensor):
    return [("data", data), ("fsdp", fsdp), ("tensor", tensor)]


def test_eight_fake_devices_are_visible():
    assert jax.device_count() == 8, "tests/conftest.py should set 8 host-platform devices"


@pytest.mark.parametrize("shape", [(8, 1, 1), (2, 4, 1), (2, 2, 2)])
def test_sharded_losses_equal_single_device(
    shape, tiny_gpt, run_steps, reference_batches, reference_losses
):
    model, _ = tiny_gpt()
    losses, state, _ = run_steps(model, reference_batches, _mesh_spec(*shape))
    assert reference_losses[-1] < reference_losses[0] - 0.1  # it trains
    np.testing.assert_allclose(losses, reference_losses, rtol=0, atol=1e-5)
    # The parameters really are laid out on the mesh, not replicated.
    kernel = state.params["decoder"]["layers"]["mlp"]["wi"]["kernel"]
    assert kernel.sharding.spec == P(None, "fsdp", "tensor")
    assert len(kernel.sharding.device_set) == 8


def _abstract_state(tiny_gpt, mesh_shape, rules=axes.DEFAULT_RULES, **model_overrides):
    model, _ = tiny_gpt(**model_overrides)
    mesh = mesh_lib.build_mesh(_mesh_spec(*mesh_shape))
    rules = mesh_lib.check_rules(rules, mesh)
    tx = optimizers.make_optimizer(dict(name="adamw", learning_rate=1e-3), 10)
    inputs = {"inputs": jax.ShapeDtypeStruct((1, 8), np.int32)}
    return state_lib.abstract_train_state(model, tx, inputs, mesh, rules)


def test_scanned_parameter_specs_follow_the_rules(tiny_gpt):
    abstract, shardings = _abstract_state(tiny_gpt, (2, 2, 2))
    params = shardings.params
    layers = params["decoder"]["layers"]
    # [N, E, H, D] (layers, embed, heads, kv)
    assert layers["attention"]["query"]["kernel"].spec == P(None, "fsdp", "tensor", None)
    assert layers["attention"]["out"]["kernel"].spec == P(None, "tensor", None, "fsdp")
    assert layers["mlp"]["wi"]["kernel"].spec == P(None, "fsdp", "tensor")  # [N, E, F]
    assert layers["mlp"]["wo"]["kernel"].spec == P(None, "tensor", "fsdp")  # [N, F, E]
    assert layers["mlp_norm"]["scale"].spec == P(None, None)  # [N, E] (layers, norm)
    assert params["token_embed"]["embedding"].spec == P("tensor", "fsdp")  # [V, E]
    assert params["position_embed"]["embedding"].spec == P(None, "fsdp")  # [P, E]
    # Adam's moments mirror their parameter; its step count is replicated.
    adam = [
        s
        for s in jax.tree_util.tree_leaves(shardings.opt_state, is_leaf=lambda s: hasattr(s, "mu"))
        if hasattr(s, "mu")
    ][0]
    assert adam.mu["decoder"]["layers"]["mlp"]["wi"]["kernel"].spec == P(None, "fsdp", "tensor")
    assert adam.count.spec == P()
    # The abstract state carries the same shardings (what a checkpoint restores into).
    assert abstract.params["token_embed"]["embedding"].sharding.spec == P("tensor", "fsdp")


def test_unscanned_parameter_specs_follow_the_rules(tiny_gpt):
    _, shardings = _abstract_state(tiny_gpt, (2, 2, 2), scan_layers=False)
    layer = shardings.params["decoder"]["layers_0"]
    assert layer["attention"]["query"]["kernel"].spec == P("fsdp", "tensor", None)  # [E, H, D]
    assert layer["mlp"]["wi"]["kernel"].spec == P("fsdp", "tensor")  # [E, F]


def test_one_mesh_axis_twice_in_a_parameter_is_an_error(tiny_gpt):
    rules = [("embed", "fsdp"), ("mlp", "fsdp"), ("batch", "data")]
    with pytest.raises(ValueError, match=r"mlp/wi/kernel.*same mesh axis 'fsdp'"):
        _abstract_state(tiny_gpt, (2, 2, 2), rules=rules)


def test_indivisible_parameter_dimension_is_an_error(tiny_gpt):
    with pytest.raises(ValueError, match=r"token_embed/embedding.*size 130.*pad the vocab"):
        _abstract_state(tiny_gpt, (2, 1, 4), vocab_size=130)


@pytest.mark.parametrize(
    "rules, message",
    [
        ([("embedding", "fsdp")], r"'embedding' is not a logical axis name.*lmjax/axes.py"),
        (
            [("embed", "model")],
            r"mesh axis 'model' is not in the mesh \('data', 'fsdp', 'tensor'\)",
        ),
        ([("embed", "fsdp"), ("embed", "tensor")], r"conflicting rules for logical axis 'embed'"),
        ([("batch", ("data", "data"))], r"names a mesh axis twice"),
        ([("embed",)], r"not a \(logical_name, mesh_axis \| tuple \| None\) pair"),
    ],
)
def test_bad_rules_are_errors(rules, message):
    mesh = mesh_lib.build_mesh(_mesh_spec(2, 2, 2))
    with pytest.raises(ValueError, match=message):
        mesh_lib.check_rules(rules, mesh)


def test_check_rules_normalises_and_keeps_consistent_duplicates():
    mesh = mesh_lib.build_mesh(_mesh_spec(2, 2, 2))
    rules = mesh_lib.check_rules(
        [("embed", ["fsdp"]), ("embed", "fsdp"), ("batch", ["data", "fsdp"])], mesh
    )
    assert rules == (("embed", "fsdp"), ("batch", ("data", "fsdp")))


def test_build_mesh_infers_the_minus_one_axis():
    mesh = mesh_lib.build_mesh([("data", -1), ("fsdp", 1), ("tensor", 2)])
    assert dict(mesh.shape) == {"data": 4, "fsdp": 1, "tensor": 2}
    assert mesh.devices.size == 8


@pytest.mark.parametrize(
    "spec, message",
    [
        (
            [("data", -1), ("tensor", 3)],
            r"multiply to 3, which does not divide the 8 available devices",
        ),
        ([("data", 2), ("tensor", 2)], r"needs 4 devices but 8 are available"),
        ([("data", -1), ("tensor", -1)], r"more than one -1"),
        ([("data", 8), ("data", 1)], r"mesh axis 'data' appears twice"),
        ([("data", 0)], r"sizes are positive ints, or -1"),
    ],
)
def test_bad_meshes_are_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        mesh_lib.build_mesh(spec)


def test_adafactor_factored_statistics_keep_their_parameters_sharding(tiny_gpt):
    model, _ = tiny_gpt(vocab_size=256, embed_dim=128, num_heads=4, mlp_dim=256)
    mesh = mesh_lib.build_mesh(_mesh_spec(2, 2, 2))
    rules = mesh_lib.check_rules(axes.DEFAULT_RULES, mesh)
    tx = optimizers.make_optimizer(dict(name="adafactor", learning_rate=1e-3), 10)
    inputs = {"inputs": jax.ShapeDtypeStruct((1, 8), np.int32)}
    abstract, shardings = state_lib.abstract_train_state(model, tx, inputs, mesh, rules)
    factored = [
        s
        for s in jax.tree_util.tree_leaves(
            abstract.opt_state, is_leaf=lambda s: hasattr(s, "v_row")
        )
        if hasattr(s, "v_row")
    ][0]
    v_row = factored.v_row["token_embed"]["embedding"]  # the [V, E] table's row statistics
    v_col = factored.v_col["token_embed"]["embedding"]
    assert v_row.ndim == 1 and v_col.ndim == 1
    assert {v_row.sharding.spec, v_col.sharding.spec} == {P("tensor"), P("fsdp")}
    for leaf in jax.tree_util.tree_leaves(abstract.opt_state):
        leaf.sharding.shard_shape(leaf.shape)  # every layout divides its array
