"""Real Hugging Face Trainer output: a GPT-2 built from a tiny config, 12 steps on CPU, nothing downloaded."""

import tempfile

import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

torch.manual_seed(0)
model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=16, n_embd=16, n_layer=1, n_head=2))
data = [{"input_ids": ids, "labels": ids} for ids in torch.randint(0, 64, (48, 16))]
args = TrainingArguments(output_dir=tempfile.mkdtemp(), max_steps=12, per_device_train_batch_size=8,
                         logging_steps=2, eval_strategy="steps", eval_steps=6, save_strategy="no",
                         report_to=[], use_cpu=True, learning_rate=1e-3)
Trainer(model=model, args=args, train_dataset=data, eval_dataset=data[:16]).train()
