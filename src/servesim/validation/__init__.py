"""End-to-end fidelity: replay measured serving benchmarks through the simulator (`servesim validate`)."""
