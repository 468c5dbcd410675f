"""Each patched real model under torch.compile(fullgraph=True, dynamic=True): each
RMSNorm is one library-op node fed by the norm's own weight (no per-call weight
arithmetic in the graph), one graph serves three prompt lengths (no recompile), and
the compiled logits match the eager patched model's.
"""

import torch

import real_model
import spyre_ops.transformers as spyre_tf

#: compiled vs eager, both patched: the same ops, so only the matmul blocking of a
#: different token count changes the rounding (measured 6e-5); see test_hf_eager.
LOGIT_ATOL = 1e-3


def test_compiled_patched_model(real):
    model, prompts, spec = real.model, real.prompts, real.spec
    assert len({ids.shape[1] for ids in prompts}) == len(prompts) >= 3
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    with spyre_tf.patch(model), torch.no_grad(), real_model.one_thread():
        compiled = torch.compile(lambda ids: model(ids, use_cache=False).logits,
                                 backend=backend, fullgraph=True, dynamic=True)
        for ids in prompts:
            got = compiled(ids)
            assert (got - model(ids, use_cache=False).logits).abs().max().item() <= LOGIT_ATOL
    torch._dynamo.reset()

    assert len(graphs) == 1, f"{len(graphs)} graphs for {len(prompts)} prompt lengths"
    nodes = [n for n in graphs[0].graph.nodes if n.op == "call_function"]
    op = spec.op_packet()
    norm_nodes = [n for n in nodes if n.target in (op, op.default)]
    assert len(norm_nodes) == spec.num_norms
    # the norms are the library op, not transformers' decomposed formula
    assert torch.rsqrt not in [n.target for n in nodes]
    # each norm weight goes straight into its op, and into nothing else
    weights = [n for n in graphs[0].graph.nodes if n.op == "placeholder" and "norm_parameters_weight" in n.name]
    assert len(weights) == spec.num_norms
    elsewhere = {w.name: [u.name for u in w.users] for w in weights
                 if len(w.users) != 1 or next(iter(w.users)) not in norm_nodes}
    assert not elsewhere, f"{len(elsewhere)} norm weights used outside their op, e.g. {next(iter(elsewhere.items()))}"
