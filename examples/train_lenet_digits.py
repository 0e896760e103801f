"""Train D2L's LeNet on scikit-learn's bundled 8x8 handwritten digits (no download), twice
from the same initial weights: as a torch model and as cnnext.convert(model). Prints both
models' loss and accuracy per epoch, and how far apart their weights drift (in float64 the
two runs agree to rounding).

    python examples/train_lenet_digits.py                 # float32, 5 epochs
    python examples/train_lenet_digits.py --dtype float64 # the two runs match to ~1e-12
"""
import argparse
import copy
import os
import sys
import time

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import cnnext  # noqa: E402
from benchmarks.models import lenet  # noqa: E402


def load(dtype, limit=None, seed=0):
    """Digits as 1x28x28 images: 8x8 -> 24x24 (nearest, x3), padded by 2 to LeNet's 28x28."""
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float64) / 16.0
    labels = torch.tensor(digits.target)
    images = F.interpolate(images.unsqueeze(1), scale_factor=3, mode="nearest")
    images = F.pad(images, (2, 2, 2, 2))
    images = (images - images.mean()) / images.std()
    idx_train, idx_test = train_test_split(range(len(labels)), test_size=0.25, random_state=seed,
                                           stratify=labels.numpy())
    if limit:
        idx_train, idx_test = idx_train[:limit], idx_test[: max(limit // 3, 10)]
    return ((images[idx_train].to(dtype), labels[idx_train]),
            (images[idx_test].to(dtype), labels[idx_test]))


def evaluate(model, images, labels):
    model.eval()
    with torch.no_grad():
        logits = model(images)
    model.train()
    return F.cross_entropy(logits, labels).item(), (logits.argmax(1) == labels).float().mean().item()


def max_weight_difference(a, b):
    return max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters()))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--limit", type=int, default=None, help="use only this many training images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="intra-op threads (default 1: a LeNet batch is too small to share)")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    args = p.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    torch.set_num_threads(args.threads)

    torch.manual_seed(args.seed)
    (x_train, y_train), (x_test, y_test) = load(dtype, args.limit, args.seed)
    # ReLU rather than D2L's sigmoid: same architecture, trains in a few epochs with Adam.
    reference = lenet(torch.nn.ReLU).to(dtype)
    ours = cnnext.convert(copy.deepcopy(reference))  # same initial weights
    models = {"torch": reference, "cnnext": ours}
    optimizers = {k: torch.optim.Adam(m.parameters(), lr=args.lr) for k, m in models.items()}
    print(f"LeNet on sklearn digits: {len(y_train)} train / {len(y_test)} test images, 1x28x28, "
          f"{args.dtype}, {args.epochs} epochs")
    print(f"{'epoch':>5} | {'torch loss':>10} {'acc':>6} | {'cnnext loss':>11} {'acc':>6} | "
          f"{'max |w_torch - w_cnnext|':>24} | {'s':>5}")
    generator = torch.Generator().manual_seed(args.seed)
    results = {}
    for epoch in range(1, args.epochs + 1):
        start = time.perf_counter()
        order = torch.randperm(len(y_train), generator=generator)  # the same batches for both
        batches = order.split(args.batch_size)
        for batch in tqdm(batches, desc=f"epoch {epoch}", leave=False, disable=not args.progress):
            for name, model in models.items():
                optimizers[name].zero_grad(set_to_none=True)
                F.cross_entropy(model(x_train[batch]), y_train[batch]).backward()
                optimizers[name].step()
        results = {name: evaluate(model, x_test, y_test) for name, model in models.items()}
        diff = max_weight_difference(reference, ours)
        print(f"{epoch:>5} | {results['torch'][0]:>10.4f} {100 * results['torch'][1]:>5.1f}% | "
              f"{results['cnnext'][0]:>11.4f} {100 * results['cnnext'][1]:>5.1f}% | {diff:>24.3e} | "
              f"{time.perf_counter() - start:>5.1f}")
    accuracy = results["cnnext"][1]
    print(f"test accuracy: torch {100 * results['torch'][1]:.1f}%, cnnext {100 * accuracy:.1f}%")
    if dtype == torch.float64:
        diff = max_weight_difference(reference, ours)
        assert diff < 1e-8, f"float64 runs should agree to rounding, max weight difference {diff:.3e}"
        print(f"float64: the two models' weights agree to {diff:.1e} after training")
    return results


if __name__ == "__main__":
    main()
