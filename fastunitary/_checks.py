"""Input validation shared by the functional ops and the modules.

Every check raises at the call site with a message that names the argument, the shape or
dtype that was expected and what was given, so that a wrong call fails loudly instead of
broadcasting into a silently wrong result. Shape and dtype checks are static (they read
metadata only), so they cost nothing under ``torch.compile`` and cause no graph break.
"""

from __future__ import annotations

import numbers
import operator
import os
import sys
from collections.abc import Sequence

import torch

Shape = Sequence["int | str | None"]


def _fmt(shape: Shape) -> str:
    items = ["*" if s is None else str(s) for s in shape]
    return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"


def check_positive_int(name: str, value) -> None:
    """Raise ``ValueError`` unless ``value`` is an integer >= 1 (numpy and 0-dim integer
    tensors count; ``True`` does not)."""
    try:
        ok = not isinstance(value, bool) and operator.index(value) >= 1
    except TypeError:
        ok = False
    if not ok:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def check_flag(name: str, value) -> bool:
    """``value`` as a bool, for an on/off option (``bias``, ``batch_first``, ...): a bool,
    or an int 0 or 1 as ``torch.nn.LSTM`` takes. Raise ``TypeError`` otherwise: a string or
    a float there is almost always an argument in the wrong position (``torch.nn.RNN``'s
    fourth is ``nonlinearity``, ``torch.nn.LSTM``'s is ``bias``), which truthiness would
    read as ``True``."""
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral) and value in (0, 1):
        return bool(value)
    raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r} (an "
                    f"argument in the wrong position?)")


def check_fixed_float(name: str, value) -> float:
    """``value`` as a Python float, for a fixed (not differentiated) hyperparameter: a real
    number (numpy scalars included; ``bool`` not) or a 0-dim real tensor that does not
    require grad. Raise ``TypeError`` otherwise: a tensor that requires grad would have its
    gradient silently dropped, and a string would fail later with a puzzling message."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    if (isinstance(value, torch.Tensor) and value.dim() == 0 and not value.is_complex()
            and value.dtype != torch.bool):
        if value.requires_grad:
            raise TypeError(f"{name} is a fixed float: its gradient is not computed, and the "
                            f"given tensor requires grad (pass {name}.item(), or a float)")
        return float(value)
    raise TypeError(f"{name} must be a float, got {type(value).__name__} {value!r}")


def check_tensor(name: str, x, *, allow_complex: bool = True) -> None:
    """Raise ``TypeError`` unless ``x`` is a floating-point (or complex) tensor."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.is_complex():
        if not allow_complex:
            raise TypeError(f"{name} must be a real floating-point tensor, got {x.dtype}")
    elif not x.is_floating_point():
        kinds = "floating-point or complex" if allow_complex else "floating-point"
        raise TypeError(f"{name} must be a {kinds} tensor, got {x.dtype}")


def check_shape(name: str, x: torch.Tensor, expected: Shape, *, what: str = "") -> None:
    """Raise ``ValueError`` unless ``x.shape`` matches ``expected``.

    ``expected`` holds ints (exact sizes) and ``None`` (any size); its length fixes the rank.
    ``what`` names the dimensions for the message, e.g. ``"(T, B, input_size)"``.
    """
    ok = x.dim() == len(expected) and all(
        e is None or s == e for s, e in zip(x.shape, expected)  # no int(): keeps a SymInt symbolic
    )
    if not ok:
        names = f" = {what}" if what else ""
        raise ValueError(
            f"{name} must have shape {_fmt(expected)}{names}, got {tuple(x.shape)}"
        )


def check_same_device(reference_name: str, reference: torch.Tensor, **others) -> None:
    """Raise ``ValueError`` if any tensor in ``others`` lives on another device."""
    for name, t in others.items():
        if t is not None and t.device != reference.device:
            raise ValueError(
                f"{name} is on {t.device}, {reference_name} on {reference.device}; "
                f"move both to the same device"
            )


def check_dtype(name: str, t: torch.Tensor, dtype: torch.dtype, *,
                owner: str = "the module's parameters", autocast: bool = True) -> None:
    """Raise ``TypeError`` unless ``t`` is ``dtype`` or, under autocast (when ``autocast``),
    the autocast dtype of its device: the two precisions the ops see there. Anything else
    would fail deep inside a matmul, or silently change the precision of the run."""
    if t.dtype == dtype:
        return
    device = t.device.type
    if (autocast and torch.is_autocast_enabled(device)
            and t.dtype == torch.get_autocast_dtype(device)):
        return
    hint = " or run under torch.autocast" if autocast else ""
    raise TypeError(f"{name} is {t.dtype} but {owner} are {dtype}; convert one of them "
                    f"(e.g. model.double()){hint}")


def check_finite(name: str, x: torch.Tensor) -> None:
    """Raise if ``x`` holds NaN or Inf.

    Eagerly this raises ``ValueError``. Under ``torch.compile`` a Python-side check would
    need the value on the host (a graph break), so it becomes an in-graph assertion that
    raises ``RuntimeError`` when the compiled code runs.
    """
    if torch.compiler.is_compiling():
        torch._assert_async(torch.isfinite(x).all(), f"{name} contains NaN or Inf")
    elif not bool(torch.isfinite(x).all()):
        bad = (~torch.isfinite(x)).sum().item()
        raise ValueError(f"{name} contains NaN or Inf ({bad} of {x.numel()} entries)")


_PACKAGE_ROOT = os.path.dirname(os.path.abspath(__file__)) + os.sep


def caller_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning point at the first frame outside the
    package (the user's line). A fixed number cannot: the library's own call depth differs
    from one module class to another, and a warning that always names one library line is
    shown only once per process by Python's default filter."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_ROOT):
        frame, level = frame.f_back, level + 1
    return level
