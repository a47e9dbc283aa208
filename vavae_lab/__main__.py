"""Allows `python -m vavae_lab` and `torchrun -m vavae_lab`."""
import sys

from .cli import main

sys.exit(main())
