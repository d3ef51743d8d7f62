"""``prefetch_nb(a, i)``: a cache prefetch hint for element ``i`` of a 1-D or flat-indexed array.

The vector env gathers one price row and one feature row per env from random bars of a tensor that
does not fit in L2; out-of-order execution cannot look far enough ahead to overlap those loads with
the previous envs' arithmetic, so the batch kernels ask for the rows of env n + PREFETCH_AHEAD while
they work on env n. Compiles to one ``prefetcht0`` (LLVM's ``llvm.prefetch``); a no-op on CPUs
without prefetch instructions. Never faults, so an address past the end of the array is harmless.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

PREFETCH_AHEAD = 32


@intrinsic
def prefetch_nb(typingctx, arr, idx):
    """Hint that ``arr.ravel()[idx]`` (C order, ``arr`` contiguous) will be read soon."""
    if not isinstance(arr, types.Array) or not isinstance(idx, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        i = context.cast(builder, args[1], sig.args[1], types.intp)
        ptr = builder.gep(ary.data, [i])
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                                            "llvm.prefetch.p0")
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.void(arr, idx), codegen
