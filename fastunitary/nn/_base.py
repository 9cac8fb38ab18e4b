"""What every recurrent module of the library shares: a cell and a stacked sequence module.

Every model here is ``h_t = modReLU(W h_{t-1} + U x_t + c)`` with a model-specific way of
building ``W`` (scuRNN/scoRNN: a Cayley transform; ENRNN: a block matrix). A cell holds
``U``, ``c``, the modReLU bias and an optional trainable ``h0``, and builds ``W`` once per
forward call; subclasses only say how ``W`` is made. :class:`StackedRNN` gives the
``torch.nn.LSTM`` calling convention over a stack of cells. Modules are thin (DESIGN.md):
parameters, shape checks, and calls to the ops.
"""

from __future__ import annotations

import abc
import contextlib
import functools
import inspect
import operator
import re
import warnings
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from .. import _checks
from .._backend import check_backend_name
from ..functional.planes import to_planes
from ..functional.recurrence import recurrence_planes
from ._momentum import MomentumBuffer
from ._sequence import PackedIndex, SequenceLayout, accepts_empty_batch
from .init import glorot_uniform_


def param_groups(module: nn.Module, group_of: dict[str, str], lrs: dict[str, float]) -> list[dict]:
    """Optimizer groups by parameter name: ``group_of`` maps a parameter's own name to a
    group (default ``"other"``); ``lrs`` gives each group's learning rate."""
    params: dict[str, list] = {name: [] for name in lrs}
    for name, p in module.named_parameters():
        params[group_of.get(name.rsplit(".", 1)[-1], "other")].append(p)
    return [{"name": k, "params": v, "lr": lrs[k]} for k, v in params.items() if v]


#: the parameter dtypes a module supports -> the dtype of a complex state
COMPLEX_OF = {torch.float32: torch.complex64, torch.float64: torch.complex128}


def check_parameter_dtype(dtype: torch.dtype) -> None:
    """``TypeError`` unless ``dtype`` is one the modules' parameters may have."""
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype (torch.float32 or torch.float64), "
                        f"got {dtype!r}")
    if dtype not in COMPLEX_OF:
        raise TypeError(
            f"the module's parameters are {dtype}; keep them in float32 (or float64) "
            f"and run under torch.autocast for bfloat16/float16 compute"
        )


#: options of ``torch.nn.LSTM`` that a stacked module lacks unless it is an LSTM (the
#: MomentumRNN family's LSTMs take ``proj_size``), with their defaults
LSTM_ONLY_DEFAULTS = {"proj_size": 0}


_UNEXPECTED_KEYWORD = re.compile(r"[\w.]+\(\) got an unexpected keyword argument '(\w+)'")


class TorchConstructorOptions:
    """Mixin of every module of fastunitary.nn for the keywords of ``torch.nn.LSTM`` (and
    ``LSTMCell``) that the model constructors do not take themselves:

    - ``device=`` and ``dtype=``, torch's factory keywords: the module is built and
      initialized on the CPU (on the meta device for ``device="meta"``, which then
      allocates nothing), then moved with ``.to(device, dtype)``, so one seed gives the
      same initial weights on every device. ``dtype`` is float32 or float64 (for
      bfloat16/float16 compute, keep float32 and run under ``torch.autocast``); anything
      else is a ``TypeError`` here, not at the call. Initialization draws in the default
      dtype (float32) and is then converted: float64 weights are float32 values.
    - ``TORCH_ONLY_DEFAULTS``, options the module lacks (for the stacked modules
      :data:`LSTM_ONLY_DEFAULTS`): their defaults are accepted and dropped, so code
      written for ``torch.nn.LSTM`` runs unchanged; any other value raises an error
      naming the option and the module (the constructors' own signatures would name
      whichever class first sees the keyword).

    Each subclass's ``__init__`` (its own, or the one it resolves to through a user's
    mixin) is wrapped once, at class creation. The outermost ``__init__`` of a call takes
    the keywords, so the move happens once, after every parameter exists. A subclass whose
    ``__init__`` takes one of them itself (a user's projection, ``proj_size=``, say) keeps it.
    """

    TORCH_ONLY_DEFAULTS: dict = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        init = cls.__init__
        if getattr(init, "_takes_torch_options", False):  # inherited, already wrapped
            return
        own = inspect.signature(init).parameters
        options = {k: v for k, v in cls.TORCH_ONLY_DEFAULTS.items() if k not in own}
        factory = [k for k in ("device", "dtype") if k not in own]

        @functools.wraps(init)
        def __init__(self, *args, **kw):
            for name, default in options.items():
                if name in kw and kw.pop(name) != default:
                    raise NotImplementedError(
                        f"{type(self).__name__} has no {name} option, unlike torch.nn.LSTM; "
                        f"leave it out (or give its default, {name}={default!r})"
                    )
            to = {k: kw.pop(k) for k in factory if k in kw}
            to = {k: v for k, v in to.items() if v is not None}  # None: torch's default
            if "dtype" in to:
                check_parameter_dtype(to["dtype"])
            build_on = contextlib.nullcontext()
            if "device" in to:
                to["device"] = torch.device(to["device"])
                build_on = torch.device("meta" if to["device"].type == "meta" else "cpu")
            try:
                with build_on:
                    init(self, *args, **kw)
            except TypeError as error:
                # Python names the innermost __init__ the keyword reached (RecurrentCell's,
                # through **kwargs); name the class the user called instead
                unknown = _UNEXPECTED_KEYWORD.fullmatch(str(error))
                if unknown is None or unknown[1] not in kw:
                    raise
                raise TypeError(f"{type(self).__name__}() got an unexpected keyword argument "
                                f"{unknown[1]!r}") from None
            if to:
                self.to(**to)

        __init__._takes_torch_options = True
        cls.__init__ = __init__


