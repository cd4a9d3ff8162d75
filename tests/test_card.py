"""The model card, README.md in a run directory: written by ``vaelab train``, refreshed with the
metrics by ``vaelab evaluate``, never written over a README.md the user wrote; its front matter is the
Hub's metadata and its training command is one ``vaelab train`` parses back to the run's settings."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import warnings

import pytest
from datagen import run_cli

from vaelab.card import CARD_FILE, MARKER, render_card, train_command, write_card
from vaelab.cli import build_parser


def front_matter(card: str) -> dict[str, object]:
    """The card's YAML front matter, read as the simple YAML it is (``key: value`` and ``- item``
    lists); checked against PyYAML too where it is installed."""
    lines = card.splitlines()
    assert lines[0] == "---", "the front matter must open the file"
    block = lines[1 : lines.index("---", 1)]
    meta: dict[str, object] = {}
    key = None
    for line in block:
        if line.startswith("- "):
            assert key is not None, line
            meta.setdefault(key, [])
            meta[key].append(line[2:])  # type: ignore[union-attr]
        else:
            key, _, value = line.partition(":")
            assert key and _ == ":", line
            if value.strip():
                meta[key] = value.strip()
    try:
        import yaml
    except ImportError:
        return meta
    assert yaml.safe_load("\n".join(block)) == meta
    return meta


@pytest.fixture
def run(tmp_path, trained_run):
    """A copy of the session's trained run, to change."""
    copy = tmp_path / "digits"
    shutil.copytree(trained_run, copy)
    return copy


def test_train_writes_the_card(trained_run):
    card = (trained_run / CARD_FILE).read_text()
    meta = front_matter(card)
    assert meta["library_name"] == "vaelab"
    assert {"vae", "pytorch"} <= set(meta["tags"])  # type: ignore[arg-type]
    assert "datasets" not in meta  # scikit-learn's digits is not a Hub dataset
    assert MARKER in card
    assert "![samples](samples.png)" in card
    assert "| latent | 2 dims |" in card and "MLP, hidden 64" in card and "| likelihood | bernoulli |" in card
    assert "Test -ELBO" in card and "from metrics.jsonl" in card  # no evaluate.json yet
    assert f'model = VAE.from_pretrained("{trained_run}")' in card
    assert "from vaelab import VAE" in card and "x = model.sample(16)" in card


def test_the_training_command_parses_back_to_the_run(trained_run):
    card = (trained_run / CARD_FILE).read_text()
    command = card.split("```bash\n", 1)[1].split("\n```", 1)[0]
    argv = shlex.split(command)
    assert argv[:2] == ["vaelab", "train"]
    args = build_parser().parse_args(argv[1:])
    assert (args.data, args.out) == ("digits", "digits")
    assert (args.epochs, args.latent_dim, args.hidden, args.batch_size) == (3, 2, (64,), 64)


def test_evaluate_adds_the_metrics(run):
    rc, out, err = run_cli(
        ["evaluate", str(run), "--importance-samples", "5", "--no-probes", "--no-progress"]
    )
    assert rc == 0, err
    assert "updated the model card" in out
    ev = json.loads((run / "evaluate.json").read_text())
    card = (run / CARD_FILE).read_text()
    assert "(evaluate.json)" in card and "from metrics.jsonl" not in card
    assert f"| NLL (K=5 importance samples) | {ev['nll']:.3f} ± {ev['nll_std_err']:.3f} nats" in card
    assert f"| -ELBO | {ev['neg_elbo']:.3f} nats |" in card
    assert f"| KL | {ev['kl']:.3f} nats |" in card
    assert f"| active units | {ev['active_units']} / 2 |" in card
    assert f"({ev['n']} examples)" in card


def test_a_subset_evaluation_leaves_the_card_alone(run):
    before = (run / CARD_FILE).read_bytes()
    rc, out, _ = run_cli(
        ["evaluate", str(run), "--importance-samples", "0", "--limit", "20", "--no-progress"]
    )
    assert rc == 0 and "model card" not in out
    assert (run / CARD_FILE).read_bytes() == before


