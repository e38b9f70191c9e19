"""Checkpointer: round trip, keep-N, resharding across meshes, damaged steps, interrupted saves."""

import glob
import json
import os

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from lmjax.train import checkpoints as ckpt_lib
from lmjax.train.checkpoints import Checkpointer


class _State(flax.struct.PyTreeNode):
    step: jax.Array
    params: dict
    opt_state: object


def _mesh(shape, names):
    return Mesh(np.array(jax.devices()[: int(np.prod(shape))]).reshape(shape), names)


def _state_on(mesh, w_spec, step=3, scale=1.0):
    """Returns a small state with an Adam optimizer state, ``w`` sharded by ``w_spec``."""
    params = {
        "w": jnp.arange(16 * 8, dtype=jnp.float32).reshape(16, 8) * scale,
        "b": jnp.linspace(-1.0, 1.0, 8, dtype=jnp.float32),
    }
    opt_state = optax.adam(1e-3).init(params)
    state = _State(step=jnp.asarray(step, jnp.int32), params=params, opt_state=opt_state)

    def place(path, leaf):
        names = [getattr(k, "key", getattr(k, "name", None)) for k in path]
        spec = w_spec if names and names[-1] == "w" else P()
        return jax.device_put(leaf, NamedSharding(mesh, spec))

    return jax.tree_util.tree_map_with_path(place, state)


def _abstract(state, mesh, w_spec):
    def spec_for(path, leaf):
        names = [getattr(k, "key", getattr(k, "name", None)) for k in path]
        spec = w_spec if names and names[-1] == "w" else P()
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=NamedSharding(mesh, spec))

    return jax.tree_util.tree_map_with_path(spec_for, state)


def _assert_trees_equal(a, b):
    leaves_a, tree_a = jax.tree_util.tree_flatten(a)
    leaves_b, tree_b = jax.tree_util.tree_flatten(b)
    assert tree_a == tree_b
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_keeps_extra_and_values(tmp_path):
    mesh = _mesh((8,), ("data",))
    state = _state_on(mesh, P("data"))
    extra = {"rng": [0, 42], "data": {"epoch": 1, "index": 17}, "config": '{"a": 1}'}
    with Checkpointer(str(tmp_path / "ckpt"), keep=3) as ckpt:
        assert ckpt.latest_step() is None
        assert ckpt.save(3, state, extra)
        ckpt.wait()
        assert ckpt.latest_step() == 3
        restored, restored_extra = ckpt.restore(_abstract(state, mesh, P("data")))
    assert restored_extra == extra
    assert isinstance(restored, _State)
    _assert_trees_equal(restored, state)
    assert restored.params["w"].sharding == NamedSharding(mesh, P("data"))
    expected = os.path.join("runs", "x", "checkpoints")
    assert ckpt_lib.checkpoint_directory("runs/x").endswith(expected)


def test_restore_onto_a_different_mesh_shape(tmp_path):
    mesh8 = _mesh((8,), ("data",))
    state = _state_on(mesh8, P("data"))
    with Checkpointer(str(tmp_path), keep=2) as ckpt:
        ckpt.save(5, state, {"step": 5})
    mesh24 = _mesh((2, 4), ("fsdp", "tensor"))
    new_spec = P("tensor", "fsdp")
    with Checkpointer(str(tmp_path), keep=2) as ckpt:
        restored, _ = ckpt.restore(_abstract(state, mesh24, new_spec))
        params = ckpt.restore_params(_abstract(state.params, mesh24, P(None, "tensor")))
    w = restored.params["w"]
    assert w.sharding == NamedSharding(mesh24, new_spec)
    assert w.addressable_shards[0].data.shape == (4, 4)  # 16/4 rows, 8/2 columns per device
    _assert_trees_equal(restored, state)
    assert params["w"].sharding == NamedSharding(mesh24, P(None, "tensor"))
    np.testing.assert_array_equal(np.asarray(params["w"]), np.asarray(state.params["w"]))


def test_keep_n_never_overwrites_and_skips_older_steps(tmp_path):
    mesh = _mesh((8,), ("data",))
    with Checkpointer(str(tmp_path), keep=2, async_save=False) as ckpt:
        for step in (1, 2, 3, 4):
            assert ckpt.save(step, _state_on(mesh, P("data"), step=step), {"step": step})
        assert ckpt.all_steps() == [3, 4]
        assert not ckpt.save(4, _state_on(mesh, P("data"), step=99), {"step": 99})
        assert not ckpt.save(2, _state_on(mesh, P("data")), {"step": 2})
        assert ckpt.restore_extra() == {"step": 4}
        assert ckpt.restore_extra(3) == {"step": 3}
    assert sorted(os.listdir(tmp_path)) == ["3", "4"]


def test_missing_checkpoint_and_missing_step_errors(tmp_path):
    mesh = _mesh((8,), ("data",))
    state = _state_on(mesh, P("data"))
    with Checkpointer(str(tmp_path), keep=2) as ckpt:
        with pytest.raises(ckpt_lib.CheckpointNotFoundError, match="No checkpoint in"):
            ckpt.restore(_abstract(state, mesh, P("data")))
        ckpt.save(1, state, {})
        ckpt.wait()
        with pytest.raises(ckpt_lib.CheckpointNotFoundError, match="available steps: 1"):
            ckpt.restore(_abstract(state, mesh, P("data")), step=7)


def test_extra_must_be_json(tmp_path):
    mesh = _mesh((8,), ("data",))
    with Checkpointer(str(tmp_path)) as ckpt:
        with pytest.raises(TypeError, match=r"extra\['rng'\] is not JSON-serialisable"):
            ckpt.save(1, _state_on(mesh, P("data")), {"ok": 1, "rng": np.zeros(2)})
        assert ckpt.latest_step() is None


