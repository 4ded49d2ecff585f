"""Checkpointer: round trip with the Grain iterator, retention, async saves, fallback past
corrupted steps, params-only restores for serving, restore onto another mesh (8 fake
devices, in a subprocess), SIGTERM."""

import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from omni_jax.train.checkpoint import Checkpointer, CheckpointError, PreemptionGuard

REPO = Path(__file__).resolve().parents[1]


def _dataset():
    return grain.MapDataset.range(100).shuffle(seed=3).batch(4).to_iter_dataset()


def _state(step: int) -> dict:
    return dict(step=jnp.int32(step),
                params=dict(w=jnp.arange(12.0).reshape(3, 4) * step, b=jnp.full((5,), step)),
                opt=(jnp.ones(3, jnp.bfloat16) * step, dict(mu=jnp.zeros((2, 2)) - step)))


def _assert_bitwise(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _save_steps(directory, steps, *, iterator=None, **kwargs) -> Checkpointer:
    ckpt = Checkpointer(directory, async_save=False, **kwargs)
    for step in steps:
        if iterator is not None:
            next(iterator)
        assert ckpt.save(step, _state(step), iterator)
    ckpt.wait()
    return ckpt


def test_round_trip_with_iterator_state(tmp_path):
    it = iter(_dataset())
    ckpt = _save_steps(tmp_path, [1, 2, 3], iterator=it)
    expected = [next(it) for _ in range(3)]  # what the original run reads next
    resumed = iter(_dataset())
    state = ckpt.restore(abstract_state=_state(0), data_iterator=resumed)
    assert ckpt.restored_step == 3 and ckpt.latest_step() == 3
    _assert_bitwise(state, _state(3))
    for want in expected:
        np.testing.assert_array_equal(next(resumed), want)
    ckpt.close()


def test_restore_explicit_step_and_without_target(tmp_path):
    ckpt = _save_steps(tmp_path, [1, 2])
    _assert_bitwise(ckpt.restore(step=1, abstract_state=_state(0)), _state(1))
    assert float(ckpt.restore()["params"]["w"][1, 1]) == 2 * 5.0
    ckpt.close()


def test_retention_keep_last_and_keep_every(tmp_path):
    ckpt = _save_steps(tmp_path, range(1, 10), keep_last=2, keep_every=4)
    assert ckpt.all_steps() == [4, 8, 9]
    assert sorted(int(p.name) for p in tmp_path.iterdir() if p.name.isdigit()) == [4, 8, 9]
    ckpt.close()


def test_save_skips_existing_and_undue_steps(tmp_path):
    ckpt = Checkpointer(tmp_path, async_save=False, save_interval_steps=10)
    assert ckpt.save(0, _state(0))  # first save
    assert not ckpt.save(5, _state(5))  # not due
    assert ckpt.save(5, _state(5), force=True)
    assert not ckpt.save(5, _state(5), force=True)  # already on disk
    assert ckpt.save(10, _state(10))
    assert ckpt.all_steps() == [0, 5, 10]
    ckpt.close()


def test_async_save_then_wait(tmp_path):
    ckpt = Checkpointer(tmp_path, async_save=True)
    state = _state(7)
    assert ckpt.save(7, state)
    # The blocking part copied the arrays off the devices: donating them is safe.
    for x in jax.tree.leaves(state):
        x.delete()
    ckpt.wait()
    assert (tmp_path / "7" / "state").is_dir()
    _assert_bitwise(ckpt.restore(abstract_state=_state(0)), _state(7))
    ckpt.close()


def _truncate_data(step_dir: Path):
    for f in (step_dir / "state" / "d").iterdir():
        with open(f, "r+b") as fh:
            fh.truncate(f.stat().st_size // 2)


def _delete_metadata(step_dir: Path):
    (step_dir / "state" / "_METADATA").unlink()


def _garble_iterator_state(step_dir: Path):
    (step_dir / "data" / "process_0-of-1.json").write_text("{not json")


@pytest.mark.parametrize("corrupt", [_truncate_data, _delete_metadata,
                                     _garble_iterator_state])
def test_corrupted_newest_falls_back(tmp_path, caplog, corrupt):
    it = iter(_dataset())
    ckpt = _save_steps(tmp_path, [1, 2, 3], iterator=it)
    ckpt.close()
    corrupt(tmp_path / "3")
    ckpt = Checkpointer(tmp_path, async_save=False)
    resumed = iter(_dataset())
    with caplog.at_level(logging.WARNING):
        state = ckpt.restore(abstract_state=_state(0), data_iterator=resumed)
    assert "step 3" in caplog.text and str(tmp_path) in caplog.text
    assert ckpt.restored_step == 2
    _assert_bitwise(state, _state(2))
    reference = iter(_dataset())
    for _ in range(2):
        next(reference)
    np.testing.assert_array_equal(next(resumed), next(reference))
    # The bad step is set aside (not deleted), so the resumed run can save it again.
    assert (tmp_path / "corrupt" / "3").is_dir() and ckpt.all_steps() == [1, 2]
    assert ckpt.save(3, _state(3), resumed)
    ckpt.close()


def test_no_readable_checkpoint_raises_naming_directory(tmp_path):
    ckpt = Checkpointer(tmp_path / "empty", async_save=False)
    with pytest.raises(CheckpointError, match="empty"):
        ckpt.restore(abstract_state=_state(0))
    ckpt = _save_steps(tmp_path / "bad", [1, 2])
    for step in (1, 2):
        _delete_metadata(tmp_path / "bad" / str(step))
    with pytest.raises(CheckpointError, match=str(tmp_path / "bad")):
        ckpt.restore(abstract_state=_state(0))


def _on_one_device(tree):
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                        tree)


def test_restore_params_reads_the_params_alone(tmp_path):
    _save_steps(tmp_path, [1, 2], iterator=iter(_dataset())).close()
    files = sorted(tmp_path.rglob("*"))
    reader = Checkpointer(tmp_path, read_only=True)
    target = _on_one_device(_state(0)["params"])
    params = reader.restore_params(target)
    assert reader.restored_step == 2
    _assert_bitwise(params, _state(2)["params"])  # the params tree, not the whole state
    assert {x.sharding for x in jax.tree.leaves(params)} == {
        jax.sharding.SingleDeviceSharding(jax.devices()[0])}
    _assert_bitwise(reader.restore_params(target, step=1), _state(1)["params"])
    assert reader.restored_step == 1
    # Plain arrays as the target: the first device.
    _assert_bitwise(reader.restore_params(_state(0)["params"]), _state(2)["params"])
    with pytest.raises(CheckpointError, match="read-only"):
        reader.save(3, _state(3), force=True)
    reader.close()
    assert sorted(tmp_path.rglob("*")) == files  # reading wrote nothing


def test_restore_params_then_restore_on_one_checkpointer(tmp_path):
    ckpt = _save_steps(tmp_path, [1])
    _assert_bitwise(ckpt.restore_params(_state(0)["params"]), _state(1)["params"])
    _assert_bitwise(ckpt.restore(abstract_state=_state(0)), _state(1))
    assert ckpt.save(2, _state(2))
    ckpt.close()


def _delete_array_index(step_dir: Path):
    (step_dir / "state" / "manifest.ocdbt").unlink()


# (A missing state/_METADATA alone does not stop a params-only read: Orbax finds the arrays
# through the OCDBT index, and they are the saved ones.)
@pytest.mark.parametrize("corrupt", [_truncate_data, _delete_array_index])
def test_restore_params_falls_back(tmp_path, caplog, corrupt):
    _save_steps(tmp_path, [1, 2, 3]).close()
    corrupt(tmp_path / "3")
    reader = Checkpointer(tmp_path, read_only=True)
    with caplog.at_level(logging.WARNING):
        params = reader.restore_params(_on_one_device(_state(0)["params"]))
    assert "step 3" in caplog.text and str(tmp_path) in caplog.text
    assert reader.restored_step == 2
    _assert_bitwise(params, _state(2)["params"])
    assert (tmp_path / "corrupt" / "3").is_dir() and reader.all_steps() == [1, 2]
    reader.close()


def test_restore_params_does_not_read_the_iterator(tmp_path):
    _save_steps(tmp_path, [1, 2], iterator=iter(_dataset())).close()
    _garble_iterator_state(tmp_path / "2")
    reader = Checkpointer(tmp_path, read_only=True)
    _assert_bitwise(reader.restore_params(_state(0)["params"]), _state(2)["params"])
    assert reader.restored_step == 2 and not (tmp_path / "corrupt").exists()
    reader.close()


def test_read_only_creates_nothing(tmp_path):
    reader = Checkpointer(tmp_path / "missing", read_only=True)
    with pytest.raises(CheckpointError, match="missing"):
        reader.restore_params(_state(0)["params"])
    reader.close()
    assert not (tmp_path / "missing").exists()
    _save_steps(tmp_path / "bad", [1]).close()
    _delete_array_index(tmp_path / "bad" / "1")
    with pytest.raises(CheckpointError, match=str(tmp_path / "bad")):
        Checkpointer(tmp_path / "bad", read_only=True).restore_params(_state(0)["params"])


def test_from_config(tmp_path):
    config = default.get_config()
    config.checkpoint.keep_last, config.checkpoint.async_save = 1, False
    ckpt = Checkpointer.from_config(config, tmp_path)
    for step in (1, 2, 3):
        ckpt.save(step, _state(step))
    assert ckpt.all_steps() == [3]
    ckpt.close()


def test_sigterm_sets_guard_flag():
    previous = signal.getsignal(signal.SIGTERM)
    with PreemptionGuard() as guard:
        assert not guard.should_stop and not guard.should_stop_at(0)
        os.kill(os.getpid(), signal.SIGTERM)
        assert guard.should_stop and guard.should_stop_at(1)
    assert signal.getsignal(signal.SIGTERM) is previous


_RESHARD_SCRIPT = textwrap.dedent("""
    import sys
    import jax, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    from configs import default
    from omni_jax.train import sharding
    from omni_jax.train.checkpoint import Checkpointer

    def mesh(data, fsdp, tensor, devices=None):
        c = default.get_config()
        c.mesh.data, c.mesh.fsdp, c.mesh.tensor = data, fsdp, tensor
        return sharding.make_mesh(c, devices)

    assert jax.device_count() == 8
    w = np.arange(16 * 8, dtype=np.float32).reshape(16, 8)
    v = np.arange(6, dtype=np.int32)
    m = mesh(4, 2, 1)
    state = dict(w=jax.device_put(w, NamedSharding(m, P("data", "fsdp"))),
                 v=jax.device_put(v, NamedSharding(m, P())))
    ckpt = Checkpointer(sys.argv[1], async_save=True)
    ckpt.save(1, state)
    ckpt.wait()
    targets = {
        "2x2x2": (mesh(2, 2, 2), P(("data", "fsdp"), "tensor")),
        "1 device": (mesh(1, 1, 1, jax.devices()[:1]), P()),
    }
    for name, (m, spec) in targets.items():
        shardings = dict(w=NamedSharding(m, spec), v=NamedSharding(m, P()))
        out = ckpt.restore(abstract_state=state, shardings=shardings)
        assert out["w"].sharding == shardings["w"], (name, out["w"].sharding)
        assert len(out["w"].sharding.device_set) == len(m.devices.flat)
        np.testing.assert_array_equal(np.asarray(out["w"]), w)
        np.testing.assert_array_equal(np.asarray(out["v"]), v)
    print("RESHARD OK")
""")


def test_restore_onto_another_mesh_shape(tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", _RESHARD_SCRIPT, str(tmp_path)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "RESHARD OK" in done.stdout, done.stderr[-3000:]
