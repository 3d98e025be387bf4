"""The real Qwen2.5 tokenizer and chat template, built without any model-hub access.

llama-cpp-python's source distribution on PyPI ships llama.cpp's vocabulary-only GGUF of the
Qwen2 family (the byte-level BPE shared by Qwen1.5/2/2.5: 151,643 tokens and their merges),
its tokenizer test vectors, and Qwen2.5-7B-Instruct's chat template. `fetch()` extracts those
files once; `build_tokenizer()` turns them into a Hugging Face tokenizer that tokenizes
exactly like Qwen2.5's own (the test vectors prove it), with Qwen2.5's 22 added tokens at
their real ids (`<|im_end|>` = 151645, `<tool_call>` = 151657).

Real users never need this: they point agentflux at a real model, which ships its tokenizer.
"""

from __future__ import annotations

import logging
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

from agentflux.registry.home import agentflux_home

logger = logging.getLogger(__name__)

SDIST = "llama-cpp-python==0.3.36"
_MEMBERS = {
    "models/ggml-vocab-qwen2.gguf": "vocab.gguf",
    "models/ggml-vocab-qwen2.gguf.inp": "vectors.inp",
    "models/ggml-vocab-qwen2.gguf.out": "vectors.out",
    "models/templates/Qwen-Qwen2.5-7B-Instruct.jinja": "chat_template.jinja",
}
VOCAB_ENV = "AGENTFLUX_VOCAB_DIR"

# The pre-tokenizer regex of Qwen2 (as in transformers' Qwen2Tokenizer).
QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Qwen2.5's added tokens in id order from 151643, and whether each is special. <tool_call> and
# friends are not special: decoding with skip_special_tokens must keep them.
ADDED_TOKENS = [
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
]
FIRST_ADDED_ID = 151643


def vocab_dir() -> Path:
    raw = os.environ.get(VOCAB_ENV)
    return Path(raw).expanduser() if raw else agentflux_home() / "vocab" / "qwen2.5"


def fetch(dest: Path | None = None) -> Path:
    """Download llama-cpp-python's sdist from PyPI (77 MB, once) and keep the four files we need."""
    dest = dest or vocab_dir()
    if all((dest / name).exists() for name in _MEMBERS.values()):
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        logger.info("downloading %s from PyPI for the Qwen2.5 vocabulary", SDIST)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:", SDIST, "-d", tmp],
            check=True,
        )
        archive = next(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        with tarfile.open(archive) as sdist:
            for member in sdist.getmembers():
                for suffix, name in _MEMBERS.items():
                    if member.name.endswith("vendor/llama.cpp/" + suffix):
                        source = sdist.extractfile(member)
                        assert source is not None
                        partial = dest / (name + ".partial")
                        with partial.open("wb") as target:
                            shutil.copyfileobj(source, target)
                        partial.replace(dest / name)
    missing = [name for name in _MEMBERS.values() if not (dest / name).exists()]
    if missing:
        raise RuntimeError(f"{SDIST} no longer contains {', '.join(missing)}")
    return dest


# -- GGUF: just enough of the format to read a vocabulary ------------------------------------

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


def read_gguf_metadata(path: Path) -> dict[str, Any]:
    """The key-value metadata of a GGUF file (no tensors are read)."""
    with path.open("rb") as handle:
        if handle.read(4) != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file")
        version, _tensors, count = struct.unpack("<IQQ", handle.read(20))
        if version < 2:
            raise ValueError(f"GGUF version {version} is not supported")
        return {_read_string(handle): _read_value(handle, _read_u32(handle)) for _ in range(count)}


def _read_u32(handle: BinaryIO) -> int:
    return struct.unpack("<I", handle.read(4))[0]


def _read_string(handle: BinaryIO) -> str:
    (length,) = struct.unpack("<Q", handle.read(8))
    return handle.read(length).decode("utf-8", errors="surrogateescape")


def _read_value(handle: BinaryIO, kind: int) -> Any:
    if kind == _STRING:
        return _read_string(handle)
    if kind == _ARRAY:
        item_kind = _read_u32(handle)
        (count,) = struct.unpack("<Q", handle.read(8))
        return [_read_value(handle, item_kind) for _ in range(count)]
    fmt = _SCALARS[kind]
    return struct.unpack(fmt, handle.read(struct.calcsize(fmt)))[0]


# -- the tokenizer ---------------------------------------------------------------------------


def build_tokenizer(source: Path | None = None) -> Any:
    """A `PreTrainedTokenizerFast` identical in behaviour to Qwen2.5's, with its chat template."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast

    source = source or fetch()
    meta = read_gguf_metadata(source / "vocab.gguf")
    tokens: list[str] = meta["tokenizer.ggml.tokens"][:FIRST_ADDED_ID]
    merges = [tuple(merge.split(" ", 1)) for merge in meta["tokenizer.ggml.merges"]]
    bpe = models.BPE(vocab={token: i for i, token in enumerate(tokens)}, merges=merges, fuse_unk=False, byte_fallback=False)
    tokenizer = Tokenizer(bpe)
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    # One at a time, so that each gets the next id in Qwen2.5's order.
    for content, special in ADDED_TOKENS:
        token = AddedToken(content, special=special, normalized=False)
        tokenizer.add_special_tokens([token]) if special else tokenizer.add_tokens([token])
    for offset, (content, _) in enumerate(ADDED_TOKENS):
        assert tokenizer.token_to_id(content) == FIRST_ADDED_ID + offset, content
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None
    )
    wrapped.chat_template = (source / "chat_template.jinja").read_text(encoding="utf-8")
    return wrapped


def tokenizer_vectors(source: Path | None = None) -> list[tuple[str, list[int]]]:
    """llama.cpp's tokenizer test vectors for this vocabulary: (text, expected ids)."""
    source = source or vocab_dir()
    texts = (source / "vectors.inp").read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")
    ids = (source / "vectors.out").read_text(encoding="utf-8").splitlines()
    return [(text, [int(i) for i in line.split()]) for text, line in zip(texts, ids, strict=False)]
