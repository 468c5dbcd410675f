"""The real model on the emulated spyre device, float16, every RMSNorm patched.

Run as a script in a process of its own (enabling the emulated device renames
PyTorch's PrivateUse1 backend for the whole process); test_hf_spyre_device.py
runs it and checks the JSON it writes.

Each question of real_model.QUESTIONS is one greedy ``generate``; its first forward
(the prompt) gives the first answer token's log-probabilities and is profiled, so no
extra forward is run (each one costs seconds on the emulated device, where every op
decodes the weights it reads). Recorded, per question:

* ``tokens``: the greedy answer;
* ``logprobs``: the log-probabilities of the first answer token (the logits of the
  prompt's last position, from generate's first step);
* ``forwards``: the model forwards generate ran;
* ``op_calls_per_forward``: ``spyre::rms_norm`` calls in the first forward (torch.profiler,
  recording that forward only);

and for the whole run:

* ``norm_calls``: forward calls of the patched norm modules; ``norm_ops``: the ops that
  ran on spyre tensors inside them; ``norm_h2d``/``norm_d2h``: host<->device copies
  inside them; ``norm_fallbacks``: ops inside them that torch-spyre would not run on the
  device (each a hidden round trip on a Spyre card);
* ``devices``/``dtypes``: those of the model's parameters.
"""

import argparse
import json

import torch

import real_model
import spyre_ops.emulator as emulator
import spyre_ops.transformers as spyre_tf


def run_question(model, tokenizer, question: str, result: dict) -> None:
    """One question's greedy answer, first-token logprobs and the spyre::rms_norm calls of its first forward."""
    profiler = torch.profiler
    ids = real_model.chat_ids(tokenizer, question).to("spyre")
    # the profiler records the first forward only: the hook ends its one active step
    with torch.no_grad(), profiler.profile(activities=[profiler.ProfilerActivity.CPU],
                                           schedule=profiler.schedule(wait=0, warmup=0, active=1, repeat=1)) as prof:
        hook = model.register_forward_hook(lambda module, args, output: prof.step())
        try:
            out = model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=real_model.NEW_TOKENS,
                do_sample=False, output_logits=True, return_dict_in_generate=True,
            )
        finally:
            hook.remove()
    result["op_calls_per_forward"].append(sum(e.name == "spyre::rms_norm" for e in prof.events()))
    result["logprobs"].append(out.logits[0][0].cpu().float().log_softmax(-1).tolist())
    result["forwards"].append(len(out.logits))
    result["tokens"].append(out.sequences[0, ids.shape[1]:].cpu().tolist())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    emulator.enable()
    model, tokenizer = real_model.load(dtype=torch.float16, device="spyre")
    report = spyre_tf.patch(model)

    result = {"patched": len(report), "tokens": [], "logprobs": [], "forwards": [], "op_calls_per_forward": []}
    with real_model.norm_transfers(model) as inside:
        for question in real_model.QUESTIONS:
            run_question(model, tokenizer, question, result)
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
