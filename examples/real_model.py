"""Real trained models answering with spyre_ops' norms: SmolLM2-135M-Instruct (Llama
RMSNorm) and Gemma 3 270M (Gemma's (1 + weight) RMSNorm) through Hugging Face
transformers, each next to the unpatched model's answer: on CPU in float32 (and
bfloat16 for Gemma 3), and both in float16 on the emulated spyre device, which holds
float16 as Spyre does, in SEN169 (DLFloat16, largest finite ~8.57e9): Gemma 3's
residual stream (up to ~1e5) fits there, where IEEE float16 (65504) overflows from
about layer 9. The emulated device computes every op on the host, so its answers
take minutes, not seconds: the times say nothing about Spyre's speed.

Run with `make demo`, which first fetches the models (examples/real_model_fetch.py
writes them to .cache/models), or `python examples/real_model.py [models folder]`.
"""

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging

import spyre_ops.emulator as emulator
import spyre_ops.transformers as spyre_tf

logging.disable_progress_bar()
logging.set_verbosity_error()


@dataclass(frozen=True)
class Demo:
    folder: str
    prompt: str
    chat: bool  #: an instruct model asked through its chat template; else BOS + plain text
    also: tuple[tuple[str, torch.dtype], ...]  #: further (device, dtype) runs, patched


DEMOS = (
    Demo("smollm2-135m-instruct", "What is the capital of France?", chat=True, also=(("spyre", torch.float16),)),
    Demo("gemma-3-270m", "The capital of France is", chat=False,
         also=(("cpu", torch.bfloat16), ("spyre", torch.float16))),
)
models = Path(sys.argv[1] if len(sys.argv) > 1 else ".cache/models")
new_tokens = 12


def prompt_ids(demo: Demo, tokenizer) -> torch.Tensor:
    if demo.chat:
        return tokenizer.apply_chat_template([{"role": "user", "content": demo.prompt}], add_generation_prompt=True,
                                             return_tensors="pt", return_dict=True)["input_ids"]
    # a base model: its BOS token first (the GGUF tokenizer does not add it)
    ids = tokenizer(demo.prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    return torch.cat([torch.tensor([[tokenizer.bos_token_id]]), ids], dim=1)


def answer(model, tokenizer, ids: torch.Tensor, device: str = "cpu") -> tuple[list[int], str, float]:
    x = ids.to(device)
    start = time.perf_counter()
    with torch.no_grad():
        out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=new_tokens,
                             do_sample=False)
    tokens = out[0, x.shape[1]:].cpu().tolist()
    return tokens, tokenizer.decode(tokens, skip_special_tokens=True), time.perf_counter() - start


def show(label: str, text: str, seconds: float, note: str = "") -> None:
    print(f"  {label + ':':<42} {text!r} ({seconds:.1f} s){note}")


for demo in DEMOS:
    folder = models / demo.folder
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = prompt_ids(demo, tokenizer)
    print(f"{demo.folder}, prompt: {demo.prompt!r} (greedy, up to {new_tokens} tokens)")
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        ref_logits = model(ids).logits
    ref_tokens, text, seconds = answer(model, tokenizer, ids)
    show("cpu float32, transformers' norms", text, seconds)
    with spyre_tf.patch(model) as report:
        print(f"  {report}")
        with torch.no_grad():
            diff = (model(ids).logits - ref_logits).abs().max().item()
        tokens, text, seconds = answer(model, tokenizer, ids)
        show("cpu float32, spyre_ops norms", text, seconds,
             f"; same tokens: {tokens == ref_tokens}; max |logit diff| on the prompt: {diff:.1e}")
    del model

    for device, dtype in demo.also:
        if device == "spyre":
            emulator.enable()
        where = f"{'emulated spyre' if device == 'spyre' else device} {str(dtype).removeprefix('torch.')}"
        other = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(device).eval()
        if device == "cpu":  # transformers' own norms run there too
            unpatched, text, seconds = answer(other, tokenizer, ids)
            show(f"{where}, transformers' norms", text, seconds)
        spyre_tf.patch(other)
        tokens, text, seconds = answer(other, tokenizer, ids, device)
        same = sum(a == b for a, b in zip(tokens, ref_tokens))
        note = f"; {same} of {len(ref_tokens)} tokens as on cpu float32"
        if device == "cpu":
            note += f", same tokens as unpatched {str(dtype).removeprefix('torch.')}: {tokens == unpatched}"
        show(f"{where}, spyre_ops norms", text, seconds, note)
        del other
