r"""Training speed: vaelab's engine against a naive pytorch/examples-style loop, same run, same data.

The model is pytorch/examples' VAE shape (784-400-20 MLP, Bernoulli decoder), batch 128, Adam 1e-3,
one Fashion-MNIST epoch of 60,000 images. Setups:

- naive: pytorch/examples' vae/main.py loop: a Dataset that converts each image (PIL -> tensor / 255)
  in __getitem__, a shuffling DataLoader, ``loss.item()`` every step, plain Adam.
- eager: vaelab's data path (the split is one uint8 tensor on the device, batches gathered by a device
  permutation, sums kept on the device) with the eager step and plain Adam.
- vaelab-autograd: the engine with fused Adam and the autograd step (``--compile off``).
- vaelab: what ``vaelab train`` runs by default: the engine with fused Adam; on the CPU the hand-derived
  MLP step (`fused_mlp.py`), on CUDA a CUDA graph.
- vaelab-bf16: the same with ``--precision bf16``.
- vaelab-inductor (opt-in, add it to --setups): ``--compile inductor``; its first epoch includes compiling.
- vaelab-adam-direct (opt-in): vaelab with fused Adam's kernel called directly instead of through
  ``opt.step()`` (`direct_adam.py`, the same update bit for bit): what ``Optimizer.step``'s Python costs.

Timing is round-robin (one epoch of each setup in turn, each setup training its own model on; the order
reverses every other round, A B B A ..., so drift favours none), so load from other processes hits every
setup alike; the first epoch of each setup is a warm-up, reported apart. Each setup's epochs (wall and
process CPU time) are also divided by the --baseline setup's epoch of the same round: the median of
these paired ratios is the least noisy comparison. Then the same-learning check: test -ELBO after N
epochs, naive loop against vaelab, for a few seeds.

    python benchmarks/speed.py                      # CPU, and CUDA when there is a GPU
    python benchmarks/speed.py --epochs 5 --learn-epochs 10 --seeds 3 --json speed.json
    # opt.step() against the direct kernel call, interleaved, on the CPU:
    python benchmarks/speed.py --devices cpu --setups vaelab,vaelab-adam-direct --baseline vaelab \
        --epochs 12 --learn-epochs 0 --json adam.json

Reads Fashion-MNIST IDX files from --data-dir (Debian: apt-get install dataset-fashion-mnist); without
them it times synthetic images of the same shape and skips the learning check.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import statistics
import struct
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from direct_adam import check_same_update, use_direct  # benchmarks/, the script's own folder
from PIL import Image
from torch import Tensor, nn

from vaelab import VAE, Split, VAEConfig, evaluate_elbo
from vaelab.training.engine import Engine, EngineOptions, configure_threads, make_optimizer

FASHION_DIR = "/usr/share/datasets/fashion-mnist"
SETUPS = (
    "naive",
    "eager",
    "vaelab-autograd",
    "vaelab",
    "vaelab-bf16",
    "vaelab-inductor",
    "vaelab-inductor-bf16",
    "vaelab-adam-direct",
)
EVAL_SEED = 12345


# -- data -------------------------------------------------------------------------------------------
def read_idx(path: Path) -> np.ndarray:
    """A (gzipped) IDX file -> uint8 array; a small local reader so the benchmark needs no data module."""
    raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_fashion(data_dir: Path) -> tuple[Split, Split] | None:
    """Fashion-MNIST as uint8 (N, 1, 28, 28) train/test splits with labels, or None if absent."""

    def find(stem: str) -> Path | None:
        return next((p for p in (data_dir / stem, data_dir / f"{stem}.gz") if p.exists()), None)

    names = [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ]
    paths = [find(n) for n in names]
    if any(p is None for p in paths):
        return None
    xtr, ytr, xte, yte = (torch.from_numpy(read_idx(p).copy()) for p in paths)
    return Split(xtr.unsqueeze(1), ytr.long()), Split(xte.unsqueeze(1), yte.long())


def synthetic() -> tuple[Split, Split]:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (70_000, 1, 28, 28), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (70_000,), generator=g)
    return Split(x[:60_000], y[:60_000]), Split(x[60_000:], y[60_000:])


# -- the naive loop: pytorch/examples vae/main.py ---------------------------------------------------
class ImageDataset(torch.utils.data.Dataset):
    """torchvision's MNIST + ToTensor, without torchvision: a PIL image per item, converted to float."""

    def __init__(self, split: Split) -> None:
        self.images, self.labels = split.x[:, 0].numpy(), split.y

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        img = Image.fromarray(self.images[i])
        x = torch.from_numpy(np.array(img, np.uint8, copy=True)).view(28, 28, 1).permute(2, 0, 1)
        return x.contiguous().float().div(255), int(self.labels[i])


