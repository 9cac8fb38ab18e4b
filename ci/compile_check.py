"""Ahead-of-time compile check of every Triton kernel, for sm_80 and sm_90, with no GPU.

    python ci/compile_check.py            # the configurations the dispatch uses; exit 1 on failure
    python ci/compile_check.py --explore  # also larger tiles, to see where spills begin
    python ci/compile_check.py --explore --only split_fwd  # names containing "split_fwd"

Each kernel is compiled with ``triton.compile`` for ``GPUTarget("cuda", 80|90, 32)`` at
every configuration its dispatch can send to it (each kernel module's ``aot_configs()``),
generic and in the two specializations launches produce (see ``VARIANTS``), and
the cubin's resource usage is read with the ``cuobjdump`` shipped inside triton (shared
memory from Triton's metadata, which counts the dynamic part). It fails on a compile
error, on shared memory over the target's limit, or on any spill (``LOCAL`` or ``STACK``
bytes: ptxas puts spilled registers in the stack frame) and prints registers, shared
memory and spills per config; for a spill, also the loop depth of its local stores and
loads in the SASS (``4 STL at loop depth 0, 4 LDL at loop depth 1``: stored outside the
loops, reloaded once per time step), which says what it costs per step.
This is how CI proves the kernels build on real GPUs.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import importlib
import os
import pkgutil
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

import fastunitary.kernels

os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

TARGETS = (80, 90)
#: Shared memory one block may use (bytes): A100 163 KB, H100 227 KB.
SHARED_LIMIT = {80: 163 * 1024, 90: 227 * 1024}
CUOBJDUMP = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
#: Every kernel module of fastunitary.kernels; each declares its configs in aot_configs().
MODULES = [m.name for m in pkgutil.iter_modules(fastunitary.kernels.__path__)
           if not m.name.startswith("_")]


#: Triton specializes, at launch, pointers aligned to 16 bytes and integers divisible by 16
#: (except the ``do_not_specialize`` ones); the variants can differ in registers. Torch's
#: allocations are always aligned, so "pointers" (aligned tensors, sizes such as n = 100
#: that 16 does not divide) is the common launch, and "aligned" the one at n = 64, 128...
VARIANTS = ("generic", "pointers", "aligned")


def all_cases(explore: bool):
    """(name, module, kernel attribute, signature, constexprs, num_warps or options,
    dispatched, variant):
    each configuration in each of ``VARIANTS``."""
    for module in MODULES:
        mod = importlib.import_module(f"fastunitary.kernels.{module}")
        for name, kernel, sig, const, warps, dispatched in mod.aot_configs(explore):
            for variant in VARIANTS:
                yield name, module, kernel, sig, const, warps, dispatched, variant


def _alignment_attrs(fn, sig: dict, variant: str) -> dict | None:
    """``tt.divisibility = 16`` on every pointer, and for ``"aligned"`` on every
    specializable integer argument too."""
    if variant == "generic":
        return None
    keep = set(getattr(fn, "do_not_specialize", ()))
    return {(i,): [["tt.divisibility", 16]] for i, (arg, ty) in enumerate(sig.items())
            if ty != "constexpr" and arg not in keep and i not in keep
            and (ty.startswith("*") or variant == "aligned")}


def cuobjdump(cubin: bytes, flag: str) -> subprocess.CompletedProcess:
    """Triton's own ``cuobjdump`` with ``flag`` on a cubin (it reads files only)."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        return subprocess.run([str(CUOBJDUMP), flag, f.name], capture_output=True, text=True)


