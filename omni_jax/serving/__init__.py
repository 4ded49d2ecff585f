"""Serving a trained run: loading it from its workdir without training machinery (`runs`),
the Full-Duplex-Bench-compatible runner (`fdb`), and the `jax.export` folder with its
standalone runner (`export`, `export_runner`)."""