def test_a_readme_the_user_wrote_is_never_replaced(run):
    mine = "# My model\n\nI wrote this.\n"
    (run / CARD_FILE).write_text(mine)
    rc, out, err = run_cli(
        ["evaluate", str(run), "--importance-samples", "0", "--no-probes", "--no-progress"]
    )
    assert rc == 0
    assert (run / CARD_FILE).read_text() == mine
    assert "model card" not in out
    assert err.count("\n") == 1 and err.startswith("warning:") and "not written by vaelab" in err
    with pytest.warns(UserWarning, match="not written by vaelab"):
        assert write_card(run) is None
    assert (run / CARD_FILE).read_text() == mine


def test_train_keeps_a_user_readme_in_a_forced_out(run):
    mine = "# Notes about this folder\n"
    (run / CARD_FILE).write_text(mine)
    argv = ["train", "--data", "digits", "--out", str(run), "--force", "--epochs", "1", "--latent-dim", "2"]
    rc, _, err = run_cli([*argv, "--hidden", "16", "--no-progress"])
    assert rc == 0, err
    assert (run / CARD_FILE).read_text() == mine
    assert "warning:" in err and CARD_FILE in err


def test_the_card_of_a_public_dataset_names_it_and_a_cvae_samples_with_labels(run):
    doc = json.loads((run / "config.json").read_text())
    doc["train"]["data"] = "fashion-mnist"
    doc["model"]["n_classes"] = 10
    (run / "config.json").write_text(json.dumps(doc))
    card = render_card(run, repo_id="someone/fmnist-cvae")
    meta = front_matter(card)
    assert meta["datasets"] == ["zalando-datasets/fashion_mnist"]
    assert "conditional-vae" in meta["tags"]  # type: ignore[operator]
    assert "\n# fmnist-cvae\n" in card
    assert "a CVAE on 10 classes" in card
    assert 'model = VAE.from_pretrained("someone/fmnist-cvae")' in card
    assert "x = model.sample(16, y=torch.arange(16) % 10)" in card and "import torch" in card


def test_a_save_pretrained_folder_gets_a_card_without_training(tmp_path, make_vae):
    folder = make_vae(prior="vamp", pseudo_inputs=7).save_pretrained(tmp_path / "m")
    card = render_card(folder)
    assert front_matter(card)["library_name"] == "vaelab"
    assert "VampPrior, 7 pseudo-inputs" in card
    assert (
        f"| parameters | {sum(p.numel() for p in make_vae(prior='vamp', pseudo_inputs=7).parameters()):,} |"
        in card
    )
    assert "## Training" not in card and "## Metrics" not in card


def test_damaged_metrics_files_do_not_break_the_card(run):
    (run / "evaluate.json").write_text('{"neg_elbo": "NaN?", "nll": [1]')  # not even JSON
    (run / "metrics.jsonl").write_text(
        '{"epoch": 1, "test_neg_elbo": 50.0}\nnot json\n{"epoch": 2, "test_neg_elbo": "x"}\n'
    )
    card = render_card(run)
    assert "Test -ELBO 50.000 nats after epoch 1" in card
    (run / "evaluate.json").write_text(json.dumps({"neg_elbo": 40.0, "kl": "<b>", "active_units": True}))
    card = render_card(run)
    assert "| -ELBO | 40.000 nats |" in card and "<b>" not in card and "active units" not in card


def test_the_command_of_a_distributed_run_on_a_local_folder(trained_run):
    doc = json.loads((trained_run / "config.json").read_text())
    doc["world_size"] = 4
    doc["train"]["data"] = "/home/someone/private/faces"
    doc["train"]["data_options"] = {"image_size": [32, 48], "val_fraction": 0.2}
    doc["model"]["gated"] = True
    argv = shlex.split(train_command(doc, "faces-run"))
    assert argv[:6] == ["torchrun", "--nproc_per_node", "4", "-m", "vaelab", "train"]
    assert argv[argv.index("--data") + 1] == "faces"  # a local path by its last part only
    assert "--gated" in argv and argv[argv.index("--image-size") + 1] == "32x48"
    assert "/home/someone" not in " ".join(argv)
    assert train_command({"model": doc["model"]}) is None


def test_write_card_is_quiet_on_its_own_card(run):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert write_card(run, repo_id="someone/digits") == run / CARD_FILE
        assert write_card(run) == run / CARD_FILE


