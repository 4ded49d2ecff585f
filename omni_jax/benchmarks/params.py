"""what=params: parameter counts per component and in total, from `jax.eval_shape`
(nothing is allocated, so any config works, the paper-size one included)."""

from __future__ import annotations

import jax

from omni_jax.models.omni import DuplexModel


def run(config) -> dict:
    shapes = jax.eval_shape(DuplexModel.from_config(config).init, jax.random.key(0))
    per_part = {name: sum(x.size for x in jax.tree.leaves(tree))
                for name, tree in shapes["params"].items()}
    lora = sum(x.size for path, x in jax.tree_util.tree_leaves_with_path(shapes)
               if "lora" in jax.tree_util.keystr(path))
    return dict(what="params", config=config.name, total=sum(per_part.values()),
                lora=lora, **per_part)
