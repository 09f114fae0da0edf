"""Files ``driftless up`` needs when installed from a wheel: the example manifests and component sources.

In a checkout these are symlinks to ``manifests/`` and ``examples/components/``; building a wheel copies
their content, so ``pip install .`` works outside the checkout too.
"""
