"""Conservation of synaptic saliency (SynFlow paper, Fig. 3/4): per-layer score totals per method.

SynFlow's score θ·∂R/∂θ, summed over one layer of a bias-free ReLU network, equals R for every layer
(R is positively homogeneous of degree 1 in each layer's weights), and per hidden channel the incoming
total equals the outgoing one. So a layer's *average* score falls as 1/size and global pruning thins
big layers first without ever emptying one. SNIP's |θ·∂L/∂θ| and GraSP's -θ·Hg carry no such law:
their layer totals spread over orders of magnitude. Scores come from the engine's scorers, one pass at
full density; SNIP and GraSP see random Gaussian inputs with random labels (data-free).

Networks: a bias-free ReLU CNN (no BatchNorm: the law is exact there) and the paper's VGG-16 (with
BatchNorm at init: β = 0 and running mean 0 keep it homogeneous, so the law holds up to BN's eps).

    .venv/bin/python scripts/conservation.py --small      # docs/figures/conservation.{png,csv}
    (--small changes nothing here: one scoring pass per method is already quick)
    .venv/bin/python scripts/conservation.py --plot-only  # redraw from the CSV
"""

from __future__ import annotations

import torch
from matplotlib.ticker import MaxNLocator
from torch import nn

from _common import (rows_for, CIFAR_SHAPE, COLORS, LABELS, Timer, cifar_twin, clear_masks, log, parser, plt,
                     random_batches, save_figure, set_threads)
from models.torch_nets import export, kaiming_init
from onnxprune.twin import Twin

METHODS = ("synflow", "snip", "grasp")
DATA_METHODS = {"snip", "grasp"}
NETS = {"biasfree": "bias-free ReLU CNN", "vgg16": "VGG-16"}


class BiasFreeCNN(nn.Module):
    """Conv-ReLU chain with max pooling, global average pooling and a linear head, no bias anywhere."""

    WIDTHS = (16, 32, 64, 128)

    def __init__(self, num_classes: int = 10):
        super().__init__()
        layers, cin = [], 3
        for i, cout in enumerate(self.WIDTHS):
            layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.ReLU()]
            layers += [nn.MaxPool2d(2)] if i % 2 else []
            cin = cout
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(cin, num_classes, bias=False)

    def forward(self, x):
        return self.classifier(self.features(x))


def options():
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=100, help="random samples for SNIP/GraSP")
    p.add_argument("--plot-only", action="store_true", help="redraw the figure from the existing CSV")
    return p


def engine_scores(twin: Twin, method: str, batches) -> dict[str, torch.Tensor]:
    """One scoring pass of the engine's scorer at full density: {prunable tensor: score}."""
    from onnxprune.pruning import score

    clear_masks(twin)
    options = {"batches": batches} if method in DATA_METHODS else {}
    return score(twin, method, precision=torch.float64, **options)


def channel_flow(twin: Twin, names: list[str], scores: dict[str, torch.Tensor]) -> list[float]:
    """Per layer boundary: max over channels of |in - out| / max(in) (0 for exact neuron-wise conservation).

    Valid for a plain chain (each layer's output channels are the next layer's input channels)."""
    devs = []
    for a, b in zip(names, names[1:]):
        incoming = scores[a].flatten(1).sum(1)  # per output channel of layer a
        outgoing = scores[b].transpose(0, 1).flatten(1).sum(1)  # per input channel of layer b
        devs.append(float((incoming - outgoing).abs().max() / incoming.abs().max()))
    return devs


def layer_rows(net: str, method: str, twin: Twin, scores: dict[str, torch.Tensor], flow=None) -> list[dict]:
    abs_total = sum(float(s.abs().sum()) for s in scores.values())
    rows = []
    for index, (name, s) in enumerate(scores.items()):
        rows.append({"network": net, "method": method, "layer_index": index, "layer": name, "size": s.numel(),
                     "score_sum": float(s.sum()), "abs_sum": float(s.abs().sum()),
                     "abs_share": float(s.abs().sum()) / abs_total, "mean_abs_score": float(s.abs().mean()),
                     "in_out_max_rel_dev": "" if flow is None or index >= len(flow) else flow[index]})
    return rows


