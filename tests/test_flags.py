"""The ``vaelab train`` flags generated from the config dataclasses' `Flag` metadata (cli/_flags.py)."""

from __future__ import annotations

import argparse
import dataclasses
import re
from dataclasses import dataclass

import pytest

from vaelab import config, schema
from vaelab.cli import build_parser, main
from vaelab.cli._common import Parser
from vaelab.cli._flags import (
    add_config_flags,
    allowed_on_resume,
    config_flags,
    config_from_args,
    fixed_on_resume,
    flag_name,
    given,
    model_config_from_args,
    model_flags_given,
    resume_changes,
    train_config_from_args,
)
from vaelab.cli._resume import check_flags
from vaelab.config import TrainConfig, VAEConfig
from vaelab.errors import ConfigError, VaelabError
from vaelab.models.objectives import check_compatible
from vaelab.schema import opt

CONFIGS = (TrainConfig, VAEConfig)
NO_FLAG = {"data", "data_options", "init_from", "input_shape", "min_sigma", "networks"}  # set otherwise


def train_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["train", *argv])


def flag_help(text: str) -> dict[str, str]:
    """--help's text -> {option: its help, on one line}."""
    entries = re.split(r"\n  (?=-)", text.split("\noptions:", 1)[1])
    out = {}
    for entry in filter(str.strip, entries):
        option = entry.split()[0].rstrip(",")
        out[option] = " ".join(entry.split())
    return out


@pytest.fixture(scope="module")
def help_text() -> str:
    return train_args().train_parser.format_help()


def test_every_field_with_a_flag_becomes_a_flag_and_no_other(help_text):
    documented = flag_help(help_text)
    for cls in CONFIGS:
        for f in dataclasses.fields(cls):
            spec = schema.flag_of(f)
            assert (spec is None) == (f.name in NO_FLAG), f.name
            if spec is not None:
                option = spec.name or "--" + f.name.replace("_", "-")
                assert option in documented, option
                assert spec.help in documented[option]


def test_help_shows_every_default(help_text):
    documented = flag_help(help_text)
    for option in ("--batch-size", "--latent-dim", "--hidden", "--lr"):
        assert "(default: " in documented[option]
    assert "(default: 128)" in documented["--batch-size"]
    assert "(default: 20)" in documented["--latent-dim"]
    assert "(default: 400)" in documented["--hidden"]
    assert "(default: 32,64)" in documented["--channels"]
    assert "(default: 0.001)" in documented["--lr"]
    assert "(default: 500 with --prior vamp)" in documented["--pseudo-inputs"]
    assert "(default: none; 0.1 with --early-stop or --lr-drop)" in documented["--holdout"]
    for cls in CONFIGS:
        for flag in config_flags(cls):
            if flag.spec.parse != "switch" and not isinstance(flag.default, bool):
                assert "(default: " in documented[flag.option], flag.option
            else:
                assert "(default: " not in documented[flag.option], flag.option


def test_main_prints_the_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0 and "(default: 128)" in " ".join(capsys.readouterr().out.split())


def test_no_flags_give_the_dataclass_defaults():
    args = train_args()
    assert train_config_from_args(args) == TrainConfig()
    assert model_config_from_args(args, (1, 8, 8)) == VAEConfig()
    assert given(args) == [] and fixed_on_resume(args) == [] and resume_changes(args) == {}


def test_flags_round_trip_into_the_configs():
    args = train_args(
        *("--hidden", "64,32", "--channels", "", "--lr", "0.01", "--early-stop", "2", "--prior", "vamp"),
        *("--nan-lr-factor", "0.25", "--conditional", "--threads", "3"),
    )
    tcfg = train_config_from_args(args, data="mnist")
    assert (tcfg.data, tcfg.lr, tcfg.early_stop, tcfg.nan_lr_factor, tcfg.threads) == (
        "mnist",
        0.01,
        2,
        0.25,
        3,
    )
    assert tcfg.holdout == config.EARLY_STOP_HOLDOUT  # implied by early stopping
    mcfg = model_config_from_args(args, (1, 8, 8))
    assert (mcfg.hidden, mcfg.prior, mcfg.pseudo_inputs, mcfg.n_classes) == ((64, 32), "vamp", 500, 0)
    assert args.conditional is True  # a switch: the caller works out n_classes from the data
    cvae = model_config_from_args(train_args("--conditional"), (1, 8, 8), n_classes=3)
    assert cvae.n_classes == 3 and dataclasses.replace(cvae, n_classes=0) == VAEConfig()


