"""Forward+backward time of the nested heads + loss against a plain linear classifier.

Run: ``python benchmarks/heads.py [--batch 256 --width 2048 --classes 1000 --repeats 30]``.
Variants run interleaved, round after round, so a noisy machine slows them all alike; the table
gives the median and minimum time per variant and the median (and quartiles) over rounds of its
ratio to the plain baseline's time in the same round.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from mrl.core.heads import MatryoshkaHead, _mm_into
from mrl.core.losses import MatryoshkaCrossEntropy
from mrl.core.nesting import default_nesting
from mrl_testing.reference import NaiveMatryoshkaCE, NaiveMRLLinear


def make_step(head, loss_fn, x, target):
    """One training step's head work: zero grads, forward, loss, backward."""

    def step():
        head.zero_grad(set_to_none=True)
        x.grad = None
        loss_fn(head(x), target).backward()

    return step


def make_products_step(head, x, classes, target=None):
    """MRL's floor: its 27 matrix products (forward, input and weight gradients of nine sizes), no autograd.

    The same matrix shapes as the ``ours MRL`` step (narrow products padded as the head pads them),
    fresh outputs each time as in training. Without ``target`` the gradient of the logits is fixed
    (no loss); with it, each step also computes the nine cross-entropies (softmax, the loss read off
    it, the gradient of the mean loss) and the bias gradients with plain tensor ops, which is all the
    arithmetic the ``ours MRL`` step has to do. The step returns the input gradient.
    """
    weights = [fc.weight.detach() for fc in head.classifiers()]
    biases = [fc.bias.detach() for fc in head.classifiers()]
    sizes, xd, batch = head.sizes, x.detach(), x.shape[0]
    fixed_grad = torch.randn(len(sizes), batch, classes) / batch

    def step():
        logits = xd.new_empty(len(sizes), batch, classes)
        for out, m, w, b in zip(logits.unbind(0), sizes, weights, biases):
            torch.addmm(b, xd[:, :m], w.t(), out=out)
        grad = fixed_grad
        if target is not None:
            grad = torch.softmax(logits, dim=-1)
            index = target.view(1, -1, 1).expand(len(sizes), -1, 1)
            grad.gather(-1, index).log_().neg_().mean(1)  # the nine losses
            grad.div_(batch).scatter_add_(-1, index, torch.full(index.shape, -1.0 / batch))
            grad.sum(1)  # the bias gradients
        grad_x = torch.mm(grad[-1], weights[-1])
        for g in reversed(range(len(sizes))):
            m = sizes[g]
            if g < len(sizes) - 1:
                grad_x[:, :m] += _mm_into(grad[g], weights[g], xd.new_empty(batch, m))
            _mm_into(grad[g].t(), xd[:, :m], weights[g].new_empty(weights[g].shape))
        return grad_x

    return step


def main(argv=None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument(
        "--clock",
        choices=["wall", "thread"],
        default="wall",
        help="'thread' counts this thread's CPU time only (steady on a busy machine; needs --threads 1)",
    )
    args = parser.parse_args(argv)
    if args.clock == "thread" and args.threads != 1:
        parser.error("--clock thread needs --threads 1 (other threads' work would not be counted)")
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.thread_time

    torch.manual_seed(0)
    nesting = default_nesting(args.width)
    x = torch.randn(args.batch, args.width, requires_grad=True)
    target = torch.randint(0, args.classes, (args.batch,))
    plain = torch.nn.Linear(args.width, args.classes)
    ours_mrl = MatryoshkaHead(args.width, args.classes, nesting)
    variants = {
        "plain Linear + CE": make_step(plain, lambda logits, y: F.cross_entropy(logits, y), x, target),
        "reference MRL": make_step(NaiveMRLLinear(nesting, args.classes), NaiveMatryoshkaCE(), x, target),
        "reference MRL-E": make_step(
            NaiveMRLLinear(nesting, args.classes, efficient=True), NaiveMatryoshkaCE(), x, target
        ),
        "ours MRL": make_step(ours_mrl, MatryoshkaCrossEntropy(), x, target),
        "ours MRL-E": make_step(
            MatryoshkaHead(args.width, args.classes, nesting, efficient=True),
            MatryoshkaCrossEntropy(),
            x,
            target,
        ),
        "MRL products only": make_products_step(ours_mrl, x, args.classes),
        "MRL products + loss": make_products_step(ours_mrl, x, args.classes, target),
    }
    for step in variants.values():
        for _ in range(args.warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, step in variants.items():
            start = clock()
            step()
            times[name].append((clock() - start) * 1e3)

    print(
        f"forward+backward, batch {args.batch}, width {args.width}, {args.classes} classes, "
        f"nesting {nesting[0]}..{nesting[-1]} ({len(nesting)} sizes), {torch.get_num_threads()} threads, "
        f"{args.repeats} rounds, {args.clock} clock"
    )
    base = times["plain Linear + CE"]
    print(f"{'variant':<21} {'median ms':>10} {'min ms':>8} {'x plain':>8} {'(quartiles)':>13}")
    ratios = {}
    for name, ts in times.items():
        # ratio to the plain step of the same round, so a machine that slows down for a while
        # (other processes) moves both alike
        q1, ratio, q3 = statistics.quantiles([t / b for t, b in zip(ts, base)], n=4)
        ratios[name] = ratio
        print(f"{name:<21} {statistics.median(ts):>10.2f} {min(ts):>8.2f} {ratio:>8.2f} {f'({q1:.2f}-{q3:.2f})':>13}")
    return ratios


if __name__ == "__main__":
    main()
