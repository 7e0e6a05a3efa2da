"""The sandbox: a synthetic chat world with gold judges, simulated annotators and a tiny Llama."""