@pytest.mark.parametrize(
    ("option", "allowed"),
    [
        ("--likelihood", config.LIKELIHOODS),
        ("--arch", config.ARCHS),
        ("--prior", config.PRIORS),
        ("--objective", config.OBJECTIVES),
        ("--precision", config.PRECISIONS),
        ("--compile", config.COMPILE_MODES),
        ("--device", config.DEVICES),
    ],
)
def test_choices_come_from_the_constants(option, allowed, capsys):
    (flag,) = [f for cls in CONFIGS for f in config_flags(cls) if f.option == option]
    assert flag.spec.choices is allowed
    for value in allowed:
        assert getattr(train_args(option, value), flag.dest) == value
    with pytest.raises(SystemExit) as e:
        train_args(option, "nonsense")
    assert e.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_a_flag_typed_with_its_default_value_counts_as_given():
    args = train_args("--batch-size", "128", "--epochs", "10", "--out", "x", "--no-progress")
    assert given(args) == ["batch_size", "epochs", "out", "progress"]
    assert fixed_on_resume(args) == ["batch_size", "out"]
    assert resume_changes(args) == {"epochs": 10}
    with pytest.raises(VaelabError, match="--batch-size cannot be used with --resume") as e:
        check_flags(args)
    assert "you may pass --epochs, --device, --checkpoint-every" in str(e.value)
    assert model_flags_given(train_args("--hidden", "400", "--conditional", "--lr", "0.1")) == [
        "hidden",
        "conditional",
    ]


def test_resume_takes_the_settings_marked_allowed():
    assert allowed_on_resume() == [
        *("epochs", "device", "checkpoint_every", "nan_retries", "nan_lr_factor", "compile", "threads"),
        *("early_stop", "resume", "progress", "data_dir", "tensorboard", "config"),
    ]
    args = train_args("--early-stop", "0", "--device", "cpu", "--data-dir", "d")
    assert fixed_on_resume(args) == [] and resume_changes(args) == {"early_stop": 0, "device": "cpu"}


def test_config_errors_name_fields_in_the_library_and_flags_on_the_command_line():
    with pytest.raises(ConfigError) as e:
        TrainConfig(early_stop=3, holdout=0.0)
    assert str(e.value).startswith("TrainConfig.early_stop needs holdout > 0")
    assert e.value.render(flag_name).startswith("--early-stop needs --holdout > 0")
    with pytest.raises(ConfigError) as e:
        model_config_from_args(train_args("--pseudo-inputs", "7"), (1, 8, 8))
    assert e.value.render(flag_name).startswith("--pseudo-inputs needs --prior vamp (got 7")
    vamp = VAEConfig(prior="vamp")
    with pytest.raises(ConfigError, match=r"^TrainConfig\.free_bits floors a per-dim KL, which prior vamp"):
        check_compatible(vamp, TrainConfig(free_bits=0.5))
    check_compatible(VAEConfig(), TrainConfig(free_bits=0.5))


@dataclass
class Toy:
    count: int = opt(3, "how many", parse="positive")
    colour: str = opt("red", "which colour", choices=("red", "blue"))
    loud: bool = opt(False, "a switch")
    widths: tuple[int, ...] = opt((1, 2), "widths", parse="ints", name="--sizes")
    share: float | None = opt(None, "a fraction", parse="fraction", metavar="F", default_help="all")
    plain: str = "not a flag"


def test_the_generator_on_any_dataclass(capsys):
    p = Parser(prog="toy")
    add_config_flags(p, Toy, "toy")
    p.set_defaults(train_parser=p)
    help_lines = " ".join(p.format_help().split())
    for text in (
        "how many (default: 3)",
        "{red,blue} which colour (default: red)",
        "--loud a switch -",
        "--sizes SIZES widths (default: 1,2)",
        "--share F a fraction (default: all)",
    ):
        assert text in help_lines
    assert "--plain" not in help_lines
    assert config_from_args(Toy, p.parse_args([])) == Toy()
    args = p.parse_args(["--sizes", "4,5", "--loud", "--share", "0.5", "--count", "3"])
    assert config_from_args(Toy, args) == Toy(count=3, loud=True, widths=(4, 5), share=0.5)
    assert given(args) == ["sizes", "loud", "share", "count"]
    for bad in (["--count", "0"], ["--share", "1"], ["--sizes", "1,x"]):
        with pytest.raises(SystemExit):
            p.parse_args(bad)
    assert "toy: error: argument --count" in capsys.readouterr().err
