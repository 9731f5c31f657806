"""Planning on top of the simulator: searches that run many simulations."""
