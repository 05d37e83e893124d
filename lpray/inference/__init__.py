"""Inference without the training stack: networks loaded from model directories, their heatmap
decoding, prediction chunks, and the multi-member engine that ``lpray predict`` and
``lpray track`` run. Nothing here imports Lightning (a test checks it)."""
