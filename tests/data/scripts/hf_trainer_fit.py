"""A user's own Hugging Face Trainer script: a GPT-2 built from a tiny config (nothing downloaded),
12 steps on CPU, a log dict every 2 steps, an evaluation and a checkpoint (out-hf/checkpoint-N/,
the Trainer's own layout) every 6."""

import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

torch.manual_seed(0)
model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=16, n_embd=16, n_layer=1, n_head=2))
data = [{"input_ids": ids, "labels": ids} for ids in torch.randint(0, 64, (48, 16))]
args = TrainingArguments(output_dir="out-hf", max_steps=12, per_device_train_batch_size=8,
                         logging_steps=2, eval_strategy="steps", eval_steps=6, save_steps=6,
                         report_to="none", use_cpu=True, learning_rate=1e-3)
Trainer(model=model, args=args, train_dataset=data, eval_dataset=data[:16]).train()
