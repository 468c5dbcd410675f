"""The real models of the tests in this folder, as the float32 checkpoints `make models`
writes (examples/real_model_fetch.py), one :class:`RealModel` entry each:

- :data:`SMOLLM2`: SmolLM2-135M-Instruct (Llama, 30 layers, 61 RMSNorm modules), asked
  chat questions;
- :data:`GEMMA3`: Gemma 3 270M, base model (18 layers, 109 Gemma3RMSNorm modules: input,
  post-attention, pre/post-feed-forward, per-head q and k, final), given plain text
  after its BOS token (the GGUF tokenizer does not add it; without it the model
  answers garbage).

Shared by the tests and by the scripts they run in subprocesses (the emulated spyre
device, vLLM). The module-level ``MODEL_DIR``, ``QUESTIONS``, ``NEW_TOKENS``,
``NUM_NORMS``, :func:`load` and :func:`chat_ids` are SmolLM2's.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: Where `make models` writes the checkpoints; SPYRE_OPS_MODELS_DIR overrides it.
MODELS_DIR = Path(os.environ.get("SPYRE_OPS_MODELS_DIR", REPO / ".cache/models"))


@dataclass(frozen=True)
class RealModel:
    """One checkpoint and how the tests talk to it."""

    folder: str  #: under :data:`MODELS_DIR`
    norm_class: str  #: transformers' RMSNorm class in the model
    family: str  #: its spyre_ops.transformers family
    num_norms: int  #: RMSNorm modules in the model (= library op calls per forward)
    prompts: tuple[str, ...]  #: of different lengths, so compiled graphs see several token counts
    chat: bool  #: chat template (instruct model) or BOS + plain text (base model)
    answer: str  #: in the float32 model's greedy answer to ``prompts[0]``
    new_tokens: int  #: generated per prompt: enough to compare answers, few for 2 busy cores
    op: str  #: the library op each patched norm calls

    def op_packet(self):
        """:attr:`op` as a ``torch.ops`` packet."""
        import torch

        namespace, name = self.op.split("::")
        return getattr(getattr(torch.ops, namespace), name)

    @property
    def dir(self) -> Path:
        return MODELS_DIR / self.folder

    def prompt_ids(self, tokenizer, text: str):
        """The prompt's token ids (1 x n, int64) as the model expects them."""
        if self.chat:
            return chat_ids(tokenizer, text)
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
        import torch

        return torch.cat([torch.tensor([[tokenizer.bos_token_id]]), ids], dim=1)

    def load(self, dtype=None, device: str = "cpu"):
        """(model, tokenizer) from :attr:`dir`, in eval mode."""
        return _load(self.dir, dtype, device)


SMOLLM2 = RealModel(
    folder="smollm2-135m-instruct", norm_class="LlamaRMSNorm", family="llama", num_norms=30 * 2 + 1,
    prompts=("What is the capital of France?", "Name a primary color.", "What is 2 + 2?"),
    chat=True, answer="Paris", new_tokens=8, op="spyre::rms_norm",
)
GEMMA3 = RealModel(
    folder="gemma-3-270m", norm_class="Gemma3RMSNorm", family="gemma", num_norms=18 * 6 + 1,
    prompts=("The capital of France is", "def fibonacci(n):", "The largest planet in the solar system is"),
    chat=False, answer=" the capital of the country of France", new_tokens=8, op="spyre_ops::gemma_rms_norm",
)
#: By short name, as the tests parametrize over them.
MODELS = {"smollm2": SMOLLM2, "gemma3": GEMMA3}

MODEL_DIR = Path(os.environ.get("SPYRE_OPS_REAL_MODEL_DIR", SMOLLM2.dir))
QUESTIONS = SMOLLM2.prompts
NEW_TOKENS = SMOLLM2.new_tokens
NUM_NORMS = SMOLLM2.num_norms


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Runs the block on one intra-op thread. The model matmuls are small (a few tokens):
    on 2 cores shared with other processes, OpenMP's second thread makes each one wait
    about 10 ms; one thread runs a Gemma 3 forward about 10x faster there. Results are
    compared only between runs made the same way."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def norm_transfers(model) -> Iterator[dict]:
    """Counts, while the block runs, what happens inside the forward calls of ``model``'s patched
    norm modules on the emulated spyre device (which must be enabled): ``calls``, host<->device
    copies ``h2d``/``d2h``, the ``ops`` run on spyre tensors and the ``fallbacks`` among them
    (ops torch-spyre would not run on the device), as a dict filled in as calls end."""
    from collections import Counter

    import spyre_ops.emulator as emulator
    import spyre_ops.transformers as spyre_tf

    inside = {"calls": 0, "h2d": 0, "d2h": 0, "ops": Counter(), "fallbacks": Counter()}
    blocks: dict[int, tuple[contextlib.ExitStack, emulator.Transfers]] = {}

    def before(module, args):
        stack = contextlib.ExitStack()
        blocks[id(module)] = (stack, stack.enter_context(emulator.transfers()))

    def after(module, args, output):
        stack, t = blocks.pop(id(module))
        stack.close()
        inside["calls"] += 1
        inside["h2d"] += t.host_to_device
        inside["d2h"] += t.device_to_host
        inside["ops"].update(t.ops)
        inside["fallbacks"].update(t.fallbacks)

    hooks = []
    for _, module in spyre_tf.patched_modules(model):
        hooks += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
    try:
        yield inside
    finally:
        for hook in hooks:
            hook.remove()


def quiet_transformers() -> None:
    """No progress bars or advisory warnings from transformers in test output."""
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()


def _load(folder: Path, dtype, device: str):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_transformers()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype or torch.float32)
    return model.to(device).eval(), tokenizer


def load(dtype=None, device: str = "cpu"):
    """SmolLM2's (model, tokenizer) from :data:`MODEL_DIR`, in eval mode."""
    return _load(MODEL_DIR, dtype, device)


def chat_ids(tokenizer, question: str):
    """The prompt's token ids (1 x n, int64) with the model's chat template applied."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )["input_ids"]


def greedy(model, ids, new_tokens: int = NEW_TOKENS) -> list[int]:
    """Greedy continuation of ``ids`` (a 1 x n tensor on the model's device): its new token ids."""
    import torch

    with torch.no_grad():
        out = model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens, do_sample=False,
        )
    return out[0, ids.shape[1]:].cpu().tolist()