def run(args) -> list[dict]:
    nets = {"biasfree": Twin(export(kaiming_init(BiasFreeCNN(), seed=args.seed), CIFAR_SHAPE), dtype=torch.float64),
            "vgg16": cifar_twin("vgg16", seed=args.seed)}
    batches = random_batches(CIFAR_SHAPE, n_batches=1, batch_size=args.batch_size, seed=args.seed)
    rows = []
    for net, twin in nets.items():
        for method in METHODS:
            with Timer() as t:
                scores = engine_scores(twin, method, batches)
            flow = channel_flow(twin, list(scores), scores) if net == "biasfree" else None
            rows += layer_rows(net, method, twin, scores, flow)
            log(f"{net:9s} {method:8s} {spread_line(rows[-len(scores):])}  {t.seconds:.1f}s")
    return rows


def spread(layers: list[dict]) -> tuple[float, float]:
    """(max/min of per-layer |score| totals, max relative deviation from their mean)."""
    sums = [float(r["abs_sum"]) for r in layers]
    mean = sum(sums) / len(sums)
    return max(sums) / min(sums), max(abs(s - mean) for s in sums) / mean


def spread_line(layers: list[dict]) -> str:
    ratio, dev = spread(layers)
    flows = [float(r["in_out_max_rel_dev"]) for r in layers if r["in_out_max_rel_dev"] not in ("", None)]
    flow = f", channel in/out max rel. dev {max(flows):.1e}" if flows else ""
    return f"layer totals max/min {ratio:.4g} (max rel. dev from mean {dev:.1e}){flow}"


def groups(rows: list[dict]) -> dict[tuple[str, str], list[dict]]:
    out: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        out.setdefault((r["network"], r["method"]), []).append(r)
    return out


def plot(rows: list[dict], path) -> int:
    runs = groups(rows)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, net in zip(axes[:2], NETS):
        for method in METHODS:
            layers = runs[(net, method)]
            ratio, _ = spread(layers)
            ax.plot([int(r["layer_index"]) for r in layers], [float(r["abs_share"]) for r in layers], marker="o",
                    ms=4, color=COLORS[method], label=f"{LABELS[method]} (max/min {ratio:.3g})")
        n = len(runs[(net, METHODS[0])])
        ax.axhline(1 / n, color="k", ls=":", lw=1, label="equal totals (1/L)")
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(xlabel="layer (weight tensor, input to output)", ylabel="layer's share of total |score|",
               title=f"{NETS[net]}: per-layer score totals")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, which="both")
    ax = axes[2]
    for method in METHODS:  # mean per weight as a share of the method's total: scales become comparable
        layers = runs[("vgg16", method)]
        ax.scatter([int(r["size"]) for r in layers], [float(r["abs_share"]) / int(r["size"]) for r in layers],
                   s=22, color=COLORS[method], label=LABELS[method])
    sizes = sorted(int(r["size"]) for r in runs[("vgg16", "synflow")])
    n = len(sizes)
    ax.plot(sizes, [1 / (n * s) for s in sizes], color="k", ls=":", lw=1, label="equal totals: 1/(L·size)")
    ax.set(xscale="log", yscale="log", xlabel="weights in the layer", ylabel="mean |score| per weight / total |score|",
           title="VGG-16: layer size vs mean score (Fig. 4)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    fig.suptitle("Scores at initialization, one pass at full density (SNIP/GraSP on random Gaussian inputs, "
                 "random labels)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def main() -> None:
    args = options().parse_args()
    set_threads(args.threads)
    csv_path, png_path = args.out / "conservation.csv", args.out / "conservation.png"
    rows = rows_for(args, csv_path, run)
    size = plot(rows, png_path)
    for (net, method), layers in groups(rows).items():
        log(f"{net:9s} {method:8s} {spread_line(layers)}")
    log(f"wrote {csv_path} and {png_path} ({size // 1024} KB)")


if __name__ == "__main__":
    main()
