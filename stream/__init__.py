"""The recstream stream processor: ingest -> window state -> batcher -> Triton client -> outputs -> policy -> guide.

This package never imports torch: it talks to the model only through Triton.
"""
