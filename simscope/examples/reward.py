"""A small Bradley-Terry reward model on a frozen causal LM: how the demo *measures* RM
quality for each candidate instead of inventing it.

The base model stays frozen; each text is the mean of its last hidden states (padding
masked), and a linear reward head is fit by minimising ``-log sigmoid(r(chosen) -
r(rejected))`` with L2 regularisation. Quality is the accuracy (share of test pairs with
``r(chosen) > r(rejected)``) on pairs the head never saw. A frozen base with a trained head is
the cheapest reward model whose quality depends only on what the base model represents;
full fine-tuning took ~90 s per tiny model here, this takes seconds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from simscope.errors import SimscopeError
from simscope.logs import quiet_transformers

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RewardResult:
    """Accuracy of a trained reward model on held-out pairs, with a bootstrap interval."""

    accuracy: float
    ci_low: float
    ci_high: float
    n_test: int
    final_train_loss: float


def _features(
    body: torch.nn.Module, tokenizer: object, texts: list[str], max_tokens: int, batch_size: int
) -> torch.Tensor:
    # keep the end of each text: the response is what the reward must judge
    tokenizer.truncation_side = "left"  # type: ignore[attr-defined]
    tokenizer.padding_side = "right"  # type: ignore[attr-defined]
    out = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(  # type: ignore[operator]
                texts[start : start + batch_size],
                max_length=max_tokens,
                truncation=True,
                padding=True,
                return_tensors="pt",
            )
            hidden = body(
                input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]
            ).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out.append((hidden * mask).sum(1) / mask.sum(1).clamp(min=1))
    return torch.cat(out)


def train_reward_model(
    model_dir: Path,
    train_pairs: list[tuple[str, str]],
    test_pairs: list[tuple[str, str]],
    *,
    epochs: int = 300,
    lr: float = 0.05,
    weight_decay: float = 1e-3,
    max_tokens: int = 64,
    batch_size: int = 32,
    seed: int = 0,
    n_boot: int = 500,
    progress: bool = True,
) -> RewardResult:
    """Fit a reward head on the frozen model's features of ``train_pairs`` and test it.

    Each pair is ``(chosen_text, rejected_text)``, the prompt included in both.
    """
    from transformers import AutoModel, AutoTokenizer

    if not Path(model_dir, "config.json").is_file():
        raise SimscopeError(f"{model_dir}: no config.json; expected a saved causal LM directory")
    torch.manual_seed(seed)
    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        body = AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token

    def diff(pairs: list[tuple[str, str]]) -> torch.Tensor:
        texts = [c for c, _ in pairs] + [r for _, r in pairs]
        feats = _features(body, tokenizer, texts, max_tokens, batch_size)
        return feats[: len(pairs)] - feats[len(pairs) :]

    with tqdm(total=2, desc=f"reward model {Path(model_dir).name}", disable=not progress) as bar:
        x_train = diff(train_pairs)
        bar.update(1)
        x_test = diff(test_pairs)
        bar.update(1)
    std = x_train.std(0).clamp(min=1e-6)
    head = torch.nn.Linear(x_train.shape[1], 1, bias=False)
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    # r(chosen) - r(rejected) is linear in the feature difference; scale only, no centring,
    # so that swapping a pair flips the sign of its margin.
    x_scaled = x_train / std
    loss_value = float("nan")
    for _ in range(epochs):
        loss = -torch.nn.functional.logsigmoid(head(x_scaled).squeeze(-1)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss_value = float(loss.detach())
    with torch.no_grad():
        margins = head(x_test / std).squeeze(-1)
    hits = (margins > 0).numpy().astype(float)
    rng = np.random.default_rng(seed)
    boots = [hits[rng.integers(0, hits.size, hits.size)].mean() for _ in range(n_boot)]
    low, high = np.quantile(boots, [0.025, 0.975])
    return RewardResult(float(hits.mean()), float(low), float(high), int(hits.size), loss_value)
