"""The real model through vLLM as users run it: the V1 engine with its engine-core
process (VLLM_ENABLE_V1_MULTIPROCESSING=1), optionally tensor parallel, with the
spyre IR provider chosen by ``kernel_config`` and registered in every process by
spyre_ops' ``vllm.general_plugins`` entry point alone (this script never imports
spyre_ops before the engine is up).

One engine (``enforce_eager``, so IR ops dispatch at each call) serves two runs
of the same chat prompts: ``spyre`` (priority ``spyre,native``), then ``native``
(every worker switched with ``collective_rpc``). Each run is recorded with vLLM's
own torch profiler (``profiler_config``), which writes one trace per worker
process; the op counts per worker process come from those traces.

test_vllm_real_model.py runs this script in a subprocess and checks the JSON it writes.
"""

import argparse
import glob
import json
import os
import sys
from collections import Counter

os.environ["VLLM_TARGET_DEVICE"] = "cpu"
os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1"  # vLLM's default, made explicit
os.environ["VLLM_ALLOW_INSECURE_SERIALIZATION"] = "1"  # collective_rpc with a function
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

import real_model  # noqa: E402

# The seeded random-weight Llama of the vLLM engine tests (importing it sets only
# defaults of the environment variables already set above).
sys.path.insert(0, str(real_model.REPO / "tests" / "vllm_integration"))
from vllm_engine_run import seeded_llama  # noqa: E402

PRIORITY = "spyre,native"
COUNTED = ("spyre::rms_norm", "spyre::fused_add_rms_norm_", "spyre_ops::gemma_rms_norm",
           "spyre_ops::gemma_fused_add_rms_norm", "vllm_ir::rms_norm", "vllm_ir::fused_add_rms_norm")


def worker_state(worker) -> dict:
    """Runs in each worker process: who registered the provider, and what is selected."""
    import os
    import sys

    from vllm import ir

    loaded_by_vllm = "spyre_ops.vllm" in sys.modules  # before this function imports it
    import spyre_ops.vllm as spyre_vllm

    from collections import Counter

    from spyre_ops import vllm_layers

    library_classes = set(vllm_layers.registered_layers().values())
    layers = Counter(type(m).__name__ for m in worker.get_model().modules() if type(m) in library_classes)
    return {
        "pid": os.getpid(),
        "loaded_by_vllm": loaded_by_vllm,
        "registered": spyre_vllm.is_registered(),
        "library_layers": dict(layers),  # the model's modules built from spyre_ops.vllm_layers' classes
        "priority": {
            "rms_norm": ir.ops.rms_norm.get_priority(),
            "fused_add_rms_norm": ir.ops.fused_add_rms_norm.get_priority(),
        },
    }


def worker_state_before_import(worker) -> dict:
    """Runs in each worker process before anything of this script imported spyre_ops there."""
    import os
    import sys

    return {"pid": os.getpid(), "spyre_ops_vllm_loaded": "spyre_ops.vllm" in sys.modules}


def select_native(worker) -> None:
    from vllm import ir

    ir.ops.rms_norm.set_default(["native"])
    ir.ops.fused_add_rms_norm.set_default(["native"])


def trace_counts(folder: str) -> list[dict]:
    """Per trace file (one per worker process): its process ids and op counts."""
    found = []
    for path in sorted(glob.glob(os.path.join(folder, "*.pt.trace.json"))):
        with open(path) as f:
            events = json.load(f)["traceEvents"]
        counts = Counter(e["name"] for e in events if e.get("ph") == "X" and e.get("name") in COUNTED)
        pids = sorted({e["pid"] for e in events if e.get("ph") == "X" and e.get("name") in COUNTED})
        found.append({"file": os.path.basename(path), "pids": pids,
                      "counts": {name: counts.get(name, 0) for name in COUNTED}})
    return found


def write_tp_checkpoint(folder: str) -> None:
    """A seeded random-weight Llama with the real model's tokenizer and vocabulary but
    4 attention heads (2 KV heads), so that it splits over 2 tensor-parallel ranks
    (the real model's 9 heads do not)."""
    import shutil

    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(real_model.MODEL_DIR)
    config.update(dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=64))
    seeded_llama(config).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(real_model.MODEL_DIR / name, folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--tp", type=int, default=1)
    parser.add_argument("--profile-dir", required=True)
    parser.add_argument("--model", default="smollm2", choices=sorted(real_model.MODELS))
    parser.add_argument("--tp-model", action="store_true",
                        help="a random-weight Llama that tensor parallelism can split (see write_tp_checkpoint)")
    args = parser.parse_args()
    spec = real_model.MODELS[args.model]
    model = str(spec.dir)
    if args.tp_model:
        model = os.path.join(os.path.dirname(os.path.abspath(args.out)), "tp-model")
        write_tp_checkpoint(model)

    from vllm import LLM, SamplingParams

    llm = LLM(
        model=model,
        dtype=args.dtype,
        tensor_parallel_size=args.tp,
        max_model_len=512,
        enforce_eager=True,
        seed=0,
        kernel_config={"ir_op_priority": {"rms_norm": PRIORITY, "fused_add_rms_norm": PRIORITY}},
        profiler_config={
            "profiler": "torch",
            "torch_profiler_dir": os.path.abspath(args.profile_dir),
            "torch_profiler_with_stack": False,
            "torch_profiler_use_gzip": False,
            "ignore_frontend": True,
        },
    )
    result = {"frontend_pid": os.getpid(), "tp": args.tp, "dtype": args.dtype, "tp_model": args.tp_model,
              "model": args.model, "before_import": llm.collective_rpc(worker_state_before_import), "runs": {}}
    params = SamplingParams(temperature=0.0, max_tokens=spec.new_tokens, logprobs=0, prompt_logprobs=0)
    if spec.chat:
        messages = [[{"role": "user", "content": q}] for q in spec.prompts]
        answer = lambda: llm.chat(messages, params, use_tqdm=False)  # noqa: E731
    else:  # token ids as the model needs them (a base model: BOS, then the text)
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model)
        prompts = [{"prompt_token_ids": spec.prompt_ids(tokenizer, p)[0].tolist()} for p in spec.prompts]
        answer = lambda: llm.generate(prompts, params, use_tqdm=False)  # noqa: E731
    for name in ("spyre", "native"):
        if name == "native":
            llm.collective_rpc(select_native)
        workers = llm.collective_rpc(worker_state)
        llm.start_profile(profile_prefix=name)  # traces "<name>_rank<r>.*.pt.trace.json"
        outputs = answer()
        llm.stop_profile()
        result["runs"][name] = {
            "workers": workers,
            "outputs": [
                {
                    "text": o.outputs[0].text,
                    "tokens": list(o.outputs[0].token_ids),
                    "logprobs": [lp[t].logprob for t, lp in zip(o.outputs[0].token_ids, o.outputs[0].logprobs)],
                    "prompt_logprobs": [None if lp is None else lp[t].logprob
                                        for t, lp in zip(o.prompt_token_ids, o.prompt_logprobs)],
                }
                for o in outputs
            ],
        }
    result["traces"] = trace_counts(args.profile_dir)
    with open(args.out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    sys.exit(main())
