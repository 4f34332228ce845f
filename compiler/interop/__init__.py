"""Models in and out: a live ``nn.Module`` to a verified spec (decompile), a spec's model to ONNX or torch.export
(exporting).
"""