#: an integer type of each width, to compare floating values bit for bit
_BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _bits_dtype(t: torch.Tensor) -> torch.dtype | None:
    """The integer type to view ``t``'s values as (``None``: compared as they are)."""
    if t.is_complex():
        return _BITS[t.element_size() // 2]
    return _BITS[t.element_size()] if t.is_floating_point() else None


def _bits(t: torch.Tensor, bits: torch.dtype | None):
    """``t``'s values as ``bits`` (its real planes if complex), as a NumPy array on the CPU
    (comparing there runs 3-5x faster than ``torch.equal``), else as a tensor."""
    t = t.detach()
    if bits is not None:
        t = (torch.view_as_real(t) if t.is_complex() else t).view(bits)
    return t.numpy() if t.device.type == "cpu" else t


def _snapshot(sources: list[torch.Tensor]) -> tuple:
    """What the cached ``W`` was computed from: each source's dtype, device, shape, the
    integer type of its bits and a copy of them."""
    kinds = [_bits_dtype(p) for p in sources]
    return tuple((p.dtype, p.device, p.shape, bits, _bits(p.clone(), bits))
                 for p, bits in zip(sources, kinds))


def _same_values(snapshot: tuple, sources: list[torch.Tensor]) -> bool:
    """Whether ``sources`` hold bit for bit the values of the snapshot. It runs on every
    cached call, so its cost counts for a cell stepped at batch 1: 21-49 us of a 174-285
    us step on the 2-core CPU at hidden 128-256 (``python -m bench.cell_step``)."""
    if len(snapshot) != len(sources):
        return False
    on_device = []  # compared there, read back once: one host synchronization
    for (dtype, device, shape, bits, kept), p in zip(snapshot, sources):
        if p.dtype != dtype or p.device != device or p.shape != shape:
            return False
        now = _bits(p, bits)
        if not isinstance(kept, np.ndarray):
            on_device.append((kept == now).all())
        elif not (kept == now).all():
            return False
    return not on_device or bool(torch.stack(on_device).all())


def _capturing_cuda_graph(sources: list[torch.Tensor]) -> bool:
    """Whether a CUDA graph is being captured on the current stream: its replays must
    rebuild ``W`` from the parameters, so the capture records the ops, not a cached W."""
    return (any(p.device.type == "cuda" for p in sources)
            and torch.cuda.is_current_stream_capturing())


class RecurrentCell(TorchConstructorOptions, nn.Module, abc.ABC):
    """One layer ``h' = modReLU(W h + U x + c)``: parameters, input term, a single step.

    Subclasses set ``is_complex`` and ``param_group_of`` and implement
    ``_create_recurrent_parameters``, ``_reset_recurrent_parameters``,
    ``_compute_recurrent_weight``, ``_weight_sources`` and ``recurrent_matrix``.

    Parameters (``n = hidden_size``, ``d = 2n`` complex / ``n`` real, ``m = input_size``):
        weight_ih: ``(d, m)`` input weights ``U`` (rows ``[Re U; Im U]`` when complex).
        bias_ih: ``(d,)`` input bias ``c`` (when ``bias=True``).
        modrelu_bias: ``(n,)``.
        h0: ``(d,)`` trainable initial state (when ``trainable_h0=True``).

    Momentum (MomentumRNN on a unitary/orthogonal cell, METHODS.md section 5): with
    ``momentum=mu`` the input term goes through the buffer
    ``v_t = mu v_{t-1} + momentum_step (U x_t + c)`` (one ``momentum_scan`` before the
    recurrence, the input bias inside the buffer as in the MomentumLSTM), and
    ``h_t = modReLU(W h_{t-1} + v_t)`` (``momentum_step`` 1 by default; it and
    ``learnable_momentum`` raise without ``momentum``). An option of every cell rather than separate
    classes, because it touches only the input term: ``W``, its parametrization and every
    model-specific feature stay as they are, for scuRNN, scoRNN and ENRNN alike.

    Precision: parameters float32 (or float64, e.g. for ``gradcheck``); for bfloat16 or
    float16 compute keep them in float32 and run under ``torch.autocast``. Every cell
    takes ``device=`` and ``dtype=`` as ``torch.nn.LSTMCell`` does
    (:class:`TorchConstructorOptions`).

    ``W`` is cached in eval mode with gradients off, and reused while its sources hold the
    same values, however they change (see :meth:`_recurrent_weight`).
    """

    is_complex: bool = False
    #: parameter name -> optimizer group; parameters not listed are in "other"
    param_group_of: dict[str, str] = {}

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        trainable_h0: bool = False,
        backend: str = "auto",
        check_finite: bool = False,
        momentum: float | None = None,
        momentum_step: float | None = None,
        learnable_momentum: bool = False,
    ):
        super().__init__()
        _checks.check_positive_int("input_size", input_size)
        _checks.check_positive_int("hidden_size", hidden_size)
        check_backend_name(backend)
        bias = _checks.check_flag("bias", bias)
        self.input_size, self.hidden_size = input_size, hidden_size
        self.backend, self.check_finite = backend, check_finite
        self.state_size = 2 * hidden_size if self.is_complex else hidden_size
        self.weight_ih = nn.Parameter(torch.empty(self.state_size, input_size))
        self.bias_ih = nn.Parameter(torch.zeros(self.state_size)) if bias else None
        self.modrelu_bias = nn.Parameter(torch.empty(hidden_size))
        self.h0 = nn.Parameter(torch.empty(self.state_size)) if trainable_h0 else None
        self._weight_cache = None
        self._frozen_weight = None  # set only by frozen_recurrent_weights
        self.momentum = None
        if momentum is not None:
            self.momentum = MomentumBuffer(
                "momentum", mu=momentum, step=1.0 if momentum_step is None else momentum_step,
                learnable=learnable_momentum, names={"mu": "momentum", "step": "momentum_step"})
        elif momentum_step is not None or learnable_momentum:  # would be dropped silently
            raise TypeError("momentum_step and learnable_momentum configure the momentum "
                            "buffer: give momentum=mu as well")
        self._create_recurrent_parameters()
        self.reset_parameters()

    # -- initialization ---------------------------------------------------------------
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Initialize every parameter (METHODS.md for the model at hand; learnable momentum
        coefficients to their given values)."""
        if self.momentum is not None:
            self.momentum.reset_parameters()
        with torch.no_grad():
            self._reset_input_weights(generator)
            if self.bias_ih is not None:
                self.bias_ih.zero_()
            self.modrelu_bias.uniform_(-0.01, 0.01, generator=generator)
            if self.h0 is not None:
                self.h0.uniform_(-0.01, 0.01, generator=generator)
            self._reset_recurrent_parameters(generator)

    def _reset_input_weights(self, generator: torch.Generator | None) -> None:
        """Glorot-uniform on ``U`` (on ``Re U`` and on ``Im U`` for a complex state)."""
        n, m = self.hidden_size, self.input_size
        for plane in self.weight_ih.view(-1, n, m):
            glorot_uniform_(plane, m, n, generator=generator)

    @abc.abstractmethod
    def _create_recurrent_parameters(self) -> None:
        """Register the parameters and buffers ``W`` is built from."""

    @abc.abstractmethod
    def _reset_recurrent_parameters(self, generator: torch.Generator | None) -> None:
        """Initialize them."""

    # -- the recurrent matrix -----------------------------------------------------------
    @abc.abstractmethod
    def _compute_recurrent_weight(self) -> torch.Tensor:
        """``(d, d)`` real matrix for the recurrence op (the real embedding if complex)."""

    @abc.abstractmethod
    def _weight_sources(self) -> list[torch.Tensor]:
        """The tensors ``W`` is computed from (the key of the cached ``W``)."""

    @abc.abstractmethod
    def recurrent_matrix(self, layer: int = 0) -> torch.Tensor:
        """``W`` now in use, as users inspect it (complex for a complex state)."""

    @property
    def _registered_weight(self) -> torch.Tensor:
        """A parameter the cell always registers (``modrelu_bias``), whose device and dtype
        the input checks compare with: ``weight_ih`` may be a plain tensor that a hook
        recomputes (hook-based ``weight_norm``, pruning), still on the old dtype or device
        after ``.to()`` until the hook runs."""
        return self.modrelu_bias

    def _weight_config(self) -> tuple:
        """Settings other than the sources that ``_compute_recurrent_weight`` reads (a key
        of the cached ``W``): the backend; subclasses add theirs."""
        return (self.backend,)

    def _recurrent_weight(self) -> torch.Tensor:
        """``(d, d)`` matrix the recurrence op uses, computed once per forward call.

        When no gradient can flow into it (eval mode with grad disabled, or frozen
        parameters), it is cached and reused while every source holds the same values
        (compared bit for bit with a copy taken when ``W`` was computed), with the same
        dtype, device and shape, and the settings ``W`` depends on (:meth:`_weight_config`)
        are unchanged. Any change to the values is seen, however it is made: an optimizer,
        ``load_state_dict``, ``p.data.copy_`` (as ``torch_ema`` swaps in its averages),
        ``vector_to_parameters``, ``Tensor.set_``, NumPy views. The check reads the sources
        once per call (on CUDA, one host synchronization per layer and call). Never
        cached: in training mode, with gradients flowing into ``W``, while compiling,
        exporting or tracing (``torch.jit.trace`` would keep a cached ``W`` as a
        constant), while a CUDA graph is captured (its replays must rebuild ``W``), under
        inference mode, functorch transforms or forward-mode AD, for parameters on the
        meta device, and for parameters in shared CPU memory (``share_memory()``: other
        processes write them all the time). Inside :func:`frozen_recurrent_weights`
        (export) it is the ``W`` computed on entry.
        """
        frozen = getattr(self, "_frozen_weight", None)  # absent from cells pickled before it
        if frozen is not None:
            return frozen
        sources = self._weight_sources()
        if (
            torch.compiler.is_compiling()
            # torch.jit.trace would record a cached W as a constant: the traced program
            # would ignore the parameters it carries (and any loaded into it later)
            or torch.jit.is_tracing()
            or self.training
            or (torch.is_grad_enabled() and any(p.requires_grad for p in sources))
            # an inference tensor cached here could not be saved for a later backward
            or torch.is_inference_mode_enabled()
            # under vmap/grad transforms the parameters are wrapped and have no storage
            or torch._C._are_functorch_transforms_active()
            # a dual parameter shares its primal's storage and version: a cached W would
            # drop its tangent
            or torch.autograd.forward_ad._current_level >= 0
            or any(p.device.type == "meta" for p in sources)
            # other processes write shared memory (Hogwild) all the time
            # (CUDA storages always report is_shared(): they are not tested)
            or any(p.device.type == "cpu" and p.is_shared() for p in sources)
            or _capturing_cuda_graph(sources)
        ):
            self._weight_cache = None
            return self._compute_recurrent_weight()
        config = self._weight_config()
        entry = self._weight_cache  # read once: another thread may drop it meanwhile
        if entry is not None and entry[0] == config and _same_values(entry[1], sources):
            return entry[2]
        # the copy first: a write between computing W and copying (another thread's
        # optimizer step) must leave the copy unlike the sources, not W unlike them
        snapshot = _snapshot(sources)
        weight = self._compute_recurrent_weight()
        self._weight_cache = (config, snapshot, weight)
        return weight

    #: hyperparameters that count the -1 entries of a sign buffer (scoRNN's ``rho`` of
    #: ``D``): set from the buffer after ``load_state_dict``, so they describe what loaded
    NEGATIVE_COUNTS: dict[str, str] = {}

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        for count, buffer in self.NEGATIVE_COUNTS.items():
            signs = getattr(self, buffer)
            if signs.device.type != "meta":
                setattr(self, count, int((signs < 0).sum()))

    def clear_weight_cache(self) -> None:
        """Drop the cached ``W`` (and its copy of the sources), so that the next call
        rebuilds it from the parameters. Never needed for correctness: the cache compares
        the sources' values on every call (see :meth:`_recurrent_weight`); it frees the
        memory."""
        self._weight_cache = None

    def train(self, mode: bool = True):
        if mode != self.training:  # a mode switch never leaves an entry behind
            self._weight_cache = None
        return super().train(mode)

    # -- input term and one step -------------------------------------------------------
    def input_term(self, x: torch.Tensor) -> torch.Tensor:
        """``u = U x + c``: ``(T, B, input_size) -> (T, B, d)``, planes ``[Re | Im]`` if
        complex; with momentum, the buffers ``v_t`` of ``u`` (see the class docstring)."""
        if self.momentum is None:
            return F.linear(x, self.weight_ih, self.bias_ih)
        return self.momentum.of_input(x, self.weight_ih, self.bias_ih, self.backend)

    def _step_inputs(self, input: torch.Tensor, hx: torch.Tensor | None):
        _checks.check_tensor("input", input, allow_complex=False)
        if input.dim() not in (1, 2):
            raise ValueError(
                f"input must have shape (B, input_size) or (input_size,), got {tuple(input.shape)}"
            )
        if input.shape[-1] != self.input_size:
            raise ValueError(
                f"input must have last dimension input_size = {self.input_size}, "
                f"got shape {tuple(input.shape)}"
            )
        _checks.check_same_device("the module's parameters", self._registered_weight, input=input)
        check_dtype("input", input, self._registered_weight)
        unbatched = input.dim() == 1
        x = input.unsqueeze(0) if unbatched else input
        B = x.shape[0]
        if hx is not None:
            hx = state_planes("hx", hx, self, (B, self.state_size), unbatched)
        if self.check_finite:
            _checks.check_finite("input", x)
            if hx is not None:
                _checks.check_finite("hx", hx)
        return x, hx, unbatched

    @accepts_empty_batch(2)
    def forward(self, input: torch.Tensor, hx: torch.Tensor | None = None, *,
                _sequence: bool = False) -> torch.Tensor:
        """One step ``h' = modReLU(W h + U x + c)``.

        Args:
            input: ``(B, input_size)`` or ``(input_size,)``.
            hx: ``(B, d)`` or ``(d,)`` (``d = 2 * hidden_size`` ``[Re | Im]`` for a complex
                state, which also accepts a complex ``(B, hidden_size)``), or ``None`` for
                zeros (or the trainable ``h0``).
        Returns:
            ``(B, d)`` or ``(d,)``.

        The stacked modules call ``cell(x, h0, _sequence=True)``: :meth:`run_sequence` on
        their checked ``(T, B, input_size)`` input, through ``__call__`` so that hooks
        registered on the cell run.
        """
        if _sequence:
            return self.run_sequence(input, hx)
        if self.momentum is not None:
            raise RuntimeError(
                "a momentum cell's buffer runs over the whole sequence (one scan); stepping "
                "it one input at a time would restart the buffer at every step. Call "
                "run_sequence(x) with x (T, B, input_size), or use the stacked module"
            )
        x, hx, unbatched = self._step_inputs(input, hx)
        h = self.run_sequence(x.unsqueeze(0), hx)[0]
        return h[0] if unbatched else h

    def run_sequence(self, x: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
        """This layer over a whole sequence, as one recurrence op (inputs unchecked).

        Args:
            x: ``(T, B, input_size)``.
            h0: ``(B, d)``, or ``None`` for the trainable ``h0`` if enabled, else zeros.
        Returns:
            ``(T, B, d)``: ``h_1 ... h_T``.
        """
        if h0 is None and self.h0 is not None:
            h0 = self.h0.expand(x.shape[1], self.state_size)
        return recurrence_planes(
            self.input_term(x),
            self._recurrent_weight(),
            self.modrelu_bias,
            h0,
            activation="modrelu",
            is_complex=self.is_complex,
            backend=self.backend,
        )

    def _options_repr(self) -> str:
        """The non-default options every cell shares, for ``extra_repr``."""
        s = ""
        if self.bias_ih is None:
            s += ", bias=False"
        if self.h0 is not None:
            s += ", trainable_h0=True"
        if self.backend != "auto":
            s += f", backend={self.backend!r}"
        return s

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}" + self._options_repr()


def check_dropout(dropout: float, num_layers: int) -> None:
    """``ValueError`` outside [0, 1] (as ``torch.nn.LSTM``); a warning when there is no layer
    boundary to act on."""
    if not 0.0 <= float(dropout) <= 1.0:
        raise ValueError(f"dropout must be in [0, 1], got {dropout}")
    if dropout > 0 and num_layers == 1:
        warnings.warn("dropout acts between layers; with num_layers=1 it does nothing",
                      stacklevel=_checks.caller_stacklevel())


def check_proj_size(proj_size, hidden_size: int) -> None:
    """``ValueError`` unless ``proj_size`` is an int in ``[0, hidden_size)``, as
    ``torch.nn.LSTM`` (0: no projection)."""
    try:
        ok = not isinstance(proj_size, bool) and 0 <= operator.index(proj_size) < hidden_size
    except TypeError:
        ok = False
    if not ok:
        raise ValueError(f"proj_size must be an int in [0, hidden_size = {hidden_size}) "
                         f"(0: no projection), got {proj_size!r}")


def check_dtype(name: str, t: torch.Tensor, weight: torch.Tensor) -> None:
    """The dtype policy of every module (DESIGN.md), for an input or a state ``t`` given to
    a module whose parameters include ``weight``: ``TypeError`` when

    - the parameters are neither float32 nor float64: for bfloat16/float16 compute they
      stay float32 and the forward runs under ``torch.autocast``;
    - ``t`` is not of their precision (``weight.dtype``, or its complex counterpart for a
      complex state), nor, under autocast, of the autocast dtype (as ``torch.nn.LSTM``
      takes a bf16 ``hx`` there: the input term is cast and the state accumulates in
      float32). A float64 ``t`` is refused under autocast too: it would turn the whole
      recurrence float64.
    """
    check_parameter_dtype(weight.dtype)
    if t.is_complex():  # no complex autocast dtype: the state keeps the parameters' precision
        if t.dtype != COMPLEX_OF[weight.dtype]:
            raise TypeError(
                f"{name} is {t.dtype} but the module's parameters are {weight.dtype} (a "
                f"complex {name} must be {COMPLEX_OF[weight.dtype]}); convert one of them"
            )
        return
    _checks.check_dtype(name, t, weight.dtype)


def state_planes(name, h, cell: RecurrentCell, shape: tuple, unbatched: bool,
                 layers: str = "num_layers") -> torch.Tensor:
    """Check a user-given state and return it in the planes layout, shape ``shape``
    (``layers`` names its first dimension in the message)."""
    _checks.check_tensor(name, h)
    _checks.check_same_device("the module's parameters", cell._registered_weight, **{name: h})
    if h.is_complex() and not cell.is_complex:
        raise TypeError(f"{name} is complex ({h.dtype}) but this model's state is real")
    check_dtype(name, h, cell._registered_weight)
    if h.is_complex():
        h = to_planes(h)
    want = tuple(shape[:-2]) + tuple(shape[-1:]) if unbatched else tuple(shape)
    if tuple(h.shape) != tuple(want):
        what = (f"({layers}, " if len(shape) == 3 else "(") + ("" if unbatched else "B, ")
        what += "2 * hidden_size)" if cell.is_complex else "hidden_size)"
        raise ValueError(f"{name} must have shape {tuple(want)} = {what}, got {tuple(h.shape)}")
    return h.unsqueeze(-2) if unbatched else h


def layer_count_name(num_directions: int) -> str:
    """How the messages name the first dimension of a state: ``num_layers``, or
    ``2 * num_layers`` for a bidirectional module."""
    return "num_layers" if num_directions == 1 else "2 * num_layers"


def check_sequence_input(
    input, input_size: int, batch_first: bool, weight: torch.Tensor, check_finite: bool = False
) -> tuple[torch.Tensor, SequenceLayout]:
    """Check a module's sequence input; return it as ``(T, B, input_size)`` (a
    ``PackedSequence`` padded with zeros) and its :class:`SequenceLayout`.

    ``weight`` is one of the module's parameters (its device must match the input's, and
    its dtype as :func:`check_dtype` says); ``check_finite``: also refuse NaN/Inf.
    """
    packed = isinstance(input, PackedSequence)
    values = input.data if packed else input
    _checks.check_tensor("input", values, allow_complex=False)
    if packed:
        if values.dim() != 2 or values.shape[-1] != input_size or values.shape[0] < 1:
            raise ValueError(
                f"a PackedSequence input must hold data of shape (N, input_size = "
                f"{input_size}) with N >= 1, got {tuple(values.shape)}"
            )
    elif input.dim() not in (2, 3):
        raise ValueError(
            f"input must have shape {'(B, T, input_size)' if batch_first else '(T, B, input_size)'}"
            f" (or (T, input_size) unbatched, or a PackedSequence), got {tuple(input.shape)}"
        )
    elif input.shape[-1] != input_size:
        raise ValueError(
            f"input must have last dimension input_size = {input_size}, "
            f"got shape {tuple(input.shape)}"
        )
    _checks.check_same_device("the module's parameters", weight, input=values)
    check_dtype("input", values, weight)
    if check_finite:
        _checks.check_finite("input", values)
    if packed:
        index = PackedIndex(input)
        return index.padded(input.data), SequenceLayout(False, batch_first, index)
    unbatched = input.dim() == 2
    x = input.unsqueeze(1) if unbatched else input
    if batch_first and not unbatched:
        x = x.transpose(0, 1)
    if x.shape[0] < 1:  # as torch.nn.LSTM; an empty batch is run by accepts_empty_batch
        raise ValueError(f"input must have T >= 1 steps, got shape {tuple(input.shape)}")
    return x, SequenceLayout(unbatched, batch_first)


class StackedModule(TorchConstructorOptions, nn.Module):
    """What every stacked module shares, with the calling convention of ``torch.nn.LSTM``:
    its options ``num_layers``, ``batch_first``, ``dropout`` and ``bidirectional``, the run
    over layers and directions, and ``flatten_parameters``. Subclasses say how one layer
    of one direction runs (:meth:`_layers`) and where its parameters live."""

    TORCH_ONLY_DEFAULTS = LSTM_ONLY_DEFAULTS

    def _set_stack_options(self, num_layers: int, batch_first: bool, dropout: float,
                           bidirectional: bool) -> None:
        _checks.check_positive_int("num_layers", num_layers)
        check_dropout(dropout, num_layers)
        self.batch_first = _checks.check_flag("batch_first", batch_first)
        self.num_layers, self.dropout = num_layers, float(dropout)
        self.bidirectional = _checks.check_flag("bidirectional", bidirectional)
        self.num_directions = 2 if self.bidirectional else 1

    def flatten_parameters(self) -> None:
        """Nothing to do (there is no cuDNN weight buffer); kept so that code written for
        ``torch.nn.LSTM``, which calls it, runs unchanged."""

    def layer_keys(self) -> list[tuple[int, bool]]:
        """``(layer, reverse)`` of every layer and direction, in ``h_n``'s order
        (:meth:`state_index`)."""
        return [(k, d == 1) for k in range(self.num_layers) for d in range(self.num_directions)]

    @property
    def all_weights(self) -> list[list[nn.Parameter]]:
        """Each layer's (direction's) weights, in ``h_n``'s order (:meth:`layer_keys`), as
        ``torch.nn.LSTM.all_weights``: a cell's parameters, or ``torch.nn.LSTM``'s weights
        and biases of the layer (not the momentum coefficients nor SBO-RNN's ``mu``)."""
        return [self._layer_weights(k, reverse) for k, reverse in self.layer_keys()]

    def _layer_weights(self, k: int, reverse: bool) -> list[nn.Parameter]:
        """The parameters of layer ``k`` (``reverse``: its backward direction)."""
        raise NotImplementedError

    def state_index(self, k: int, reverse: bool = False) -> int:
        """Index of layer ``k``'s (direction's) state in ``hx`` and ``h_n``: layer by
        layer, forward first, as ``torch.nn.LSTM``."""
        return k * self.num_directions + int(reverse)

    def _check_layer(self, layer: int, reverse: bool) -> int:
        """``layer`` as an index in ``[0, num_layers)`` (negative counts from the top)."""
        if not -self.num_layers <= layer < self.num_layers:
            raise ValueError(f"layer must be in [0, {self.num_layers}), got {layer}")
        if reverse and not self.bidirectional:
            raise ValueError("reverse=True needs a bidirectional module")
        return layer % self.num_layers

    def _layers(self, x: torch.Tensor, layout: SequenceLayout, run_layer):
        """Run every layer and direction, dropout between layers.

        ``run_layer(k, reverse, x) -> (output, *finals)`` runs one, ``x`` its input
        ``(T, B, in)``, reversed per sequence for the backward direction (whose output is
        turned back). Every layer above the first reads both directions' outputs,
        concatenated. Returns the last layer's output and each kind of final state stacked
        in ``h_n``'s order (:meth:`state_index`)."""
        finals, outputs = [], []
        for k, reverse in self.layer_keys():
            out = run_layer(k, reverse, layout.reverse(x) if reverse else x)
            outputs.append(layout.reverse(out[0]) if reverse else out[0])
            finals.append(out[1:])
            if len(outputs) == self.num_directions:  # layer k done: the next one's input
                x = outputs[0] if len(outputs) == 1 else torch.cat(outputs, -1)
                outputs = []
                if self.dropout > 0 and self.training and k < self.num_layers - 1:
                    x = F.dropout(x, self.dropout, training=True)
        return x, [torch.stack(f) for f in zip(*finals)]

    def _sizes_repr(self) -> str:
        """The positional size arguments, as the constructor takes them."""
        return f"{self.input_size}, {self.hidden_size}"

    def _options_repr(self, bias: bool, proj_size: int = 0) -> str:
        """The sizes, then ``torch.nn.LSTM``'s options that differ from their defaults, for
        ``extra_repr``, in its order."""
        s = self._sizes_repr()
        if proj_size:
            s += f", proj_size={proj_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        return s


@contextlib.contextmanager
def frozen_recurrent_weights(module: nn.Module):
    """Within the block, every cell in ``module`` uses its ``W`` as computed on entry.

    For export (:mod:`fastunitary.onnx`): ``W`` then enters a captured graph as a constant
    instead of as the ops that build it (the Cayley transform's solve, ENRNN's
    eigenvalues), which ONNX cannot express. Computed under ``torch.no_grad()``, as an
    eval-mode forward would (ENRNN's sticky switch included), from the sources' current
    values: a hook that sets them before each forward (pruning, ``spectral_norm``) must have
    run since they last changed (``fastunitary.onnx.export`` calls the model once first).
    """
    cells = [m for m in module.modules() if isinstance(m, RecurrentCell)]
    previous = [getattr(cell, "_frozen_weight", None) for cell in cells]  # a block nested in another
    try:
        with torch.no_grad():
            for cell in cells:
                cell._frozen_weight = cell._compute_recurrent_weight().detach()
        yield
    finally:
        for cell, weight in zip(cells, previous):
            cell._frozen_weight = weight


class StackedRNN(StackedModule):
    """Layers of cells with the calling convention of ``torch.nn.LSTM``, whose ``device=``
    and ``dtype=`` keywords every subclass takes (:class:`TorchConstructorOptions`).

    ``W`` of each layer is cached in eval mode with gradients off, and reused while its
    sources hold the same values (see :meth:`RecurrentCell._recurrent_weight`).

    Args:
        input_size: features of each input.
        num_layers, batch_first, dropout, bidirectional: as ``torch.nn.LSTM``. A
            bidirectional module has a second stack of cells, ``layers_reverse``, which
            reads each sequence backwards; every layer above the first reads both
            directions' outputs, concatenated.
        make_cell: ``make_cell(in_size)`` builds one layer's cell.
    """

    def __init__(
        self,
        input_size: int,
        num_layers: int,
        batch_first: bool,
        dropout: float,
        make_cell: Callable[[int], RecurrentCell],
        bidirectional: bool = False,
    ):
        super().__init__()
        self._set_stack_options(num_layers, batch_first, dropout, bidirectional)
        self.input_size = input_size

        def stack() -> nn.ModuleList:
            cells = [make_cell(input_size)]
            for _ in range(num_layers - 1):
                cells.append(make_cell(self.num_directions * cells[0].state_size))
            return nn.ModuleList(cells)

        self.layers = stack()
        self.layers_reverse = stack() if self.bidirectional else None
        self.hidden_size, self.state_size = self.layers[0].hidden_size, self.layers[0].state_size

    def _directions(self) -> list[nn.ModuleList]:
        """The stacks of cells: forward, then (bidirectional) reverse."""
        return [self.layers] if self.layers_reverse is None else [self.layers, self.layers_reverse]

    def _cells(self):
        return (cell for stack in self._directions() for cell in stack)

    def _layer_weights(self, k: int, reverse: bool) -> list[nn.Parameter]:
        return list(self._directions()[int(reverse)][k].parameters())

    #: as ``torch.nn.LSTM.proj_size`` (no projection), for code that reads it for shapes
    proj_size = 0

    @property
    def output_size(self) -> int:
        """Width of ``output``: ``2 * hidden_size`` (complex) or ``hidden_size``, twice that
        when bidirectional. ``h_n`` has width :attr:`state_size`."""
        return self.num_directions * self.state_size

    @property
    def bias(self) -> bool:
        """Whether the layers learn the input bias, as ``torch.nn.LSTM.bias``."""
        return self.layers[0].bias_ih is not None

    @property
    def backend(self) -> str:
        return self.layers[0].backend

    @backend.setter
    def backend(self, value: str) -> None:
        check_backend_name(value)
        for cell in self._cells():
            cell.backend = value

    @property
    def check_finite(self) -> bool:
        return self.layers[0].check_finite

    @check_finite.setter
    def check_finite(self, value: bool) -> None:
        for cell in self._cells():
            cell.check_finite = bool(value)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Initialize every layer afresh, as at construction (after ``to_empty``, say)."""
        for cell in self._cells():
            cell.reset_parameters(generator)

    def clear_weight_cache(self) -> None:
        """Drop every layer's cached ``W``, freeing it (:meth:`RecurrentCell.clear_weight_cache`)."""
        for cell in self._cells():
            cell.clear_weight_cache()

    def recurrent_matrix(self, layer: int = 0, reverse: bool = False) -> torch.Tensor:
        """``W`` of ``layer`` now in use (complex for a complex state); ``reverse``: of the
        backward direction of a bidirectional module."""
        layer = self._check_layer(layer, reverse)
        return self._directions()[int(reverse)][layer].recurrent_matrix()

    @accepts_empty_batch(3)
    def forward(self, input, hx: torch.Tensor | None = None):
        """Run all layers over the whole sequence.

        Args:
            input: ``(T, B, input_size)``, ``(B, T, input_size)`` with ``batch_first``,
                ``(T, input_size)`` unbatched, or a ``PackedSequence`` of sequences of
                different lengths.
            hx: initial states ``(D * num_layers, B, d)`` (``(D * num_layers, d)``
                unbatched), ``D`` = 2 if bidirectional else 1, ``d`` = :attr:`state_size`
                (a complex state also accepts a complex ``(D * num_layers, B,
                hidden_size)``); ``None`` for zeros, or the trainable ``h0`` when enabled.
        Returns:
            ``(output, h_n)``: ``output`` is ``(T, B, D * d)`` (``(B, T, D * d)`` with
            ``batch_first``, ``(T, D * d)`` unbatched, a ``PackedSequence`` for a packed
            input), the last layer's states ``h_1..h_T`` (bidirectional: the forward
            direction's, then the backward's, each at the step it belongs to); ``h_n`` is
            ``(D * num_layers, B, d)`` (``(D * num_layers, d)`` unbatched), every layer's
            and direction's final state, ordered as ``torch.nn.LSTM``'s (layer by layer,
            forward first). For a packed input each sequence ends at its own last step;
            the batch is in the input's original order, as for ``torch.nn.LSTM``. ``h_n``
            can be fed back as ``hx`` to continue a (unidirectional) sequence.
        """
        x, layout = check_sequence_input(input, self.input_size, self.batch_first,
                                         self.layers[0]._registered_weight, self.check_finite)
        T, B, _ = x.shape
        if hx is not None:
            hx = state_planes("hx", hx, self.layers[0],
                              (self.num_directions * self.num_layers, B, self.state_size),
                              layout.unbatched, layer_count_name(self.num_directions))
            if self.check_finite:
                _checks.check_finite("hx", hx)
        def run_layer(k, reverse, x):
            h0 = None if hx is None else hx[self.state_index(k, reverse)]
            # through the cell's __call__, so that hooks registered on it run (hook-based
            # weight_norm, pruning's masks, torchinfo's shape records)
            h = self._directions()[int(reverse)][k](x, h0, _sequence=True)
            return h, layout.last(h)

        out, (h_n,) = self._layers(x, layout, run_layer)
        return layout.output(out), layout.states(h_n)

    def extra_repr(self) -> str:
        s = self._options_repr(bias=self.layers[0].bias_ih is not None)
        if self.layers[0].h0 is not None:
            s += ", trainable_h0=True"
        if self.backend != "auto":
            s += f", backend={self.backend!r}"
        return s
