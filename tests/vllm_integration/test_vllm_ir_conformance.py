"""The spyre provider checked the way vLLM checks its own IR providers.

For every (tokens, hidden, dtype) of the grid, inputs come from
``op.generate_inputs`` and the spyre provider (reached through the IR op under
``set_priority(["spyre", "native"])``) must match vLLM's ``native`` provider
within ``op.get_tolerance(dtype)``, and (up to 512 tokens: the float64
reference of the largest shapes costs seconds each and adds nothing the
library's own tests don't check) the float64 reference within
tests/reference.py's tolerance.
"""

import itertools

import pytest
import torch
from reference import assert_close_to_ref, fused_add_rms_norm_ref, rms_norm_ref

import spyre_ops.vllm as spyre_vllm

TOKENS = [1, 8, 17, 32, 512, 2048]
HIDDEN = [2048, 4096, 5120, 7168, 8192]
DTYPES = [torch.float16, torch.bfloat16, torch.float32]
GRID = list(itertools.product(TOKENS, HIDDEN, DTYPES))
PRIORITY = ["spyre", "native"]
REF_MAX_TOKENS = 512
EPS = 1e-5


def _id(case):
    tokens, hidden, dtype = case
    return f"{tokens}x{hidden}-{str(dtype).removeprefix('torch.')}"


@pytest.mark.parametrize("case", GRID, ids=[_id(c) for c in GRID])
def test_rms_norm_matches_native(ir, case):
    tokens, hidden, dtype = case
    op = ir.ops.rms_norm
    torch.manual_seed(tokens * 7919 + hidden)
    x, weight, epsilon = op.generate_inputs(
        num_tokens=tokens, hidden_size=hidden, dtype=dtype, epsilon=EPS
    )
    with op.set_priority(PRIORITY):
        assert op.dispatch(x, weight, epsilon).provider == "spyre"
        out = op(x, weight, epsilon)
    native = op.impls["native"].impl_fn(x, weight, epsilon)
    assert out.dtype == dtype and out.shape == x.shape
    torch.testing.assert_close(out, native, **op.get_tolerance(dtype))
    if tokens <= REF_MAX_TOKENS:
        assert_close_to_ref(out, rms_norm_ref(x, [hidden], weight, epsilon))


@pytest.mark.parametrize("case", GRID, ids=[_id(c) for c in GRID])
def test_fused_add_rms_norm_matches_native(ir, case):
    tokens, hidden, dtype = case
    op = ir.ops.fused_add_rms_norm
    torch.manual_seed(tokens * 7919 + hidden + 1)
    x, x_residual, weight, epsilon = op.generate_inputs(
        num_tokens=tokens, hidden_size=hidden, dtype=dtype, epsilon=EPS
    )
    with op.set_priority(PRIORITY):
        assert op.dispatch(x, x_residual, weight, epsilon).provider == "spyre"
        out, residual = op(x, x_residual, weight, epsilon)
    native_out, native_residual = op.impls["native"].impl_fn(x, x_residual, weight, epsilon)
    tol = op.get_tolerance(dtype)
    torch.testing.assert_close(residual, native_residual, **tol)
    torch.testing.assert_close(out, native_out, **tol)
    if tokens <= REF_MAX_TOKENS:
        ref_out, ref_residual = fused_add_rms_norm_ref(x, x_residual, [hidden], weight, epsilon)
        assert torch.equal(residual, ref_residual)  # x + residual, rounded once
        assert_close_to_ref(out, ref_out)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_weight_none(ir, dtype):
    op = ir.ops.rms_norm
    x, _, epsilon = op.generate_inputs(num_tokens=17, hidden_size=2048, dtype=dtype)
    with op.set_priority(PRIORITY):
        assert op.dispatch(x, None, epsilon).provider == "spyre"
        out = op(x, None, epsilon)
    torch.testing.assert_close(out, op.impls["native"].impl_fn(x, None, epsilon),
                               **op.get_tolerance(dtype))

    fop = ir.ops.fused_add_rms_norm
    x, r, _, epsilon = fop.generate_inputs(num_tokens=17, hidden_size=2048, dtype=dtype)
    with fop.set_priority(PRIORITY):
        assert fop.dispatch(x, r, None, epsilon).provider == "spyre"
        out, res = fop(x, r, None, epsilon)
    nout, nres = fop.impls["native"].impl_fn(x, r, None, epsilon)
    torch.testing.assert_close(res, nres, **fop.get_tolerance(dtype))
    torch.testing.assert_close(out, nout, **fop.get_tolerance(dtype))


