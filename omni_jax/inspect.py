"""`data_pipelines.inspect` with the model's speech path: the microphone with the model's own
echo and the assistant stream as `omni_jax.audio.feedback` makes them in training.

  python -m omni_jax.inspect --config=configs/tiny.py --out=DIR   (the same flags)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from absl import app

from data_pipelines import inspect as data_inspect
from omni_jax.audio.feedback import Feedback


def hearing(config):
    """record -> (env_KxS, asst_KxS) as the model hears them in training."""
    feedback = Feedback.from_config(config)

    @jax.jit
    def streams(batch):
        inputs = feedback.model_inputs(batch)
        return inputs["env_audio"], inputs["asst_audio"]

    def hear(record):
        names = ("env_audio", "speech_target", "speech_mask", "echo_gain", "echo_delay")
        env_1xKxS, asst_1xKxS = streams({k: jnp.asarray(record[k])[None] for k in names})
        return np.asarray(env_1xKxS[0]), np.asarray(asst_1xKxS[0])

    return hear


def main(argv):
    data_inspect.main(argv, hear=hearing(data_inspect.FLAGS.config))


if __name__ == "__main__":
    data_inspect.define_flags()
    app.run(main)
