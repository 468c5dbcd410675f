"""A Dynamo guard on the Spyre compute dtype, for graphs that bake it in.

A decomposition of a spyre op reads the compute dtype while Dynamo compiles a
frame, and the compiled graph computes in that dtype. Dynamo does not see that
read, so :func:`guarded_compute_dtype` adds a guard to the frame being compiled:
the frame's compiled code is used only while the compute dtype is the same,
and a changed compute dtype recompiles it.
"""

from __future__ import annotations

import torch


def guarded_compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Returns dtype (the current compute dtype), guarding the frame Dynamo is compiling on it.

    Outside a compile's tracing context (e.g. ``make_fx`` alone) there is nothing to guard.

    Raises:
        RuntimeError: inside a Dynamo compile, if the guard cannot be added (a
            torch whose guard internals differ): never a silently unguarded graph.
    """
    from torch._guards import TracingContext

    context = TracingContext.try_get()
    if context is None:
        return dtype
    try:
        from torch._dynamo.source import GlobalStateSource
        from torch._guards import Guard

        def create(builder, guard) -> None:
            import spyre_ops.spyre as policy

            code = [f"spyre_ops.spyre.compute_dtype() == {dtype}"]

            def check(_) -> bool:
                return policy.compute_dtype() == dtype

            builder.guard_manager.root.add_lambda_guard(check, code, guard.user_stack)

        context.guards_context.dynamo_guards.add(Guard(GlobalStateSource(), create))
    except Exception as error:  # noqa: BLE001  (any failure here must be loud)
        raise RuntimeError(
            "spyre_ops: could not add a Dynamo guard on the Spyre compute dtype to the graph being "
            "compiled; without it a later set_compute_dtype would be silently ignored by this graph"
        ) from error
    return dtype

