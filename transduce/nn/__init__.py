"""Building blocks with no config: attention, masks, positions, feed-forward, layers."""
