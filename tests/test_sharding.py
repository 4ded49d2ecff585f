"""Mesh, rules and shardings. The 8-device checks run once, in a subprocess with 8 fake CPU
devices (this process may already have initialised JAX with one), and report as JSON."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from configs import default
from omni_jax.configuration import ConfigError
from omni_jax.train import sharding

REPO = Path(__file__).resolve().parents[1]

_SCRIPT = textwrap.dedent("""
    import json
    import jax, jax.numpy as jnp, numpy as np
    from configs import tiny
    from omni_jax.configuration import ConfigError
    from omni_jax.models.omni import DuplexModel
    from omni_jax.train import optim, sharding, state as state_lib

    def config(data, fsdp, tensor):
        c = tiny.get_config()
        for part in ("encoder", "llm", "synth"):
            c.model[part].num_layers, c.model[part].width = 1, 64
        c.model.llm.mlp_dim = c.model.synth.mlp_dim = 128
        c.data.prompt_len = 4
        c.mesh.data, c.mesh.fsdp, c.mesh.tensor = data, fsdp, tensor
        return c

    def spec(s):
        return [list(a) if isinstance(a, tuple) else a for a in s.spec]

    report = {}
    try:
        sharding.make_mesh(config(3, 1, 1))
    except ConfigError as e:
        report["mismatch_error"] = str(e)
    c = config(2, 2, 2)
    mesh, rules = sharding.make_mesh(c), sharding.logical_rules(c)
    report["mesh"] = dict(mesh.shape)
    report["axis_types"] = [str(t) for t in mesh.axis_types]
    dm = DuplexModel.from_config(c)
    rng = jax.random.key(0)
    optimizer = optim.make_optimizer(c, jax.eval_shape(dm.init, rng))
    state, state_shardings = state_lib.init_train_state(dm.init, optimizer, mesh, rules, rng)
    params, shardings = state.params, state_shardings.params
    p = params["params"]
    kernel = p["connector"]["fc1"]["kernel"]
    report["fc1_spec"] = spec(shardings["params"]["connector"]["fc1"]["kernel"])
    report["fc1_shard_shape"] = list(kernel.addressable_shards[0].data.shape)
    report["fc1_shape"] = list(kernel.shape)
    report["mlp_up_spec"] = spec(p["llm"]["layers"]["layer_0"]["mlp"]["up"]["kernel"]
                                 .sharding)

    # The same values, gathered and placed whole on one device.
    reference = jax.device_put(jax.device_get(params), jax.devices()[0])
    gen = np.random.default_rng(0)
    batch = {}
    for name, x in dm.dummy_batch(4, 2).items():
        batch[name] = (0.1 * gen.normal(size=x.shape).astype(np.float32)
                       if x.dtype == jnp.float32 else
                       gen.integers(0, 300, x.shape).astype(np.int32))
    expected = jax.device_get(jax.jit(dm.parallel_forward)(reference, batch))
    with sharding.activate(mesh, rules):
        gbatch = sharding.global_batch(batch, mesh)
        forward = jax.jit(dm.parallel_forward,
                          in_shardings=(shardings, sharding.batch_sharding(mesh)))
        report["constraints"] = forward.lower(params, gbatch).as_text().count(
            "sharding_constraint")
        got = forward(params, gbatch)
    report["batch"] = {k: [list(v.shape), spec(v.sharding)] for k, v in gbatch.items()}
    report["max_abs_diff"] = {k: float(np.max(np.abs(np.asarray(got[k]) - expected[k])))
                              for k in expected}
    report["logits_spec"] = spec(got["logits"].sharding)
    abstract = jax.eval_shape(dm.init, rng)
    report["replicated"] = sharding.replicated_report(abstract, shardings, 1024)
    no_rules = sharding.param_shardings(abstract, mesh, ())
    report["replicated_no_rules"] = len(sharding.replicated_report(abstract, no_rules, 0))
    report["num_params"] = len(jax.tree.leaves(params))
    print("REPORT " + json.dumps(report))
""")


@pytest.fixture(scope="module")
def report():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", _SCRIPT], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    line = [x for x in done.stdout.splitlines() if x.startswith("REPORT ")][-1]
    return json.loads(line[len("REPORT "):])


def test_mesh_axes_and_mismatch(report):
    assert report["mesh"] == {"data": 2, "fsdp": 2, "tensor": 2}
    assert all("Auto" in t for t in report["axis_types"])
    assert report["mismatch_error"].startswith("config.mesh")
    assert "8" in report["mismatch_error"]


def test_parameters_are_sharded(report):
    assert report["fc1_spec"] == ["fsdp", "tensor"]  # embed x mlp
    assert report["fc1_shard_shape"] == [report["fc1_shape"][0] // 2,
                                         report["fc1_shape"][1] // 2]
    assert report["mlp_up_spec"] == [None, "fsdp", "tensor"]  # layers axis


def test_sharded_forward_matches_single_device(report):
    assert report["constraints"] > 0  # the model's logical constraints resolved
    for name, diff in report["max_abs_diff"].items():
        assert diff <= 1e-5, (name, diff)
    assert report["logits_spec"][0] == ["data", "fsdp"]


def test_global_batch_shapes_and_sharding(report):
    assert report["batch"]["env_audio"] == [[4, 2, 1280], [["data", "fsdp"]]]
    assert report["batch"]["prompt_tokens"] == [[4, 4], [["data", "fsdp"]]]


def test_replicated_report(report):
    assert all(size >= 1024 for _, size in report["replicated"])
    assert [name for name, _ in report["replicated"]] == ["params/synth/out_bias"]
    assert report["replicated_no_rules"] == report["num_params"]


# ---- in this process (one device is enough) ------------------------------------------------

def test_logical_rules_from_config():
    rules = sharding.logical_rules(default.get_config())
    assert ("batch", ("data", "fsdp")) in rules and ("kv", None) in rules
    hash(rules)  # Flax keys its caches on the rules


def test_unknown_mesh_axis_in_rules_is_a_config_error():
    config = default.get_config()
    config.mesh.rules = (("embed", "model"),)
    with pytest.raises(ConfigError, match=r"config\.mesh\.rules\[0\]"):
        sharding.logical_rules(config)


def test_single_device_mesh_and_report():
    config = default.get_config()
    mesh = sharding.make_mesh(config, jax.devices()[:1])
    assert dict(mesh.shape) == {"data": 1, "fsdp": 1, "tensor": 1}
    config.mesh.tensor = 2
    with pytest.raises(ConfigError, match=r"config\.mesh"):
        sharding.make_mesh(config, jax.devices()[:1])
    abstract = {"big": jax.ShapeDtypeStruct((64, 64), np.float32),
                "small": jax.ShapeDtypeStruct((4,), np.float32)}
    shardings = sharding.replicated(abstract, mesh)
    assert sharding.replicated_report(abstract, shardings, 1000) == [("big", 64 * 64 * 4)]


def test_uneven_dimensions_stay_replicated():
    mesh = sharding.make_mesh(default.get_config(), jax.devices()[:1])
    assert sharding._fit(P("fsdp", "tensor"), (3, 5), mesh) == P("fsdp", "tensor")
    fake = type("FakeMesh", (), {"shape": {"data": 2, "fsdp": 2, "tensor": 4}})()
    assert sharding._fit(P("fsdp", ("data", "tensor")), (6, 12), fake) == P("fsdp", None)
