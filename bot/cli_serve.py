"""Placeholder: this group of subcommands is not written yet."""

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    pass
