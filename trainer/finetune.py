"""LoRA fine-tuning on span-masked examples: trl's SFTTrainer with peft.

Every example arrives pre-tokenized by the prompt protocol as `input_ids` plus a 0/1
`completion_mask` over exactly the tokens that carry loss (a tool name, the arguments, a
toolset name, or a whole call for the traditional baseline). trl turns the mask into labels
(`completion_only_loss=True`).

The CPU-fast path (`_shared_prefix_loss`), exact in both parts: the examples of a batch share
their prompt's head, which runs once per batch; and a 150k-262k-token vocabulary makes the
output layer dominate a small model's step while only a handful of positions carry loss, so
the output layer runs on the hidden states of those positions only.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoraSettings:
    """The paper's defaults (r=32, alpha=64, dropout 0.1, rsLoRA, every projection)."""

    r: int = 32
    alpha: int = 64
    dropout: float = 0.1
    rslora: bool = True
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    learning_rate: float = 2e-4
    epochs: float = 3.0
    max_steps: int = -1
    min_steps: int = 0  # adapters with few examples (one tool's calls) still get this many steps
    batch_size: int = 4  # rows per forward; memory grows with rows x length
    accumulation: int = 1  # forwards per optimizer step: the effective batch is batch_size x accumulation
    warmup_steps: float = 0.05  # a fraction of all steps when below 1
    weight_decay: float = 0.01
    seed: int = 0
    layers: tuple[int, int] | None = None  # adapt only layers [start, stop); None: every layer
    bf16: bool = False  # autocast where the hardware supports it (a pretrained base; the tiny model stays fp32)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"target_modules": list(self.target_modules), "layers": list(self.layers) if self.layers else None}


