"""Train a tiny model for a few SFT steps and save its weights; run alone or under torchrun (gloo).

Usage: python ddp_worker.py OUT_FILE BATCH_SIZE_PER_PROCESS GRAD_ACCUM
"""

import os
import sys

import torch
from safetensors.torch import save_file

from tether.algorithms.common import count_loss_tokens, lm_batch_loss
from tether.config import TrainConfig
from tether.data import Record
from tether.data.formats import parse_sft
from tether.data.tokenize import pad_collate, tokenize_sft
from tether.engine import Trainer
from tether.gym import get_task
from tether.models import TokenLogProbs, build_tiny_model, train_tokenizer


def main() -> None:
    out_file, batch_size, grad_accum = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    task = get_task("reviews")
    tokenizer = train_tokenizer(task.pretrain_texts()[:300], vocab_size=300)
    model = build_tiny_model(
        tokenizer, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, seed=5
    )
    rows = task.sft_examples()[:64]
    data = [tokenize_sft(tokenizer, parse_sft(Record(r, "gym", i)), 128) for i, r in enumerate(rows)]
    config = TrainConfig(
        output_dir=out_file + ".run",
        max_steps=4,
        batch_size=batch_size,
        grad_accum_steps=grad_accum,
        learning_rate=1e-2,
        warmup_ratio=0.0,
        progress=False,
        tensorboard=False,
    )
    trainer = Trainer(
        config,
        TokenLogProbs(model),
        data,
        lambda e: pad_collate(e, tokenizer.pad_token_id),
        loss_fn=lm_batch_loss,
        count_fn=count_loss_tokens,
    )
    trainer.fit()
    if trainer.accelerator.is_main_process:
        state = {
            k: v.detach().clone().contiguous() for k, v in trainer.unwrapped().model.state_dict().items()
        }
        state.pop("lm_head.weight", None)  # tied to the embeddings
        save_file(state, out_file)
        print(f"processes={trainer.accelerator.num_processes} loss={trainer.history[-1]['loss']:.6f}")
    release_process_group()


def release_process_group() -> None:
    """Leave once every rank is done, without tearing gloo down: left to interpreter shutdown its threads
    can abort a rank, and once in a full test run (not reproduced in isolation) a rank hung in
    ``destroy_process_group`` until the test's timeout. The work is saved and printed by then."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
