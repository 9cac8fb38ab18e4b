"""Complex values as real planes, the layout of every fused op (DESIGN.md, Numbers and shapes).

A complex vector of size ``n`` is the real vector ``[Re z, Im z]`` of width ``2n``
(concatenated on the last axis): this is also the real output layout of the complex
modules. A complex matrix acting on it is its real embedding ``[[Re W, -Im W], [Im W, Re W]]``,
so that ``W z`` becomes one real product. All helpers are differentiable.
"""

from __future__ import annotations

import torch


def to_planes(z: torch.Tensor) -> torch.Tensor:
    """``(..., n)`` complex -> ``(..., 2n)`` real ``[Re z, Im z]``."""
    if not z.is_complex():
        raise TypeError(f"to_planes expects a complex tensor, got {z.dtype}")
    return torch.cat([z.real, z.imag], dim=-1)


def as_complex(x: torch.Tensor) -> torch.Tensor:
    """``(..., 2n)`` real ``[Re z, Im z]`` -> ``(..., n)`` complex.

    Turns the output or ``h_n`` of a complex module (scuRNN) into ``torch.complex64``. The
    output of a bidirectional one is ``[Re f, Im f, Re b, Im b]`` (forward, then backward
    direction): split it first, ``as_complex(output.unflatten(-1, (2, -1)))`` gives
    ``(..., 2, n)``, direction second to last.
    """
    if x.is_complex():
        raise TypeError(f"as_complex expects a real tensor [Re, Im], got {x.dtype}")
    if x.shape[-1] % 2:
        raise ValueError(
            f"as_complex expects an even last dimension [Re, Im], got shape {tuple(x.shape)}"
        )
    n = x.shape[-1] // 2
    return torch.complex(x[..., :n], x[..., n:])


def real_embedding(W_re: torch.Tensor, W_im: torch.Tensor) -> torch.Tensor:
    """``(..., n, n)`` real and imaginary parts -> ``(..., 2n, 2n)`` real embedding."""
    top = torch.cat([W_re, -W_im], dim=-1)
    bottom = torch.cat([W_im, W_re], dim=-1)
    return torch.cat([top, bottom], dim=-2)
