"""The torch code copied into generated scripts and called by the build backend: specc's own layers (layers) and the
training helpers (helpers). Imports only torch, torchvision and the standard library.
"""
