"""omni_jax: a JAX/Flax training stack for a codec-free, full-duplex speech LLM."""

from setuptools import find_packages, setup

setup(
    name="omni_jax",
    version="0.1.0",
    description="Training stack for a codec-free full-duplex speech LLM (SALMONN-omni family)",
    python_requires=">=3.10",
    packages=find_packages(include=["omni_jax*", "data_pipelines*", "configs*"]),
    install_requires=[
        "jax>=0.7",
        "flax>=0.11",
        "optax>=0.2.5",
        "orbax-checkpoint>=0.11",
        "grain>=0.2.12",
        "tensorflow-datasets>=4.9.9",
        "array_record>=0.7",
        "sentencepiece>=0.2",
        "ml-collections>=1.0",
        "clu>=0.0.12",
        "librosa>=0.10",
        "soundfile>=0.12",
        "espeakng-loader>=0.2.4",
        "jiwer>=3.0",
        "pocketsphinx>=5.1",  # the independent recognizer of the suites (its wheel has the model)
        "matplotlib>=3.8",
        "tensorboardX>=2.6",
        "absl-py>=2.0",
        "numpy>=1.26",
        "flatbuffers>=24.3",  # jax.export serialization (omni_jax.serving.export)
        "safetensors>=0.8",  # pretrained LLM checkpoints (omni_jax.models.pretrained); reads BF16
    ],
    extras_require={
        "test": ["pytest>=8", "pyyaml>=6"],  # tiny HF checkpoints, GKE YAML
        "tf": ["tensorflow"],
    },
)