class ExamplesVAE(nn.Module):
    """pytorch/examples' VAE: fc1 784->400, fc21/fc22 400->20, fc3 20->400, fc4 400->784, sigmoid out."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc21, self.fc22 = nn.Linear(784, 400), nn.Linear(400, 20), nn.Linear(400, 20)
        self.fc3, self.fc4 = nn.Linear(20, 400), nn.Linear(400, 784)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        h1 = F.relu(self.fc1(x.view(-1, 784)))
        mu, logvar = self.fc21(h1), self.fc22(h1)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z)))), mu, logvar

    def to_vaelab(self) -> VAE:
        """The same weights in a vaelab VAE, so both models are scored by one evaluator."""
        vae = VAE(VAEConfig(input_shape=(1, 28, 28), latent_dim=20, hidden=(400,))).to(self.fc1.weight.device)
        with torch.no_grad():
            enc, dec = vae.encoder, vae.decoder
            enc[0].weight.copy_(self.fc1.weight), enc[0].bias.copy_(self.fc1.bias)
            enc[2].weight.copy_(torch.cat([self.fc21.weight, self.fc22.weight]))
            enc[2].bias.copy_(torch.cat([self.fc21.bias, self.fc22.bias]))
            dec[0].weight.copy_(self.fc3.weight), dec[0].bias.copy_(self.fc3.bias)
            dec[2].weight.copy_(self.fc4.weight), dec[2].bias.copy_(self.fc4.bias)
        return vae


class Naive:
    """One pytorch/examples training setup; ``epoch()`` trains one epoch -> mean loss per example."""

    def __init__(self, train: Split, device: torch.device, batch_size: int) -> None:
        self.device = device
        self.model = ExamplesVAE().to(device)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        # pytorch/examples' CUDA settings; NAIVE_WORKERS=0 where worker processes cannot share memory
        workers = int(os.environ.get("NAIVE_WORKERS", "1"))
        kwargs = {"num_workers": workers, "pin_memory": True} if device.type == "cuda" else {}
        self.loader = torch.utils.data.DataLoader(ImageDataset(train), batch_size, shuffle=True, **kwargs)

    def epoch(self) -> float:
        self.model.train()
        total = 0.0
        for data, _ in self.loader:
            data = data.to(self.device)
            self.opt.zero_grad()
            recon, mu, logvar = self.model(data)
            bce = F.binary_cross_entropy(recon, data.view(-1, 784), reduction="sum")
            kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
            loss = bce + kld
            loss.backward()
            total += loss.item()
            self.opt.step()
        return total / len(self.loader.dataset)

    def vae(self) -> VAE:
        return self.model.to_vaelab()


class Fast:
    """A vaelab engine setup; ``epoch()`` trains one epoch -> mean -ELBO per example (one read)."""

    def __init__(self, train: Split, device: torch.device, batch_size: int, name: str) -> None:
        self.train, self.batch_size = train.to(device), batch_size
        self.model = VAE(VAEConfig(input_shape=(1, 28, 28), latent_dim=20, hidden=(400,))).to(device)
        plain = name == "eager"
        opt = (
            torch.optim.Adam(self.model.parameters(), lr=1e-3) if plain else make_optimizer(self.model, 1e-3)
        )
        if name == "vaelab-adam-direct":
            use_direct(opt)
        compile = "inductor" if "inductor" in name else "auto"
        if plain or name == "vaelab-autograd":
            compile = "off"
        precision = "bf16" if "bf16" in name else "fp32"
        self.engine = Engine(self.model, opt, EngineOptions(precision=precision, compile=compile))

    def epoch(self) -> float:
        sums = self.engine.run_epoch(self.train, self.batch_size, progress=False)
        return float(sums[0]) / len(self.train)

    def vae(self) -> VAE:
        return self.model


def make_setup(name: str, train: Split, device: torch.device, batch_size: int):
    if name == "naive":
        return Naive(train, device, batch_size)
    if name not in SETUPS:
        raise SystemExit(f"unknown setup {name!r}; known: {', '.join(SETUPS)}")
    return Fast(train, device, batch_size, name)


# -- measurements ------------------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_setups(
    names: list[str], train: Split, device: torch.device, batch_size: int, epochs: int, seed: int
):
    """Round-robin epochs -> {name: {"first": s, "epochs": [wall s, ...], "cpu": [process CPU s, ...]}}.

    Process CPU time is the noise check on a shared machine: with one thread it is the compute the
    epoch needed, whatever the wait for a core; wall time far above it means the run was crowded out.
    """
    setups, out = {}, {}
    for name in names:
        torch.manual_seed(seed)
        setups[name] = make_setup(name, train, device, batch_size)
        out[name] = {"first": None, "epochs": [], "cpu": []}
    for r in range(epochs + 1):
        order = list(setups.items())
        for name, setup in order if r % 2 == 0 else order[::-1]:
            sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            setup.epoch()  # returns a Python float: the device has finished
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            if r == 0:
                out[name]["first"] = dt
            else:
                out[name]["epochs"].append(dt)
                out[name]["cpu"].append(dc)
            print(
                f"  {device.type} b{batch_size} {name:12s} epoch {r}: {dt:.3f} s wall, {dc:.3f} s CPU",
                file=sys.stderr,
                flush=True,
            )
    return out


def spread(values: list[float]) -> dict:
    """Median, quartiles and range of ``values`` -> {"median", "q1", "q3", "min", "max"}."""
    q1, med, q3 = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else values * 3
    return {"median": med, "q1": q1, "q3": q3, "min": min(values), "max": max(values)}


def summarize(timing: dict, baseline: str) -> dict:
    """Per setup: the spread of its timed epochs' wall and process CPU seconds and, when the baseline
    setup ran, of the paired ratios (this setup's epoch / the baseline's epoch of the same round)."""
    out = {}
    base = timing.get(baseline)
    for name, t in timing.items():
        row = {"wall": spread(t["epochs"]), "cpu": spread(t["cpu"])}
        if base is not None:
            for kind, key in (("wall", "epochs"), ("cpu", "cpu")):
                ratios = [a / b for a, b in zip(t[key], base[key], strict=True)]
                row[f"{kind}_ratio"] = spread(ratios) | {"values": ratios}
        out[name] = row
    return out


def learn(names: list[str], train: Split, test: Split, device: torch.device, epochs: int, seeds: list[int]):
    """Test -ELBO (nats, one-sample, fixed eval seed) after ``epochs`` epochs -> {name: [per seed]}."""
    out: dict[str, list[float]] = {n: [] for n in names}
    test = test.to(device)
    for seed in seeds:
        for name in names:
            torch.manual_seed(seed)
            setup = make_setup(name, train, device, 128)
            for _ in range(epochs):
                setup.epoch()
            out[name].append(evaluate_elbo(setup.vae(), test, seed=EVAL_SEED)["neg_elbo"])
            print(f"  learn {name:12s} seed {seed}: {out[name][-1]:.3f}", file=sys.stderr, flush=True)
    return out


def machine() -> str:
    cpu = platform.processor() or "cpu"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [
            ln.split(":", 1)[1].strip()
            for ln in cpuinfo.read_text().splitlines()
            if ln.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{cpu}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads{gpu}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=FASHION_DIR)
    ap.add_argument(
        "--devices", default="auto", help="comma list of cpu,cuda; auto: cpu, plus cuda if present"
    )
    ap.add_argument(
        "--epochs", type=int, default=3, help="timed epochs per setup after a warm-up; 0: no timing"
    )
    ap.add_argument("--setups", default="naive,eager,vaelab-autograd,vaelab,vaelab-bf16")
    ap.add_argument("--gpu-batch-sizes", default="128,1024")
    ap.add_argument("--learn-epochs", type=int, default=5, help="0 skips the same-learning check")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--learn-setups", default="naive,vaelab,vaelab-bf16")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads, 0 = vaelab's default")
    ap.add_argument("--baseline", default="naive", help="the setup others are compared with")
    ap.add_argument("--json", help="also write the raw numbers here")
    args = ap.parse_args()

    configure_threads(args.threads)
    if "vaelab-adam-direct" in args.setups.split(","):
        check_same_update()  # the A/B compares two calls of one update, or nothing
    data = load_fashion(Path(args.data_dir))
    source = f"Fashion-MNIST from {args.data_dir}" if data else "SYNTHETIC uint8 images (no IDX files found)"
    train, test = data or synthetic()
    devices = (
        ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        if args.devices == "auto"
        else args.devices.split(",")
    )
    load0 = os.getloadavg()
    results: dict = {
        "machine": machine(),
        "data": source,
        "command": " ".join(sys.argv),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "timing": {},
        "summary": {},
    }
    print(f"# {results['machine']}\n# data: {source}\n# load average before: {load0[0]:.2f}", flush=True)

    rows = []
    for dev_name in devices if args.epochs > 0 else []:
        device = torch.device(dev_name)
        for b in [128] if device.type == "cpu" else [int(v) for v in args.gpu_batch_sizes.split(",")]:
            timing = time_setups(args.setups.split(","), train, device, b, args.epochs, seed=0)
            summary = summarize(timing, args.baseline)
            results["timing"][f"{dev_name}/b{b}"] = timing
            results["summary"][f"{dev_name}/b{b}"] = summary
            for name, t in summary.items():
                wall, cpu = t["wall"], t["cpu"]
                cells = [dev_name, b, name, f"{wall['median']:.3f}", f"{wall['q1']:.3f}-{wall['q3']:.3f}"]
                cells += [f"{wall['min']:.3f}-{wall['max']:.3f}", f"{cpu['median']:.3f}"]
                cells += [f"{timing[name]['first']:.3f}"]
                for kind in ("wall_ratio", "cpu_ratio"):
                    r = t.get(kind)
                    cells.append(f"{r['median']:.3f} ({r['q1']:.3f}-{r['q3']:.3f})" if r else "-")
                rows.append("| " + " | ".join(map(str, cells)) + " |")
    load1 = os.getloadavg()
    results["load_average"] = {"before": load0[0], "after": load1[0]}
    if rows:
        print(
            f"\n## Seconds per epoch ({args.epochs} timed epochs each; "
            f"load average {load0[0]:.2f} -> {load1[0]:.2f})\n"
        )
        print(
            "| device | batch | setup | median s/epoch | IQR | min-max | CPU s/epoch | first epoch "
            f"| wall / {args.baseline}, paired: median (IQR) | CPU / {args.baseline}, paired |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        print("\n".join(rows), flush=True)

    if args.learn_epochs > 0 and data is not None:
        device = torch.device(devices[-1])
        seeds = list(range(args.seeds))
        scores = learn(args.learn_setups.split(","), train, test, device, args.learn_epochs, seeds)
        results["learning"] = {
            "device": str(device),
            "epochs": args.learn_epochs,
            "seeds": seeds,
            "test_neg_elbo": scores,
        }
        print(
            f"\n## Same learning: test -ELBO (nats) after {args.learn_epochs} epochs "
            f"on {device}, seeds {seeds}\n"
        )
        print("| setup | per seed | mean | sd |")
        print("|---|---|---|---|")
        for name, v in scores.items():
            sd = statistics.stdev(v) if len(v) > 1 else float("nan")
            print(f"| {name} | {', '.join(f'{s:.2f}' for s in v)} | {statistics.mean(v):.2f} | {sd:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
