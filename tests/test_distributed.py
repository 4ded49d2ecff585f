"""Two local CPU processes form one JAX runtime (gloo collectives), one global mesh, and
agree on a reduction over a batch each fed half of."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import portpicker
import pytest

from configs import default
from omni_jax.configuration import ConfigError
from omni_jax.train import distributed

REPO = Path(__file__).resolve().parents[1]

_WORKER = textwrap.dedent("""
    import sys
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    from configs import default
    from omni_jax.train import distributed, sharding

    port, process_id = sys.argv[1], int(sys.argv[2])
    c = default.get_config()
    c.distributed.initialize = True
    c.distributed.coordinator_address = f"127.0.0.1:{port}"
    c.distributed.num_processes, c.distributed.process_id = 2, process_id
    assert distributed.maybe_initialize(c)
    assert not distributed.maybe_initialize(c)  # idempotent
    index, count = distributed.process_info()
    assert (index, count) == (process_id, 2) and jax.device_count() == 2

    mesh = sharding.make_mesh(c)  # data = -1 -> both processes' devices
    rows = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)
    local = rows[4 * index:4 * (index + 1)]  # this process's half of the global batch
    batch = sharding.global_batch({"x": local, "y": local[:, 0].astype(np.int32)}, mesh)
    assert batch["x"].shape == (8, 3) and batch["y"].shape == (8,)
    assert not batch["x"].is_fully_addressable
    total = jax.jit(lambda b: jnp.sum(b["x"] * 2.0) + jnp.sum(b["y"]),
                    out_shardings=NamedSharding(mesh, P()))(batch)
    print(f"TOTAL {index} {float(total.addressable_data(0)):.1f}", flush=True)

    # A checkpoint written by both processes: the global array and one iterator state per
    # process (each reads its own shard of the records).
    import grain
    from omni_jax.train.checkpoint import Checkpointer
    def dataset():
        return grain.MapDataset.range(40)[index::2].batch(2).to_iter_dataset()
    it = iter(dataset())
    next(it)
    ckpt = Checkpointer(sys.argv[3], async_save=True)
    ckpt.save(5, {"x": batch["x"]}, it)
    ckpt.wait()
    expected = next(it)
    resumed = iter(dataset())
    state = ckpt.restore(abstract_state={"x": batch["x"]}, data_iterator=resumed)
    assert ckpt.restored_step == 5
    np.testing.assert_array_equal(state["x"].addressable_data(0), local)
    np.testing.assert_array_equal(next(resumed), expected)
    ckpt.close()
    print(f"CHECKPOINT {index} OK", flush=True)
    jax.distributed.shutdown()
""")


def test_two_processes_agree_on_a_global_sum_and_checkpoint(tmp_path):
    port = portpicker.pick_unused_port()
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, str(port), str(i), str(tmp_path)],
                              cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    outputs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err[-3000:]
            outputs.append(out)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    rows = [float(i) for i in range(24)]
    expected = 2 * sum(rows) + sum(rows[0::3])
    totals = sorted(line.split()[1:] for out in outputs for line in out.splitlines()
                    if line.startswith("TOTAL"))
    assert totals == [["0", f"{expected:.1f}"], ["1", f"{expected:.1f}"]]
    assert all(f"CHECKPOINT {i} OK" in out for i, out in enumerate(outputs))
    assert sorted(p.name for p in (tmp_path / "5" / "data").glob("*.json")) == [
        "process_0-of-2.json", "process_1-of-2.json"]


def test_not_initialised_unless_asked():
    assert not distributed.maybe_initialize(default.get_config())
    assert distributed.process_info() == (0, 1)


def test_initialize_kwargs():
    c = default.get_config()
    assert distributed.initialize_kwargs(c) == {}  # all auto-detected
    c.distributed.coordinator_address, c.distributed.num_processes = "h:1234", 4
    c.distributed.process_id = 3
    assert distributed.initialize_kwargs(c) == dict(coordinator_address="h:1234",
                                                    num_processes=4, process_id=3)
    c.distributed.process_id = 4
    with pytest.raises(ConfigError, match=r"config\.distributed\.process_id"):
        distributed.initialize_kwargs(c)
