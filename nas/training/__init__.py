"""What every training loop shares: data-parallel helpers, atomic checkpoints, schedules, metrics files."""