@dataclass
class TrainResult:
    path: Path
    steps: int
    examples: int
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def _steps(settings: LoraSettings, examples: int) -> int:
    """An explicit step count when `min_steps` outweighs the epochs (-1: follow the epochs)."""
    if settings.max_steps > 0:
        return settings.max_steps
    per_epoch = -(-examples // (settings.batch_size * settings.accumulation))
    return settings.min_steps if per_epoch * settings.epochs < settings.min_steps else -1


def _shared_prefix_loss(model: Any, inputs: dict[str, Any], num_items_in_batch: Any) -> Any:
    """The batch's summed loss over its completion tokens, divided by their count.

    Two savings, both exact. The examples of one adapter share their prompt's head (system text
    and tool list, most of every prompt): it runs once, through the layers only, and its
    key/value states are repeated for the rest of every row; gradients through it add up as if
    each row had run it. And the output layer (262k entries for Gemma, most of a small model's
    step) runs only at the positions whose next token carries loss, row by row: a union of
    positions over the batch would score every row where any row has a target.
    """
    import torch
    import torch.nn.functional as F

    causal = model.get_base_model()
    backbone = getattr(causal, causal.base_model_prefix)
    ids, mask, labels = inputs["input_ids"], inputs["attention_mask"], inputs["labels"]
    shared = int(((ids == ids[:1]).all(0) & (mask == 1).all(0)).long().cumprod(0).sum())
    # The token before the first target must be in the second pass, which predicts the targets.
    first_target = int((labels != -100).long().argmax(1).min())
    shared = max(0, min(shared, first_target - 1))
    past = None
    if shared:
        past = backbone(input_ids=ids[:1, :shared], use_cache=True).past_key_values
        past.batch_repeat_interleave(ids.shape[0])
    positions = torch.arange(shared, ids.shape[1], device=ids.device).expand(ids.shape[0], -1)
    hidden = backbone(
        input_ids=ids[:, shared:], attention_mask=mask, position_ids=positions, past_key_values=past,
        use_cache=past is not None,
    ).last_hidden_state  # fmt: skip
    targets = labels[:, shared + 1 :]
    scored = targets != -100
    logits = causal.get_output_embeddings()(hidden[:, :-1][scored])
    cap = getattr(causal.config, "final_logit_softcapping", None)
    if cap:
        logits = (logits / cap).tanh() * cap
    loss = F.cross_entropy(logits.float(), targets[scored], reduction="sum")
    count = num_items_in_batch if num_items_in_batch is not None else scored.sum()
    return loss / count, logits


def _sparse_trainer_class() -> type:
    from trl import SFTTrainer

    class SharedPrefixSFTTrainer(SFTTrainer):
        """trl's trainer (data collation, masks, schedule) with the loss of `_shared_prefix_loss`."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # type: ignore[override]
            loss, outputs = _shared_prefix_loss(model, inputs, num_items_in_batch)
            return (loss, outputs) if return_outputs else loss

    return SharedPrefixSFTTrainer


def train_adapter(
    base_model: Path | str,
    examples: list[tuple[list[int], list[int]]],
    output: Path,
    settings: LoraSettings = LoraSettings(),
    *,
    description: str = "adapter",
    progress: bool = True,
    on_step: Callable[[int, int], None] | None = None,
) -> TrainResult:
    """Fine-tune a LoRA adapter on `(input_ids, completion_mask)` pairs; write a PEFT directory atomically."""
    import time

    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, ProgressCallback, TrainerCallback
    from trl import SFTConfig

    from agentflux.proxy.backends.factory import bf16_supported

    if not examples:
        raise ValueError(f"no training examples for {description}")
    started = time.monotonic()
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    bf16 = settings.bf16 and bf16_supported()
    # Under bf16 autocast every matmul reads the frozen weights in bf16 anyway: storing them so
    # saves the cast of every weight in every forward (a fifth of a CPU step) and half the memory.
    # The LoRA weights peft adds stay float32, as the optimizer needs.
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.bfloat16 if bf16 else torch.float32)
    dataset = Dataset.from_dict(
        {"input_ids": [ids for ids, _ in examples], "completion_mask": [mask for _, mask in examples]}
    )
    lora = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        use_rslora=settings.rslora,
        target_modules=list(settings.target_modules),
        layers_to_transform=list(range(*settings.layers)) if settings.layers else None,
        task_type="CAUSAL_LM",
    )
    losses: list[float] = []

    class Watch(TrainerCallback):
        """Records the loss; reports each step to `on_step`."""

        def on_log(self, args, state, control, logs=None, **kwargs):  # type: ignore[no-untyped-def]
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

        def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            if on_step is not None:
                on_step(state.global_step, state.max_steps)

    class StepBar(ProgressCallback):
        """transformers' step bar, named for the adapter; its log dictionaries go to the log,
        where transformers would print them between the bars."""

        def on_train_begin(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            self.training_bar = tqdm(total=state.max_steps, desc=description, dynamic_ncols=True)
            self.current_step = 0

        def on_log(self, args, state, control, logs=None, **kwargs):  # type: ignore[no-untyped-def]
            logger.info("%s: step %d: %s", description, state.global_step, logs)

    with tempfile.TemporaryDirectory(prefix="agentflux-train-") as scratch:
        config = SFTConfig(
            output_dir=scratch,
            completion_only_loss=True,
            per_device_train_batch_size=settings.batch_size,
            gradient_accumulation_steps=settings.accumulation,
            num_train_epochs=settings.epochs,
            max_steps=_steps(settings, len(examples)),
            learning_rate=settings.learning_rate,
            lr_scheduler_type="cosine",
            warmup_steps=settings.warmup_steps,
            weight_decay=settings.weight_decay,
            seed=settings.seed,
            data_seed=settings.seed,
            logging_steps=5,
            dataloader_pin_memory=False,
            save_strategy="no",
            report_to=[],
            bf16=bf16,
            gradient_checkpointing=False,
            max_length=None,
            disable_tqdm=not progress,
            use_cpu=not torch.cuda.is_available(),
            dataloader_num_workers=0,
        )
        trainer = _sparse_trainer_class()(
            model=model,
            args=config,
            train_dataset=dataset,
            peft_config=lora,
            processing_class=tokenizer,
            callbacks=[Watch()],
        )
        if progress:
            trainer.remove_callback(ProgressCallback)
            trainer.add_callback(StepBar)
        else:
            trainer.remove_callback(PrinterCallback)  # it prints every log line to stdout
        trainer.train()
        partial = output.with_name(output.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        trainer.model.save_pretrained(partial)
        if output.exists():
            shutil.rmtree(output)
        partial.rename(output)
    seconds = time.monotonic() - started
    logger.info("trained %s on %d examples in %.1fs", description, len(examples), seconds)
    return TrainResult(output, trainer.state.global_step, len(examples), losses, seconds)
