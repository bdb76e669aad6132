"""transduce."""