def resource_usage(cubin: bytes) -> dict:
    run = cuobjdump(cubin, "--dump-resource-usage")
    run.check_returncode()
    fields = dict(re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", run.stdout))
    return {k: int(v) for k, v in fields.items()}


def local_accesses(cubin: bytes) -> str:
    """:func:`local_access_depths` of the cubin's SASS (or why it could not be read)."""
    run = cuobjdump(cubin, "-sass")
    if run.returncode != 0:
        return f"SASS unreadable: {run.stderr.strip()[:80]}"
    return local_access_depths(run.stdout) or "no STL/LDL in the SASS"


#: A branch and its target in ``cuobjdump -sass``: ``BRA 0x950``, ``@!P1 BRA 0x3780``,
#: ``BRA !P4, 0x4030``, ``BRA.U !UP0, 0x..``, ``BRA.DIV UR4, 0x..``, ``BRA !PT, 0x..``.
_BRANCH = re.compile(r"\bBRA(?:\.[A-Z.]+)?\s+(?:[!~]?U?(?:P[0-9T]|R\d+|RZ),\s*)?0x([0-9a-f]+)")


def local_access_depths(sass: str) -> str:
    """Where a spill's local stores and loads sit, e.g. ``"4 STL at loop depth 0, 4 LDL at
    loop depth 1"``: four stores outside every loop, four loads one loop deep (in a
    recurrence kernel, once per time step). A loop is the span from a backward branch's
    target to the furthest branch back to it (``cuobjdump -sass`` lines
    ``/*38c0*/ BRA 0x950 ;``)."""
    code = [(int(a, 16), op) for a, op in re.findall(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);", sass)]
    loop_end: dict[int, int] = {}  # header -> furthest back edge to it (continue-style edges)
    for a, op in code:
        for target in map(lambda t: int(t, 16), _BRANCH.findall(op)):
            if target < a:
                loop_end[target] = max(a, loop_end.get(target, a))
    counts: dict[tuple[str, int], int] = {}
    for a, op in code:
        kind = next((k for k in ("STL", "LDL") if re.search(rf"\b{k}\b", op)), None)
        if kind:
            key = (kind, sum(start <= a <= end for start, end in loop_end.items()))
            counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{v} {kind} at loop depth {depth}"
                     for (kind, depth), v in sorted(counts.items(), key=lambda kv: kv[0][::-1]))


def compile_one(case) -> tuple[dict, int, str]:
    name, module, kernel_name, sig, const, options, dispatched, variant, cap = case
    # a module's aot_configs gives num_warps, or triton.compile's options whole
    options = options if isinstance(options, dict) else {"num_warps": options}
    fn = getattr(importlib.import_module(f"fastunitary.kernels.{module}"), kernel_name)
    attrs = _alignment_attrs(fn, sig, variant)
    try:
        compiled = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=const, attrs=attrs),
                                  target=GPUTarget("cuda", cap, 32), options=options)
        use = resource_usage(compiled.asm["cubin"])
        # cuobjdump sees only static shared memory; Triton's tiles are dynamic
        use["SHARED"] = max(use.get("SHARED", 0), compiled.metadata.shared)
        spills = use.get("LOCAL", 0) + use.get("STACK", 0)
        if use["SHARED"] > SHARED_LIMIT[cap]:
            return use, -1, f"SHARED MEMORY over the sm_{cap} limit {SHARED_LIMIT[cap]}"
        if spills == 0:
            return use, 0, "ok"
        return use, spills, f"SPILLS ({local_accesses(compiled.asm['cubin'])})"
    except Exception as e:  # a compile error is a failure, reported with its cause
        return {}, -1, f"COMPILE ERROR: {type(e).__name__}: {e}"[:200]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--explore", action="store_true",
                   help="also compile tiles the dispatch does not use (reported, never fatal)")
    p.add_argument("--only", default="",
                   help="compile only the configurations whose name contains this text")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = p.parse_args(argv)
    cases = [(*c, cap) for c in all_cases(args.explore) if args.only in c[0] for cap in TARGETS]
    failures = 0
    print(f"triton {triton.__version__}")
    print(f"{'kernel configuration':<66} {'variant':>8} {'sm':>3} {'REG':>4} {'SHARED':>7} "
          f"{'LOCAL':>6} {'STACK':>6}  status")
    with concurrent.futures.ProcessPoolExecutor(args.jobs) as pool:
        for case, (use, spills, status) in zip(cases, pool.map(compile_one, cases)):
            name, dispatched, variant, cap = case[0], case[6], case[7], case[8]
            if not dispatched:
                status += " (not dispatched)"
            elif spills != 0:
                failures += 1
            print(f"{name:<66} {variant:>8} {cap:>3} {use.get('REG', '-'):>4} "
                  f"{use.get('SHARED', '-'):>7} {use.get('LOCAL', '-'):>6} "
                  f"{use.get('STACK', '-'):>6}  {status}", flush=True)
    print(f"{len(cases)} compiled, {failures} failing configuration(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
