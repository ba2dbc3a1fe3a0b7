"""Training, evaluation, embedding and the demo behind ``fgsbir train|eval|embed|demo``.

Submodules are imported on use so that ``import fgsbir_plugin`` stays light.
"""
