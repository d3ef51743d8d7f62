"""LLVM-level helpers for the batch kernels that numba does not offer.

``prefetch_nb(a, i)``: a cache prefetch hint for element ``i`` of a 1-D or flat-indexed array.
The vector env gathers one price row and one feature row per env from random bars of a tensor that
does not fit in L2; out-of-order execution cannot look far enough ahead to overlap those loads with
the other envs' arithmetic, so the kernels ask for the rows of the next block of envs while they
work on this one. Compiles to one ``prefetcht0`` (LLVM's ``llvm.prefetch``); a no-op on CPUs without
prefetch instructions. Never faults, so an address past the end of the array is harmless.

``stack_block_nb(dims)``: a float64 scratch array on the stack, of the size ``block_size`` gives
for the tuple types in ``dims``. LLVM can prove that a stack array overlaps none of the kernel's
argument arrays, which is what lets it vectorise the block loops across envs: over the argument
arrays themselves (rows ``L`` apart, ``L`` known only at run time) it would need more run-time
overlap checks than it is willing to emit, and falls back to scalar code.

``FACTORGYM_POISON_STACK=1`` (read at import; a test setting, see tests/test_engine_bounds.py) fills each
stack array with NaN bit patterns where it is allocated, so a kernel that reads a row before writing
it in a step carries NaN into its results instead of whatever an earlier call left there.

``sqrt_nb(x)``: ``math.sqrt`` that LLVM can vectorise (see its docstring); ``lane_index_nb``:
the block index arithmetic, without numba's negative-index wraparound.
"""

from __future__ import annotations

import os

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


#: fill stack arrays with NaN where they are allocated (a test setting; part of the kernels' cache stamp)
POISON_STACK = os.environ.get("FACTORGYM_POISON_STACK", "") == "1"


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


@intrinsic
def sqrt_nb(typingctx, x):
    """``math.sqrt`` of a float64 as LLVM's ``llvm.sqrt`` intrinsic (the same correctly rounded result).
    numba calls libm's ``sqrt`` instead, a function LLVM does not know to be free of side effects, so
    no loop containing it vectorises."""
    if not isinstance(x, types.Float) or x.bitwidth != 64:
        return None

    def codegen(context, builder, sig, args):
        f64 = ir.DoubleType()
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(f64, [f64]), "llvm.sqrt.f64")
        return builder.call(fn, [args[0]])

    return types.float64(x), codegen


def stack_block_intrinsic(size_of):
    """An intrinsic returning a 1-D float64 array of ``size_of(dims)`` elements on the stack.

    ``size_of`` maps the number of elements of each tuple in ``dims`` to the array's size, at
    compile time. The array lives in the calling kernel's frame (allocated once, in its entry block):
    it must not be returned or stored anywhere."""

    @intrinsic
    def stack_block_nb(typingctx, dims):
        if not isinstance(dims, types.BaseTuple) or not all(isinstance(d, types.BaseTuple) for d in dims):
            return None
        n = int(size_of(*(len(d) for d in dims)))
        arrty = types.Array(types.float64, 1, "C")

        def codegen(context, builder, sig, args):
            intp = context.get_value_type(types.intp)
            ptr = cgutils.alloca_once(builder, context.get_value_type(types.float64), size=n)
            if POISON_STACK:  # (all bits set: a NaN in every element)
                cgutils.memset(builder, ptr, intp(8 * n), 0xFF)
            ary = context.make_array(arrty)(context, builder)
            context.populate_array(ary, data=ptr, shape=[intp(n)], strides=[intp(8)], itemsize=intp(8), meminfo=None)
            return ary._getvalue()

        return arrty(dims), codegen

    return stack_block_nb


@intrinsic
def lane_index_nb(typingctx, r, j, block):
    """r x ``block`` + j as an unsigned integer: the index of lane j of row r of a stack block of
    ``block`` lanes. Unsigned, so that numba adds no negative-index wraparound (which would hide from
    LLVM that the rows are distinct, and keep it from vectorising); an intrinsic, because a numba
    function inlined at each of the kernels' ~200 block accesses made compiling take minutes."""
    if not all(isinstance(x, types.Integer) for x in (r, j, block)):
        return None

    def codegen(context, builder, sig, args):
        r64, j64, b64 = (context.cast(builder, a, t, types.int64) for a, t in zip(args, sig.args))
        return builder.add(builder.mul(r64, b64), j64)

    return types.uint64(r, j, block), codegen


@intrinsic
def select_nb(typingctx, cond, a, b):
    """``a if cond else b`` as one LLVM ``select``: both values are computed, nothing branches. The
    kernels' per-env choices use it instead of conditional expressions, each of which adds three
    blocks to numba's IR: with hundreds of them, compiling a kernel took a minute (numba's inlining
    and SSA passes grow with the number of blocks times the number of variables)."""
    if not isinstance(cond, types.Boolean):
        return None
    ty = typingctx.unify_pairs(a, b)
    if ty is None or not isinstance(ty, (types.Number, types.Boolean)):
        return None

    def codegen(context, builder, sig, args):
        c, x, y = args
        x = context.cast(builder, x, sig.args[1], sig.return_type)
        y = context.cast(builder, y, sig.args[2], sig.return_type)
        return builder.select(c, x, y)

    return ty(cond, a, b), codegen
