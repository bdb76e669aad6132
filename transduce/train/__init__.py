"""Training: loop, losses, schedules, checkpoints."""
