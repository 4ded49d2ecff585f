"""omni_jax: a JAX/Flax training stack for a codec-free, full-duplex speech LLM.

Importing the package is cheap: subpackages import JAX only where they need it.
"""

__version__ = "0.1.0"
