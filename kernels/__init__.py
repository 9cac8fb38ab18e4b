"""Triton kernels of fastunitary, installed as ``fastunitary.kernels``.

One module per op ``X`` (``kernels/X.py``) providing ``forward`` and ``backward`` with the
arguments of the registered ops ``fastunitary::X`` and ``fastunitary::X_backward`` (see
``fastunitary/functional/_dispatch.py``). An op has a Triton backend exactly when its
module exists here; until then ``backend="triton"`` raises a clear error and ``"auto"``
runs the reference. Nothing here imports the rest of the package: kernels know nothing
of modules (DESIGN.md).
"""
