"""Train the bundled demo AdaPerceiver on Fashion-MNIST, jointly over its knobs.

Every step trains the full configuration and one randomly drawn sub-configuration
(tokens from the granularities, width from mat_dims, depth 1..D) under the
block-causal mask, the "sandwich" recipe used for weight-shared adaptive models,
with the full configuration's predictions distilled into the sub-configuration.
Afterwards every trained point is evaluated on the 10,000-image test set and the
checkpoint is written in the published layout with a held-out evaluation subset.

    python examples/train_demo.py --epochs 12 --out adaexport/demo
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from adaexport.datasets import FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, load_fashion_mnist
from adaexport.model import AdaPerceiver, AdaPerceiverConfig, load_checkpoint, save_checkpoint

MEAN, STD = 0.2860, 0.3530

DEMO_CONFIG = dict(
    embed_dim=64, num_heads=4, depth=4, max_latent_tokens=32, mask_token_grans=[8, 16, 32],
    mat_dims=[32, 48, 64], img_size=28, patch_size=4, in_channels=1, num_classes=10,
    ffn_ratio=2.57, rope_theta=10000, qkv_bias=True, proj_bias=True, use_embed_ffn=True,
    use_output_ffn=False, attn_layer="flex", block_mask="block", act_layer="gelu",
    norm_layer="layernorm", ffn_layer="mlp", process_token_init="learned", ls_init_values=1e-1,
    preprocessing={"resize": 28, "crop": 28, "mean": [MEAN], "std": [STD], "interpolation": "bilinear"},
    class_names=list(FASHION_MNIST_CLASSES),
)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return ((torch.from_numpy(images).float() / 255.0 - MEAN) / STD).unsqueeze(1)


def augment(x: torch.Tensor) -> torch.Tensor:
    """Random horizontal flip and random 2-pixel translation, per batch (cheap on 2 cores)."""
    flip = torch.rand(x.shape[0]) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    dx, dy = random.randint(-2, 2), random.randint(-2, 2)
    pad = F.pad(x, (2, 2, 2, 2), value=-MEAN / STD)
    return pad[..., 2 + dy: 2 + dy + 28, 2 + dx: 2 + dx + 28]


@torch.no_grad()
def accuracy(model: AdaPerceiver, x: torch.Tensor, y: torch.Tensor, **knobs) -> float:
    correct = 0
    for i in range(0, len(x), 1000):
        correct += (model(x[i:i + 1000], **knobs)["logits"].argmax(-1) == y[i:i + 1000]).sum().item()
    return correct / len(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=FASHION_MNIST_DIR)
    parser.add_argument("--out", type=Path, default=Path("adaexport/demo"))
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-subset", type=int, default=2000, help="held-out test images shipped with the model")
    parser.add_argument("--max-steps", type=int, default=0, help="stop early (smoke tests)")
    parser.add_argument("--init", type=Path, default=None, help="continue from a checkpoint directory")
    parser.add_argument("--test-limit", type=int, default=0, help="evaluate on the first N test images only")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    random.seed(args.seed)
    torch.set_num_threads(args.threads)
    if args.init:
        model = load_checkpoint(args.init).model
        cfg = model.config
    else:
        cfg = AdaPerceiverConfig.from_dict(DEMO_CONFIG)
        model = AdaPerceiver(cfg)
    train_x, train_y = load_fashion_mnist(args.data, "train")
    test_x, test_y = load_fashion_mnist(args.data, "test")
    xtr, ytr = to_tensor(train_x), torch.from_numpy(train_y)
    if args.test_limit:
        test_x, test_y = test_x[:args.test_limit], test_y[:args.test_limit]
    xte, yte = to_tensor(test_x), torch.from_numpy(test_y)

    steps_per_epoch = len(xtr) // args.batch_size
    total = steps_per_epoch * args.epochs if not args.max_steps else args.max_steps
    warmup = min(500, total // 10)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / max(1, warmup)) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
    )
    started = time.perf_counter()
    step = 0
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(xtr))
        for b in range(steps_per_epoch):
            idx = order[b * args.batch_size:(b + 1) * args.batch_size]
            x, y = augment(xtr[idx]), ytr[idx]
            full = model(x, attention="block")["logits"]
            loss = F.cross_entropy(full, y, label_smoothing=0.1)
            sub = dict(tokens=random.choice(cfg.mask_token_grans), width=random.choice(cfg.mat_dims),
                       depth=random.randint(1, cfg.depth))
            sub_logits = model(x, attention="block", **sub)["logits"]
            distill = F.kl_div(F.log_softmax(sub_logits, -1), F.softmax(full.detach(), -1), reduction="batchmean")
            loss = loss + 0.5 * F.cross_entropy(sub_logits, y, label_smoothing=0.1) + 0.5 * distill
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            step += 1
            if step % 100 == 0:
                print(f"epoch {epoch} step {step}/{total} loss {loss.item():.3f} "
                      f"{time.perf_counter() - started:.0f}s", flush=True)
            if step >= total:
                break
        model.eval()
        print(f"epoch {epoch}: full-config test top-1 {accuracy(model, xte, yte):.4f} "
              f"({time.perf_counter() - started:.0f}s)", flush=True)
        if step >= total:
            break
    train_seconds = time.perf_counter() - started

    model.eval()
    out_model = args.out / "model"
    save_checkpoint(model, out_model)
    rng = np.random.default_rng(args.seed)
    subset = np.sort(rng.choice(len(test_x), size=min(args.eval_subset, len(test_x)), replace=False))
    np.savez_compressed(args.out / "eval_subset.npz", x=test_x[subset], y=test_y[subset].astype(np.int64),
                        index=subset)
    results = []
    for tokens, width, depth in itertools.product(cfg.mask_token_grans, cfg.mat_dims, range(1, cfg.depth + 1)):
        results.append({"tokens": tokens, "width": width, "depth": depth,
                        "top1": round(accuracy(model, xte, yte, tokens=tokens, width=width, depth=depth), 4)})
    (args.out / "training.json").write_text(json.dumps({
        "dataset": "Fashion-MNIST (Debian dataset-fashion-mnist), 60,000 train / 10,000 test",
        "epochs": args.epochs, "continued_from": str(args.init) if args.init else None, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
        "threads": args.threads, "train_seconds": round(train_seconds, 1),
        "eval_subset": f"{args.eval_subset} test images (indices in eval_subset.npz), never trained on",
        "attention": "block", "test_top1_per_point": results,
    }, indent=1) + "\n")
    best = max(r["top1"] for r in results)
    print(f"done in {train_seconds:.0f}s; full point top-1 {results[-1]['top1']:.4f} (best {best:.4f})")


if __name__ == "__main__":
    main()
