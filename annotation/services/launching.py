"""How this command was started, and starting it in several processes (`app.py train --processes N`).

The launcher's side of :mod:`alignment.training.distributed`, for the command line (which reaches
the lower layers through this package). Reading the launcher's environment costs no torch import.
"""
from alignment.training.distributed import launch_command, launched, process_count, process_rank

__all__ = ["launch_command", "launched", "process_count", "process_rank"]
