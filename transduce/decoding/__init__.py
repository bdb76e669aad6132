"""Searches over log-probs; models only provide encode/init_state/step."""
