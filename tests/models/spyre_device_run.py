"""The real model on the emulated spyre device, float16, every RMSNorm patched.

Run as a script in a process of its own (enabling the emulated device renames
PyTorch's PrivateUse1 backend for the whole process); test_hf_spyre_device.py
runs it and checks the JSON it writes:

* ``tokens``: the greedy answer to each of real_model.QUESTIONS;
* ``logprobs``: the log-probabilities of the prompt's last position (the first answer token);
* ``op_calls_per_forward``: ``spyre::rms_norm`` calls in that forward (torch.profiler);
* ``norm_calls``: forward calls of the patched norm modules; ``norm_ops``: the ops that
  ran on spyre tensors inside them; ``norm_h2d``/``norm_d2h``: host<->device copies
  inside them; ``norm_fallbacks``: ops inside them that torch-spyre would not run on the
  device (each a hidden round trip on a Spyre card);
* ``devices``: the devices of the model's parameters.
"""

import argparse
import contextlib
import json
from collections import Counter

import torch

import real_model
import spyre_ops.emulator as emulator
import spyre_ops.transformers as spyre_tf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    emulator.enable()
    model, tokenizer = real_model.load(dtype=torch.float16, device="spyre")
    report = spyre_tf.patch(model)

    inside = {"calls": 0, "h2d": 0, "d2h": 0, "ops": Counter(), "fallbacks": Counter()}
    open_blocks: dict[int, tuple[contextlib.ExitStack, emulator.Transfers]] = {}

    def before(module, args):
        stack = contextlib.ExitStack()
        open_blocks[id(module)] = (stack, stack.enter_context(emulator.transfers()))

    def after(module, args, output):
        stack, t = open_blocks.pop(id(module))
        stack.close()
        inside["calls"] += 1
        inside["h2d"] += t.host_to_device
        inside["d2h"] += t.device_to_host
        inside["ops"].update(t.ops)
        inside["fallbacks"].update(t.fallbacks)

    for name, module in spyre_tf.patched_modules(model):
        module.register_forward_pre_hook(before)
        module.register_forward_hook(after)

    result = {"patched": len(report), "tokens": [], "logprobs": [], "op_calls_per_forward": []}
    for question in real_model.QUESTIONS:
        ids = real_model.chat_ids(tokenizer, question).to("spyre")
        with torch.no_grad(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            logits = model(ids, use_cache=False).logits[0, -1].cpu().float()
        result["op_calls_per_forward"].append(sum(e.name == "spyre::rms_norm" for e in prof.events()))
        result["logprobs"].append(logits.log_softmax(-1).tolist())
        result["tokens"].append(real_model.greedy(model, ids))
    result.update(
        norm_calls=inside["calls"], norm_h2d=inside["h2d"], norm_d2h=inside["d2h"],
        norm_ops=dict(inside["ops"]), norm_fallbacks=dict(inside["fallbacks"]),
        devices=sorted({str(p.device) for p in model.parameters()}),
        dtypes=sorted({str(p.dtype) for p in model.parameters()}),
        answers=[tokenizer.decode(t, skip_special_tokens=True) for t in result["tokens"]],
    )
    with open(args.out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
