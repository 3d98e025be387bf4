"""The embedded model's provisioning, and how a registry's model settings are checked.

Real parts: the Gemma 3 270M packages from PyPI (installed by `make setup`), converted for real.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from agentflux.proxy import embedded
from agentflux.proxy.backends.factory import ModelNotFound, model_format, model_path
from agentflux.registry.schema import ModelSettings

from conftest import run_agentflux


def linked_copy(source: Path, target: Path) -> Path:
    """A copy of a converted model whose weights are links to the original (1 GB) and whose
    small files are real copies a test may damage."""
    target.mkdir()
    for path in source.iterdir():
        if path.stat().st_size > 10_000_000:
            (target / path.name).symlink_to(path)
        else:
            shutil.copyfile(path, target / path.name)
    return target


def test_fetch_is_idempotent_and_a_damaged_model_is_detected_and_rebuilt(gemma_model: Path, tmp_path: Path) -> None:
    manifest = json.loads((gemma_model / embedded.MANIFEST).read_text())
    assert manifest["gguf_sha256"] == embedded.GGUF_SHA256
    assert {"model.safetensors", "tokenizer.json", "config.json", "generation_config.json"} <= set(manifest["files"])
    generation = json.loads((gemma_model / "generation_config.json").read_text())
    assert generation["bos_token_id"] == 2 and 106 in generation["eos_token_id"]  # <end_of_turn> stops
    copy = linked_copy(gemma_model, tmp_path / "model")
    assert embedded.fetch(copy) == (copy.resolve(), False)  # complete: nothing to do

    config = copy / "tokenizer_config.json"
    config.write_text(config.read_text().replace("<bos>", "<bad>"))  # same size, other bytes
    assert embedded.problem(copy) is None  # the quick check every load runs sees sizes only
    assert "does not match its recorded SHA-256" in embedded.problem(copy, full=True)
    (copy / "config.json").write_text("{}")
    with pytest.raises(embedded.EmbeddedModelMissing, match=r"run `agentflux model fetch --dest "):
        embedded.require(copy)

    folder, rebuilt = embedded.fetch(copy)
    assert rebuilt and embedded.problem(folder, full=True) is None
    assert not folder.with_name(folder.name + ".partial").exists()
    assert json.loads((folder / "config.json").read_text())["model_type"] == "gemma3_text"


def test_no_model_configured_means_the_embedded_one_and_its_absence_says_what_to_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gemma_model: Path
) -> None:
    monkeypatch.setenv(embedded.MODEL_DIR_ENV, str(gemma_model))
    assert model_path(ModelSettings(), tmp_path) == str(gemma_model)
    monkeypatch.setenv(embedded.MODEL_DIR_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(embedded.EmbeddedModelMissing) as missing:
        model_path(ModelSettings(), tmp_path)
    message = str(missing.value)
    # $AGENTFLUX_MODEL_DIR is where `agentflux model fetch` installs by default: no --dest needed.
    assert "\n" not in message and message.endswith("run `agentflux model fetch`")


def test_a_model_folder_without_weights_is_a_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "empty-model"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "gemma3_text"}')
    with pytest.raises(ModelNotFound, match=r"has no weights \(\*\.safetensors or \*\.bin\)"):
        model_path(ModelSettings(base="empty-model"), tmp_path)
    with pytest.raises(ModelNotFound, match="no such folder"):
        model_path(ModelSettings(base="../missing/model"), tmp_path)
    assert model_path(ModelSettings(base="Qwen/Qwen2.5-7B-Instruct"), tmp_path) == "Qwen/Qwen2.5-7B-Instruct"


def test_the_chat_format_follows_the_model_and_a_mismatch_is_refused(gemma_model: Path, tiny_model: Path) -> None:
    assert model_format(ModelSettings(), str(gemma_model)).name == "gemma3"
    assert model_format(ModelSettings(), str(tiny_model)).name == "qwen2.5"
    assert model_format(ModelSettings(chat_format="gemma3"), str(gemma_model)).name == "gemma3"
    with pytest.raises(ModelNotFound, match=r"chat_format 'qwen2.5' does not match .* set chat_format to 'gemma3' or auto"):
        model_format(ModelSettings(chat_format="qwen2.5"), str(gemma_model))
    assert model_format(ModelSettings(), "Qwen/Qwen2.5-7B-Instruct").name == "qwen2.5"
    with pytest.raises(ModelNotFound, match="set model.chat_format"):
        model_format(ModelSettings(), "someone/unknown-model")


def test_model_fetch_cli_reports_the_terms_and_does_nothing_twice(gemma_model: Path, subprocess_env: dict[str, str]) -> None:
    done = run_agentflux("model", "fetch", "--dest", str(gemma_model), env=subprocess_env)
    assert done.returncode == 0, done.stderr
    assert f"already installed in {gemma_model}" in done.stdout
    assert "Gemma Terms of Use" in done.stdout and (gemma_model / embedded.TERMS_FILE).is_file()
