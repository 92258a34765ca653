"""GGUF files as Hugging Face checkpoints: convert once, then load like any other model directory.

transformers reads GGUF (`from_pretrained(dir, gguf_file=name)`, with the `gguf` package) and
dequantizes the weights to float. What it leaves behind is not saveable as it stands: the GGUF
quantizer stays attached though the weights are plain tensors (`save_pretrained` refuses), and
`config.architectures` is None. `convert` clears both and writes a normal safetensors directory,
tokenizer and chat template included, whose reload gives the same logits.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from importlib.util import find_spec
from pathlib import Path

MARKER = "distill_gguf.json"  # beside the converted weights: which file, which digest


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def converted_dir(gguf_path: Path) -> Path:
    """Where `convert` writes by default: beside the file, named after it (`x.gguf` -> `x/`)."""
    return gguf_path.with_suffix("")


def is_converted(gguf_path: Path, out_dir: Path) -> bool:
    marker = out_dir / MARKER
    if not marker.exists():
        return False
    recorded = json.loads(marker.read_text())
    stat = gguf_path.stat()
    return recorded.get("size") == stat.st_size and recorded.get("mtime_ns") == stat.st_mtime_ns


def convert(gguf_path: str | Path, out_dir: str | Path | None = None, log=print) -> Path:
    """Write the GGUF model as a safetensors checkpoint (float32) with its tokenizer; skip if already done."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path).resolve()
    if not gguf_path.is_file():
        raise FileNotFoundError(f"{gguf_path}: no such GGUF file")
    out = Path(out_dir) if out_dir is not None else converted_dir(gguf_path)
    if is_converted(gguf_path, out):
        return out
    if find_spec("gguf") is None:  # transformers reads GGUF through it
        raise ImportError(f"converting {gguf_path.name} needs the `gguf` package: pip install gguf (or make setup)")
    log(f"converting {gguf_path.name} -> {out}")
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    # The weights are dequantized floats; the quantizer object only blocks saving.
    model.hf_quantizer = None
    model.config.quantization_config = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.architectures = [type(model).__name__]
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    stat = gguf_path.stat()
    marker = {"gguf": gguf_path.name, "sha256": file_digest(gguf_path), "size": stat.st_size}
    (tmp / MARKER).write_text(json.dumps({**marker, "mtime_ns": stat.st_mtime_ns}, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Convert a GGUF model file into a Hugging Face checkpoint directory")
    parser.add_argument("gguf", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="default: beside the file, named after it")
    args = parser.parse_args(argv)
    try:
        print(convert(args.gguf, args.out))
    except (FileNotFoundError, ImportError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main()