def test_variance_size_is_served_by_native(ir):
    op = ir.ops.rms_norm
    x, weight, epsilon = op.generate_inputs(num_tokens=8, hidden_size=2048, dtype=torch.float32)
    assert not spyre_vllm.rms_norm_supports_args(x, weight, epsilon, 1024)
    with op.set_priority(PRIORITY):
        assert op.dispatch(x, weight, epsilon, 1024).provider == "native"
        out = op(x, weight, epsilon, 1024)
    # native normalizes by the first 1024 columns only: not what spyre would compute
    expected = op.impls["native"].impl_fn(x, weight, epsilon, 1024)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    assert not torch.allclose(out, torch.ops.spyre.rms_norm(x, [2048], weight, epsilon))

    fop = ir.ops.fused_add_rms_norm
    x, r, weight, epsilon = fop.generate_inputs(num_tokens=8, hidden_size=2048, dtype=torch.float32)
    assert not spyre_vllm.fused_add_rms_norm_supports_args(x, r, weight, epsilon, 1024)
    with fop.set_priority(PRIORITY):
        assert fop.dispatch(x, r, weight, epsilon, 1024).provider == "native"


def test_supports_args_refuses_what_the_library_cannot_serve(ir):
    x = torch.randn(4, 64)
    w = torch.randn(64)
    ok = spyre_vllm.rms_norm_supports_args
    assert ok(x, w, 1e-6)
    assert ok(x.half(), w.half(), 1e-6)
    assert ok(x.bfloat16(), w, 1e-6)  # float32 weight with 16-bit x: same single rounding
    assert not ok(x.to(torch.int32), None, 1e-6)  # not a float tensor
    assert not ok(x.to("meta"), None, 1e-6)  # no kernel for this device
    assert not ok(x, w.half(), 1e-6)  # native would round x to fp16 first
    assert not ok(x, torch.randn(32), 1e-6)  # weight of the wrong length
    assert not ok(torch.empty(4, 64, dtype=torch.float16, device="meta"), None, 1e-6)
    fok = spyre_vllm.fused_add_rms_norm_supports_args
    assert fok(x, x.clone(), w, 1e-6)
    assert not fok(x, x.half(), w, 1e-6)
    assert not fok(x, x[:2].clone(), w, 1e-6)


def test_has_kernel():
    for op in ("spyre::rms_norm", "spyre::fused_add_rms_norm_"):
        assert spyre_vllm.has_kernel(op, "cpu")
        assert not spyre_vllm.has_kernel(op, "meta")  # not a device the library serves
        assert not spyre_vllm.has_kernel(op, "cuda")
    assert not spyre_vllm.has_kernel("spyre_ops_vllm_test::no_such_op", "cpu")  # no operator: no kernel


def test_has_kernel_sees_a_spyre_kernel_registered_later():
    lib = torch.library.Library("spyre_ops_vllm_test", "FRAGMENT")
    lib.define("probe(Tensor x) -> Tensor")
    lib.impl("probe", lambda x: x.clone(), "CPU")
    op = "spyre_ops_vllm_test::probe"
    assert spyre_vllm.has_kernel(op, "cpu")
    assert not spyre_vllm.has_kernel(op, "spyre")  # no PrivateUse1 kernel yet
    lib.impl("probe", lambda x: x.clone(), "PrivateUse1")
    assert spyre_vllm.has_kernel(op, "spyre")


