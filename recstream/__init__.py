"""recstream's command line and the embedded stack (broker, Triton, worker) it runs."""
