"""The op schemas are the public contract: pinned to the letter."""

import torch
from expecttest import TestCase

import spyre_ops  # noqa: F401


class TestSchemas(TestCase):
    def test_rms_norm(self) -> None:
        self.assertExpectedInline(
            str(torch.ops.spyre.rms_norm.default._schema),
            """spyre::rms_norm(Tensor x, SymInt[] normalized_shape, Tensor? weight=None, float eps=1.0000000000000001e-05) -> Tensor""",
        )

    def test_fused_add_rms_norm(self) -> None:
        self.assertExpectedInline(
            str(torch.ops.spyre.fused_add_rms_norm.default._schema),
            """spyre::fused_add_rms_norm(Tensor x, Tensor residual, SymInt[] normalized_shape, Tensor? weight=None, float eps=1.0000000000000001e-05) -> (Tensor, Tensor)""",
        )

    def test_fused_add_rms_norm_inplace(self) -> None:
        self.assertExpectedInline(
            str(torch.ops.spyre.fused_add_rms_norm_.default._schema),
            """spyre::fused_add_rms_norm_(Tensor(a!) x, Tensor(b!) residual, SymInt[] normalized_shape, Tensor? weight=None, float eps=1.0000000000000001e-05) -> ()""",
        )

    def test_rms_norm_backward(self) -> None:
        self.assertExpectedInline(
            str(torch.ops.spyre.rms_norm_backward.default._schema),
            """spyre::rms_norm_backward(Tensor grad_out, Tensor x, SymInt[] normalized_shape, Tensor? weight, float eps) -> (Tensor, Tensor)""",
        )

    def test_rms_norm_matches_torch_spyre_schema(self) -> None:
        # torch-spyre defines spyre::rms_norm with this schema; ours must be identical
        # for adoption to work (FACTS.md).
        theirs = torch._C.parse_schema(
            "spyre::rms_norm(Tensor x, SymInt[] normalized_shape, Tensor? weight=None, "
            "float eps=1e-05) -> Tensor"
        )
        self.assertEqual(str(torch.ops.spyre.rms_norm.default._schema), str(theirs))
