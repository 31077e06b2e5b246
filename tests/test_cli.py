"""One CLI: every command and every option is in `--help`."""

from __future__ import annotations

import argparse

import pytest

from dglsp.cli import build_parser, main
from dglsp.tools import modelzoo, options

COMMANDS = ("serve", "complete", "draft", "download", "train", "eval", "bench")


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_command_is_listed(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    listed = capsys.readouterr().out
    assert set(subcommands(build_parser())) == set(COMMANDS)
    for command in COMMANDS:
        assert command in listed


@pytest.mark.parametrize("command", COMMANDS)
def test_help_of_each_command_shows_every_option(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    shown = capsys.readouterr().out
    parser = subcommands(build_parser())[command]
    flags = [flag for action in parser._actions for flag in action.option_strings if flag.startswith("--")]
    assert flags, command
    missing = [flag for flag in flags if flag not in shown]
    assert missing == []


def test_mode_options_of_eval_and_bench_are_in_their_help(capsys):
    for command, expected in (("eval", ("--repo", "--test-cmd", "--data", "--rescore")),
                              ("bench", ("--draft", "--lengths", "--client"))):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        shown = capsys.readouterr().out
        assert all(flag in shown for flag in expected), command


def test_every_training_knob_is_an_option():
    args = build_parser().parse_args(["train", "--lr", "0.002", "--preset", "tiny", "--ar-weight", "0.5"])
    config = options.train_config(args)
    assert (config.lr, config.preset, config.ar_weight) == (0.002, "tiny", 0.5)
    assert options.train_config(build_parser().parse_args(["train"])) == options.TrainConfig()


def test_preset_choices_match_the_model_zoo():
    assert set(options.PRESET_NAMES) == set(modelzoo.PRESETS)
