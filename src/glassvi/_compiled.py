"""What the compiled (numba) kernels of the module and training parts share."""

from __future__ import annotations

import torch

_PREFETCH = None


def numba_available() -> bool:
    """Whether numba can be imported (it is a dependency; the kernels have torch fallbacks)."""
    try:
        import numba  # noqa: F401
    except ImportError:  # pragma: no cover - numba is a dependency
        return False
    return True


def kernels_apply(*tensors: torch.Tensor) -> bool:
    """Whether the compiled CPU kernels apply to ``tensors``, else the torch paths run.

    They do where every tensor is on the CPU, every floating-point one is float32, and numba
    can be imported (looked up here at each call, so that one switch turns them all off).
    """
    return (
        all(t.device.type == "cpu" for t in tensors)
        and all(t.dtype == torch.float32 for t in tensors if t.is_floating_point())
        and numba_available()
    )


def prefetch_intrinsic():
    """``prefetch(array, i)`` for numba kernels: start loading element ``i``'s cache line.

    ``i`` counts elements from the start of the C-contiguous array's data. Kernels that visit
    rows far apart in memory (a minibatch's peaks) issue it some rows ahead, so that the loads
    overlap instead of each row waiting for memory in turn. It changes no value.
    """
    global _PREFETCH
    if _PREFETCH is not None:
        return _PREFETCH
    from llvmlite import ir
    from numba.core import cgutils, types
    from numba.extending import intrinsic

    @intrinsic
    def prefetch(typingctx, array, i):
        def codegen(context, builder, signature, args):
            array_type = signature.args[0]
            view = context.make_array(array_type)(context, builder, args[0])
            address = builder.gep(view.data, [args[1]])
            i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
            function = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                "llvm.prefetch.p0",
            )  # fmt: skip
            # (address, for writing, keep in every cache level, data)
            one, three = ir.Constant(i32, 1), ir.Constant(i32, 3)
            builder.call(function, [builder.bitcast(address, i8p), one, three, one])
            return context.get_dummy_value()

        return types.void(array, types.intp), codegen

    _PREFETCH = prefetch
    return prefetch
