"""bankllm's speed benchmark: ``python -m bench`` (see ``bench/README.md``)."""
