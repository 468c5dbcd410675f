"""One real vLLM engine on CPU with a tiny seeded Llama, with IR priority
``spyre,native`` (from ``kernel_config``).

``--mode eager`` (``enforce_eager``): IR ops dispatch at each call, so the same
engine is run twice, with ``spyre,native`` and then ``native`` only.
``--mode compiled``: vLLM's torch.compile as its CPU platform sets it up
(Dynamo trace-once with the IR torch-op wrapping off, so Dynamo traces the
selected provider's body, the library op, straight into the graph; the IR
lowering pass itself is exercised by test_vllm_ir_compile.py): one run, as
priorities are fixed at compile time.

Run as a script (the engine may start processes, hence the ``__main__`` guard);
tests/vllm_integration/test_vllm_engine.py runs it in a subprocess and checks
the JSON it writes:

* ``registered_by_entry_point``: the spyre providers existed although this
  script never called ``spyre_ops.vllm.register()`` (vLLM's plugin loader did);
* per run, how many times each op ran (a ``torch.profiler`` trace of the
  in-process engine: ``VLLM_ENABLE_V1_MULTIPROCESSING=0``), the providers vLLM
  selected, the generated tokens and the prompt tokens' log-probabilities.

The checkpoint is written with transformers: random weights (seeded) that are
large enough for the logits to depend on every layer, so the two runs can be
compared position by position.
"""

import argparse
import json
import os
import sys
import tempfile
from collections import Counter

os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

NUM_LAYERS = 2
HIDDEN = 256
VOCAB = 1024
PRIORITY = "spyre,native"
COUNTED = (
    "spyre::rms_norm",
    "spyre::fused_add_rms_norm_",
    "spyre::fused_add_rms_norm",
    "vllm_ir::rms_norm",
    "vllm_ir::fused_add_rms_norm",
)


def write_checkpoint(folder: str) -> None:
    """A seeded random-weight Llama saved as a real checkpoint (no download)."""
    import torch
    from transformers import LlamaConfig

    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=512,
        num_hidden_layers=NUM_LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
    )
    seeded_llama(config).to(torch.bfloat16).save_pretrained(folder)


def seeded_llama(config):
    """A LlamaForCausalLM of ``config`` with seeded random weights (norm weights near 1)."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))  # norm weights that matter
            else:
                p.normal_(0.0, 0.08)
    return model


#: Forward calls of the model's RMSNorm layers, by residual (None or not).
layer_calls: Counter = Counter()


def count_rms_norm_layers(model) -> int:
    """Adds a forward hook counting every call of every vLLM RMSNorm layer."""
    from vllm.model_executor.layers.layernorm import RMSNorm

    def hook(module, args, kwargs):
        residual = args[1] if len(args) > 1 else kwargs.get("residual")
        layer_calls["fused" if residual is not None else "plain"] += 1

    layers = [m for m in model.modules() if isinstance(m, RMSNorm)]
    for m in layers:
        m.register_forward_pre_hook(hook, with_kwargs=True)
    return len(layers)


def profiled_generate(llm, prompts, params):
    """Generates under a CPU profiler; returns (outputs, op-call counts, layer calls)."""
    import torch

    layer_calls.clear()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        outputs = llm.generate(prompts, params, use_tqdm=False)
    counts = Counter(e.name for e in prof.events() if e.name in COUNTED)
    return outputs, {name: counts.get(name, 0) for name in COUNTED}, dict(layer_calls)


def summarize(outputs):
    runs = []
    for out in outputs:
        prompt_logprobs = [
            None if pos is None else pos[tok].logprob
            for tok, pos in zip(out.prompt_token_ids, out.prompt_logprobs)
        ]
        runs.append(
            {
                "tokens": list(out.outputs[0].token_ids),
                "prompt_logprobs": prompt_logprobs,
            }
        )
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="where to write the JSON result")
    parser.add_argument("--mode", choices=["eager", "compiled"], default="eager")
    args = parser.parse_args()

    from vllm import LLM, SamplingParams
    from vllm import ir

    with tempfile.TemporaryDirectory() as folder:
        write_checkpoint(folder)
        llm = LLM(
            model=folder,
            skip_tokenizer_init=True,
            dtype="bfloat16",
            max_model_len=256,
            enforce_eager=args.mode == "eager",
            seed=0,
            kernel_config={
                "ir_op_priority": {"rms_norm": PRIORITY, "fused_add_rms_norm": PRIORITY}
            },
        )
        # in-process engine (no multiprocessing): the hooks count into this process
        (num_rms_norm_layers,) = llm.apply_model(count_rms_norm_layers)

        loaded_by_vllm = "spyre_ops.vllm" in sys.modules  # this script never imported it
        import spyre_ops.vllm as spyre_vllm  # only to ask (importing registers nothing)

        registered_by_entry_point = loaded_by_vllm and spyre_vllm.is_registered()
        prompts = [
            {"prompt_token_ids": [(7 * i + 31 * p) % (VOCAB - 3) + 3 for i in range(40 + 5 * p)]}
            for p in range(3)
        ]
        params = SamplingParams(
            temperature=0.0, max_tokens=8, prompt_logprobs=0, detokenize=False, ignore_eos=True
        )

        result = {"registered_by_entry_point": registered_by_entry_point, "runs": {}}
        runs = [("spyre", None)]
        if args.mode == "eager":
            runs.append(("native", ["native"]))
        for name, priority in runs:
            if priority is not None:
                ir.ops.rms_norm.set_default(priority)
                ir.ops.fused_add_rms_norm.set_default(priority)
            selected = {
                "rms_norm": ir.ops.rms_norm.get_priority(),
                "fused_add_rms_norm": ir.ops.fused_add_rms_norm.get_priority(),
            }
            outputs, counts, calls = profiled_generate(llm, prompts, params)
            result["runs"][name] = {
                "priority": selected,
                "counts": counts,
                "layer_calls": calls,
                "outputs": summarize(outputs),
            }
        result["mode"] = args.mode
        result["num_layers"] = NUM_LAYERS
        result["num_rms_norm_layers"] = num_rms_norm_layers

    with open(args.out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