def test_the_card_of_a_fit_prior_output_gives_both_commands(run):
    doc = json.loads((run / "config.json").read_text())
    doc["model"] |= {"prior": "mixture", "mixture_components": 5}
    doc["prior_fit"] = {"from": "/somewhere/original-run", "data": "digits", "seed": 0, "components": 5}
    (run / "config.json").write_text(json.dumps(doc))
    card = render_card(run)
    train = shlex.split(card.split("```bash\n", 1)[1].split("\n```", 1)[0])
    assert train[train.index("--out") + 1] == "original-run" and "--prior" not in train
    assert "vaelab fit-prior original-run --out digits --components 5" in card
    assert "Gaussian mixture, 5 components" in card


def test_an_evaluation_older_than_the_weights_is_left_out(run):
    rc, _, err = run_cli(["evaluate", str(run), "--importance-samples", "5", "--no-probes", "--no-progress"])
    assert rc == 0, err
    assert "(evaluate.json)" in (run / CARD_FILE).read_text()
    weights = (run / "model.safetensors").stat().st_mtime
    os.utime(run / "evaluate.json", (weights - 60, weights - 60))  # as after a resume or a --force
    card = render_card(run)
    assert "(evaluate.json)" not in card and "from metrics.jsonl" in card


@pytest.mark.filterwarnings("ignore::vaelab.training.callbacks.PosteriorCollapseWarning")
def test_the_card_of_own_networks_on_a_torch_dataset_says_how_to_load_them(tmp_path, digits):
    from custom_nets import own_vae
    from torch.utils.data import TensorDataset

    from vaelab import TrainConfig, train

    pair = tuple(TensorDataset(s.batch(slice(None), binarize=False)) for s in (digits.train, digits.test))
    train(own_vae(), pair, TrainConfig(epochs=1, device="cpu"), progress=False, run_dir=tmp_path / "run")
    text = render_card(tmp_path / "run", repo_id="me/own")
    assert "trained on a torch Dataset (`TensorDataset`)" in text
    assert "own networks: encoder custom_nets.ConvEncoder, decoder custom_nets.ConvDecoder" in text
    assert "no `vaelab train` command repeats it" in text and "vaelab train --" not in text
    usage = text.split("## Usage")[1]
    assert "from custom_nets import ConvEncoder, ConvDecoder" in usage
    assert 'VAE.from_pretrained("me/own", encoder=ConvEncoder(...), decoder=ConvDecoder(...))' in usage


def test_a_registered_prior_is_named_as_such(tmp_path, make_vae):
    model = make_vae()
    model.save_pretrained(tmp_path / "m")
    path = tmp_path / "m" / "config.json"
    doc = json.loads(path.read_text())
    doc["model"]["prior"] = "learned_gaussian"
    path.write_text(json.dumps(doc))
    assert "| prior | learned_gaussian (a registered prior) |" in render_card(tmp_path / "m")


def test_the_command_of_an_init_from_run_is_one_the_cli_accepts(trained_run, tmp_path):
    from vaelab.cli import _init_from

    out = tmp_path / "ft"
    argv = ["train", "--init-from", str(trained_run), "--out", str(out), "--epochs", "4", "--no-progress"]
    assert run_cli(argv)[0] == 0
    doc = json.loads((out / "config.json").read_text())
    command = shlex.split(train_command(doc, out="ft2"))
    assert "--init-from" in command and "--latent-dim" not in command and "--hidden" not in command
    args = build_parser().parse_args(command[1:])
    _init_from.check_flags(args)  # refuses model flags with --init-from: none are there


def test_class_paths_from_a_file_do_not_reach_the_usage_code_unchecked(tmp_path):
    from custom_nets import own_vae

    own_vae().save_pretrained(tmp_path / "m")
    path = tmp_path / "m" / "config.json"
    doc = json.loads(path.read_text())
    doc["model"]["networks"] = {"encoder": "x\n```\n<script>alert(1)</script>", "decoder": "pkg.nets.Dec"}
    path.write_text(json.dumps(doc))
    usage = render_card(tmp_path / "m").split("## Usage")[1]
    assert "<script>" not in usage and usage.count("```") == 2
    assert "from your_package import Encoder" in usage and "from pkg.nets import Dec" in usage
