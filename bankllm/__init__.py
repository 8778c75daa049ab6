"""bankllm: train and diagnose small domain language models for banking chat."""

__version__ = "0.1.0"