def test_dispatch_without_spyre_in_priority_is_native(ir):
    op = ir.ops.rms_norm
    x, weight, epsilon = op.generate_inputs(num_tokens=8, hidden_size=2048, dtype=torch.float16)
    with op.set_priority(["native"]):
        assert op.dispatch(x, weight, epsilon).provider == "native"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_opcheck_vllm_ir_rms_norm(ir, dtype):
    op = ir.ops.rms_norm
    x, weight, epsilon = op.generate_inputs(num_tokens=17, hidden_size=2048, dtype=dtype)
    with op.set_priority(PRIORITY):
        torch.library.opcheck(torch.ops.vllm_ir.rms_norm, (x, weight, epsilon))
        torch.library.opcheck(torch.ops.vllm_ir.rms_norm, (x, None, epsilon))


def test_opcheck_vllm_ir_fused_add_rms_norm(ir):
    op = ir.ops.fused_add_rms_norm
    x, r, weight, epsilon = op.generate_inputs(num_tokens=17, hidden_size=2048,
                                               dtype=torch.bfloat16)
    with op.set_priority(PRIORITY):
        torch.library.opcheck(torch.ops.vllm_ir.fused_add_rms_norm.default,
                              (x, r, weight, epsilon))


def test_fused_default_overload_leaves_inputs_and_maybe_inplace_mutates(ir):
    op = ir.ops.fused_add_rms_norm
    x, r, weight, epsilon = op.generate_inputs(num_tokens=17, hidden_size=4096,
                                               dtype=torch.float16)
    x0, r0 = x.clone(), r.clone()
    with op.set_priority(PRIORITY):
        out, residual = op(x, r, weight, epsilon)
        assert torch.equal(x, x0) and torch.equal(r, r0)
        assert out.data_ptr() != x.data_ptr() and residual.data_ptr() != r.data_ptr()

        out2, residual2 = op.maybe_inplace(x, r, weight, epsilon)
    # the in-place provider wrote into the activations and returned them
    assert out2.data_ptr() == x.data_ptr() and residual2.data_ptr() == r.data_ptr()
    assert torch.equal(x, out) and torch.equal(r, residual)
    assert not torch.equal(x, x0)


def test_provider_body_is_one_library_op(ir):
    """The body calls the library op and nothing else: what lowering traces."""
    x, weight, epsilon = ir.ops.rms_norm.generate_inputs(num_tokens=4, hidden_size=64,
                                                         dtype=torch.float32)
    with torch.profiler.profile() as prof:
        spyre_vllm.spyre_rms_norm(x, weight, epsilon)
    top_level = [e.name for e in prof.events() if e.cpu_parent is None]
    assert top_level == ["spyre::rms_norm"], top_level


def test_strided_activations(ir):
    """Views such as a slice of a fused qkv projection: the spyre provider
    normalizes them, and the in-place one writes through the view."""
    op, fop = ir.ops.rms_norm, ir.ops.fused_add_rms_norm
    base = torch.randn(17, 3 * 1024, dtype=torch.bfloat16)
    x = base[:, 1024:2048]  # rows 3072 apart: not contiguous
    weight = torch.randn(1024, dtype=torch.bfloat16)
    tol = op.get_tolerance(torch.bfloat16)
    with op.set_priority(PRIORITY):
        assert op.dispatch(x, weight, EPS).provider == "spyre"
        out = op(x, weight, EPS)
    torch.testing.assert_close(out, op.impls["native"].impl_fn(x, weight, EPS), **tol)

    residual_base = torch.randn(17, 2048, dtype=torch.bfloat16)
    residual = residual_base[:, ::2]  # every other column
    expected_out, expected_residual = fop.impls["native"].impl_fn(x, residual, weight, EPS)
    untouched = base[:, :1024].clone(), base[:, 2048:].clone(), residual_base[:, 1::2].clone()
    with fop.set_priority(PRIORITY):
        out, new_residual = fop.maybe_inplace(x, residual, weight, EPS)
    assert out.data_ptr() == x.data_ptr() and new_residual.data_ptr() == residual.data_ptr()
    torch.testing.assert_close(base[:, 1024:2048], expected_out, **tol)
    torch.testing.assert_close(residual_base[:, ::2], expected_residual, **tol)
    # nothing outside the views was written
    assert torch.equal(base[:, :1024], untouched[0]) and torch.equal(base[:, 2048:], untouched[1])
    assert torch.equal(residual_base[:, 1::2], untouched[2])
