"""`codeassist export MODEL --format hf|gguf --out PATH`: our model for vLLM, transformers, llama.cpp, Ollama.

A thin shell over model/export.py: parse, export, print where it went and how to use it. Every
refusal (format, an existing --out without --force, a model that cannot be read) is one sentence
and exit status 2.
"""

from __future__ import annotations

import argparse

from codeassist.model.errors import UserError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a model name (default, a saved name), a model file, a Hugging Face folder, "
                                 "or hf:ORG/NAME (GPT-2, Llama, Qwen2 and StarCoder families)")
    # formats are checked by model.export, so a wrong one gets the same one-sentence error as the rest
    p.add_argument("--format", required=True, metavar="hf|gguf",
                   help="hf: a Hugging Face folder (transformers, vLLM); gguf: one file (llama.cpp, Ollama)")
    p.add_argument("--out", required=True, help="the folder (hf) or file (gguf) to write; it must not exist")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument("--gguf-type", metavar="f32|f16|q8_0",
                   help="GGUF weight type (default f32); q8_0 is llama.cpp's 8-bit blocks")


def run(args: argparse.Namespace) -> int:
    from codeassist.model.checkpoint import ModelFileError
    from codeassist.model.export import export_model, fim_template_of, ollama_modelfile
    from codeassist.model.tokenizer import TokenizerError

    try:
        out = export_model(args.model, args.format, args.out, force=args.force, gguf_type=args.gguf_type)
    except (ModelFileError, TokenizerError) as exc:
        raise UserError(str(exc)) from None
    print(f"wrote {out}")
    if args.format == "hf":
        print(f"  vLLM:         vllm serve {out}")
        print(f"  transformers: AutoModelForCausalLM.from_pretrained({str(out)!r})")
    else:
        print(f"  llama.cpp:    llama-server -m {out}")
        print("  Ollama:       save the Modelfile below, then: ollama create codeassist -f Modelfile")
        print()
        try:
            print(ollama_modelfile(out, fim_template_of(args.model)), end="")
        except (ModelFileError, TokenizerError):
            print(ollama_modelfile(out, None), end="")
    return 0