def test_mismatched_model_names_the_leaf(tmp_path):
    mesh = _mesh((8,), ("data",))
    state = _state_on(mesh, P("data"))
    with Checkpointer(str(tmp_path)) as ckpt:
        ckpt.save(1, state, {})
        ckpt.wait()
        bigger = _state_on(mesh, P("data")).replace(
            params={"w": jnp.zeros((32, 8)), "b": jnp.zeros(8)}
        )
        bigger = bigger.replace(opt_state=optax.adam(1e-3).init(bigger.params))
        expected = r"w is \(16, 8\) in the checkpoint but \(32, 8\)"
        with pytest.raises(ckpt_lib.CheckpointMismatchError, match=expected):
            ckpt.restore(_abstract(bigger, mesh, P("data")))


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_damaged_newest_step_names_the_directory_and_keeps_earlier_steps(tmp_path, damage):
    mesh = _mesh((8,), ("data",))
    with Checkpointer(str(tmp_path), keep=3) as ckpt:
        ckpt.save(10, _state_on(mesh, P("data"), step=10), {"step": 10})
        ckpt.save(20, _state_on(mesh, P("data"), step=20, scale=2.0), {"step": 20})
    pattern = str(tmp_path / "20" / "state" / "**" / "d" / "*")
    data_files = [p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p)]
    assert data_files, "expected OCDBT data files in the step directory"
    for path in data_files:
        if damage == "truncate":
            with open(path, "r+b") as f:
                f.truncate(os.path.getsize(path) // 2)
        else:
            os.remove(path)
    abstract = _abstract(_state_on(mesh, P("data")), mesh, P("data"))
    with Checkpointer(str(tmp_path), keep=3) as ckpt:
        assert ckpt.latest_step() == 20
        with pytest.raises(ckpt_lib.CheckpointCorruptedError) as info:
            ckpt.restore(abstract)
        message = str(info.value)
        step_dir = os.path.join(str(tmp_path), "20")
        assert f"Checkpoint step 20 in {step_dir} is truncated or corrupted" in message
        assert f"mv {step_dir} {step_dir}.corrupt" in message
        assert "resume from step 10" in message
        assert ckpt.all_steps() == [10, 20]  # nothing deleted
        restored, extra = ckpt.restore(abstract, step=10)
    assert extra == {"step": 10}
    assert int(restored.step) == 10
    # Following the message's advice resumes from the earlier step.
    os.rename(step_dir, step_dir + ".corrupt")
    with Checkpointer(str(tmp_path), keep=3) as ckpt:
        assert ckpt.latest_step() == 10
        assert ckpt.restore(abstract)[1] == {"step": 10}


def test_interrupted_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    from orbax.checkpoint._src.path import atomicity

    mesh = _mesh((8,), ("data",))
    abstract = _abstract(_state_on(mesh, P("data")), mesh, P("data"))
    with Checkpointer(str(tmp_path), keep=3) as ckpt:
        ckpt.save(1, _state_on(mesh, P("data"), step=1), {"step": 1})
    committed = sorted(os.listdir(tmp_path / "1"))

    async def crash_before_rename(self):
        raise OSError("simulated crash before the final rename")

    monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, "finalize", crash_before_rename)
    ckpt = Checkpointer(str(tmp_path), keep=3)
    with pytest.raises(Exception, match="simulated crash"):
        ckpt.save(2, _state_on(mesh, P("data"), step=2, scale=3.0), {"step": 2})
        ckpt.wait()
    monkeypatch.undo()
    leftovers = [name for name in os.listdir(tmp_path) if name.startswith("2")]
    assert leftovers and all(".orbax-checkpoint-tmp" in name for name in leftovers)
    assert sorted(os.listdir(tmp_path / "1")) == committed

    with Checkpointer(str(tmp_path), keep=3) as resumed:
        assert resumed.all_steps() == [1]
        state, extra = resumed.restore(abstract)
        assert extra == {"step": 1} and int(state.step) == 1
        assert resumed.save(2, _state_on(mesh, P("data"), step=2), {"step": 2})
        resumed.wait()
        assert resumed.all_steps() == [1, 2]
    assert not [n for n in os.listdir(tmp_path) if ".orbax-checkpoint-tmp" in n]
    with open(tmp_path / "2" / "extra" / "metadata") as f:
        assert json.load(f) == {"step": 2}


def test_read_only_leaves_a_running_save_alone(tmp_path):
    mesh = _mesh((8,), ("data",))
    with pytest.raises(ckpt_lib.CheckpointNotFoundError, match="No checkpoint directory"):
        Checkpointer(str(tmp_path / "absent"), read_only=True)
    assert not (tmp_path / "absent").exists()
    with Checkpointer(str(tmp_path), keep=2) as ckpt:
        ckpt.save(1, _state_on(mesh, P("data")), {"step": 1})
    in_flight = tmp_path / "2.orbax-checkpoint-tmp-17"  # another process is writing step 2
    in_flight.mkdir()
    (in_flight / "partial").write_text("...")
    with Checkpointer(str(tmp_path), read_only=True) as reader:
        assert reader.all_steps() == [1]
        assert reader.restore_extra() == {"step": 1}
        with pytest.raises(ckpt_lib.CheckpointError, match="read-only; cannot save"):
            reader.save(3, _state_on(mesh, P("data")), {})
    assert (in_flight / "partial").exists()
    with Checkpointer(str(tmp_path), keep=2) as writer:  # a restarted trainer cleans up
        assert writer.all_steps() == [1]
        assert writer.save(2, _state_on(mesh, P("data")), {"step": 2})  # after the cleanup
        writer.wait()
        assert writer.all_steps() == [1, 2]
    assert not in_flight.exists()
